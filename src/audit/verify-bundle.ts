/**
 * The standalone verifier: what an outside auditor runs on an export bundle
 * (`guichet audit check BUNDLE`), with no database and none of the server's
 * code beyond this file and merkle.ts. It is also where the signed tree head
 * format is defined, so that the server signs exactly what auditors check.
 *
 * A signed tree head is a checkpoint (c2sp.org/tlog-checkpoint) in a signed
 * note (c2sp.org/signed-note) with an Ed25519 signature:
 *
 *     guichet.audit/<tenant uuid>          origin: the log, one per tenant
 *     <tree size>
 *     <root hash, base64>
 *     time <ISO 8601 UTC, milliseconds>    extension line: when it was signed
 *
 *     — guichet.audit/<tenant uuid> <base64(key ID ‖ signature)>
 *
 * Standard checkpoint tooling (witnesses, the Go note package) reads it; the
 * time line is the one extension, because the signed head must carry it.
 *
 * A leaf is SHA-256(0x00 ‖ entry), where the entry holds the stored event's
 * fields (ENTRY_FIELDS, in that order) in one of two formats, named by its
 * first field:
 *
 * - `guichet.audit/v1`: a JSON array, UTF-8;
 * - `guichet.audit/v2`: PostgreSQL's binary record format — a 32-bit column
 *   count (19), then for each field its type's OID (32 bits), its length
 *   (32 bits, -1 for null) and its value in that type's binary form: text
 *   (OID 25) as UTF-8; uuid (2950) as 16 bytes; int8 (20) as 64 bits;
 *   timestamptz (1184) as 64-bit microseconds since 2000-01-01T00:00:00Z;
 *   one-dimensional arrays of text (1009) or uuid (2951) as a dimension
 *   count, a has-nulls flag, the element OID, the length and lower bound
 *   (1), then each element as a length and a value; jsonb (3802) as a
 *   version byte (1) and the JSON text. All integers are big-endian.
 *
 * The bundle carries each entry's exact bytes (base64; bundles of format
 * guichet-audit-bundle/v1 carried v1 entries as text): the auditor hashes
 * those bytes and reads the fields with decodeEntry below, or any decoder of
 * the two formats.
 *
 * Imports: node:crypto and ./merkle.ts only. Keep it that way.
 */
import { createHash, createPublicKey, verify as edVerify, type KeyObject } from 'node:crypto';
import { HASH_SIZE, leafHash, verifyConsistency, verifyInclusion } from './merkle.ts';

export const BUNDLE_FORMAT = 'guichet-audit-bundle/v2';
/** Bundles written before entries could be binary: each entry is the text of a v1 entry. */
export const BUNDLE_FORMAT_V1 = 'guichet-audit-bundle/v1';
export const ENTRY_FORMAT = 'guichet.audit/v1';
export const ENTRY_FORMAT_V2 = 'guichet.audit/v2';

/** The fields of an entry, in order (the first is ENTRY_FORMAT). */
export const ENTRY_FIELDS = [
  'format',
  'tenant_id',
  'seq',
  'id',
  'occurred_at',
  'action',
  'outcome',
  'actor_account_id',
  'actor_roles',
  'on_behalf_of',
  'target_type',
  'target_ids',
  'family_ids',
  'fields',
  'purpose',
  'ip',
  'user_agent',
  'request_id',
  'details',
] as const;

export type EntryField = (typeof ENTRY_FIELDS)[number];

const ED25519_SIG_TYPE = 0x01;
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const EM_DASH = '\u2014';

export class VerifyError extends Error {}

export function originFor(tenantId: string): string {
  return `guichet.audit/${tenantId}`;
}

/* ------------------------------------------------------------------ keys */

/** A public key an auditor trusts, with the note name and key ID it signs under. */
export interface VerifierKey {
  name: string;
  /** The 4-byte key ID of the signed note. */
  id: Buffer;
  /** The raw 32-byte Ed25519 public key. */
  publicKey: Buffer;
  key: KeyObject;
}

/** key ID = SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key)[:4] (c2sp.org/signed-note, Ed25519). */
export function noteKeyId(name: string, publicKey: Uint8Array): Buffer {
  return createHash('sha256').update(name, 'utf8').update(Buffer.from([0x0a, ED25519_SIG_TYPE])).update(publicKey).digest().subarray(0, 4);
}

export function verifierKey(name: string, publicKey: Uint8Array): VerifierKey {
  if (!validKeyName(name)) throw new VerifyError(`key name "${name}" is not a valid note key name`);
  if (publicKey.length !== 32) throw new VerifyError('an Ed25519 public key is 32 bytes');
  const raw = Buffer.from(publicKey);
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, raw]), format: 'der', type: 'spki' });
  } catch {
    throw new VerifyError('not a valid Ed25519 public key');
  }
  return { name, id: noteKeyId(name, raw), publicKey: raw, key };
}

/** The key as one line, `<name>+<key ID hex>+<base64(0x01 ‖ public key)>` (the Go note package's verifier key). */
export function formatVerifierKey(k: VerifierKey): string {
  return `${k.name}+${k.id.toString('hex')}+${Buffer.concat([Buffer.from([ED25519_SIG_TYPE]), k.publicKey]).toString('base64')}`;
}

export function parseVerifierKey(text: string): VerifierKey {
  // The key data is base64, which may itself hold '+': split at the first two only.
  const t = text.trim();
  const a = t.indexOf('+');
  const b = a < 0 ? -1 : t.indexOf('+', a + 1);
  if (a <= 0 || b < 0) throw new VerifyError('a verifier key reads <name>+<key id hex>+<base64 key>');
  const [name, idHex, data] = [t.slice(0, a), t.slice(a + 1, b), t.slice(b + 1)];
  if (!/^[0-9a-f]{8}$/.test(idHex)) throw new VerifyError('verifier key: the key ID must be 8 hexadecimal digits');
  const raw = strictBase64(data, 33, 'verifier key');
  if (raw[0] !== ED25519_SIG_TYPE) throw new VerifyError('verifier key: only Ed25519 keys (type 0x01) are supported');
  const k = verifierKey(name, raw.subarray(1));
  if (k.id.toString('hex') !== idHex) throw new VerifyError('verifier key: the key ID does not match the name and key');
  return k;
}

function validKeyName(name: string): boolean {
  return name.length > 0 && name.length <= 256 && !/[\s+]/u.test(name) && !/[\u0000-\u001f]/.test(name);
}

/** Standard, canonical base64 of any length (an entry). */
function base64Of(s: string, what: string): Buffer {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) throw new VerifyError(`${what}: not standard base64`);
  const b = Buffer.from(s, 'base64');
  if (b.toString('base64') !== s) throw new VerifyError(`${what}: not canonical base64`);
  if (!b.length) throw new VerifyError(`${what}: empty`);
  return b;
}

function strictBase64(s: unknown, length: number, what: string): Buffer {
  if (typeof s !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) throw new VerifyError(`${what}: not standard base64`);
  const b = Buffer.from(s, 'base64');
  if (b.length !== length) throw new VerifyError(`${what}: expected ${length} bytes, got ${b.length}`);
  if (b.toString('base64') !== s) throw new VerifyError(`${what}: not canonical base64`);
  return b;
}

/* ----------------------------------------------------------- checkpoints */

export interface Checkpoint {
  origin: string;
  size: number;
  root: Buffer;
  /** When the log signed it (the `time` extension line). */
  time: Date;
  /** The signed note text (what the signature covers). */
  text: string;
}

/** The note text of a checkpoint (ends with a newline). */
export function checkpointText(origin: string, size: number, root: Uint8Array, time: Date): string {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError('checkpoint: bad tree size');
  if (root.length !== HASH_SIZE) throw new RangeError('checkpoint: a root hash is 32 bytes');
  return `${origin}\n${size}\n${Buffer.from(root).toString('base64')}\ntime ${time.toISOString()}\n`;
}

/** Appends the signature line made with `signature` (64 bytes, over `text`) by key `k`. */
export function signedNote(text: string, k: { name: string; id: Buffer }, signature: Uint8Array): string {
  return `${text}\n${EM_DASH} ${k.name} ${Buffer.concat([k.id, Buffer.from(signature)]).toString('base64')}\n`;
}

const MAX_NOTE = 64 * 1024;

/**
 * Opens a signed checkpoint with a trusted key: the signature by that key
 * must verify (signatures by other keys are ignored, as the note spec asks),
 * and the text must be a well-formed checkpoint of this origin.
 */
export function openCheckpoint(note: unknown, key: VerifierKey): Checkpoint {
  if (typeof note !== 'string') throw new VerifyError('checkpoint: not a string');
  if (note.length > MAX_NOTE) throw new VerifyError('checkpoint: too long');
  if (/[\u0000-\u0009\u000b-\u001f]/.test(note)) throw new VerifyError('checkpoint: control characters');
  if (!note.endsWith('\n')) throw new VerifyError('checkpoint: does not end with a newline');
  const split = note.lastIndexOf('\n\n');
  if (split < 0) throw new VerifyError('checkpoint: no signature block');
  const text = note.slice(0, split + 1);
  const sigLines = note.slice(split + 2, -1).split('\n');
  let verified = false;
  const seen: string[] = [];
  for (const line of sigLines) {
    const m = /^\u2014 (\S+) ([A-Za-z0-9+/]+={0,2})$/.exec(line);
    if (!m) throw new VerifyError('checkpoint: malformed signature line');
    const sig = Buffer.from(m[2]!, 'base64');
    if (sig.length < 5) throw new VerifyError('checkpoint: signature too short');
    const id = sig.subarray(0, 4);
    seen.push(`${m[1]} ${id.toString('hex')}`);
    if (m[1] !== key.name || !id.equals(key.id)) continue;
    const ok = sig.length === 68 && edVerify(null, Buffer.from(text, 'utf8'), key.key, sig.subarray(4));
    if (!ok) throw new VerifyError(`checkpoint: the signature by ${key.name} (key ${key.id.toString('hex')}) does not verify`);
    verified = true;
  }
  if (!verified) {
    throw new VerifyError(`checkpoint: not signed by the trusted key ${key.name} (key ${key.id.toString('hex')}); signed by an unknown key: ${seen.join(', ') || 'none'}`);
  }
  return parseCheckpointText(text);
}

/** The parts of a checkpoint's note text (no signature check: use openCheckpoint). */
export function parseCheckpointText(text: string): Checkpoint {
  const lines = text.split('\n');
  if (lines.pop() !== '') throw new VerifyError('checkpoint: does not end with a newline');
  if (lines.length !== 4) throw new VerifyError(`checkpoint: expected 4 lines (origin, size, root, time), got ${lines.length}`);
  const [origin, sizeLine, rootLine, timeLine] = lines as [string, string, string, string];
  if (!origin) throw new VerifyError('checkpoint: empty origin');
  if (!/^(0|[1-9][0-9]{0,15})$/.test(sizeLine) || !Number.isSafeInteger(Number(sizeLine))) throw new VerifyError('checkpoint: bad tree size line');
  const root = strictBase64(rootLine, HASH_SIZE, 'checkpoint root hash');
  const tm = /^time (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)$/.exec(timeLine);
  const time = tm ? new Date(tm[1]!) : null;
  if (!time || Number.isNaN(time.getTime()) || time.toISOString() !== tm![1]) throw new VerifyError('checkpoint: bad time line');
  return { origin, size: Number(sizeLine), root, time, text };
}

/* ---------------------------------------------------------------- bundle */

export interface BundleReport {
  tenantId: string;
  origin: string;
  key: string;
  /** Whether the key was given by the auditor (pinned) or taken from the bundle. */
  keySource: 'pinned' | 'bundle';
  range: { from: string; to: string };
  heads: number;
  consistencyProofs: number;
  events: number;
  latest: { size: number; root: string; time: string };
}

const MAX_BUNDLE_HEADS = 1_000_000;

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function obj(v: unknown, what: string): Record<string, unknown> {
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new VerifyError(`${what}: expected an object`);
  return v as Record<string, unknown>;
}
function arr(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) throw new VerifyError(`${what}: expected an array`);
  return v;
}
function str(v: unknown, what: string): string {
  if (typeof v !== 'string') throw new VerifyError(`${what}: expected a string`);
  return v;
}
function size(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new VerifyError(`${what}: expected a whole number`);
  return v;
}
function hashes(v: unknown, what: string): Buffer[] {
  const a = arr(v, what);
  if (a.length > 128) throw new VerifyError(`${what}: too many hashes`);
  return a.map((h, i) => strictBase64(h, HASH_SIZE, `${what}[${i}]`));
}
function isoTime(v: unknown, what: string): Date {
  const s = str(v, what);
  const d = new Date(s);
  if (!/^\d{4}-\d{2}-\d{2}T/.test(s) || Number.isNaN(d.getTime())) throw new VerifyError(`${what}: expected an ISO 8601 time`);
  return d;
}

/** Reads a v1 entry's fields from its text; throws if it is not a well-formed v1 entry. */
export function parseEntry(entry: string): Record<EntryField, Json> {
  let v: unknown;
  try {
    v = JSON.parse(entry);
  } catch {
    throw new VerifyError('entry: not JSON');
  }
  if (!Array.isArray(v) || v.length !== ENTRY_FIELDS.length) throw new VerifyError(`entry: expected a JSON array of ${ENTRY_FIELDS.length} fields`);
  if (v[0] !== ENTRY_FORMAT) throw new VerifyError(`entry: unknown format ${JSON.stringify(v[0])}`);
  return Object.fromEntries(ENTRY_FIELDS.map((f, i) => [f, v[i] as Json])) as Record<EntryField, Json>;
}

/** The binary types of a v2 entry's fields, in ENTRY_FIELDS order (OIDs of PostgreSQL's catalog, fixed since long before version 10). */
const OID = { text: 25, int8: 20, uuid: 2950, timestamptz: 1184, textArray: 1009, uuidArray: 2951, jsonb: 3802 } as const;
type V2Type = keyof typeof OID;
const V2_TYPES: readonly V2Type[] = [
  'text', // format
  'uuid', // tenant_id
  'int8', // seq
  'uuid', // id
  'timestamptz', // occurred_at
  'text', // action
  'text', // outcome
  'uuid', // actor_account_id
  'textArray', // actor_roles
  'uuid', // on_behalf_of
  'text', // target_type
  'textArray', // target_ids
  'uuidArray', // family_ids
  'textArray', // fields
  'text', // purpose
  'text', // ip
  'text', // user_agent
  'text', // request_id
  'jsonb', // details
];
const ELEMENT_OID: Partial<Record<V2Type, number>> = { textArray: OID.text, uuidArray: OID.uuid };
const MAX_ARRAY = 100_000;
/** 2000-01-01T00:00:00Z, PostgreSQL's epoch, in milliseconds since 1970. */
const PG_EPOCH_MS = 946_684_800_000n;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Reads a v2 entry's bytes strictly (nothing missing, nothing left over); throws VerifyError. */
function decodeV2(b: Buffer): Record<EntryField, Json> {
  let at = 0;
  const need = (n: number) => {
    if (n < 0 || at + n > b.length) throw new VerifyError('entry: truncated');
  };
  const int32 = () => {
    need(4);
    const v = b.readInt32BE(at);
    at += 4;
    return v;
  };
  const bytes = (n: number) => {
    need(n);
    const v = b.subarray(at, at + n);
    at += n;
    return v;
  };
  const text = (v: Buffer, what: string) => {
    try {
      return utf8.decode(v);
    } catch {
      throw new VerifyError(`entry: ${what} is not UTF-8`);
    }
  };
  const uuid = (v: Buffer, what: string) => {
    if (v.length !== 16) throw new VerifyError(`entry: ${what} is not a uuid`);
    const h = v.toString('hex');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  };
  const scalar = (type: 'text' | 'uuid', v: Buffer, what: string): string => (type === 'text' ? text(v, what) : uuid(v, what));
  if (int32() !== ENTRY_FIELDS.length) throw new VerifyError(`entry: expected ${ENTRY_FIELDS.length} fields`);
  const out: Record<string, Json> = {};
  ENTRY_FIELDS.forEach((field, i) => {
    const type = V2_TYPES[i]!;
    if (int32() !== OID[type]) throw new VerifyError(`entry: ${field} is not of type ${type}`);
    const len = int32();
    if (len === -1) {
      out[field] = null;
      return;
    }
    const v = bytes(len);
    switch (type) {
      case 'text':
      case 'uuid':
        out[field] = scalar(type, v, field);
        return;
      case 'int8':
        if (v.length !== 8) throw new VerifyError(`entry: ${field} is not an int8`);
        out[field] = v.readBigInt64BE(0).toString();
        return;
      case 'timestamptz': {
        if (v.length !== 8) throw new VerifyError(`entry: ${field} is not a timestamptz`);
        const us = v.readBigInt64BE(0);
        const ms = PG_EPOCH_MS + (us >= 0n ? us / 1000n : -((-us + 999n) / 1000n));
        const d = new Date(Number(ms));
        if (Number.isNaN(d.getTime())) throw new VerifyError(`entry: ${field} is out of range`);
        const micro = (((us % 1_000_000n) + 1_000_000n) % 1_000_000n).toString().padStart(6, '0');
        out[field] = `${d.toISOString().slice(0, 19)}.${micro}Z`;
        return;
      }
      case 'jsonb': {
        if (v.length < 1 || v[0] !== 1) throw new VerifyError(`entry: ${field} is not jsonb of version 1`);
        try {
          out[field] = JSON.parse(text(v.subarray(1), field)) as Json;
        } catch (err) {
          if (err instanceof VerifyError) throw err;
          throw new VerifyError(`entry: ${field} is not JSON`);
        }
        return;
      }
      case 'textArray':
      case 'uuidArray': {
        const element = type === 'textArray' ? 'text' : 'uuid';
        const r = { at: 0 };
        const a = (n: number) => {
          if (r.at + n > v.length) throw new VerifyError(`entry: ${field} is truncated`);
          const x = v.subarray(r.at, r.at + n);
          r.at += n;
          return x;
        };
        const i32 = () => a(4).readInt32BE(0);
        const ndim = i32();
        const hasNulls = i32();
        if (i32() !== ELEMENT_OID[type]) throw new VerifyError(`entry: ${field} has elements of another type`);
        if (hasNulls !== 0) throw new VerifyError(`entry: ${field} holds nulls`);
        const items: string[] = [];
        if (ndim === 1) {
          const n = i32();
          if (i32() !== 1 || n < 1 || n > MAX_ARRAY) throw new VerifyError(`entry: ${field} is not a list`);
          for (let k = 0; k < n; k++) {
            const l = i32();
            if (l < 0) throw new VerifyError(`entry: ${field} holds nulls`);
            items.push(scalar(element, a(l), field));
          }
        } else if (ndim !== 0) throw new VerifyError(`entry: ${field} is not a list`);
        if (r.at !== v.length) throw new VerifyError(`entry: ${field} has bytes left over`);
        out[field] = items;
        return;
      }
    }
  });
  if (at !== b.length) throw new VerifyError('entry: bytes left over after the last field');
  if (out.format !== ENTRY_FORMAT_V2) throw new VerifyError(`entry: unknown format ${JSON.stringify(out.format)}`);
  return out as Record<EntryField, Json>;
}

/**
 * Reads an entry's fields from its bytes, in either format (a v1 entry is a
 * JSON array, so it starts with '['; a v2 entry starts with its column
 * count, 0x00000013); throws VerifyError if it is not a well-formed entry.
 */
export function decodeEntry(entry: Uint8Array): Record<EntryField, Json> {
  const b = Buffer.isBuffer(entry) ? entry : Buffer.from(entry.buffer, entry.byteOffset, entry.byteLength);
  if (b[0] === 0x5b) {
    let t: string;
    try {
      t = utf8.decode(b);
    } catch {
      throw new VerifyError('entry: not UTF-8');
    }
    return parseEntry(t);
  }
  return decodeV2(b);
}

/**
 * Verifies an export bundle: every head is signed by the trusted key and is a
 * checkpoint of the bundle's log; consecutive heads are consistent (so the
 * log only grew between them); every event is a leaf of the latest head, at
 * the index given, and belongs to the tenant and the time range. Throws
 * VerifyError with the first problem.
 */
export function verifyBundle(text: string, opts: { key?: string | undefined } = {}): BundleReport {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new VerifyError(`not a bundle: the file is not JSON (${(err as Error).message})`);
  }
  const b = obj(raw, 'bundle');
  if (b.format !== BUNDLE_FORMAT && b.format !== BUNDLE_FORMAT_V1) throw new VerifyError(`not a bundle: format is ${JSON.stringify(b.format ?? null)}, expected "${BUNDLE_FORMAT}"`);
  const binaryEntries = b.format === BUNDLE_FORMAT;
  const tenant = obj(b.tenant, 'tenant');
  const tenantId = str(tenant.id, 'tenant.id');
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(tenantId)) throw new VerifyError('tenant.id: not a UUID');
  const origin = originFor(tenantId);
  if (b.origin !== origin) throw new VerifyError(`origin: expected "${origin}"`);

  const pk = obj(b.public_key, 'public_key');
  const bundleKey = parseVerifierKey(str(pk.verifier_key, 'public_key.verifier_key'));
  // The readable parts of the key must say the same as the key itself.
  if (pk.algorithm !== 'Ed25519' || pk.key_id !== bundleKey.id.toString('hex') || pk.public_key !== bundleKey.publicKey.toString('base64')) {
    throw new VerifyError('public_key: algorithm, key_id or public_key differ from verifier_key');
  }
  let key = bundleKey;
  let keySource: BundleReport['keySource'] = 'bundle';
  if (opts.key !== undefined) {
    key = parseVerifierKey(opts.key);
    keySource = 'pinned';
  }
  if (key.name !== origin) throw new VerifyError(`the trusted key is named "${key.name}", not this log's origin "${origin}"`);

  const range = obj(b.range, 'range');
  const from = isoTime(range.from, 'range.from');
  const to = isoTime(range.to, 'range.to');
  if (!(from < to)) throw new VerifyError('range: from must be before to');

  // Heads: signed by the trusted key, for this origin, sizes strictly growing.
  const headList = arr(b.heads, 'heads');
  if (!headList.length) throw new VerifyError('heads: the bundle has no signed head');
  if (headList.length > MAX_BUNDLE_HEADS) throw new VerifyError('heads: too many');
  const heads = headList.map((h, i) => {
    const o = obj(h, `heads[${i}]`);
    let cp: Checkpoint;
    try {
      cp = openCheckpoint(o.checkpoint, key);
    } catch (err) {
      throw new VerifyError(`heads[${i}]: ${(err as Error).message}`);
    }
    if (cp.origin !== origin) throw new VerifyError(`heads[${i}]: checkpoint of another log ("${cp.origin}")`);
    if (o.tree_size !== cp.size || o.root_hash !== cp.root.toString('base64') || o.time !== cp.time.toISOString()) {
      throw new VerifyError(`heads[${i}]: tree_size, root_hash or time differ from the signed checkpoint`);
    }
    if (cp.size === 0) throw new VerifyError(`heads[${i}]: an empty tree`);
    return cp;
  });
  for (let i = 1; i < heads.length; i++) {
    if (!(heads[i]!.size > heads[i - 1]!.size)) throw new VerifyError(`heads[${i}]: tree sizes must grow (${heads[i - 1]!.size} then ${heads[i]!.size})`);
  }
  const latest = heads[heads.length - 1]!;

  // Consistency between each pair of consecutive heads.
  const proofs = arr(b.consistency, 'consistency');
  if (proofs.length !== heads.length - 1) throw new VerifyError(`consistency: expected ${heads.length - 1} proofs (one between each pair of consecutive heads), got ${proofs.length}`);
  proofs.forEach((p, i) => {
    const o = obj(p, `consistency[${i}]`);
    const [h1, h2] = [heads[i]!, heads[i + 1]!];
    if (o.from !== h1.size || o.to !== h2.size) throw new VerifyError(`consistency[${i}]: is for ${String(o.from)}→${String(o.to)}, expected ${h1.size}→${h2.size}`);
    if (!verifyConsistency(h1.size, h2.size, hashes(o.proof, `consistency[${i}].proof`), h1.root, h2.root)) {
      throw new VerifyError(`consistency[${i}]: the tree of size ${h1.size} is not a prefix of the tree of size ${h2.size} (the log was rewritten between these heads, or the proof is for another tree)`);
    }
  });

  // Events: leaves of the latest head, of this tenant, in the range.
  const events = arr(b.events, 'events');
  let prev = -1;
  events.forEach((ev, i) => {
    const o = obj(ev, `events[${i}]`);
    const index = size(o.leaf_index, `events[${i}].leaf_index`);
    const entryText = str(o.entry, `events[${i}].entry`);
    const entry = binaryEntries ? base64Of(entryText, `events[${i}].entry`) : Buffer.from(entryText, 'utf8');
    if (index <= prev) throw new VerifyError(`events[${i}]: leaf indices must grow`);
    prev = index;
    const inc = obj(o.inclusion, `events[${i}].inclusion`);
    if (inc.tree_size !== latest.size) throw new VerifyError(`events[${i}] (leaf ${index}): inclusion proof for a tree of size ${String(inc.tree_size)}, expected the latest head's ${latest.size}`);
    if (index >= latest.size) throw new VerifyError(`events[${i}]: leaf ${index} is not in the latest head (size ${latest.size})`);
    if (!verifyInclusion(index, latest.size, leafHash(entry), hashes(inc.proof, `events[${i}].inclusion.proof`), latest.root)) {
      throw new VerifyError(`events[${i}] (leaf ${index}): the inclusion proof does not lead to the latest head's root (the event was changed, or the proof is for another tree)`);
    }
    let fields: Record<EntryField, Json>;
    try {
      fields = decodeEntry(entry);
    } catch (err) {
      throw new VerifyError(`events[${i}] (leaf ${index}): ${(err as Error).message}`);
    }
    if (fields.tenant_id !== tenantId) throw new VerifyError(`events[${i}] (leaf ${index}): an event of another tenant`);
    const at = typeof fields.occurred_at === 'string' ? new Date(fields.occurred_at) : null;
    if (!at || Number.isNaN(at.getTime()) || at < from || at >= to) throw new VerifyError(`events[${i}] (leaf ${index}): occurred outside the bundle's range`);
    if (o.event !== undefined && JSON.stringify(o.event) !== JSON.stringify(fields)) {
      throw new VerifyError(`events[${i}] (leaf ${index}): the readable copy of the event differs from the signed entry`);
    }
  });

  return {
    tenantId,
    origin,
    key: formatVerifierKey(key),
    keySource,
    range: { from: from.toISOString(), to: to.toISOString() },
    heads: heads.length,
    consistencyProofs: proofs.length,
    events: events.length,
    latest: { size: latest.size, root: latest.root.toString('base64'), time: latest.time.toISOString() },
  };
}
