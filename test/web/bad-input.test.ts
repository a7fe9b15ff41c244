/**
 * Bad input on every POST route, sent by the role that may use the route:
 * oversized bodies, wrong content types, malformed bodies, fields of the wrong
 * type, control characters and bidi overrides, very long strings, impossible
 * dates, unknown and malformed ids in every path parameter. Each answer is a
 * 4xx page in the reader's language (never a 5xx), and nothing is written.
 * Then junk query strings on the GET pages: 200 (or a clean 4xx for links
 * whose token is the query), and never a raw <script> reflected.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { bootstrapAdmin } from '../../src/identity/service.ts';
import { hashPassword } from '../../src/identity/passwords.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createFacility, createParent, createStaff, PASSWORD, registeredPostRoutes, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, type Response } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { enrolTotp } from '../helpers/factors.ts';

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

/* ------------------------------------------------------------------ fixture */

interface Fixture {
  tenant: Tenant;
  host: string;
  facility: string;
  /** A second facility the child has not applied to yet. */
  facility2: string;
  /** A real facility id, of another tenant. */
  foreignFacility: string;
  parent: Client;
  parentEmail: string;
  childId: string;
  applicationId: string;
  admin: Client;
  adminId: string;
  /** A director of the facility (also its staff), made on first use. */
  director: () => Promise<Client>;
  anon: Client;
  verifyToken: string;
  setPasswordToken: string;
  invitationToken: string;
}

let seq = 0;
const uniq = () => `${Date.now().toString(36)}${(seq++).toString(36)}`;

async function outboxToken(tenant: Tenant, to: string): Promise<string> {
  const mail = await inTenant(database.db, tenant.id, (trx) =>
    trx.selectFrom('mail_outbox').select('body_text').where('to_address', '=', to).orderBy('created_at', 'desc').executeTakeFirstOrThrow(),
  );
  return /token=([A-Za-z0-9_-]{43})/.exec(mail.body_text)![1]!;
}

function childForm(over: Record<string, string> = {}): Record<string, string> {
  const t0 = today(new Date());
  return {
    firstName: 'Éloïse',
    lastName: 'Gagnon-Côté',
    birthDate: addMonths(t0, -8),
    nirec: '1234 5678 90',
    desiredEntryDate: addMonths(t0, 3),
    day_mon: 'on',
    day_wed: 'on',
    inSubsidisedCare: 'on',
    ...over,
  };
}

/** A fresh tenant with a parent (a child, an application), an administrator, and one unused token of each kind. */
async function fixture(): Promise<Fixture> {
  const tenant = await tenantFor(t);
  const host = tenant.hosts[0]!;
  const facility = await createFacility(t, tenant, { name: 'CPE Les Lucioles' });
  const facility2 = await createFacility(t, tenant, { name: 'Garderie Les Hiboux', kind: 'garderie' });
  const other = await tenantFor(t);
  const foreignFacility = await createFacility(t, other, { name: 'CPE Ailleurs' });

  const parentEmail = `parent.${uniq()}@exemple.test`;
  await createParent(t, tenant, parentEmail);
  const parent = new Client(t.app, host);
  expect((await parent.signIn(parentEmail, PASSWORD)).status).toBe(303);
  await parent.get('/children/new');
  const created = await parent.post('/children/new', childForm());
  expect(created.status).toBe(303);
  const childId = /\/children\/([0-9a-f-]{36})/.exec(String(created.headers.location))![1]!;
  await parent.get(`/directory/${facility}`);
  expect((await parent.post('/applications', { childId, facilityId: facility })).status).toBe(303);
  const applicationId = (
    await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('applications').select('id').where('child_id', '=', childId).executeTakeFirstOrThrow())
  ).id;

  // The first administrator, as the CLI makes it; the set-password link stays unused.
  const adminEmail = `admin.${uniq()}@exemple.test`;
  const boot = await bootstrapAdmin(t.database.db, tenant, adminEmail, 'http://localhost', { actorAccountId: null, actorRoles: ['system:test'], ip: null, userAgent: null, requestId: null }, t.deps.clock());
  const setPasswordToken = /token=([A-Za-z0-9_-]{43})/.exec(boot.link)![1]!;
  const hash = await hashPassword(PASSWORD);
  await inTenant(database.db, tenant.id, (trx) => trx.updateTable('accounts').set({ password_hash: hash, email_verified_at: t.deps.clock() }).where('id', '=', boot.accountId).execute());
  // Administrators open no personal data without a second factor: an authenticator app, answered by Client.signIn().
  await enrolTotp(t.deps, tenant, boot.accountId, adminEmail);
  const admin = new Client(t.app, host);
  expect((await admin.signIn(adminEmail, PASSWORD)).status).toBe(303);
  const invitee = `invitee.${uniq()}@exemple.test`;
  await admin.get(`/directory/${facility}`);
  expect((await admin.post(`/admin/facilities/${facility}/invitations`, { email: invitee })).status).toBe(200);
  const invitationToken = await outboxToken(tenant, invitee);

  // An account that signed up and has not confirmed its address yet.
  const anon = new Client(t.app, host);
  const newcomer = `newcomer.${uniq()}@exemple.test`;
  await anon.get('/signup');
  expect((await anon.post('/signup', { email: newcomer, password: PASSWORD, passwordConfirm: PASSWORD })).status).toBe(200);
  const verifyToken = await outboxToken(tenant, newcomer);

  let director: Client | null = null;
  const makeDirector = async () => {
    if (director) return director;
    const staffEmail = `educ.${uniq()}@exemple.test`;
    const staffId = await createStaff(t, tenant, staffEmail, facility, boot.accountId);
    const email = `direction.${uniq()}@exemple.test`;
    const id = await createStaff(t, tenant, email, facility);
    const now = t.deps.clock();
    await inTenant(database.db, tenant.id, (trx) =>
      trx
        .insertInto('memberships')
        .values({ tenant_id: tenant.id, account_id: id, role: 'facility_director', facility_id: facility, source: 'grant', granted_by: staffId, approved_by: boot.accountId, created_at: new Date(now.getTime() - 2 * 3600_000), expires_at: new Date(now.getTime() + 4 * 3600_000) })
        .execute(),
    );
    director = new Client(t.app, host);
    expect((await director.signIn(email, PASSWORD)).status).toBe(303);
    return director;
  };

  return { tenant, host, facility, facility2, foreignFacility, parent, parentEmail, childId, applicationId, admin, adminId: boot.accountId, director: makeDirector, anon, verifyToken, setPasswordToken, invitationToken };
}

/**
 * The routes of one role share a fixture: building one (a parent with a child
 * and an application, an administrator, tokens, each with a password hash and a
 * sign-in) costs more than the cases most routes receive. Each route's test
 * still compares the tenant before and after its own cases, so a write by any
 * route is caught where it happens. A fixture older than two minutes is
 * replaced, so that sign-ins stay as recent as a fresh one's (recent-auth
 * checks allow five minutes).
 */
const SHARED_FOR_MS = 120_000;
const sharedFixtures = new Map<Who, { made: number; fx: Promise<Fixture> }>();

function fixtureFor(who: Who): Promise<Fixture> {
  const held = sharedFixtures.get(who);
  if (held && Date.now() - held.made < SHARED_FOR_MS) return held.fx;
  const fx = fixture();
  sharedFixtures.set(who, { made: Date.now(), fx });
  return fx;
}

const COUNTED = ['children', 'applications', 'families', 'accounts', 'invitations', 'memberships'] as const;

async function counts(tenant: Tenant): Promise<Record<string, number>> {
  return inTenant(database.db, tenant.id, async (trx) => {
    const out: Record<string, number> = {};
    for (const table of COUNTED) {
      const r = await trx.selectFrom(table).select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
      out[table] = Number(r.n);
    }
    return out;
  });
}

/** Everything about a child, application or account that a bad request could change. */
async function snapshot(tenant: Tenant): Promise<unknown> {
  return inTenant(database.db, tenant.id, async (trx) => ({
    children: await trx.selectFrom('children').selectAll().orderBy('id').execute(),
    applications: await trx.selectFrom('applications').selectAll().orderBy('id').execute(),
    accounts: await trx.selectFrom('accounts').select(['id', 'email', 'email_verified_at', 'password_hash', 'status']).orderBy('id').execute(),
    invitations: await trx.selectFrom('invitations').select(['id', 'accepted_at', 'revoked_at']).orderBy('id').execute(),
    memberships: await trx.selectFrom('memberships').select(['id', 'role', 'facility_id']).orderBy('id').execute(),
    tokens: await trx.selectFrom('account_tokens').select(['id', 'used_at']).orderBy('id').execute(),
    places: await trx.selectFrom('facility_places').selectAll().orderBy('facility_id').orderBy('age_group').execute(),
    offers: await trx.selectFrom('offers').selectAll().orderBy('id').execute(),
    apiKeys: await trx.selectFrom('facility_api_keys').selectAll().orderBy('id').execute(),
    rules: await trx.selectFrom('tenants').select('rules').where('id', '=', tenant.id).execute(),
  }));
}

/* -------------------------------------------------------------- route specs */

type Who = 'anonymous' | 'parent' | 'admin' | 'director';

interface RouteSpec {
  /** As registered with the router. */
  route: string;
  who: Who;
  /** Path parameters and a valid value for each. */
  params?: Record<string, (fx: Fixture) => string>;
  /** A body that would be accepted: each case spoils one part of it. */
  base: (fx: Fixture) => Record<string, string>;
  /** Free text fields (and ids sent in the body): wrong types, control characters, bidi overrides, 10,000 characters. */
  text?: string[];
  /** Password fields: wrong types and 10,000 characters (any other character is a legitimate password). */
  passwords?: string[];
  dates?: string[];
  /** Body fields that carry a facility or child id. */
  ids?: string[];
  /** The route reads no body: a leniently parsed urlencoded body is not an error there. */
  noBody?: boolean;
}

const INCIDENT = { title: 'Accès inhabituel', dataConcerned: 'Noms d’enfants', circumstances: 'Un samedi soir', discoveredOn: '2026-05-17', riskLevel: 'undetermined', measures: 'Sessions révoquées' };

/**
 * POST routes whose bad input is not a page of ours, each with where it is tested instead.
 */
const ELSEWHERE: Record<string, string> = {
  // oidc-provider reads its own bodies and answers with the standards' error codes (invalid_request, invalid_grant…).
  '/oidc/*': 'test/oidc/protocol.test.ts',
  // The facility API answers JSON, not pages: its bad input (types, JSON, sizes, keys) is tested there.
  '/api/v1/facilities/:id/vacancies': 'test/api/facility-api.test.ts',
  '/api/v1/facilities/:id/referrals/:offerId/identity': 'test/api/facility-api.test.ts',
  // Browsers' CSP violation reports: JSON, no page, no tenant.
  '/csp-report': 'test/web/csp-report.test.ts',
};

const SPECS: RouteSpec[] = [
  { route: '/signup', who: 'anonymous', base: () => ({ email: `someone.${uniq()}@exemple.test`, password: PASSWORD, passwordConfirm: PASSWORD }), text: ['email'], passwords: ['password', 'passwordConfirm'] },
  // A wrong password keeps sign-in from succeeding whatever else is sent; the e-mail field is still validated first.
  { route: '/signin', who: 'anonymous', base: (fx) => ({ email: fx.parentEmail, password: 'not the password at all' }), text: ['email'], passwords: ['password'] },
  { route: '/signout', who: 'parent', base: () => ({}), noBody: true },
  { route: '/verify-email', who: 'anonymous', base: (fx) => ({ token: fx.verifyToken }), text: ['token'] },
  { route: '/set-password', who: 'anonymous', base: (fx) => ({ token: fx.setPasswordToken, password: PASSWORD, passwordConfirm: PASSWORD }), text: ['token'], passwords: ['password', 'passwordConfirm'] },
  { route: '/invitations/accept', who: 'anonymous', base: (fx) => ({ token: fx.invitationToken, password: PASSWORD, passwordConfirm: PASSWORD }), text: ['token'], passwords: ['password', 'passwordConfirm'] },
  { route: '/admin/facilities/:id/invitations', who: 'admin', params: { id: (fx) => fx.facility }, base: () => ({ email: `staff.${uniq()}@exemple.test` }), text: ['email'] },
  { route: '/applications', who: 'parent', base: (fx) => ({ childId: fx.childId, facilityId: fx.facility2, siblingAttending: 'on', parentIsStaff: 'on' }), text: ['childId', 'facilityId', 'siblingAttending', 'parentIsStaff'], ids: ['childId', 'facilityId'] },
  {
    route: '/children/new',
    who: 'parent',
    base: () => childForm({ nirec: '5555666677', firstName: 'Zoé' }),
    text: ['firstName', 'lastName', 'nirec', 'day_mon', 'day_fri', 'inSubsidisedCare'],
    dates: ['birthDate', 'desiredEntryDate'],
  },
  {
    route: '/children/:id/edit',
    who: 'parent',
    params: { id: (fx) => fx.childId },
    base: () => childForm({ nirec: '', firstName: 'Éloïse-Marie' }),
    text: ['firstName', 'lastName', 'nirec', 'day_mon', 'day_fri', 'inSubsidisedCare'],
    dates: ['birthDate', 'desiredEntryDate'],
  },
  // Periodic confirmation: every case is refused (no CSRF, another's id, a malformed id), so the file is never confirmed.
  { route: '/children/:id/confirm', who: 'parent', params: { id: (fx) => fx.childId }, base: () => ({}), noBody: true },
  // A facility's declared priorities: the administrator may declare them; each spoiled field is refused and nothing is saved.
  { route: '/staff/facilities/:id/priorities', who: 'admin', params: { id: (fx) => fx.facility }, base: () => ({ form: 'priorities', kind_residentOf: 'on', detail_residentOf: 'Longueuil' }), text: ['form', 'kind_residentOf', 'detail_residentOf'] },
  { route: '/children/:id/applications/:appId/withdraw', who: 'parent', params: { id: (fx) => fx.childId, appId: (fx) => fx.applicationId }, base: () => ({}), noBody: true },
  // Deleting a file (records): every case here is refused, so the file is never deleted.
  { route: '/children/:id/delete', who: 'parent', params: { id: (fx) => fx.childId }, base: () => ({}), noBody: true },
  // Asking for a deleted file back: the fixture's file is live, so every case is refused and nothing is asked.
  { route: '/children/:id/restore-request', who: 'parent', params: { id: (fx) => fx.childId }, base: () => ({}), noBody: true },
  // The child-file console (src/waitlist/console-routes.tsx): a NIREC of the right form that matches nothing;
  // restore requests nobody made; a live file that cannot be asked back.
  { route: '/admin/files', who: 'admin', base: () => ({ nirec: 'QZXW123456' }), text: ['nirec'] },
  { route: '/admin/files/:id/restore-request', who: 'admin', params: { id: (fx) => fx.childId }, base: () => ({}), noBody: true },
  { route: '/admin/restores/:id/approve', who: 'admin', params: { id: () => randomUUID() }, base: () => ({}), noBody: true },
  { route: '/admin/restores/:id/reject', who: 'admin', params: { id: () => randomUUID() }, base: () => ({}), noBody: true },
  // The programme's coordinated allocation (src/waitlist/allocation-admin-routes.tsx): on or off, nothing else.
  { route: '/operator/allocation', who: 'admin', base: () => ({ enabled: 'on' }), text: ['enabled'] },
  // Privacy and incidents (src/privacy). The deletion request reads no body. The register and the breach report are the
  // security officer's: an administrator is refused whatever is sent (their validation is test/privacy/incidents.test.ts).
  { route: '/account/privacy/delete', who: 'parent', base: () => ({}), noBody: true },
  { route: '/security/incidents', who: 'admin', base: () => INCIDENT, text: ['title', 'dataConcerned', 'circumstances', 'measures'] },
  { route: '/security/incidents/:id', who: 'admin', params: { id: () => randomUUID() }, base: () => INCIDENT, text: ['title', 'dataConcerned', 'circumstances', 'measures'] },
  { route: '/security/incidents/:id/alerts', who: 'admin', params: { id: () => randomUUID() }, base: () => ({ alerts: randomUUID() }), text: ['alerts'] },
  { route: '/security/incidents/:id/events', who: 'admin', params: { id: () => randomUUID() }, base: () => ({ seqFrom: '1', seqTo: '5' }), text: ['seqFrom', 'seqTo', 'actor', 'session'] },
  { route: '/security/breach-report/notices', who: 'admin', base: (fx) => ({ kind: 'actor', value: fx.parentEmail, from: '2026-05-15T19:00', to: '2026-05-15T23:00', incident: randomUUID() }), text: ['kind', 'value', 'from', 'to', 'incident'] },
  { route: '/security/breach-report', who: 'admin', base: (fx) => ({ kind: 'actor', value: fx.parentEmail, from: '2026-05-15T19:00', to: '2026-05-15T23:00', format: 'html' }), text: ['kind', 'value', 'from', 'to', 'format'] },
  // Second factors (src/identity/factors). A code that is not the right one, a credential that is no credential:
  // whatever else is sent, these are refused; the spoiled field must be refused too, and nothing written.
  { route: '/account/security/totp', who: 'parent', base: () => ({ code: '123456' }), text: ['code'] },
  { route: '/account/security/totp/remove', who: 'parent', base: () => ({}), noBody: true },
  { route: '/account/security/recovery-codes', who: 'parent', base: () => ({}), noBody: true },
  { route: '/account/security/passkeys/options', who: 'parent', base: () => ({}), noBody: true },
  { route: '/account/security/passkeys', who: 'parent', base: () => ({ name: 'Téléphone', credential: '{}' }), text: ['name', 'credential'] },
  // No passkey of this parent has these ids: the spoiled name is refused before the id is looked up.
  { route: '/account/security/passkeys/:id/rename', who: 'parent', params: { id: () => randomUUID() }, base: () => ({ name: 'Téléphone' }), text: ['name'] },
  { route: '/account/security/passkeys/:id/revoke', who: 'parent', params: { id: () => randomUUID() }, base: () => ({}), noBody: true },
  // A privileged holder's first passkey: the mailed link (src/identity/factors/mailbox.ts). A parent needs none.
  { route: '/account/security/passkey-link', who: 'parent', base: () => ({}), noBody: true },
  // Sessions and privileged roles (src/identity/sessions-routes.tsx, grants-routes.tsx). Ids nobody has: 404 whatever the body.
  { route: '/account/sessions/:id/end', who: 'parent', params: { id: () => randomUUID() }, base: () => ({}), noBody: true },
  { route: '/account/sessions/end-others', who: 'parent', base: () => ({}), noBody: true },
  { route: '/admin/accounts/:id/sessions/end', who: 'admin', params: { id: () => randomUUID() }, base: () => ({}), noBody: true },
  { route: '/admin/grants/:id/approve', who: 'admin', params: { id: () => randomUUID() }, base: () => ({}), noBody: true },
  { route: '/admin/grants/:id/refuse', who: 'admin', params: { id: () => randomUUID() }, base: () => ({}), noBody: true },
  { route: '/admin/memberships/:id/revoke', who: 'admin', params: { id: () => randomUUID() }, base: () => ({}), noBody: true },
  // Factor resets (src/identity/factor-resets-routes.tsx): refused at the first spoiled field, before any step-up; unknown ids are 404.
  { route: '/admin/factor-resets/new', who: 'admin', base: (fx) => ({ email: fx.parentEmail, reason: 'Rappel au numéro connu' }), text: ['email', 'reason'] },
  { route: '/admin/factor-resets/:id/approve', who: 'admin', params: { id: () => randomUUID() }, base: () => ({}), noBody: true },
  { route: '/admin/factor-resets/:id/refuse', who: 'admin', params: { id: () => randomUUID() }, base: () => ({}), noBody: true },
  // Break-glass (src/identity/break-glass-routes.tsx): the administrator here has no role cooling off, so even a good reason changes nothing.
  { route: '/break-glass', who: 'admin', base: () => ({ reason: 'Urgence réelle ce soir', return: '/admin' }), text: ['reason'] },
  { route: '/break-glass/end', who: 'admin', base: () => ({}), noBody: true },
  // The security console (src/detection): the administrator is not a security officer, and every bad request is a 4xx all the same.
  ...(['acknowledge', 'close', 'reopen', 'reinstate', 'reinstateApprove', 'reinstateRefuse'] as const).map((k): RouteSpec => ({ route: `/security/alerts/:id/${k}`, who: 'admin', params: { id: () => randomUUID() }, base: () => ({}), noBody: true })),
  { route: '/security/alerts/:id/assign', who: 'admin', params: { id: () => randomUUID() }, base: () => ({ assignee: randomUUID() }), text: ['assignee'] },
  { route: '/security/alerts/:id/note', who: 'admin', params: { id: () => randomUUID() }, base: () => ({ note: 'Constat' }), text: ['note'] },
  { route: '/security/alerts/webhook', who: 'admin', base: () => ({ url: 'https://exemple.test/alertes' }), text: ['url'] },
  { route: '/security/lockdown/raise', who: 'admin', base: () => ({ level: '1', reason: 'Lecture massive' }), text: ['level', 'reason'] },
  { route: '/security/lockdown/lower', who: 'admin', base: () => ({ level: '0', reason: 'Rétabli' }), text: ['level', 'reason'] },
  { route: '/security/lockdown/changes/:id/approve', who: 'admin', params: { id: () => randomUUID() }, base: () => ({}), noBody: true },
  { route: '/security/lockdown/changes/:id/refuse', who: 'admin', params: { id: () => randomUUID() }, base: () => ({}), noBody: true },
  { route: '/security/rules', who: 'admin', base: () => ({ code: 'files_read.5m', threshold: '10', windowSeconds: '300', response: 'alert', lockdownLevel: '', enabled: 'on' }), text: ['code', 'threshold', 'windowSeconds', 'response', 'lockdownLevel'] },
  { route: '/security/rules/hours', who: 'admin', base: () => ({ day1: 'on', day2: 'on', day3: 'on', start: '07:00', end: '19:00', timeZone: 'America/Toronto' }), text: ['start', 'end', 'timeZone'] },
  // A grant request is refused at the first spoiled field, before any step-up.
  { route: '/grants/new', who: 'admin', base: (fx) => ({ email: fx.parentEmail, role: 'security_officer', facilityId: '', reason: 'Remplacement', durationMinutes: '240' }), text: ['email', 'role', 'reason', 'durationMinutes'] },
  // OpenID Connect console and consent (src/oidc). Unknown ids are 404 whatever the body; a registration is refused at the spoiled field.
  { route: '/admin/oidc/clients', who: 'admin', base: () => ({ name: 'Catalogue des bibliothèques', redirectUris: 'https://catalogue.exemple.test/callback', kind: 'confidential' }), text: ['redirectUris', 'name'] },
  { route: '/admin/oidc/clients/:clientId/edit', who: 'admin', params: { clientId: () => 'client-inconnu' }, base: () => ({ name: 'Catalogue', redirectUris: 'https://catalogue.exemple.test/callback', scope: 'email' }), text: ['name', 'redirectUris', 'extraScopes', 'logoUri'] },
  { route: '/admin/oidc/clients/:clientId/secret', who: 'admin', params: { clientId: () => 'client-inconnu' }, base: () => ({}), noBody: true },
  { route: '/admin/oidc/clients/:clientId/decision', who: 'admin', params: { clientId: () => 'client-inconnu' }, base: () => ({ decision: 'approve' }), text: ['decision'] },
  { route: '/admin/oidc/entitlements', who: 'admin', base: (fx) => ({ email: fx.parentEmail, scope: 'library', kind: 'patron', value: 'Réseau BIBLIO', labelFr: 'Abonnée', labelEn: 'Patron', validUntil: '2027-01-01' }), text: ['email', 'scope', 'kind', 'value', 'labelFr', 'labelEn'], dates: ['validUntil'] },
  { route: '/admin/oidc/entitlements/:id/revoke', who: 'admin', params: { id: () => randomUUID() }, base: () => ({}), noBody: true },
  { route: '/account/access-rights/grants/:grantId/withdraw', who: 'parent', params: { grantId: () => 'nothing-granted' }, base: () => ({}), noBody: true },
  { route: '/oidc/interaction/:uid/consent', who: 'parent', params: { uid: () => 'no-such-interaction' }, base: () => ({ decision: 'allow', scope: 'openid' }), text: ['decision', 'scope'] },
  { route: '/password/forgot', who: 'anonymous', base: (fx) => ({ email: fx.parentEmail }), text: ['email'] },
  { route: '/signin/second-factor', who: 'anonymous', base: () => ({ code: '123456', return: '/account' }), text: ['code', 'return'] },
  { route: '/signin/recovery-code', who: 'anonymous', base: () => ({ code: 'ABCD-EFGH-JKMN-PQRS-TVWX-YZ01', return: '/account' }), text: ['code', 'return'] },
  { route: '/signin/passkey/options', who: 'anonymous', base: () => ({}), noBody: true },
  { route: '/signin/second-factor/passkey/options', who: 'anonymous', base: () => ({}), noBody: true },
  { route: '/signin/passkey', who: 'anonymous', base: () => ({ credential: '{}', return: '/account' }), text: ['credential', 'return'] },
  { route: '/reauth', who: 'parent', base: () => ({ password: 'not the password at all', return: '/account' }), text: ['return'], passwords: ['password'] },
  // A wrong current password: whatever the new one, nothing is changed.
  { route: '/account/security/password', who: 'parent', base: () => ({ currentPassword: 'not the password at all', password: 'girafe parapluie tempête violoncelle', passwordConfirm: 'girafe parapluie tempête violoncelle' }), passwords: ['currentPassword', 'password', 'passwordConfirm'] },
  { route: '/reauth/passkey/options', who: 'parent', base: () => ({}), noBody: true },
  { route: '/reauth/passkey', who: 'parent', base: () => ({ credential: '{}', return: '/account' }), text: ['credential', 'return'] },
  // Assisted mode (src/assisted): an administrator is no agent, so even a good request changes nothing; unknown consents are 404.
  { route: '/assist', who: 'admin', base: (fx) => ({ email: fx.parentEmail, channel: 'phone', note: 'Au téléphone' }), text: ['email', 'channel', 'note'] },
  { route: '/assist/:id', who: 'admin', params: { id: () => randomUUID() }, base: () => ({ code: '123456' }), text: ['code'] },
  { route: '/assist/end', who: 'admin', base: () => ({}), noBody: true },
  // Places, referrals and offers (src/waitlist/offer-routes.tsx). Vacancies of 0 where none are open; offers nobody was made.
  { route: '/staff/facilities/:id/vacancies', who: 'director', params: { id: (fx) => fx.facility }, base: () => ({ infant: '0', toddler: '0' }), text: ['infant', 'toddler'] },
  { route: '/staff/facilities/:id/referrals/:offerId/start', who: 'director', params: { id: (fx) => fx.facility, offerId: () => randomUUID() }, base: () => ({ startDate: '2026-09-01' }), dates: ['startDate'] },
  // A reason for an offer that is no protected file's accepted one: nothing is read, nothing changes.
  { route: '/staff/facilities/:id/referrals/:offerId/identity', who: 'director', params: { id: (fx) => fx.facility, offerId: () => randomUUID() }, base: () => ({ reason: 'Préparer l’accueil' }), text: ['reason'] },
  // API keys: a name spoiled is refused before any key is made; keys nobody has: 404.
  { route: '/staff/facilities/:id/api-keys', who: 'director', params: { id: (fx) => fx.facility }, base: () => ({ name: 'Logiciel de gestion' }), text: ['name'] },
  { route: '/staff/facilities/:id/api-keys/:keyId/revoke', who: 'director', params: { id: (fx) => fx.facility, keyId: () => randomUUID() }, base: () => ({}), noBody: true },
  { route: '/offers/:id/accept', who: 'parent', params: { id: () => randomUUID() }, base: () => ({}), noBody: true },
  { route: '/offers/:id/refuse', who: 'parent', params: { id: () => randomUUID() }, base: () => ({}), noBody: true },
];

async function clientFor(fx: Fixture, who: Who): Promise<Client> {
  return who === 'parent' ? fx.parent : who === 'admin' ? fx.admin : who === 'director' ? fx.director() : fx.anon;
}

function pathOf(spec: RouteSpec, fx: Fixture, over: Record<string, string> = {}): string {
  return spec.route.replace(/:(\w+)/g, (_, name: string) => over[name] ?? spec.params![name]!(fx));
}


/* -------------------------------------------------------------------- cases */

/** Stands for 5,000 nested arrays in a JSON body (JSON.stringify would overflow the stack building it). */
const DEEP = 'DEEP_NESTING_SENTINEL';
const PAST_LIMIT = 'x'.repeat(70 * 1024);
const LONG = 'a'.repeat(10_000);
/** Each bad value is built from the good one, so that it is the bad part alone that must be refused. */
const BAD_TEXT: [string, (good: string) => string][] = [
  ['a bell character', (g) => insert(g, '\u0007')],
  ['a NUL character', (g) => insert(g, '\u0000')],
  ['a line feed', (g) => insert(g, '\n')],
  ['an escape sequence', (g) => insert(g, '\u001b[31m')],
  ['a C1 control', (g) => insert(g, '\u0085')],
  ['a right-to-left override', (g) => insert(g, '\u202e')],
  ['a bidi isolate', (g) => insert(g, '\u2066')],
  ['10,000 characters', (g) => LONG + g],
  ['only 10,000 characters', () => LONG],
];

function insert(good: string, bad: string): string {
  const at = Math.min(1, good.length);
  return good.slice(0, at) + bad + good.slice(at);
}
const BAD_DATES = ['2025-02-30', '2025-13-01', '0000-01-01', '2025-1-1', '  ', '2025-02-28T00:00', '2025-00-10', '2025-04-31', '20250101', '2025-02-29', '1899-12-31', '٢٠٢٥-٠١-٠١', '2025-01-01\u0000'];
const BAD_IDS: [string, string][] = [
  ['an unknown uuid', '00000000-0000-4000-8000-000000000000'],
  ['a random uuid', randomUUID()],
  ['a word', 'not-a-uuid'],
  ['36 hyphens', '-'.repeat(36)],
  ['36 hex digits', 'a'.repeat(36)],
  ['an SQL injection', "1' OR '1'='1"],
  ['a NUL', '\u0000'],
  ['a right-to-left override', '\u202e'],
  ['a dotted path', '../../admin'],
  ['250 characters', 'b'.repeat(250)],
  ['an upper-case uuid of nothing', 'FFFFFFFF-FFFF-4FFF-BFFF-FFFFFFFFFFFF'],
];

interface Case {
  label: string;
  /** Path parameter overrides. */
  params?: Record<string, string>;
  body: { kind: 'form'; fields: Record<string, string | string[]> } | { kind: 'raw'; contentType: string; payload: string | Buffer };
  /** Exact statuses allowed (default: any 4xx). */
  statuses?: number[];
  /** Text the page must show (French). */
  shows?: string;
}

function formWith(base: Record<string, string>, csrf: string, field: string, value: string | string[]): Record<string, string | string[]> {
  return { ...base, _csrf: csrf, [field]: value };
}

function casesFor(spec: RouteSpec, fx: Fixture, csrf: string): Case[] {
  const base = spec.base(fx);
  const cases: Case[] = [];
  // (a) over 64 KiB, form and JSON
  cases.push({ label: 'a form body over 64 KiB', body: { kind: 'form', fields: { ...base, _csrf: csrf, padding: PAST_LIMIT } }, statuses: [413], shows: 'La demande est trop volumineuse' });
  cases.push({ label: 'a JSON body over 64 KiB', body: { kind: 'raw', contentType: 'application/json', payload: JSON.stringify({ ...base, _csrf: csrf, padding: PAST_LIMIT }) }, statuses: [415] }); // pages take forms only: refused by type before the size is read
  // (b) content types the application does not take
  const asForm = new URLSearchParams({ ...base, _csrf: csrf }).toString();
  for (const type of ['text/plain', 'text/plain; charset=utf-8', 'application/xml', 'text/xml', 'multipart/form-data; boundary=x', 'application/octet-stream']) {
    cases.push({ label: `content type ${type}`, body: { kind: 'raw', contentType: type, payload: type.includes('xml') ? `<form><_csrf>${csrf}</_csrf></form>` : asForm }, statuses: [400, 415] });
  }
  // (c) malformed bodies
  cases.push({ label: 'truncated JSON', body: { kind: 'raw', contentType: 'application/json', payload: `{"_csrf":"${csrf}","email":` } });
  cases.push({ label: 'JSON that is not an object', body: { kind: 'raw', contentType: 'application/json', payload: '[1,2,3]' } });
  cases.push({ label: 'a JSON string', body: { kind: 'raw', contentType: 'application/json', payload: '"hello"' } });
  cases.push({ label: 'an empty JSON body', body: { kind: 'raw', contentType: 'application/json', payload: '' } });
  cases.push({ label: 'JSON with __proto__', body: { kind: 'raw', contentType: 'application/json', payload: `{"_csrf":"${csrf}","__proto__":{"role":"tenant_admin"}}` } });
  cases.push({ label: 'JSON with constructor.prototype', body: { kind: 'raw', contentType: 'application/json', payload: `{"_csrf":"${csrf}","constructor":{"prototype":{"role":"tenant_admin"}}}` } });
  if (!spec.noBody) {
    const first = spec.text?.[0] ?? 'x';
    cases.push({ label: 'malformed percent-encoding', body: { kind: 'raw', contentType: 'application/x-www-form-urlencoded', payload: `${new URLSearchParams({ ...base, _csrf: csrf }).toString().replace(new RegExp(`(^|&)${first}=[^&]*`), `$1${first}=%E0%A4%A`)}&%%%=&&&=x` } });
    // Bytes that are not UTF-8 (an overlong form, a lone continuation byte, 0xFF) in the first field, the rest valid.
    const good = new URLSearchParams({ ...base, _csrf: csrf });
    good.delete(first);
    cases.push({ label: 'invalid UTF-8 bytes', body: { kind: 'raw', contentType: 'application/x-www-form-urlencoded', payload: Buffer.concat([Buffer.from(`${good.toString()}&${first}=Zo`), Buffer.from([0xc3, 0x28, 0x80, 0xff, 0xc0, 0xaf])]) }, statuses: [400] });
    cases.push({ label: 'a urlencoded body with only separators', body: { kind: 'raw', contentType: 'application/x-www-form-urlencoded', payload: `_csrf=${encodeURIComponent(csrf)}&&&===&` } });
  }
  // (d) wrong types
  for (const field of [...(spec.text ?? []), ...(spec.passwords ?? []), ...(spec.dates ?? [])]) {
    const good = base[field] ?? 'on';
    cases.push({ label: `${field} twice (an array)`, body: { kind: 'form', fields: formWith(base, csrf, field, [good, good]) } });
    for (const [what, value] of [
      ['a number', 42],
      ['an object', { $ne: null }],
      ['null', null],
      ['true', true],
      ['an array', [good]],
      ['a deeply nested array', DEEP],
    ] as [string, unknown][]) {
      const payload = JSON.stringify({ ...base, _csrf: csrf, [field]: value }).replace(`"${DEEP}"`, '['.repeat(5000) + ']'.repeat(5000));
      cases.push({ label: `${field} as ${what} in JSON`, body: { kind: 'raw', contentType: 'application/json', payload } });
    }
  }
  // (e) control characters, bidi overrides, very long strings
  for (const field of spec.text ?? []) {
    for (const [what, make] of BAD_TEXT) cases.push({ label: `${field} with ${what}`, body: { kind: 'form', fields: formWith(base, csrf, field, make(base[field] ?? 'on')) } });
  }
  for (const field of spec.passwords ?? []) cases.push({ label: `${field} of 10,000 characters`, body: { kind: 'form', fields: formWith(base, csrf, field, LONG) } });
  // (f) impossible dates
  for (const field of spec.dates ?? []) {
    for (const value of BAD_DATES) {
      cases.push({ label: `${field} = ${JSON.stringify(value)}`, body: { kind: 'form', fields: formWith(base, csrf, field, value) }, statuses: [400], shows: value.trim() ? 'Entrez une date réelle' : 'Entrez une date' });
    }
  }
  // (g) unknown and malformed ids, in every path parameter and in body fields holding ids
  for (const name of Object.keys(spec.params ?? {})) {
    for (const [what, value] of BAD_IDS) {
      cases.push({ label: `path :${name} = ${what}`, params: { [name]: encodeURIComponent(value) }, body: { kind: 'form', fields: { ...base, _csrf: csrf } } });
    }
    for (const broken of ['%E0%A4%A', '%ZZ']) {
      cases.push({ label: `path :${name} = a broken %-escape ${broken}`, params: { [name]: broken }, body: { kind: 'form', fields: { ...base, _csrf: csrf } } });
    }
    if (name === 'id' && spec.route.startsWith('/admin/facilities')) {
      cases.push({ label: `path :${name} = a facility of another tenant`, params: { [name]: fx.foreignFacility }, body: { kind: 'form', fields: { ...base, _csrf: csrf } } });
    }
  }
  for (const field of spec.ids ?? []) {
    for (const [what, value] of [...BAD_IDS, ['a facility of another tenant', fx.foreignFacility] as [string, string]]) {
      cases.push({ label: `${field} = ${what}`, body: { kind: 'form', fields: formWith(base, csrf, field, value) } });
    }
  }
  return cases;
}

async function send(client: Client, url: string, c: Case): Promise<Response> {
  if (c.body.kind === 'form') return client.post(url, c.body.fields, { csrf: null });
  return client.raw({ method: 'POST', url, payload: c.body.payload, headers: { 'content-type': c.body.contentType } });
}

/** What is wrong with an answer to a refused request; null when it is right. */
function problem(r: Response, c: Case, lang: 'fr' | 'en'): string | null {
  const ok = c.statuses ? c.statuses.includes(r.status) : r.status >= 400 && r.status < 500;
  if (!ok) return `status ${r.status}${r.headers.location ? ` → ${r.headers.location}` : ''}`;
  if (!/^text\/html/.test(String(r.headers['content-type']))) return `content type ${r.headers['content-type']}`;
  if (!r.body.includes(`<html lang="${lang}"`)) return `page not in ${lang}`;
  if (c.shows && lang === 'fr' && !r.body.includes(c.shows)) return `page does not say “${c.shows}”`;
  return null;
}

/* -------------------------------------------------------------------- tests */

describe('POST routes', () => {
  it('the list of routes under test is exactly the list of registered POST routes', () => {
    const registered = registeredPostRoutes(t.app);
    expect(registered.length).toBeGreaterThan(5);
    expect(registered.filter((r) => !(r in ELSEWHERE))).toEqual(SPECS.map((s) => s.route).sort());
    for (const s of SPECS) expect(t.app.hasRoute({ method: 'POST', url: s.route }), s.route).toBe(true);
  });

  for (const spec of SPECS) {
    it(`POST ${spec.route}: every bad input is a 4xx page in the reader's language, and nothing is written`, async () => {
      const fx = await fixtureFor(spec.who);
      const client = await clientFor(fx, spec.who);
      await client.get('/');
      const csrf = client.csrf!;
      expect(csrf).toBeTruthy();
      const before = await counts(fx.tenant);
      const stateBefore = await snapshot(fx.tenant);
      const failures: string[] = [];

      // One case in English first: the reader's language comes from ?lang=en.
      const english = await send(client, `${pathOf(spec, fx)}?lang=en`, { label: 'en', body: { kind: 'form', fields: { ...spec.base(fx), _csrf: csrf, padding: PAST_LIMIT } } });
      expect(english.status).toBe(413);
      expect(english.body).toContain('<html lang="en"');
      expect(english.body).toContain('The request is too large.');
      expect(english.body).not.toContain('trop volumineuse');
      await client.get('/?lang=fr');

      for (const c of casesFor(spec, fx, csrf)) {
        const r = await send(client, pathOf(spec, fx, c.params), c);
        const p = problem(r, c, 'fr');
        if (p) failures.push(`${c.label}: ${p}`);
      }
      expect(failures, `POST ${spec.route}`).toEqual([]);
      expect(await counts(fx.tenant)).toEqual(before);
      expect(await snapshot(fx.tenant)).toEqual(stateBefore);
      // The session that sent all this is still the same, still signed in.
      if (spec.who !== 'anonymous') expect((await client.get('/account')).status).toBe(200);
    });
  }

  it('an impossible date is reported in English to an English reader', async () => {
    const fx = await fixture();
    await fx.parent.get('/children/new?lang=en');
    const before = await counts(fx.tenant);
    const r = await fx.parent.post('/children/new', childForm({ nirec: '9999888877', birthDate: '2025-02-30', desiredEntryDate: '2025-13-01' }));
    expect(r.status).toBe(400);
    expect(r.body).toContain('<html lang="en"');
    expect(r.body).toContain('Enter a real date, for example 27 March 2025');
    expect(r.body).not.toContain('Entrez une date');
    expect(await counts(fx.tenant)).toEqual(before);
  });
});

/* ------------------------------------------------------------ GET, junk query */

const JUNK_QUERIES = [
  'page=-1&kind=<script>alert(1)</script>',
  'page=1e9',
  'page=NaN&q=<script>alert(1)</script>&municipality=<script>x</script>',
  'page=99999999999999999999999&subsidised=<script>&infant=1',
  'page[]=1&kind[]=cpe&q[]=a&q[]=b',
  'q=%00&municipality=%00',
  'q=%E2%80%AEcpe&municipality=Longueuil%00',
  `q=${'z'.repeat(10_000)}`,
  'status=<script>alert(1)</script>&lang=<script>',
  'return=/<script>alert(1)</script>&signedOut=<script>',
  'return=javascript:alert(1)',
  '%%%=&&&=x&=&a[b][c]=1',
  'lang=en&lang=fr&page=2&page=3',
];

describe('GET pages with junk query strings', () => {
  it('answer 200 (or a clean 4xx where the query is a token) and never reflect a raw <script>', async () => {
    const fx = await fixture();
    const staffEmail = `staff.${uniq()}@exemple.test`;
    const staffId = await inTenant(database.db, fx.tenant.id, async (trx) => {
      const acct = await trx
        .insertInto('accounts')
        .values({ tenant_id: fx.tenant.id, email: staffEmail, password_hash: await hashPassword(PASSWORD), locale: 'fr', email_verified_at: new Date() })
        .returning('id')
        .executeTakeFirstOrThrow();
      await trx.insertInto('memberships').values({ tenant_id: fx.tenant.id, account_id: acct.id, role: 'facility_staff', facility_id: fx.facility, source: 'invitation', granted_by: null, approved_by: null, created_at: new Date(), expires_at: null }).execute();
      return acct.id;
    });
    // Staff open no personal data without a second factor: an authenticator app, answered by Client.signIn().
    await enrolTotp(t.deps, fx.tenant, staffId, staffEmail);
    const staff = new Client(t.app, fx.host);
    await staff.signIn(staffEmail, PASSWORD);
    const signedOut = new Client(t.app, fx.host);
    const pages: [Client, string, 'ok' | 'token'][] = [
      [signedOut, '/', 'ok'],
      [signedOut, '/directory', 'ok'],
      [signedOut, `/directory/${fx.facility}`, 'ok'],
      [signedOut, '/signin', 'ok'],
      [signedOut, '/signup', 'ok'],
      [signedOut, '/verify-email', 'token'],
      [signedOut, '/set-password', 'token'],
      [signedOut, '/invitations/accept', 'token'],
      [signedOut, '/account/security/passkey-link', 'token'],
      [fx.parent, '/account/security/passkey-link', 'token'],
      [fx.parent, '/account', 'ok'],
      [fx.parent, '/children/new', 'ok'],
      [fx.parent, `/children/${fx.childId}`, 'ok'],
      [fx.parent, `/children/${fx.childId}/edit`, 'ok'],
      [fx.parent, '/directory', 'ok'],
      [staff, '/staff', 'ok'],
      [staff, `/staff/facilities/${fx.facility}/candidates`, 'ok'],
      [fx.admin, '/admin', 'ok'],
      [fx.admin, '/admin/files', 'ok'],
      [fx.admin, `/admin/files/${fx.childId}/history`, 'ok'],
      [fx.admin, '/admin/restores', 'ok'],
    ];
    const failures: string[] = [];
    const before = await counts(fx.tenant);
    for (const [client, path, kind] of pages) {
      for (const q of JUNK_QUERIES) {
        const r = await client.get(`${path}?${q}`);
        const label = `GET ${path}?${q.slice(0, 60)}`;
        const statusOk = kind === 'ok' ? r.status === 200 : r.status >= 400 && r.status < 500;
        if (!statusOk) failures.push(`${label}: status ${r.status}`);
        if (/<script(?![^>]*src="\/assets\/(?:guichet|passkeys)\.js")/i.test(r.body)) failures.push(`${label}: a raw <script> in the page`);
        if (r.body.includes('javascript:')) failures.push(`${label}: a javascript: URL in the page`);
        if (r.body.includes('\u202e')) failures.push(`${label}: a raw right-to-left override in the page`);
        if (!r.body.includes('<html lang=')) failures.push(`${label}: not a page`);
      }
      // reset the language the junk may have switched
      await client.get('/?lang=fr');
    }
    expect(failures).toEqual([]);
    expect(await counts(fx.tenant)).toEqual(before);
  });

  it('unknown and malformed ids in GET path parameters are a 404 page, never a 5xx', async () => {
    const fx = await fixture();
    const failures: string[] = [];
    const anon = new Client(t.app, fx.host);
    for (const [what, id] of [...BAD_IDS.map(([w, v]) => [w, encodeURIComponent(v)]), ['a broken %-escape', '%E0%A4%A'], ['a bad %-escape', '%ZZ']]) {
      for (const [client, path] of [
        [anon, `/directory/${id}`],
        [fx.parent, `/directory/${id}`],
        [fx.parent, `/children/${id}`],
        [fx.parent, `/children/${id}/edit`],
        [fx.admin, `/staff/facilities/${id}/candidates`],
        [fx.admin, `/admin/files/${id}/history`],
      ] as [Client, string][]) {
        const r = await client.get(path);
        if (r.status !== 404) failures.push(`GET ${path} (${what}): status ${r.status}`);
        else if (!r.body.includes('<html lang="fr"')) failures.push(`GET ${path} (${what}): not a French page`);
      }
    }
    expect(failures).toEqual([]);
  });
});
