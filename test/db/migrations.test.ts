/**
 * Migrations: forward-only, each applied once, all of them recorded.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, pgliteMigrationTarget, type Database, type OpenOptions } from '../../src/db/connection.ts';
import { migrationFiles, runMigrations } from '../../src/db/migrate.ts';
import { createTestDatabase, testDatabaseInfo, type TestDatabase } from '../helpers/db.ts';

const MIGRATIONS_DIR = join(dirname(fileURLToPath(import.meta.url)), '../../src/db/migrations');

/** Opens with migrations on and returns the names of the migrations it applied. */
async function openCounting(opts: OpenOptions): Promise<{ database: Database; applied: string[] }> {
  const applied: string[] = [];
  const database = await openDatabase({ ...opts, migrate: true, log: (msg) => applied.push(msg) });
  return { database, applied };
}

describe('migrations', () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase();
  });
  afterAll(async () => {
    await t?.close();
  });

  it('every file in src/db/migrations is a numbered migration', () => {
    const files = readdirSync(MIGRATIONS_DIR).filter((f) => !f.startsWith('.'));
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) expect(f).toMatch(/^\d{4}_[a-z0-9_]+\.sql$/);
    const versions = files.map((f) => f.slice(0, 4));
    expect(new Set(versions).size, 'two migrations share a number').toBe(versions.length);
  });

  it('schema_migrations lists every file in src/db/migrations', async () => {
    const files = readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith('.sql')).sort();
    const rows = await t.ownerDb().selectFrom('schema_migrations').select(['version', 'name']).orderBy('version').execute();
    expect(rows.map((r) => `${String(r.version).padStart(4, '0')}_${r.name}.sql`)).toEqual(files);
    expect(rows.map((r) => r.version)).toEqual(migrationFiles().map((m) => m.version));
  });

  it('the application role may read schema_migrations', async () => {
    const rows = await t.db.transaction().execute(async (trx) => {
      await sql`SELECT set_config('role', 'guichet_app', true)`.execute(trx);
      return trx.selectFrom('schema_migrations').select('version').execute();
    });
    expect(rows.length).toBe(migrationFiles().length);
  });

  it('on a new database, the first run applies every migration and the second none', async () => {
    const info = testDatabaseInfo();
    if (info.kind === 'pglite') {
      // In memory and through runMigrations directly (the target is the one
      // openDatabase builds for PGlite): an on-disk data directory, which
      // openDatabase would need to be opened twice, costs ~10 s here.
      const client = new PGlite();
      try {
        const target = pgliteMigrationTarget(client);
        expect(await runMigrations(target)).toBe(migrationFiles().length);
        expect(await runMigrations(target)).toBe(0);
        const rows = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM schema_migrations');
        expect(rows.rows[0]?.n).toBe(migrationFiles().length);
      } finally {
        await client.close();
      }
    } else {
      const name = `${info.database}_m`;
      const admin = new pg.Client({ connectionString: info.adminUrl });
      await admin.connect();
      try {
        await admin.query(`CREATE DATABASE "${name}"`);
        const url = new URL(info.ownerUrl);
        url.pathname = `/${name}`;
        const opts = { databaseUrl: url.toString(), allowPrivilegedRole: true };
        const first = await openCounting(opts);
        await first.database.close();
        expect(first.applied).toHaveLength(migrationFiles().length);
        const second = await openCounting(opts);
        await second.database.close();
        expect(second.applied).toEqual([]);
      } finally {
        await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
        await admin.end();
      }
    }
  });

  it('the run\'s database, migrated by the global setup, gets nothing more', async () => {
    const info = testDatabaseInfo();
    if (info.kind === 'postgres') {
      const again = await openCounting({ databaseUrl: info.ownerUrl, allowPrivilegedRole: true });
      await again.database.close();
      expect(again.applied).toEqual([]);
    } else {
      const again = await openCounting({ dataDir: 'memory://', loadDataDir: new Blob([readFileSync(info.dumpPath)]) });
      await again.database.close();
      expect(again.applied).toEqual([]);
    }
  });
});
