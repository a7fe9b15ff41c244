/**
 * Prepares the run's test database once, before any test file, and removes it
 * afterwards. See test/helpers/db.ts for how tests use it.
 */
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { openDatabase, pgliteMigrationTarget } from '../src/db/connection.ts';
import { runMigrations } from '../src/db/migrate.ts';
// Types only: the helper imports vitest's test-side API, which has no place in the main process.
import type { TestDbInfo } from './helpers/db.ts';

/** Keep in step with TEST_APP_ROLE in test/helpers/db.ts. */
const TEST_APP_ROLE = 'guichet_test_app';
const DEFAULT_ADMIN_URL = 'postgres://postgres@127.0.0.1:5432/test';
/** Test databases left behind by a run that was killed are dropped after this long. */
const STALE_AFTER_MS = 12 * 60 * 60 * 1000;

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const kind = process.env.GUICHET_TEST_DB ?? 'pglite';
  if (kind !== 'pglite' && kind !== 'postgres') throw new Error(`GUICHET_TEST_DB must be 'pglite' or 'postgres', not '${kind}'`);
  const started = performance.now();
  const { info, teardown } = kind === 'postgres' ? await setupPostgres() : await setupPGlite();
  project.provide('guichetTestDb', info);
  const where = info.kind === 'postgres' ? `database ${info.database}` : info.dumpPath;
  console.log(`[test db] ${kind}: ${where} ready in ${Math.round(performance.now() - started)} ms`);
  const bundle = await bundleCli();
  project.provide('guichetCliBundle', bundle?.path ?? null);
  const template = await migratedDataDirTemplate(info);
  project.provide('guichetPgliteTemplate', template.path);
  return async () => {
    bundle?.remove();
    template.remove();
    await teardown();
  };
}

/**
 * An embedded database on disk with every migration applied and nothing else,
 * for the CLI tests to copy into a new GUICHET_DATA_DIR (test/helpers/cli.ts,
 * migratedDataDir): a command on an empty data directory first applies the
 * thirty-odd migrations, several seconds in a new process, which the tests
 * about migrating keep proving on empty directories of their own. On a PGlite
 * run it is the run's image; on a PostgreSQL run it is migrated here.
 */
async function migratedDataDirTemplate(info: TestDbInfo): Promise<{ path: string; remove: () => void }> {
  const started = performance.now();
  const root = mkdtempSync(join(tmpdir(), 'guichet-test-pglite-template-'));
  const path = join(root, 'pglite');
  const client = new PGlite({ dataDir: path, ...(info.kind === 'pglite' ? { loadDataDir: new Blob([readFileSync(info.dumpPath)]) } : {}) });
  await client.waitReady;
  if (info.kind !== 'pglite') await runMigrations(pgliteMigrationTarget(client));
  await client.close();
  console.log(`[test cli] ${path}: a migrated data directory in ${Math.round(performance.now() - started)} ms`);
  return { path, remove: () => rmSync(root, { recursive: true, force: true }) };
}

/**
 * The CLI's sources (src/cli/main.ts and all it imports) compiled once into a
 * few files, for the tests that run many `guichet` commands: through
 * bin/guichet.mjs each process compiles and loads a few hundred modules through
 * tsx's loader, several seconds on a loaded machine; the bundle loads in a
 * fraction of that. The code is the same (tsx compiles with the same esbuild);
 * each file's import.meta.url stays its own source file's, so paths to
 * migrations, assets and seed data resolve as they do from the sources. What
 * operators run, bin/guichet.mjs, is what `npm start` runs in
 * test/cli/demo-start.test.ts and what test/cli/cli.test.ts runs for its usage.
 * Null when esbuild cannot be loaded or the bundling fails: every command then
 * goes through bin/guichet.mjs.
 */
async function bundleCli(): Promise<{ path: string; remove: () => void } | null> {
  const started = performance.now();
  const root = fileURLToPath(new URL('..', import.meta.url));
  let esbuild: typeof import('esbuild');
  try {
    esbuild = await import('esbuild');
  } catch (err) {
    console.log(`[test cli] no esbuild (${(err as Error).message}): commands run through bin/guichet.mjs`);
    return null;
  }
  const dir = mkdtempSync(join(tmpdir(), 'guichet-test-cli-'));
  // Packages stay outside the bundle and resolve from the project's node_modules.
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'), 'dir');
  const path = join(dir, 'guichet.mjs');
  try {
    await esbuild.build({
      entryPoints: [join(root, 'src/cli/main.ts')],
      // Split at the commands' dynamic imports, as the sources are: a command loads its own modules and the
      // packages they import, not every command's (one file would import every package at start, 0.5 s more).
      outdir: dir,
      splitting: true,
      entryNames: 'guichet',
      outExtension: { '.js': '.mjs' },
      bundle: true,
      packages: 'external',
      platform: 'node',
      format: 'esm',
      target: 'node20',
      jsx: 'automatic',
      jsxImportSource: 'preact',
      sourcemap: 'inline',
      logLevel: 'warning',
      plugins: [
        {
          name: 'own-import-meta-url',
          setup(build) {
            build.onLoad({ filter: /[\\/]src[\\/].*\.tsx?$/ }, async (a) => ({
              contents: (await readFile(a.path, 'utf8')).replaceAll('import.meta.url', JSON.stringify(pathToFileURL(a.path).href)),
              loader: a.path.endsWith('.tsx') ? 'tsx' : 'ts',
            }));
          },
        },
      ],
    });
  } catch (err) {
    // Only the bundling failed: the commands still run, through bin/guichet.mjs.
    rmSync(dir, { recursive: true, force: true });
    console.log(`[test cli] bundling failed (${(err as Error).message}): commands run through bin/guichet.mjs`);
    return null;
  }
  console.log(`[test cli] ${path} built in ${Math.round(performance.now() - started)} ms`);
  return { path, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

async function setupPGlite(): Promise<{ info: TestDbInfo; teardown: () => Promise<void> }> {
  const client = new PGlite();
  await client.waitReady;
  // The same migration target as src/db/connection.ts, on a client we keep
  // hold of so that we can dump its data directory.
  await runMigrations(pgliteMigrationTarget(client));
  const dump = await client.dumpDataDir('gzip');
  await client.close();
  const dumpPath = join(tmpdir(), `guichet-test-pglite-${Date.now()}-${process.pid}.tgz`);
  writeFileSync(dumpPath, Buffer.from(await dump.arrayBuffer()));
  return {
    info: { kind: 'pglite', dumpPath },
    teardown: async () => {
      rmSync(dumpPath, { force: true });
    },
  };
}

function withDatabase(url: string, database: string, user?: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  if (user !== undefined) {
    u.username = user;
    u.password = '';
  }
  return u.toString();
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

async function adminClient(adminUrl: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: adminUrl });
  try {
    await client.connect();
  } catch (err) {
    throw new Error(
      `GUICHET_TEST_DB=postgres: cannot connect to ${adminUrl} (set GUICHET_TEST_PG_ADMIN_URL): ${(err as Error).message}`,
    );
  }
  return client;
}

async function dropDatabase(admin: pg.Client, database: string): Promise<void> {
  await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [
    database,
  ]);
  await admin.query(`DROP DATABASE IF EXISTS ${quoteIdent(database)} WITH (FORCE)`);
}

/** Roles are shared by the whole cluster, and other runs may create them at the same moment. */
async function ensureAppRole(admin: pg.Client): Promise<void> {
  const role = quoteIdent(TEST_APP_ROLE);
  for (let attempt = 0; ; attempt++) {
    const { rowCount } = await admin.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [TEST_APP_ROLE]);
    try {
      if (!rowCount) {
        await admin.query(`CREATE ROLE ${role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE IN ROLE guichet_app`);
      } else {
        // Whatever an earlier run or a person did to it, it must stay unprivileged.
        await admin.query(`ALTER ROLE ${role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE`);
        await admin.query(`GRANT guichet_app TO ${role}`);
      }
      return;
    } catch (err) {
      const code = (err as { code?: string }).code;
      // duplicate_object / unique_violation on pg_authid: another run won the race.
      if (attempt < 3 && (code === '42710' || code === '23505' || code === 'XX000')) continue;
      throw err;
    }
  }
}

async function setupPostgres(): Promise<{ info: TestDbInfo; teardown: () => Promise<void> }> {
  const adminUrl = process.env.GUICHET_TEST_PG_ADMIN_URL ?? DEFAULT_ADMIN_URL;
  const database = `guichet_test_${Date.now()}_${process.pid}`;
  const admin = await adminClient(adminUrl);
  try {
    const { rows } = await admin.query<{ datname: string }>("SELECT datname FROM pg_database WHERE datname LIKE 'guichet\\_test\\_%'");
    for (const { datname } of rows) {
      const m = /^guichet_test_(\d+)_\d+(?:_[a-z0-9]+)?$/.exec(datname);
      if (m && Date.now() - Number(m[1]) > STALE_AFTER_MS) await dropDatabase(admin, datname);
    }
    await admin.query(`CREATE DATABASE ${quoteIdent(database)}`);
  } finally {
    await admin.end();
  }

  const ownerUrl = withDatabase(adminUrl, database);
  const appUrl = withDatabase(adminUrl, database, TEST_APP_ROLE);
  try {
    // Migrations run as the owner (here the superuser), as `guichet migrate` would.
    const owner = await openDatabase({ databaseUrl: ownerUrl, databaseOwnerUrl: ownerUrl, allowPrivilegedRole: true });
    await owner.close();
    const admin2 = await adminClient(adminUrl);
    try {
      await ensureAppRole(admin2);
      await admin2.query(`GRANT CONNECT ON DATABASE ${quoteIdent(database)} TO ${quoteIdent(TEST_APP_ROLE)}`);
    } finally {
      await admin2.end();
    }
  } catch (err) {
    const admin3 = await adminClient(adminUrl);
    await dropDatabase(admin3, database).finally(() => admin3.end());
    throw err;
  }

  return {
    info: { kind: 'postgres', database, adminUrl, ownerUrl, appUrl },
    teardown: async () => {
      if (process.env.GUICHET_KEEP_TEST_DB) {
        console.log(`[test db] kept database ${database} (GUICHET_KEEP_TEST_DB)`);
        return;
      }
      const admin4 = await adminClient(adminUrl);
      try {
        await dropDatabase(admin4, database);
      } finally {
        await admin4.end();
      }
    },
  };
}
