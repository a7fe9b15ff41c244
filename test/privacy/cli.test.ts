/**
 * `guichet breach-report` and `guichet retention run` as real child processes
 * on the run's database (a PGlite data directory of their own, or the
 * PostgreSQL test database): the wiring of src/cli/main.ts — configuration,
 * database, tenant, keys from the environment — as an operator runs them.
 * An account reads files through the gateway between commands; the report
 * names exactly them; bad input exits 2 with a message and writes nothing.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import type { Deps } from '../../src/context.ts';
import { loadKeyProvider } from '../../src/crypto/keys.ts';
import { openDatabase, type Database } from '../../src/db/connection.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { createDemoAccount } from '../../src/identity/service.ts';
import * as records from '../../src/records/gateway.ts';
import { loadConfig } from '../../src/config/config.ts';
import { createTenant, TenantDirectory, type Tenant } from '../../src/tenants/service.ts';
import { guichetEntry, withMigratedDatabase } from '../helpers/cli.ts';
import { randomSlug, testDatabaseInfo } from '../helpers/db.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MASTER = randomBytes(32);
const kind = testDatabaseInfo().kind;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [guichetEntry(), ...args], { cwd: ROOT, env, timeout: 90_000 }, (_err, stdout, stderr) => resolve({ code: child.exitCode, stdout: String(stdout), stderr: String(stderr) }));
  });
}
const shown = (r: Run) => `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;

let dir: string;
let env: NodeJS.ProcessEnv;
let open: () => Promise<{ app: Database; owner: Database['db']; close: () => Promise<void> }>;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'guichet-privacy-cli-'));
  const base: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(base)) if (/^(GUICHET_|DATABASE_|PORT|HOST|SMTP_URL|PUBLIC_URL)/.test(k)) delete base[k];
  env = { ...base, NODE_ENV: 'test', LOG_LEVEL: 'silent', GUICHET_DATA_DIR: dir, GUICHET_MASTER_KEY: MASTER.toString('base64') };
  const info = testDatabaseInfo();
  if (info.kind === 'postgres') {
    env = { ...env, DATABASE_URL: info.appUrl, DATABASE_OWNER_URL: info.ownerUrl };
    open = async () => {
      const app = await openDatabase({ databaseUrl: info.appUrl, migrate: false });
      const owner = await openDatabase({ databaseUrl: info.ownerUrl, migrate: false, allowPrivilegedRole: true });
      return { app, owner: owner.db, close: async () => (await app.close(), await owner.close()) };
    };
  } else {
    withMigratedDatabase(dir);
    open = async () => {
      const d = await openDatabase({ dataDir: join(dir, 'pglite'), migrate: false });
      return { app: d, owner: d.db, close: () => d.close() };
    };
  }
}, 120_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe(`guichet breach-report and retention run (${kind})`, () => {
  it('the report names exactly the files read; bad input exits 2 with a message; retention runs once', async () => {
    const slug = randomSlug('privacy-cli-');
    const d = await open();
    // The same key file and keyring as the commands (one process at a time holds the file keyring).
    const keys = loadKeyProvider(env, dir);
    let tenant: Tenant;
    const childIds: string[] = [];
    let readerEmail = '';
    const at = new Date(Date.now() - 3600_000);
    try {
      await createTenant(d.owner, { slug, nameFr: 'Programme CLI', nameEn: 'CLI programme', hosts: [] }, { actorAccountId: null, actorRoles: ['system:test'], ip: null, userAgent: null, requestId: null }, new Date());
      const config = { ...loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent' }), dataDir: dir };
      const deps: Deps = { db: d.app, config, clock: () => at, log: pino({ level: 'silent' }), tenants: new TenantDirectory(d.app.db, config.defaultTenant, 0), keys };
      tenant = (await deps.tenants.bySlug(slug))!;
      const parentEmail = `parent.${slug}@exemple.test`;
      const parentId = await inTenant(d.app.db, tenant.id, (trx) => createDemoAccount(trx, tenant.id, parentEmail, 'correct horse battery staple', at));
      const parent: Actor = { accountId: parentId, tenantId: tenant.id, sessionId: null, email: parentEmail, emailVerified: true, locale: 'fr', memberships: [] };
      const ctx = { tenant, actor: parent, ip: '198.51.100.9', userAgent: 'vitest', requestId: null, locale: 'fr' as const, now: at, baseUrl: '' };
      for (const firstName of ['Olivia', 'Théo']) {
        const { id } = await records.createChildFile(deps, ctx, { firstName, lastName: 'Roy', birthDate: '2025-09-01', nirec: null, desiredEntryDate: '2026-12-01', daysOfCare: 31, inSubsidisedCare: false });
        childIds.push(id);
      }
      // The "intruder" here is the parent's own session from an address: one file read.
      await records.readChildFile(deps, { ...ctx, ip: '203.0.113.5' }, childIds[0]!, 'parent.childFile.view');
      readerEmail = parentEmail;
    } finally {
      await keys.close();
      await d.close();
    }
    const from = new Date(at.getTime() - 60_000).toISOString();
    const to = new Date(at.getTime() + 60_000).toISOString();

    const byIp = await cli(['breach-report', '--tenant', slug, '--ip', '203.0.113.5', '--from', from, '--to', to], env);
    expect(byIp.code, shown(byIp)).toBe(0);
    const report = JSON.parse(byIp.stdout);
    expect(report.persons.flatMap((p: { files: { childId: string }[] }) => p.files.map((f) => f.childId))).toEqual([childIds[0]]);
    expect(report.notices[0].to).toBe(readerEmail);
    expect(report.notices[0].body).toContain('Dossier de Olivia');

    const csv = await cli(['breach-report', '--tenant', slug, '--actor', readerEmail, '--from', from, '--to', to, '--format', 'csv'], env);
    expect(csv.code, shown(csv)).toBe(0);
    // Two creations and one read by that account.
    expect(csv.stdout.trim().split('\r\n')).toHaveLength(1 + 3);

    const reversed = await cli(['breach-report', '--tenant', slug, '--actor', readerEmail, '--from', to, '--to', from], env);
    expect(reversed.code, shown(reversed)).toBe(2);
    expect(reversed.stdout).toBe('');
    expect(reversed.stderr).toMatch(/guichet: the window is empty: --from .* must be before --to/);
    const unknown = await cli(['breach-report', '--tenant', slug, '--actor', 'personne@exemple.test', '--from', from, '--to', to], env);
    expect(unknown.code, shown(unknown)).toBe(2);
    expect(unknown.stderr).toMatch(/no account "personne@exemple.test"/);
    const noTenant = await cli(['breach-report', '--actor', readerEmail, '--from', from, '--to', to], env);
    expect(noTenant.code, shown(noTenant)).toBe(2);
    expect(noTenant.stderr).toMatch(/--tenant is required/);

    const retention = await cli(['retention', 'run', '--tenant', slug], env);
    expect(retention.code, shown(retention)).toBe(0);
    expect(retention.stdout).toBe(`${slug}: 0 files deleted by the retention rules, 0 purged (0 families, 0 re-keyed, 0 keys destroyed), 0 accounts without a file closed, 0 sent messages emptied\n`);
    const help = await cli(['help'], env);
    expect(help.stdout).toContain('breach-report --tenant T (--actor ACCOUNT | --session ID | --ip ADDR)');
    expect(help.stdout).toContain('retention run [--tenant T]');
    // Seven processes, each opening the database (PGlite: ~6 s apiece on a loaded two-core machine).
  }, 300_000);
});
