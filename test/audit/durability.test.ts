/**
 * Durability: `guichet serve` is killed with SIGKILL while it takes sign-ups
 * (HTTP, through the real routes) and, on PostgreSQL, while this process
 * appends events of the same tenant directly; then restarted. After each
 * restart, every event whose transaction committed (every acknowledged
 * sign-up, every acknowledged append, and whatever else committed) is in the
 * tree within a few seconds, nothing waits for the sealer, and the whole log
 * verifies: leaves, subtree hashes, signed heads and the witness file's copy.
 *
 * PostgreSQL: ten kills, two instances sealing side by side, the replacement
 * of each killed one started while the next round runs. PGlite (one process
 * at a time may open the embedded database, and it starts more slowly): two
 * kills and restarts, the tree checked with the server stopped.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql, type Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendAuditAlone } from '../../src/audit/log.ts';
import { TenantSigner } from '../../src/audit/signing.ts';
import { verifyTenant } from '../../src/audit/verify.ts';
import { readWitnessFile, witnessRecordsFor } from '../../src/audit/witness.ts';
import { keyProviderFromSecret } from '../../src/crypto/keys.ts';
import { openDatabase } from '../../src/db/connection.ts';
import type { DB } from '../../src/db/schema.ts';
import { createTenant } from '../../src/tenants/service.ts';
import { guichetEntry } from '../helpers/cli.ts';
import { createTestDatabase, randomSlug, testDatabaseInfo, testDbKind, type TestDatabase } from '../helpers/db.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
// The test apps' secret (test/helpers/app.ts): on the PostgreSQL run every test file shares one database,
// and the sealer of any listening test app seals every tenant it sees — this file's too — with that key.
const MASTER = Buffer.alloc(32, 7);
const keys = keyProviderFromSecret(MASTER);

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

const children = new Set<ChildProcess>();
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

interface Served {
  child: ChildProcess;
  output: () => string;
  exited: Promise<unknown>;
}

async function serve(env: NodeJS.ProcessEnv): Promise<Served> {
  const child = spawn(process.execPath, [guichetEntry(), 'serve'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString('utf8')));
  child.stderr!.on('data', (b: Buffer) => (out += b.toString('utf8')));
  const exited = new Promise((r) => child.once('exit', () => (children.delete(child), r(null))));
  const deadline = Date.now() + 45_000;
  while (!/Guichet is listening/.test(out)) {
    if (child.exitCode !== null) throw new Error(`serve exited before listening:\n${out}`);
    if (Date.now() > deadline) throw new Error(`serve not listening:\n${out}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return { child, output: () => out, exited };
}

/** One sign-up through the real form, as a browser would: the page (CSRF cookie and token), then the form. */
async function signUp(port: number, agent: Agent, email: string): Promise<boolean> {
  const ip = `198.51.100.${1 + Math.floor(Math.random() * 250)}`;
  const call = (method: string, path: string, headers: Record<string, string>, body?: string) =>
    new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, method, path, agent, headers: { 'x-forwarded-for': ip, ...headers } }, (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (data += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: data }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(body);
    });
  const page = await call('GET', '/signup', {});
  const cookie = ([] as string[]).concat(page.headers['set-cookie'] ?? []).map((c) => c.split(';')[0]).join('; ');
  const token = /name="_csrf" value="([^"]+)"/.exec(page.body)?.[1];
  if (!token) throw new Error(`no CSRF token on /signup (${page.status})`);
  const form = new URLSearchParams({ _csrf: token, email, password: 'correct horse battery staple', passwordConfirm: 'correct horse battery staple' }).toString();
  const r = await call('POST', '/signup', { cookie, 'content-type': 'application/x-www-form-urlencoded' }, form);
  return r.status === 200;
}

interface Writes {
  signedUp: string[];
  appended: string[];
}

/**
 * Writes until `stop` resolves: sign-ups over HTTP (several at a time) and,
 * when `direct` is given, appends from this process. Only acknowledged writes
 * are recorded; those cut off by the kill may or may not have committed.
 */
async function drive(port: number, stop: Promise<void>, direct: { db: Kysely<DB>; tenantId: string } | null, w: Writes = { signedUp: [], appended: [] }, onSignedUp?: () => void): Promise<Writes> {
  let stopped = false;
  void stop.then(() => (stopped = true));
  const agent = new Agent({ keepAlive: true, maxSockets: 8 });
  const http = Array.from({ length: 4 }, async () => {
    while (!stopped) {
      const email = `p-${randomUUID().slice(0, 12)}@exemple.test`;
      try {
        if (await signUp(port, agent, email)) {
          w.signedUp.push(email);
          onSignedUp?.();
        }
      } catch {
        return; // the server is gone
      }
    }
  });
  const appenders = direct
    ? Array.from({ length: 4 }, async () => {
        while (!stopped) {
          const id = randomUUID();
          await appendAuditAlone(direct.db, direct.tenantId, { action: 'waitlist.childFile.read', outcome: 'success', actorAccountId: randomUUID(), purpose: 'durability', details: { id } }, new Date());
          w.appended.push(id);
        }
      })
    : [];
  await Promise.all([...http, ...appenders]);
  agent.destroy();
  return w;
}

/** Every acknowledged write is a leaf, nothing waits for the sealer, and the log verifies with the key and the witness. */
async function check(db: Kysely<DB>, owner: Kysely<DB>, tenantId: string, witnessFile: string, acked: Writes, waitMs: number) {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const { rows } = await sql<{ events: string; leaves: string; signups: string; appended: string }>`SELECT
        (SELECT count(*) FROM audit_events WHERE tenant_id = ${tenantId})::text AS events,
        (SELECT count(*) FROM audit_leaves WHERE tenant_id = ${tenantId})::text AS leaves,
        (SELECT count(*) FROM accounts a JOIN audit_events e ON e.tenant_id = a.tenant_id AND e.action = 'identity.signup' AND a.id::text = ANY(e.target_ids)
           JOIN audit_leaves l ON l.event_id = e.id
         WHERE a.tenant_id = ${tenantId} AND a.email = ANY(${acked.signedUp}::text[]))::text AS signups,
        (SELECT count(*) FROM audit_events e JOIN audit_leaves l ON l.event_id = e.id
         WHERE e.tenant_id = ${tenantId} AND e.details->>'id' = ANY(${acked.appended}::text[]))::text AS appended`.execute(owner);
    const r = rows[0]!;
    const done = r.events === r.leaves && Number(r.signups) === acked.signedUp.length && Number(r.appended) === acked.appended.length;
    if (done) break;
    if (Date.now() > deadline) {
      throw new Error(`after ${waitMs} ms: ${r.events} events, ${r.leaves} leaves; ${r.signups}/${acked.signedUp.length} acknowledged sign-ups and ${r.appended}/${acked.appended.length} acknowledged appends in the tree`);
    }
    await new Promise((res) => setTimeout(res, 100));
  }
  const records = witnessRecordsFor(await readWitnessFile(witnessFile), tenantId);
  const report = await verifyTenant(db, tenantId, { key: new TenantSigner(keys, tenantId).verifier, witness: records });
  expect(report.firstBad, JSON.stringify(report.firstBad)).toBeUndefined();
  expect(report).toMatchObject({ ok: true, pending: 0 });
  return report;
}

function baseEnv(dir: string, slug: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (/^(GUICHET_|DATABASE_|SMTP_URL|PUBLIC_URL|PORT$|HOST$)/.test(k)) delete env[k];
  return { ...env, NODE_ENV: 'test', LOG_LEVEL: 'error', TRUST_PROXY: '1', GUICHET_DATA_DIR: dir, GUICHET_MASTER_KEY: MASTER.toString('base64'), GUICHET_DEFAULT_TENANT: slug, GUICHET_SEALER_TENANTS: slug };
}

const origin = { actorAccountId: null, actorRoles: ['system:test'], ip: null, userAgent: null, requestId: null };

describe.runIf(testDbKind() === 'postgres')('kill -9 during concurrent writes, ten times (PostgreSQL, two instances)', () => {
  let t: TestDatabase;
  let dir: string;
  beforeAll(async () => {
    t = await createTestDatabase();
    dir = mkdtempSync(join(tmpdir(), 'guichet-durability-pg-'));
  });
  afterAll(async () => {
    await t?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('every committed event is in the tree after each restart, and the log verifies', async () => {
    const info = testDatabaseInfo();
    if (info.kind !== 'postgres') throw new Error('expected PostgreSQL');
    const slug = randomSlug('dur-');
    const tenant = await createTenant(t.ownerDb(), { slug, nameFr: 'Durabilité', nameEn: 'Durability', hosts: [] }, origin, new Date());
    const env = { ...baseEnv(dir, slug), DATABASE_URL: info.appUrl, DATABASE_OWNER_URL: info.ownerUrl };
    const start = async () => {
      const port = await freePort();
      return { port, server: await serve({ ...env, PORT: String(port) }) };
    };
    const witnessFile = join(dir, 'audit-witness.jsonl');
    const acked: Writes = { signedUp: [], appended: [] };
    // Two instances, as in production behind a load balancer: both seal (one tenant at a time, under the
    // advisory lock). The one taking the writes is killed; the other carries on, and a new one is started
    // while the next round runs, so that restarts overlap the work instead of adding to the test's time.
    let active = await start();
    let standby = start();
    for (let round = 1; round <= 10; round++) {
      const victim = active;
      const killAfter = 300 + Math.floor(Math.random() * 900);
      // The clock starts at the round's first acknowledged sign-up: a freshly started server's first answers are
      // slow on a loaded machine, and a kill before any would leave a round without a write through HTTP.
      let firstSignUp!: () => void;
      const signedUp = new Promise<void>((resolve) => (firstSignUp = resolve));
      const kill = signedUp.then(
        () =>
          new Promise<void>((resolve) =>
            setTimeout(() => {
              victim.server.child.kill('SIGKILL');
              resolve();
            }, killAfter),
          ),
      );
      const w = await drive(victim.port, kill, { db: t.db, tenantId: tenant.id }, undefined, firstSignUp);
      await victim.server.exited;
      acked.signedUp.push(...w.signedUp);
      acked.appended.push(...w.appended);
      active = await standby;
      standby = start();
      await check(t.db, t.ownerDb(), tenant.id, witnessFile, acked, 15_000);
    }
    const last = await standby;
    expect(acked.appended.length).toBeGreaterThan(100);
    expect(acked.signedUp.length).toBeGreaterThanOrEqual(10);
    const heads = await t.ownerDb().selectFrom('audit_tree_heads').select((eb) => eb.fn.countAll<string>().as('n')).where('tenant_id', '=', tenant.id).executeTakeFirstOrThrow();
    console.log(`durability: 10 kills, ${acked.signedUp.length} acknowledged sign-ups and ${acked.appended.length} acknowledged appends, all in the tree; ${heads.n} signed heads`);
    // The command an operator runs, on the final state.
    for (const x of [active, last]) x.server.child.kill('SIGTERM');
    await Promise.all([active.server.exited, last.server.exited]);
    const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const c = execFile(process.execPath, [guichetEntry(), 'audit', 'verify', '--tenant', slug], { cwd: ROOT, env }, (_e, out, err) => resolve({ code: c.exitCode, out: `${out}${err}` }));
    });
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(new RegExp(`^${slug}: ok, \\d+ events, tree of \\d+ leaves, \\d+ signed heads, witness agrees`, 'm'));
  }, 120_000);
});

describe.runIf(testDbKind() === 'pglite')('kill -9 during sign-ups, twice (PGlite)', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'guichet-durability-pglite-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('every acknowledged sign-up is in the tree after each restart, and the log verifies', async () => {
    const info = testDatabaseInfo();
    if (info.kind !== 'pglite') throw new Error('expected PGlite');
    const slug = randomSlug('dur-');
    const dataDir = join(dir, 'pglite');
    let tenantId: string;
    {
      const d = await openDatabase({ dataDir, loadDataDir: new Blob([readFileSync(info.dumpPath)]), migrate: false });
      tenantId = (await createTenant(d.db, { slug, nameFr: 'Durabilité', nameEn: 'Durability', hosts: [] }, origin, new Date())).id;
      await d.close();
    }
    const env = { ...baseEnv(dir, slug), PORT: String(await freePort()) };
    const witnessFile = join(dir, 'audit-witness.jsonl');
    const acked: Writes = { signedUp: [], appended: [] };
    let server = await serve(env);
    for (let round = 1; round <= 2; round++) {
      // Killed a random moment after the first acknowledged sign-ups of the round (the embedded server is slower to warm up).
      const before = acked.signedUp.length;
      const w: Writes = { signedUp: acked.signedUp, appended: [] };
      const kill = (async () => {
        const deadline = Date.now() + 20_000;
        while (acked.signedUp.length < before + 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 500)));
        server.child.kill('SIGKILL');
      })();
      const driving = drive(Number(env.PORT), kill, null, w);
      await Promise.all([kill, driving]);
      await server.exited;
      // Restarted: it recovers the database and seals what the killed process left, and hands the head to the witness.
      server = await serve(env);
      const deadline = Date.now() + 15_000;
      for (;;) {
        const sizes = witnessRecordsFor(await readWitnessFile(witnessFile), tenantId).map((r) => r.tree_size);
        // tenant.create, then one event per acknowledged sign-up (at least; unacknowledged ones may have committed too)
        if (Math.max(0, ...sizes) >= 1 + acked.signedUp.length) break;
        if (Date.now() > deadline) throw new Error(`round ${round}: the witness holds sizes ${sizes.join(', ')} but ${acked.signedUp.length} sign-ups were acknowledged:\n${server.output()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    server.child.kill('SIGTERM');
    await server.exited;
    const d = await openDatabase({ dataDir, migrate: false });
    try {
      await check(d.db, d.db, tenantId, witnessFile, acked, 0);
    } finally {
      await d.close();
    }
    expect(acked.signedUp.length).toBeGreaterThan(3);
  }, 120_000);
});
