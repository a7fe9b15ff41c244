import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { applyResponse } from '../../src/detection/response.ts';
import { DEFAULT_RULES } from '../../src/detection/rules.ts';
import { decideGrant, requestGrant, revokeMembership } from '../../src/identity/grants.ts';
import { hashPassword } from '../../src/identity/passwords.ts';
import { bootstrapAdmins } from '../../src/identity/service.ts';
import { StepUpRequired } from '../../src/identity/stepup.ts';
import { ValidationError } from '../../src/errors.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { actorByEmail, createAdmin, createAdmins, createFacility, createParent, createStaff, ctxFor, PASSWORD, tenantFor, type TestApp, startTestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { FACILITY_CHOICES_MAX, FACILITY_MATCHES_SHOWN } from '../../src/identity/grants-routes.tsx';
import { createTestDatabase, testDatabaseInfo, type TestDatabase } from '../helpers/db.ts';

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
  /** The second bootstrap administrator: a request for oneself needs two. */
  admin2: string;
  staff: string;
  parent: string;
  facility: string;
}

async function world(opts: { admins?: 1 | 2 } = {}): Promise<World> {
  const tenant = await tenantFor(t);
  const tag = Math.random().toString(36).slice(2, 8);
  const w = { tenant, admin: `chef.${tag}@exemple.test`, admin2: `adjoint.${tag}@exemple.test`, staff: `educ.${tag}@exemple.test`, parent: `parent.${tag}@exemple.test`, facility: await createFacility(t, tenant) };
  await createAdmins(t, tenant, opts.admins === 1 ? [w.admin] : [w.admin, w.admin2]);
  await createStaff(t, tenant, w.staff, w.facility);
  await createParent(t, tenant, w.parent);
  return w;
}

const REQUEST = { role: 'tenant_admin' as const, facilityId: null, reason: 'Remplacement pendant les vacances', durationMinutes: 240 };

describe('privileged roles by dual control', () => {
  it('a staff member asks for the role for herself: one administrator endorses, a second one approves; it expires', async () => {
    const w = await world();
    const now = new Date();
    t.setNow(now);
    const staff = await actor(w.tenant, w.staff, now);
    const id = await requestGrant(t.deps, ctxFor(t, w.tenant, staff), { ...REQUEST, email: w.staff });
    expect(await privileged(w.tenant, w.staff, now)).toHaveLength(0);
    // the person the role is for does not count: the first administrator's approval only endorses the request
    const admin = await actor(w.tenant, w.admin, now);
    expect(await decideGrant(t.deps, ctxFor(t, w.tenant, admin), id, 'approve')).toBe('endorsed');
    expect(await privileged(w.tenant, w.staff, now)).toHaveLength(0);
    // the endorser cannot approve it a second time
    await expect(decideGrant(t.deps, ctxFor(t, w.tenant, admin), id, 'approve')).rejects.toMatchObject({ kind: 'forbidden' });
    expect((await events(w.tenant, 'identity.grant.approve', 'denied')).at(-1)!.details).toMatchObject({ reason: 'endorser_cannot_approve' });
    expect(await privileged(w.tenant, w.staff, now)).toHaveLength(0);
    const admin2 = await actor(w.tenant, w.admin2, now);
    expect(await decideGrant(t.deps, ctxFor(t, w.tenant, admin2), id, 'approve')).toBe('approved');
    const granted = await privileged(w.tenant, w.staff, now);
    expect(granted).toHaveLength(1);
    expect(granted[0]!.role).toBe('tenant_admin');
    expect(granted[0]!.expires_at!.getTime()).toBe(now.getTime() + 240 * 60_000);
    expect(granted[0]!.approved_by).toBe(admin2.accountId);
    expect(granted[0]!.granted_by).toBe(admin.accountId);
    // every privileged holder, and the grantee, heard of it by e-mail
    const mails = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('mail_outbox').select(['to_address', 'subject']).where('template', '=', 'privilege_notice').execute());
    // Both were queued at the same instant (the clock is fixed): compared as a set, the table has no other order.
    expect(mails.filter((m) => m.to_address === w.admin).map((m) => m.subject).sort()).toEqual(['Demande de rôle privilégié\u202f: Administrateur', 'Demande de rôle privilégié appuyée\u202f: Administrateur', 'Rôle privilégié accordé\u202f: Administrateur'].sort());
    expect(mails.some((m) => m.to_address === w.staff && m.subject.startsWith('Rôle privilégié accordé'))).toBe(true);
    expect(await events(w.tenant, 'identity.grant.request')).toHaveLength(1);
    expect(await events(w.tenant, 'identity.grant.endorse')).toHaveLength(1);
    expect(await events(w.tenant, 'identity.grant.approve', 'success')).toHaveLength(1);
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
    await decideGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.admin2, now)), selfId, 'approve');
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
    await decideGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.admin2, now)), short, 'approve');
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

    // Two other administrators: one endorses it, the next approves it (staff the first did not invite, made an administrator by the first two).
    const admin2 = await actor(w.tenant, w.admin2, now);
    const third = await requestGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.staff, now)), { ...REQUEST, email: w.staff });
    await decideGrant(t.deps, ctxFor(t, w.tenant, admin), third, 'approve');
    await decideGrant(t.deps, ctxFor(t, w.tenant, admin2), third, 'approve');
    expect(await decideGrant(t.deps, ctxFor(t, w.tenant, admin2), id, 'approve')).toBe('endorsed');
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
    await decideGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.admin2, now)), id, 'approve');
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
    const solo = await world({ admins: 1 });
    const [only] = await privileged(solo.tenant, solo.admin, now);
    const last = await revokeMembership(t.deps, ctxFor(t, solo.tenant, await actor(solo.tenant, solo.admin, now, 600, ['password', 'totp'])), only!.id).catch((e: unknown) => e);
    expect(last).toBeInstanceOf(ValidationError);
    expect((last as ValidationError).fields).toEqual({ _: 'lastAdministrator' });
    expect(await privileged(solo.tenant, solo.admin, now)).toHaveLength(1);
    // With a second administrator, the first gives up their own role with a stale session.
    const [own] = await privileged(w.tenant, w.admin, now);
    const stale = await actor(w.tenant, w.admin, now, 600, ['password', 'totp']);
    await revokeMembership(t.deps, ctxFor(t, w.tenant, stale), own!.id);
    expect(await privileged(w.tenant, w.admin, now)).toHaveLength(0);
    expect(await privileged(w.tenant, w.admin2, now)).toHaveLength(1);
  });

  it('revoking a role takes effect at once and ends the holder’s sessions', async () => {
    const w = await world();
    const now = new Date();
    t.setNow(now);
    const staff = await actor(w.tenant, w.staff, now);
    const id = await requestGrant(t.deps, ctxFor(t, w.tenant, staff), { ...REQUEST, role: 'security_officer', email: w.staff });
    const admin = await actor(w.tenant, w.admin, now);
    await decideGrant(t.deps, ctxFor(t, w.tenant, admin), id, 'approve');
    await decideGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.admin2, now)), id, 'approve');
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

describe('the person a role is for is never one of the two who confer it', () => {
  it('an administrator who controls a second account, invited by a colleague, cannot make it an administrator alone', async () => {
    const w = await world();
    const now = new Date();
    t.setNow(now);
    // The colleague (admin2) invites an address the first administrator controls, in good faith; nothing ties it to the first.
    const puppet = `nouvelle.${Date.now()}@exemple.test`;
    const admin2 = await actor(w.tenant, w.admin2, now);
    await createStaff(t, w.tenant, puppet, w.facility, admin2.accountId);
    const id = await requestGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, puppet, now)), { ...REQUEST, email: puppet });
    const admin = await actor(w.tenant, w.admin, now);
    // The first administrator's approval is one of two: it endorses, and grants nothing.
    expect(await decideGrant(t.deps, ctxFor(t, w.tenant, admin), id, 'approve')).toBe('endorsed');
    expect(await privileged(w.tenant, puppet, now)).toHaveLength(0);
    // Neither of the two accounts they hold can add the second approval.
    await expect(decideGrant(t.deps, ctxFor(t, w.tenant, admin), id, 'approve')).rejects.toMatchObject({ kind: 'forbidden' });
    await expect(decideGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, puppet, now)), id, 'approve')).rejects.toMatchObject({ kind: 'forbidden' });
    expect(await privileged(w.tenant, puppet, now)).toHaveLength(0);
    // The other administrators hear of the endorsement, and may refuse it.
    const mails = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('mail_outbox').select(['to_address', 'subject']).where('template', '=', 'privilege_notice').execute());
    expect(mails.some((m) => m.to_address === w.admin2 && m.subject === 'Demande de rôle privilégié appuyée\u202f: Administrateur')).toBe(true);
    expect(await decideGrant(t.deps, ctxFor(t, w.tenant, admin2), id, 'refuse')).toBe('refused');
    expect(await privileged(w.tenant, puppet, now)).toHaveLength(0);
  });

  it('nor through a facility director role it first had approved by a colleague', async () => {
    const w = await world();
    const now = new Date();
    t.setNow(now);
    const puppet = `direction.${Date.now()}@exemple.test`;
    await createStaff(t, w.tenant, puppet, w.facility);
    const admin = await actor(w.tenant, w.admin, now);
    const director = await requestGrant(t.deps, ctxFor(t, w.tenant, admin), { ...REQUEST, role: 'facility_director', facilityId: w.facility, durationMinutes: 720, email: puppet });
    expect(await decideGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.admin2, now)), director, 'approve')).toBe('approved');
    // Two hours later, past the cooling-off, the new director asks for the administrator role; the first administrator approves.
    const later = new Date(now.getTime() + 2 * 3600_000);
    t.setNow(later);
    const id = await requestGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, puppet, later)), { ...REQUEST, email: puppet });
    expect(await decideGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.admin, later)), id, 'approve')).toBe('endorsed');
    expect((await privileged(w.tenant, puppet, later)).map((m) => m.role)).toEqual(['facility_director']);
    t.setNow(new Date());
  });

  it('a request made for someone else lapses with its requester’s role; a suspended grantee gets nothing', async () => {
    const w = await world();
    const now = new Date();
    t.setNow(now);
    const admin = await actor(w.tenant, w.admin, now);
    const admin2 = await actor(w.tenant, w.admin2, now);
    const id = await requestGrant(t.deps, ctxFor(t, w.tenant, admin2), { ...REQUEST, role: 'program_operator', email: w.staff });
    const [own2] = await privileged(w.tenant, w.admin2, now);
    await revokeMembership(t.deps, ctxFor(t, w.tenant, admin2), own2!.id);
    await expect(decideGrant(t.deps, ctxFor(t, w.tenant, admin), id, 'approve')).rejects.toMatchObject({ fields: { _: 'grantRequesterGone' } });
    expect(await privileged(w.tenant, w.staff, now)).toHaveLength(0);
    expect((await events(w.tenant, 'identity.grant.approve', 'denied')).at(-1)!.details).toMatchObject({ reason: 'requester_no_longer_admin' });

    const w2 = await world();
    const req = await requestGrant(t.deps, ctxFor(t, w2.tenant, await actor(w2.tenant, w2.admin, now)), { ...REQUEST, role: 'security_officer', email: w2.staff });
    await inTenant(database.db, w2.tenant.id, (trx) => trx.updateTable('accounts').set({ status: 'suspended' }).where('email', '=', w2.staff).execute());
    await expect(decideGrant(t.deps, ctxFor(t, w2.tenant, await actor(w2.tenant, w2.admin2, now)), req, 'approve')).rejects.toMatchObject({ fields: { _: 'grantGranteeInactive' } });
    expect(await privileged(w2.tenant, w2.staff, now)).toHaveLength(0);
  });

  it('detection suspending an account cancels the requests it asked for or was named in, and no one can approve them after', async () => {
    const w = await world();
    const now = new Date();
    t.setNow(now);
    const admin = await actor(w.tenant, w.admin, now);
    const forStaff = await requestGrant(t.deps, ctxFor(t, w.tenant, admin), { ...REQUEST, role: 'security_officer', email: w.staff });
    const byAdmin = await requestGrant(t.deps, ctxFor(t, w.tenant, admin), { ...REQUEST, role: 'program_operator', email: w.parent });
    const untouched = await requestGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.admin2, now)), { ...REQUEST, role: 'security_officer', email: w.parent });
    const suspend = [DEFAULT_RULES.find((r) => r.response === 'suspend')!];
    const staffId = (await actor(w.tenant, w.staff, now)).accountId;
    await inTenant(database.db, w.tenant.id, (trx) => applyResponse(trx, w.tenant.id, staffId, suspend, now));
    await inTenant(database.db, w.tenant.id, (trx) => applyResponse(trx, w.tenant.id, admin.accountId, suspend, now));
    const status = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('privilege_requests').select(['id', 'status', 'decided_by']).execute());
    expect(Object.fromEntries(status.map((r) => [r.id, [r.status, r.decided_by]]))).toEqual({ [forStaff]: ['cancelled', null], [byAdmin]: ['cancelled', null], [untouched]: ['pending', null] });
    const cancelled = await events(w.tenant, 'identity.grant.cancel');
    expect(cancelled.map((e) => [e.target_ids[0], e.actor_roles, e.details])).toEqual([
      [forStaff, ['system:detection'], { role: 'security_officer', reason: 'account_suspended' }],
      [byAdmin, ['system:detection'], { role: 'program_operator', reason: 'account_suspended' }],
    ]);
    // Decided once: a cancelled request is no longer offered, and approving it changes nothing.
    const admin2 = await actor(w.tenant, w.admin2, now);
    await expect(decideGrant(t.deps, ctxFor(t, w.tenant, admin2), forStaff, 'approve')).rejects.toBeTruthy();
    expect(await privileged(w.tenant, w.staff, now)).toHaveLength(0);
  });

  it.skipIf(testDatabaseInfo().kind !== 'postgres')('an approval waits for a revocation of the approver’s role that is committing, then is refused', async () => {
    const w = await world();
    const now = new Date();
    t.setNow(now);
    const id = await requestGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.admin, now)), { ...REQUEST, role: 'program_operator', email: w.staff });
    const admin2 = await actor(w.tenant, w.admin2, now);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let revoked!: () => void;
    const ready = new Promise<void>((r) => (revoked = r));
    const revocation = inTenant(database.db, w.tenant.id, async (trx) => {
      await trx.updateTable('memberships').set({ revoked_at: now }).where('account_id', '=', admin2.accountId).where('role', '=', 'tenant_admin').execute();
      revoked();
      await gate;
    });
    await ready;
    let settled = false;
    const approval = decideGrant(t.deps, ctxFor(t, w.tenant, admin2), id, 'approve').finally(() => (settled = true));
    approval.catch(() => {});
    try {
      await new Promise((r) => setTimeout(r, 400));
      // The approval waits on the approver's membership, locked by the revocation.
      expect(settled).toBe(false);
    } finally {
      release();
      await revocation;
    }
    await expect(approval).rejects.toThrow(/approver holds no current administrator role/);
    expect(await privileged(w.tenant, w.staff, now)).toHaveLength(0);
  });

  it('the database refuses the same, whatever path writes', async () => {
    const w = await world();
    const now = new Date();
    t.setNow(now);
    const ids = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('accounts').select(['id', 'email']).where('email', 'in', [w.admin, w.admin2, w.staff]).execute());
    const idOf = (e: string) => ids.find((r) => r.email === e)!.id;
    const grant = (grantedBy: string, approvedBy: string) =>
      inTenant(database.db, w.tenant.id, (trx) =>
        trx.insertInto('memberships').values({ tenant_id: w.tenant.id, account_id: idOf(w.staff), role: 'tenant_admin', facility_id: null, source: 'grant', granted_by: grantedBy, approved_by: approvedBy, created_at: now, expires_at: new Date(now.getTime() + 3600_000) }).execute(),
      );
    // the grantee as the first of the two people
    await expect(grant(idOf(w.staff), idOf(w.admin))).rejects.toThrow(/grantee cannot be one of the two/);
    // a request for oneself marked approved without an endorsement, or endorsed by someone who is not an administrator
    const id = await requestGrant(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.staff, now)), { ...REQUEST, email: w.staff });
    const update = (set: { status?: 'approved'; decided_by?: string; decided_at?: Date; endorsed_by?: string; endorsed_at?: Date }) =>
      inTenant(database.db, w.tenant.id, (trx) => trx.updateTable('privilege_requests').set(set).where('id', '=', id).execute());
    await expect(update({ status: 'approved', decided_by: idOf(w.admin), decided_at: now })).rejects.toThrow(/only after another administrator endorsed/);
    await expect(update({ endorsed_by: idOf(w.staff), endorsed_at: now })).rejects.toThrow();
    const parentId = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('accounts').select('id').where('email', '=', w.parent).executeTakeFirstOrThrow());
    await expect(update({ endorsed_by: parentId.id, endorsed_at: now })).rejects.toThrow(/endorser holds no current administrator role/);
    await update({ endorsed_by: idOf(w.admin), endorsed_at: now });
    await expect(update({ endorsed_by: idOf(w.admin2), endorsed_at: now })).rejects.toThrow(/already endorsed/);
    // the endorser approving it as well
    await expect(update({ status: 'approved', decided_by: idOf(w.admin), decided_at: now })).rejects.toThrow();
    expect(await privileged(w.tenant, w.staff, now)).toHaveLength(0);
  });
});

describe('the bootstrap of an address someone already signed up with', () => {
  it('an unconfirmed account named administrator loses the password and links whoever created it set', async () => {
    const tenant = await tenantFor(t);
    const now = new Date();
    const email = `future.admin.${Date.now()}@exemple.test`;
    const hash = await hashPassword('mot de passe de quelqu’un d’autre');
    const accountId = await inTenant(database.db, tenant.id, async (trx) => {
      const id = (await trx.insertInto('accounts').values({ tenant_id: tenant.id, email, password_hash: hash, locale: 'fr', email_verified_at: null }).returning('id').executeTakeFirstOrThrow()).id;
      await trx.insertInto('account_tokens').values({ tenant_id: tenant.id, account_id: id, purpose: 'verify_email', token_hash: Buffer.from(`v${Math.random()}`), created_at: now, expires_at: new Date(now.getTime() + 86_400_000) }).execute();
      return id;
    });
    const [boot] = await bootstrapAdmins(database.db, tenant, [email], 'http://localhost', { actorAccountId: null, actorRoles: ['system:test'], ip: null, userAgent: null, requestId: null }, now);
    expect(boot!.accountId).toBe(accountId);
    const after = await inTenant(database.db, tenant.id, async (trx) => ({
      account: await trx.selectFrom('accounts').select(['password_hash', 'email_verified_at']).where('id', '=', accountId).executeTakeFirstOrThrow(),
      open: await trx.selectFrom('account_tokens').select('purpose').where('account_id', '=', accountId).where('used_at', 'is', null).execute(),
    }));
    expect(after.account).toEqual({ password_hash: null, email_verified_at: null });
    // Only the bootstrap's own link opens the account.
    expect(after.open.map((r) => r.purpose)).toEqual(['set_password']);
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
