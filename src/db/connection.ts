import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { PGlite, types as pgliteTypes } from '@electric-sql/pglite';
import { Kysely, sql, type Transaction } from 'kysely';
import { PGliteDialect } from 'kysely-pglite-dialect';
import pg from 'pg';
import type { DB } from './schema.ts';
import { HeldBeginDialect } from './held-begin.ts';
import { runMigrations, type MigrationTarget } from './migrate.ts';

/** Connections to PostgreSQL a process holds at most. */
const POOL_SIZE = 20;

export type Trx = Transaction<DB>;

export interface Database {
  readonly kind: 'pglite' | 'postgres';
  /** The application's connection: every tenant transaction runs as guichet_app. */
  readonly db: Kysely<DB>;
  close(): Promise<void>;
}

// Handles over a pool of server connections: several transactions can be open at once (not PGlite's single session).
const pooled = new WeakSet<Kysely<DB>>();

/** Whether `db` can hold several transactions open at the same time (PostgreSQL), or only one (PGlite). */
export function hasConcurrentTransactions(db: Kysely<DB>): boolean {
  return pooled.has(db);
}

export interface OpenOptions {
  /** PostgreSQL: the application's login role (not superuser, not owner). */
  databaseUrl?: string | undefined;
  /** PostgreSQL: the owner that runs migrations. Defaults to databaseUrl. */
  databaseOwnerUrl?: string | undefined;
  /** PGlite: a directory, or 'memory://'. */
  dataDir?: string;
  /** PGlite: start from a dump made by PGlite#dumpDataDir (tests use a migrated template). */
  loadDataDir?: Blob | File;
  migrate?: boolean;
  allowPrivilegedRole?: boolean;
  /** PostgreSQL: keep statements prepared on each connection (src/db/held-begin.ts); default true. */
  preparedStatements?: boolean;
  log?: (msg: string) => void;
}

const INT8 = 20;
const DATE = 1082;
const BYTEA = 17;

// Both drivers hand back the same JavaScript types: DATE as 'YYYY-MM-DD' (a
// calendar date has no time zone), int8 as string, bytea as Buffer.
pg.types.setTypeParser(DATE, (v: string) => v);

function pgliteParsers() {
  return {
    [DATE]: (v: string) => v,
    [INT8]: (v: string) => v,
    [BYTEA]: (v: string) => Buffer.from(v.startsWith('\\x') ? v.slice(2) : v, 'hex'),
  } as Record<number, (v: string) => unknown>;
}

export async function openDatabase(opts: OpenOptions): Promise<Database> {
  if (opts.databaseUrl) return openPostgres(opts);
  return openPGlite(opts);
}

/**
 * Migrations on one embedded database. No lock: a data directory has one
 * process (the CLI and the server lock it, runtime.ts).
 */
export function pgliteMigrationTarget(client: PGlite): MigrationTarget {
  return {
    query: async (text, params) => (await client.query<Record<string, unknown>>(text, params ?? [])).rows,
    execInTransaction: async (text) => {
      await client.transaction(async (tx) => {
        await tx.exec(text);
      });
    },
    lock: async () => {},
    unlock: async () => {},
  };
}

async function openPGlite(opts: OpenOptions): Promise<Database> {
  const dir = opts.dataDir ?? 'memory://';
  if (!dir.startsWith('memory://')) mkdirSync(resolve(dir), { recursive: true });
  const client = new PGlite({
    dataDir: dir.startsWith('memory://') ? undefined : resolve(dir),
    ...(opts.loadDataDir ? { loadDataDir: opts.loadDataDir } : {}),
    parsers: pgliteParsers(),
  });
  await client.waitReady;
  if (opts.migrate !== false) await runMigrations(pgliteMigrationTarget(client), opts.log);
  const db = new Kysely<DB>({ dialect: new PGliteDialect(client) });
  return {
    kind: 'pglite',
    db,
    close: async () => {
      await db.destroy();
    },
  };
}

async function openPostgres(opts: OpenOptions): Promise<Database> {
  if (opts.migrate !== false) {
    const owner = new pg.Client({ connectionString: opts.databaseOwnerUrl ?? opts.databaseUrl });
    await owner.connect();
    try {
      const target: MigrationTarget = {
        query: async (text, params) => (await owner.query(text, params ?? [])).rows,
        execInTransaction: async (text) => {
          await owner.query('BEGIN');
          try {
            await owner.query(text);
            await owner.query('COMMIT');
          } catch (err) {
            await owner.query('ROLLBACK');
            throw err;
          }
        },
        // A session-level advisory lock: two instances starting together apply each migration once.
        lock: async () => {
          await owner.query("SELECT pg_advisory_lock(hashtext('guichet.migrations'))");
        },
        unlock: async () => {
          await owner.query("SELECT pg_advisory_unlock(hashtext('guichet.migrations'))");
        },
      };
      await runMigrations(target, opts.log);
    } finally {
      await owner.end();
    }
  }
  // A connection the pool opened stays open when idle (min = max; pg closes idle ones after 10 s otherwise):
  // a new one costs its start, a cold catalogue cache and preparing each statement again, and after a quiet
  // spell a burst of pages paid that on twenty connections at once — seconds of queue (bench/load.ts).
  // Idle connections do not keep a process alive (a command ends when its work does, as before).
  const pool = new pg.Pool({ connectionString: opts.databaseUrl, max: POOL_SIZE, min: POOL_SIZE, allowExitOnIdle: true });
  // An idle connection the server ends (a restart, a failover, an administrator's command) is dropped from the pool
  // and opened again when next needed; without a listener its error would end the whole process.
  pool.on('error', (err) => opts.log?.(`database: an idle connection was closed by the server (${(err as { code?: string }).code ?? err.message})`));
  const db = new Kysely<DB>({ dialect: new HeldBeginDialect(pool, { prepare: opts.preparedStatements ?? true }) });
  try {
    await assertUnprivilegedRole(db, opts.allowPrivilegedRole ?? false);
  } catch (err) {
    await db.destroy();
    throw err;
  }
  pooled.add(db);
  return {
    kind: 'postgres',
    db,
    close: async () => {
      await db.destroy();
    },
  };
}

/** The configured database role would make row-level security meaningless. */
export class UnsafeDatabaseRoleError extends Error {}

/**
 * Row-level security means nothing to a superuser, to a role with BYPASSRLS,
 * or (without FORCE) to the owner. Refuse to serve through such a connection.
 */
async function assertUnprivilegedRole(db: Kysely<DB>, allow: boolean): Promise<void> {
  if (allow) return;
  const { rows } = await sql<{ user: string; super: boolean; bypass: boolean; owns: boolean; member: boolean }>`
    SELECT current_user AS user, r.rolsuper AS super, r.rolbypassrls AS bypass,
           EXISTS (SELECT 1 FROM pg_tables t WHERE t.schemaname = 'public' AND t.tableowner = current_user) AS owns,
           pg_has_role(current_user, 'guichet_app', 'MEMBER') AS member
    FROM pg_roles r WHERE r.rolname = current_user`.execute(db);
  const r = rows[0];
  if (!r) throw new Error('DATABASE_URL: cannot read the current role');
  if (r.super || r.bypass || r.owns) {
    throw new UnsafeDatabaseRoleError(
      `DATABASE_URL: the role "${r.user}" is a superuser, bypasses row-level security or owns the tables. ` +
        'Connect as a login role that is a member of guichet_app (README, "Running on PostgreSQL").',
    );
  }
  if (!r.member) {
    throw new UnsafeDatabaseRoleError(`DATABASE_URL: the role "${r.user}" is not a member of guichet_app`);
  }
}
