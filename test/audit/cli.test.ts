/**
 * `guichet audit …` run for real, as child processes, on the run's database
 * (a PGlite data directory of its own, or the PostgreSQL test database):
 * verify seals and checks, key prints the key to pin, export writes a bundle
 * that check accepts without any database, and check refuses bad bundles with
 * a message and exit 1. Then the events truncated, and the whole tree with
 * them: verify names leaf 0, and the witness file still holds the heads.
 */
import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql, type Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendAudit } from '../../src/audit/log.ts';
import { TenantSigner } from '../../src/audit/signing.ts';
import { keyProviderFromSecret } from '../../src/crypto/keys.ts';
import { openDatabase } from '../../src/db/connection.ts';
import type { DB } from '../../src/db/schema.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { createTenant } from '../../src/tenants/service.ts';
import { guichetEntry, withMigratedDatabase } from '../helpers/cli.ts';
import { randomSlug, testDatabaseInfo } from '../helpers/db.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
// The test apps' secret (test/helpers/app.ts): on the PostgreSQL run every test file shares one database,
// and the sealer of any listening test app seals every tenant it sees — this file's too — with that key.
const MASTER = Buffer.alloc(32, 7);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [guichetEntry(), 'audit', ...args], { cwd: ROOT, env, timeout: 60_000 }, (_err, stdout, stderr) =>
      resolve({ code: child.exitCode, stdout: String(stdout), stderr: String(stderr) }),
    );
  });
}

const shown = (r: Run) => `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;

let dir: string;
let env: NodeJS.ProcessEnv;
let slug: string;
let tenantId: string;
/** Opens the database the CLI uses, for setting up and tampering between commands (PGlite: only while no command runs). */
let open: () => Promise<{ db: Kysely<DB>; owner: Kysely<DB>; close: () => Promise<void> }>;
const kind = testDatabaseInfo().kind;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'guichet-audit-cli-'));
  const base: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(base)) if (/^(GUICHET_|DATABASE_|PORT|HOST|SMTP_URL|PUBLIC_URL)/.test(k)) delete base[k];
  env = { ...base, NODE_ENV: 'test', LOG_LEVEL: 'silent', GUICHET_DATA_DIR: dir, GUICHET_MASTER_KEY: MASTER.toString('base64') };
  const info = testDatabaseInfo();
  if (info.kind === 'postgres') {
    env = { ...env, DATABASE_URL: info.appUrl, DATABASE_OWNER_URL: info.ownerUrl };
    open = async () => {
      const app = await openDatabase({ databaseUrl: info.appUrl, migrate: false });
      const owner = await openDatabase({ databaseUrl: info.ownerUrl, migrate: false, allowPrivilegedRole: true });
      return { db: app.db, owner: owner.db, close: async () => (await app.close(), await owner.close()) };
    };
  } else {
    // A migrated copy of the run's template, as the CLI's data directory.
    withMigratedDatabase(dir);
    open = async () => {
      const d = await openDatabase({ dataDir: join(dir, 'pglite'), migrate: false });
      return { db: d.db, owner: d.db, close: () => d.close() };
    };
  }
  slug = randomSlug('audit-cli-');
  const d = await open();
  try {
    const t = await createTenant(d.owner, { slug, nameFr: 'Audit', nameEn: 'Audit', hosts: [] }, { actorAccountId: null, actorRoles: ['system:test'], ip: null, userAgent: null, requestId: null }, new Date());
    tenantId = t.id;
    for (let i = 0; i < 12; i++) {
      await inTenant(d.db, tenantId, (trx) => appendAudit(trx, tenantId, { action: 'waitlist.childFile.read', outcome: 'success', actorAccountId: randomUUID(), purpose: `n${i}`, details: { i } }, new Date(Date.UTC(2025, 5, 1 + i))));
    }
  } finally {
    await d.close();
  }
}, 60_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe(`guichet audit (${kind})`, () => {
  it('verify seals the waiting events and checks the tree; key prints the key to pin; export writes a bundle check accepts', async () => {
    const verified = await cli(['verify', '--tenant', slug], env);
    expect(verified.code, shown(verified)).toBe(0);
    expect(verified.stdout).toContain(`${slug}: 13 waiting events sealed into a new signed head`);
    expect(verified.stdout).toMatch(new RegExp(`^${slug}: ok, 13 events, tree of 13 leaves, 1 signed heads, witness agrees \\(1 heads, latest of size 13\\)$`, 'm'));

    const key = await cli(['key', '--tenant', slug], env);
    const expected = new TenantSigner(keyProviderFromSecret(MASTER), tenantId).verifierKeyText;
    expect(key.stdout).toBe(`${slug}: ${expected}\n`);

    const out = join(dir, 'bundle.json');
    const exported = await cli(['export', '--tenant', slug, '--from', '2025-06-03', '--to', '2025-06-06T00:00:00Z', '--out', out], env);
    expect(exported.code, shown(exported)).toBe(0);
    expect(exported.stdout).toMatch(/bundle\.json: 3 events, 1 signed heads \(latest: size 13, /);
    expect(statSync(out).mode & 0o077).toBe(0);
    const bundle = JSON.parse(readFileSync(out, 'utf8'));
    expect(bundle.events.map((e: { event: { purpose: string } }) => e.event.purpose)).toEqual(['n2', 'n3', 'n4']);
    writeFileSync(join(dir, 'key.txt'), `${expected}\n`);

    // The bundle and the verifier alone: no database, no data directory, no key.
    const bare = { PATH: process.env.PATH, HOME: process.env.HOME, GUICHET_DATA_DIR: join(dir, 'nowhere') };
    const [pinned, unpinned] = await Promise.all([cli(['check', out, '--key', `@${join(dir, 'key.txt')}`], bare), cli(['check', out], bare)]);
    for (const r of [pinned, unpinned]) {
      expect(r.code, shown(r)).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^.*bundle\\.json: ok: 3 events of ${tenantId} from 2025-06-03T00:00:00\\.000Z to 2025-06-06T00:00:00\\.000Z, each included in the head of size 13`, 'm'));
    }
    expect(unpinned.stdout).toMatch(/checked against the key inside the bundle/);
    expect(pinned.stdout).not.toMatch(/inside the bundle/);
  }, 90_000);

  it('check refuses a changed event, an unknown key, garbage and a missing file, with a message', async () => {
    const out = join(dir, 'bundle.json');
    const good = readFileSync(out, 'utf8');
    const b = JSON.parse(good);
    const changed = join(dir, 'changed.json');
    // the purpose's text in the entry's bytes, after its length (2)
    const bytes = Buffer.from(b.events[1].entry, 'base64');
    const at = bytes.indexOf(Buffer.from('\u0000\u0000\u0000\u0002n3'));
    expect(at).toBeGreaterThan(0);
    bytes.write('n9', at + 4);
    b.events[1].entry = bytes.toString('base64');
    b.events[1].event.purpose = 'n9';
    writeFileSync(changed, JSON.stringify(b));
    const garbage = join(dir, 'garbage.json');
    writeFileSync(garbage, '{"format": "guichet-audit-bundle/v1", "tenant": ');
    const other = new TenantSigner(keyProviderFromSecret(randomBytes(32)), tenantId).verifierKeyText;
    const bare = { PATH: process.env.PATH, HOME: process.env.HOME };
    // (bundle.test.ts refuses every other kind of bad bundle; here, what an auditor sees of it.)
    const [r1, r3, r4, r5] = await Promise.all([
      cli(['check', changed], bare),
      cli(['check', out, '--key', other], bare),
      cli(['check', garbage], bare),
      cli(['check', join(dir, 'absent.json')], bare),
    ]);
    for (const r of [r1, r3, r4]) {
      expect(r.code, shown(r)).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
    }
    expect(r1.stderr).toMatch(/changed\.json: rejected: events\[1\] \(leaf \d+\): the inclusion proof does not lead to the latest head's root \(the event was changed, or the proof is for another tree\)/);
    expect(r3.stderr).toMatch(/rejected: heads\[0\]: checkpoint: not signed by the trusted key .* signed by an unknown key/);
    expect(r4.stderr).toMatch(/garbage\.json: rejected: not a bundle: the file is not JSON/);
    expect(r5.code, shown(r5)).toBe(2);
    expect(r5.stderr).toMatch(/absent\.json: cannot read it \(ENOENT\)/);
  }, 90_000);

  it('usage errors exit 2 naming the option', async () => {
    const [badDate, noSub] = await Promise.all([
      cli(['export', '--tenant', slug, '--from', 'yesterday', '--to', '2025-02-01', '--out', join(dir, 'x.json')], env),
      cli(['check'], env),
    ]);
    expect(badDate.code, shown(badDate)).toBe(2);
    expect(badDate.stderr).toMatch(/--from: "yesterday" is not an ISO 8601 date/);
    expect(noSub.code, shown(noSub)).toBe(2);
    expect(noSub.stderr).toMatch(/usage: guichet audit check BUNDLE/);
  }, 60_000);

  it('the events truncated: verify names leaf 0; the tree truncated too: the witness file still holds the heads', async () => {
    const d = await open();
    try {
      await d.owner.transaction().execute(async (trx) => {
        for (const x of ['audit_events', 'audit_leaves', 'audit_tree_nodes', 'audit_tree_heads']) await sql`ALTER TABLE ${sql.table(x)} DISABLE TRIGGER USER`.execute(trx);
        // On PGlite the database is this test's own: TRUNCATE itself. On PostgreSQL other files share it: this tenant's rows.
        if (kind === 'pglite') await sql`TRUNCATE audit_events`.execute(trx);
        else await sql`DELETE FROM audit_events WHERE tenant_id = ${tenantId}`.execute(trx);
        for (const x of ['audit_events', 'audit_leaves', 'audit_tree_nodes', 'audit_tree_heads']) await sql`ALTER TABLE ${sql.table(x)} ENABLE TRIGGER USER`.execute(trx);
      });
    } finally {
      await d.close();
    }
    const r = await cli(['verify', '--tenant', slug, '--no-seal'], env);
    expect(r.code, shown(r)).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`^${slug}: BROKEN at leaf 0 \\(event [0-9a-f-]{36}\\): event [0-9a-f-]{36} is missing from audit_events \\(removed\\)$`, 'm'));

    const d2 = await open();
    try {
      await d2.owner.transaction().execute(async (trx) => {
        for (const x of ['audit_leaves', 'audit_tree_nodes', 'audit_tree_heads']) {
          await sql`ALTER TABLE ${sql.table(x)} DISABLE TRIGGER USER`.execute(trx);
          await sql`DELETE FROM ${sql.table(x)} WHERE tenant_id = ${tenantId}`.execute(trx);
          await sql`ALTER TABLE ${sql.table(x)} ENABLE TRIGGER USER`.execute(trx);
        }
      });
    } finally {
      await d2.close();
    }
    const w = await cli(['verify', '--tenant', slug, '--no-seal'], env);
    expect(w.code, shown(w)).toBe(1);
    expect(w.stdout).toMatch(new RegExp(`^${slug}: BROKEN at leaf 0: the witness holds a head of size 13 but the database's tree has only 0 leaves: leaves 0\\.\\.12 were removed$`, 'm'));
  }, 90_000);
});
