/**
 * `guichet keys`, run for real as child processes, as an operator would: on
 * the embedded database with the file keyring (PGlite runs), and on
 * PostgreSQL with a keyring database of its own (PostgreSQL runs).
 * A rotation interrupted half-way (stopped in this process after two
 * batches) is resumed by the command, which says so; status shows the
 * progress; the master rotation writes a new version to the key file; a
 * missing or wrong key file is an error that names it; usage errors exit 2.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { progressBar } from '../../src/crypto/cli.ts';
import { envelopeFor } from '../../src/crypto/envelope.ts';
import { loadKeyProvider } from '../../src/crypto/keys.ts';
import { rotateTenantKey } from '../../src/crypto/rotation.ts';
import { guichetEntry, withMigratedDatabase } from '../helpers/cli.ts';
import { randomSlug, testDatabaseInfo } from '../helpers/db.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const VARS = ['PORT', 'HOST', 'GUICHET_DATA_DIR', 'DATABASE_URL', 'DATABASE_OWNER_URL', 'SMTP_URL', 'NODE_ENV', 'LOG_LEVEL', 'GUICHET_DEFAULT_TENANT', 'GUICHET_MASTER_KEY', 'GUICHET_KEY_FILE', 'GUICHET_KEYRING_URL'];

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

// A first run creates the data directory and migrates it: on two loaded cores that alone can take a minute.
function cli(args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [guichetEntry(), ...args], { cwd: ROOT, env, timeout: 180_000 }, (_err, stdout, stderr) => resolve({ code: child.exitCode, stdout: String(stdout), stderr: String(stderr) }));
  });
}

const shown = (r: Run) => `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;

let dir: string;
let env: NodeJS.ProcessEnv;
let keyringDb: string | null = null;
let dataDb: string | null = null;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'guichet-keys-cli-'));
  const base: NodeJS.ProcessEnv = { ...process.env };
  for (const k of VARS) delete base[k];
  env = { ...base, NODE_ENV: 'test', LOG_LEVEL: 'silent', GUICHET_DATA_DIR: dir };
  const info = testDatabaseInfo();
  if (info.kind === 'postgres') {
    // A data database of its own too: rotating the master key writes an audit event into every tenant of the
    // database, and the other files' tenants on the shared test database must not get one in the middle of their counts.
    const stamp = `${Date.now()}_${process.pid}_${randomBytes(2).toString('hex')}`;
    keyringDb = `guichet_test_${stamp}_kc`;
    dataDb = `guichet_test_${stamp}_kd`;
    const admin = new pg.Client({ connectionString: info.adminUrl });
    await admin.connect();
    await admin.query(`CREATE DATABASE "${keyringDb}"`);
    await admin.query(`CREATE DATABASE "${dataDb}"`);
    await admin.end();
    const on = (url: string, database: string) => {
      const u = new URL(url);
      u.pathname = `/${database}`;
      return u.toString();
    };
    env = { ...env, DATABASE_OWNER_URL: on(info.ownerUrl, dataDb), DATABASE_URL: on(info.appUrl, dataDb), GUICHET_KEYRING_URL: on(info.adminUrl, keyringDb) };
  } else {
    withMigratedDatabase(dir);
  }
});

afterAll(async () => {
  rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
  if (keyringDb) {
    const admin = new pg.Client({ connectionString: testDatabaseInfo().kind === 'postgres' ? (testDatabaseInfo() as { adminUrl: string }).adminUrl : '' });
    await admin.connect();
    for (const d of [keyringDb, dataDb]) if (d) await admin.query(`DROP DATABASE IF EXISTS "${d}" WITH (FORCE)`);
    await admin.end();
  }
});

describe('guichet keys', () => {
  it('rotates a tenant key, resuming a rotation interrupted half-way; rotates the master key; status and purge report; bad key files and usage are named', async () => {
    const slug = randomSlug('k-');
    const created = await cli(['tenant', 'create', '--slug', slug, '--name-fr', 'Clés', '--name-en', 'Keys'], env);
    expect(created.code, shown(created)).toBe(0);
    const tenantId = /\(([0-9a-f-]{36})\)/.exec(created.stdout)![1]!;
    expect((await cli(['import', 'facilities', 'seed-data/facilities-monteregie-2022-11.csv', '--tenant', slug], env)).code).toBe(0);
    const seeded = await cli(['seed', '--families', '120', '--seed', '11', '--tenant', slug], env);
    expect(seeded.code, shown(seeded)).toBe(0);

    // A rotation stopped after two batches (the process was killed, say).
    const keys = loadKeyProvider(env, dir);
    await expect(rotateTenantKey(envelopeFor(keys), tenantId, { batchSize: 25, afterBatch: (n) => { if (n === 2) throw new Error('killed'); } })).rejects.toThrow('killed');
    await keys.close();
    const status = await cli(['keys', 'status', '--tenant', slug], env);
    expect(status.code, shown(status)).toBe(0);
    expect(status.stdout).toMatch(/^keyring: (file:.*keyring\.jsonl|postgres:\/\/.*)$/m);
    expect(status.stdout).toContain(`${slug}: tenant key versions 1, 2, 120 family keys; rotation to version 2 in progress: 50/120 (run: guichet keys rotate --tenant ${slug})`);

    const resumed = await cli(['keys', 'rotate', '--tenant', slug, '--batch', '40'], env);
    expect(resumed.code, shown(resumed)).toBe(0);
    expect(resumed.stdout).toContain(`${slug}: resuming the rotation to tenant key version 2 (50 family keys already re-wrapped)`);
    expect(resumed.stdout).toContain(`${slug}: tenant key version 2 wraps 120 family keys (70 re-wrapped now); version 1 destroyed`);
    // Not a terminal: a progress line every tenth of the way.
    expect(resumed.stderr).toMatch(new RegExp(`${slug} family keys: 100% \\(120/120\\)`));

    const master = await cli(['keys', 'rotate', '--master'], env);
    expect(master.code, shown(master)).toBe(0);
    expect(master.stdout).toMatch(/master key version 2 wraps \d+ tenant keys? \(\d+ re-wrapped now\)/);
    if (testDatabaseInfo().kind === 'pglite') expect(readFileSync(join(dir, 'keys', 'master.key'), 'utf8')).toMatch(/^2:[A-Za-z0-9+/=]{44}$/m);

    const purge = await cli(['keys', 'purge', '--tenant', slug], env);
    expect(purge.code, shown(purge)).toBe(0);
    expect(purge.stdout).toContain(`${slug}: 0 files purged (retention 30 days), 0 families destroyed, 0 re-keyed, 0 keys destroyed`);

    // A wrong key file: named, nothing touched.
    const wrong = join(dir, 'wrong.key');
    writeFileSync(wrong, randomBytes(32).toString('base64'), { mode: 0o600 });
    const r1 = await cli(['keys', 'rotate', '--tenant', slug], { ...env, GUICHET_KEY_FILE: wrong });
    expect(r1.code, shown(r1)).toBe(2);
    expect(r1.stderr).toMatch(/^guichet: the master key \(file:.*wrong\.key, version \d\) is not the one the keyring .* was written with: wrong key file or GUICHET_MASTER_KEY$/m);
    // A missing key file beside a keyring that needs it: named, and not silently re-created.
    if (testDatabaseInfo().kind === 'pglite') {
      const file = join(dir, 'keys', 'master.key');
      renameSync(file, `${file}.away`);
      try {
        const r2 = await cli(['keys', 'status'], env);
        expect(r2.code, shown(r2)).toBe(2);
        expect(r2.stderr).toMatch(/guichet: key file .*master\.key is missing, but the keyring .* holds keys wrapped by it: restore the key file/);
      } finally {
        renameSync(`${file}.away`, file);
      }
    }
    const r3 = await cli(['keys', 'rotate'], env);
    expect(r3.code).toBe(2);
    expect(r3.stderr).toContain('keys rotate: name either --tenant T or --master');

    // Nothing was lost: a full rotation unwraps and re-wraps every family key.
    const again = await cli(['keys', 'rotate', '--tenant', slug], env);
    expect(again.stdout, shown(again)).toContain(`${slug}: tenant key version 3 wraps 120 family keys (120 re-wrapped now); version 2 destroyed`);
    // (About nine commands of a few seconds each: under a minute on a quiet two-core machine; room for a busy one.)
  }, 600_000);
});

describe('the progress bar', () => {
  it('draws in place on a terminal, and writes a line a tenth of the way elsewhere', () => {
    const tty: string[] = [];
    const bar = progressBar({ isTTY: true, write: (s: string) => tty.push(s) } as unknown as NodeJS.WriteStream, 'quebec family keys');
    bar.update(0, 200, true);
    bar.update(100, 200, true);
    bar.update(200, 200, true);
    bar.end();
    expect(tty[1]).toBe('\rquebec family keys [###############---------------]  50% 100/200');
    expect(tty.at(-2)).toBe('\rquebec family keys [##############################] 100% 200/200');
    expect(tty.at(-1)).toBe('\n');
    const plain: string[] = [];
    const p = progressBar({ isTTY: false, write: (s: string) => plain.push(s) } as unknown as NodeJS.WriteStream, 'k');
    for (let i = 0; i <= 100; i++) p.update(i, 100);
    expect(plain).toHaveLength(11);
    expect(plain.at(-1)).toBe('k: 100% (100/100)\n');
  });
});
