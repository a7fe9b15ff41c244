import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { CiphertextError, DataKeyDestroyedError, DataKeyMissingError, KeyError, MasterKeyMismatchError } from './errors.ts';
import type { KeyProvider } from './keys.ts';
import type { FamilyKeyRecord, Keyring, TenantKeyPurpose, TenantKeyRecord } from './keyring.ts';

/**
 * Envelope encryption of personal fields (src/crypto/README.md).
 *
 *   master key (KeyProvider) ─wraps→ tenant KEK ─wraps→ family data key ─encrypts→ fields
 *
 * Every field is AES-256-GCM under its family's data key, with a random 96-bit
 * IV, and its associated data names the tenant, the table, the column, the row
 * id and the key version: a ciphertext copied to another row, another column,
 * another table or another tenant does not decrypt. Wrapped keys are bound the
 * same way (tenant, family, versions), so a wrapped key moved to another
 * family in the keyring does not unwrap either.
 *
 * Field ciphertext, format 1:
 *
 *   0      1             5            17                 n-16    n
 *   ┌──────┬─────────────┬────────────┬──────────────────┬───────┐
 *   │ 0x01 │ key version │ IV (12 B)  │ ciphertext       │ tag   │
 *   └──────┴─────────────┴────────────┴──────────────────┴───────┘
 *          uint32 BE: the family key version (the header is part of the associated data)
 *
 * The plaintext is a type byte (0 null, 1 text) and the UTF-8 text, padded
 * (ISO/IEC 7816-4) to a multiple of 16 bytes: a stored NULL — no NIREC yet,
 * no phone — looks like any other value, and lengths show only coarsely.
 *
 * Nonce budget: a family key encrypts a few hundred fields in its life, a
 * tenant KEK wraps one key per family (millions, far below the 2^32 random-IV
 * bound for one GCM key).
 */
export const FIELD_FORMAT = 0x01;
const HEADER = 5;
const IV = 12;
const TAG = 16;
const PAD = 16;

/** Which field a ciphertext belongs to: bound into its associated data. */
export interface FieldRef {
  tenantId: string;
  table: string;
  column: string;
  rowId: string;
}

/** An unwrapped family data key. */
export interface FamilyKey {
  readonly tenantId: string;
  readonly familyId: string;
  readonly version: number;
  readonly key: Buffer;
}

export { CiphertextError, DataKeyDestroyedError, DataKeyMissingError } from './errors.ts';

function fieldAad(ref: FieldRef, header: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`guichet.field.v1\0${ref.tenantId}\0${ref.table}\0${ref.column}\0${ref.rowId}\0`, 'utf8'), header]);
}

function describe(ref: FieldRef): string {
  return `${ref.table}.${ref.column} of row ${ref.rowId} (tenant ${ref.tenantId})`;
}

function encode(value: string | null): Buffer {
  const body = value === null ? Buffer.from([0]) : Buffer.concat([Buffer.from([1]), Buffer.from(value, 'utf8')]);
  const padded = Buffer.alloc((Math.floor(body.length / PAD) + 1) * PAD);
  body.copy(padded);
  padded[body.length] = 0x80;
  return padded;
}

function decode(padded: Buffer, ref: FieldRef): string | null {
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) end--;
  if (end < 1 || padded[end] !== 0x80) throw new CiphertextError(`${describe(ref)}: bad padding`);
  const body = padded.subarray(0, end);
  if (body[0] === 0 && body.length === 1) return null;
  if (body[0] !== 1) throw new CiphertextError(`${describe(ref)}: unknown value type ${body[0]}`);
  return body.subarray(1).toString('utf8');
}

/** Encrypts one field under a family key. */
export function sealField(key: FamilyKey, ref: FieldRef, value: string | null): Buffer {
  const header = Buffer.alloc(HEADER);
  header[0] = FIELD_FORMAT;
  header.writeUInt32BE(key.version, 1);
  const iv = randomBytes(IV);
  const cipher = createCipheriv('aes-256-gcm', key.key, iv);
  cipher.setAAD(fieldAad(ref, header));
  const ct = Buffer.concat([cipher.update(encode(value)), cipher.final()]);
  return Buffer.concat([header, iv, ct, cipher.getAuthTag()]);
}

/** The family key version a field ciphertext was made with. */
export function keyVersionOf(blob: Buffer, ref: FieldRef): number {
  if (!Buffer.isBuffer(blob) || blob.length < HEADER + IV + PAD + TAG) throw new CiphertextError(`${describe(ref)}: truncated (${blob?.length ?? 0} bytes)`);
  if (blob[0] !== FIELD_FORMAT) throw new CiphertextError(`${describe(ref)}: unknown ciphertext format ${blob[0]}`);
  return blob.readUInt32BE(1);
}

/** Decrypts one field; CiphertextError when it does not authenticate as this field of this row. */
export function openField(key: FamilyKey, ref: FieldRef, blob: Buffer): string | null {
  const version = keyVersionOf(blob, ref);
  if (version !== key.version) throw new CiphertextError(`${describe(ref)}: made with key version ${version}, not ${key.version}`);
  const header = blob.subarray(0, HEADER);
  const decipher = createDecipheriv('aes-256-gcm', key.key, blob.subarray(HEADER, HEADER + IV));
  decipher.setAAD(fieldAad(ref, header));
  decipher.setAuthTag(blob.subarray(blob.length - TAG));
  let plain: Buffer;
  try {
    plain = Buffer.concat([decipher.update(blob.subarray(HEADER + IV, blob.length - TAG)), decipher.final()]);
  } catch {
    throw new CiphertextError(`${describe(ref)}: does not authenticate — damaged, or copied from another row, column or tenant`);
  }
  return decode(plain, ref);
}

/* ------------------------------------------------------- key wrapping */

const WRAP_FORMAT = 0x01;

function wrapUnder(kek: Buffer, kekVersion: number, context: string, key: Buffer): Buffer {
  const header = Buffer.alloc(HEADER);
  header[0] = WRAP_FORMAT;
  header.writeUInt32BE(kekVersion, 1);
  const iv = randomBytes(IV);
  const cipher = createCipheriv('aes-256-gcm', kek, iv);
  cipher.setAAD(Buffer.concat([Buffer.from(`guichet.family-key.v1\0${context}\0`, 'utf8'), header]));
  const ct = Buffer.concat([cipher.update(key), cipher.final()]);
  return Buffer.concat([header, iv, ct, cipher.getAuthTag()]);
}

function unwrapUnder(kek: Buffer, context: string, wrapped: Buffer, where: string): Buffer {
  if (wrapped.length !== HEADER + IV + 32 + TAG || wrapped[0] !== WRAP_FORMAT) throw new CiphertextError(`${where}: wrapped key has an unknown format`);
  const decipher = createDecipheriv('aes-256-gcm', kek, wrapped.subarray(HEADER, HEADER + IV));
  decipher.setAAD(Buffer.concat([Buffer.from(`guichet.family-key.v1\0${context}\0`, 'utf8'), wrapped.subarray(0, HEADER)]));
  decipher.setAuthTag(wrapped.subarray(wrapped.length - TAG));
  try {
    return Buffer.concat([decipher.update(wrapped.subarray(HEADER + IV, wrapped.length - TAG)), decipher.final()]);
  } catch {
    throw new CiphertextError(`${where}: wrapped key does not authenticate under its tenant key — damaged, or moved from another family`);
  }
}

const familyContext = (tenantId: string, familyId: string, version: number) => `${tenantId}\0${familyId}\0${version}`;
const tenantContext = (tenantId: string, purpose: TenantKeyPurpose, version: number) => `tenant-key\0${tenantId}\0${purpose}\0${version}`;
const CANARY_CONTEXT = 'master-canary';

/* ----------------------------------------------------------- the cache */

interface Cached {
  key: FamilyKey;
  at: number;
}

export interface EnvelopeOptions {
  /** How long an unwrapped family key stays in memory (default 5 minutes); a destroyed key lingers in other processes at most this long. */
  familyKeyTtlMs?: number;
  /** How many unwrapped family keys stay in memory (default 20,000). */
  familyKeyCacheSize?: number;
  /**
   * Benchmarks only: the gateway skips key look-ups and decryption and hands
   * back a placeholder. It reveals nothing (no plaintext is produced); it
   * exists to measure what decryption costs on the read path.
   */
  skipDecryption?: boolean;
}

/**
 * The keys of one provider, unwrapped on demand and cached: tenant KEKs and
 * index keys until a rotation changes them, family keys for a few minutes.
 */
export class Envelope {
  readonly keyring: Keyring;
  readonly skipDecryption: boolean;
  private readonly ttl: number;
  private readonly cacheSize: number;
  private families = new Map<string, Cached>();
  private tenantKeys = new Map<string, Map<number, Buffer>>();
  private checkedMaster = new Set<number>();

  constructor(
    readonly provider: KeyProvider,
    opts: EnvelopeOptions = {},
  ) {
    this.keyring = provider.keyring;
    this.ttl = opts.familyKeyTtlMs ?? 5 * 60_000;
    this.cacheSize = opts.familyKeyCacheSize ?? 20_000;
    this.skipDecryption = opts.skipDecryption ?? false;
  }

  /* ---------------------------------------------------- master and tenant */

  /**
   * Tells a wrong master key from a damaged keyring entry: each master
   * version has a canary (a random key wrapped under it) in the keyring. If
   * the canary does not unwrap either, the master key is the wrong one.
   */
  private async masterMismatch(err: unknown, wrapped: Buffer): Promise<never> {
    if (!(err instanceof MasterKeyMismatchError)) throw err;
    const version = this.provider.masterVersionOf(wrapped);
    const canary = await this.keyring.canary(version);
    if (canary) {
      try {
        await this.provider.unwrap(canary, CANARY_CONTEXT);
      } catch {
        throw new MasterKeyMismatchError(
          `the master key (${this.provider.source}, version ${version}) is not the one the keyring ${this.keyring.location} was written with: wrong key file or GUICHET_MASTER_KEY`,
        );
      }
    }
    throw new KeyError(`keyring ${this.keyring.location}: ${err.message} — the entry is damaged; restore the keyring from its backup`);
  }

  /** Records the canary of the provider's current master version (once). */
  async ensureCanary(): Promise<void> {
    const v = await this.provider.currentMasterVersion();
    if (this.checkedMaster.has(v)) return;
    const existing = await this.keyring.canary(v);
    if (existing) {
      try {
        await this.provider.unwrap(existing, CANARY_CONTEXT);
      } catch {
        throw new MasterKeyMismatchError(
          `the master key (${this.provider.source}, version ${v}) is not the one the keyring ${this.keyring.location} was written with: wrong key file or GUICHET_MASTER_KEY`,
        );
      }
    } else {
      await this.keyring.putCanary(v, await this.provider.wrap(randomBytes(32), CANARY_CONTEXT));
    }
    this.checkedMaster.add(v);
  }

  private async unwrapTenantKey(rec: TenantKeyRecord): Promise<Buffer> {
    try {
      return await this.provider.unwrap(rec.wrapped, tenantContext(rec.tenantId, rec.purpose, rec.version));
    } catch (err) {
      return this.masterMismatch(err, rec.wrapped);
    }
  }

  /** A tenant key of one version, from the cache or the keyring. */
  async tenantKey(tenantId: string, purpose: TenantKeyPurpose, version: number): Promise<Buffer> {
    const cacheKey = `${tenantId}/${purpose}`;
    const cached = this.tenantKeys.get(cacheKey)?.get(version);
    if (cached) return cached;
    const rec = (await this.keyring.tenantKeys(tenantId, purpose)).find((r) => r.version === version);
    if (!rec) throw new DataKeyMissingError(`keyring ${this.keyring.location}: tenant ${tenantId} has no ${purpose} key version ${version} (the keyring is not the one this data was written with, or older than it)`);
    const key = await this.unwrapTenantKey(rec);
    let m = this.tenantKeys.get(cacheKey);
    if (!m) this.tenantKeys.set(cacheKey, (m = new Map()));
    m.set(version, key);
    return key;
  }

  /** The tenant key new wraps use: the highest version, created (version 1) on first use. Read from the keyring each time it is asked for. */
  async currentTenantKey(tenantId: string, purpose: TenantKeyPurpose): Promise<{ version: number; key: Buffer }> {
    let recs = await this.keyring.tenantKeys(tenantId, purpose);
    if (!recs.length) {
      await this.ensureCanary();
      const key = randomBytes(32);
      await this.keyring.addTenantKey({ tenantId, purpose, version: 1, wrapped: await this.provider.wrap(key, tenantContext(tenantId, purpose, 1)), createdAt: new Date() });
      recs = await this.keyring.tenantKeys(tenantId, purpose);
    }
    const top = recs[recs.length - 1]!;
    return { version: top.version, key: await this.tenantKey(tenantId, purpose, top.version) };
  }

  /** Adds the next KEK version of a tenant (the start of a rotation) and returns it. */
  async addTenantKeyVersion(tenantId: string): Promise<number> {
    await this.ensureCanary();
    for (;;) {
      const recs = await this.keyring.tenantKeys(tenantId, 'kek');
      const next = (recs[recs.length - 1]?.version ?? 0) + 1;
      const key = randomBytes(32);
      if (await this.keyring.addTenantKey({ tenantId, purpose: 'kek', version: next, wrapped: await this.provider.wrap(key, tenantContext(tenantId, 'kek', next)), createdAt: new Date() })) return next;
    }
  }

  /** Forgets cached tenant keys (after a rotation elsewhere). */
  forgetTenant(tenantId: string): void {
    this.tenantKeys.delete(`${tenantId}/kek`);
    this.tenantKeys.delete(`${tenantId}/index`);
  }

  /** Re-wraps a tenant key record under the provider's current master version. */
  async rewrapTenantKeyRecord(rec: TenantKeyRecord): Promise<Buffer> {
    const key = await this.unwrapTenantKey(rec);
    return this.provider.wrap(key, tenantContext(rec.tenantId, rec.purpose, rec.version));
  }

  /* ------------------------------------------------------------ families */

  private cacheGet(k: string): FamilyKey | undefined {
    const c = this.families.get(k);
    if (!c) return undefined;
    if (Date.now() - c.at > this.ttl) {
      this.families.delete(k);
      return undefined;
    }
    return c.key;
  }

  private cachePut(key: FamilyKey): void {
    const k = `${key.tenantId}/${key.familyId}/${key.version}`;
    this.families.delete(k);
    this.families.set(k, { key, at: Date.now() });
    while (this.families.size > this.cacheSize) this.families.delete(this.families.keys().next().value!);
  }

  /** Unwraps a family key record (the tenant KEK version it names). */
  async unwrapFamilyKey(rec: FamilyKeyRecord): Promise<FamilyKey> {
    const kek = await this.tenantKey(rec.tenantId, 'kek', rec.tenantKeyVersion);
    const key = unwrapUnder(kek, familyContext(rec.tenantId, rec.familyId, rec.version), rec.wrapped, `keyring ${this.keyring.location}: family ${rec.familyId} key version ${rec.version}`);
    return { tenantId: rec.tenantId, familyId: rec.familyId, version: rec.version, key };
  }

  /** Wraps a family key under a given KEK version (rotations). */
  async wrapFamilyKey(key: FamilyKey, kekVersion: number): Promise<Buffer> {
    const kek = await this.tenantKey(key.tenantId, 'kek', kekVersion);
    return wrapUnder(kek, kekVersion, familyContext(key.tenantId, key.familyId, key.version), key.key);
  }

  /**
   * The keys these families' ciphertexts need, by "familyId/version", looked
   * up in one keyring query for whatever the cache lacks. A key that was
   * destroyed, or that the keyring never had, throws.
   */
  async familyKeys(tenantId: string, wanted: readonly { familyId: string; version: number }[]): Promise<Map<string, FamilyKey>> {
    const out = new Map<string, FamilyKey>();
    const missing = new Map<string, { familyId: string; version: number }>();
    for (const w of wanted) {
      const k = `${w.familyId}/${w.version}`;
      if (out.has(k) || missing.has(k)) continue;
      const hit = this.cacheGet(`${tenantId}/${k}`);
      if (hit) out.set(k, hit);
      else missing.set(k, w);
    }
    if (!missing.size) return out;
    const familyIds = [...new Set([...missing.values()].map((m) => m.familyId))];
    const recs = await this.keyring.familyKeys(tenantId, familyIds);
    const byKey = new Map(recs.map((r) => [`${r.familyId}/${r.version}`, r]));
    let tombs: Map<string, Date> | null = null;
    for (const [k, w] of missing) {
      const rec = byKey.get(k);
      if (!rec) {
        tombs ??= new Map((await this.keyring.tombstones(tenantId, familyIds)).map((t) => [`${t.familyId}/${t.version}`, t.destroyedAt]));
        const destroyed = tombs.get(k);
        if (destroyed) throw new DataKeyDestroyedError(w.familyId, w.version, destroyed);
        throw new DataKeyMissingError(
          `family ${w.familyId}: no data key version ${w.version} in the keyring ${this.keyring.location} — it is not the keyring this data was written with, or it was restored from a backup older than the data`,
        );
      }
      const key = await this.unwrapFamilyKey(rec);
      this.cachePut(key);
      out.set(k, key);
    }
    return out;
  }

  async familyKey(tenantId: string, familyId: string, version: number): Promise<FamilyKey> {
    return (await this.familyKeys(tenantId, [{ familyId, version }])).get(`${familyId}/${version}`)!;
  }

  /**
   * New data keys for families (version 1, or the next version when a family
   * is re-keyed), wrapped by the tenant's current KEK and stored in the
   * keyring before any data is encrypted with them. A key whose data never
   * commits is an orphan, harmless: it opens nothing.
   */
  async createFamilyKeys(tenantId: string, families: readonly { familyId: string; version: number }[]): Promise<Map<string, FamilyKey>> {
    if (!families.length) return new Map();
    for (let attempt = 0; ; attempt++) {
      const kek = await this.currentTenantKey(tenantId, 'kek');
      const existing = new Map((await this.keyring.familyKeys(tenantId, [...new Set(families.map((f) => f.familyId))])).map((r) => [`${r.familyId}/${r.version}`, r]));
      const fresh: FamilyKey[] = [];
      const recs: FamilyKeyRecord[] = [];
      const now = new Date();
      const out = new Map<string, FamilyKey>();
      for (const f of families) {
        const k = `${f.familyId}/${f.version}`;
        const had = existing.get(k);
        if (had) {
          // Made by an earlier attempt that did not finish: reuse it, never replace it.
          out.set(k, await this.unwrapFamilyKey(had));
          continue;
        }
        const key: FamilyKey = { tenantId, familyId: f.familyId, version: f.version, key: randomBytes(32) };
        fresh.push(key);
        recs.push({ tenantId, familyId: f.familyId, version: f.version, tenantKeyVersion: kek.version, wrapped: wrapUnder(kek.key, kek.version, familyContext(tenantId, f.familyId, f.version), key.key), createdAt: now });
        out.set(k, key);
      }
      try {
        await this.keyring.addFamilyKeys(recs);
      } catch (err) {
        // The KEK was retired by a rotation between our read and our write: wrap again under the new one.
        if (attempt < 3 && /tenant key .* does not exist|foreign key|23503/.test(`${(err as Error).message} ${(err as { code?: string }).code ?? ''}`)) {
          this.forgetTenant(tenantId);
          continue;
        }
        throw err;
      }
      // Another process may have stored the same family version first: what is in the keyring wins.
      const stored = new Map((await this.keyring.familyKeys(tenantId, fresh.map((k) => k.familyId))).map((r) => [`${r.familyId}/${r.version}`, r]));
      for (const key of fresh) {
        const k = `${key.familyId}/${key.version}`;
        const rec = stored.get(k);
        if (!rec) throw new KeyError(`keyring ${this.keyring.location}: family ${key.familyId} key version ${key.version} was not stored`);
        const final = rec.wrapped.equals(recs.find((r) => r.familyId === key.familyId && r.version === key.version)!.wrapped) ? key : await this.unwrapFamilyKey(rec);
        this.cachePut(final);
        out.set(k, final);
      }
      return out;
    }
  }

  /** Destroys a family's key versions up to `maxVersion` (crypto-shredding) and forgets them here. */
  async destroyFamilyKeys(tenantId: string, familyId: string, maxVersion: number, at: Date): Promise<number> {
    for (const k of [...this.families.keys()]) if (k.startsWith(`${tenantId}/${familyId}/`)) this.families.delete(k);
    return this.keyring.destroyFamilyKeys(tenantId, familyId, maxVersion, at);
  }

  /** Empties the family key cache (benchmarks measure cold reads with it). */
  clearFamilyCache(): void {
    this.families.clear();
  }

  /* ------------------------------------------------------------- fields */

  seal(key: FamilyKey, ref: FieldRef, value: string | null): Buffer {
    return sealField(key, ref, value);
  }

  open(key: FamilyKey, ref: FieldRef, blob: Buffer): string | null {
    return openField(key, ref, blob);
  }

  /* -------------------------------------------------------- blind index */

  /**
   * A keyed blind index: HMAC-SHA-256 under the tenant's index key, over the
   * kind and the normalised value. Equal values give equal indexes within a
   * tenant (duplicates, look-ups) and unrelated ones across tenants; without
   * the key, which never leaves the process, the index says nothing.
   */
  async blindIndex(tenantId: string, kind: 'nirec', normalised: string): Promise<Buffer> {
    const { key } = await this.currentTenantKey(tenantId, 'index');
    return createHmac('sha256', key).update(`guichet.blind-index.v1\0${kind}\0${normalised}`, 'utf8').digest();
  }
}

const envelopes = new WeakMap<KeyProvider, Envelope>();

/** The envelope of a provider: one per provider, so that its caches are shared by every request. */
export function envelopeFor(provider: KeyProvider): Envelope {
  let e = envelopes.get(provider);
  if (!e) envelopes.set(provider, (e = new Envelope(provider)));
  return e;
}

/**
 * Benchmarks: the same provider (same master key, same keyring) seen through
 * an envelope of its own with these options — no family key cache
 * (familyKeyTtlMs: 0), or no decryption at all (skipDecryption).
 */
export function withEnvelopeOptions(provider: KeyProvider, opts: EnvelopeOptions): KeyProvider {
  const clone: KeyProvider = Object.create(provider) as KeyProvider;
  envelopes.set(clone, new Envelope(provider, opts));
  return clone;
}
