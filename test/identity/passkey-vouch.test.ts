/**
 * A passkey counts for privileged actions only once it is vouched for
 * (migration 0049, src/identity/factors/mailbox.ts). A staff member's passkey
 * enrolled before she was granted a privileged role — with a password and an
 * app code, both relayable by a phishing proxy — does not pass a privileged
 * step-up until she confirms it with a link e-mailed to her and followed in
 * the same session; a vouched passkey beside unvouched ones is the only one
 * offered and the only one that counts; passkeys enrolled with the mailbox
 * proven, or by a session signed with a vouched passkey, are vouched at once.
 * Over HTTP, with a software authenticator; the outbox is read as the mailer
 * would send it.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Trx } from '../../src/db/connection.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { resolveSession } from '../../src/identity/service.ts';
import { isRecentAuth } from '../../src/identity/stepup.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { createAdmins, createFacility, createStaff, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { mailedPasskeyLink } from '../helpers/factors.ts';
import { SoftAuthenticator } from '../helpers/soft-authenticator.ts';

let database: TestDatabase;
let t: TestApp;
let tenant: Tenant;
let host: string;
let facility: string;
let admins: string[];

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
});

afterAll(async () => {
  await t?.close();
  await database?.close();
});

let seq = 0;
function uniqueEmail(prefix: string): string {
  return `${prefix}.${Date.now().toString(36)}${(seq++).toString(36)}@exemple.test`;
}

async function freshTenant(): Promise<void> {
  tenant = await tenantFor(t);
  host = tenant.hosts[0]!;
  facility = await createFacility(t, tenant, { name: 'CPE La Marelle' });
  admins = await createAdmins(t, tenant, [uniqueEmail('direction'), uniqueEmail('adjointe')]);
}

function q<T>(fn: (trx: Trx) => Promise<T>): Promise<T> {
  return inTenant(database.db, tenant.id, fn);
}

const PROBE = '/admin/factor-resets/new';
const REAUTH = `/reauth?return=${encodeURIComponent(PROBE)}&level=passkey`;
const CONFIRM = 'Recevoir un lien pour confirmer ma clé d’accès';

async function json(c: Client, path: string) {
  const r = await c.post(path, {});
  expect(r.status, r.body).toBe(200);
  return JSON.parse(r.body).options;
}

async function addPasskey(c: Client, device: SoftAuthenticator, name: string): Promise<string> {
  await c.get('/account/security');
  const r = await c.post('/account/security/passkeys', { name, credential: device.create(await json(c, '/account/security/passkeys/options')) });
  expect([200, 303], r.body.slice(0, 2000)).toContain(r.status);
  const row = await q((trx) => trx.selectFrom('webauthn_credentials').select('id').where('name', '=', name).orderBy('created_at', 'desc').executeTakeFirstOrThrow());
  return row.id;
}

async function signInWith(device: SoftAuthenticator): Promise<Client> {
  const c = new Client(t.app, host);
  await c.get('/signin');
  const r = await c.post('/signin/passkey', { credential: device.get(await json(c, '/signin/passkey/options')) });
  expect(r.status).toBe(303);
  return c;
}

/** Re-authenticates with `device`, the options asked for at the privileged level or not. */
async function reauth(c: Client, device: SoftAuthenticator, privilegedLevel = false) {
  await c.get(REAUTH);
  const opts = await json(c, `/reauth/passkey/options${privilegedLevel ? '?level=passkey' : ''}`);
  const r = await c.post('/reauth/passkey?level=passkey', { return: PROBE, credential: device.get(opts) });
  expect(r.status).toBe(303);
  return opts as { allowCredentials?: { id: string }[] };
}

/** A privileged action: asking for a colleague's factors to be reset. */
async function probe(c: Client) {
  await c.get(PROBE);
  return c.post(PROBE, { email: 'personne@exemple.test', reason: 'Vérification par rappel au numéro du dossier' });
}

/** Whether the session's actor passes a privileged step-up now, as the server resolves it. */
async function privilegedStepUp(c: Client): Promise<boolean> {
  const actor = await resolveSession(t.deps, tenant, c.cookies.get('guichet_session')!, t.deps.clock());
  return isRecentAuth(actor, t.deps.clock(), 300, true);
}

async function grantAdmin(accountId: string): Promise<void> {
  const now = t.deps.clock();
  await q((trx) =>
    trx
      .insertInto('memberships')
      .values({ tenant_id: tenant.id, account_id: accountId, role: 'tenant_admin', facility_id: null, source: 'grant', granted_by: admins[0]!, approved_by: admins[1]!, created_at: new Date(now.getTime() - 2 * 3600_000), expires_at: new Date(now.getTime() + 4 * 3600_000) })
      .execute(),
  );
}

const vouchedAt = (id: string) => q(async (trx) => (await trx.selectFrom('webauthn_credentials').select('vouched_at').where('id', '=', id).executeTakeFirstOrThrow()).vouched_at);

/** The path of the link in the latest passkey-link e-mail to `email`. */
const mailedLink = (email: string) => mailedPasskeyLink(database.db, tenant, email);

describe('a passkey enrolled before its holder was granted a privileged role', () => {
  it('does not pass a privileged step-up until a mailed link, followed in the same session, vouches for it; then only the vouched one counts', async () => {
    await freshTenant();
    const email = uniqueEmail('coordonnatrice');
    const id = await createStaff(t, tenant, email, facility, admins[0]);
    // as staff, with a password and an app code: two passkeys, neither vouched for
    const staff = new Client(t.app, host);
    await staff.signIn(email, PASSWORD);
    const phone = new SoftAuthenticator(`http://${host}`);
    const laptop = new SoftAuthenticator(`http://${host}`);
    const phoneId = await addPasskey(staff, phone, 'Téléphone');
    const laptopId = await addPasskey(staff, laptop, 'Portable');
    expect(await vouchedAt(phoneId)).toBeNull();
    expect(await vouchedAt(laptopId)).toBeNull();
    await grantAdmin(id);

    // signed in with the passkey alone: a privileged action sends her to re-authenticate, and her passkey does not do
    const c = await signInWith(phone);
    expect(await privilegedStepUp(c)).toBe(false);
    let r = await probe(c);
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe(REAUTH);
    let page = await c.get(REAUTH);
    expect(textOf(page.body)).toContain('elle ne compte pas encore pour les actions privilégiées');
    expect(textOf(page.body)).toContain(CONFIRM);
    expect(page.body).not.toContain('data-passkey-options="/reauth/passkey/options?level=passkey"');
    await reauth(c, phone);
    expect(await privilegedStepUp(c)).toBe(false);
    expect((await probe(c)).headers.location).toBe(REAUTH);
    expect(await vouchedAt(phoneId)).toBeNull();

    // the link, asked for from the re-authentication page, brings her back there
    await c.get(REAUTH);
    r = await c.post('/account/security/passkey-link', { return: REAUTH });
    expect(r.headers.location).toBe(`${REAUTH}&link=sent`);
    page = await c.get(String(r.headers.location));
    expect(textOf(page.body)).toContain('Nous vous avons envoyé un lien par courriel.');
    const link = await mailedLink(email);
    // followed in another session of hers: refused, nothing vouched
    const other = await signInWith(laptop);
    expect((await other.get(link)).status).toBe(403);
    r = await c.get(link);
    expect(r.headers.location).toBe(`${REAUTH}&link=proven`);
    page = await c.get(String(r.headers.location));
    expect(textOf(page.body)).toContain('Votre adresse courriel est confirmée. Utilisez maintenant votre clé d’accès');
    expect(page.body).toContain('data-passkey-options="/reauth/passkey/options?level=passkey"');
    // the passkey she uses now is vouched for, and the privileged action goes through
    await reauth(c, phone, true);
    expect(await vouchedAt(phoneId)).not.toBeNull();
    expect(await vouchedAt(laptopId)).toBeNull();
    expect(await privilegedStepUp(c)).toBe(true);
    r = await probe(c);
    // past the step-up: the form's own answer (no such person)
    expect(r.status).toBe(400);
    expect(r.headers.location).toBeUndefined();
    const vouch = await q((trx) => trx.selectFrom('audit_events').select(['outcome', 'target_ids', 'details', 'actor_account_id']).where('action', '=', 'identity.passkey.vouch').execute());
    expect(vouch).toEqual([{ outcome: 'success', target_ids: [phoneId, id], details: { by: 'mailbox', step: 'reauth' }, actor_account_id: id }]);

    // the other passkey still does not count; at the privileged level only the vouched one is offered
    expect((await probe(other)).headers.location).toBe(REAUTH);
    await other.get(REAUTH);
    const offered = await json(other, '/reauth/passkey/options?level=passkey');
    const phoneCredential = await q(async (trx) => (await trx.selectFrom('webauthn_credentials').select('credential_id').where('id', '=', phoneId).executeTakeFirstOrThrow()).credential_id);
    expect((offered.allowCredentials ?? []).map((x: { id: string }) => x.id)).toEqual([phoneCredential]);
    expect(() => laptop.get(offered)).toThrow();
    await reauth(other, laptop);
    expect(await privilegedStepUp(other)).toBe(false);
    await reauth(other, phone, true);
    expect(await privilegedStepUp(other)).toBe(true);

    // revoked, it no longer counts for the session that used it, though another passkey remains
    await c.get(`/account/security/passkeys/${phoneId}/revoke`);
    expect((await c.post(`/account/security/passkeys/${phoneId}/revoke`)).status).toBe(303);
    expect(await privilegedStepUp(c)).toBe(false);
    expect((await probe(c)).headers.location).toBe(REAUTH);
    // (her proof of the mailbox is still fresh: the passkey she uses next is vouched for in its place)
    expect(textOf((await c.get(REAUTH)).body)).toContain('Utilisez maintenant votre clé d’accès');
  });
});

describe('the database', () => {
  it('refuses to vouch for a passkey nothing vouches for, and to vouch twice, whatever the code', async () => {
    await freshTenant();
    const email = uniqueEmail('educ');
    const id = await createStaff(t, tenant, email, facility, admins[0]);
    const staff = new Client(t.app, host);
    await staff.signIn(email, PASSWORD);
    const key = await addPasskey(staff, new SoftAuthenticator(`http://${host}`), 'Clé');
    const now = t.deps.clock();
    // no session of hers proved the mailbox or signed with a vouched passkey
    await expect(q((trx) => trx.updateTable('webauthn_credentials').set({ vouched_at: now }).where('id', '=', key).execute())).rejects.toThrow(/nothing vouches for this passkey/);
    const forged = { tenant_id: tenant.id, account_id: id, credential_id: randomBytes(32).toString('base64url'), public_key: Buffer.from('x'), sign_count: 0, transports: [], rp_id: 'localhost', name: 'Clé forgée', aaguid: null, backed_up: false, created_at: now, last_used_at: null, revoked_at: null, vouched_at: now };
    await expect(q((trx) => trx.insertInto('webauthn_credentials').values(forged).execute())).rejects.toThrow(/nothing vouches for this passkey/);
    // a proof of the mailbox older than a quarter of an hour does not count; a fresh one does
    await q((trx) => trx.updateTable('sessions').set({ mailbox_proven_at: new Date(now.getTime() - 16 * 60_000) }).where('account_id', '=', id).execute());
    await expect(q((trx) => trx.updateTable('webauthn_credentials').set({ vouched_at: now }).where('id', '=', key).execute())).rejects.toThrow(/nothing vouches/);
    await q((trx) => trx.updateTable('sessions').set({ mailbox_proven_at: new Date(now.getTime() - 60_000) }).where('account_id', '=', id).execute());
    await q((trx) => trx.updateTable('webauthn_credentials').set({ vouched_at: now }).where('id', '=', key).execute());
    await expect(q((trx) => trx.updateTable('webauthn_credentials').set({ vouched_at: new Date(now.getTime() + 1000) }).where('id', '=', key).execute())).rejects.toThrow(/vouched for once/);
    await expect(q((trx) => trx.updateTable('webauthn_credentials').set({ vouched_at: null }).where('id', '=', key).execute())).rejects.toThrow(/vouched for once/);
  });
});

describe('passkeys vouched for at enrolment', () => {
  it('with the mailbox proven, or by a session signed with a vouched passkey; not otherwise', async () => {
    await freshTenant();
    // staff: any fresh sign-in enrols, nothing vouched
    const staffEmail = uniqueEmail('educatrice');
    await createStaff(t, tenant, staffEmail, facility, admins[0]);
    const staff = new Client(t.app, host);
    await staff.signIn(staffEmail, PASSWORD);
    const staffKey = await addPasskey(staff, new SoftAuthenticator(`http://${host}`), 'Clé de l’éducatrice');
    expect(await vouchedAt(staffKey)).toBeNull();

    // an administrator: the first with the mailbox proven, the second signed with the first
    const email = uniqueEmail('admin');
    await grantAdmin(await createStaff(t, tenant, email, facility, admins[0]));
    const c = new Client(t.app, host);
    await c.signIn(email, PASSWORD);
    await c.get('/account/security');
    await c.post('/account/security/passkey-link');
    expect((await c.get(await mailedLink(email))).headers.location).toBe('/account/security?status=mailboxProven');
    const first = new SoftAuthenticator(`http://${host}`);
    const firstId = await addPasskey(c, first, 'Clé du bureau');
    expect(await vouchedAt(firstId)).not.toBeNull();
    expect(await privilegedStepUp(c)).toBe(true);
    const later = await signInWith(first);
    const secondId = await addPasskey(later, new SoftAuthenticator(`http://${host}`), 'Clé de secours');
    expect(await vouchedAt(secondId)).not.toBeNull();
    const registered = await q((trx) => trx.selectFrom('audit_events').select('details').where('action', '=', 'identity.passkey.register').where('outcome', '=', 'success').orderBy('seq').execute());
    expect(registered.map((e) => e.details.vouchedBy)).toEqual([null, 'mailbox', 'passkey']);
  });

  it('a holder whose only passkey is not vouched for (an intruder’s, say) adds her own with the mailbox, then removes the other with it', async () => {
    await freshTenant();
    const email = uniqueEmail('directrice');
    const id = await createStaff(t, tenant, email, facility, admins[0]);
    const staff = new Client(t.app, host);
    await staff.signIn(email, PASSWORD);
    const intruder = new SoftAuthenticator(`http://${host}`);
    const intruderKey = await addPasskey(staff, intruder, 'Clé inconnue');
    await grantAdmin(id);
    const intruderSession = await signInWith(intruder);
    expect(await privilegedStepUp(intruderSession)).toBe(false);

    // her own browser, password and app code: the security page offers the link, not a passkey she does not have
    const c = new Client(t.app, host);
    await c.signIn(email, PASSWORD);
    let page = await c.get('/account/security');
    expect(textOf(page.body)).toContain('elles ne comptent pas encore');
    expect(textOf(page.body)).toContain(CONFIRM);
    expect((await c.post('/account/security/passkeys/options', {})).status).toBe(403);
    // nor, with a password and an app code alone, does a session remove a passkey or change the password (a phisher would lock her out)
    await c.get(`/account/security/passkeys/${intruderKey}/revoke`);
    let r = await c.post(`/account/security/passkeys/${intruderKey}/revoke`);
    expect(r.status).toBe(403);
    expect(textOf(r.body)).toContain('Vos clés d’accès ne sont pas encore confirmées');
    await c.get('/account/security/password');
    r = await c.post('/account/security/password', { currentPassword: PASSWORD, password: 'Hirondelles-du-printemps-2026', passwordConfirm: 'Hirondelles-du-printemps-2026' });
    expect(r.status).toBe(403);
    const refusals = await q((trx) => trx.selectFrom('audit_events').select(['action', 'details']).where('outcome', '=', 'denied').where('actor_account_id', '=', id).orderBy('seq').execute());
    expect(refusals.map((e) => [e.action, e.details])).toEqual([
      ['identity.passkey.register', { reason: 'mailbox_unproven', step: 'options' }],
      ['identity.passkey.revoke', { reason: 'mailbox_unproven', step: 'revoke' }],
      ['identity.password.change', { reason: 'mailbox_unproven', step: 'password' }],
    ]);
    await c.get('/account/security');
    await c.post('/account/security/passkey-link');
    expect((await c.get(await mailedLink(email))).headers.location).toBe('/account/security?status=mailboxProven');
    page = await c.get('/account/security?status=mailboxProven');
    expect(textOf(page.body)).toContain('Utilisez maintenant l’une de vos clés d’accès pour la confirmer, ou ajoutez-en une');
    const own = new SoftAuthenticator(`http://${host}`);
    const ownKey = await addPasskey(c, own, 'Ma clé');
    expect(await vouchedAt(ownKey)).not.toBeNull();
    await c.get(`/account/security/passkeys/${intruderKey}/revoke`);
    expect((await c.post(`/account/security/passkeys/${intruderKey}/revoke`)).status).toBe(303);
    const live = await q((trx) => trx.selectFrom('webauthn_credentials').select('id').where('account_id', '=', id).where('revoked_at', 'is', null).execute());
    expect(live.map((k) => k.id)).toEqual([ownKey]);
    // removing a passkey ends the account's other sessions, the intruder's with it
    expect((await intruderSession.get('/account')).status).toBe(303);
  });
});

describe('a tenant on two hosts', () => {
  it('a passkey vouched for on one host still guards the account on the other, where it cannot sign: no link, no removal, no new password without it', async () => {
    const slug = `deux-${Date.now().toString(36)}${(seq++).toString(36)}`;
    const [hostA, hostB] = [`${slug}.localhost`, `autre-${slug}.localhost`];
    tenant = await tenantFor(t, { slug, hosts: [hostA, hostB] });
    host = hostA;
    facility = await createFacility(t, tenant, { name: 'CPE Les Deux Rives' });
    admins = await createAdmins(t, tenant, [uniqueEmail('direction'), uniqueEmail('adjointe')]);
    const email = uniqueEmail('coordonnatrice');
    await grantAdmin(await createStaff(t, tenant, email, facility, admins[0]));

    // on the first host: the mailbox proven, a passkey vouched for
    const a = new Client(t.app, hostA);
    await a.signIn(email, PASSWORD);
    await a.get('/account/security');
    await a.post('/account/security/passkey-link');
    expect((await a.get(await mailedLink(email))).headers.location).toBe('/account/security?status=mailboxProven');
    const keyA = await addPasskey(a, new SoftAuthenticator(`http://${hostA}`), 'Clé du premier site');
    expect(await vouchedAt(keyA)).not.toBeNull();

    // on the second, with the password and the app code (what a phishing proxy relays) and even the mailbox:
    const b = new Client(t.app, hostB);
    await b.signIn(email, PASSWORD);
    const reauthB = `/reauth?return=${encodeURIComponent(PROBE)}&level=passkey`;
    expect((await probe(b)).headers.location).toBe(reauthB);
    // the re-authentication page says no passkey signs here, rather than offer one
    const page = await b.get(reauthB);
    expect(textOf(page.body)).toContain('n’a pas encore de clé d’accès utilisable à cette adresse');
    expect(page.body).not.toContain('data-passkey-options');
    // no link is offered or sent: the account has a vouched passkey
    expect(textOf((await b.get('/account/security')).body)).not.toContain('Recevoir un lien');
    const links = () => q((trx) => trx.selectFrom('passkey_enrolment_links').select('id').execute());
    const before = (await links()).length;
    expect((await b.post('/account/security/passkey-link')).headers.location).toBe('/account/security');
    expect(await links()).toHaveLength(before);
    // removing the vouched passkey, changing the password, adding a passkey: each asks for a passkey first
    await b.get(`/account/security/passkeys/${keyA}/revoke`);
    expect(String((await b.post(`/account/security/passkeys/${keyA}/revoke`)).headers.location)).toMatch(/^\/reauth\?.*level=passkey/);
    await b.get('/account/security/password');
    const pw = await b.post('/account/security/password', { currentPassword: PASSWORD, password: 'Hirondelles-du-printemps-2026', passwordConfirm: 'Hirondelles-du-printemps-2026' });
    expect(String(pw.headers.location)).toMatch(/^\/reauth\?.*level=passkey/);
    await b.get('/account/security');
    const options = await b.post('/account/security/passkeys/options', {});
    expect(options.status).toBe(401);
    expect(JSON.parse(options.body).redirect).toMatch(/^\/reauth\?.*level=passkey/);
    const live = await q((trx) => trx.selectFrom('webauthn_credentials').select(['id', 'vouched_at']).where('revoked_at', 'is', null).execute());
    expect(live.map((k) => k.id)).toEqual([keyA]);
  });
});
