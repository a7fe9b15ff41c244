/**
 * Resetting the second factors of someone who lost them all: one
 * administrator asks, a different current administrator approves, both with
 * a fresh passkey; the person's factors go, their sessions end, and everyone
 * concerned hears of it. Refusals are audited, and the database refuses the
 * same things again when the application is bypassed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { applyResponse } from '../../src/detection/response.ts';
import { DEFAULT_RULES } from '../../src/detection/rules.ts';
import { decideFactorReset, requestFactorReset } from '../../src/identity/factor-resets.ts';
import { enrolledFactors, hasSecondFactor } from '../../src/identity/factors/store.ts';
import { decideGrant, requestGrant } from '../../src/identity/grants.ts';
import { StepUpRequired } from '../../src/identity/stepup.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { actorByEmail, PASSWORD, createAdmin, createAdmins, createFacility, createParent, createStaff, ctxFor, tenantFor, type TestApp, startTestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';

let database: TestDatabase;
let t: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
});
afterAll(async () => {
  t?.setNow(new Date());
  await t?.close();
  await database?.close();
});


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
  second: string;
  staff: string;
  staffId: string;
  parent: string;
}

/** A tenant with two administrators (the second granted by dual control), a staff member with an app, a parent without factors. */
async function world(now: Date): Promise<World> {
  t.setNow(now);
  const tenant = await tenantFor(t);
  const tag = Math.random().toString(36).slice(2, 8);
  const facility = await createFacility(t, tenant);
  const w = { tenant, admin: `chef.${tag}@exemple.test`, second: `adjointe.${tag}@exemple.test`, staff: `educ.${tag}@exemple.test`, parent: `parent.${tag}@exemple.test` };
  // A third administrator from the bootstrap: a request for oneself needs two administrators besides the grantee.
  const [adminId] = await createAdmins(t, tenant, [w.admin, `tiers.${tag}@exemple.test`]);
  await createStaff(t, tenant, w.second, facility);
  const staffId = await createStaff(t, tenant, w.staff, facility, adminId);
  await createParent(t, tenant, w.parent);
  const id = await requestGrant(t.deps, ctxFor(t, tenant, await actor(tenant, w.second, now)), { email: w.second, role: 'tenant_admin', facilityId: null, reason: 'Deuxième administratrice', durationMinutes: 720 });
  await decideGrant(t.deps, ctxFor(t, tenant, await actor(tenant, w.admin, now)), id, 'approve');
  await decideGrant(t.deps, ctxFor(t, tenant, await actor(tenant, `tiers.${tag}@exemple.test`, now)), id, 'approve');
  return { ...w, staffId };
}

async function factorsOf(tenant: Tenant, accountId: string) {
  return inTenant(database.db, tenant.id, (trx) => enrolledFactors(trx, accountId));
}

describe('resetting a lost second factor by dual control', () => {
  it('one administrator asks, another approves: the app and recovery codes go, the sessions end, everyone hears of it', async () => {
    const now = new Date();
    const w = await world(now);
    expect(hasSecondFactor(await factorsOf(w.tenant, w.staffId))).toBe(true);
    // the staff member's own session, which the reset must end
    const c = new Client(t.app, w.tenant.hosts[0]!);
    await c.signIn(w.staff, PASSWORD);
    const admin = await actor(w.tenant, w.admin, now);
    const id = await requestFactorReset(t.deps, ctxFor(t, w.tenant, admin), { email: w.staff, reason: 'Rappel au numéro de téléphone du dossier RH' });
    // asking changes nothing yet, and the one who asked cannot approve
    expect(hasSecondFactor(await factorsOf(w.tenant, w.staffId))).toBe(true);
    await expect(decideFactorReset(t.deps, ctxFor(t, w.tenant, admin), id, 'approve')).rejects.toMatchObject({ kind: 'forbidden' });
    expect((await events(w.tenant, 'identity.factorReset.approve', 'denied')).at(-1)!.details).toMatchObject({ reason: 'self_approval' });
    expect(hasSecondFactor(await factorsOf(w.tenant, w.staffId))).toBe(true);

    await decideFactorReset(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.second, now)), id, 'approve');
    const after = await factorsOf(w.tenant, w.staffId);
    expect(hasSecondFactor(after)).toBe(false);
    expect(after.recoveryLeft).toBe(0);
    const live = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('sessions').select('id').where('account_id', '=', w.staffId).where('revoked_at', 'is', null).execute());
    expect(live).toEqual([]);
    const approved = await events(w.tenant, 'identity.factorReset.approve', 'success');
    expect(approved).toHaveLength(1);
    expect(approved[0]!.details).toMatchObject({ totp: 1, passkeys: 0 });
    expect(approved[0]!.details.sessions).toBeGreaterThanOrEqual(1);
    expect(await events(w.tenant, 'identity.factorReset.request', 'success')).toHaveLength(1);

    // the person (both steps) and both administrators (both steps) were told
    const mails = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('mail_outbox').select(['to_address', 'subject']).where('template', '=', 'factor_reset').execute());
    expect(mails.filter((m) => m.to_address === w.staff).map((m) => m.subject).sort()).toEqual(['Demande de réinitialisation de votre deuxième étape de connexion', 'Votre deuxième étape de connexion a été retirée'].sort());
    expect(mails.filter((m) => m.to_address === w.admin)).toHaveLength(2);
    expect(mails.filter((m) => m.to_address === w.second)).toHaveLength(2);

    // replayed approval: already decided, audited, nothing changes
    await expect(decideFactorReset(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.second, now)), id, 'approve')).rejects.toMatchObject({ fields: { _: 'factorResetDecided' } });
    expect((await events(w.tenant, 'identity.factorReset.approve', 'denied')).at(-1)!.details).toMatchObject({ reason: 'already_decided_or_expired' });

    // the person signs in with the password alone now, and is asked to enrol before opening personal data
    const again = new Client(t.app, w.tenant.hosts[0]!);
    const r = await again.signIn(w.staff, PASSWORD);
    expect(r.status).toBe(303);
    expect(again.cookies.get('guichet_session')).toBeDefined();
  });

  it('refuses: anyone but an administrator, oneself, an account with no factor, a stale or password-only sign-in, an expired request', async () => {
    const now = new Date();
    const w = await world(now);
    const staff = await actor(w.tenant, w.staff, now);
    await expect(requestFactorReset(t.deps, ctxFor(t, w.tenant, staff), { email: w.parent, reason: 'x' })).rejects.toMatchObject({ kind: 'forbidden' });
    await expect(requestFactorReset(t.deps, ctxFor(t, w.tenant, null), { email: w.staff, reason: 'x' })).rejects.toMatchObject({ kind: 'signInRequired' });
    expect(await events(w.tenant, 'identity.factorReset.request', 'denied')).toHaveLength(2);

    const admin = await actor(w.tenant, w.admin, now);
    await expect(requestFactorReset(t.deps, ctxFor(t, w.tenant, admin), { email: w.admin, reason: 'x' })).rejects.toMatchObject({ fields: { email: 'factorResetSelf' } });
    await expect(requestFactorReset(t.deps, ctxFor(t, w.tenant, admin), { email: w.parent, reason: 'x' })).rejects.toMatchObject({ fields: { email: 'factorResetNothing' } });
    await expect(requestFactorReset(t.deps, ctxFor(t, w.tenant, admin), { email: `personne.${Date.now()}@exemple.test`, reason: 'x' })).rejects.toMatchObject({ fields: { email: 'factorResetUnknownAccount' } });
    await expect(requestFactorReset(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.admin, now, 10, ['password', 'totp'])), { email: w.staff, reason: 'x' })).rejects.toBeInstanceOf(StepUpRequired);

    const id = await requestFactorReset(t.deps, ctxFor(t, w.tenant, admin), { email: w.staff, reason: 'Pièce d’identité au comptoir' });
    await expect(requestFactorReset(t.deps, ctxFor(t, w.tenant, admin), { email: w.staff, reason: 'encore' })).rejects.toMatchObject({ fields: { email: 'factorResetPending' } });
    await expect(decideFactorReset(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.second, now, 301)), id, 'approve')).rejects.toBeInstanceOf(StepUpRequired);
    await expect(decideFactorReset(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.second, now)), 'not-an-id', 'approve')).rejects.toMatchObject({ kind: 'notFound' });
    // a day later the request has lapsed
    const later = new Date(now.getTime() + 25 * 3600_000);
    t.setNow(later);
    await expect(decideFactorReset(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.admin, later)), id, 'refuse')).rejects.toMatchObject({ fields: { _: 'factorResetDecided' } });
    t.setNow(now);
    expect(hasSecondFactor(await factorsOf(w.tenant, w.staffId))).toBe(true);
  });

  it('the database refuses a request by a non-administrator and a second decision, whatever the code', async () => {
    const now = new Date();
    const w = await world(now);
    const ids = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('accounts').select(['id', 'email']).execute());
    const idOf = (e: string) => ids.find((a) => a.email === e)!.id;
    await expect(
      inTenant(database.db, w.tenant.id, (trx) =>
        trx.insertInto('factor_reset_requests').values({ tenant_id: w.tenant.id, account_id: idOf(w.parent), reason: 'x', requested_by: w.staffId, requested_at: now, expires_at: new Date(now.getTime() + 3600_000) }).execute(),
      ),
    ).rejects.toThrow(/holds no current administrator role/);
    const id = await requestFactorReset(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.admin, now)), { email: w.staff, reason: 'Rappel' });
    await expect(
      inTenant(database.db, w.tenant.id, (trx) => trx.updateTable('factor_reset_requests').set({ status: 'approved', decided_by: idOf(w.admin), decided_at: now }).where('id', '=', id).execute()),
    ).rejects.toThrow(/check constraint/);
    await decideFactorReset(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.second, now)), id, 'refuse');
    await expect(
      inTenant(database.db, w.tenant.id, (trx) => trx.updateTable('factor_reset_requests').set({ status: 'approved', decided_by: idOf(w.second), decided_at: now }).where('id', '=', id).execute()),
    ).rejects.toThrow(/already decided/);
    expect(hasSecondFactor(await factorsOf(w.tenant, w.staffId))).toBe(true);
  });

  it('a request goes with its asker’s suspension; one whose asker lost the role is approvable neither by the application nor in the database', async () => {
    const now = new Date();
    const w = await world(now);
    const ids = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('accounts').select(['id', 'email']).execute());
    const idOf = (e: string) => ids.find((a) => a.email === e)!.id;
    const tiers = ids.find((a) => a.email.startsWith('tiers.'))!.email;
    const admin = await actor(w.tenant, w.admin, now);

    // detection suspends the administrator who asked (an account taken over): the request is cancelled, by nobody
    const byAdmin = await requestFactorReset(t.deps, ctxFor(t, w.tenant, admin), { email: w.staff, reason: 'Rappel au numéro du dossier' });
    const suspend = [DEFAULT_RULES.find((r) => r.response === 'suspend')!];
    await inTenant(database.db, w.tenant.id, (trx) => applyResponse(trx, w.tenant.id, admin.accountId, suspend, now));
    const row = async (id: string) => inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('factor_reset_requests').select(['status', 'decided_by']).where('id', '=', id).executeTakeFirstOrThrow());
    expect(await row(byAdmin)).toEqual({ status: 'cancelled', decided_by: null });
    const cancelled = await events(w.tenant, 'identity.factorReset.cancel');
    expect(cancelled.map((e) => [e.target_ids, e.actor_roles, e.details])).toEqual([[[byAdmin, w.staffId], ['system:detection'], { reason: 'account_suspended' }]]);
    await expect(decideFactorReset(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.second, now)), byAdmin, 'approve')).rejects.toMatchObject({ fields: { _: 'factorResetDecided' } });

    // the second administrator asks, then loses the role: no one approves what she vouched for
    const bySecond = await requestFactorReset(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, w.second, now)), { email: w.staff, reason: 'Pièce d’identité au comptoir' });
    await inTenant(database.db, w.tenant.id, (trx) => trx.updateTable('memberships').set({ revoked_at: now }).where('account_id', '=', idOf(w.second)).where('role', '=', 'tenant_admin').execute());
    await expect(decideFactorReset(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, tiers, now)), bySecond, 'approve')).rejects.toMatchObject({ fields: { _: 'factorResetRequesterGone' } });
    expect((await events(w.tenant, 'identity.factorReset.approve', 'denied')).at(-1)?.details).toEqual({ reason: 'requester_not_admin' });
    await expect(
      inTenant(database.db, w.tenant.id, (trx) => trx.updateTable('factor_reset_requests').set({ status: 'approved', decided_by: idOf(tiers), decided_at: now }).where('id', '=', bySecond).execute()),
    ).rejects.toThrow(/who asked holds no current administrator role/);
    expect(hasSecondFactor(await factorsOf(w.tenant, w.staffId))).toBe(true);
    // refusing it is still possible, and clears the way for a new request
    await decideFactorReset(t.deps, ctxFor(t, w.tenant, await actor(w.tenant, tiers, now)), bySecond, 'refuse');
    expect(await row(bySecond)).toMatchObject({ status: 'refused' });
  });

  it('pages: the administrator sees the list and the form in French and English; staff are refused; a missing reason is a 400 that writes nothing', async () => {
    const now = new Date();
    const w = await world(now);
    const c = new Client(t.app, w.tenant.hosts[0]!);
    await c.signIn(w.admin, PASSWORD);
    const list = await c.get('/admin/factor-resets');
    expect(list.status).toBe(200);
    expect(textOf(list.body)).toContain('Réinitialiser la deuxième étape');
    const form = await c.get('/admin/factor-resets/new');
    expect(form.status).toBe(200);
    const bad = await c.post('/admin/factor-resets/new', { email: w.staff, reason: '' });
    expect(bad.status).toBe(400);
    expect(textOf(bad.body)).toContain('Expliquez comment vous avez vérifié l’identité de la personne');
    const rows = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('factor_reset_requests').select('id').execute());
    expect(rows).toEqual([]);
    const en = await c.get('/admin/factor-resets?lang=en');
    expect(textOf(en.body)).toContain('Reset the second step');
    const s = new Client(t.app, w.tenant.hosts[0]!);
    await s.signIn(w.staff, PASSWORD);
    expect((await s.get('/admin/factor-resets')).status).toBe(403);
    expect((await s.post('/admin/factor-resets/new', { email: w.parent, reason: 'x' })).status).toBe(403);
  });
});
