import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { THROTTLE } from '../../src/identity/throttle.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { createParent, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';

let database: TestDatabase;
let t: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
});
afterAll(async () => {
  t.setNow(new Date());
  await t?.close();
  await database?.close();
});

let ipSeq = 0;
const freshIp = () => `198.51.100.${++ipSeq}`;

async function attempt(c: Client, email: string, password = 'wrong password, clearly') {
  await c.get('/signin');
  return c.post('/signin', { email, password });
}

async function events(tenant: Tenant, action: string) {
  return inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').selectAll().where('action', '=', action).orderBy('seq').execute());
}

describe('brute force on one account', () => {
  it('lets 5 failures through, then makes each attempt wait longer, then locks and tells the holder', async () => {
    const tenant = await tenantFor(t);
    const email = `cible.${Date.now()}@exemple.test`;
    await createParent(t, tenant, email);
    const start = new Date();
    let now = start.getTime();
    const at = (ms: number) => {
      now = ms;
      t.setNow(new Date(ms));
    };
    at(now);
    const c = new Client(t.app, tenant.hosts[0]!, freshIp());
    for (let i = 0; i < THROTTLE.accountFreeFailures; i++) expect((await attempt(c, email)).status).toBe(401);
    // the 6th comes too soon: 1 s after the 5th failure is required
    let r = await attempt(c, email);
    expect(r.status).toBe(429);
    expect(r.headers['retry-after']).toBe('1');
    expect(textOf(r.body)).toContain('Trop de tentatives');
    // even the right password is refused while waiting: the throttle comes before the check
    expect((await attempt(c, email, PASSWORD)).status).toBe(429);
    for (let i = THROTTLE.accountFreeFailures; i < THROTTLE.accountLockFailures; i++) {
      at(now + 1000 * 2 ** (i - THROTTLE.accountFreeFailures) + 1);
      expect((await attempt(c, email)).status, `failure ${i + 1}`).toBe(401);
    }
    // locked for 15 minutes, with an e-mail to the holder and an audit event
    at(now + 60_000);
    r = await attempt(c, email, PASSWORD);
    expect(r.status).toBe(429);
    const mail = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('mail_outbox').selectAll().where('to_address', '=', email).where('template', '=', 'account_locked').execute());
    expect(mail).toHaveLength(1);
    expect(mail[0]!.subject).toBe('Votre compte Guichet est verrouillé temporairement');
    expect(await events(tenant, 'identity.account.locked')).toHaveLength(1);
    // after the lock, the right password works and the count starts again
    at(now + THROTTLE.accountLockMs + 1000);
    r = await attempt(c, email, PASSWORD);
    expect(r.status).toBe(303);
    const d = new Client(t.app, tenant.hosts[0]!, freshIp());
    expect((await attempt(d, email)).status).toBe(401);
    t.setNow(new Date());
  });

  it('throttles an address without an account exactly like one with an account', async () => {
    const tenant = await tenantFor(t);
    const known = `connu.${Date.now()}@exemple.test`;
    await createParent(t, tenant, known);
    const unknown = `inconnu.${Date.now()}@exemple.test`;
    const statuses = async (email: string) => {
      const c = new Client(t.app, tenant.hosts[0]!, freshIp());
      const out: number[] = [];
      for (let i = 0; i < 7; i++) out.push((await attempt(c, email)).status);
      return out;
    };
    t.setNow(new Date('2026-06-01T12:00:00Z'));
    const a = await statuses(known);
    const b = await statuses(unknown);
    t.setNow(new Date());
    expect(a).toEqual([401, 401, 401, 401, 401, 429, 429]);
    expect(b).toEqual(a);
  });
});

describe('one source against many accounts', () => {
  it('blocks a source that fails on 8 accounts (password spraying), records it, and leaves other sources alone', async () => {
    const tenant = await tenantFor(t);
    const sprayer = new Client(t.app, tenant.hosts[0]!, freshIp());
    t.setNow(new Date('2026-06-02T12:00:00Z'));
    for (let i = 0; i < THROTTLE.sprayAccounts; i++) {
      expect((await attempt(sprayer, `victime${i}@exemple.test`, 'Automne2026!')).status).toBe(401);
    }
    expect((await attempt(sprayer, 'victime99@exemple.test', 'Automne2026!')).status).toBe(429);
    const spray = await events(tenant, 'identity.signin.spraying');
    expect(spray).toHaveLength(1);
    expect(spray[0]!.target_ids).toEqual([sprayer.ip]);
    // a parent elsewhere still signs in
    const email = `honnete.${Date.now()}@exemple.test`;
    await createParent(t, tenant, email);
    expect((await attempt(new Client(t.app, tenant.hosts[0]!, freshIp()), email, PASSWORD)).status).toBe(303);
    // the block lasts 30 minutes
    t.setNow(new Date(Date.parse('2026-06-02T12:00:00Z') + THROTTLE.sprayBlockMs + 60_000));
    expect((await attempt(sprayer, 'victime100@exemple.test', 'Automne2026!')).status).toBe(401);
    t.setNow(new Date());
  });

  it('caps sign-ups from one source', async () => {
    const tenant = await tenantFor(t);
    const c = new Client(t.app, tenant.hosts[0]!, freshIp());
    t.setNow(new Date('2026-06-03T12:00:00Z'));
    for (let i = 0; i < THROTTLE.signupsPerSourcePerHour; i++) {
      await c.get('/signup');
      const r = await c.post('/signup', { email: `n${i}@exemple.test`, password: PASSWORD, passwordConfirm: PASSWORD });
      expect(r.status, `sign-up ${i}`).toBe(200);
    }
    await c.get('/signup');
    const r = await c.post('/signup', { email: 'n-extra@exemple.test', password: PASSWORD, passwordConfirm: PASSWORD });
    expect(r.status).toBe(429);
    t.setNow(new Date());
  });

  it('caps the passkey sign-in options one source may ask for (each stores a challenge); another source is not affected', async () => {
    const tenant = await tenantFor(t);
    const start = new Date('2026-06-04T12:00:00Z');
    t.setNow(start);
    const c = new Client(t.app, tenant.hosts[0]!, freshIp());
    await c.get('/signin');
    for (let i = 0; i < THROTTLE.passkeyOptionsPerSource; i++) {
      const r = await c.post('/signin/passkey/options');
      expect(r.status, `options ${i}`).toBe(200);
    }
    const challenges = async () => Number((await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('webauthn_challenges').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow())).n);
    const stored = await challenges();
    const refused = await c.post('/signin/passkey/options');
    expect(refused.status).toBe(429);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
    expect(await challenges()).toBe(stored);
    const other = new Client(t.app, tenant.hosts[0]!, freshIp());
    await other.get('/signin');
    expect((await other.post('/signin/passkey/options')).status).toBe(200);
    // the window passes
    t.setNow(new Date(start.getTime() + THROTTLE.passkeyOptionsWindowMs + 1000));
    expect((await c.post('/signin/passkey/options')).status).toBe(200);
    t.setNow(new Date());
  });
});
