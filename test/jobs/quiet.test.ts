/**
 * Background loops look at every tenant only when their kind of work has been
 * written (migration 0040, src/jobs/quiet.ts): idle, a tick is one small
 * query; written work is still handled at once, including work whose
 * transaction was still running when a pass looked.
 *
 * A database of the file's own: on PostgreSQL the suite's other files write
 * to the shared one all the time, and any of their writes wakes the loops.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql } from 'kysely';
import pino from 'pino';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendAudit } from '../../src/audit/log.ts';
import { Sealer } from '../../src/audit/sealer.ts';
import { latestHead } from '../../src/audit/store.ts';
import { openDatabase } from '../../src/db/connection.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { createAlert } from '../../src/detection/alerts.ts';
import { WebhookSender } from '../../src/detection/webhook.ts';
import { enqueueMail } from '../../src/mail/outbox.ts';
import { MailSender } from '../../src/mail/sender.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { createAdmin, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { TEST_APP_ROLE, testDatabaseInfo, type TestDatabase } from '../helpers/db.ts';
import { createScenarioDb, type ScenarioDb } from '../records/scenario-db.ts';

let scenario: ScenarioDb;
let database: TestDatabase;
let t: TestApp;
const tenants: Tenant[] = [];
const isPg = testDatabaseInfo().kind === 'postgres';

/** The database of the scenario, reached as the application role on PostgreSQL (row-level security applies). */
async function appDatabase(s: ScenarioDb): Promise<TestDatabase> {
  if (s.database.kind === 'pglite') return s.database;
  const info = testDatabaseInfo();
  if (info.kind !== 'postgres') throw new Error('not a PostgreSQL run');
  const { rows } = await sql<{ d: string }>`SELECT current_database() AS d`.execute(s.database.db);
  const name = rows[0]!.d;
  await sql.raw(`GRANT CONNECT ON DATABASE "${name}" TO ${TEST_APP_ROLE}`).execute(s.database.db);
  const u = new URL(info.appUrl);
  u.pathname = `/${name}`;
  const app = await openDatabase({ databaseUrl: u.toString(), migrate: false });
  return { kind: app.kind, db: app.db, ownerDb: () => s.database.db, close: () => app.close() };
}

const until = async (what: () => boolean | Promise<boolean>, ms: number, step = 20): Promise<number> => {
  const t0 = performance.now();
  while (!(await what())) {
    if (performance.now() - t0 > ms) throw new Error(`not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, step));
  }
  return performance.now() - t0;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A transaction of the tenant, left open until release() (PostgreSQL: its
 * own connection, so the loops go on meanwhile).
 */
function heldTransaction(tenantId: string, write: Parameters<typeof inTenant>[2]) {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let written!: () => void;
  const ready = new Promise<void>((r) => (written = r));
  const done = inTenant(database.db, tenantId, async (trx) => {
    await write(trx);
    written();
    await gate;
  });
  return { ready, release: async () => (release(), await done) };
}

beforeAll(async () => {
  scenario = await createScenarioDb();
  database = await appDatabase(scenario);
  t = await startTestApp(database);
  for (let i = 0; i < 5; i++) tenants.push(await tenantFor(t));
});

afterAll(async () => {
  await t?.close();
  await database?.close();
  await scenario?.close();
});

describe('mail', () => {
  let inbox: SMTPServer;
  const received: string[] = [];
  let sender: MailSender;

  beforeAll(async () => {
    inbox = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS', 'AUTH'],
      logger: false,
      onData: (stream, session, cb) => {
        stream.resume();
        stream.on('end', () => {
          received.push(session.envelope.rcptTo.map((r) => r.address).join(','));
          cb();
        });
      },
    });
    inbox.listen(0, '127.0.0.1');
    await once(inbox.server, 'listening');
    sender = new MailSender(t.deps, `smtp://127.0.0.1:${(inbox.server.address() as AddressInfo).port}?ignoreTLS=true`);
    sender.start(50);
  });
  afterAll(async () => {
    await sender?.stop();
    await new Promise<void>((r) => inbox?.close(() => r()));
  });

  const mail = (to: string) => ({ to, locale: 'fr' as const, template: 'verify_email' as const, subject: 'Objet', body: 'Corps' });

  it('idle, a tick reads no tenant; a message queued in any tenant is sent at once', async () => {
    await until(() => sender.watch.counts.skipped >= 5, 3000);
    const passes = sender.watch.counts.passes;
    await sleep(500);
    // Ten ticks or so, none of them a pass over the five tenants.
    expect(sender.watch.counts.passes).toBe(passes);

    await inTenant(database.db, tenants[3]!.id, (trx) => enqueueMail(trx, tenants[3]!.id, mail('lea@exemple.test'), new Date()));
    const ms = await until(() => received.includes('lea@exemple.test'), 2000);
    expect(ms).toBeLessThan(1000);
    expect(sender.watch.counts.passes).toBeGreaterThan(passes);
    // And quiet again.
    const skipped = sender.watch.counts.skipped;
    await until(() => sender.watch.counts.skipped > skipped + 3, 2000);
  });

  it.skipIf(!isPg)('a message whose transaction was still open when the loop looked is sent as soon as it commits', async () => {
    await until(() => sender.watch.counts.skipped > 0, 3000);
    const held = heldTransaction(tenants[1]!.id, (trx) => enqueueMail(trx, tenants[1]!.id, mail('noah@exemple.test'), new Date()));
    try {
      await held.ready;
      const skipped = sender.watch.counts.skipped;
      const passes = sender.watch.counts.passes;
      await sleep(400);
      // The writer is running: every tick looks (the pass cannot see the message yet, and must not be taken as quiet).
      expect(sender.watch.counts.skipped).toBe(skipped);
      expect(sender.watch.counts.passes).toBeGreaterThan(passes + 3);
      expect(received).not.toContain('noah@exemple.test');
    } finally {
      await held.release();
    }
    expect(await until(() => received.includes('noah@exemple.test'), 2000)).toBeLessThan(1000);
  });
});

describe('sealer', () => {
  let sealer: Sealer;
  beforeAll(() => {
    sealer = new Sealer(database.db, t.deps.keys, pino({ level: 'silent' }), { intervalMs: 50 });
    sealer.start();
  });
  afterAll(() => sealer?.stop());

  const treeSize = async (tenantId: string) => (await inTenant(database.db, tenantId, (trx) => latestHead(trx, tenantId)))?.treeSize ?? 0;
  const event = (tenantId: string) => (trx: Parameters<Parameters<typeof inTenant>[2]>[0]) =>
    appendAudit(trx, tenantId, { action: 'audit.export', outcome: 'success', actorAccountId: null, actorRoles: ['system:test'], targetType: 'tenant', targetIds: [tenantId] }, new Date());

  it('idle, it reads no tenant; an event appended in any tenant is signed into its tree within a second', async () => {
    await until(() => sealer.watch.counts.skipped >= 5, 5000);
    const passes = sealer.watch.counts.passes;
    await sleep(500);
    expect(sealer.watch.counts.passes).toBe(passes);
    const tenant = tenants[2]!.id;
    const size = await treeSize(tenant);
    await inTenant(database.db, tenant, event(tenant));
    expect(await until(async () => (await treeSize(tenant)) > size, 2000)).toBeLessThan(1000);
  });

  it.skipIf(!isPg)('an event whose transaction was still open when the sealer looked is sealed as soon as it commits', async () => {
    await until(() => sealer.watch.counts.skipped > 0, 3000);
    const tenant = tenants[4]!.id;
    const size = await treeSize(tenant);
    const held = heldTransaction(tenant, event(tenant));
    try {
      await held.ready;
      const skipped = sealer.watch.counts.skipped;
      await sleep(400);
      expect(sealer.watch.counts.skipped).toBe(skipped);
      expect(await treeSize(tenant)).toBe(size);
    } finally {
      await held.release();
    }
    expect(await until(async () => (await treeSize(tenant)) > size, 2000)).toBeLessThan(1000);
  });
});

describe('webhook', () => {
  let receiver: Server;
  let answers: number[] = [];
  const got: number[] = [];
  let sender: WebhookSender;

  beforeAll(async () => {
    receiver = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        const status = answers.shift() ?? 204;
        got.push(status);
        res.writeHead(status).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    sender = new WebhookSender(t.deps, 50);
    sender.start();
  });
  afterAll(async () => {
    await sender?.stop();
    await new Promise<void>((r) => receiver?.close(() => r()));
  });

  it('a delivery that failed is tried again when its retry is due, the loop quiet in between', async () => {
    const tenant = tenants[0]!;
    const admin = await createAdmin(t, tenant, 'admin-webhook@exemple.test');
    const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/alertes`;
    await inTenant(database.db, tenant.id, (trx) => trx.insertInto('detection_webhooks').values({ tenant_id: tenant.id, url, updated_at: new Date(), updated_by: admin }).execute());
    await until(() => sender.watch.counts.skipped >= 3, 3000);
    answers = [500];
    await inTenant(database.db, tenant.id, (trx) =>
      createAlert(
        trx,
        tenant.id,
        { ruleCode: 'test', signal: 'privilege', severity: 'high', subjectAccountId: admin, response: 'alert', lockdownLevel: null, eventIds: [], details: {} },
        { actorAccountId: null, actorRoles: ['system:test'], ip: null, userAgent: null, requestId: null },
        new Date(),
        'http://localhost',
      ),
    );
    await until(() => got.length === 1, 2000);
    expect(got).toEqual([500]);
    // The retry is two seconds out: the loop waits for it without reading the tenants meanwhile.
    await sleep(300);
    const passes = sender.watch.counts.passes;
    await sleep(1000);
    expect(sender.watch.counts.passes).toBe(passes);
    await until(() => got.length === 2, 3000);
    expect(got).toEqual([500, 204]);
    const row = () => inTenant(database.db, tenant.id, (trx) => trx.selectFrom('detection_webhook_deliveries').select(['attempts', 'delivered_at']).executeTakeFirstOrThrow());
    // Marked delivered once the answer is in (just after the receiver answered).
    await until(async () => (await row()).delivered_at !== null, 1000);
    expect((await row()).attempts).toBe(2);
  });
});

describe('the signal itself', () => {
  it('is readable by the application role and names no tenant', async () => {
    const { rows } = await sql<{ mark: string; in_flight: boolean }>`SELECT mark::text AS mark, in_flight FROM work_signal_read('mail')`.execute(database.db);
    expect(Object.keys(rows[0]!).sort()).toEqual(['in_flight', 'mark']);
    await expect(sql`SELECT * FROM work_signal_read('tenants')`.execute(database.db)).rejects.toThrow(/unknown kind of work/);
  });
});
