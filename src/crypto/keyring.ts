import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, truncateSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Kysely, PostgresDialect, sql, type Generated } from 'kysely';
import pg from 'pg';
import { KeyringError } from './errors.ts';

/**
 * The keyring: where the *wrapped* keys live — each tenant's key-encryption
 * key (KEK) and blind-index key (wrapped by the master key), each family's
 * data key (wrapped by its tenant's KEK), the master-key canaries, tombstones
 * of destroyed keys and the progress of rotations.
 *
 * It is deliberately NOT in the data database. Destroying a family's key
 * (crypto-shredding) must make that family unreadable in every copy of the
 * data, backups included; that holds only if the keys do not travel inside
 * those copies. So the keyring has its own store, its own backups and its own,
 * short, retention (src/crypto/README.md):
 *  - LocalKeyring: an append-only file in $GUICHET_DATA_DIR/keys/keyring/,
 *    beside the master key file and outside the embedded database directory
 *    ($GUICHET_DATA_DIR/pglite/) that data backups copy;
 *  - SqlKeyring: a PostgreSQL database of its own (GUICHET_KEYRING_URL), in
 *    production on another cluster than the data, so that physical backups
 *    and point-in-time recovery of the data never contain it.
 * Nothing here is secret by itself: every key in it is wrapped.
 */
export type TenantKeyPurpose = 'kek' | 'index';

export interface TenantKeyRecord {
  tenantId: string;
  purpose: TenantKeyPurpose;
  version: number;
  /** Wrapped by the master key (KeyProvider.wrap). */
  wrapped: Buffer;
  createdAt: Date;
}

export interface FamilyKeyRecord {
  tenantId: string;
  familyId: string;
  /** The family key's own version: a family is re-keyed when one of its child files is purged. */
  version: number;
  /** The version of the tenant KEK that wraps it. */
  tenantKeyVersion: number;
  wrapped: Buffer;
  createdAt: Date;
}

/** A destroyed family key: no key material, only the fact, so that a read can say "purged" rather than "missing". */
export interface Tombstone {
  tenantId: string;
  familyId: string;
  version: number;
  destroyedAt: Date;
}

export interface RotationRecord {
  id: string;
  scope: 'tenant' | 'master';
  tenantId: string | null;
  fromVersion: number;
  toVersion: number;
  /** The last family id re-wrapped (tenant rotations walk the family keys in id order). */
  cursor: string | null;
  done: number;
  total: number;
  startedAt: Date;
  updatedAt: Date;
  finishedAt: Date | null;
}

export interface Rewrap {
  tenantId: string;
  familyId: string;
  version: number;
  fromTenantKeyVersion: number;
  toTenantKeyVersion: number;
  wrapped: Buffer;
}

export interface Keyring {
  /** Where it is, for messages. */
  readonly location: string;
  canary(masterVersion: number): Promise<Buffer | null>;
  /** Stores the canary of a master version unless one is already there. */
  putCanary(masterVersion: number, wrapped: Buffer): Promise<void>;
  tenantKeys(tenantId: string, purpose: TenantKeyPurpose): Promise<TenantKeyRecord[]>;
  allTenantKeys(): Promise<TenantKeyRecord[]>;
  /** False when that version already exists (another process made it first). */
  addTenantKey(rec: TenantKeyRecord): Promise<boolean>;
  /** Master rotation: replaces the wrapping of one tenant key if it is still `expected`. */
  replaceTenantKeyWrapping(rec: TenantKeyRecord, expected: Buffer): Promise<boolean>;
  /** 'in_use' while a family key is still wrapped by it. */
  deleteTenantKey(tenantId: string, purpose: TenantKeyPurpose, version: number): Promise<'deleted' | 'in_use'>;
  /** Every version of these families' keys. */
  familyKeys(tenantId: string, familyIds: readonly string[]): Promise<FamilyKeyRecord[]>;
  /** Adds keys; one that already exists (same family and version) is left as it is. */
  addFamilyKeys(recs: readonly FamilyKeyRecord[]): Promise<void>;
  /** Family keys of a tenant not wrapped by `tenantKeyVersion`, after `afterFamilyId`, in family id order. */
  familyKeysNotUnder(tenantId: string, tenantKeyVersion: number, afterFamilyId: string | null, limit: number): Promise<FamilyKeyRecord[]>;
  countFamilyKeys(tenantId: string, notUnderTenantKeyVersion?: number): Promise<number>;
  /** Re-wraps keys (each only if still under its `from` version) and saves the rotation's progress, atomically. */
  rewrapFamilyKeys(rewraps: readonly Rewrap[], progress: RotationRecord): Promise<number>;
  /** Destroys the family's key versions up to `maxVersion`, leaving tombstones. */
  destroyFamilyKeys(tenantId: string, familyId: string, maxVersion: number, at: Date): Promise<number>;
  tombstones(tenantId: string, familyIds: readonly string[]): Promise<Tombstone[]>;
  openRotation(scope: 'tenant' | 'master', tenantId: string | null): Promise<RotationRecord | null>;
  saveRotation(rec: RotationRecord): Promise<void>;
  close(): Promise<void>;
}

export { KeyringError } from './errors.ts';

/* =================================================================== local */

type Line =
  | { op: 'canary'; v: number; w: string }
  | { op: 'tk'; t: string; p: TenantKeyPurpose; v: number; w: string; at: string }
  | { op: 'tk-del'; t: string; p: TenantKeyPurpose; v: number }
  | { op: 'fk'; t: string; f: string; v: number; tv: number; w: string; at: string }
  | { op: 'fk-del'; t: string; f: string; v: number; at: string }
  | { op: 'rot'; r: Omit<RotationRecord, 'startedAt' | 'updatedAt' | 'finishedAt'> & { startedAt: string; updatedAt: string; finishedAt: string | null } };

const LOG = 'keyring.jsonl';
const LOCK = 'keyring.lock';

/** One instance per directory and process: two would each compact the file under the other. */
const OPEN = new Map<string, { ring: LocalKeyring; refs: number }>();

/**
 * A keyring in one append-only file of JSON lines (or only in memory, for
 * tests). Every change is one write() of whole lines followed by fsync, so a
 * crash leaves at worst a torn last line, which the next open drops (the
 * change it carried had not been acknowledged). Destroying keys rewrites the
 * file without them (a new file, synced, renamed over the old one), so the
 * destroyed wrapped keys do not linger in the live file.
 *
 * One process at a time: a lock file names the holder. A deployment of
 * several processes (PostgreSQL, several instances) uses a SqlKeyring.
 */
export class LocalKeyring implements Keyring {
  private loaded = false;
  private canaries = new Map<number, Buffer>();
  private tenant = new Map<string, Map<number, TenantKeyRecord>>();
  private family = new Map<string, Map<number, FamilyKeyRecord>>();
  private tombs = new Map<string, Map<number, Date>>();
  private rotations = new Map<string, RotationRecord>();
  private lines = 0;
  private releaseLock: (() => void) | null = null;

  private constructor(
    private readonly dir: string | null,
    readonly location: string,
  ) {}

  static memory(): LocalKeyring {
    const k = new LocalKeyring(null, 'memory');
    k.loaded = true;
    return k;
  }

  /** The keyring of a directory; the file is read, and the lock taken, on first use. */
  static open(dir: string): LocalKeyring {
    const abs = resolve(dir);
    const open = OPEN.get(abs);
    if (open) {
      open.refs++;
      return open.ring;
    }
    const ring = new LocalKeyring(abs, `file:${join(abs, LOG)}`);
    OPEN.set(abs, { ring, refs: 1 });
    return ring;
  }

  /** Whether a keyring directory holds keys (then a missing master key must not be re-created). */
  static hasData(dir: string): boolean {
    const f = join(resolve(dir), LOG);
    return existsSync(f) && statSync(f).size > 0;
  }

  private get file(): string {
    return join(this.dir!, LOG);
  }

  private ensure(): void {
    if (this.loaded) return;
    const dir = this.dir!;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.releaseLock = lockFile(join(dir, LOCK));
    try {
      if (existsSync(this.file)) {
        const mode = statSync(this.file).mode & 0o077;
        if (mode) throw new KeyringError(`keyring ${this.file}: readable by group or others (chmod 600 it)`);
        this.replay(readFileSync(this.file, 'utf8'));
      }
    } catch (err) {
      this.releaseLock();
      this.releaseLock = null;
      throw err;
    }
    this.loaded = true;
  }

  private replay(text: string): void {
    let body = text;
    if (body && !body.endsWith('\n')) {
      // A torn last line: the write that carried it was never acknowledged. Drop it.
      const keep = body.lastIndexOf('\n') + 1;
      truncateSync(this.file, Buffer.byteLength(body.slice(0, keep), 'utf8'));
      body = body.slice(0, keep);
    }
    const lines = body.split('\n');
    lines.pop();
    lines.forEach((raw, i) => {
      let line: Line;
      try {
        line = JSON.parse(raw) as Line;
      } catch (err) {
        throw new KeyringError(`keyring ${this.file}: line ${i + 1} is not a valid record (${(err as Error).message}); restore the keyring from its backup`);
      }
      this.apply(line, i + 1);
    });
    this.lines = lines.length;
  }

  private apply(line: Line, lineNo = 0): void {
    const where = () => `keyring ${this.location}: line ${lineNo}`;
    switch (line.op) {
      case 'canary':
        if (!this.canaries.has(line.v)) this.canaries.set(line.v, Buffer.from(line.w, 'base64'));
        return;
      case 'tk':
        mapOf(this.tenant, `${line.t}/${line.p}`).set(line.v, { tenantId: line.t, purpose: line.p, version: line.v, wrapped: Buffer.from(line.w, 'base64'), createdAt: new Date(line.at) });
        return;
      case 'tk-del':
        this.tenant.get(`${line.t}/${line.p}`)?.delete(line.v);
        return;
      case 'fk':
        mapOf(this.family, `${line.t}/${line.f}`).set(line.v, { tenantId: line.t, familyId: line.f, version: line.v, tenantKeyVersion: line.tv, wrapped: Buffer.from(line.w, 'base64'), createdAt: new Date(line.at) });
        return;
      case 'fk-del': {
        const m = this.family.get(`${line.t}/${line.f}`);
        m?.delete(line.v);
        if (m && !m.size) this.family.delete(`${line.t}/${line.f}`);
        mapOf(this.tombs, `${line.t}/${line.f}`).set(line.v, new Date(line.at));
        return;
      }
      case 'rot': {
        const r = line.r;
        this.rotations.set(r.id, { ...r, startedAt: new Date(r.startedAt), updatedAt: new Date(r.updatedAt), finishedAt: r.finishedAt ? new Date(r.finishedAt) : null });
        return;
      }
      default:
        throw new KeyringError(`${where()}: unknown record ${JSON.stringify((line as { op?: unknown }).op)}`);
    }
  }

  /** Writes the lines durably, then applies them: memory never runs ahead of the file. */
  private commit(lines: Line[]): void {
    if (!lines.length) return;
    this.ensure();
    if (this.dir) {
      const text = lines.map((l) => JSON.stringify(l)).join('\n') + '\n';
      const fd = openSync(this.file, 'a', 0o600);
      try {
        writeSync(fd, text);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      this.lines += lines.length;
    }
    for (const l of lines) this.apply(l);
  }

  /** Rewrites the file with the live records only: destroyed keys leave the file, not only the index. */
  private compact(): void {
    if (!this.dir) return;
    const out: Line[] = [];
    for (const [v, w] of this.canaries) out.push({ op: 'canary', v, w: w.toString('base64') });
    for (const m of this.tenant.values()) for (const r of m.values()) out.push(tkLine(r));
    for (const m of this.family.values()) for (const r of m.values()) out.push(fkLine(r));
    for (const [key, m] of this.tombs) {
      const [t, f] = key.split('/') as [string, string];
      for (const [v, at] of m) out.push({ op: 'fk-del', t, f, v, at: at.toISOString() });
    }
    for (const r of this.rotations.values()) out.push(rotLine(r));
    const tmp = `${this.file}.compact`;
    writeFileSync(tmp, out.map((l) => JSON.stringify(l)).join('\n') + (out.length ? '\n' : ''), { mode: 0o600 });
    const fd = openSync(tmp, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.file);
    const dfd = openSync(this.dir, 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
    this.lines = out.length;
  }

  async canary(v: number) {
    this.ensure();
    return this.canaries.get(v) ?? null;
  }

  async putCanary(v: number, wrapped: Buffer) {
    this.ensure();
    if (!this.canaries.has(v)) this.commit([{ op: 'canary', v, w: wrapped.toString('base64') }]);
  }

  async tenantKeys(tenantId: string, purpose: TenantKeyPurpose) {
    this.ensure();
    return [...(this.tenant.get(`${tenantId}/${purpose}`)?.values() ?? [])].sort((a, b) => a.version - b.version);
  }

  async allTenantKeys() {
    this.ensure();
    return [...this.tenant.values()].flatMap((m) => [...m.values()]);
  }

  async addTenantKey(rec: TenantKeyRecord) {
    this.ensure();
    if (this.tenant.get(`${rec.tenantId}/${rec.purpose}`)?.has(rec.version)) return false;
    this.commit([tkLine(rec)]);
    return true;
  }

  async replaceTenantKeyWrapping(rec: TenantKeyRecord, expected: Buffer) {
    this.ensure();
    const cur = this.tenant.get(`${rec.tenantId}/${rec.purpose}`)?.get(rec.version);
    if (!cur || !cur.wrapped.equals(expected)) return false;
    this.commit([tkLine({ ...cur, wrapped: rec.wrapped })]);
    return true;
  }

  async deleteTenantKey(tenantId: string, purpose: TenantKeyPurpose, version: number): Promise<'deleted' | 'in_use'> {
    this.ensure();
    if (purpose === 'kek') {
      for (const m of this.family.values()) for (const r of m.values()) if (r.tenantId === tenantId && r.tenantKeyVersion === version) return 'in_use';
    }
    if (!this.tenant.get(`${tenantId}/${purpose}`)?.has(version)) return 'deleted';
    this.commit([{ op: 'tk-del', t: tenantId, p: purpose, v: version }]);
    this.compact();
    return 'deleted';
  }

  async familyKeys(tenantId: string, familyIds: readonly string[]) {
    this.ensure();
    return familyIds.flatMap((f) => [...(this.family.get(`${tenantId}/${f}`)?.values() ?? [])]);
  }

  async addFamilyKeys(recs: readonly FamilyKeyRecord[]) {
    this.ensure();
    const lines: Line[] = [];
    const seen = new Set<string>();
    for (const r of recs) {
      const k = `${r.tenantId}/${r.familyId}/${r.version}`;
      if (seen.has(k) || this.family.get(`${r.tenantId}/${r.familyId}`)?.has(r.version)) continue;
      if (!this.tenant.get(`${r.tenantId}/kek`)?.has(r.tenantKeyVersion)) throw new KeyringError(`keyring ${this.location}: tenant key ${r.tenantId} version ${r.tenantKeyVersion} does not exist`);
      seen.add(k);
      lines.push(fkLine(r));
    }
    this.commit(lines);
  }

  async familyKeysNotUnder(tenantId: string, tenantKeyVersion: number, after: string | null, limit: number) {
    this.ensure();
    const out: FamilyKeyRecord[] = [];
    for (const m of this.family.values()) {
      for (const r of m.values()) if (r.tenantId === tenantId && r.tenantKeyVersion !== tenantKeyVersion && (after === null || r.familyId > after)) out.push(r);
    }
    out.sort((a, b) => (a.familyId < b.familyId ? -1 : a.familyId > b.familyId ? 1 : a.version - b.version));
    return out.slice(0, limit);
  }

  async countFamilyKeys(tenantId: string, notUnder?: number) {
    this.ensure();
    let n = 0;
    for (const m of this.family.values()) for (const r of m.values()) if (r.tenantId === tenantId && (notUnder === undefined || r.tenantKeyVersion !== notUnder)) n++;
    return n;
  }

  async rewrapFamilyKeys(rewraps: readonly Rewrap[], progress: RotationRecord) {
    this.ensure();
    const lines: Line[] = [];
    for (const w of rewraps) {
      const cur = this.family.get(`${w.tenantId}/${w.familyId}`)?.get(w.version);
      if (!cur || cur.tenantKeyVersion !== w.fromTenantKeyVersion) continue;
      lines.push(fkLine({ ...cur, tenantKeyVersion: w.toTenantKeyVersion, wrapped: w.wrapped }));
    }
    // The progress goes in the same write as the keys it counts.
    this.commit([...lines, rotLine(progress)]);
    return lines.length;
  }

  async destroyFamilyKeys(tenantId: string, familyId: string, maxVersion: number, at: Date) {
    this.ensure();
    const m = this.family.get(`${tenantId}/${familyId}`);
    const versions = [...(m?.keys() ?? [])].filter((v) => v <= maxVersion);
    if (!versions.length) return 0;
    this.commit(versions.map((v) => ({ op: 'fk-del' as const, t: tenantId, f: familyId, v, at: at.toISOString() })));
    this.compact();
    return versions.length;
  }

  async tombstones(tenantId: string, familyIds: readonly string[]) {
    this.ensure();
    return familyIds.flatMap((f) => [...(this.tombs.get(`${tenantId}/${f}`) ?? new Map<number, Date>())].map(([version, destroyedAt]) => ({ tenantId, familyId: f, version, destroyedAt })));
  }

  async openRotation(scope: 'tenant' | 'master', tenantId: string | null) {
    this.ensure();
    for (const r of this.rotations.values()) if (r.scope === scope && r.tenantId === tenantId && !r.finishedAt) return { ...r };
    return null;
  }

  async saveRotation(rec: RotationRecord) {
    this.commit([rotLine(rec)]);
  }

  async close() {
    if (!this.dir) return;
    const open = OPEN.get(this.dir);
    if (open && --open.refs > 0) return;
    OPEN.delete(this.dir);
    this.releaseLock?.();
    this.releaseLock = null;
    this.loaded = false;
    this.canaries.clear();
    this.tenant.clear();
    this.family.clear();
    this.tombs.clear();
    this.rotations.clear();
  }
}

function mapOf<K, V>(m: Map<string, Map<K, V>>, key: string): Map<K, V> {
  let x = m.get(key);
  if (!x) m.set(key, (x = new Map()));
  return x;
}

const tkLine = (r: TenantKeyRecord): Line => ({ op: 'tk', t: r.tenantId, p: r.purpose, v: r.version, w: r.wrapped.toString('base64'), at: r.createdAt.toISOString() });
const fkLine = (r: FamilyKeyRecord): Line => ({ op: 'fk', t: r.tenantId, f: r.familyId, v: r.version, tv: r.tenantKeyVersion, w: r.wrapped.toString('base64'), at: r.createdAt.toISOString() });
const rotLine = (r: RotationRecord): Line => ({ op: 'rot', r: { ...r, startedAt: r.startedAt.toISOString(), updatedAt: r.updatedAt.toISOString(), finishedAt: r.finishedAt?.toISOString() ?? null } });

/** An exclusive lock file naming its process; a stale one (its process is gone) is replaced. */
function lockFile(file: string): () => void {
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(file, String(process.pid), { flag: 'wx', mode: 0o600 });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 2) throw err;
      const pid = Number(readFileSync(file, 'utf8'));
      if (pid && pid !== process.pid && alive(pid)) {
        throw new KeyringError(`keyring ${file.replace(/[/\\][^/\\]*$/, '')} is in use by process ${pid}: a file keyring has one process at a time (stop it, or give every process GUICHET_KEYRING_URL)`);
      }
      unlinkSync(file);
    }
  }
  return () => {
    try {
      if (Number(readFileSync(file, 'utf8')) === process.pid) unlinkSync(file);
    } catch {
      /* already gone */
    }
  };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/* ===================================================================== sql */

interface KeyringDB {
  keyring_master_canaries: { version: number; wrapped: Buffer; created_at: Generated<Date> };
  keyring_tenant_keys: { tenant_id: string; purpose: TenantKeyPurpose; version: number; wrapped: Buffer; created_at: Date };
  keyring_family_keys: { tenant_id: string; family_id: string; version: number; kek_purpose: Generated<'kek'>; tenant_key_version: number; wrapped: Buffer; created_at: Date };
  keyring_tombstones: { tenant_id: string; family_id: string; version: number; destroyed_at: Date };
  keyring_rotations: {
    id: string;
    scope: 'tenant' | 'master';
    tenant_id: string | null;
    from_version: number;
    to_version: number;
    cursor: string | null;
    done: number;
    total: number;
    started_at: Date;
    updated_at: Date;
    finished_at: Date | null;
  };
}

const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS keyring_master_canaries (
     version integer PRIMARY KEY CHECK (version > 0),
     wrapped bytea NOT NULL,
     created_at timestamptz NOT NULL DEFAULT now())`,
  `CREATE TABLE IF NOT EXISTS keyring_tenant_keys (
     tenant_id uuid NOT NULL,
     purpose text NOT NULL CHECK (purpose IN ('kek', 'index')),
     version integer NOT NULL CHECK (version > 0),
     wrapped bytea NOT NULL,
     created_at timestamptz NOT NULL,
     PRIMARY KEY (tenant_id, purpose, version))`,
  // The foreign key makes a KEK impossible to delete while a family key is still wrapped by it:
  // the end of a rotation cannot strand a key that another process wrapped meanwhile.
  `CREATE TABLE IF NOT EXISTS keyring_family_keys (
     tenant_id uuid NOT NULL,
     family_id uuid NOT NULL,
     version integer NOT NULL CHECK (version > 0),
     kek_purpose text NOT NULL DEFAULT 'kek' CHECK (kek_purpose = 'kek'),
     tenant_key_version integer NOT NULL,
     wrapped bytea NOT NULL,
     created_at timestamptz NOT NULL,
     PRIMARY KEY (tenant_id, family_id, version),
     FOREIGN KEY (tenant_id, kek_purpose, tenant_key_version) REFERENCES keyring_tenant_keys (tenant_id, purpose, version))`,
  `CREATE INDEX IF NOT EXISTS keyring_family_keys_kek ON keyring_family_keys (tenant_id, tenant_key_version)`,
  `CREATE TABLE IF NOT EXISTS keyring_tombstones (
     tenant_id uuid NOT NULL,
     family_id uuid NOT NULL,
     version integer NOT NULL,
     destroyed_at timestamptz NOT NULL,
     PRIMARY KEY (tenant_id, family_id, version))`,
  `CREATE TABLE IF NOT EXISTS keyring_rotations (
     id uuid PRIMARY KEY,
     scope text NOT NULL CHECK (scope IN ('tenant', 'master')),
     tenant_id uuid,
     from_version integer NOT NULL,
     to_version integer NOT NULL,
     cursor uuid,
     done integer NOT NULL,
     total integer NOT NULL,
     started_at timestamptz NOT NULL,
     updated_at timestamptz NOT NULL,
     finished_at timestamptz)`,
  `CREATE UNIQUE INDEX IF NOT EXISTS keyring_rotations_open ON keyring_rotations (scope, (coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid))) WHERE finished_at IS NULL`,
];

/**
 * A keyring in a PostgreSQL database of its own, shared by every instance.
 * The tables are created on first use (CREATE … IF NOT EXISTS under an
 * advisory lock), by the keyring URL's role.
 */
export class SqlKeyring implements Keyring {
  private ready: Promise<void> | null = null;

  constructor(
    private readonly db: Kysely<KeyringDB>,
    readonly location: string,
    private readonly destroyDb = true,
  ) {}

  static fromUrl(url: string): SqlKeyring {
    const u = new URL(url);
    const pool = new pg.Pool({ connectionString: url, max: 5 });
    // An idle connection dropped by the server (restart, fail-over) must not take the process down:
    // the pool discards it and the next query opens a new one.
    pool.on('error', () => undefined);
    return new SqlKeyring(new Kysely<KeyringDB>({ dialect: new PostgresDialect({ pool }) }), `postgres://${u.host}${u.pathname}`);
  }

  /** Over any Kysely connection (tests); the caller keeps ownership of it. */
  static over(db: Kysely<unknown>, location: string): SqlKeyring {
    return new SqlKeyring(db as unknown as Kysely<KeyringDB>, location, false);
  }

  private ensure(): Promise<void> {
    this.ready ??= this.db
      .transaction()
      .execute(async (trx) => {
        await sql`SELECT pg_advisory_xact_lock(hashtext('guichet.keyring.schema'))`.execute(trx);
        for (const stmt of SCHEMA) await sql.raw(stmt).execute(trx);
      })
      .catch((err: unknown) => {
        this.ready = null;
        throw new KeyringError(`keyring ${this.location}: cannot open (${(err as Error).message})`);
      });
    return this.ready;
  }

  async canary(v: number) {
    await this.ensure();
    const r = await this.db.selectFrom('keyring_master_canaries').select('wrapped').where('version', '=', v).executeTakeFirst();
    return r?.wrapped ?? null;
  }

  async putCanary(v: number, wrapped: Buffer) {
    await this.ensure();
    await this.db.insertInto('keyring_master_canaries').values({ version: v, wrapped }).onConflict((oc) => oc.column('version').doNothing()).execute();
  }

  async tenantKeys(tenantId: string, purpose: TenantKeyPurpose) {
    await this.ensure();
    const rows = await this.db.selectFrom('keyring_tenant_keys').selectAll().where('tenant_id', '=', tenantId).where('purpose', '=', purpose).orderBy('version').execute();
    return rows.map(toTk);
  }

  async allTenantKeys() {
    await this.ensure();
    return (await this.db.selectFrom('keyring_tenant_keys').selectAll().orderBy('tenant_id').orderBy('purpose').orderBy('version').execute()).map(toTk);
  }

  async addTenantKey(rec: TenantKeyRecord) {
    await this.ensure();
    const r = await this.db
      .insertInto('keyring_tenant_keys')
      .values({ tenant_id: rec.tenantId, purpose: rec.purpose, version: rec.version, wrapped: rec.wrapped, created_at: rec.createdAt })
      .onConflict((oc) => oc.columns(['tenant_id', 'purpose', 'version']).doNothing())
      .executeTakeFirst();
    return Number(r.numInsertedOrUpdatedRows ?? 0n) === 1;
  }

  async replaceTenantKeyWrapping(rec: TenantKeyRecord, expected: Buffer) {
    await this.ensure();
    const r = await this.db
      .updateTable('keyring_tenant_keys')
      .set({ wrapped: rec.wrapped })
      .where('tenant_id', '=', rec.tenantId)
      .where('purpose', '=', rec.purpose)
      .where('version', '=', rec.version)
      .where('wrapped', '=', expected)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async deleteTenantKey(tenantId: string, purpose: TenantKeyPurpose, version: number): Promise<'deleted' | 'in_use'> {
    await this.ensure();
    try {
      await this.db.deleteFrom('keyring_tenant_keys').where('tenant_id', '=', tenantId).where('purpose', '=', purpose).where('version', '=', version).execute();
      return 'deleted';
    } catch (err) {
      if ((err as { code?: string }).code === '23503') return 'in_use';
      throw err;
    }
  }

  async familyKeys(tenantId: string, familyIds: readonly string[]) {
    await this.ensure();
    if (!familyIds.length) return [];
    const rows = await this.db.selectFrom('keyring_family_keys').selectAll().where('tenant_id', '=', tenantId).where('family_id', 'in', [...familyIds]).execute();
    return rows.map(toFk);
  }

  async addFamilyKeys(recs: readonly FamilyKeyRecord[]) {
    await this.ensure();
    for (let i = 0; i < recs.length; i += 1000) {
      const chunk = recs.slice(i, i + 1000);
      await this.db
        .insertInto('keyring_family_keys')
        .values(chunk.map((r) => ({ tenant_id: r.tenantId, family_id: r.familyId, version: r.version, tenant_key_version: r.tenantKeyVersion, wrapped: r.wrapped, created_at: r.createdAt })))
        .onConflict((oc) => oc.columns(['tenant_id', 'family_id', 'version']).doNothing())
        .execute();
    }
  }

  async familyKeysNotUnder(tenantId: string, tenantKeyVersion: number, after: string | null, limit: number) {
    await this.ensure();
    let q = this.db.selectFrom('keyring_family_keys').selectAll().where('tenant_id', '=', tenantId).where('tenant_key_version', '<>', tenantKeyVersion);
    if (after) q = q.where('family_id', '>', after);
    return (await q.orderBy('family_id').orderBy('version').limit(limit).execute()).map(toFk);
  }

  async countFamilyKeys(tenantId: string, notUnder?: number) {
    await this.ensure();
    let q = this.db.selectFrom('keyring_family_keys').select(sql<string>`count(*)`.as('n')).where('tenant_id', '=', tenantId);
    if (notUnder !== undefined) q = q.where('tenant_key_version', '<>', notUnder);
    return Number((await q.executeTakeFirst())?.n ?? 0);
  }

  async rewrapFamilyKeys(rewraps: readonly Rewrap[], progress: RotationRecord) {
    await this.ensure();
    return this.db.transaction().execute(async (trx) => {
      let n = 0;
      for (const w of rewraps) {
        const r = await trx
          .updateTable('keyring_family_keys')
          .set({ tenant_key_version: w.toTenantKeyVersion, wrapped: w.wrapped })
          .where('tenant_id', '=', w.tenantId)
          .where('family_id', '=', w.familyId)
          .where('version', '=', w.version)
          .where('tenant_key_version', '=', w.fromTenantKeyVersion)
          .executeTakeFirst();
        n += Number(r.numUpdatedRows);
      }
      await saveRotation(trx, progress);
      return n;
    });
  }

  async destroyFamilyKeys(tenantId: string, familyId: string, maxVersion: number, at: Date) {
    await this.ensure();
    return this.db.transaction().execute(async (trx) => {
      const gone = await trx.deleteFrom('keyring_family_keys').where('tenant_id', '=', tenantId).where('family_id', '=', familyId).where('version', '<=', maxVersion).returning('version').execute();
      if (gone.length) {
        await trx
          .insertInto('keyring_tombstones')
          .values(gone.map((g) => ({ tenant_id: tenantId, family_id: familyId, version: g.version, destroyed_at: at })))
          .onConflict((oc) => oc.columns(['tenant_id', 'family_id', 'version']).doNothing())
          .execute();
      }
      return gone.length;
    });
  }

  async tombstones(tenantId: string, familyIds: readonly string[]) {
    await this.ensure();
    if (!familyIds.length) return [];
    const rows = await this.db.selectFrom('keyring_tombstones').selectAll().where('tenant_id', '=', tenantId).where('family_id', 'in', [...familyIds]).execute();
    return rows.map((r) => ({ tenantId: r.tenant_id, familyId: r.family_id, version: r.version, destroyedAt: r.destroyed_at }));
  }

  async openRotation(scope: 'tenant' | 'master', tenantId: string | null) {
    await this.ensure();
    let q = this.db.selectFrom('keyring_rotations').selectAll().where('scope', '=', scope).where('finished_at', 'is', null);
    q = tenantId ? q.where('tenant_id', '=', tenantId) : q.where('tenant_id', 'is', null);
    const r = await q.executeTakeFirst();
    return r ? toRot(r) : null;
  }

  async saveRotation(rec: RotationRecord) {
    await this.ensure();
    await saveRotation(this.db, rec);
  }

  async close() {
    if (this.destroyDb) await this.db.destroy();
  }
}

async function saveRotation(db: Kysely<KeyringDB>, rec: RotationRecord): Promise<void> {
  const row = {
    id: rec.id,
    scope: rec.scope,
    tenant_id: rec.tenantId,
    from_version: rec.fromVersion,
    to_version: rec.toVersion,
    cursor: rec.cursor,
    done: rec.done,
    total: rec.total,
    started_at: rec.startedAt,
    updated_at: rec.updatedAt,
    finished_at: rec.finishedAt,
  };
  await db
    .insertInto('keyring_rotations')
    .values(row)
    .onConflict((oc) => oc.column('id').doUpdateSet({ cursor: rec.cursor, done: rec.done, total: rec.total, updated_at: rec.updatedAt, finished_at: rec.finishedAt }))
    .execute();
}

const toTk = (r: KeyringDB['keyring_tenant_keys']): TenantKeyRecord => ({ tenantId: r.tenant_id, purpose: r.purpose, version: r.version, wrapped: r.wrapped, createdAt: r.created_at });
const toFk = (r: { tenant_id: string; family_id: string; version: number; tenant_key_version: number; wrapped: Buffer; created_at: Date }): FamilyKeyRecord => ({
  tenantId: r.tenant_id,
  familyId: r.family_id,
  version: r.version,
  tenantKeyVersion: r.tenant_key_version,
  wrapped: r.wrapped,
  createdAt: r.created_at,
});
const toRot = (r: KeyringDB['keyring_rotations']): RotationRecord => ({
  id: r.id,
  scope: r.scope,
  tenantId: r.tenant_id,
  fromVersion: r.from_version,
  toVersion: r.to_version,
  cursor: r.cursor,
  done: r.done,
  total: r.total,
  startedAt: r.started_at,
  updatedAt: r.updated_at,
  finishedAt: r.finished_at,
});
