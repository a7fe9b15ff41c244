/**
 * The facility API with its keys: a director creates a key (fresh
 * authentication, shown once, stored hashed), software reads places,
 * declares a vacancy (the referral runs as from the page) and reads
 * referrals; another facility, no key, a revoked key, a session cookie
 * instead of a key, and bad bodies are refused and change nothing; the
 * OpenAPI document is served.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { createApiKey } from '../../src/api/keys.ts';
import { endAccountSessions } from '../../src/identity/sessions.ts';
import { markProtected } from '../../src/detection/protected.ts';
import { createBreachReport } from '../../src/privacy/breach.ts';
import * as records from '../../src/records/gateway.ts';
import * as offers from '../../src/records/offers.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { actorByEmail, reinstateAccount, createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';

let database: TestDatabase;
let t: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
});

afterAll(async () => {
  await t?.close();
  await database?.close();
});

const uniq = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;

async function call(tenant: Tenant, method: 'GET' | 'POST', url: string, opts: { key?: string; body?: string; type?: string; cookie?: string } = {}) {
  const res = await t.app.inject({
    method,
    url,
    headers: { host: tenant.hosts[0]!, ...(opts.key ? { authorization: `Bearer ${opts.key}` } : {}), ...(opts.body !== undefined ? { 'content-type': opts.type ?? 'application/json' } : {}), ...(opts.cookie ? { cookie: opts.cookie } : {}) },
    ...(opts.body !== undefined ? { payload: opts.body } : {}),
  });
  return { status: res.statusCode, headers: res.headers, json: (() => { try { return JSON.parse(res.body); } catch { return null; } })(), body: res.body };
}

async function state(tenant: Tenant) {
  return inTenant(database.db, tenant.id, async (trx) => ({
    places: await trx.selectFrom('facility_places').selectAll().orderBy('facility_id').orderBy('age_group').execute(),
    offers: await trx.selectFrom('offers').selectAll().orderBy('id').execute(),
  }));
}

describe('facility API', () => {
  it('keys by the director, places, vacancies and referrals by key, every refusal recorded', async () => {
    const tenant = await tenantFor(t);
    const facility = await createFacility(t, tenant, { name: 'CPE API', places_total: 4, places_infant: 1 });
    const other = await createFacility(t, tenant, { name: 'CPE Voisin' });
    const parentEmail = `parent.${uniq()}@exemple.test`;
    await createParent(t, tenant, parentEmail);
    const pctx = ctxFor(t, tenant, await actorByEmail(t, tenant, parentEmail, t.deps.clock(), 10, ['password']));
    const t0 = today(t.deps.clock());
    const { id: childId } = await records.createChildFile(t.deps, pctx, { firstName: 'Noé', lastName: 'Bélanger', birthDate: addMonths(t0, -30), nirec: null, desiredEntryDate: addMonths(t0, 1), daysOfCare: 31, inSubsidisedCare: false });
    await records.addApplication(t.deps, pctx, childId, { facilityId: facility, siblingAttending: false, parentIsStaff: false });
    const adminEmail = `admin.${uniq()}@exemple.test`;
    const adminId = await createAdmin(t, tenant, adminEmail);
    const staffEmail = `educ.${uniq()}@exemple.test`;
    const staffId = await createStaff(t, tenant, staffEmail, facility, adminId);
    const directorEmail = `direction.${uniq()}@exemple.test`;
    const directorId = await createStaff(t, tenant, directorEmail, facility);
    const now = t.deps.clock();
    await inTenant(database.db, tenant.id, (trx) =>
      trx.insertInto('memberships').values({ tenant_id: tenant.id, account_id: directorId, role: 'facility_director', facility_id: facility, source: 'grant', granted_by: staffId, approved_by: adminId, created_at: new Date(now.getTime() - 2 * 3600_000), expires_at: new Date(now.getTime() + 4 * 3600_000) }).execute(),
    );

    // Staff who are not the director: no key page, no key.
    const staff = new Client(t.app, tenant.hosts[0]!);
    expect((await staff.signIn(staffEmail, PASSWORD)).status).toBe(303);
    expect((await staff.get(`/staff/facilities/${facility}/api-keys`)).status).toBe(404);
    await staff.get('/staff');
    expect((await staff.post(`/staff/facilities/${facility}/api-keys`, { name: 'Logiciel' })).status).toBe(404);

    // The director creates one: shown once, on that answer; stored as a hash.
    const director = new Client(t.app, tenant.hosts[0]!);
    expect((await director.signIn(directorEmail, PASSWORD)).status).toBe(303);
    expect((await director.get(`/staff/facilities/${facility}/api-keys`)).status).toBe(200);
    const created = await director.post(`/staff/facilities/${facility}/api-keys`, { name: 'Logiciel Amisgest' });
    expect(created.status).toBe(200);
    const key = /gfk_[0-9a-f]{32}_[A-Za-z0-9_-]{43}/.exec(created.body)![0];
    const listed = await director.get(`/staff/facilities/${facility}/api-keys`);
    expect(textOf(listed.body)).toContain('Logiciel Amisgest');
    expect(listed.body).not.toContain(key);
    const stored = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('facility_api_keys').selectAll().execute());
    expect(stored).toHaveLength(1);
    expect(JSON.stringify(stored)).not.toContain(key.slice(-43));

    // Six minutes later, a new key needs a fresh authentication first.
    t.setNow(new Date(now.getTime() + 6 * 60_000));
    try {
      const late = await director.post(`/staff/facilities/${facility}/api-keys`, { name: 'Autre' });
      expect(late.status).toBe(303);
      expect(String(late.headers.location)).toMatch(/^\/reauth/);
      expect(await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('facility_api_keys').select('id').execute())).toHaveLength(1);
    } finally {
      t.setNow(now);
    }

    // The OpenAPI document.
    const doc = await call(tenant, 'GET', '/api/v1/openapi.json');
    expect(doc.status).toBe(200);
    expect(doc.json.openapi).toBe('3.1.0');
    expect(Object.keys(doc.json.paths).sort()).toEqual(['/facilities/{id}/places', '/facilities/{id}/referrals', '/facilities/{id}/referrals/{offerId}/identity', '/facilities/{id}/vacancies']);

    // No key, a malformed one, a session cookie instead of a key: 401.
    expect((await call(tenant, 'GET', `/api/v1/facilities/${facility}/places`)).status).toBe(401);
    const bad = await call(tenant, 'GET', `/api/v1/facilities/${facility}/places`, { key: 'gfk_nothing' });
    expect(bad.status).toBe(401);
    expect(bad.headers['www-authenticate']).toContain('Bearer');
    const cookie = [...director.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    expect((await call(tenant, 'GET', `/api/v1/facilities/${facility}/places`, { cookie })).status).toBe(401);
    expect((await call(tenant, 'POST', `/api/v1/facilities/${facility}/vacancies`, { cookie, body: '{"toddler":1}' })).status).toBe(401);

    // With the key.
    const places = await call(tenant, 'GET', `/api/v1/facilities/${facility}/places`, { key });
    expect(places.status).toBe(200);
    expect(places.json.places).toEqual([expect.objectContaining({ ageGroup: 'infant', places: 1, vacancies: 0, pending: 0 }), expect.objectContaining({ ageGroup: 'toddler', places: 3, vacancies: 0, pending: 0 })]);

    // Bad bodies: 4xx JSON, nothing changed.
    const before = await state(tenant);
    for (const [body, type, status] of [
      ['{"toddler":-1}', undefined, 400],
      ['{"toddler":"1"}', undefined, 400],
      ['{"toddler":1.5}', undefined, 400],
      ['{"toddler":4}', undefined, 400],
      ['{}', undefined, 400],
      ['{"toddler":1,"role":"tenant_admin"}', undefined, 400],
      ['[1,2]', undefined, 400],
      ['{"toddler":', undefined, 400],
      ['"x"', undefined, 400],
      ['toddler=1', 'application/x-www-form-urlencoded', 400],
      ['toddler=1', 'text/plain', 415],
      [JSON.stringify({ toddler: 1, pad: 'x'.repeat(20_000) }), undefined, 413],
    ] as [string, string | undefined, number][]) {
      const r = await call(tenant, 'POST', `/api/v1/facilities/${facility}/vacancies`, { key, body, ...(type ? { type } : {}) });
      expect(r.status, body.slice(0, 40)).toBe(status);
      expect(r.json?.error, body.slice(0, 40)).toBeTruthy();
    }
    expect(await state(tenant)).toEqual(before);

    // Another facility: not found, recorded as denied, nothing changed.
    for (const [m, path] of [['GET', 'places'], ['POST', 'vacancies'], ['GET', 'referrals']] as const) {
      const r = await call(tenant, m, `/api/v1/facilities/${other}/${path}`, { key, ...(m === 'POST' ? { body: '{"toddler":1}' } : {}) });
      expect(r.status, path).toBe(404);
    }
    expect(await state(tenant)).toEqual(before);
    const denied = (await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['action', 'target_ids']).where('outcome', '=', 'denied').execute())).filter((e) => e.target_ids.includes(other));
    expect(denied.map((e) => e.action).sort()).toEqual(['waitlist.places.read', 'waitlist.referral.list', 'waitlist.vacancy.declare']);

    // Declare: the referral runs, its events name the key as their session.
    const declared = await call(tenant, 'POST', `/api/v1/facilities/${facility}/vacancies`, { key, body: '{"toddler":1}' });
    expect(declared.status).toBe(200);
    expect(declared.json).toMatchObject({ offered: 1, open: 0 });
    const keyId = stored[0]!.id;
    const ev = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['actor_account_id', 'details']).where('action', '=', 'waitlist.vacancy.declare').where('outcome', '=', 'success').execute());
    expect(ev).toHaveLength(1);
    expect(ev[0]!.details).toMatchObject({ session: keyId });
    const refs = await call(tenant, 'GET', `/api/v1/facilities/${facility}/referrals`, { key });
    expect(refs.status).toBe(200);
    expect(refs.json.referrals).toHaveLength(1);
    expect(refs.json.referrals[0]).toMatchObject({ status: 'pending', ageGroup: 'toddler', identity: null });
    expect(refs.body).not.toContain('Bélanger');

    // Accepted, the identity shows; a protected file's stays a reference, opened one offer at a time with a reason.
    const offerId = refs.json.referrals[0].id as string;
    await offers.answerOffer(t.deps, pctx, offerId, 'accept');
    expect((await call(tenant, 'GET', `/api/v1/facilities/${facility}/referrals`, { key })).json.referrals[0]).toMatchObject({ status: 'accepted', protected: false, identity: { firstName: 'Noé', lastName: 'Bélanger' } });
    await markProtected(t.deps, ctxFor(t, tenant, await actorByEmail(t, tenant, adminEmail, t.deps.clock())), childId, 'Enfant d’une personnalité publique');
    const hidden = await call(tenant, 'GET', `/api/v1/facilities/${facility}/referrals`, { key });
    expect(hidden.json.referrals[0]).toMatchObject({ status: 'accepted', protected: true, identity: null });
    expect(hidden.body).not.toContain('Bélanger');
    const alerts = () => inTenant(database.db, tenant.id, (trx) => trx.selectFrom('detection_alerts').select(['rule_code', 'subject_account_id']).where('rule_code', '=', 'protected_file.open').execute());
    for (const body of ['{}', '{"reason":"  "}', '{"reason":1}']) {
      const r = await call(tenant, 'POST', `/api/v1/facilities/${facility}/referrals/${offerId}/identity`, { key, body });
      expect(r.status, body).toBe(400);
      expect(r.body).not.toContain('Bélanger');
    }
    expect((await call(tenant, 'POST', `/api/v1/facilities/${facility}/referrals/${randomUUID()}/identity`, { key, body: '{"reason":"Accueil lundi"}' })).status).toBe(404);
    expect(await alerts()).toEqual([]);
    const opened = await call(tenant, 'POST', `/api/v1/facilities/${facility}/referrals/${offerId}/identity`, { key, body: '{"reason":"Préparer l’accueil de lundi"}' });
    expect(opened.status).toBe(200);
    expect(opened.json.referral).toMatchObject({ id: offerId, protected: true, identity: { firstName: 'Noé', lastName: 'Bélanger' } });
    expect(await alerts()).toEqual([{ rule_code: 'protected_file.open', subject_account_id: directorId }]);
    const openings = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('protected_file_openings').select(['child_id', 'reason', 'action']).execute());
    expect(openings).toEqual([{ child_id: childId, reason: 'Préparer l’accueil de lundi', action: 'waitlist.referral.list' }]);
    // The page likewise: a reference and a form; without a reason the form says so; with one, the identity.
    const page = await director.get(`/staff/facilities/${facility}/referrals`);
    expect(page.status).toBe(200);
    expect(page.body).not.toContain('Bélanger');
    expect(textOf(page.body)).toContain('Dossier protégé');
    const none = await director.post(`/staff/facilities/${facility}/referrals/${offerId}/identity`, { [`reason-${offerId}`]: ' ' });
    expect(none.status).toBe(400);
    expect(none.body).not.toContain('Bélanger');
    await director.get(`/staff/facilities/${facility}/referrals`);
    const shown = await director.post(`/staff/facilities/${facility}/referrals/${offerId}/identity`, { [`reason-${offerId}`]: 'Appeler la famille pour l’horaire' });
    expect(shown.status).toBe(200);
    expect(textOf(shown.body)).toContain('Noé Bélanger');
    expect(await alerts()).toHaveLength(2);

    // A leaked key's reads, alone: the breach report selects them by the key's id, without its creator's browser sessions.
    const window = { from: new Date(t.deps.clock().getTime() - 3600_000).toISOString(), to: new Date(t.deps.clock().getTime() + 60_000).toISOString() };
    const cli = { kind: 'cli' as const, tenant, origin: { actorAccountId: null, actorRoles: ['system:cli'], ip: null, userAgent: null, requestId: null }, now: t.deps.clock() };
    const byKey = await createBreachReport(t.deps, cli, { selector: { kind: 'session', value: keyId }, ...window });
    const byCreator = await createBreachReport(t.deps, cli, { selector: { kind: 'actor', value: directorId }, ...window });
    expect(byKey.selector).toMatchObject({ kind: 'session', accountId: directorId });
    expect(byKey.persons.map((p) => p.familyId)).toHaveLength(1);
    expect(byKey.events).toBeGreaterThan(0);
    expect(byKey.events).toBeLessThan(byCreator.events);

    // Another tenant's address does not know the key (row-level security on the keys, as on every tenant table).
    const elsewhere = await tenantFor(t);
    expect((await call(elsewhere, 'GET', `/api/v1/facilities/${facility}/places`, { key })).status).toBe(401);
    const { rows: rls } = await sql<{ relrowsecurity: boolean; relforcerowsecurity: boolean }>`SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'facility_api_keys'`.execute(database.ownerDb());
    expect(rls).toEqual([{ relrowsecurity: true, relforcerowsecurity: true }]);

    // Revoked: the key opens nothing, and its use is recorded.
    await director.get(`/staff/facilities/${facility}/api-keys`);
    expect((await director.post(`/staff/facilities/${facility}/api-keys/${keyId}/revoke`)).status).toBe(303);
    expect((await call(tenant, 'GET', `/api/v1/facilities/${facility}/places`, { key })).status).toBe(401);
    const uses = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['outcome', 'details']).where('action', '=', 'api.key.use').execute());
    expect(uses.some((u) => (u.details as { reason?: string }).reason === 'revoked_key')).toBe(true);
  });

  it('a burst of junk keys from one source: each refused, the first thirty recorded, not every one forever', async () => {
    const tenant = await tenantFor(t);
    const facility = await createFacility(t, tenant);
    const answers = [];
    for (let i = 0; i < 40; i++) answers.push((await call(tenant, 'GET', `/api/v1/facilities/${facility}/places`, { key: `junk-${i}` })).status);
    expect(new Set(answers)).toEqual(new Set([401]));
    const recorded = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select('details').where('action', '=', 'api.key.use').where('outcome', '=', 'denied').execute());
    expect(recorded).toHaveLength(30);
    expect(recorded[0]!.details).toMatchObject({ reason: 'malformed_key' });
  });

  it('a director whose role is still cooling off creates no key, even with the glass broken: a key would outlive the emergency', async () => {
    const tenant = await tenantFor(t);
    const facility = await createFacility(t, tenant, { name: 'CPE Attente' });
    const adminId = await createAdmin(t, tenant, `admin.${uniq()}@exemple.test`);
    const staffId = await createStaff(t, tenant, `educ.${uniq()}@exemple.test`, facility, adminId);
    const directorEmail = `direction.${uniq()}@exemple.test`;
    const directorId = await createStaff(t, tenant, directorEmail, facility);
    const now = t.deps.clock();
    await inTenant(database.db, tenant.id, (trx) =>
      trx.insertInto('memberships').values({ tenant_id: tenant.id, account_id: directorId, role: 'facility_director', facility_id: facility, source: 'grant', granted_by: staffId, approved_by: adminId, created_at: now, expires_at: new Date(now.getTime() + 4 * 3600_000) }).execute(),
    );
    const signedIn = await actorByEmail(t, tenant, directorEmail, now, 10, ['password', 'passkey']);
    // As a session loads it: the granted role cools off for its first hour.
    const actor = { ...signedIn, memberships: signedIn.memberships.map((m) => (m.role === 'facility_director' ? { ...m, coolingUntil: new Date(now.getTime() + 60 * 60_000) } : m)) };
    for (const a of [actor, { ...actor, breakGlass: { id: randomUUID(), until: new Date(now.getTime() + 30 * 60_000) } }]) {
      await expect(createApiKey(t.deps, ctxFor(t, tenant, a), facility, 'Logiciel')).rejects.toMatchObject({ kind: 'coolingOff' });
    }
    expect(await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('facility_api_keys').select('id').where('facility_id', '=', facility).execute())).toHaveLength(0);
  });

  it('a key lives with its creator’s standing: lockdown and suspension refuse it, ending the creator’s sessions or leaving the facility ends it, an administrator may revoke it', async () => {
    const tenant = await tenantFor(t);
    const facility = await createFacility(t, tenant, { name: 'CPE Clés' });
    const adminEmail = `admin.${uniq()}@exemple.test`;
    const adminId = await createAdmin(t, tenant, adminEmail);
    const staffId = await createStaff(t, tenant, `educ.${uniq()}@exemple.test`, facility, adminId);
    const directorEmail = `direction.${uniq()}@exemple.test`;
    const directorId = await createStaff(t, tenant, directorEmail, facility);
    const now = t.deps.clock();
    const grant = await inTenant(database.db, tenant.id, (trx) =>
      trx.insertInto('memberships').values({ tenant_id: tenant.id, account_id: directorId, role: 'facility_director', facility_id: facility, source: 'grant', granted_by: staffId, approved_by: adminId, created_at: new Date(now.getTime() - 2 * 3600_000), expires_at: new Date(now.getTime() + 4 * 3600_000) }).returning('id').executeTakeFirstOrThrow(),
    );
    const director = ctxFor(t, tenant, await actorByEmail(t, tenant, directorEmail, now, 10, ['password', 'totp']));
    const newKey = async () => (await createApiKey(t.deps, director, facility, `Logiciel ${uniq()}`)).token;
    const places = async (key: string) => (await call(tenant, 'GET', `/api/v1/facilities/${facility}/places`, { key })).status;
    const reasons = async () => (await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select('details').where('action', '=', 'api.key.use').where('outcome', '=', 'denied').execute())).map((e) => (e.details as { reason: string }).reason);

    // The director's grant ends: the key goes on with the staff rights its creator still holds at the facility.
    const key = await newKey();
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('memberships').set({ revoked_at: now }).where('id', '=', grant.id).execute());
    expect(await places(key)).toBe(200);

    // A lockdown that asks staff to authenticate again: a key cannot, so it is refused until the level comes down.
    t.setNow(new Date(now.getTime() + 60_000));
    try {
      await inTenant(database.db, tenant.id, (trx) => trx.updateTable('tenants').set({ lockdown_level: 1, lockdown_changed_at: t.deps.clock() }).where('id', '=', tenant.id).execute());
      expect(await places(key)).toBe(403);
    } finally {
      await inTenant(database.db, tenant.id, (trx) => trx.updateTable('tenants').set({ lockdown_level: 0, lockdown_changed_at: t.deps.clock() }).where('id', '=', tenant.id).execute());
      t.setNow(now);
    }
    expect(await places(key)).toBe(200);

    // A suspended creator: refused, and recorded.
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('accounts').set({ status: 'suspended' }).where('id', '=', directorId).execute());
    expect(await places(key)).toBe(401);
    await reinstateAccount(t, tenant, directorId, adminId, staffId);
    expect(await places(key)).toBe(200);

    // An administrator ends the creator's sessions: the keys end with them.
    const admin = ctxFor(t, tenant, await actorByEmail(t, tenant, adminEmail, now));
    await endAccountSessions(t.deps, admin, directorId);
    expect(await places(key)).toBe(401);

    // An administrator revokes a key from the facility's key page (which offers no creation to them).
    await inTenant(database.db, tenant.id, (trx) => trx.insertInto('memberships').values({ tenant_id: tenant.id, account_id: directorId, role: 'facility_director', facility_id: facility, source: 'grant', granted_by: staffId, approved_by: adminId, created_at: now, expires_at: new Date(now.getTime() + 4 * 3600_000) }).execute());
    const second = await newKey();
    expect(await places(second)).toBe(200);
    const adminBrowser = new Client(t.app, tenant.hosts[0]!, '10.8.0.1');
    expect((await adminBrowser.signIn(adminEmail, PASSWORD)).status).toBe(303);
    const page = await adminBrowser.get(`/staff/facilities/${facility}/api-keys`);
    expect(page.status).toBe(200);
    expect(page.body).not.toContain(`action="/staff/facilities/${facility}/api-keys"`);
    const secondId = (await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('facility_api_keys').select('id').where('revoked_at', 'is', null).executeTakeFirstOrThrow())).id;
    expect((await adminBrowser.post(`/staff/facilities/${facility}/api-keys/${secondId}/revoke`)).status).toBe(303);
    expect(await places(second)).toBe(401);
    expect((await adminBrowser.post(`/staff/facilities/${facility}/api-keys`, { name: 'Pas moi' })).status).toBe(404);

    // The creator leaves the facility (every role there revoked): a key made before stops.
    const third = await newKey();
    expect(await places(third)).toBe(200);
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('memberships').set({ revoked_at: t.deps.clock() }).where('account_id', '=', directorId).where('revoked_at', 'is', null).execute());
    expect(await places(third)).toBe(401);
    expect(await reasons()).toEqual(expect.arrayContaining(['creator_suspended', 'revoked_key', 'creator_left_facility']));
  });
});
