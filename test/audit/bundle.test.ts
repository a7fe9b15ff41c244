/**
 * Export bundles and the standalone verifier: a bundle made from the database
 * checks; any change to it, a proof for another tree, a head signed by an
 * unknown key or plain garbage is refused with a message (VerifyError), never
 * a crash. The verifier's imports are checked too: node:crypto and merkle.ts.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { sql } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendAudit } from '../../src/audit/log.ts';
import { exportBundle, ExportError, type Bundle } from '../../src/audit/export.ts';
import { Sealer } from '../../src/audit/sealer.ts';
import { TenantSigner } from '../../src/audit/signing.ts';
import { checkpointText, decodeEntry, formatVerifierKey, openCheckpoint, parseVerifierKey, signedNote, verifierKey, verifyBundle, VerifyError } from '../../src/audit/verify-bundle.ts';
import { keyProviderFromSecret } from '../../src/crypto/keys.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { createTestDatabase, createTestTenant, type TestDatabase } from '../helpers/db.ts';

const keys = keyProviderFromSecret(Buffer.alloc(32, 21));
const DAY = 86_400_000;
const day = (n: number) => new Date(Date.UTC(2025, 0, 1) + n * DAY);

let t: TestDatabase;
let tenant: { id: string; slug: string };
let signer: TenantSigner;
let bundle: Bundle;
let text: string;

/** Events one a day over ten days, sealed in three batches, each head signed on the day of its batch. */
beforeAll(async () => {
  t = await createTestDatabase();
  tenant = await createTestTenant(t);
  signer = new TenantSigner(keys, tenant.id);
  let now = day(0);
  const sealer = new Sealer(t.db, keys, pino({ level: 'silent' }), { clock: () => now });
  for (const [first, last] of [[0, 3], [4, 6], [7, 9]] as const) {
    for (let d = first; d <= last; d++) {
      await inTenant(t.db, tenant.id, (trx) => appendAudit(trx, tenant.id, { action: 'waitlist.childFile.read', outcome: 'success', actorAccountId: randomUUID(), familyIds: [randomUUID()], fields: ['first_name'], purpose: `day ${d}`, details: { d } }, day(d)));
    }
    now = new Date(day(last).getTime() + 3600_000);
    await sealer.sealTenant(tenant.id);
  }
  bundle = await exportBundle(t.db, tenant, signer, { from: day(3), to: day(8) });
  text = JSON.stringify(bundle);
});
afterAll(async () => {
  await t?.close();
});

const copy = (): Bundle => JSON.parse(text) as Bundle;
const rejected = (b: unknown, opts: { key?: string } = {}) => {
  try {
    verifyBundle(typeof b === 'string' ? b : JSON.stringify(b), opts);
  } catch (err) {
    expect(err, String(err)).toBeInstanceOf(VerifyError);
    return (err as Error).message;
  }
  throw new Error('the bundle was accepted');
};

describe('export', () => {
  it('holds the events of the range, the heads around it with consistency proofs, proofs against the latest head, and the key', () => {
    expect(bundle.events.map((e) => e.event.purpose)).toEqual(['day 3', 'day 4', 'day 5', 'day 6', 'day 7']);
    expect(bundle.events.map((e) => e.leaf_index)).toEqual([3, 4, 5, 6, 7]);
    // Signed before the range (size 4), in it (size 7), and the latest (size 10).
    expect(bundle.heads.map((h) => h.tree_size)).toEqual([4, 7, 10]);
    expect(bundle.consistency.map((c) => [c.from, c.to])).toEqual([[4, 7], [7, 10]]);
    expect(bundle.events.every((e) => e.inclusion.tree_size === 10)).toBe(true);
    expect(bundle.public_key.verifier_key).toBe(signer.verifierKeyText);
    expect(bundle.events[0]!.event.tenant_id).toBe(tenant.id);
  });

  it('the standalone verifier accepts it, with the key inside or pinned', () => {
    expect(verifyBundle(text)).toMatchObject({ tenantId: tenant.id, heads: 3, consistencyProofs: 2, events: 5, keySource: 'bundle', latest: { size: 10 } });
    expect(verifyBundle(text, { key: signer.verifierKeyText })).toMatchObject({ keySource: 'pinned' });
  });

  it('a log begun in format 1 (events written before migration 0051): its bundle checks, and so does the same as a bundle of format v1', async () => {
    const old = await createTestTenant(t);
    const oldSigner = new TenantSigner(keys, old.id);
    for (let d = 0; d < 3; d++) {
      await inTenant(t.db, old.id, (trx) => appendAudit(trx, old.id, { action: 'waitlist.childFile.read', outcome: 'success', purpose: `day ${d}`, details: { d } }, day(d)));
    }
    await t.ownerDb().transaction().execute(async (trx) => {
      await sql`ALTER TABLE audit_events DISABLE TRIGGER USER`.execute(trx);
      await sql`UPDATE audit_events SET entry_format = 1 WHERE tenant_id = ${old.id} AND purpose IN ('day 0', 'day 1')`.execute(trx);
      await sql`ALTER TABLE audit_events ENABLE TRIGGER USER`.execute(trx);
    });
    await new Sealer(t.db, keys, pino({ level: 'silent' }), { clock: () => day(4) }).sealTenant(old.id);
    const b = await exportBundle(t.db, old, oldSigner, { from: day(0), to: day(3) });
    expect(b.events.map((e) => e.event.format)).toEqual(['guichet.audit/v1', 'guichet.audit/v1', 'guichet.audit/v2']);
    expect(verifyBundle(JSON.stringify(b))).toMatchObject({ events: 3 });
    // as an earlier Guichet wrote them: v1 entries as their text
    const v1 = { ...b, format: 'guichet-audit-bundle/v1', events: b.events.slice(0, 2).map((e) => ({ ...e, entry: Buffer.from(e.entry, 'base64').toString('utf8') })) };
    expect(v1.events[0]!.entry).toMatch(/^\["guichet\.audit\/v1", /);
    expect(verifyBundle(JSON.stringify(v1))).toMatchObject({ events: 2 });
  });

  it('thins the heads of a busy period, keeping the first and the last', async () => {
    const thin = await exportBundle(t.db, tenant, signer, { from: day(0), to: day(30) }, { maxHeads: 2 });
    expect(thin.heads.map((h) => h.tree_size)).toEqual([4, 10]);
    expect(verifyBundle(JSON.stringify(thin)).events).toBe(10);
  });

  it('refuses a tenant with nothing sealed, and an empty range', async () => {
    const other = await createTestTenant(t);
    await expect(exportBundle(t.db, other, new TenantSigner(keys, other.id), { from: day(0), to: day(1) })).rejects.toThrow(ExportError);
    await expect(exportBundle(t.db, tenant, signer, { from: day(1), to: day(1) })).rejects.toThrow(/before/);
  });
});

describe('decodeEntry() refuses a malformed entry with a message', () => {
  const good = (): Buffer => Buffer.from(copy().events[0]!.entry, 'base64');
  const refused = (b: Buffer) => {
    try {
      decodeEntry(b);
    } catch (err) {
      expect(err, String(err)).toBeInstanceOf(VerifyError);
      return (err as Error).message;
    }
    throw new Error('the entry was accepted');
  };

  it('reads a good one', () => {
    expect(decodeEntry(good())).toMatchObject({ format: 'guichet.audit/v2', tenant_id: tenant.id, purpose: 'day 3', target_ids: [], details: { d: 3 } });
  });

  it('truncated, with bytes left over, with another field count, type or format, or text that is not UTF-8', () => {
    const b = good();
    expect(refused(b.subarray(0, b.length - 3))).toMatch(/truncated/);
    expect(refused(Buffer.concat([b, Buffer.from([0])]))).toMatch(/left over/);
    const count = Buffer.from(b);
    count.writeInt32BE(18, 0);
    expect(refused(count)).toMatch(/expected 19 fields/);
    const type = Buffer.from(b);
    type.writeInt32BE(20, 4 + 4 + 4 + 16); // the tenant's OID, after the format's field
    expect(refused(type)).toMatch(/tenant_id is not of type uuid/);
    const format = Buffer.from(b);
    format.write('guichet.audit/v3', 12);
    expect(refused(format)).toMatch(/unknown format "guichet\.audit\/v3"/);
    const notUtf8 = Buffer.from(b);
    notUtf8[12] = 0xff;
    expect(refused(notUtf8)).toMatch(/format is not UTF-8/);
    expect(refused(Buffer.from('[1, 2]'))).toMatch(/expected a JSON array of 19 fields/);
    expect(refused(Buffer.alloc(0))).toMatch(/truncated/);
  });
});

describe('the verifier refuses, with a message', () => {
  it('an event changed by one character', () => {
    const b = copy();
    // the outcome's text in the entry's bytes, after its length (7)
    const bytes = Buffer.from(b.events[2]!.entry, 'base64');
    const at = bytes.indexOf(Buffer.from('\u0000\u0000\u0000\u0007success'));
    expect(at).toBeGreaterThan(0);
    bytes.write('failure', at + 4);
    b.events[2]!.entry = bytes.toString('base64');
    expect(rejected(b)).toMatch(/events\[2\] \(leaf 5\): the inclusion proof does not lead to the latest head's root/);
  });

  it('an event moved to another leaf index', () => {
    const b = copy();
    b.events[1]!.leaf_index = 3;
    expect(rejected(b)).toMatch(/leaf indices must grow|inclusion proof/);
    const c = copy();
    [c.events[1]!.entry, c.events[2]!.entry] = [c.events[2]!.entry, c.events[1]!.entry];
    expect(rejected(c)).toMatch(/events\[1\] \(leaf 4\): the inclusion proof/);
  });

  it('an event left out of the readable copy but in the signed entry, or the other way round', () => {
    const b = copy();
    (b.events[0]!.event as Record<string, unknown>).outcome = 'denied';
    expect(rejected(b)).toMatch(/readable copy of the event differs from the signed entry/);
  });

  it('a proof for another tree', () => {
    const b = copy();
    b.events[0]!.inclusion.tree_size = 7;
    expect(rejected(b)).toMatch(/inclusion proof for a tree of size 7, expected the latest head's 10/);
    const c = copy();
    c.events[0]!.inclusion.proof = c.events[1]!.inclusion.proof;
    expect(rejected(c)).toMatch(/the inclusion proof does not lead to the latest head's root/);
    const d = copy();
    d.consistency[0]!.proof = d.consistency[1]!.proof;
    expect(rejected(d)).toMatch(/consistency\[0\]: the tree of size 4 is not a prefix of the tree of size 7/);
    const e = copy();
    e.consistency[1]!.proof[0] = Buffer.alloc(32, 1).toString('base64');
    expect(rejected(e)).toMatch(/consistency\[1\]/);
  });

  it('a head signed by an unknown key, a key pinned for another log, a forged signature', () => {
    const other = new TenantSigner(keyProviderFromSecret(Buffer.alloc(32, 22)), tenant.id);
    const b = copy();
    const h = b.heads[1]!;
    h.checkpoint = other.sign(h.tree_size, Buffer.from(h.root_hash, 'base64'), new Date(h.time));
    expect(rejected(b)).toMatch(/heads\[1\]: checkpoint: not signed by the trusted key .* signed by an unknown key/);
    // The whole bundle re-signed with another key: the bundle's own key says yes, the pinned key no.
    const c = copy();
    c.public_key = { algorithm: 'Ed25519', verifier_key: other.verifierKeyText, key_id: other.keyIdHex, public_key: other.verifier.publicKey.toString('base64') };
    for (const x of c.heads) x.checkpoint = other.sign(x.tree_size, Buffer.from(x.root_hash, 'base64'), new Date(x.time));
    expect(verifyBundle(JSON.stringify(c)).keySource).toBe('bundle');
    expect(rejected(c, { key: signer.verifierKeyText })).toMatch(/not signed by the trusted key/);
    expect(rejected(text, { key: new TenantSigner(keys, randomUUID()).verifierKeyText })).toMatch(/the trusted key is named "guichet\.audit\/[0-9a-f-]+", not this log's origin/);
    const d = copy();
    const sig = d.heads[0]!.checkpoint;
    d.heads[0]!.checkpoint = sig.replace(/([A-Za-z0-9+/]{10})=\n$/, (_m, s: string) => `${s.split('').reverse().join('')}=\n`);
    expect(rejected(d)).toMatch(/heads\[0\]: checkpoint: /);
  });

  it('a head whose fields differ from its checkpoint, heads out of order, a missing consistency proof', () => {
    const b = copy();
    b.heads[2]!.root_hash = b.heads[1]!.root_hash;
    expect(rejected(b)).toMatch(/heads\[2\]: tree_size, root_hash or time differ from the signed checkpoint/);
    const c = copy();
    c.heads.reverse();
    expect(rejected(c)).toMatch(/tree sizes must grow/);
    const d = copy();
    d.consistency.pop();
    expect(rejected(d)).toMatch(/consistency: expected 2 proofs/);
  });

  it('an event outside the range or of another tenant', () => {
    const b = copy();
    b.range.from = day(4).toISOString();
    expect(rejected(b)).toMatch(/events\[0\] \(leaf 3\): occurred outside the bundle's range/);
  });

  it('garbage: not JSON, not a bundle, wrong types, broken base64, a bad key', () => {
    expect(rejected('')).toMatch(/not a bundle: the file is not JSON/);
    expect(rejected('{"format":')).toMatch(/not JSON/);
    expect(rejected('[]')).toMatch(/bundle: expected an object/);
    expect(rejected('null')).toMatch(/bundle: expected an object/);
    expect(rejected({ format: 'something else' })).toMatch(/format is "something else"/);
    expect(rejected({ ...copy(), heads: [] })).toMatch(/no signed head/);
    expect(rejected({ ...copy(), heads: 'x' })).toMatch(/heads: expected an array/);
    expect(rejected({ ...copy(), tenant: { id: 'nope' } })).toMatch(/tenant.id: not a UUID/);
    const b = copy();
    b.events[0]!.inclusion.proof[0] = 'not base64!';
    expect(rejected(b)).toMatch(/not standard base64/);
    const c = copy();
    c.events[0]!.inclusion.proof.push(...Array(200).fill(c.events[0]!.inclusion.proof[0]));
    expect(rejected(c)).toMatch(/too many hashes/);
    expect(rejected(text, { key: 'garbage' })).toMatch(/a verifier key reads/);
    expect(rejected(text, { key: `${tenant.id}+00000000+AAAA` })).toMatch(/verifier key/);
    const d = copy();
    d.heads[0]!.checkpoint = 'guichet\n\n— x y\n';
    expect(rejected(d)).toMatch(/heads\[0\]: checkpoint: /);
    const e = copy();
    e.public_key.public_key = Buffer.alloc(32).toString('base64');
    expect(rejected(e)).toMatch(/public_key: algorithm, key_id or public_key differ from verifier_key/);
  });

  it('never throws anything but a VerifyError, whatever is changed (500 random mutations)', () => {
    let seed = 42;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const values: unknown[] = [null, 0, -1, 1e300, 'x', '', [], {}, true, 'AAAA', Buffer.alloc(32).toString('base64'), 2 ** 53];
    // What the verifier cannot check: when the export was made, the tenant's slug, whether a readable copy is given.
    const unchecked = /^(exported_at|tenant\.slug|events\.\d+\.event)$/;
    const acceptedChanges: string[] = [];
    for (let i = 0; i < 500; i++) {
      const b = copy() as unknown as Record<string, unknown>;
      const before = JSON.stringify(b);
      // Walk down to a random spot and change it.
      let node: Record<string, unknown> = b;
      const path: string[] = [];
      for (;;) {
        const ks = Object.keys(node);
        const k = ks[rand(ks.length)]!;
        const v = node[k];
        path.push(k);
        if (v && typeof v === 'object' && Object.keys(v).length && rand(4)) {
          node = v as Record<string, unknown>;
          continue;
        }
        const r = rand(3);
        if (r === 0) delete node[k];
        else if (r === 1 || typeof v !== 'string') node[k] = values[rand(values.length)];
        else node[k] = `${v.slice(0, rand(v.length))}${v.slice(rand(v.length) + 1)}`;
        break;
      }
      if (JSON.stringify(b) === before) continue;
      try {
        verifyBundle(JSON.stringify(b));
        acceptedChanges.push(path.join('.'));
      } catch (err) {
        if (!(err instanceof VerifyError)) throw new Error(`mutation ${i} (${path.join('.')}) crashed the verifier: ${(err as Error).stack}`);
      }
    }
    expect(acceptedChanges.filter((p) => !unchecked.test(p))).toEqual([]);
  });
});

describe('the checkpoint format', () => {
  it('is a c2sp.org checkpoint in an Ed25519 signed note, with the key ID of the note spec', () => {
    const cp = bundle.heads[2]!.checkpoint;
    const lines = cp.split('\n');
    expect(lines[0]).toBe(`guichet.audit/${tenant.id}`);
    expect(lines[1]).toBe('10');
    expect(Buffer.from(lines[2]!, 'base64')).toHaveLength(32);
    expect(lines[3]).toMatch(/^time 2025-01-10T01:00:00\.000Z$/);
    expect(lines[4]).toBe('');
    expect(lines[5]).toMatch(new RegExp(`^\u2014 guichet\\.audit/${tenant.id} [A-Za-z0-9+/]{91}=$`));
    const sig = Buffer.from(lines[5]!.split(' ')[2]!, 'base64');
    expect(sig.subarray(0, 4)).toEqual(signer.verifier.id);
    const vk = parseVerifierKey(signer.verifierKeyText);
    expect(formatVerifierKey(vk)).toBe(signer.verifierKeyText);
    expect(openCheckpoint(cp, vk).size).toBe(10);
  });

  it('ignores signatures by other keys (witness cosignatures) but refuses a bad one by the trusted key', () => {
    const cp = bundle.heads[0]!.checkpoint;
    const witness = new TenantSigner(keyProviderFromSecret(Buffer.alloc(32, 3)), 'w');
    const cosigned = `${cp}\u2014 ${witness.origin} ${Buffer.concat([witness.verifier.id, Buffer.alloc(64, 1)]).toString('base64')}\n`;
    expect(openCheckpoint(cosigned, signer.verifier).size).toBe(4);
    const text2 = checkpointText(signer.origin, 4, Buffer.alloc(32), new Date(0));
    const bad = signedNote(text2, signer.verifier, Buffer.alloc(64));
    expect(() => openCheckpoint(bad, signer.verifier)).toThrow(/does not verify/);
    expect(() => verifierKey('has space', Buffer.alloc(32))).toThrow(VerifyError);
  });

  it('the verifier module imports nothing but node:crypto and merkle.ts, which imports only node:crypto', () => {
    const imports = (f: string) => [...readFileSync(new URL(`../../src/audit/${f}`, import.meta.url), 'utf8').matchAll(/^import[^'"]*['"]([^'"]+)['"]/gm)].map((m) => m[1]);
    expect(imports('verify-bundle.ts')).toEqual(['node:crypto', './merkle.ts']);
    expect(imports('merkle.ts')).toEqual(['node:crypto']);
  });
});
