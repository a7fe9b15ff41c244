import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { decideGrant, requestGrant, revokeMembership } from '../../src/identity/grants.ts';
import { StepUpRequired } from '../../src/identity/stepup.ts';
import { ValidationError } from '../../src/errors.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { actorByEmail, createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, tenantFor, type TestApp, startTestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { FACILITY_CHOICES_MAX, FACILITY_MATCHES_SHOWN } from '../../src/identity/grants-routes.tsx';
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


async function privileged(tenant: Tenant, email: string, now: Date) {
  return inTenant(database.db, tenant.id, (trx) =>
    trx
      .selectFrom('memberships as m')
      .innerJoin('accounts as a', 'a.id', 'm.account_id')
      .select(['m.id', 'm.role', 'm.expires_at', 'm.granted_by', 'm.approved_by'])
      .where('a.email', '=', email)
      .where('m.role', '<>', 'facility_staff')
      .where('m.revoked_at', 'is', null)
      .where((eb) => eb.or([eb('m.expires_at', 'is', null), eb('m.expires_at', '>', now)]))
      .execute(),
  );
}

const actor = (tenant: Tenant, email: string, now: Date, ageSeconds?: number, methods?: ('password' | 'passkey' | 'totp')[]) => actorByEmail(t, tenant, email, now, ageSeconds, methods);

async function events(tenant: Tenant, action: string, outcome?: string) {
  return inTenant(database.db, tenant.id, (trx) => {
    let q = trx.selectFrom('audit_events').selectAll().where('action', '=', action);
    if (outcome) q = q.where('outcome', '=', outcome as 'success');
    return q.orderBy('seq').execute();
  });
}

interface World {
  tenant: Tenant;
  admin: string;
  staff: string;
  parent: string;
  facility: string;
}

async function world(): Promise<World> {
  const tenant = await tenantFor(t);
  const tag = Math.random().toString(36).slice(2, 8);
  const w = { tenant, admin: `chef.${tag}@exemple.test`, staff: `educ.${tag}@exemple.test`, parent: `parent.${tag}@exemple.test`, facility: await createFacility(t, tenant) };
  const adminId = await createAdmin(t, tenant, w.admin);
  await createStaff(t, tenant, w.staff, w.facility);
  await createParent(t, tenant, w.parent);
  return w;
}

const REQUEST = { role: 'tenant_admin' as const, facilityId: null, reason: 'Remplacement pendant les vacances', durationMinutes: 240 };

describe('privileged roles by dual control', () => {
  it('the second administrator: a staff member asks for the role, the first administrator approves; it expires', async () => {
    const w = await world();
    const now = new Date();
    t.setNow(now);
    const staff = await actor(w.tenant, w.staff, now);
    const id = await requestGrant(t.deps, ctxFor(t, w.tenant, staff), { ...REQUEST, email: w.staff });
    expect(await privileged(w.tenant, w.staff, now)).toHaveLength(0);
    // the requester cannot approve, even holding an administrator role later
    const admin = await actor(w.tenant, w.admin, now);
    await decideGrant(t.deps, ctxFor(t, w.tenant, admin), id, 'approve');
    const granted = await privileged(w.tenant, w.staff, now);
    expect(granted).toHaveLength(1);
    expect(granted[0]!.role).toBe('tenant_admin');
    expect(granted[0]!.expires_at!.getTime()).toBe(now.getTime() + 240 * 60_000);
    expect(granted[0]!.approved_by).toBe(admin.accountId);
    expect(granted[0]!.granted_by).toBe(staff.accountId);
    // every privileged holder, and the grantee, heard of it by e-mail
    const mails = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('mail_outbox').select(['to_address', 'subject']).where('template', '=', 'privilege_notice').execute());
    // Both were queued at the same instant (the clock is fixed): compared as a set, the table has no other order.
    expect(mails.filter((m) => m.to_address === w.admin).map((m) => m.subject).sort()).toEqual(['Demande de rôle privilégié\u202f: Administrateur', 'Rôle privilégié accordé\u202f: Administrateur'].sort());
    expect(mails.some((m) => m.to_address === w.staff && m.subject.startsWith('Rôle privilégié accordé'))).toBe(true);
    expect(await events(w.tenant, 'identity.grant.request')).toHaveLength(1);
    expect(await events(w.tenant, 'identity.grant.approve')).toHaveLength(1);
    // four hours later the role is gone by itself
    const later = new Date(now.getTime() + 241 * 60_000);
    expect(await privileged(w.tenant, w.staff, later)).toHaveLength(0);
  });

  it('refuses self-approval, a replayed approval, and approval by an administrator whose role expired', async () => {
    const w = await world();
    const now = new Date();
    t.setNow(now);
    const admin = await actor(w.tenant, w.admin, now);
    // the administrator asks for someone: cannot approve it
    const id = await requestGrant(t.deps, ctxFor(t, w.tenant, admin), { ...REQUEST, role: 'security_officer', email: w.staff });
    await expect(decideGrant(t.deps, ctxFor(t, w.tenant, admin), id, 'approve')).rejects.toMatchObject({ kind: 'forbidden' });
    expect(await privileged(w.tenant, w.staff, now)).toHaveLength(0);
    expect((await events(w.tenant, 'identity.grant.approve', 'denied')).at(-1)!.details).toMatchObject({ reason: 'self_approval' });

    // a grantee cannot approve their own request either
    const selfId = await requestGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.staff, now)), { ...REQUEST, role: 'program_operator', email: w.staff });
    await decideGrant(t.deps, ctxFor(t, w.tenant, admin), selfId, 'approve');
    const second = await actor(w.tenant, w.staff, now);
    // staff now holds program_operator, not tenant_admin: it may not approve anything
    await expect(decideGrant(t.deps, ctxFor(t, w.tenant, second), id, 'approve')).rejects.toMatchObject({ kind: 'forbidden' });

    // replay: approving a decided request changes nothing
    await expect(decideGrant(t.deps, ctxFor(t, w.tenant, admin), selfId, 'approve')).rejects.toMatchObject({ fields: { _: 'grantDecided' } });
    expect((await privileged(w.tenant, w.staff, now)).filter((m) => m.role === 'program_operator')).toHaveLength(1);

    // an administrator whose granted role has expired approves nothing
    const other = `autre.${Date.now()}@exemple.test`;
    await createStaff(t, w.tenant, other, w.facility);
    const short = await requestGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, other, now)), { ...REQUEST, durationMinutes: 60, email: other });
    await decideGrant(t.deps, ctxFor(t, w.tenant, admin), short, 'approve');
    const pendingForParentless = await requestGrant(t.deps, ctxFor(t, w.tenant, admin), { ...REQUEST, role: 'program_operator', email: other });
    const after = new Date(now.getTime() + 61 * 60_000);
    t.setNow(after);
    const expired = await actor(w.tenant, other, after);
    expect(expired.memberships.some((m) => m.role === 'tenant_admin')).toBe(false);
    await expect(decideGrant(t.deps, ctxFor(t, w.tenant, expired), pendingForParentless, 'approve')).rejects.toMatchObject({ kind: 'forbidden' });
    t.setNow(new Date());
  });

  it('an administrator cannot approve the role of someone they invited (an alias of their own); another administrator can', async () => {
    const w = await world();
    const now = new Date();
    t.setNow(now);
    // The administrator invites an address (say, one they control) as staff, and that account asks for the role.
    const alias = `alias.${Date.now()}@exemple.test`;
    const admin = await actor(w.tenant, w.admin, now);
    await createStaff(t, w.tenant, alias, w.facility, admin.accountId);
    const id = await requestGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, alias, now)), { ...REQUEST, email: alias });
    await expect(decideGrant(t.deps, ctxFor(t, w.tenant, admin), id, 'approve')).rejects.toMatchObject({ kind: 'forbidden' });
    expect(await privileged(w.tenant, alias, now)).toHaveLength(0);
    expect((await events(w.tenant, 'identity.grant.approve', 'denied')).at(-1)!.details).toMatchObject({ reason: 'approver_invited_grantee' });
    // The request stays pending for someone else; the inviter may still refuse it.
    const status = async () => (await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('privilege_requests').select('status').where('id', '=', id).executeTakeFirstOrThrow())).status;
    expect(await status()).toBe('pending');

    // A second administrator (staff the first did not invite, granted by the first) approves it.
    const secondAdmin = await actor(w.tenant, w.staff, now);
    await decideGrant(t.deps, ctxFor(t, w.tenant, admin), await requestGrant(t.deps, ctxFor(t, w.tenant, secondAdmin), { ...REQUEST, email: w.staff }), 'approve');
    await decideGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.staff, now)), id, 'approve');
    expect((await privileged(w.tenant, alias, now)).map((m) => m.role)).toEqual(['tenant_admin']);

    // Over HTTP: the inviter's review page says why and offers only to refuse.
    const other = `alias2.${Date.now()}@exemple.test`;
    await createStaff(t, w.tenant, other, w.facility, admin.accountId);
    const id2 = await requestGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, other, now)), { ...REQUEST, email: other });
    const browser = new Client(t.app, w.tenant.hosts[0]!, '10.9.0.1');
    expect((await browser.signIn(w.admin, PASSWORD)).status).toBe(303);
    const page = await browser.get(`/admin/grants/${id2}`);
    expect(page.status).toBe(200);
    expect(page.body).toContain('Vous avez invité cette personne');
    expect(page.body).not.toContain(`/admin/grants/${id2}/approve`);
    expect(page.body).toContain(`/admin/grants/${id2}/refuse`);
    await decideGrant(t.deps, ctxFor(t, w.tenant, admin), id2, 'refuse');
    expect(await privileged(w.tenant, other, now)).toHaveLength(0);
  });

  it('demands a passkey used within five minutes from both sides', async () => {
    const w = await world();
    const now = new Date();
    t.setNow(now);
    const byPassword = await actor(w.tenant, w.staff, now, 10, ['password', 'totp']);
    await expect(requestGrant(t.deps, ctxFor(t, w.tenant, byPassword), { ...REQUEST, email: w.staff })).rejects.toBeInstanceOf(StepUpRequired);
    const staff = await actor(w.tenant, w.staff, now);
    const id = await requestGrant(t.deps, ctxFor(t, w.tenant, staff), { ...REQUEST, email: w.staff });
    const stale = await actor(w.tenant, w.admin, now, 301);
    await expect(decideGrant(t.deps, ctxFor(t, w.tenant, stale), id, 'approve')).rejects.toBeInstanceOf(StepUpRequired);
    expect(await privileged(w.tenant, w.staff, now)).toHaveLength(0);
  });

  it('no one else may ask or decide: parents, and staff asking for someone else', async () => {
    const w = await world();
    const now = new Date();
    t.setNow(now);
    const parent = await actor(w.tenant, w.parent, now);
    await expect(requestGrant(t.deps, ctxFor(t, w.tenant, parent), { ...REQUEST, email: w.parent })).rejects.toMatchObject({ kind: 'forbidden' });
    const staff = await actor(w.tenant, w.staff, now);
    await expect(requestGrant(t.deps, ctxFor(t, w.tenant, staff), { ...REQUEST, email: w.parent })).rejects.toMatchObject({ kind: 'forbidden' });
    const denied = await events(w.tenant, 'identity.grant.request', 'denied');
    expect(denied).toHaveLength(2);
  });

  it('removing someone else’s role takes a passkey used in the last five minutes; giving up one’s own takes none', async () => {
    const w = await world();
    const now = new Date();
    t.setNow(now);
    const staff = await actor(w.tenant, w.staff, now);
    const id = await requestGrant(t.deps, ctxFor(t, w.tenant, staff), { ...REQUEST, role: 'security_officer', email: w.staff });
    await decideGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.admin, now)), id, 'approve');
    const [officer] = await privileged(w.tenant, w.staff, now);
    // A phished session (password and app code) and a passkey used ten minutes ago: refused, the role stays.
    for (const admin of [await actor(w.tenant, w.admin, now, 10, ['password', 'totp']), await actor(w.tenant, w.admin, now, 600)]) {
      const err = await revokeMembership(t.deps, ctxFor(t, w.tenant, admin), officer!.id).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StepUpRequired);
      expect((err as StepUpRequired).phishingResistant).toBe(true);
      expect((err as StepUpRequired).returnTo).toBe('/admin/grants');
    }
    expect(await privileged(w.tenant, w.staff, now)).toHaveLength(1);
    const refused = await events(w.tenant, 'identity.grant.revoke', 'denied');
    expect(refused.map((e) => e.details)).toEqual([{ reason: 'step_up_required' }, { reason: 'step_up_required' }]);
    expect(await events(w.tenant, 'identity.grant.revoke', 'success')).toHaveLength(0);
    // The only administrator cannot give the role up: no one could grant one again.
    const [own] = await privileged(w.tenant, w.admin, now);
    const stale = await actor(w.tenant, w.admin, now, 600, ['password', 'totp']);
    const last = await revokeMembership(t.deps, ctxFor(t, w.tenant, stale), own!.id).catch((e: unknown) => e);
    expect(last).toBeInstanceOf(ValidationError);
    expect((last as ValidationError).fields).toEqual({ _: 'lastAdministrator' });
    expect(await privileged(w.tenant, w.admin, now)).toHaveLength(1);
    // With a second administrator, the first gives up their own role with the same stale session.
    const second = await actor(w.tenant, w.staff, now);
    const id2 = await requestGrant(t.deps, ctxFor(t, w.tenant, second), { ...REQUEST, email: w.staff });
    await decideGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.admin, now)), id2, 'approve');
    await revokeMembership(t.deps, ctxFor(t, w.tenant, stale), own!.id);
    expect(await privileged(w.tenant, w.admin, now)).toHaveLength(0);
    expect(await privileged(w.tenant, w.staff, now)).toHaveLength(2);
  });

  it('revoking a role takes effect at once and ends the holder’s sessions', async () => {
    const w = await world();
    const now = new Date();
    t.setNow(now);
    const staff = await actor(w.tenant, w.staff, now);
    const id = await requestGrant(t.deps, ctxFor(t, w.tenant, staff), { ...REQUEST, role: 'security_officer', email: w.staff });
    const admin = await actor(w.tenant, w.admin, now);
    await decideGrant(t.deps, ctxFor(t, w.tenant, admin), id, 'approve');
    const [m] = await privileged(w.tenant, w.staff, now);
    await inTenant(database.db, w.tenant.id, (trx) =>
      trx.insertInto('sessions').values({ tenant_id: w.tenant.id, account_id: staff.accountId, token_hash: Buffer.from(`s${Math.random()}`), created_at: now, last_seen_at: now, idle_timeout_seconds: 900, expires_at: new Date(now.getTime() + 3600_000), ip: null, user_agent: null }).execute(),
    );
    await revokeMembership(t.deps, ctxFor(t, w.tenant, admin), m!.id);
    expect(await privileged(w.tenant, w.staff, now)).toHaveLength(0);
    const live = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('sessions').select('id').where('account_id', '=', staff.accountId).where('revoked_at', 'is', null).execute());
    expect(live).toHaveLength(0);
    expect(await events(w.tenant, 'identity.grant.revoke')).toHaveLength(1);
  });
});

describe('the grant request page in a large programme', () => {
  it('lists every facility in a small programme; beyond 200, those a search finds, and keeps the choice when the form comes back', async () => {
    const w = await world();
    const c = new Client(t.app, w.tenant.hosts[0]!);
    expect((await c.signIn(w.admin, PASSWORD)).status).toBe(303);
    const options = (html: string) => [...html.matchAll(/<option value="([^"]*)"/g)].map((m) => m[1]!).filter((v) => /^[0-9a-f-]{36}$/.test(v));
    const small = await c.get('/grants/new');
    expect(options(small.body)).toEqual([w.facility]);
    expect(small.body).not.toContain('name="facilityQuery"');

    for (let i = 0; i < FACILITY_CHOICES_MAX; i++) await createFacility(t, w.tenant, { name: `Garderie Boréale ${i}`, municipality: 'Rimouski' });
    const wanted = await createFacility(t, w.tenant, { name: 'CPE Les Hirondelles', municipality: 'Gaspé' });
    const large = await c.get('/grants/new');
    expect(large.status).toBe(200);
    expect(large.body).toContain('name="facilityQuery"');
    expect(options(large.body)).toEqual([]);
    const found = await c.get('/grants/new?facilityQuery=hirondelles');
    expect(options(found.body)).toEqual([wanted]);
    expect(textOf(found.body)).toContain('1 service(s) trouvé(s)');
    const many = await c.get('/grants/new?facilityQuery=bor%C3%A9ale');
    expect(options(many.body)).toHaveLength(FACILITY_MATCHES_SHOWN);
    expect(textOf(many.body)).toContain(`${FACILITY_CHOICES_MAX} services trouvés ; les ${FACILITY_MATCHES_SHOWN} premiers`);
    // A spoiled field sends the form back before any step-up, with the facility still chosen and the search kept.
    const back = await c.post('/grants/new', { email: w.staff, role: 'facility_director', facilityId: wanted, reason: '', durationMinutes: '240', facilityQuery: 'hirondelles' });
    expect(back.status).toBe(400);
    expect(back.body).toMatch(new RegExp(`<option value="${wanted}" selected`));
    expect(back.body).toContain('value="hirondelles"');
    expect(await privileged(w.tenant, w.staff, new Date())).toEqual([]);
  });
});
