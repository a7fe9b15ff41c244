/**
 * A privileged holder's first passkey takes proof of the mailbox: a password
 * and an app code can be relayed by a phishing proxy, so the session that
 * enrols must also follow a link e-mailed to the account (single use, 15
 * minutes, the latest only, bound to that session's token). Over HTTP, with
 * a software authenticator; the outbox is read as the mailer would send it.
 * Accounts without a privileged role, and holders who already have a
 * passkey, enrol as before.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Trx } from '../../src/db/connection.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { THROTTLE } from '../../src/identity/throttle.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { createAdmin, createFacility, createStaff, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { freshTotpCode, mailedPasskeyLink, totpSecretFor } from '../helpers/factors.ts';
import { SoftAuthenticator } from '../helpers/soft-authenticator.ts';

let database: TestDatabase;
let t: TestApp;
let tenant: Tenant;
let host: string;
let facility: string;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
});

/** A tenant of its own for each test: its administrators are bootstrapped, which happens once a tenant. */
async function freshTenant(): Promise<void> {
  tenant = await tenantFor(t);
  host = tenant.hosts[0]!;
  facility = await createFacility(t, tenant, { name: 'CPE Les Hirondelles' });
}

afterAll(async () => {
  await t?.close();
  await database?.close();
});

let seq = 0;
function uniqueEmail(prefix: string): string {
  return `${prefix}.${Date.now().toString(36)}${(seq++).toString(36)}@exemple.test`;
}

function q<T>(fn: (trx: Trx) => Promise<T>): Promise<T> {
  return inTenant(database.db, tenant.id, fn);
}

/** Moves the clock on by `ms`, in steps a signed-in session survives (15 minutes idle for staff), touching it each time. */
async function age(c: Client, ms: number): Promise<void> {
  for (let left = ms; left > 0; left -= 5 * 60_000) {
    t.shiftClock(Math.min(left, 5 * 60_000));
    expect((await c.get('/account/security')).status).toBe(200);
  }
}

async function events(action: string, accountId: string) {
  return q((trx) =>
    trx
      .selectFrom('audit_events')
      .select(['outcome', 'details', 'actor_account_id'])
      .where('action', '=', action as never)
      .where((eb) => eb.or([eb(eb.val(accountId), '=', eb.fn.any('target_ids')), eb('actor_account_id', '=', accountId)]))
      .orderBy('seq')
      .execute(),
  );
}

const passkeysOf = (accountId: string) => q((trx) => trx.selectFrom('webauthn_credentials').select('id').where('account_id', '=', accountId).where('revoked_at', 'is', null).execute());

/** The path of the link in the latest passkey-link e-mail to `email`. */
const mailedLink = (email: string) => mailedPasskeyLink(database.db, tenant, email);

async function signedIn(email: string): Promise<Client> {
  const c = new Client(t.app, host);
  await c.signIn(email, PASSWORD);
  await c.get('/account/security');
  return c;
}

async function options(c: Client) {
  return c.post('/account/security/passkeys/options', {});
}

async function addPasskey(c: Client, device = new SoftAuthenticator(`http://${host}`)) {
  const r = await options(c);
  expect(r.status, r.body).toBe(200);
  const added = await c.post('/account/security/passkeys', { name: 'Clé du bureau', credential: device.create(JSON.parse(r.body).options) });
  await c.get('/account/security');
  return added;
}

const ASK = 'Recevoir un lien pour ajouter une clé d’accès';
const ADD_FORM = 'data-passkey-options="/account/security/passkeys/options"';

describe('the first passkey of a privileged holder', () => {
  it('is refused to a password and app-code session until it follows the mailed link; from another session the link is refused and changes nothing', async () => {
    await freshTenant();
    const email = uniqueEmail('admin');
    const id = await createAdmin(t, tenant, email);
    const c = await signedIn(email);
    let page = await c.get('/account/security');
    expect(textOf(page.body)).toContain(ASK);
    expect(page.body).not.toContain(ADD_FORM);

    // options and registration both refused, nothing written but the refusals
    let r = await options(c);
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body)).toEqual({ redirect: '/account/security' });
    r = await c.post('/account/security/passkeys', { name: 'Clé de l’intrus', credential: '{}' });
    expect(r.status).toBe(403);
    expect(textOf(r.body)).toContain('Pour ajouter votre première clé d’accès, ouvrez d’abord');
    expect(await passkeysOf(id)).toEqual([]);
    expect((await events('identity.passkey.register', id)).map((e) => [e.outcome, e.details])).toEqual([
      ['denied', { reason: 'mailbox_unproven', step: 'options' }],
      ['denied', { reason: 'mailbox_unproven', step: 'register' }],
    ]);

    // the link, by e-mail, in the holder's language
    await c.get('/account/security');
    r = await c.post('/account/security/passkey-link');
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe('/account/security?status=linkSent');
    const mail = await q((trx) => trx.selectFrom('mail_outbox').selectAll().where('to_address', '=', email).where('template', '=', 'passkey_link').executeTakeFirstOrThrow());
    expect(mail.locale).toBe('fr');
    expect(mail.subject).toBe('Ajouter une clé d’accès à votre compte Guichet');
    expect(mail.body_text).toContain('dans les 15 prochaines minutes');
    expect(mail.body_text).toContain('n’ouvrez pas ce lien');
    const link = await mailedLink(email);
    const [request] = await events('identity.passkeyLink.request', id);
    expect(request).toMatchObject({ outcome: 'success', actor_account_id: id });
    // only the hash of the token is stored
    const token = link.split('token=')[1]!;
    const stored = await q((trx) => trx.selectFrom('passkey_enrolment_links').selectAll().where('account_id', '=', id).execute());
    expect(stored).toHaveLength(1);
    expect(stored[0]!.token_hash.toString('base64url')).not.toBe(token);
    expect(JSON.stringify(stored)).not.toContain(token);

    // another session of the same account (the holder's own browser, when an intruder asked), or none at all: refused
    const other = await signedIn(email);
    r = await other.get(link);
    expect(r.status).toBe(403);
    expect(textOf(r.body)).toContain('Ce lien ne fonctionne que dans le navigateur et la session où il a été demandé');
    expect(textOf(r.body)).toContain('quelqu’un qui connaît votre mot de passe est peut-être connecté à votre compte');
    const anonymous = new Client(t.app, host);
    expect((await anonymous.get(link)).status).toBe(403);
    expect((await options(c)).status).toBe(403);
    await other.get('/account/security');
    expect((await options(other)).status).toBe(403);

    // the session that asked: proven, then it enrols
    r = await c.get(link);
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe('/account/security?status=mailboxProven');
    page = await c.get('/account/security?status=mailboxProven');
    expect(textOf(page.body)).toContain('Votre adresse courriel est confirmée');
    expect(page.body).toContain(ADD_FORM);
    // once only
    expect((await c.get(link)).status).toBe(400);
    // the other session proved nothing
    await other.get('/account/security');
    expect((await options(other)).status).toBe(403);

    await c.get('/account/security');
    const added = await addPasskey(c);
    expect([200, 303]).toContain(added.status);
    expect(await passkeysOf(id)).toHaveLength(1);
    const notices = await q((trx) => trx.selectFrom('mail_outbox').select('body_text').where('to_address', '=', email).where('template', '=', 'factor_changed').execute());
    expect(notices.some((n) => n.body_text.includes('Clé du bureau') && n.body_text.includes('a été ajoutée'))).toBe(true);

    const uses = await events('identity.passkeyLink.use', id);
    expect(uses.map((e) => [e.outcome, e.details.reason ?? null])).toEqual([
      ['failure', 'other_session'],
      ['failure', 'signed_out'],
      ['success', null],
      ['failure', 'used'],
    ]);
    // the refusals: c twice before asking, c and the other session while the link waited, the other session after
    expect((await events('identity.passkey.register', id)).map((e) => e.outcome)).toEqual(['denied', 'denied', 'denied', 'denied', 'denied', 'success']);
  });

  it('the link lasts 15 minutes, only the latest works, it is bound to the session’s token of the time, and the proof lasts 15 minutes', async () => {
    await freshTenant();
    const email = uniqueEmail('officer');
    const id = await createAdmin(t, tenant, email);
    const c = await signedIn(email);
    const ask = async () => {
      await c.get('/account/security');
      expect((await c.post('/account/security/passkey-link')).headers.location).toBe('/account/security?status=linkSent');
      return mailedLink(email);
    };
    const reauth = async () => {
      await c.get('/reauth?return=%2Faccount%2Fsecurity');
      const r = await c.post('/reauth', { return: '/account/security', password: PASSWORD, code: await freshTotpCode(totpSecretFor(host, email)!, t.deps.clock) });
      expect(r.headers.location).toBe('/account/security');
    };
    const first = await ask();
    const second = await ask();
    expect((await c.get(first)).status).toBe(400);
    await age(c, 16 * 60_000);
    const expired = await c.get(second);
    expect(expired.status).toBe(400);
    expect(textOf(expired.body)).toContain('Ce lien a expiré');

    // a re-authentication gives the session a new token: a link asked for before it no longer matches
    await reauth();
    const beforeReauth = await ask();
    await reauth();
    expect((await c.get(beforeReauth)).status).toBe(403);

    const good = await ask();
    expect((await c.get(good)).headers.location).toBe('/account/security?status=mailboxProven');
    await age(c, 16 * 60_000);
    // a fresh authentication again, but the proof is older than 15 minutes
    await reauth();
    await c.get('/account/security');
    expect((await options(c)).status).toBe(403);
    expect(await passkeysOf(id)).toEqual([]);
    const uses = await events('identity.passkeyLink.use', id);
    expect(uses.map((e) => [e.outcome, e.details.reason ?? null])).toEqual([
      ['failure', 'replaced'],
      ['failure', 'expired'],
      ['failure', 'other_session'],
      ['success', null],
    ]);
  });

  it('asking for links is capped per account', async () => {
    await freshTenant();
    const email = uniqueEmail('director');
    const id = await createAdmin(t, tenant, email);
    const c = await signedIn(email);
    for (let i = 0; i < THROTTLE.passkeyLinksPerAccount; i++) {
      await c.get('/account/security');
      expect((await c.post('/account/security/passkey-link')).status).toBe(303);
    }
    await c.get('/account/security');
    const r = await c.post('/account/security/passkey-link');
    expect(r.status).toBe(429);
    expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
    expect(textOf(r.body)).toContain('Vous avez demandé trop de liens');
    const mails = await q((trx) => trx.selectFrom('mail_outbox').select('id').where('to_address', '=', email).where('template', '=', 'passkey_link').execute());
    expect(mails).toHaveLength(THROTTLE.passkeyLinksPerAccount);
    const requests = await events('identity.passkeyLink.request', id);
    expect(requests.at(-1)).toMatchObject({ outcome: 'denied', details: { reason: 'throttled', recent: THROTTLE.passkeyLinksPerAccount } });
  });

  it('in English, the page, the e-mail and the refusals', async () => {
    await freshTenant();
    const email = uniqueEmail('admin.en');
    const id = await createAdmin(t, tenant, email);
    await q((trx) => trx.updateTable('accounts').set({ locale: 'en' }).where('id', '=', id).execute());
    const c = await signedIn(email);
    const page = await c.get('/account/security?lang=en');
    expect(textOf(page.body)).toContain('Send me a link to add a passkey');
    await c.post('/account/security/passkey-link');
    const mail = await q((trx) => trx.selectFrom('mail_outbox').selectAll().where('to_address', '=', email).where('template', '=', 'passkey_link').executeTakeFirstOrThrow());
    expect(mail.locale).toBe('en');
    expect(mail.subject).toBe('Add a passkey to your Guichet account');
    expect(mail.body_text).toContain('within the next 15 minutes');
    const r = await new Client(t.app, host).get(`${await mailedLink(email)}&lang=en`);
    expect(r.status).toBe(403);
    expect(textOf(r.body)).toContain('This link only works in the browser and session where it was asked for');
    expect((await new Client(t.app, host).get('/account/security/passkey-link?token=nope&lang=en')).status).toBe(400);
  });
});

describe('everyone else enrols as before', () => {
  it('staff with any fresh sign-in (parents: test/identity/factors.test.ts); a holder with a passkey adds another with it, and needs no link', async () => {
    await freshTenant();
    const staffEmail = uniqueEmail('educ');
    const staffId = await createStaff(t, tenant, staffEmail, facility);
    const staff = await signedIn(staffEmail);
    const page = await staff.get('/account/security');
    expect(page.body).toContain(ADD_FORM);
    expect(textOf(page.body)).not.toContain(ASK);
    expect([200, 303]).toContain((await addPasskey(staff)).status);
    expect(await passkeysOf(staffId)).toHaveLength(1);

    // a holder whose first passkey came through the link adds a second with the first, no link
    const email = uniqueEmail('admin');
    const id = await createAdmin(t, tenant, email);
    const c = await signedIn(email);
    await c.post('/account/security/passkey-link');
    expect((await c.get(await mailedLink(email))).status).toBe(303);
    await c.get('/account/security');
    await addPasskey(c);
    await c.get('/account/security');
    expect((await c.post('/account/security/passkey-link')).headers.location).toBe('/account/security');
    expect((await events('identity.passkeyLink.request', id)).map((e) => [e.outcome, e.details.reason ?? null])).toEqual([
      ['success', null],
      ['denied', 'not_needed'],
    ]);
    // (the session used a passkey at enrolment: the phishing-resistant step-up is met)
    const second = await addPasskey(c, new SoftAuthenticator(`http://${host}`));
    expect(second.status).toBe(303);
    expect(await passkeysOf(id)).toHaveLength(2);
    // a new session of that holder signed in with password and code is asked for the passkey, not for a link
    const later = await signedIn(email);
    const r = await options(later);
    expect(r.status).toBe(401);
    expect(JSON.parse(r.body).redirect).toMatch(/^\/reauth/);
  });
});
