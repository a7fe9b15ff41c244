/**
 * /metrics: absent without GUICHET_METRICS_TOKEN, refused without the right
 * bearer token, and with it the figures an operator watches — requests and
 * latencies by route pattern and status, sign-ins by outcome, the audit
 * lag, detection alerts and the mail queue — as Prometheus text.
 */
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendAuditAlone } from '../../src/audit/log.ts';
import { Sealer } from '../../src/audit/sealer.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { enqueueMail } from '../../src/mail/outbox.ts';
import { createParent, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';

const TOKEN = 'metrics-token-for-tests-0123456789';
let database: TestDatabase;
let open: TestApp;
let closed: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  open = await startTestApp(database, { env: { GUICHET_METRICS_TOKEN: TOKEN } });
  closed = await startTestApp(database);
});
afterAll(async () => {
  await open?.close();
  await closed?.close();
  await database?.close();
});

const scrape = (t: TestApp, authorization?: string) => t.app.inject({ method: 'GET', url: '/metrics', headers: authorization ? { authorization } : {} });

/** The value of one sample line, e.g. value(text, 'guichet_signins_total{outcome="failure"}'). */
function value(text: string, sample: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  return line ? Number(line.slice(sample.length + 1)) : undefined;
}

describe('/metrics', () => {
  it('does not exist without a token configured, and answers 401 to a missing or wrong token', async () => {
    expect((await scrape(closed, `Bearer ${TOKEN}`)).statusCode).toBe(404);
    expect((await scrape(open)).statusCode).toBe(401);
    const wrong = await scrape(open, 'Bearer not-the-token-at-all-0123456789');
    expect(wrong.statusCode).toBe(401);
    expect(wrong.headers['www-authenticate']).toMatch(/^Bearer/);
    expect(wrong.body).not.toMatch(/guichet_/);
    expect((await scrape(open, TOKEN)).statusCode).toBe(401);
  });

  it('counts requests by route pattern and status, sign-ins by outcome, and reads the audit lag, alerts and mail queue', async () => {
    const tenant = await tenantFor(open);
    const email = `metriques.${Date.now()}@exemple.test`;
    await createParent(open, tenant, email);
    const before = (await scrape(open, `Bearer ${TOKEN}`)).body;
    const c = new Client(open.app, tenant.hosts[0]!);
    await c.get('/signin');
    await c.post('/signin', { email, password: 'not the password' });
    await c.post('/signin', { email, password: 'not the password either' });
    expect((await c.signIn(email, PASSWORD)).status).toBe(303);
    await c.get('/directory/00000000-0000-0000-0000-000000000000');
    // Two events the sealer has not seen, one sealed before them; and two e-mails waiting.
    const origin = { actorAccountId: null, actorRoles: ['system:test'], ip: null, userAgent: null, requestId: null };
    await appendAuditAlone(database.db, tenant.id, { action: 'audit.head.read', outcome: 'success', ...origin }, new Date());
    await new Sealer(database.db, open.deps.keys, pino({ level: 'silent' })).sealTenant(tenant.id);
    for (let i = 0; i < 2; i++) await appendAuditAlone(database.db, tenant.id, { action: 'audit.head.read', outcome: 'success', ...origin }, new Date());
    await inTenant(database.db, tenant.id, async (trx) => {
      for (let i = 0; i < 2; i++) await enqueueMail(trx, tenant.id, { to: `x${i}@exemple.test`, locale: 'fr', template: 'security_alert', subject: 's', body: 'b' }, new Date());
      await trx
        .insertInto('detection_alerts')
        .values({ tenant_id: tenant.id, rule_code: 'files_read.5m', signal: 'files_read', severity: 'critical', subject_account_id: null, response: 'suspend', lockdown_level: null, event_ids: [], details: '{}', status: 'open', created_at: new Date() })
        .execute();
    });

    const r = await scrape(open, `Bearer ${TOKEN}`);
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(r.headers['cache-control']).toBe('no-store');
    const m = r.body;
    const diff = (sample: string) => (value(m, sample) ?? 0) - (value(before, sample) ?? 0);
    expect(diff('guichet_signins_total{outcome="failure"}')).toBe(2);
    expect(diff('guichet_signins_total{outcome="success"}')).toBe(1);
    expect(diff('guichet_http_requests_total{method="POST",route="/signin",status="303"}')).toBeGreaterThanOrEqual(1);
    expect(value(m, 'guichet_http_request_duration_seconds_count{method="GET",route="/signin",status="200"}')).toBeGreaterThanOrEqual(2);
    // Route patterns, never addresses: the id stays out of the labels.
    expect(m).not.toContain('00000000-0000-0000-0000-000000000000');
    expect(value(m, `guichet_audit_unsealed_events{tenant="${tenant.slug}"}`)).toBeGreaterThanOrEqual(2);
    expect(value(m, `guichet_audit_head_age_seconds{tenant="${tenant.slug}"}`)).toBeGreaterThanOrEqual(0);
    expect(value(m, `guichet_mail_outbox_pending{tenant="${tenant.slug}"}`)).toBeGreaterThanOrEqual(2);
    expect(value(m, `guichet_detection_alerts_raised{tenant="${tenant.slug}",severity="critical"}`)).toBe(1);
    expect(m).toMatch(/^guichet_process_cpu_seconds_total /m);
  });
});
