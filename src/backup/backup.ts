/**
 * Backups of the data database and of the keyring, encrypted at rest
 * (format.ts), and their restore into a fresh database.
 *
 * - PostgreSQL: pg_dump's custom format, streamed through the cipher into
 *   the file; restored by pg_restore in a single transaction, so a failure
 *   leaves the target as it was. The dump keeps the grants to guichet_app
 *   and the row-level security policies; the owner is whoever restores.
 * - PGlite: the data directory as PGlite dumps it (a tarball of the whole
 *   embedded cluster: roles, grants and policies included), restored into
 *   an empty data directory.
 * - The keyring (`--keyring`): a separate file, never inside a data backup
 *   (src/crypto/README.md): the file keyring's JSON lines, or pg_dump of
 *   GUICHET_KEYRING_URL.
 *
 * A restore reads the whole file and checks every chunk before it touches
 * the target: an altered, truncated or foreign file is refused and the
 * target stays untouched.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createReadStream, createWriteStream, existsSync, fsyncSync, mkdirSync, openSync, closeSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import type { KeyProvider } from '../crypto/keys.ts';
import { BackupFormatError, decryptStream, encryptStream, type BackupContents, type BackupHeader } from './format.ts';

export { BackupFormatError } from './format.ts';

/** A backup or restore that cannot go ahead: a missing tool, a version mismatch, a non-empty target. */
export class BackupError extends Error {}

export interface PgTools {
  /** Directory of pg_dump and pg_restore (GUICHET_PG_BIN); unset: the PATH. */
  bin?: string | undefined;
}

export interface BackupResult {
  header: BackupHeader;
  bytes: number;
  file: string;
  /** Rows per table, when the backup could count them in its own snapshot (PGlite). */
  rows?: Record<string, number>;
}

/* ------------------------------------------------------------------ files */

/** Writes through a temporary file renamed at the end: a failed backup leaves no half file under the name. */
async function writeEncrypted(out: string, keys: KeyProvider, fields: Parameters<typeof encryptStream>[1], source: Readable, waitSource?: () => Promise<void>): Promise<BackupResult> {
  const file = resolve(out);
  if (existsSync(file)) throw new BackupError(`${file} exists: choose another name (a backup never overwrites a file)`);
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.partial`;
  const { header, stream } = encryptStream(keys, fields);
  let bytes = 0;
  const counter = new PassThrough();
  counter.on('data', (b: Buffer) => (bytes += b.length));
  try {
    await Promise.all([pipeline(source, stream, counter, createWriteStream(tmp, { mode: 0o600 })), waitSource?.()]);
    const fd = openSync(tmp, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
    chmodSync(file, 0o600);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  return { header, bytes, file };
}

/** Reads and authenticates the whole file; returns its header and, when asked, its plaintext. */
export async function readBackup(file: string, keys: KeyProvider, keep: boolean): Promise<{ header: BackupHeader; plain: Buffer | null; bytes: number }> {
  if (!existsSync(file)) throw new BackupError(`${file}: no such file`);
  let header: BackupHeader | null = null;
  const parts: Buffer[] = [];
  let bytes = 0;
  await pipeline(
    createReadStream(file),
    decryptStream(keys, (h) => (header = h)),
    new Writable({
      write(chunk: Buffer, _e, done) {
        bytes += chunk.length;
        if (keep) parts.push(chunk);
        done();
      },
    }),
  );
  return { header: header!, plain: keep ? Buffer.concat(parts) : null, bytes };
}

/** The header alone (authenticated with the first chunk), for `guichet backup --check` and restore's dispatch. */
export async function backupHeader(file: string, keys: KeyProvider): Promise<BackupHeader> {
  return (await readBackup(file, keys, false)).header;
}

/* ------------------------------------------------------------- PostgreSQL */

/** A connection string without its password, and the environment that carries it, so it never shows in `ps`. */
function libpq(url: string): { url: string; env: NodeJS.ProcessEnv } {
  const u = new URL(url);
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (u.password) env.PGPASSWORD = decodeURIComponent(u.password);
  u.password = '';
  return { url: u.toString(), env };
}

function tool(tools: PgTools, name: 'pg_dump' | 'pg_restore'): string {
  return tools.bin ? join(tools.bin, name) : name;
}

async function toolVersion(tools: PgTools, name: 'pg_dump' | 'pg_restore'): Promise<{ text: string; major: number }> {
  const out = await new Promise<string>((ok, fail) => {
    const c = spawn(tool(tools, name), ['--version'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let s = '';
    c.stdout.on('data', (b: Buffer) => (s += b.toString()));
    c.on('error', (err) =>
      fail(new BackupError(`${name} not found (${(err as Error).message}): install Debian's postgresql-client of the server's version, or set GUICHET_PG_BIN to the directory that holds it`)),
    );
    c.on('close', () => ok(s));
  });
  const m = /(\d+)(?:\.(\d+))?/.exec(out);
  if (!m) throw new BackupError(`${name} --version printed "${out.trim()}": not a PostgreSQL tool`);
  return { text: `${m[1]}${m[2] ? `.${m[2]}` : ''}`, major: Number(m[1]) };
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function serverVersion(c: pg.Client): Promise<{ text: string; major: number }> {
  const { rows } = await c.query<{ v: string; n: string }>(`SELECT current_setting('server_version') AS v, current_setting('server_version_num') AS n`);
  return { text: rows[0]!.v.split(' ')[0]!, major: Math.floor(Number(rows[0]!.n) / 10000) };
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): { child: ChildProcess; done: Promise<void> } {
  const child = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const done = new Promise<void>((ok, fail) => {
    child.on('error', (e) => fail(new BackupError(`${cmd}: ${e.message}`)));
    child.on('close', (code, signal) => {
      if (code === 0) return ok();
      fail(new BackupError(explainPgError(cmd, err.trim() || `exit ${code ?? signal}`)));
    });
  });
  return { child, done };
}

function explainPgError(cmd: string, stderr: string): string {
  if (cmd.endsWith('pg_dump') && /row-level security|permission denied/.test(stderr)) {
    return (
      `${cmd}: ${stderr}\nThe backup role must read every table and every tenant's rows: row-level security is FORCEd on Guichet's tables, even for their owner. ` +
      'Back up as a role with BYPASSRLS, e.g. (once, as a superuser) CREATE ROLE guichet_backup LOGIN BYPASSRLS IN ROLE pg_read_all_data; then GUICHET_BACKUP_URL=postgres://guichet_backup@…'
    );
  }
  if (/server version mismatch|aborting because of server version mismatch/.test(stderr)) {
    return `${cmd}: ${stderr}\nInstall the client tools of the server's major version (Debian: postgresql-client-N) and set GUICHET_PG_BIN=/usr/lib/postgresql/N/bin`;
  }
  return `${cmd}: ${stderr}`;
}

/** pg_dump of the data database into an encrypted file. `url` reads every row: a superuser or a BYPASSRLS role. */
export async function backupPostgres(opts: { url: string; keys: KeyProvider; out: string; tools: PgTools; contents?: 'postgres' | 'keyring-postgres' }): Promise<BackupResult> {
  const contents = opts.contents ?? 'postgres';
  const dump = await toolVersion(opts.tools, 'pg_dump');
  const { server, schemaVersion } = await withClient(opts.url, async (c) => {
    const server = await serverVersion(c);
    let schemaVersion: number | undefined;
    if (contents === 'postgres') {
      const r = await c.query<{ v: number | null }>(`SELECT max(version) AS v FROM schema_migrations`).catch(() => null);
      if (!r || r.rows[0]?.v == null) throw new BackupError('the database has no schema_migrations table: is it a Guichet database? (run guichet migrate first)');
      schemaVersion = Number(r.rows[0].v);
    }
    return { server, schemaVersion };
  });
  if (dump.major < server.major) {
    throw new BackupError(
      `pg_dump ${dump.text} cannot dump a PostgreSQL ${server.text} server: install the client tools of version ${server.major} ` +
        `(Debian: postgresql-client-${server.major}) and set GUICHET_PG_BIN=/usr/lib/postgresql/${server.major}/bin`,
    );
  }
  const { url, env } = libpq(opts.url);
  // Owners are left out (whoever restores owns the objects); grants and policies stay in.
  const p = run(tool(opts.tools, 'pg_dump'), ['--format=custom', '--no-owner', '--compress=6', '--dbname', url], env);
  p.child.stdin!.end();
  return writeEncrypted(opts.out, opts.keys, { contents, made: { pgDump: dump.text, pgDumpMajor: dump.major, server: server.text, serverMajor: server.major }, ...(schemaVersion !== undefined ? { schemaVersion } : {}) }, p.child.stdout!, () => p.done);
}

export interface RestoreReport {
  header: BackupHeader;
  /** Tables restored, and among the tenant-owned ones those with row-level security enabled and forced. */
  tables: number;
  tenantTables: number;
  rlsForced: number;
  /** Tables guichet_app may use (its grants came back). */
  appGranted: number;
  /** Rows per table, where they can be counted (PGlite); checked against the backup's own count. */
  rows?: Record<string, number>;
  /** PGlite with --force: where the previous data directory was moved. */
  movedAside?: string;
}

async function isEmptyPg(c: pg.Client, keyring: boolean): Promise<boolean> {
  const { rows } = await c.query<{ n: string }>(
    keyring
      ? `SELECT count(*) AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relname LIKE 'keyring\\_%'`
      : `SELECT count(*) AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')`,
  );
  return Number(rows[0]!.n) === 0;
}

/**
 * pg_restore of an encrypted backup into `url` (the owner the restored
 * objects will belong to). The file is authenticated in full first; the
 * restore is one transaction.
 */
export async function restorePostgres(opts: { url: string; keys: KeyProvider; file: string; tools: PgTools; force: boolean }): Promise<RestoreReport> {
  const { header } = await readBackup(opts.file, opts.keys, false);
  if (header.contents !== 'postgres' && header.contents !== 'keyring-postgres') {
    throw new BackupError(`${opts.file} holds a ${describe(header.contents)}, not a PostgreSQL database`);
  }
  const keyring = header.contents === 'keyring-postgres';
  const restore = await toolVersion(opts.tools, 'pg_restore');
  const madeWith = Number(header.made.pgDumpMajor ?? 0);
  if (restore.major < madeWith) {
    throw new BackupError(`the backup was made by pg_dump ${header.made.pgDump}; pg_restore ${restore.text} cannot read it: install postgresql-client-${madeWith} and set GUICHET_PG_BIN`);
  }
  await withClient(opts.url, async (c) => {
    const server = await serverVersion(c);
    const source = Number(header.made.serverMajor ?? 0);
    if (server.major < source) {
      throw new BackupError(`the backup comes from PostgreSQL ${header.made.server}; this server is ${server.text}: restore into PostgreSQL ${source} or later`);
    }
    if (!(await isEmptyPg(c, keyring)) && !opts.force) {
      throw new BackupError(
        `the target database is not empty: restore goes into a fresh, empty database (createdb --owner … NAME), or give --force to replace the objects the backup holds`,
      );
    }
    if (!keyring) {
      // Roles belong to the cluster, not to a dump: a new cluster needs the application's group role,
      // and the restoring owner must be a member of it, as migration 0003 made the original owner.
      await c.query(`DO $$
        BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'guichet_app') THEN
            CREATE ROLE guichet_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
          END IF;
          IF NOT pg_has_role(current_user, 'guichet_app', 'MEMBER') THEN
            EXECUTE format('GRANT guichet_app TO %I', current_user);
          END IF;
        END $$`);
    }
  });
  const { url, env } = libpq(opts.url);
  const args = ['--no-owner', '--single-transaction', '--exit-on-error', ...(opts.force ? ['--clean', '--if-exists'] : []), '--dbname', url];
  const p = run(tool(opts.tools, 'pg_restore'), args, env);
  const decrypt = decryptStream(opts.keys);
  try {
    await Promise.all([pipeline(createReadStream(opts.file), decrypt, p.child.stdin!), p.done]);
  } catch (err) {
    // The file changed since it was checked: stop pg_restore before it commits anything.
    if (p.child.exitCode === null) p.child.kill('SIGTERM');
    await p.done.catch(() => {});
    throw err;
  }
  if (keyring) return { header, tables: 0, tenantTables: 0, rlsForced: 0, appGranted: 0 };
  return { header, ...(await withClient(opts.url, (c) => checkRestored((q) => c.query(q).then((r) => r.rows)))) };
}

/* ---------------------------------------------------------------- checks */

type Query = (text: string) => Promise<Record<string, unknown>[]>;

/**
 * What must hold in a restored data database for the application to run as
 * before: every tenant-owned table has row-level security enabled and
 * forced, and guichet_app has its grants. Throws naming what is missing.
 */
async function checkRestored(q: Query): Promise<Omit<RestoreReport, 'header'>> {
  const tables = await q(`
    SELECT c.relname AS name, c.relrowsecurity AS rls, c.relforcerowsecurity AS forced,
           EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped) AS tenant_owned,
           has_table_privilege('guichet_app', c.oid, 'SELECT,INSERT,UPDATE,DELETE') AS app
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY c.relname`);
  const tenantOwned = tables.filter((t) => t.tenant_owned === true);
  const unprotected = tenantOwned.filter((t) => !(t.rls === true && t.forced === true)).map((t) => String(t.name));
  if (unprotected.length) throw new BackupError(`after the restore, row-level security is not enabled and forced on ${unprotected.join(', ')}: do not serve this database`);
  const granted = tables.filter((t) => t.app === true).length;
  if (!granted) throw new BackupError('after the restore, guichet_app holds no grant on any table: the backup was made without privileges (pg_dump --no-privileges?)');
  const policies = await q(`SELECT DISTINCT tablename AS name FROM pg_policies WHERE schemaname = 'public'`);
  const withPolicy = new Set(policies.map((p) => String(p.name)));
  const noPolicy = tenantOwned.filter((t) => !withPolicy.has(String(t.name))).map((t) => String(t.name));
  if (noPolicy.length) throw new BackupError(`after the restore, ${noPolicy.join(', ')} ha${noPolicy.length > 1 ? 've' : 's'} no row-level security policy: do not serve this database`);
  return { tables: tables.length, tenantTables: tenantOwned.length, rlsForced: tenantOwned.length - unprotected.length, appGranted: granted };
}

/** Rows per table, for a connection that sees every row (PGlite's superuser). */
async function countRows(q: Query): Promise<Record<string, number>> {
  const names = (await q(`SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1`)).map((r) => String(r.name));
  const rows: Record<string, number> = {};
  for (const name of names) rows[name] = Number((await q(`SELECT count(*)::int AS n FROM "${name.replace(/"/g, '""')}"`))[0]!.n);
  return rows;
}

/* ----------------------------------------------------------------- PGlite */

function pgliteVersion(): string {
  try {
    const req = createRequire(import.meta.url);
    return (req('@electric-sql/pglite/package.json') as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

function isEmptyDir(dir: string): boolean {
  return !existsSync(dir) || readdirSync(dir).length === 0;
}

/** The embedded data directory (`$GUICHET_DATA_DIR/pglite`) into an encrypted file. Nothing else may hold it open. */
export async function backupPglite(opts: { dir: string; keys: KeyProvider; out: string }): Promise<BackupResult> {
  if (isEmptyDir(opts.dir)) throw new BackupError(`no embedded database at ${opts.dir}: nothing to back up`);
  const client = new PGlite({ dataDir: resolve(opts.dir) });
  let blob: Blob;
  let rows: Record<string, number>;
  let schemaVersion: number;
  let server: string;
  try {
    await client.waitReady;
    const q: Query = async (text) => (await client.query<Record<string, unknown>>(text)).rows;
    server = String((await q(`SELECT current_setting('server_version') AS v`))[0]!.v);
    const v = await q(`SELECT max(version) AS v FROM schema_migrations`).catch(() => null);
    if (!v || v[0]?.v == null) throw new BackupError(`${opts.dir} has no schema_migrations table: not a Guichet database`);
    schemaVersion = Number(v[0].v);
    rows = await countRows(q);
    blob = await client.dumpDataDir('gzip');
  } finally {
    await client.close();
  }
  // The row counts travel inside the ciphertext, ahead of the tarball: how many families a tenant has is not for the header.
  const manifest = Buffer.from(JSON.stringify({ rows }), 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32BE(manifest.length);
  const source = Readable.from((async function* () {
    yield length;
    yield manifest;
    const reader = blob.stream().getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield Buffer.from(value);
    }
  })());
  const r = await writeEncrypted(opts.out, opts.keys, { contents: 'pglite', made: { pglite: pgliteVersion(), server }, schemaVersion }, source);
  return { ...r, rows };
}

/** Restores an embedded backup into `dir`, which must be empty (or, with force, is moved aside first). */
export async function restorePglite(opts: { dir: string; keys: KeyProvider; file: string; force: boolean }): Promise<RestoreReport> {
  const dir = resolve(opts.dir);
  if (!isEmptyDir(dir) && !opts.force) {
    throw new BackupError(`${dir} already holds a database: restore goes into an empty data directory (another GUICHET_DATA_DIR), or give --force to move this one aside`);
  }
  const { header, plain } = await readBackup(opts.file, opts.keys, true);
  if (header.contents !== 'pglite') throw new BackupError(`${opts.file} holds a ${describe(header.contents)}, not an embedded (PGlite) database: ${hint(header.contents)}`);
  let movedAside: string | undefined;
  if (!isEmptyDir(dir)) {
    movedAside = `${dir}.before-restore-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    renameSync(dir, movedAside);
  }
  const manifestLength = plain!.length >= 4 ? plain!.readUInt32BE(0) : -1;
  if (manifestLength < 2 || manifestLength > plain!.length - 4) throw new BackupError(`${opts.file}: the embedded backup's manifest is missing`);
  const manifest = JSON.parse(plain!.subarray(4, 4 + manifestLength).toString('utf8')) as { rows: Record<string, number> };
  const client = new PGlite({ dataDir: dir, loadDataDir: new Blob([new Uint8Array(plain!.subarray(4 + manifestLength))]) });
  try {
    await client.waitReady;
    const q: Query = async (text) => (await client.query<Record<string, unknown>>(text)).rows;
    const checked = await checkRestored(q);
    const rows = await countRows(q);
    const differs = Object.keys({ ...manifest.rows, ...rows }).filter((t) => manifest.rows[t] !== rows[t]);
    if (differs.length) throw new BackupError(`the restored database differs from the backup's own count in ${differs.map((t) => `${t} (${manifest.rows[t] ?? 0} → ${rows[t] ?? 0})`).join(', ')}`);
    return { header, ...checked, rows, ...(movedAside ? { movedAside } : {}) };
  } finally {
    await client.close();
  }
}

/* ---------------------------------------------------------------- keyring */

const KEYRING_FILE = 'keyring.jsonl';

/** The file keyring (`$GUICHET_DATA_DIR/keys/keyring/keyring.jsonl`) into an encrypted file of its own. */
export async function backupKeyringFile(opts: { dir: string; keys: KeyProvider; out: string }): Promise<BackupResult> {
  const f = join(resolve(opts.dir), KEYRING_FILE);
  if (!existsSync(f)) throw new BackupError(`no keyring at ${f}: nothing to back up`);
  // Appends are whole synced lines and compaction is a rename: a plain read sees a consistent keyring.
  const text = readFileSync(f);
  return writeEncrypted(opts.out, opts.keys, { contents: 'keyring-file', made: { keyring: 'file' } }, Readable.from([text]));
}

export async function restoreKeyringFile(opts: { dir: string; keys: KeyProvider; file: string; force: boolean }): Promise<{ header: BackupHeader; movedAside?: string; bytes: number }> {
  const { header, plain } = await readBackup(opts.file, opts.keys, true);
  if (header.contents !== 'keyring-file') throw new BackupError(`${opts.file} holds a ${describe(header.contents)}, not a file keyring: ${hint(header.contents)}`);
  const dir = resolve(opts.dir);
  const f = join(dir, KEYRING_FILE);
  // The file keyring has one process at a time: never replace it under a running server.
  const lock = join(dir, 'keyring.lock');
  if (existsSync(lock)) {
    const pid = Number(readFileSync(lock, 'utf8'));
    if (pid && pid !== process.pid && isAlive(pid)) throw new BackupError(`the keyring ${dir} is in use by process ${pid}: stop it before restoring the keyring`);
  }
  let movedAside: string | undefined;
  if (existsSync(f) && readFileSync(f).length > 0) {
    if (!opts.force) throw new BackupError(`${f} already holds keys: give --force to replace it (the current file is kept beside it)`);
    movedAside = `${f}.before-restore-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    renameSync(f, movedAside);
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${f}.${process.pid}.partial`;
  writeFileSync(tmp, plain!, { mode: 0o600 });
  const fd = openSync(tmp, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, f);
  return { header, bytes: plain!.length, ...(movedAside ? { movedAside } : {}) };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/* ------------------------------------------------------------------ words */

export function describe(c: BackupContents): string {
  switch (c) {
    case 'postgres':
      return 'PostgreSQL data backup';
    case 'pglite':
      return 'embedded (PGlite) data backup';
    case 'keyring-file':
      return 'file keyring backup';
    case 'keyring-postgres':
      return 'PostgreSQL keyring backup';
  }
}

function hint(c: BackupContents): string {
  switch (c) {
    case 'postgres':
      return 'restore it with DATABASE_URL and DATABASE_OWNER_URL set';
    case 'pglite':
      return 'restore it with DATABASE_URL unset and GUICHET_DATA_DIR naming an empty directory';
    case 'keyring-file':
      return 'restore it with GUICHET_KEYRING_URL unset';
    case 'keyring-postgres':
      return 'restore it with GUICHET_KEYRING_URL set';
  }
}

export type { BackupHeader } from './format.ts';
