/**
 * `guichet backup` and `guichet restore`, run as an operator runs them (child
 * processes of bin/guichet.mjs or of the run's bundle of the same sources,
 * test/helpers/cli.ts), on the database of the run:
 *
 * - PGlite: the embedded data directory and the file keyring are backed up,
 *   each into its own encrypted file, and restored on "another machine" (a
 *   fresh GUICHET_DATA_DIR holding only the master key);
 * - PostgreSQL: pg_dump as a BYPASSRLS backup role, pg_restore into a fresh
 *   database owned by a non-superuser, the SQL keyring likewise into a fresh
 *   keyring database.
 *
 * Then every table is compared row for row, `guichet audit verify` checks the
 * restored log against its signed heads and the witness, a child's file
 * opens with the restored keyring, and the application role works under
 * row-level security. An altered or truncated backup is refused before the
 * target is touched. The file format's own refusals are checked in-process.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHUNK, decryptStream, encryptStream } from '../../src/backup/format.ts';
import { keyProviderFromSecret, loadKeyProvider } from '../../src/crypto/keys.ts';
import { openDatabase } from '../../src/db/connection.ts';
import type { DB } from '../../src/db/schema.ts';
import { guichetEntry, withMigratedDatabase } from '../helpers/cli.ts';
import { testDatabaseInfo, TEST_APP_ROLE } from '../helpers/db.ts';
import { storedChild } from '../records/stored.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FACILITIES = 'seed-data/facilities-monteregie-2022-11.csv';
const KIND = process.env.GUICHET_TEST_DB ?? 'pglite';

const CONFIG_VARS = ['PORT', 'HOST', 'GUICHET_DATA_DIR', 'DATABASE_URL', 'DATABASE_OWNER_URL', 'SMTP_URL', 'MAIL_FROM', 'NODE_ENV', 'LOG_LEVEL', 'PUBLIC_URL', 'GUICHET_DEFAULT_TENANT', 'GUICHET_ALLOW_PRIVILEGED_DB_ROLE', 'GUICHET_MASTER_KEY', 'GUICHET_KEY_FILE', 'GUICHET_KEYRING_URL', 'GUICHET_WITNESS_FILE', 'GUICHET_WITNESS_URL', 'GUICHET_BACKUP_URL', 'GUICHET_PG_BIN'];

function cliEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of CONFIG_VARS) delete env[k];
  return { ...env, NODE_ENV: 'test', LOG_LEVEL: 'silent', ...extra };
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function cli(args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  const started = performance.now();
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [guichetEntry(), ...args], { cwd: ROOT, env, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 }, (_e, stdout, stderr) => {
      resolve({ code: child.exitCode, stdout: String(stdout), stderr: String(stderr), ms: Math.round(performance.now() - started) });
    });
  });
}

function ok(r: Run, code = 0): Run {
  expect(r.code, `exit ${r.code} after ${r.ms} ms\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`).toBe(code);
  return r;
}

/** Every row of every table, as JSON text, sorted: two databases that print the same hold the same. */
async function everyRow(q: (text: string) => Promise<Record<string, unknown>[]>): Promise<Map<string, string[]>> {
  const tables = (await q(`SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1`)).map((r) => String(r.name));
  const out = new Map<string, string[]>();
  for (const t of tables) out.set(t, (await q(`SELECT to_jsonb(x)::text AS j FROM "${t}" x ORDER BY 1`)).map((r) => String(r.j)));
  return out;
}

function compare(a: Map<string, string[]>, b: Map<string, string[]>): { tables: number; rows: number } {
  expect([...b.keys()]).toEqual([...a.keys()]);
  let rows = 0;
  for (const [t, rowsA] of a) {
    const rowsB = b.get(t)!;
    expect(rowsB.length, `rows of ${t}`).toBe(rowsA.length);
    // Row for row; the first difference is named with its table.
    for (let i = 0; i < rowsA.length; i++) if (rowsA[i] !== rowsB[i]) expect(`${t}: ${rowsB[i]}`).toBe(`${t}: ${rowsA[i]}`);
    rows += rowsA.length;
  }
  return { tables: a.size, rows };
}

const kysQuery = (db: Kysely<DB>) => async (text: string) => (await sql.raw<Record<string, unknown>>(text).execute(db)).rows;

/** A copy of a backup with one byte changed in its middle, and one cut before its final chunk. */
function damaged(file: string, dir: string): { tampered: string; truncated: string } {
  const bytes = readFileSync(file);
  const tampered = Buffer.from(bytes);
  tampered[Math.floor(bytes.length / 2)]! ^= 0x01;
  writeFileSync(join(dir, 'tampered.gbk'), tampered);
  writeFileSync(join(dir, 'truncated.gbk'), bytes.subarray(0, bytes.length - 100));
  return { tampered: join(dir, 'tampered.gbk'), truncated: join(dir, 'truncated.gbk') };
}

/** A child of the seeded families, and the tenant's id. */
async function someChild(q: (text: string) => Promise<Record<string, unknown>[]>): Promise<{ tenantId: string; childId: string }> {
  const r = (await q(`SELECT tenant_id::text AS t, id::text AS c FROM children WHERE first_name_enc IS NOT NULL ORDER BY id LIMIT 1`))[0]!;
  return { tenantId: String(r.t), childId: String(r.c) };
}

describe('the backup file format', () => {
  const keys = keyProviderFromSecret(randomBytes(32));

  async function encrypt(plain: Buffer): Promise<Buffer> {
    const parts: Buffer[] = [];
    const { stream } = encryptStream(keys, { contents: 'pglite', made: { test: 1 } });
    await pipeline(Readable.from([plain.subarray(0, 1000), plain.subarray(1000)]), stream, new Writable({ write: (c: Buffer, _e, d) => (parts.push(c), d()) }));
    return Buffer.concat(parts);
  }
  async function decrypt(file: Buffer, k = keys): Promise<Buffer> {
    const parts: Buffer[] = [];
    // Fed in odd-sized pieces, as a file or a pipe would.
    const pieces: Buffer[] = [];
    for (let i = 0; i < file.length; i += 77_777) pieces.push(file.subarray(i, i + 77_777));
    await pipeline(Readable.from(pieces), decryptStream(k), new Writable({ write: (c: Buffer, _e, d) => (parts.push(c), d()) }));
    return Buffer.concat(parts);
  }

  it('round-trips; refuses a changed byte anywhere, a truncation, a reordering, trailing bytes and another key', async () => {
    const plain = randomBytes(2 * CHUNK + 12_345);
    const file = await encrypt(plain);
    expect((await decrypt(file)).equals(plain)).toBe(true);
    expect(file.includes(plain.subarray(5000, 5064))).toBe(false);
    const empty = await encrypt(Buffer.alloc(0));
    expect((await decrypt(empty)).length).toBe(0);

    const headerEnd = 12 + file.readUInt32BE(8);
    const chunk = 4 + CHUNK + 16;
    const flip = (at: number) => {
      const b = Buffer.from(file);
      b[at]! ^= 0x20;
      return b;
    };
    // The header: its salt is authenticated with every chunk.
    const saltAt = file.indexOf(Buffer.from('"salt":"')) + 10;
    await expect(decrypt(flip(saltAt))).rejects.toThrow(/chunk 0 at byte \d+ does not authenticate: the backup was altered or damaged|damaged/);
    await expect(decrypt(flip(3))).rejects.toThrow(/not a Guichet backup/);
    // A byte of the second chunk's ciphertext, and of the last chunk's tag.
    await expect(decrypt(flip(headerEnd + chunk + 500))).rejects.toThrow(new RegExp(`chunk 1 at byte ${headerEnd + chunk} does not authenticate`));
    await expect(decrypt(flip(file.length - 1))).rejects.toThrow(/chunk 2 at byte \d+ does not authenticate/);
    // Cut exactly after a whole chunk: every chunk read authenticates, but the final one is missing.
    await expect(decrypt(file.subarray(0, headerEnd + 2 * chunk))).rejects.toThrow(/ends at byte \d+ before its final chunk: truncated/);
    await expect(decrypt(file.subarray(0, file.length - 1))).rejects.toThrow(/truncated/);
    await expect(decrypt(file.subarray(0, 20))).rejects.toThrow(/inside the header|truncated/);
    // Two whole chunks swapped.
    const swapped = Buffer.concat([file.subarray(0, headerEnd), file.subarray(headerEnd + chunk, headerEnd + 2 * chunk), file.subarray(headerEnd, headerEnd + chunk), file.subarray(headerEnd + 2 * chunk)]);
    await expect(decrypt(swapped)).rejects.toThrow(/chunk 0 at byte \d+ does not authenticate/);
    await expect(decrypt(Buffer.concat([file, Buffer.from('x')]))).rejects.toThrow(/1 bytes follow the backup's final chunk/);
    await expect(decrypt(file, keyProviderFromSecret(randomBytes(32)))).rejects.toThrow(/encrypted with backup key k1:[0-9a-f]{16}; the key provider \(memory\) holds k1:[0-9a-f]{16}/);
  });
});

describe.runIf(KIND === 'pglite')('guichet backup and restore on the embedded database', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'guichet-backup-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('backs up data and keyring apart, restores both elsewhere: same rows, audit verified, files readable; refuses altered, truncated, and a non-empty target', async () => {
    const a = join(dir, 'a');
    const b = join(dir, 'b');
    const witness = join(dir, 'witness.jsonl');
    const envA = cliEnv({ GUICHET_DATA_DIR: a, GUICHET_WITNESS_FILE: witness });
    const envB = cliEnv({ GUICHET_DATA_DIR: b, GUICHET_WITNESS_FILE: witness });
    // The source starts migrated; the restore's target stays empty, as restore requires.
    withMigratedDatabase(a);
    ok(await cli(['tenant', 'create', '--slug', 'sauvegarde', '--name-fr', 'Sauvegarde', '--name-en', 'Backup'], envA));
    ok(await cli(['import', 'facilities', FACILITIES, '--tenant', 'sauvegarde'], envA));
    ok(await cli(['seed', '--families', '30', '--seed', '11', '--tenant', 'sauvegarde'], envA));
    expect(ok(await cli(['audit', 'verify'], envA)).stdout).toMatch(/^sauvegarde: ok, (\d+) events/m);

    const data = join(dir, 'data.gbk');
    const keyring = join(dir, 'keyring.gbk');
    const backup = ok(await cli(['backup', '--out', data], envA));
    expect(backup.stdout).toMatch(/^embedded \(PGlite\) data backup written to .*data\.gbk, [\d,]+ bytes, encrypted with backup key k1:[0-9a-f]{16}, schema version \d+, [\d,]+ rows in \d+ tables$/m);
    expect(backup.stdout).toMatch(/The keyring is not in this file/);
    ok(await cli(['backup', '--keyring', '--out', keyring], envA));
    expect(ok(await cli(['backup', '--check', data], envA)).stdout).toMatch(/ok, a embedded \(PGlite\) data backup of .*, every chunk authenticated/);
    // A backup never overwrites, and never leaves a half file behind.
    expect(ok(await cli(['backup', '--out', data], envA), 2).stderr).toMatch(/exists: choose another name/);

    // What the file holds is ciphertext: not one table name or facility name in clear.
    const bytes = readFileSync(data);
    expect(bytes.subarray(0, 8).toString()).toBe('GUICHBK1');
    expect(bytes.includes(Buffer.from('schema_migrations'))).toBe(false);
    expect(bytes.includes(Buffer.from('sauvegarde'))).toBe(false);

    // Another machine: only the master key was carried over, apart from both backups.
    const noKey = ok(await cli(['restore', data], envB), 2);
    expect(noKey.stderr).toMatch(/no master key at .*master\.key: a restore needs the master key the backup was made with/);
    mkdirSync(join(b, 'keys'), { recursive: true, mode: 0o700 });
    copyFileSync(join(a, 'keys', 'master.key'), join(b, 'keys', 'master.key'));

    const { tampered, truncated } = damaged(data, dir);
    const bad = ok(await cli(['restore', tampered], envB), 1);
    expect(bad.stderr).toMatch(/refused: chunk \d+ at byte \d+ does not authenticate: the backup was altered or damaged/);
    const cut = ok(await cli(['restore', truncated], envB), 1);
    expect(cut.stderr).toMatch(/refused: .*truncated/);
    expect(existsSync(join(b, 'pglite')), 'a refused backup touches nothing').toBe(false);

    const restored = ok(await cli(['restore', data], envB));
    expect(restored.stdout).toMatch(/restored into .*pglite: \d+ tables, [\d,]+ rows, as the backup counted them; row-level security enabled and forced on all \d+ tenant-owned tables; guichet_app granted on \d+/);
    expect(ok(await cli(['restore', keyring], envB)).stdout).toMatch(/file keyring of .* restored into/);
    const again = ok(await cli(['restore', data], envB), 2);
    expect(again.stderr).toMatch(/already holds a database: restore goes into an empty data directory/);

    const verified = ok(await cli(['audit', 'verify'], envB));
    expect(verified.stdout).toMatch(/^sauvegarde: ok, (\d+) events, tree of \1 leaves, \d+ signed heads, witness agrees/m);

    // Row for row. (audit verify appends nothing when no event waits: the restored log is the backed-up one.)
    const dbA = await openDatabase({ dataDir: join(a, 'pglite'), migrate: false });
    const dbB = await openDatabase({ dataDir: join(b, 'pglite'), migrate: false });
    try {
      const same = compare(await everyRow(kysQuery(dbA.db)), await everyRow(kysQuery(dbB.db)));
      expect(same.rows).toBeGreaterThan(600);
      // A family's file opens on the restored machine: its key came back with the keyring, its data with the backup.
      const { tenantId, childId } = await someChild(kysQuery(dbB.db));
      const keysB = loadKeyProvider(cliEnv({}), b);
      try {
        const child = await storedChild(dbB.db, keysB, tenantId, childId);
        expect(child.first_name).toMatch(/\p{L}/u);
        expect(child.last_name).toMatch(/\p{L}/u);
      } finally {
        await keysB.close();
      }
      console.info(`[backup] PGlite: ${same.tables} tables, ${same.rows} rows identical; backup ${(bytes.length / 1024).toFixed(0)} KiB in ${backup.ms} ms, restore in ${restored.ms} ms`);
    } finally {
      await dbA.close();
      await dbB.close();
    }

    // --force replaces, and keeps what it replaced beside it (the keyring here: the same path as the data's, without a database to start).
    expect(ok(await cli(['restore', keyring], envB), 2).stderr).toMatch(/already holds keys: give --force/);
    expect(ok(await cli(['restore', keyring, '--force'], envB)).stdout).toMatch(/the previous one is at .*keyring\.jsonl\.before-restore-/);
  }, 900_000);
});

describe.runIf(KIND === 'postgres')('guichet backup and restore on PostgreSQL', () => {
  const made: string[] = [];
  let dir: string;
  let adminUrl: string;
  const tag = `${Date.now()}_${process.pid}_bk${randomBytes(2).toString('hex')}`;
  const BACKUP_ROLE = 'guichet_test_backup';
  const RESTORE_ROLE = 'guichet_test_restorer';

  function urlOf(database: string, user?: string): string {
    const u = new URL(adminUrl);
    u.pathname = `/${database}`;
    if (user) {
      u.username = user;
      u.password = '';
    }
    return u.toString();
  }

  async function admin<T>(fn: (c: pg.Client) => Promise<T>, database?: string): Promise<T> {
    const c = new pg.Client({ connectionString: database ? urlOf(database) : adminUrl });
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  }

  async function createDb(suffix: string, owner?: string): Promise<string> {
    const name = `guichet_test_${tag}_${suffix}`;
    await admin((c) => c.query(`CREATE DATABASE "${name}"${owner ? ` OWNER "${owner}"` : ''}`));
    made.push(name);
    return name;
  }

  /** Roles are the cluster's: made once, kept as unprivileged as their purpose allows (like guichet_test_app). */
  async function role(name: string, attributes: string, grants: string[]): Promise<void> {
    await admin(async (c) => {
      for (let attempt = 0; ; attempt++) {
        try {
          const { rowCount } = await c.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [name]);
          await c.query(`${rowCount ? 'ALTER' : 'CREATE'} ROLE "${name}" ${attributes}`);
          for (const g of grants) await c.query(`GRANT ${g} TO "${name}"`);
          return;
        } catch (err) {
          const code = (err as { code?: string }).code;
          if (attempt < 3 && (code === '42710' || code === '23505' || code === 'XX000')) continue;
          throw err;
        }
      }
    });
  }

  beforeAll(async () => {
    const info = testDatabaseInfo();
    if (info.kind !== 'postgres') throw new Error('expected PostgreSQL');
    adminUrl = info.adminUrl;
    dir = mkdtempSync(join(tmpdir(), 'guichet-backup-pg-'));
    // The roles production uses: a backup role that reads every row and nothing more, and an owner that is not a superuser.
    await role(BACKUP_ROLE, 'LOGIN NOSUPERUSER BYPASSRLS NOCREATEDB NOCREATEROLE', ['pg_read_all_data']);
    await role(RESTORE_ROLE, 'LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB CREATEROLE', []);
  });

  afterAll(async () => {
    if (adminUrl) await admin(async (c) => {
      for (const name of made) await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('pg_dump as a BYPASSRLS role, pg_restore into a fresh database owned by a non-superuser: same rows, audit verified, grants and RLS hold; refuses altered, truncated, and a non-empty target', async () => {
    const src = await createDb('src');
    const srcKeys = await createDb('srckr');
    const masterKey = randomBytes(32).toString('base64');
    const witness = join(dir, 'witness.jsonl');
    const common = { GUICHET_DATA_DIR: dir, GUICHET_MASTER_KEY: masterKey, GUICHET_WITNESS_FILE: witness };
    const envSrc = cliEnv({ ...common, DATABASE_OWNER_URL: urlOf(src), DATABASE_URL: urlOf(src, TEST_APP_ROLE), GUICHET_KEYRING_URL: urlOf(srcKeys), GUICHET_BACKUP_URL: urlOf(src, BACKUP_ROLE) });
    ok(await cli(['migrate'], envSrc));
    ok(await cli(['tenant', 'create', '--slug', 'sauvegarde', '--name-fr', 'Sauvegarde', '--name-en', 'Backup'], envSrc));
    ok(await cli(['import', 'facilities', FACILITIES, '--tenant', 'sauvegarde'], envSrc));
    ok(await cli(['seed', '--families', '30', '--seed', '11', '--tenant', 'sauvegarde'], envSrc));
    ok(await cli(['audit', 'verify'], envSrc));

    // A role not made for backups (here the application's) is refused, and the message says which role to make.
    const asApp = ok(await cli(['backup', '--out', join(dir, 'nope.gbk')], { ...envSrc, GUICHET_BACKUP_URL: urlOf(src, TEST_APP_ROLE) }), 2);
    expect(asApp.stderr).toMatch(/BYPASSRLS/);
    expect(existsSync(join(dir, 'nope.gbk'))).toBe(false);

    const data = join(dir, 'data.gbk');
    const keyring = join(dir, 'keyring.gbk');
    const backup = ok(await cli(['backup', '--out', data], envSrc));
    expect(backup.stdout).toMatch(/^PostgreSQL data backup written to .*data\.gbk, [\d,]+ bytes, encrypted with backup key k1:[0-9a-f]{16}, schema version \d+, pg_dump \d+\.\d+, server \d+\.\d+$/m);
    ok(await cli(['backup', '--keyring', '--out', keyring], envSrc));

    // A fresh database owned by a non-superuser, and a fresh keyring database.
    const dst = await createDb('dst', RESTORE_ROLE);
    const dstKeys = await createDb('dstkr');
    const envDst = cliEnv({ ...common, DATABASE_OWNER_URL: urlOf(dst, RESTORE_ROLE), DATABASE_URL: urlOf(dst, TEST_APP_ROLE), GUICHET_KEYRING_URL: urlOf(dstKeys) });
    const { tampered, truncated } = damaged(data, dir);
    expect(ok(await cli(['restore', tampered], envDst), 1).stderr).toMatch(/refused: chunk \d+ at byte \d+ does not authenticate/);
    expect(ok(await cli(['restore', truncated], envDst), 1).stderr).toMatch(/refused: .*truncated/);
    const untouched = await admin((c) => c.query(`SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'`), dst);
    expect(untouched.rows[0].n, 'a refused backup touches nothing').toBe(0);

    const restored = ok(await cli(['restore', data], envDst));
    expect(restored.stdout).toMatch(/restored into guichet_test_\w+_dst: \d+ tables; row-level security enabled and forced on all \d+ tenant-owned tables; guichet_app granted on \d+/);
    expect(restored.stdout).toMatch(new RegExp(`the application role ${TEST_APP_ROLE} connects and reads 1 tenants; without a tenant it sees no row of the \\d+ tenant-owned tables it may read \\(row-level security holds\\)`));
    ok(await cli(['restore', keyring], envDst));
    expect(ok(await cli(['restore', data], envDst), 2).stderr).toMatch(/the target database is not empty/);
    expect(ok(await cli(['restore', keyring], envDst), 2).stderr).toMatch(/the target database is not empty/);

    const verified = ok(await cli(['audit', 'verify'], envDst));
    expect(verified.stdout).toMatch(/^sauvegarde: ok, (\d+) events, tree of \1 leaves, \d+ signed heads, witness agrees/m);

    // Row for row, read by the superuser on both sides.
    const rows = async (database: string) => admin(async (c) => everyRow(async (text) => (await c.query(text)).rows), database);
    const same = compare(await rows(src), await rows(dst));
    expect(same.rows).toBeGreaterThan(600);
    const owners = await admin((c) => c.query(`SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'`), dst);
    expect(owners.rows.map((r) => r.tableowner)).toEqual([RESTORE_ROLE]);

    // The application role, through the application's own connection and its tenant transaction: a family's file opens.
    const app = await openDatabase({ databaseUrl: urlOf(dst, TEST_APP_ROLE), migrate: false });
    const keys = loadKeyProvider(cliEnv({ GUICHET_MASTER_KEY: masterKey, GUICHET_KEYRING_URL: urlOf(dstKeys) }), dir);
    try {
      const { tenantId, childId } = await admin(async (c) => someChild(async (text) => (await c.query(text)).rows), dst);
      const child = await storedChild(app.db, keys, tenantId, childId);
      expect(child.first_name).toMatch(/\p{L}/u);
      const blind = await sql<{ n: number }>`SELECT count(*)::int AS n FROM children`.execute(app.db);
      expect(blind.rows[0]!.n, 'no tenant set: no row').toBe(0);
    } finally {
      await keys.close();
      await app.close();
    }
    console.info(`[backup] PostgreSQL: ${same.tables} tables, ${same.rows} rows identical; backup ${(readFileSync(data).length / 1024).toFixed(0)} KiB in ${backup.ms} ms, restore in ${restored.ms} ms`);
  }, 900_000);
});
