/**
 * Detection rules that watch an OpenID Connect client: tokens issued to one
 * client in a sliding window above the tenant's threshold raise one alert
 * naming the client, read from the audit stream like the other stream rules.
 * Another client of the same tenant, refused requests, and another tenant
 * (whose rule is off, the default) raise nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendAuditAlone } from '../../src/audit/log.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { DetectionStream, tenantBaseUrl } from '../../src/detection/stream.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';

let database: TestDatabase;
let t: TestApp;
const ours = new Set<string>();
let reader: DetectionStream;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
  // Listening starts the sealer, which orders events into the tree the stream follows.
  await t.app.listen({ port: 0, host: '127.0.0.1' });
  reader = new DetectionStream(t.deps, tenantBaseUrl(t.deps), 100, (id) => ours.has(id));
  reader.start();
});

afterAll(async () => {
  await reader?.stop();
  await t?.close();
  await database?.close();
});

const SYSTEM = { actorAccountId: null, actorRoles: ['system:oidc'], ip: '203.0.113.9', userAgent: null, requestId: null };

/** A token issued to a client, as the provider records it. */
async function token(tenant: Tenant, clientId: string, outcome: 'success' | 'denied' = 'success') {
  await appendAuditAlone(database.db, tenant.id, { action: 'oidc.token', outcome, ...SYSTEM, targetType: 'oidc_client', targetIds: [clientId], details: { grant_type: 'authorization_code' } }, new Date());
}

const alerts = (tenant: Tenant) => inTenant(database.db, tenant.id, (trx) => trx.selectFrom('detection_alerts').selectAll().orderBy('created_at').execute());

/** Waits until the stream has read every event written so far (its cursor at the end of the tree). */
async function streamCaughtUp(tenant: Tenant) {
  const start = performance.now();
  while (performance.now() - start < 20_000) {
    const r = await inTenant(database.db, tenant.id, async (trx) => {
      const total = await trx.selectFrom('audit_events').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirst();
      const leaves = await trx.selectFrom('audit_leaves').select((eb) => eb.fn.max('leaf_index').as('m')).executeTakeFirst();
      const cursor = await trx.selectFrom('detection_stream_cursors').select('leaf_index').executeTakeFirst();
      return { total: Number(total?.n ?? 0), last: Number(leaves?.m ?? -1), cursor: cursor ? Number(cursor.leaf_index) : -2 };
    });
    if (r.last + 1 === r.total && r.cursor === r.last) return;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error('the detection stream did not catch up within 20 s');
}

describe('rules that watch a client', () => {
  it('tokens issued to one client above the tenant’s threshold in the window: one alert naming the client; others stay quiet', async () => {
    const tenant = await tenantFor(t);
    const quiet = await tenantFor(t);
    ours.add(tenant.id);
    ours.add(quiet.id);
    // The stream starts each tenant at its current end: one event first, then wait for the cursor.
    await token(tenant, 'start-of-stream-client');
    await token(quiet, 'start-of-stream-client');
    await streamCaughtUp(tenant);
    await streamCaughtUp(quiet);
    // The tenant's rule, as data: more than 3 tokens to one client in 5 minutes.
    await inTenant(database.db, tenant.id, (trx) =>
      trx.insertInto('detection_rules').values({ tenant_id: tenant.id, code: 'client.tokens.5m', signal: 'client_tokens', threshold: 3, window_seconds: 300, response: 'alert', lockdown_level: null, except_declared_batch: false, enabled: true, updated_at: new Date(), updated_by: null }).execute(),
    );
    const watched = 'catalogue-bibliotheques-0001';
    const other = 'portail-municipal-00000001';
    for (let i = 0; i < 3; i++) await token(tenant, watched);
    for (let i = 0; i < 3; i++) await token(tenant, other);
    for (let i = 0; i < 5; i++) await token(tenant, watched, 'denied');
    for (let i = 0; i < 6; i++) await token(quiet, watched);
    await streamCaughtUp(tenant);
    await streamCaughtUp(quiet);
    expect(await alerts(tenant)).toEqual([]);
    // The fourth crosses it; the fifth, above it, raises no second alert.
    await token(tenant, watched);
    await token(tenant, watched);
    await streamCaughtUp(tenant);
    const raised = await alerts(tenant);
    expect(raised).toHaveLength(1);
    expect(raised[0]).toMatchObject({ rule_code: 'client.tokens.5m', signal: 'client_tokens', severity: 'high', subject_account_id: null, response: 'alert' });
    expect(raised[0]!.details).toMatchObject({ client: watched, total: 4, threshold: 3, windowSeconds: 300 });
    expect(await alerts(quiet)).toEqual([]);
    const recorded = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['action', 'target_ids']).where('action', '=', 'detection.alert').execute());
    expect(recorded).toHaveLength(1);
  });
});
