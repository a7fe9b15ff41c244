/**
 * The `guichet` command line, run for real: each command is a child process
 * (`node bin/guichet.mjs ...`, or the run's bundle of the same sources: see
 * test/helpers/cli.ts), and the tests check what an operator sees, the exit
 * code and the output.
 *
 * The PGlite tests share one data directory and run in order, as an operator
 * would: create a tenant, import the directory, seed, bootstrap the first
 * administrator, seal and verify the audit trees, then tamper with one event
 * and see `audit verify` name its leaf. The PostgreSQL block runs the same
 * commands against the run's database (GUICHET_TEST_DB=postgres).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../../src/db/connection.ts';
import { GUICHET_BIN, guichetEntry, migratedDataDir } from '../helpers/cli.ts';
import { randomSlug, testDatabaseInfo } from '../helpers/db.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FACILITIES = 'seed-data/facilities-monteregie-2022-11.csv';

/** Variables the CLI reads: none leaks in from the environment the tests run in. */
const CONFIG_VARS = [
  'PORT',
  'HOST',
  'GUICHET_DATA_DIR',
  'DATABASE_URL',
  'DATABASE_OWNER_URL',
  'SMTP_URL',
  'MAIL_FROM',
  'NODE_ENV',
  'LOG_LEVEL',
  'PUBLIC_URL',
  'GUICHET_DEFAULT_TENANT',
  'GUICHET_ALLOW_PRIVILEGED_DB_ROLE',
  'GUICHET_MASTER_KEY',
  'GUICHET_KEY_FILE',
  'GUICHET_WITNESS_FILE',
  'GUICHET_WITNESS_URL',
];

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

/** Runs one CLI command to its end; never rejects, whatever the exit code. */
function cli(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000, entry = guichetEntry()): Promise<Run> {
  const started = performance.now();
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [entry, ...args], { cwd: ROOT, env, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (_err, stdout, stderr) => {
      resolve({ code: child.exitCode, stdout: String(stdout), stderr: String(stderr), ms: Math.round(performance.now() - started) });
    });
  });
}

/** For a failed expectation: what the command printed. */
function shown(r: Run): string {
  return `exit ${r.code} after ${r.ms} ms\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

function expectExit(r: Run, code: number): void {
  expect(r.code, shown(r)).toBe(code);
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** Servers started by this file, stopped in afterAll if a test failed before it stopped them. */
const running = new Set<ChildProcess>();

interface Server {
  child: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startServer(env: NodeJS.ProcessEnv): Server {
  const child = spawn(process.execPath, [guichetEntry(), 'serve'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString('utf8')));
  child.stderr!.on('data', (b: Buffer) => (out += b.toString('utf8')));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    }),
  );
  return { child, output: () => out, exited };
}

/** Resolves when the server says it listens; rejects if it exits first or takes too long. */
async function listening(s: Server, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited: { code: number | null } | null = null;
  void s.exited.then((e) => (exited = e));
  while (!/Guichet is listening/.test(s.output())) {
    if (exited) throw new Error(`server exited (${(exited as { code: number | null }).code}) before listening:\n${s.output()}`);
    if (Date.now() > deadline) throw new Error(`server not listening after ${timeoutMs} ms:\n${s.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Stops a server with SIGTERM and measures how long it takes to exit. */
async function stopServer(s: Server): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
  const started = performance.now();
  s.child.kill('SIGTERM');
  const timeout = new Promise<null>((r) => setTimeout(() => r(null), 10_000).unref());
  const e = await Promise.race([s.exited, timeout]);
  if (!e) throw new Error(`server did not exit within 10 s of SIGTERM:\n${s.output()}`);
  return { ...e, ms: Math.round(performance.now() - started) };
}

afterAll(() => {
  for (const child of running) if (child.pid && child.exitCode === null) child.kill('SIGKILL');
});

describe('guichet CLI: usage and configuration', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'guichet-cli-usage-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('help and --help print the usage and exit 0; an unknown command exits 2; an invalid variable exits 2 naming it', async () => {
    const env = cliEnv({ GUICHET_DATA_DIR: dir });
    const [help, dashHelp, unknown, badPort] = await Promise.all([
      // What operators run: the launcher, compiling the sources through tsx.
      cli(['help'], env, 60_000, GUICHET_BIN),
      cli(['--help'], env),
      cli(['frobnicate'], env),
      cli(['migrate'], { ...env, PORT: 'abc' }),
    ]);
    for (const r of [help, dashHelp]) {
      expectExit(r, 0);
      expect(r.stdout).toMatch(/^Usage: guichet <command> \[options\]$/m);
      for (const command of ['serve', 'migrate', 'tenant create', 'import facilities', 'seed', 'admin bootstrap', 'audit verify']) {
        expect(r.stdout).toContain(command);
      }
    }
    expectExit(unknown, 2);
    expect(unknown.stderr).toMatch(/unknown command "frobnicate"/);
    expect(unknown.stdout).toBe('');
    expectExit(badPort, 2);
    expect(badPort.stderr).toMatch(/\bPORT\b/);
    expect(badPort.stderr).toMatch(/Invalid configuration/);
    // The configuration is checked before anything is opened.
    expect(existsSync(join(dir, 'pglite'))).toBe(false);
  });
});

// On its own data directory whatever the run: the PGlite run covers it, the PostgreSQL run has its own journey below.
describe.runIf(process.env.GUICHET_TEST_DB !== 'postgres')('guichet CLI on PGlite (one data directory, commands in order)', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  beforeAll(() => {
    // Migrated already: applying migrations is test/db/migrations.test.ts's and the PostgreSQL journey's below.
    dir = migratedDataDir('guichet-cli-pglite-');
    env = cliEnv({ GUICHET_DATA_DIR: dir });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('tenant create', async () => {
    const r = await cli(['tenant', 'create', '--slug', 'demo-a', '--name-fr', 'A', '--name-en', 'A'], env);
    expectExit(r, 0);
    expect(r.stdout).toMatch(/^tenant demo-a created \([0-9a-f-]{36}\)$/m);
    // The command released the data directory.
    expect(existsSync(join(dir, 'guichet.pid'))).toBe(false);
  }, 90_000);

  it('import facilities: 592 inserted, then updated on a second import', async () => {
    const first = await cli(['import', 'facilities', FACILITIES, '--tenant', 'demo-a'], env);
    expectExit(first, 0);
    expect(first.stdout).toContain('592 inserted, 0 updated, 0 skipped');
    const second = await cli(['import', 'facilities', FACILITIES, '--tenant', 'demo-a'], env);
    expectExit(second, 0);
    expect(second.stdout).toContain('0 inserted, 592 updated, 0 skipped');
  }, 90_000);

  it('import facilities: an unknown file format and an unknown tenant exit 2 with a message', async () => {
    const bad = join(dir, 'not-a-directory.csv');
    writeFileSync(bad, 'foo,bar,baz\n1,2,3\n');
    const badFile = await cli(['import', 'facilities', bad, '--tenant', 'demo-a'], env);
    expectExit(badFile, 2);
    expect(badFile.stderr).toMatch(/Unrecognised facility directory/);
    expect(badFile.stderr).toContain('"foo","bar","baz"');
    expect(badFile.stdout).not.toMatch(/inserted/);

    const noTenant = await cli(['import', 'facilities', FACILITIES, '--tenant', 'nope'], env);
    expectExit(noTenant, 2);
    expect(noTenant.stderr).toMatch(/--tenant: no tenant "nope"/);
  }, 90_000);

  it('seed --families 200 --seed 7 prints the counts; audit verify says ok', async () => {
    const seeded = await cli(['seed', '--families', '200', '--seed', '7', '--tenant', 'demo-a'], env);
    expectExit(seeded, 0);
    const m = /^200 families, (\d+) children, (\d+) applications in [\d.]+ s$/m.exec(seeded.stdout);
    expect(m, shown(seeded)).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThanOrEqual(200);
    expect(Number(m![2])).toBeGreaterThan(0);

    // The events the commands wrote are sealed first, then the tree, its signed heads and the witness file's copy verified.
    const verified = await cli(['audit', 'verify'], env);
    expectExit(verified, 0);
    expect(verified.stdout).toMatch(/^demo-a: \d+ waiting events sealed into a new signed head$/m);
    expect(verified.stdout).toMatch(/^demo-a: ok, (\d+) events, tree of \1 leaves, 1 signed heads, witness agrees \(1 heads, latest of size \1\)$/m);
  }, 90_000);

  it('admin bootstrap: once, one or two administrators, each with a set-password link; then "already"; a malformed e-mail exits 2', async () => {
    const [first, malformed, twice, three] = await Promise.all([
      cli(['admin', 'bootstrap', '--tenant', 'demo-a', '--email', 'chef@exemple.test', '--email', 'adjointe@exemple.test'], env),
      // Rejected before the data directory is opened, so they may run alongside.
      cli(['admin', 'bootstrap', '--tenant', 'demo-a', '--email', 'pas-une-adresse'], env),
      cli(['admin', 'bootstrap', '--tenant', 'demo-a', '--email', 'chef@exemple.test', '--email', 'CHEF@exemple.test'], env),
      cli(['admin', 'bootstrap', '--tenant', 'demo-a', '--email', 'a@exemple.test', '--email', 'b@exemple.test', '--email', 'c@exemple.test'], env),
    ]);
    expectExit(first, 0);
    expect(first.stdout).toContain('First administrator of demo-a: chef@exemple.test');
    expect(first.stdout).toContain('Second administrator of demo-a: adjointe@exemple.test');
    expect(first.stdout.match(/^http:\/\/localhost:3000\/set-password\?token=[A-Za-z0-9_-]{20,}$/gm)).toHaveLength(2);
    expectExit(malformed, 2);
    expect(malformed.stderr).toMatch(/--email/);
    for (const r of [twice, three]) {
      expectExit(r, 2);
      expect(r.stderr).toMatch(/one or two different addresses/);
    }

    const again = await cli(['admin', 'bootstrap', '--tenant', 'demo-a', '--email', 'chef@exemple.test'], env);
    expectExit(again, 1);
    expect(again.stderr).toMatch(/already has had an administrator/);
    expect(again.stdout).not.toMatch(/set-password/);

    const other = await cli(['admin', 'bootstrap', '--tenant', 'demo-a', '--email', 'autre@exemple.test'], env);
    expectExit(other, 1);
    expect(other.stderr).toMatch(/already has had an administrator/);
    expect(other.stdout).not.toMatch(/set-password/);
  }, 90_000);

  it('audit verify exits 1 and names the event changed behind the triggers', async () => {
    // The CLI has exited: this process may open the data directory itself.
    const database = await openDatabase({ dataDir: join(dir, 'pglite'), migrate: false });
    let seq: string;
    try {
      seq = await database.db.transaction().execute(async (trx) => {
        await sql`ALTER TABLE audit_events DISABLE TRIGGER USER`.execute(trx);
        const { rows } = await sql<{ tenant_id: string; seq: string }>`
          SELECT e.tenant_id, e.seq::text AS seq FROM audit_events e JOIN tenants t ON t.id = e.tenant_id
          WHERE t.slug = 'demo-a' ORDER BY e.seq OFFSET 1 LIMIT 1`.execute(trx);
        const target = rows[0]!;
        const changed = await sql`UPDATE audit_events SET action = 'directory.import.tampered'
          WHERE tenant_id = ${target.tenant_id} AND seq = ${target.seq}::bigint`.execute(trx);
        expect(Number(changed.numAffectedRows)).toBe(1);
        await sql`ALTER TABLE audit_events ENABLE TRIGGER USER`.execute(trx);
        return target.seq;
      });
    } finally {
      await database.close();
    }
    const r = await cli(['audit', 'verify'], env);
    expectExit(r, 1);
    expect(r.stdout).toMatch(new RegExp(`^demo-a: BROKEN at leaf 1 \\(event ${seq}, [0-9a-f-]{36}\\): the event does not match the leaf it was sealed as \\(changed\\)$`, 'm'));
  }, 90_000);

  it('while serve holds the data directory, migrate refuses; SIGTERM stops serve within 5 s and removes its pid file', async () => {
    const port = await freePort();
    const server = startServer({ ...env, PORT: String(port) });
    await listening(server);
    const pidFile = join(dir, 'guichet.pid');
    expect(readFileSync(pidFile, 'utf8')).toBe(String(server.child.pid));

    const migrate = await cli(['migrate'], env);
    expect(migrate.code, shown(migrate)).not.toBe(0);
    expect(migrate.stderr).toMatch(/GUICHET_DATA_DIR .* is in use by process \d+/);
    expect(migrate.stderr).toContain(String(server.child.pid));
    expect(migrate.stdout).not.toMatch(/migrations applied/);
    // The refused command left the server's pid file alone.
    expect(readFileSync(pidFile, 'utf8')).toBe(String(server.child.pid));

    const stopped = await stopServer(server);
    expect(stopped.signal, server.output()).toBeNull();
    expect(stopped.code, server.output()).toBe(0);
    expect(stopped.ms).toBeLessThan(5_000);
    expect(existsSync(pidFile)).toBe(false);

    // And the directory is free again.
    const after = await cli(['migrate'], env);
    expectExit(after, 0);
    expect(after.stdout).toContain('migrations applied');
  }, 90_000);

  it('a host serves one programme; with several programmes, a command names the one it acts on', async () => {
    const b = await cli(['tenant', 'create', '--slug', 'demo-b', '--name-fr', 'B', '--name-en', 'B', '--host', 'Guichet-B.Example.org'], env);
    expectExit(b, 0);
    const taken = await cli(['tenant', 'create', '--slug', 'demo-c', '--name-fr', 'C', '--name-en', 'C', '--host', 'guichet-b.example.org'], env);
    expectExit(taken, 2);
    expect(taken.stderr).toContain('--host: guichet-b.example.org already serves another tenant');
    const malformed = await cli(['tenant', 'create', '--slug', 'demo-c', '--name-fr', 'C', '--name-en', 'C', '--host', 'https://c.example.org/'], env);
    expectExit(malformed, 2);
    const unnamed = await cli(['seed', '--families', '1', '--seed', '1'], env);
    expectExit(unnamed, 2);
    expect(unnamed.stderr).toContain('--tenant: this database holds 2 programmes (demo-a, demo-b): name the one to act on');
  }, 90_000);
});

describe.runIf(process.env.GUICHET_TEST_DB === 'postgres')('guichet CLI on PostgreSQL', () => {
  let dir: string;
  let ownerUrl: string;
  let env: NodeJS.ProcessEnv;
  const slug = randomSlug('cli-');
  beforeAll(() => {
    const info = testDatabaseInfo();
    if (info.kind !== 'postgres') throw new Error('expected the PostgreSQL test database');
    ownerUrl = info.ownerUrl;
    dir = mkdtempSync(join(tmpdir(), 'guichet-cli-pg-'));
    // The test apps' secret: any listening test app on the shared database seals this file's tenants too (test/helpers/app.ts).
    env = cliEnv({ GUICHET_DATA_DIR: dir, DATABASE_OWNER_URL: info.ownerUrl, DATABASE_URL: info.appUrl, GUICHET_MASTER_KEY: Buffer.alloc(32, 7).toString('base64') });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('migrate, tenant create, import twice, bad file, unknown tenant', async () => {
    const migrate = await cli(['migrate'], env);
    expectExit(migrate, 0);
    expect(migrate.stdout).toContain('migrations applied');

    const created = await cli(['tenant', 'create', '--slug', slug, '--name-fr', 'A', '--name-en', 'A'], env);
    expectExit(created, 0);
    expect(created.stdout).toMatch(new RegExp(`^tenant ${slug} created \\([0-9a-f-]{36}\\)$`, 'm'));

    const first = await cli(['import', 'facilities', FACILITIES, '--tenant', slug], env);
    expectExit(first, 0);
    expect(first.stdout).toContain('592 inserted, 0 updated, 0 skipped');
    const second = await cli(['import', 'facilities', FACILITIES, '--tenant', slug], env);
    expectExit(second, 0);
    expect(second.stdout).toContain('0 inserted, 592 updated, 0 skipped');

    const bad = join(dir, 'not-a-directory.csv');
    writeFileSync(bad, 'foo,bar,baz\n1,2,3\n');
    const nope = randomSlug('nope-');
    const [badFile, noTenant] = await Promise.all([
      cli(['import', 'facilities', bad, '--tenant', slug], env),
      cli(['import', 'facilities', FACILITIES, '--tenant', nope], env),
    ]);
    expectExit(badFile, 2);
    expect(badFile.stderr).toMatch(/Unrecognised facility directory/);
    expectExit(noTenant, 2);
    expect(noTenant.stderr).toContain(`--tenant: no tenant "${nope}"`);
  }, 90_000);

  it('seed, audit verify, admin bootstrap (once)', async () => {
    const seeded = await cli(['seed', '--families', '200', '--seed', '7', '--tenant', slug], env);
    expectExit(seeded, 0);
    expect(seeded.stdout).toMatch(/^200 families, \d+ children, \d+ applications in [\d.]+ s$/m);

    // Other test files share this database (and tamper with their own tenants): verify ours only.
    const verified = await cli(['audit', 'verify', '--tenant', slug], env);
    expectExit(verified, 0);
    expect(verified.stdout).toMatch(new RegExp(`^${slug}: ok, (\\d+) events, tree of \\1 leaves, 1 signed heads, witness agrees \\(1 heads, latest of size \\1\\)$`, 'm'));

    const [boot, malformed] = await Promise.all([
      cli(['admin', 'bootstrap', '--tenant', slug, '--email', 'chef@exemple.test'], env),
      cli(['admin', 'bootstrap', '--tenant', slug, '--email', 'chef@'], env),
    ]);
    expectExit(boot, 0);
    expect(boot.stdout).toMatch(/\/set-password\?token=[A-Za-z0-9_-]{20,}$/m);
    expectExit(malformed, 2);
    expect(malformed.stderr).toMatch(/--email/);

    const again = await cli(['admin', 'bootstrap', '--tenant', slug, '--email', 'autre@exemple.test'], env);
    expectExit(again, 1);
    expect(again.stderr).toMatch(/already has had an administrator/);
  }, 90_000);

  it('audit verify exits 1 and names the event changed behind the triggers', async () => {
    const owner = new pg.Client({ connectionString: ownerUrl });
    await owner.connect();
    let seq: string;
    try {
      // ALTER TABLE takes an exclusive lock until commit: no other test sees the triggers off.
      await owner.query('BEGIN');
      await owner.query('ALTER TABLE audit_events DISABLE TRIGGER USER');
      const { rows } = await owner.query<{ tenant_id: string; seq: string }>(
        `SELECT e.tenant_id, e.seq::text AS seq FROM audit_events e JOIN tenants t ON t.id = e.tenant_id
         WHERE t.slug = $1 ORDER BY e.seq OFFSET 1 LIMIT 1`,
        [slug],
      );
      const target = rows[0]!;
      const changed = await owner.query(`UPDATE audit_events SET action = 'directory.import.tampered' WHERE tenant_id = $1 AND seq = $2::bigint`, [target.tenant_id, target.seq]);
      expect(changed.rowCount).toBe(1);
      await owner.query('ALTER TABLE audit_events ENABLE TRIGGER USER');
      await owner.query('COMMIT');
      seq = target.seq;
    } catch (err) {
      await owner.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      await owner.end();
    }
    const r = await cli(['audit', 'verify', '--tenant', slug], env);
    expectExit(r, 1);
    expect(r.stdout).toMatch(new RegExp(`^${slug}: BROKEN at leaf 1 \\(event ${seq}, [0-9a-f-]{36}\\): the event does not match the leaf it was sealed as \\(changed\\)$`, 'm'));
  }, 90_000);

  it('serve runs as the application role and stops on SIGTERM; it refuses the superuser as DATABASE_URL', async () => {
    const server = startServer({ ...env, PORT: String(await freePort()) });
    await listening(server);
    expect(server.output()).toMatch(/\(postgres, ready in/);
    const stopped = await stopServer(server);
    // Code and signal together: a process ended by a signal has no code, and the signal says which.
    expect({ code: stopped.code, signal: stopped.signal }, server.output()).toEqual({ code: 0, signal: null });
    expect(stopped.ms).toBeLessThan(5_000);

    const privileged = startServer({ ...env, PORT: String(await freePort()), DATABASE_URL: ownerUrl, DATABASE_OWNER_URL: ownerUrl });
    const timeout = new Promise<null>((r) => setTimeout(() => r(null), 30_000).unref());
    const e = await Promise.race([privileged.exited, timeout]);
    if (!e) {
      await stopServer(privileged);
      throw new Error(`serve with a superuser DATABASE_URL did not exit:\n${privileged.output()}`);
    }
    expect(e.code, privileged.output()).not.toBe(0);
    expect(privileged.output()).toMatch(/DATABASE_URL: the role "[^"]+" is a superuser/);
    expect(privileged.output()).not.toMatch(/Guichet is listening/);
  }, 90_000);
});
