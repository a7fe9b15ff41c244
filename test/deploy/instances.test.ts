/**
 * Several instances, as production runs them: two `guichet serve` with
 * their background jobs off (GUICHET_JOBS=off) and one `guichet worker`, as
 * real processes on loopback, on the run's PostgreSQL database and, when it
 * answers, the local Redis for the shared counters. It proves:
 * - a session opened on one server works on the other, and ends on both;
 * - failed sign-ins are counted across both servers: the back-off starts
 *   after the fifth failure and the account locks at the tenth, whichever
 *   server took them;
 * - a bulk reader spread over both servers is cut off at the same total as
 *   on one (test/detection/intruder.test.ts): 20 reads served;
 * - the worker seals what both servers wrote, and `guichet audit verify`
 *   finds the audit tree whole.
 *
 *   GUICHET_TEST_DB=postgres npx vitest run test/deploy/instances.test.ts
 *
 * PostgreSQL only: the embedded database has one process at a time.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyProviderFromSecret } from '../../src/crypto/keys.ts';
import { inTenant } from '../../src/db/tenant.ts';
import * as records from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createTestKeyring, type TestKeyring } from '../crypto/keyring-helper.ts';
import { createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, type Response } from '../helpers/client.ts';
import { guichetEntry } from '../helpers/cli.ts';
import { createTestDatabase, testDatabaseInfo, testDbKind, type TestDatabase } from '../helpers/db.ts';
import { redisForTests, testRedisUrl } from '../helpers/redis.ts';
import { actorOf, createAccount, grantRole } from '../records/people.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
// The test apps' secret: on the PostgreSQL run any listening test app seals every tenant of the shared database.
const MASTER = Buffer.alloc(32, 7);

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

interface Proc {
  name: string;
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

const procs: Proc[] = [];

async function start(name: string, args: string[], env: NodeJS.ProcessEnv, ready: RegExp): Promise<Proc> {
  const child = spawn(process.execPath, [guichetEntry(), ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString('utf8')));
  child.stderr!.on('data', (b: Buffer) => (out += b.toString('utf8')));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const p = { name, child, output: () => out, exited };
  procs.push(p);
  const deadline = Date.now() + 60_000;
  while (!ready.test(out)) {
    if (child.exitCode !== null) throw new Error(`${name} exited before it was ready:\n${out}`);
    if (Date.now() > deadline) throw new Error(`${name} not ready:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return p;
}

/**
 * The test helpers' Client speaks to a Fastify app through inject(); this
 * stands in for the app over real HTTP to one server process, the client's
 * address sent as X-Forwarded-For (the servers trust the proxy, as behind
 * a load balancer).
 */
function overHttp(port: number, agent: Agent): FastifyInstance {
  const inject = (o: { method: string; url: string; remoteAddress?: string; payload?: string | Buffer; headers?: Record<string, string> }) =>
    new Promise<{ statusCode: number; headers: Record<string, string | string[] | undefined>; body: string }>((resolve, reject) => {
      const headers = { ...o.headers, ...(o.remoteAddress ? { 'x-forwarded-for': o.remoteAddress } : {}) };
      const req = request({ host: '127.0.0.1', port, method: o.method, path: o.url, agent, headers }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ statusCode: res.statusCode ?? 0, headers: res.headers, body }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(o.payload);
    });
  return { inject, guichet: { clock: () => new Date() } } as unknown as FastifyInstance;
}

let database: TestDatabase;
let keyring: TestKeyring;
let setup: TestApp;
let dir: string;
const agent = new Agent({ keepAlive: true, maxSockets: 16 });

afterAll(async () => {
  for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
  agent.destroy();
  await setup?.close();
  await keyring?.close();
  await database?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.runIf(testDbKind() === 'postgres')('two servers and a worker on one PostgreSQL (and Redis)', () => {
  let tenant: Tenant;
  let env: NodeJS.ProcessEnv;
  let ports: number[];
  let useRedis = false;

  beforeAll(async () => {
    const info = testDatabaseInfo();
    if (info.kind !== 'postgres') throw new Error('expected PostgreSQL');
    database = await createTestDatabase();
    keyring = await createTestKeyring();
    if (keyring.where.kind !== 'sql') throw new Error('expected a PostgreSQL keyring');
    setup = await startTestApp(database);
    // What the processes use too: one keyring beside the database, one master secret.
    setup.deps.keys = keyProviderFromSecret(MASTER, keyring.keyring);
    tenant = await tenantFor(setup);
    dir = mkdtempSync(join(tmpdir(), 'guichet-instances-'));
    useRedis = await redisForTests();
    const base: NodeJS.ProcessEnv = { ...process.env };
    for (const k of Object.keys(base)) if (/^(GUICHET_|DATABASE_|SMTP_URL|PUBLIC_URL|REDIS_URL|PORT$|HOST$)/.test(k)) delete base[k];
    env = {
      ...base,
      NODE_ENV: 'test',
      LOG_LEVEL: 'warn',
      TRUST_PROXY: '1',
      GUICHET_DATA_DIR: dir,
      GUICHET_MASTER_KEY: MASTER.toString('base64'),
      GUICHET_KEYRING_URL: keyring.where.url,
      GUICHET_DEFAULT_TENANT: tenant.slug,
      // On a database every test file shares, the worker seals this test's tenant only (other files' CLI tests seal their own).
      GUICHET_SEALER_TENANTS: tenant.slug,
      // Not on a database every test file shares.
      GUICHET_RETENTION_HOUR: 'off',
      DATABASE_URL: info.appUrl,
      DATABASE_OWNER_URL: info.ownerUrl,
      ...(useRedis ? { REDIS_URL: testRedisUrl() } : {}),
    };
    ports = [await freePort(), await freePort()];
    await Promise.all([
      start('server A', ['serve'], { ...env, GUICHET_JOBS: 'off', PORT: String(ports[0]) }, /Guichet is listening/),
      start('server B', ['serve', '--no-jobs'], { ...env, PORT: String(ports[1]) }, /Guichet is listening/),
      start('worker', ['worker'], env, /Guichet worker running/),
    ]);
  }, 180_000);

  const clientOn = (i: number, ip = '127.0.0.1') => new Client(overHttp(ports[i]!, agent), tenant.hosts[0]!, ip);
  const share = (from: Client, i: number) => {
    const c = clientOn(i, from.ip);
    for (const [k, v] of from.cookies) c.cookies.set(k, v);
    return c;
  };

  it('reports its set-up', () => {
    console.log(`[instances] two servers (jobs off) and a worker on PostgreSQL; shared counters in ${useRedis ? 'Redis' : 'PostgreSQL'}`);
    expect(procs.map((p) => p.name)).toEqual(expect.arrayContaining(['server A', 'server B', 'worker']));
  });

  it('a session opened on one server works on the other, and signing out on one ends it on both', async () => {
    const email = `parent.${Date.now()}@exemple.test`;
    await createParent(setup, tenant, email);
    const a = clientOn(0);
    expect((await a.signIn(email, PASSWORD)).status).toBe(303);
    const b = share(a, 1);
    const page = await b.get('/account');
    expect(page.status).toBe(200);
    expect(page.body).toContain(email);
    expect((await b.post('/signout')).status).toBe(303);
    expect((await a.get('/account')).status).toBe(303);
  });

  it('counts failed sign-ins across both servers and cuts a bulk reader off at the same total as on one instance', async () => {
    const [lock, reader] = await Promise.all([failuresAcrossServers(), bulkReaderAcrossServers()]);
    console.log(
      `[instances] sign-in: back-off after ${lock.freeFailures} failures, lock at ${lock.lockedAt} (${lock.perServer.join(' + ')} on the two servers); ` +
        `bulk reader over both servers: ${reader.served} reads served, then refused (${reader.perServer.join(' + ')}), ${(reader.ms / 1000).toFixed(2)} s`,
    );
    expect(lock.freeFailures).toBe(5);
    expect(lock.lockedAt).toBe(10);
    expect(lock.lockEvents).toBe(1);
    expect(reader.served).toBe(20);
    expect(reader.servedAfterRefusal).toBe(0);
    expect(reader.perServer.every((n) => n > 0)).toBe(true);
    expect(reader.suspended).toBe(true);
  }, 120_000);

  /** Failures alternate between the servers, each from a new address (no per-source limit plays). */
  async function failuresAcrossServers() {
    const email = `cible.${Date.now()}@exemple.test`;
    await createParent(setup, tenant, email);
    let ip = 0;
    const attempt = async (i: number): Promise<Response> => {
      const c = clientOn(i, `198.51.100.${++ip}`);
      await c.get('/signin');
      return c.post('/signin', { email, password: 'not the password' });
    };
    const perServer = [0, 0];
    let failures = 0;
    let freeFailures: number | null = null;
    let lockedAt: number | null = null;
    for (let n = 0; n < 40 && lockedAt === null; n++) {
      const i = failures % 2;
      const r = await attempt(i);
      if (r.status === 429) {
        freeFailures ??= failures;
        // Locked: the wait is the lock's (15 minutes), not the back-off's (seconds).
        const wait = Number(r.headers['retry-after']);
        if (wait > 60) lockedAt = failures;
        else await new Promise((res) => setTimeout(res, wait * 1000 + 50));
        continue;
      }
      expect(r.status).toBe(401);
      failures++;
      perServer[i]!++;
    }
    const lockEvents = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select('id').where('action', '=', 'identity.account.locked').execute());
    return { freeFailures, lockedAt, perServer, lockEvents: lockEvents.length };
  }

  /** test/detection/intruder.test.ts's reader: four reads in flight, round-robin over the servers, with one stolen session. */
  async function bulkReaderAcrossServers() {
    const facility = await createFacility(setup, tenant, { name: 'CPE Les Hiboux' });
    const adminId = await createAdmin(setup, tenant, `admin.${Date.now()}@exemple.test`);
    const helperId = await createAccount(setup, tenant, `aide.${Date.now()}@exemple.test`);
    const officerId = await createAccount(setup, tenant, `securite.${Date.now()}@exemple.test`);
    await grantRole(setup, tenant, officerId, 'security_officer', helperId, adminId);
    for (let i = 0; i < 2; i++) {
      const parentEmail = `famille.${i}.${Date.now()}@exemple.test`;
      const parent = await actorOf(setup, tenant, await createParent(setup, tenant, parentEmail), parentEmail);
      const t0 = today(new Date());
      const ctx = ctxFor(setup, tenant, parent);
      const { id } = await records.createChildFile(setup.deps, ctx, { firstName: 'Léa', lastName: 'Tremblay', birthDate: addMonths(t0, -10), nirec: null, desiredEntryDate: addMonths(t0, 3), daysOfCare: 0b11111, inSubsidisedCare: false });
      await records.addApplication(setup.deps, ctx, id, { facilityId: facility, siblingAttending: false, parentIsStaff: false });
    }
    const email = `intrus.${Date.now()}@exemple.test`;
    const intruderId = await createStaff(setup, tenant, email, facility, adminId);
    const first = clientOn(0, '192.0.2.10');
    expect((await first.signIn(email, PASSWORD)).status).toBe(303);
    const clients = [first, share(first, 1)];
    let served = 0;
    let servedAfterRefusal = 0;
    let refusedAt: number | null = null;
    let extra = 0;
    let next = 0;
    const perServer = [0, 0];
    const started = performance.now();
    const reader = async () => {
      while (extra < 10 && served <= 200) {
        const i = next++ % 2;
        const sent = performance.now();
        const r = await clients[i]!.get(`/staff/facilities/${facility}/candidates`);
        if (r.status === 200) {
          served++;
          perServer[i]!++;
          if (refusedAt !== null && sent > refusedAt) servedAfterRefusal++;
        } else {
          refusedAt ??= performance.now();
          extra++;
        }
      }
    };
    await Promise.all(Array.from({ length: 4 }, reader));
    const account = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('accounts').select('status').where('id', '=', intruderId).executeTakeFirstOrThrow());
    return { served, servedAfterRefusal, perServer, ms: (refusedAt ?? performance.now()) - started, suspended: account.status === 'suspended' };
  }

  it('the worker seals what both servers wrote, and guichet audit verify finds the tree whole', async () => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const { rows } = await sql<{ events: string; leaves: string }>`SELECT
          (SELECT count(*) FROM audit_events WHERE tenant_id = ${tenant.id})::text AS events,
          (SELECT count(*) FROM audit_leaves WHERE tenant_id = ${tenant.id})::text AS leaves`.execute(database.ownerDb());
      if (rows[0]!.events === rows[0]!.leaves) {
        console.log(`[instances] ${rows[0]!.events} audit events, all in the tree`);
        break;
      }
      if (Date.now() > deadline) throw new Error(`not sealed: ${rows[0]!.events} events, ${rows[0]!.leaves} leaves`);
      await new Promise((r) => setTimeout(r, 200));
    }
    // The worker stops cleanly on SIGTERM, its current pass finished.
    for (const p of procs) p.child.kill('SIGTERM');
    const codes = await Promise.all(procs.map((p) => p.exited));
    expect(codes, procs.map((p) => `${p.name}:\n${p.output()}`).join('\n')).toEqual([0, 0, 0]);
    const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const c = execFile(process.execPath, [guichetEntry(), 'audit', 'verify', '--tenant', tenant.slug], { cwd: ROOT, env }, (_e, out, err) => resolve({ code: c.exitCode, out: `${out}${err}` }));
    });
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(new RegExp(`^${tenant.slug}: ok, \\d+ events, tree of \\d+ leaves, \\d+ signed heads`, 'm'));
  }, 90_000);
});
