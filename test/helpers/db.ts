/**
 * The database every test talks to, on PGlite (default) or PostgreSQL
 * (GUICHET_TEST_DB=postgres). test/global-setup.ts prepares it once per run:
 *
 * - PGlite: one migrated data directory, dumped to a file; each
 *   createTestDatabase() loads that dump into a fresh in-memory PGlite
 *   (~0.7 s instead of ~5 s for initdb + migrations).
 * - PostgreSQL: one fresh database per run, migrated by the owner; each
 *   createTestDatabase() connects to it as guichet_test_app, a login role that
 *   is neither superuser nor owner, so row-level security really applies.
 *
 * Tests isolate themselves with fresh tenants (createTestTenant), not fresh
 * databases: on PostgreSQL every test file of the run shares one database.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { inject } from 'vitest';
import { createChainHead } from '../../src/audit/log.ts';
import { openDatabase, type Database } from '../../src/db/connection.ts';
import type { DB } from '../../src/db/schema.ts';
import { inTenant } from '../../src/db/tenant.ts';

export type TestDbKind = 'pglite' | 'postgres';

/** What test/global-setup.ts hands to the test workers. */
export type TestDbInfo =
  | { kind: 'pglite'; dumpPath: string }
  | {
      kind: 'postgres';
      database: string;
      /** Superuser, maintenance database: create/drop databases. */
      adminUrl: string;
      /** Superuser (the owner of the tables), the test database. */
      ownerUrl: string;
      /** guichet_test_app, the test database: what the application would use. */
      appUrl: string;
    };

declare module 'vitest' {
  export interface ProvidedContext {
    guichetTestDb: TestDbInfo;
  }
}

export const TEST_APP_ROLE = 'guichet_test_app';

export interface TestDatabase extends Database {
  /**
   * A connection that is not bound by the application role's grants or by
   * row-level security: for setting up tenants and for tampering in tests.
   * PGlite: the same database and connection (its single user is a superuser;
   * only inTenant() drops to guichet_app), so do not call it from inside an
   * open transaction of `db` — PGlite serialises transactions and would wait
   * forever. PostgreSQL: a superuser pool on the test database.
   */
  ownerDb(): Kysely<DB>;
}

export function testDbKind(): TestDbKind {
  const v = process.env.GUICHET_TEST_DB ?? 'pglite';
  if (v !== 'pglite' && v !== 'postgres') throw new Error(`GUICHET_TEST_DB must be 'pglite' or 'postgres', not '${v}'`);
  return v;
}

/** The run's database as prepared by the global setup. */
export function testDatabaseInfo(): TestDbInfo {
  const info = inject('guichetTestDb');
  if (!info) throw new Error('test database not prepared: run the tests through vitest (test/global-setup.ts)');
  if (info.kind !== testDbKind()) {
    throw new Error(`global setup prepared ${info.kind} but GUICHET_TEST_DB asks for ${testDbKind()}`);
  }
  return info;
}

let dumpCache: { path: string; blob: Blob } | undefined;

function pgliteDump(path: string): Blob {
  if (dumpCache?.path !== path) dumpCache = { path, blob: new Blob([readFileSync(path)]) };
  return dumpCache.blob;
}

/**
 * PGlite: one database per worker, shared by the files it runs one after the
 * other, as every file of a PostgreSQL run shares one database (and there at
 * the same time). Files keep to their own tenants (createTestTenant) either
 * way; a test that needs a database of its own makes one (createScenarioDb).
 * Opening a database from the run's image took about 2 s a file, 3–4 s on a
 * loaded machine: minutes of a run.
 */
let workerPGlite: Promise<Database> | undefined;

/** `preparedStatements`: PostgreSQL only, as DATABASE_PREPARED_STATEMENTS (on by default). */
export async function createTestDatabase({ preparedStatements }: { preparedStatements?: boolean } = {}): Promise<TestDatabase> {
  const info = testDatabaseInfo();
  if (info.kind === 'pglite') {
    workerPGlite ??= openDatabase({ dataDir: 'memory://', loadDataDir: pgliteDump(info.dumpPath), migrate: false });
    const database = await workerPGlite;
    // The worker's next files use it: a file's close leaves it open.
    return { ...database, ownerDb: () => database.db, close: async () => {} };
  }
  const database = await openDatabase({ databaseUrl: info.appUrl, migrate: false, ...(preparedStatements === undefined ? {} : { preparedStatements }) });
  let owner: Kysely<DB> | undefined;
  return {
    kind: database.kind,
    db: database.db,
    ownerDb: () => {
      owner ??= new Kysely<DB>({
        dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: info.ownerUrl, max: 4 }) }),
      });
      return owner;
    },
    close: async () => {
      await owner?.destroy();
      await database.close();
    },
  };
}

export interface TestTenantOverrides {
  slug?: string;
  name_fr?: string;
  name_en?: string;
  hosts?: string[];
  rules?: Record<string, unknown>;
  lockdown_level?: number;
}

export interface TestTenant {
  id: string;
  slug: string;
}

export function randomSlug(prefix = 't-'): string {
  return prefix + randomBytes(6).toString('hex');
}

/**
 * A new tenant with its audit chain head, created through the owner
 * connection (the application role may only read tenants: creating one is an
 * operator's CLI operation).
 */
/**
 * The tenants this test file made. On PostgreSQL every file shares one
 * database: a listening test app seals only these, never the tenants a CLI
 * test's own processes seal with their own witness.
 */
export const TEST_FILE_TENANTS = new Set<string>();

export async function createTestTenant(database: TestDatabase, overrides: TestTenantOverrides = {}): Promise<TestTenant> {
  const owner = database.ownerDb();
  const slug = overrides.slug ?? randomSlug();
  const row = await owner
    .insertInto('tenants')
    .values({
      slug,
      name_fr: overrides.name_fr ?? `Locataire ${slug}`,
      name_en: overrides.name_en ?? `Tenant ${slug}`,
      hosts: overrides.hosts ?? [`${slug}.localhost`],
      rules: JSON.stringify(overrides.rules ?? {}),
      ...(overrides.lockdown_level !== undefined ? { lockdown_level: overrides.lockdown_level } : {}),
    })
    .returning(['id', 'slug'])
    .executeTakeFirstOrThrow();
  TEST_FILE_TENANTS.add(row.id);
  await inTenant(owner, row.id, (trx) => createChainHead(trx, row.id));
  return { id: row.id, slug: row.slug };
}

const PG_QUERY = pg.Client.prototype.query;

/**
 * Pushes onto `sent` every message pg's clients send, in order, until the
 * returned function is called (it puts pg's own `query` back).
 */
export function recordMessages(sent: string[]): () => void {
  (pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown }).query = function (this: pg.Client, ...args: unknown[]) {
    const q = args[0];
    sent.push(typeof q === 'string' ? q : String((q as { text?: string })?.text ?? ''));
    return (PG_QUERY as (...a: unknown[]) => unknown).apply(this, args);
  };
  return () => {
    pg.Client.prototype.query = PG_QUERY;
  };
}
