/**
 * A database of the test's own, for what the shared test database cannot
 * do: take a real backup of the whole data, restore it into a fresh
 * database, read its raw bytes, or stop the migrations half-way.
 *
 * - PGlite: an instance started from the run's migrated template; a backup
 *   is PGlite's dumpDataDir (the whole data directory, as a copy of
 *   $GUICHET_DATA_DIR/pglite would be), restored with loadDataDir.
 * - PostgreSQL: a database created for the test on the run's server; a
 *   backup is pg_dump -Fc, restored with pg_restore into a new database.
 *   Dropped at close.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { PGlite } from '@electric-sql/pglite';
import { Kysely, PostgresDialect, sql } from 'kysely';
import { PGliteDialect } from 'kysely-pglite-dialect';
import pg from 'pg';
import { openDatabase } from '../../src/db/connection.ts';
import { migrationFiles } from '../../src/db/migrate.ts';
import type { DB } from '../../src/db/schema.ts';
import { testDatabaseInfo, type TestDatabase } from '../helpers/db.ts';

/** The same type parsers as src/db/connection.ts gives PGlite. */
const PARSERS = {
  1082: (v: string) => v,
  20: (v: string) => v,
  17: (v: string) => Buffer.from(v.startsWith('\\x') ? v.slice(2) : v, 'hex'),
} as Record<number, (v: string) => unknown>;

export interface Backup {
  bytes: Buffer;
}

export interface ScenarioDb {
  database: TestDatabase;
  /** A backup of the whole data database, as an operator's backup job would take it. */
  backup(): Promise<Backup>;
  /** A fresh database holding exactly the backup. */
  restore(b: Backup): Promise<ScenarioDb>;
  /** Every byte of the backup, uncompressed, to search for what must not be there. */
  rawBytes(b: Backup): Buffer;
  /** Runs a multi-statement SQL script in one transaction (a migration). */
  execScript(text: string): Promise<void>;
  close(): Promise<void>;
}

function run(cmd: string, args: string[], input?: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { encoding: 'buffer', maxBuffer: 512 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stderr.toString()}`));
      else resolve(stdout);
    });
    if (input) child.stdin!.end(input);
  });
}

function pgliteScenario(client: PGlite): ScenarioDb {
  const db = new Kysely<DB>({ dialect: new PGliteDialect(client) });
  const database: TestDatabase = { kind: 'pglite', db, ownerDb: () => db, close: async () => db.destroy() };
  return {
    database,
    backup: async () => ({ bytes: Buffer.from(await (await client.dumpDataDir('gzip')).arrayBuffer()) }),
    restore: async (b) => {
      const fresh = new PGlite({ loadDataDir: new Blob([new Uint8Array(b.bytes)]), parsers: PARSERS });
      await fresh.waitReady;
      return pgliteScenario(fresh);
    },
    rawBytes: (b) => gunzipSync(b.bytes),
    execScript: async (text) => {
      await client.transaction(async (tx) => {
        await tx.exec(text);
      });
    },
    close: async () => database.close(),
  };
}

async function createPg(name: string): Promise<string> {
  const info = testDatabaseInfo();
  if (info.kind !== 'postgres') throw new Error('not a PostgreSQL run');
  const admin = new pg.Client({ connectionString: info.adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  const u = new URL(info.adminUrl);
  u.pathname = `/${name}`;
  return u.toString();
}

async function dropPg(name: string): Promise<void> {
  const info = testDatabaseInfo();
  if (info.kind !== 'postgres') return;
  const admin = new pg.Client({ connectionString: info.adminUrl });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  } finally {
    await admin.end();
  }
}

function pgScenario(name: string, url: string, db: Kysely<DB>): ScenarioDb {
  const database: TestDatabase = { kind: 'postgres', db, ownerDb: () => db, close: async () => db.destroy() };
  return {
    database,
    backup: async () => ({ bytes: await run('pg_dump', ['-Fc', '--no-owner', '-d', url]) }),
    restore: async (b) => {
      const fresh = `${name}r${randomBytes(2).toString('hex')}`;
      const freshUrl = await createPg(fresh);
      await run('pg_restore', ['--no-owner', '--exit-on-error', '-d', freshUrl], b.bytes);
      const restored = new Kysely<DB>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: freshUrl, max: 4 }) }) });
      return pgScenario(fresh, freshUrl, restored);
    },
    rawBytes: () => {
      throw new Error('use plainDump() on PostgreSQL');
    },
    execScript: async (text) => {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        await c.query('BEGIN');
        await c.query(text);
        await c.query('COMMIT');
      } finally {
        await c.end();
      }
    },
    close: async () => {
      await database.close();
      await dropPg(name);
    },
  };
}

/** PostgreSQL: the backup as plain SQL text, to search. */
export async function plainDump(s: ScenarioDb, b: Backup): Promise<Buffer> {
  if (s.database.kind === 'pglite') return s.rawBytes(b);
  return run('pg_restore', ['-f', '-'], b.bytes);
}

/**
 * A migrated database of the test's own. `upTo` stops the migrations after
 * that version (an older release's database, to upgrade in the test).
 */
export async function createScenarioDb(opts: { upTo?: number } = {}): Promise<ScenarioDb> {
  const info = testDatabaseInfo();
  if (info.kind === 'pglite') {
    if (opts.upTo === undefined) {
      const client = new PGlite({ loadDataDir: new Blob([readFileSync(info.dumpPath)]), parsers: PARSERS });
      await client.waitReady;
      return pgliteScenario(client);
    }
    const client = new PGlite({ parsers: PARSERS });
    await client.waitReady;
    await client.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    for (const m of migrationFiles().filter((f) => f.version <= opts.upTo!)) {
      await client.transaction(async (tx) => {
        await tx.exec(`${m.sql}\n;INSERT INTO schema_migrations (version, name) VALUES (${m.version}, '${m.name}');\nGRANT SELECT ON schema_migrations TO guichet_app;`);
      });
    }
    return pgliteScenario(client);
  }
  const name = `guichet_test_${Date.now()}_${process.pid}_sc${randomBytes(3).toString('hex')}`;
  const url = await createPg(name);
  if (opts.upTo === undefined) {
    const migrated = await openDatabase({ databaseUrl: url, databaseOwnerUrl: url, allowPrivilegedRole: true });
    await migrated.close();
  } else {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      await c.query(`CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
      for (const m of migrationFiles().filter((f) => f.version <= opts.upTo!)) {
        await c.query('BEGIN');
        await c.query(`${m.sql}\n;INSERT INTO schema_migrations (version, name) VALUES (${m.version}, '${m.name}');\nGRANT SELECT ON schema_migrations TO guichet_app;`);
        await c.query('COMMIT');
      }
    } finally {
      await c.end();
    }
  }
  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 4 }) }) });
  return pgScenario(name, url, db);
}

/** Applies the migrations a scenario database does not have yet (the upgrade of an older release). */
export async function migrateScenario(s: ScenarioDb): Promise<void> {
  const { rows } = await sql<{ version: number }>`SELECT version FROM schema_migrations`.execute(s.database.db);
  const applied = new Set(rows.map((r) => Number(r.version)));
  for (const m of migrationFiles()) {
    if (applied.has(m.version)) continue;
    await s.execScript(`${m.sql}\n;INSERT INTO schema_migrations (version, name) VALUES (${m.version}, '${m.name}');\nGRANT SELECT ON schema_migrations TO guichet_app;`);
  }
}
