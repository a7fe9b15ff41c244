/**
 * Step-up and the staff rule. Sensitive actions (inviting staff, changing a
 * child's NIREC, changing one's factors) need an authentication of at most
 * five minutes, at the account's strength; the re-authentication page brings
 * the person back, to a path of this site only. Staff without a second
 * factor open no personal data — decide() says so for the whole catalogue,
 * and the staff pages send them to enrolment. And the new tables are
 * isolated per tenant like every other.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ACTIONS, OPENS_NO_PERSONAL_DATA, type Action, type Resource } from '../../src/access/actions.ts';
import type { Actor, AuthMethod, Membership } from '../../src/access/actor.ts';
import { decide, sqlFilter } from '../../src/access/decide.ts';
import { AppError } from '../../src/errors.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { passkeyRegistrationOptions, revokePasskey } from '../../src/identity/factors/service.ts';
import { totpCodeAt } from '../../src/identity/factors/totp.ts';
import type { RelyingParty } from '../../src/identity/factors/webauthn.ts';
import { isRecentAuth, requirePhishingResistantAuth, requireRecentAuth, StepUpRequired } from '../../src/identity/stepup.ts';
import { hashToken } from '../../src/identity/tokens.ts';
import { listCandidates } from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { noteTotpStepUsed } from '../helpers/factors.ts';
import { SoftAuthenticator } from '../helpers/soft-authenticator.ts';

let database: TestDatabase;
let t: TestApp;
let tenant: Tenant;
let host: string;
let facility: string;
let now = new Date('2026-06-08T15:00:00Z');

function at(ms: number): Date {
  now = new Date(now.getTime() + ms);
  t.setNow(now);
  return now;
}

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
  t.setNow(now);
  tenant = await tenantFor(t);
  host = tenant.hosts[0]!;
  facility = await createFacility(t, tenant, { name: 'CPE Les Mésanges' });
});

afterAll(async () => {
  await t?.close();
  await database?.close();
});

let seq = 0;
const uniqueEmail = (p: string) => `${p}.${Date.now().toString(36)}${(seq++).toString(36)}@exemple.test`;

async function sessionOf(c: Client) {
  return inTenant(database.db, tenant.id, (trx) =>
    trx.selectFrom('sessions').select(['id', 'auth_methods', 'authenticated_at']).where('token_hash', '=', hashToken(c.cookies.get('guichet_session')!)).executeTakeFirstOrThrow(),
  );
}

async function secretOf(accountId: string): Promise<string> {
  const { decryptTotpSecret } = await import('../../src/identity/factors/totp.ts');
  const row = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('totp_factors').select(['id', 'secret_enc']).where('account_id', '=', accountId).where('disabled_at', 'is', null).executeTakeFirstOrThrow());
  return decryptTotpSecret(t.deps.keys, { tenantId: tenant.id, accountId, factorId: row.id }, row.secret_enc);
}

/* ------------------------------------------------------------ decide() */

describe('the staff rule, in decide()', () => {
  const NOW = new Date('2026-03-15T14:00:00Z');
  const FAC = 'a0000000-0000-4000-8000-00000000000a';
  const OWN = '40000000-0000-4000-8000-000000000004';
  function actor(memberships: Omit<Membership, 'id'>[], mfa: boolean | undefined): Actor {
    return { accountId: OWN, tenantId: 'f0000000-0000-4000-8000-0000000000ff', sessionId: null, email: 'x@exemple.test', emailVerified: true, locale: 'fr', memberships: memberships.map((m, i) => ({ id: `m${i}`, ...m })), ...(mfa === undefined ? {} : { mfa }) };
  }
  const resources: Resource[] = [{ type: 'tenant' }, { type: 'facility', facilityId: FAC }, { type: 'family', ownerAccountId: OWN }];
  const members: Record<string, Omit<Membership, 'id'>[]> = {
    staff: [{ role: 'facility_staff', facilityId: FAC, expiresAt: null }],
    director: [{ role: 'facility_director', facilityId: FAC, expiresAt: null }],
    admin: [{ role: 'tenant_admin', facilityId: null, expiresAt: null }],
    officer: [{ role: 'security_officer', facilityId: null, expiresAt: null }],
  };

  it('refuses every action that opens personal data to a member without a second factor, and only those', () => {
    let refused = 0;
    for (const action of Object.keys(ACTIONS) as Action[]) {
      for (const [name, ms] of Object.entries(members)) {
        for (const res of resources) {
          for (const without of [actor(ms, false), actor(ms, undefined)]) {
            const d = decide(without, action, res, NOW);
            const withFactor = decide(actor(ms, true), action, res, NOW);
            const label = `${action} × ${name} × ${res.type}`;
            if (OPENS_NO_PERSONAL_DATA.has(action)) {
              expect(d.allowed, label).toBe(withFactor.allowed);
            } else {
              expect(d, label).toEqual({ allowed: false, action, reason: 'second_factor_required' });
              refused++;
            }
          }
        }
      }
    }
    expect(refused).toBeGreaterThan(50);
    // a staff member with the factor keeps exactly what the catalogue gives
    expect(decide(actor(members.staff!, true), 'waitlist.candidates.list', { type: 'facility', facilityId: FAC }, NOW).allowed).toBe(true);
    expect(decide(actor(members.staff!, false), 'waitlist.candidates.list', { type: 'facility', facilityId: FAC }, NOW).reason).toBe('second_factor_required');
    // even their own family's file
    expect(decide(actor(members.staff!, false), 'waitlist.childFile.read', { type: 'family', ownerAccountId: OWN }, NOW).reason).toBe('second_factor_required');
    expect(decide(actor(members.staff!, true), 'waitlist.childFile.read', { type: 'family', ownerAccountId: OWN }, NOW).allowed).toBe(true);
  });

  it('leaves parents alone, and an expired membership no longer counts', () => {
    const parent = actor([], false);
    expect(decide(parent, 'waitlist.childFile.read', { type: 'family', ownerAccountId: OWN }, NOW).allowed).toBe(true);
    const former = actor([{ role: 'facility_staff', facilityId: FAC, expiresAt: new Date(NOW.getTime() - 1) }], false);
    expect(decide(former, 'waitlist.childFile.read', { type: 'family', ownerAccountId: OWN }, NOW).allowed).toBe(true);
  });

  it('sqlFilter() selects nothing for them either', async () => {
    const filter = sqlFilter(actor(members.staff!, false), 'waitlist.candidates.list', { facilityId: sql.ref('r.facility_id') }, NOW);
    const { rows } = await sql<{ hit: boolean }>`SELECT EXISTS (SELECT 1 FROM (VALUES (CAST(${FAC} AS uuid))) AS r(facility_id) WHERE ${filter}) AS hit`.execute(database.db);
    expect(rows[0]!.hit).toBe(false);
    const ok = sqlFilter(actor(members.staff!, true), 'waitlist.candidates.list', { facilityId: sql.ref('r.facility_id') }, NOW);
    const { rows: r2 } = await sql<{ hit: boolean }>`SELECT EXISTS (SELECT 1 FROM (VALUES (CAST(${FAC} AS uuid))) AS r(facility_id) WHERE ${ok}) AS hit`.execute(database.db);
    expect(r2[0]!.hit).toBe(true);
  });
});

describe('staff without a second factor', () => {
  it('are sent to enrolment from the staff pages, refused by the records gateway, and let in once enrolled', async () => {
    const email = uniqueEmail('educ');
    const id = await createStaff(t, tenant, email, facility, undefined, { secondFactor: false });
    const c = new Client(t.app, host);
    const r0 = await c.signIn(email, PASSWORD);
    expect(r0.headers.location).toBe('/staff');
    for (const path of ['/staff', `/staff/facilities/${facility}/candidates`, '/account']) {
      const r = await c.get(path);
      expect(r.status, path).toBe(303);
      expect(r.headers.location, path).toBe('/account/security?status=required');
    }
    const page = await c.get('/account/security?status=required');
    expect(page.status).toBe(200);
    expect(textOf(page.body)).toContain('Une deuxième étape de connexion est obligatoire');
    // the rule holds below the pages too: the gateway refuses and records why
    const memberships = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('memberships').select(['id', 'role', 'facility_id', 'expires_at']).where('account_id', '=', id).execute());
    const staffActor: Actor = { accountId: id, tenantId: tenant.id, sessionId: null, email, emailVerified: true, locale: 'fr', memberships: memberships.map((m) => ({ id: m.id, role: m.role, facilityId: m.facility_id, expiresAt: m.expires_at })), mfa: false };
    const err = await listCandidates(t.deps, ctxFor(t, tenant, staffActor), facility, 1).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(AppError);
    const denied = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select('details').where('action', '=', 'waitlist.candidates.list').where('outcome', '=', 'denied').where('actor_account_id', '=', id).execute());
    expect(denied.map((d) => (d.details as { reason: string }).reason)).toContain('second_factor_required');
    // enrolment from the same session (signed in a moment ago): the staff pages open
    const enrol = await c.get('/account/security/totp');
    const secret = /<code class="manual-key">([A-Z2-7 ]+)<\/code>/.exec(enrol.body)![1]!.replace(/ /g, '');
    expect((await c.post('/account/security/totp', { code: await totpCodeAt(secret, now) })).status).toBe(200);
    expect((await c.get('/staff')).status).toBe(200);
    expect((await c.get(`/staff/facilities/${facility}/candidates`)).status).toBe(200);
  });

  it('with a factor but a session that did not use it: re-authenticate, then back', async () => {
    const email = uniqueEmail('educ');
    const id = await createStaff(t, tenant, email, facility);
    const c = new Client(t.app, host);
    await c.signIn(email, PASSWORD);
    expect((await c.get('/staff')).status).toBe(200);
    // as a session opened by accepting an invitation would be: password only
    const s = await sessionOf(c);
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('sessions').set({ auth_methods: ['password'] }).where('id', '=', s.id).execute());
    let r = await c.get('/staff');
    expect(r.headers.location).toBe('/reauth?return=%2Fstaff');
    r = await c.get('/reauth?return=%2Fstaff');
    expect(r.status).toBe(200);
    expect(r.body).toContain('name="code"');
    at(30_000);
    const secret = await secretOf(id);
    r = await c.post('/reauth', { return: '/staff', password: PASSWORD, code: await totpCodeAt(secret, now) });
    noteTotpStepUsed(secret, now);
    expect(r.headers.location).toBe('/staff');
    expect((await sessionOf(c)).auth_methods).toEqual(['password', 'totp']);
    expect((await c.get('/staff')).status).toBe(200);
  });
});

/* ------------------------------------------------------------ step-up */

describe('requireRecentAuth()', () => {
  const base: Actor = { accountId: 'a', tenantId: 't', sessionId: 's', email: 'e', emailVerified: true, locale: 'fr', memberships: [] };
  const withAuth = (methods: AuthMethod[], ageSeconds: number, enrolled: { totp?: boolean; passkeys?: number; vouched?: boolean } = {}): Actor => ({
    ...base,
    auth: {
      methods,
      at: new Date(Date.UTC(2026, 0, 1, 12) - ageSeconds * 1000),
      totp: !!enrolled.totp,
      passkeys: enrolled.passkeys ?? 0,
      vouchedPasskeys: enrolled.vouched ? (enrolled.passkeys ?? 0) : 0,
      vouchedPasskey: !!enrolled.vouched && methods.includes('passkey'),
    },
  });
  const NOW = new Date(Date.UTC(2026, 0, 1, 12));

  it('wants an authentication at most five minutes old, at the account’s strength; the phishing-resistant variant a passkey', () => {
    expect(isRecentAuth(withAuth(['password'], 300), NOW)).toBe(true);
    expect(isRecentAuth(withAuth(['password'], 301), NOW)).toBe(false);
    expect(isRecentAuth(withAuth(['password'], 60, { totp: true }), NOW)).toBe(false);
    expect(isRecentAuth(withAuth(['password', 'totp'], 60, { totp: true }), NOW)).toBe(true);
    expect(isRecentAuth(withAuth(['password', 'totp'], 60, { totp: true, passkeys: 1 }), NOW, 300, true)).toBe(false);
    expect(isRecentAuth(withAuth(['passkey'], 60, { passkeys: 1 }), NOW, 300, true)).toBe(true);
    expect(isRecentAuth(withAuth(['passkey'], 400, { passkeys: 1 }), NOW, 300, true)).toBe(false);
    expect(isRecentAuth(withAuth(['passkey'], 400, { passkeys: 1 }), NOW, 600, true)).toBe(true);
    // a privileged holder's passkey counts only vouched for (migration 0049)
    const privileged = (a: Actor): Actor => ({ ...a, memberships: [{ id: 'm', role: 'security_officer', facilityId: null, expiresAt: null }] });
    expect(isRecentAuth(privileged(withAuth(['passkey'], 60, { passkeys: 1 })), NOW, 300, true)).toBe(false);
    expect(isRecentAuth(privileged(withAuth(['passkey'], 60, { passkeys: 1, vouched: true })), NOW, 300, true)).toBe(true);
    expect(isRecentAuth(privileged(withAuth(['password', 'totp'], 60, { totp: true, passkeys: 1, vouched: true })), NOW, 300, true)).toBe(false);
    // (the non-privileged level does not ask)
    expect(isRecentAuth(privileged(withAuth(['passkey'], 60, { passkeys: 1 })), NOW)).toBe(true);
    expect(isRecentAuth(base, NOW)).toBe(false);
    const ctx = (actor: Actor | null) => ({ ...ctxFor(t, tenant, actor), now: NOW });
    expect(() => requireRecentAuth(ctx(withAuth(['password'], 10)))).not.toThrow();
    expect(() => requireRecentAuth(ctx(withAuth(['password'], 900)), 300, { returnTo: '/x' })).toThrow(StepUpRequired);
    expect(() => requirePhishingResistantAuth(ctx(withAuth(['password', 'totp'], 10, { totp: true })))).toThrow(StepUpRequired);
    expect(() => requireRecentAuth(ctx(null))).toThrow(AppError);
  });
});

describe('changing the passkeys of a privileged holder', () => {
  const NOW = new Date(Date.UTC(2026, 0, 1, 12));
  const holder = (roles: Membership['role'][], methods: AuthMethod[], passkeys: number, vouched = passkeys): Actor => ({
    accountId: 'a',
    tenantId: 't',
    sessionId: 's',
    email: 'e',
    emailVerified: true,
    locale: 'fr',
    memberships: roles.map((role, i) => ({ id: `m${i}`, role, facilityId: role.startsWith('facility') ? 'f' : null, expiresAt: null })),
    auth: { methods, at: new Date(NOW.getTime() - 10_000), totp: methods.includes('totp'), passkeys, vouchedPasskeys: vouched, vouchedPasskey: vouched > 0 && methods.includes('passkey') },
  });
  const ctx = (actor: Actor) => ({ ...ctxFor(t, tenant, actor), now: NOW });

  it('asks for one of its passkeys, not an app code, to add or remove one; others change theirs with any fresh sign-in', async () => {
    // A session taken with a password and an app code (a phishing proxy) cannot add the intruder's passkey nor remove the holder's.
    for (const role of ['tenant_admin', 'security_officer', 'program_operator', 'facility_director'] as const) {
      const taken = ctx(holder(['facility_staff', role], ['password', 'totp'], 1));
      await expect(passkeyRegistrationOptions(t.deps, taken, {} as RelyingParty, Buffer.alloc(32)), role).rejects.toMatchObject({ phishingResistant: true });
      await expect(revokePasskey(t.deps, taken, 'not-an-id'), role).rejects.toMatchObject({ phishingResistant: true });
    }
    // With a passkey just used: allowed (the malformed id then finds nothing).
    await expect(revokePasskey(t.deps, ctx(holder(['tenant_admin'], ['passkey'], 1)), 'not-an-id')).resolves.toBe(false);
    // Not a vouched one, while the account has one: refused; no vouched passkey at all: a fresh sign-in, as for a first passkey.
    await expect(revokePasskey(t.deps, ctx({ ...holder(['tenant_admin'], ['passkey'], 2, 1), auth: { ...holder(['tenant_admin'], ['passkey'], 2, 1).auth!, vouchedPasskey: false } }), 'not-an-id')).rejects.toMatchObject({ phishingResistant: true });
    await expect(revokePasskey(t.deps, ctx(holder(['tenant_admin'], ['password', 'totp'], 1, 0)), 'not-an-id')).resolves.toBe(false);
    // Staff and parents, and a holder enrolling a first passkey: a fresh sign-in at the account's strength is enough.
    await expect(revokePasskey(t.deps, ctx(holder(['facility_staff'], ['password', 'totp'], 1)), 'not-an-id')).resolves.toBe(false);
    await expect(revokePasskey(t.deps, ctx(holder([], ['password', 'totp'], 1)), 'not-an-id')).resolves.toBe(false);
    await expect(revokePasskey(t.deps, ctx(holder(['tenant_admin'], ['password', 'totp'], 0)), 'not-an-id')).resolves.toBe(false);
  });
});

describe('step-up on sensitive actions', () => {
  it('inviting staff: fine just after sign-in; six minutes later, re-authenticate (password and code) and come back', async () => {
    const email = uniqueEmail('admin');
    const t2 = await tenantFor(t);
    const fac = await createFacility(t, t2, { name: 'CPE La Ruche' });
    const adminId = await createAdmin(t, t2, email);
    const c = new Client(t.app, t2.hosts[0]!);
    expect((await c.signIn(email, PASSWORD)).headers.location).toBe('/admin');
    await c.get(`/directory/${fac}`);
    let r = await c.post(`/admin/facilities/${fac}/invitations`, { email: uniqueEmail('educ') });
    expect(r.status).toBe(200);
    at(6 * 60_000);
    await c.get(`/directory/${fac}`);
    const invitee = uniqueEmail('educ');
    r = await c.post(`/admin/facilities/${fac}/invitations`, { email: invitee });
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe(`/reauth?return=${encodeURIComponent(`/directory/${fac}`)}`);
    const invitations = () => inTenant(database.db, t2.id, (trx) => trx.selectFrom('invitations').select('id').where('email', '=', invitee).execute());
    expect(await invitations()).toEqual([]);
    const page = await c.get(r.headers.location as string);
    expect(textOf(page.body)).toContain('Confirmer votre identité');
    expect(page.body).toContain(`name="return" value="/directory/${fac}"`);
    // wrong password; missing code; then both right
    r = await c.post('/reauth', { return: `/directory/${fac}`, password: 'pas le bon mot de passe', code: '000000' });
    expect(r.status).toBe(401);
    r = await c.post('/reauth', { return: `/directory/${fac}`, password: PASSWORD });
    expect(r.status).toBe(400);
    expect(textOf(r.body)).toContain('Entrez le code à 6 chiffres');
    const { decryptTotpSecret } = await import('../../src/identity/factors/totp.ts');
    const row = await inTenant(database.db, t2.id, (trx) => trx.selectFrom('totp_factors').select(['id', 'secret_enc']).where('account_id', '=', adminId).executeTakeFirstOrThrow());
    const secret = decryptTotpSecret(t.deps.keys, { tenantId: t2.id, accountId: adminId, factorId: row.id }, row.secret_enc);
    at(30_000);
    const tokenBefore = c.cookies.get('guichet_session')!;
    const sessionBefore = await inTenant(database.db, t2.id, (trx) => trx.selectFrom('sessions').select('id').where('token_hash', '=', hashToken(tokenBefore)).executeTakeFirstOrThrow());
    r = await c.post('/reauth', { return: `/directory/${fac}`, password: PASSWORD, code: await totpCodeAt(secret, now) });
    noteTotpStepUsed(secret, now);
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe(`/directory/${fac}`);
    // The same session, with a new token: a copy of the old one is signed out, and never carries the fresh authentication.
    const tokenAfter = c.cookies.get('guichet_session')!;
    expect(tokenAfter).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(tokenAfter).not.toBe(tokenBefore);
    const sessionAfter = await inTenant(database.db, t2.id, (trx) => trx.selectFrom('sessions').select('id').where('token_hash', '=', hashToken(tokenAfter)).executeTakeFirstOrThrow());
    expect(sessionAfter.id).toBe(sessionBefore.id);
    const copy = new Client(t.app, t2.hosts[0]!);
    copy.cookies.set('guichet_session', tokenBefore);
    const stale = await copy.get("/account");
    expect(stale.status).toBe(303);
    expect(String(stale.headers.location)).toMatch(/^\/signin/);
    await c.get(`/directory/${fac}`);
    r = await c.post(`/admin/facilities/${fac}/invitations`, { email: invitee });
    expect(r.status).toBe(200);
    expect(await invitations()).toHaveLength(1);
    const stepups = await inTenant(database.db, t2.id, (trx) => trx.selectFrom('audit_events').select(['outcome', 'details']).where('action', '=', 'identity.stepup').orderBy('seq').execute());
    expect(stepups.map((e) => e.outcome)).toEqual(['failure', 'success']);
    expect(stepups[1]!.details).toEqual({ methods: 'password+totp' });
  });

  it('changing a child’s NIREC asks a fresh authentication; other changes do not', async () => {
    const email = uniqueEmail('parent');
    await createParent(t, tenant, email);
    const c = new Client(t.app, host);
    await c.signIn(email, PASSWORD);
    await c.get('/children/new');
    const t0 = today(now);
    const form = { firstName: 'Léa', lastName: 'Tremblay', birthDate: addMonths(t0, -8), desiredEntryDate: addMonths(t0, 3), day_mon: 'on' };
    let r = await c.post('/children/new', { ...form, nirec: `${Date.now()}`.slice(-10) });
    expect(r.status).toBe(303);
    const childId = /\/children\/([0-9a-f-]{36})/.exec(String(r.headers.location))![1]!;
    at(6 * 60_000);
    await c.get(`/children/${childId}/edit`);
    r = await c.post(`/children/${childId}/edit`, { ...form, firstName: 'Léanne', nirec: '' });
    expect(r.headers.location).toBe(`/children/${childId}?status=updated`);
    await c.get(`/children/${childId}/edit`);
    r = await c.post(`/children/${childId}/edit`, { ...form, nirec: '9876543210' });
    expect(r.headers.location).toBe(`/reauth?return=${encodeURIComponent(`/children/${childId}/edit`)}`);
    // a parent without a second factor re-authenticates with the password
    const page = await c.get(r.headers.location as string);
    expect(page.body).not.toContain('name="code"');
    r = await c.post('/reauth', { return: `/children/${childId}/edit`, password: PASSWORD });
    expect(r.headers.location).toBe(`/children/${childId}/edit`);
    await c.get(`/children/${childId}/edit`);
    r = await c.post(`/children/${childId}/edit`, { ...form, nirec: '9876543210' });
    expect(r.headers.location).toBe(`/children/${childId}?status=updated`);
  });

  it('the re-authentication page returns to this site only', async () => {
    const email = uniqueEmail('parent');
    await createParent(t, tenant, email);
    const c = new Client(t.app, host);
    await c.signIn(email, PASSWORD);
    for (const evil of ['//evil.example/x', 'https://evil.example/', '/\\evil.example', 'javascript:alert(1)']) {
      const page = await c.get(`/reauth?return=${encodeURIComponent(evil)}`);
      expect(page.body).toContain('name="return" value="/account"');
      const r = await c.post('/reauth', { return: evil, password: PASSWORD });
      expect(r.headers.location).toBe('/account');
    }
  });

  it('a long return path survives being wrapped in the re-authentication page’s own (up to 2,048 characters)', async () => {
    const email = uniqueEmail('parent');
    await createParent(t, tenant, email);
    const c = new Client(t.app, host);
    await c.signIn(email, PASSWORD);
    // A page with a long query sent through /reauth (and from there, for a privileged holder, through the
    // passkey link's page, which returns to /reauth): each wrapping percent-encodes the path again.
    const inner = `/account?${Array.from({ length: 40 }, (_, i) => `filtre${i}=valeur-${i}`).join('&')}`;
    const wrapped = `/reauth?return=${encodeURIComponent(inner)}`;
    expect(wrapped.length).toBeGreaterThan(512);
    expect((await c.get(wrapped)).body).toContain(`name="return" value="${inner.replace(/&/g, '&amp;')}"`);
    const r = await c.post('/reauth', { return: inner, password: PASSWORD });
    expect(r.headers.location).toBe(inner);
    const tooLong = `/account?x=${'a'.repeat(2048)}`;
    expect((await c.post('/reauth', { return: tooLong, password: PASSWORD })).headers.location).toBe('/account');
  });

  it('the phishing-resistant level takes a passkey, and only a passkey', async () => {
    const email = uniqueEmail('parent');
    await createParent(t, tenant, email);
    const c = new Client(t.app, host);
    await c.signIn(email, PASSWORD);
    let page = await c.get('/reauth?return=%2Faccount&level=passkey');
    expect(textOf(page.body)).toContain('Cette action exige une clé d’accès');
    expect(textOf(page.body)).toContain('n’a pas encore de clé d’accès');
    expect(page.body).not.toContain('name="password"');
    await c.get('/account/security');
    const device = new SoftAuthenticator(`http://${host}`);
    const reg = JSON.parse((await c.post('/account/security/passkeys/options', {})).body).options;
    expect((await c.post('/account/security/passkeys', { credential: device.create(reg) })).status).toBe(200);
    at(10 * 60_000);
    page = await c.get('/reauth?return=%2Faccount&level=passkey');
    expect(page.body).toContain('data-passkey-options="/reauth/passkey/options?level=passkey"');
    expect(page.body).not.toContain('name="password"');
    const opts = JSON.parse((await c.post('/reauth/passkey/options', {})).body).options;
    expect(opts.userVerification).toBe('required');
    // a challenge issued to this session only: another session's cookie cannot use it
    const tokenBefore = c.cookies.get('guichet_session');
    const r = await c.post('/reauth/passkey?level=passkey', { return: '/account', credential: device.get(opts) });
    expect(r.headers.location).toBe('/account');
    expect(c.cookies.get('guichet_session')).not.toBe(tokenBefore);
    const s = await sessionOf(c);
    expect(s.auth_methods).toEqual(['passkey']);
    expect(s.authenticated_at?.getTime()).toBe(now.getTime());
  });
});

/* ------------------------------------------------------------ isolation */

describe('the factor tables', () => {
  const TABLES = ['totp_factors', 'recovery_codes', 'webauthn_credentials', 'pending_signins', 'webauthn_challenges', 'factor_failures'];

  it('have row-level security enabled and forced, with the tenant policy', async () => {
    const { rows } = await sql<{ relname: string; relrowsecurity: boolean; relforcerowsecurity: boolean; policies: string[] }>`
      SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
             array(SELECT polname::text FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
      FROM pg_class c WHERE c.relname IN (${sql.join(TABLES)}) ORDER BY c.relname`.execute(database.ownerDb());
    expect(rows.map((r) => r.relname)).toEqual([...TABLES].sort());
    for (const r of rows) expect(r, r.relname).toMatchObject({ relrowsecurity: true, relforcerowsecurity: true, policies: ['tenant_isolation'] });
  });

  it('show another tenant nothing of this one’s factors', async () => {
    const email = uniqueEmail('educ');
    await createStaff(t, tenant, email, facility);
    const other = await tenantFor(t);
    await inTenant(database.db, other.id, async (trx) => {
      for (const table of TABLES) {
        const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.table(table)}`.execute(trx);
        expect(Number(rows[0]!.n), table).toBe(0);
      }
    });
    const mine = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('totp_factors').select('id').execute());
    expect(mine.length).toBeGreaterThan(0);
  });
});
