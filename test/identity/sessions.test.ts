import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { describeDevice } from '../../src/identity/sessions.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { createAdmin, createFacility, createParent, createStaff, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { completeSecondStep } from '../helpers/factors.ts';

let database: TestDatabase;
let t: TestApp;
let tenant: Tenant;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
  tenant = await tenantFor(t);
});
afterAll(async () => {
  await t?.close();
  await database?.close();
});

const FIREFOX = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0';
const SAFARI_IOS = 'Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1';

async function signInWith(email: string, ua: string, ip: string) {
  const c = new Client(t.app, tenant.hosts[0]!, ip);
  await c.get('/signin', { 'user-agent': ua });
  const r = await c.post('/signin', { email, password: PASSWORD }, { headers: { 'user-agent': ua } });
  expect(r.status).toBe(303);
  // staff and administrators have an authenticator app: the second step
  expect((await completeSecondStep(c, t.deps.clock, email, r, { 'user-agent': ua })).status).toBe(303);
  return c;
}

async function mails(to: string, template: string) {
  return inTenant(database.db, tenant.id, (trx) => trx.selectFrom('mail_outbox').selectAll().where('to_address', '=', to).where('template', '=', template).execute());
}

describe('a person’s own sessions', () => {
  it('lists each device, ends one, then all the others; ended cookies are dead', async () => {
    const email = `sessions.${Date.now()}@exemple.test`;
    await createParent(t, tenant, email);
    const laptop = await signInWith(email, FIREFOX, '203.0.113.10');
    const phone = await signInWith(email, SAFARI_IOS, '203.0.113.11');
    const third = await signInWith(email, FIREFOX, '203.0.113.12');
    const page = await laptop.get('/account/sessions');
    expect(page.status).toBe(200);
    const text = textOf(page.body);
    expect(text).toContain('Firefox — Windows');
    expect(text).toContain('Safari — iOS');
    expect(text).toContain('Cet appareil');
    expect(text).toContain('203.0.113.11');
    const phoneSession = /action="\/account\/sessions\/([0-9a-f-]{36})\/end"/.exec(page.body.slice(page.body.indexOf('Safari')))?.[1];
    expect(phoneSession).toBeTruthy();
    let r = await laptop.post(`/account/sessions/${phoneSession}/end`);
    expect(r.status).toBe(303);
    expect((await phone.get('/account')).status).toBe(303);
    expect((await third.get('/account')).status).toBe(200);
    await laptop.get('/account/sessions');
    r = await laptop.post('/account/sessions/end-others');
    expect(r.headers.location).toBe('/account/sessions?ended=1');
    expect((await third.get('/account')).status).toBe(303);
    expect((await laptop.get('/account')).status).toBe(200);
  });

  it('cannot end someone else’s session', async () => {
    const a = `a.${Date.now()}@exemple.test`;
    const b = `b.${Date.now()}@exemple.test`;
    await createParent(t, tenant, a);
    await createParent(t, tenant, b);
    const ca = await signInWith(a, FIREFOX, '203.0.113.20');
    const cb = await signInWith(b, FIREFOX, '203.0.113.21');
    const bSession = await inTenant(database.db, tenant.id, (trx) =>
      trx.selectFrom('sessions as s').innerJoin('accounts as acc', 'acc.id', 's.account_id').select('s.id').where('acc.email', '=', b).executeTakeFirstOrThrow(),
    );
    await ca.get('/account/sessions');
    const r = await ca.post(`/account/sessions/${bSession.id}/end`);
    expect(r.status).toBe(404);
    expect((await cb.get('/account')).status).toBe(200);
  });
});

describe('a sign-in from a new device', () => {
  it('sends a notice by e-mail, once per device, never for the first device', async () => {
    const email = `device.${Date.now()}@exemple.test`;
    await createParent(t, tenant, email);
    const first = await signInWith(email, FIREFOX, '203.0.113.30');
    expect(await mails(email, 'new_device')).toHaveLength(0);
    // the same browser again (its device cookie comes back): no notice
    await first.post('/signout');
    await first.get('/signin', { 'user-agent': FIREFOX });
    await first.post('/signin', { email, password: PASSWORD }, { headers: { 'user-agent': FIREFOX } });
    expect(await mails(email, 'new_device')).toHaveLength(0);
    // another browser: a notice naming it, with the link to end the session
    await signInWith(email, SAFARI_IOS, '203.0.113.31');
    const notices = await mails(email, 'new_device');
    expect(notices).toHaveLength(1);
    expect(notices[0]!.subject).toBe('Nouvelle connexion à votre compte Guichet');
    expect(notices[0]!.body_text).toContain('Safari — iOS (203.0.113.31)');
    expect(notices[0]!.body_text).toContain('/account/sessions');
  });

  it('describes common browsers', () => {
    expect(describeDevice(FIREFOX)).toBe('Firefox — Windows');
    expect(describeDevice(SAFARI_IOS)).toBe('Safari — iOS');
    expect(describeDevice('Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36')).toBe('Chrome — Linux');
    expect(describeDevice(null)).toBeNull();
  });
});

describe('an administrator', () => {
  it('sees the staff and ends a person’s sessions; a parent cannot', async () => {
    const adminEmail = `adm.${Date.now()}@exemple.test`;
    const staffEmail = `staff.${Date.now()}@exemple.test`;
    const adminId = await createAdmin(t, tenant, adminEmail);
    const fac = await createFacility(t, tenant);
    const staffId = await createStaff(t, tenant, staffEmail, fac, adminId);
    const staff = await signInWith(staffEmail, FIREFOX, '203.0.113.40');
    const admin = await signInWith(adminEmail, FIREFOX, '203.0.113.41');
    const page = await admin.get('/admin');
    expect(textOf(page.body)).toContain(staffEmail);
    expect(textOf(page.body)).toContain('Personnel du service');
    const r = await admin.post(`/admin/accounts/${staffId}/sessions/end`);
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe('/admin?sessionsEnded=1');
    expect((await staff.get('/staff')).status).toBe(303);
    const parentEmail = `p.${Date.now()}@exemple.test`;
    await createParent(t, tenant, parentEmail);
    const parent = await signInWith(parentEmail, FIREFOX, '203.0.113.42');
    await parent.get('/account');
    expect((await parent.post(`/admin/accounts/${adminId}/sessions/end`)).status).toBe(403);
    expect((await admin.get('/account')).status).toBe(200);
  });
});
