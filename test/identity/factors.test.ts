/**
 * Second factors over HTTP: enrolling an authenticator app (QR code, manual
 * key, first code), the second step of a sign-in (a code is accepted once,
 * wrong codes are counted and then refused), recovery codes (shown once,
 * single-use, regenerable), passkeys answered by a software authenticator
 * (registration, second step, sign-in alone, forged answers refused,
 * revocation), and the audit trail of all of it. The clock is the app's
 * injectable one: time steps are moved on with t.setNow().
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { RECOVERY } from '../../src/identity/factors/recovery.ts';
import { CODE_LOCK, PENDING_MAX_FAILURES } from '../../src/identity/factors/store.ts';
import { totpCodeAt } from '../../src/identity/factors/totp.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { createParent, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { SoftAuthenticator } from '../helpers/soft-authenticator.ts';

let database: TestDatabase;
let t: TestApp;
let tenant: Tenant;
let host: string;
/** The app's clock, moved on by each test: TOTP steps are 30 s. */
let now = new Date('2026-05-04T14:00:00Z');

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
});

afterAll(async () => {
  await t?.close();
  await database?.close();
});

let seq = 0;
function uniqueEmail(prefix: string): string {
  return `${prefix}.${Date.now().toString(36)}${(seq++).toString(36)}@exemple.test`;
}

async function events(action: string, accountId?: string) {
  return inTenant(database.db, tenant.id, (trx) => {
    let q = trx.selectFrom('audit_events').selectAll().where('action', '=', action).orderBy('seq');
    if (accountId) q = q.where((eb) => eb.or([eb(eb.val(accountId), '=', eb.fn.any('target_ids')), eb('actor_account_id', '=', accountId)]));
    return q.execute();
  });
}

async function sessionOf(c: Client) {
  const { hashToken } = await import('../../src/identity/tokens.ts');
  const token = c.cookies.get('guichet_session');
  if (!token) return undefined;
  return inTenant(database.db, tenant.id, (trx) => trx.selectFrom('sessions').select(['auth_methods', 'authenticated_at', 'revoked_at']).where('token_hash', '=', hashToken(token)).executeTakeFirst());
}

/** A parent signed in with a password, on the enrolment page: returns the client, the account and the secret shown. */
async function parentOnEnrolment() {
  const email = uniqueEmail('parent');
  const id = await createParent(t, tenant, email);
  const c = new Client(t.app, host);
  expect((await c.signIn(email, PASSWORD)).headers.location).toBe('/account');
  const page = await c.get('/account/security/totp');
  expect(page.status).toBe(200);
  const key = /<code class="manual-key">([A-Z2-7 ]+)<\/code>/.exec(page.body)?.[1];
  expect(key).toBeDefined();
  return { c, email, id, secret: key!.replace(/ /g, ''), page };
}

async function enrolled() {
  const p = await parentOnEnrolment();
  const r = await p.c.post('/account/security/totp', { code: await totpCodeAt(p.secret, now) });
  expect(r.status).toBe(200);
  const codes = [...r.body.matchAll(/<code>([0-9A-Z-]{29})<\/code>/g)].map((m) => m[1]!);
  expect(codes).toHaveLength(RECOVERY.count);
  return { ...p, codes };
}

/** Password step: lands on the second step with a pending cookie. */
async function passwordStep(email: string): Promise<Client> {
  const c = new Client(t.app, host);
  await c.get('/signin');
  const r = await c.post('/signin', { email, password: PASSWORD });
  expect(r.status).toBe(303);
  expect(r.headers.location).toBe('/signin/second-factor');
  expect(c.cookies.get('guichet_session')).toBeUndefined();
  expect(c.cookies.get('guichet_pending')).toMatch(/^[A-Za-z0-9_-]{43}$/);
  await c.get('/signin/second-factor');
  return c;
}

describe('authenticator app (TOTP)', () => {
  it('enrols with a QR code and a manual key, confirmed by a first code; the secret is stored encrypted', async () => {
    const { c, id, secret, page } = await parentOnEnrolment();
    expect(page.body).toMatch(/<img class="qr-code" src="data:image\/svg\+xml;base64,[A-Za-z0-9+/=]+" alt="Code QR à balayer/);
    expect(secret).toMatch(/^[A-Z2-7]{32}$/);
    // a reload shows the same secret (a scan in progress stays valid)
    expect((await c.get('/account/security/totp')).body).toContain(secret.slice(0, 4));
    // a wrong first code: the form again, with the error, nothing enabled
    let r = await c.post('/account/security/totp', { code: '000000' === (await totpCodeAt(secret, now)) ? '111111' : '000000' });
    expect(r.status).toBe(400);
    expect(r.body.startsWith('<!doctype html>')).toBe(true);
    expect(textOf(r.body)).toContain('Ce code n’est pas valide ou a déjà servi');
    r = await c.post('/account/security/totp', { code: '' });
    expect(textOf(r.body)).toContain('Entrez le code à 6 chiffres');
    // the right one: ten recovery codes, shown once
    r = await c.post('/account/security/totp', { code: (await totpCodeAt(secret, now)).replace(/(\d{3})/, '$1 ') });
    expect(r.status).toBe(200);
    expect(r.headers['cache-control']).toBe('no-store');
    expect(textOf(r.body)).toContain('Ils ne seront plus jamais affichés');
    expect([...r.body.matchAll(/<code>([0-9A-Z-]{29})<\/code>/g)]).toHaveLength(10);
    const overview = textOf((await c.get('/account/security?status=totpEnabled')).body);
    expect(overview).toContain('L’application d’authentification est activée.');
    expect(overview).toContain('Il vous reste 10 codes de récupération.');
    const row = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('totp_factors').selectAll().where('account_id', '=', id).executeTakeFirstOrThrow());
    expect(row.confirmed_at).not.toBeNull();
    expect(row.secret_enc.toString('latin1')).not.toContain(secret);
    expect(row.secret_enc.toString('latin1')).not.toContain(secret.slice(0, 8));
    // the enrolling session now counts the app
    expect((await sessionOf(c))?.auth_methods).toEqual(['password', 'totp']);
    expect((await events('identity.totp.enrol', row.id)).map((e) => e.outcome)).toEqual(['failure', 'success']);
    expect(await events('identity.recovery.generate', id)).toHaveLength(1);
  });

  it('asks a signed-in account with the app for a code after the password; the code is accepted once (replay refused)', async () => {
    const { email, id, secret } = await enrolled();
    // the enrolment used this step's code: the same code at sign-in is a replay
    const c = await passwordStep(email);
    let r = await c.post('/signin/second-factor', { code: await totpCodeAt(secret, now) });
    expect(r.status).toBe(401);
    expect(textOf(r.body)).toContain('Ce code n’est pas valide ou a déjà servi');
    expect(c.cookies.get('guichet_session')).toBeUndefined();
    // the next step's code is good: a session, recorded as password + app
    at(30_000);
    const code = await totpCodeAt(secret, now);
    r = await c.post('/signin/second-factor', { code });
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe('/account');
    expect(c.cookies.get('guichet_pending')).toBeUndefined();
    const s = await sessionOf(c);
    expect(s?.auth_methods).toEqual(['password', 'totp']);
    expect(s?.authenticated_at?.getTime()).toBe(now.getTime());
    expect((await c.get('/account')).status).toBe(200);
    // the same code, in another sign-in within its window: refused
    at(10_000);
    const other = await passwordStep(email);
    r = await other.post('/signin/second-factor', { code });
    expect(r.status).toBe(401);
    // and an older step's code too (±1 step window, but never before the last used)
    r = await other.post('/signin/second-factor', { code: await totpCodeAt(secret, new Date(now.getTime() - 30_000)) });
    expect(r.status).toBe(401);
    const verify = await events('identity.totp.verify', id);
    expect(verify.map((e) => [e.outcome, (e.details as { reason?: string }).reason ?? null])).toEqual([
      ['failure', 'replay'],
      ['success', null],
      ['failure', 'replay'],
      ['failure', 'replay'],
    ]);
    const signins = (await events('identity.signin', id)).filter((e) => e.outcome === 'success');
    expect(signins.at(-1)!.details).toEqual({ methods: 'password+totp' });
    expect(await events('identity.signin.challenge', id)).toHaveLength(2);
  });

  it('accepts the code of the step before and after (clock drift), not two steps away', async () => {
    const { email, secret } = await enrolled();
    at(60_000);
    let c = await passwordStep(email);
    expect((await c.post('/signin/second-factor', { code: await totpCodeAt(secret, new Date(now.getTime() - 60_000)) })).status).toBe(401);
    expect((await c.post('/signin/second-factor', { code: await totpCodeAt(secret, new Date(now.getTime() + 60_000)) })).status).toBe(401);
    expect((await c.post('/signin/second-factor', { code: await totpCodeAt(secret, new Date(now.getTime() - 30_000)) })).status).toBe(303);
    c = await passwordStep(email);
    expect((await c.post('/signin/second-factor', { code: await totpCodeAt(secret, new Date(now.getTime() + 30_000)) })).status).toBe(303);
  });

  it('counts wrong codes: five end the pending sign-in, ten in a quarter hour close code entry for the account', async () => {
    const { email, id, secret } = await enrolled();
    at(30_000);
    const wrong = (await totpCodeAt(secret, now)) === '123456' ? '654321' : '123456';
    let c = await passwordStep(email);
    for (let i = 1; i < PENDING_MAX_FAILURES; i++) expect((await c.post('/signin/second-factor', { code: wrong })).status).toBe(401);
    let r = await c.post('/signin/second-factor', { code: wrong });
    expect(r.status).toBe(401);
    expect(textOf(r.body)).toContain('Votre connexion a expiré ou a été interrompue');
    // the pending sign-in is over: even the right code needs the password again
    r = await c.post('/signin/second-factor', { code: await totpCodeAt(secret, now) });
    expect(textOf(r.body)).toContain('Recommencez avec votre adresse courriel');
    c = await passwordStep(email);
    for (let i = PENDING_MAX_FAILURES; i < CODE_LOCK.maxFailures; i++) await c.post('/signin/second-factor', { code: wrong });
    c = await passwordStep(email);
    r = await c.post('/signin/second-factor', { code: await totpCodeAt(secret, now) });
    expect(r.status).toBe(429);
    expect(textOf(r.body)).toMatch(/Trop de codes incorrects\. Pour protéger votre compte, réessayez dans \d+ min\./);
    expect((await events('identity.totp.verify', id)).filter((e) => e.outcome === 'denied')).toHaveLength(1);
    // after the window, the right code works
    at(CODE_LOCK.windowMs + 30_000);
    c = await passwordStep(email);
    expect((await c.post('/signin/second-factor', { code: await totpCodeAt(secret, now) })).status).toBe(303);
  });

  it('is removed only on its own confirmation page, after a recent authentication; other sessions end', async () => {
    const { c, email, id } = await enrolled();
    const other = new Client(t.app, host);
    await other.signIn(email, PASSWORD); // the test helper does not know this secret: stays at the second step
    const page = await c.get('/account/security/totp/remove');
    expect(page.status).toBe(200);
    expect(textOf(page.body)).toContain('Vos autres sessions seront fermées');
    expect(textOf(page.body)).toContain('C’est votre seule deuxième étape de connexion');
    at(6 * 60_000);
    let r = await c.post('/account/security/totp/remove');
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe('/reauth?return=%2Faccount%2Fsecurity%2Ftotp%2Fremove');
    at(-6 * 60_000 + 1000);
    r = await c.post('/account/security/totp/remove');
    expect(r.headers.location).toBe('/account/security?status=totpRemoved');
    const live = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('totp_factors').select('id').where('account_id', '=', id).where('disabled_at', 'is', null).execute());
    expect(live).toEqual([]);
    const codes = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('recovery_codes').select('id').where('account_id', '=', id).where('revoked_at', 'is', null).where('used_at', 'is', null).execute());
    expect(codes).toEqual([]);
    // no factor left: the password alone signs in again
    expect((await new Client(t.app, host).signIn(email, PASSWORD)).headers.location).toBe('/account');
    expect(await events('identity.totp.remove', id)).toHaveLength(1);
  });
});

describe('notices', () => {
  it('e-mails the account holder, in their language, every time a factor is added or removed or the recovery codes change', async () => {
    const { c, email } = await enrolled();
    at(1000);
    expect((await c.post('/account/security/recovery-codes')).status).toBe(200);
    at(1000);
    expect((await c.post('/account/security/totp/remove')).status).toBe(303);
    const mails = await inTenant(database.db, tenant.id, (trx) =>
      trx.selectFrom('mail_outbox').select(['template', 'subject', 'body_text', 'locale']).where('to_address', '=', email).where('template', '=', 'factor_changed').orderBy('created_at').execute(),
    );
    expect(mails.map((m) => m.locale)).toEqual(['fr', 'fr', 'fr']);
    expect(mails[0]!.subject).toBe('Vos moyens de connexion Guichet ont changé');
    expect(mails.map((m) => /Sur votre compte Guichet, ([^.]+)\./.exec(m.body_text)?.[1])).toEqual([
      'une application d’authentification a été ajoutée à votre compte',
      'de nouveaux codes de récupération ont été créés (les anciens ne fonctionnent plus)',
      'l’application d’authentification a été retirée de votre compte',
    ]);
    expect(mails[0]!.body_text).toContain('/account/security');
  });
});

describe('recovery codes', () => {
  it('sign in once each (case and hyphens ignored), never twice; regenerating voids the old ones', async () => {
    const { c, email, id, codes } = await enrolled();
    const first = codes[0]!;
    let p = await passwordStep(email);
    const page = await p.get('/signin/recovery-code');
    expect(page.status).toBe(200);
    let r = await p.post('/signin/recovery-code', { code: first.toLowerCase().replace(/-/g, ' ') });
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe('/account/security?status=recoveryUsed');
    expect((await sessionOf(p))?.auth_methods).toEqual(['password', 'recovery']);
    expect(textOf((await p.get(r.headers.location as string)).body)).toContain('Il vous reste 9 codes de récupération.');
    // used: refused the second time
    p = await passwordStep(email);
    r = await p.post('/signin/recovery-code', { code: first });
    expect(r.status).toBe(401);
    expect(textOf(r.body)).toContain('Ce code de récupération n’est pas valide ou a déjà servi.');
    // a code of another account: refused
    const stranger = await enrolled();
    r = await p.post('/signin/recovery-code', { code: stranger.codes[0]! });
    expect(r.status).toBe(401);
    // regenerate (recent authentication: the enrolment session is fresh), then the old codes are void
    expect((await c.get('/account/security/recovery-codes')).status).toBe(200);
    r = await c.post('/account/security/recovery-codes');
    expect(r.status).toBe(200);
    const fresh = [...r.body.matchAll(/<code>([0-9A-Z-]{29})<\/code>/g)].map((m) => m[1]!);
    expect(fresh).toHaveLength(10);
    expect(fresh.some((x) => codes.includes(x))).toBe(false);
    p = await passwordStep(email);
    expect((await p.post('/signin/recovery-code', { code: codes[1]! })).status).toBe(401);
    expect((await p.post('/signin/recovery-code', { code: fresh[0]! })).status).toBe(303);
    const uses = await events('identity.recovery.use', id);
    expect(uses.map((e) => e.outcome)).toEqual(['success', 'failure', 'failure', 'failure', 'success']);
    expect(uses.at(-1)!.details).toMatchObject({ left: 9 });
    // stored as MACs, not as the codes
    const rows = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('recovery_codes').select('code_hash').where('account_id', '=', id).execute());
    expect(rows).toHaveLength(20);
    for (const row of rows) expect(row.code_hash).toHaveLength(32);
  });
});

describe('passkeys (software authenticator)', () => {
  async function options(c: Client, url: string) {
    const r = await c.post(url, {});
    expect(r.status, r.body).toBe(200);
    expect(r.headers['content-type']).toMatch(/^application\/json/);
    return JSON.parse(r.body).options;
  }

  it('registers several, named; signs in with one alone; the second step takes one; forged answers are refused; revoked is gone', async () => {
    const email = uniqueEmail('passkey');
    const id = await createParent(t, tenant, email);
    const c = new Client(t.app, host);
    await c.signIn(email, PASSWORD);
    await c.get('/account/security');
    const device = new SoftAuthenticator(`http://${host}`);
    // first passkey: its recovery codes come with it
    let r = await c.post('/account/security/passkeys', { name: 'Téléphone de Marie', credential: device.create(await options(c, '/account/security/passkeys/options')) });
    expect(r.status, r.body.slice(0, 3000)).toBe(200);
    expect([...r.body.matchAll(/<code>([0-9A-Z-]{29})<\/code>/g)]).toHaveLength(10);
    await c.get('/account/security');
    // the same device again: the options exclude its passkey, so the authenticator refuses
    const again = await options(c, '/account/security/passkeys/options');
    expect(again.excludeCredentials).toHaveLength(1);
    expect(() => device.create(again)).toThrow(/InvalidStateError/);
    // another device: a second passkey, named by default
    const laptop = new SoftAuthenticator(`http://${host}`);
    r = await c.post('/account/security/passkeys', { name: '', credential: laptop.create(await options(c, '/account/security/passkeys/options')) });
    expect(r.headers.location).toBe('/account/security?status=passkeyAdded');
    const overview = await c.get('/account/security');
    expect(textOf(overview.body)).toContain('Téléphone de Marie');
    expect(textOf(overview.body)).toContain('Clé d’accès 2');
    // a challenge is single-use: replaying a registration is refused
    const opts = await options(c, '/account/security/passkeys/options');
    const answer = new SoftAuthenticator(`http://${host}`).create(opts);
    expect((await c.post('/account/security/passkeys', { credential: answer })).status).toBe(303);
    await c.get('/account/security');
    expect((await c.post('/account/security/passkeys', { credential: answer })).status).toBe(400);
    expect((await c.post('/account/security/passkeys', { credential: 'not json' })).status).toBe(400);
    expect((await c.post('/account/security/passkeys', { credential: '{"id":"x"}' })).status).toBe(400);
    const registered = await events('identity.passkey.register', id);
    expect(registered.map((e) => e.outcome)).toEqual(['success', 'success', 'success', 'failure', 'failure', 'failure']);

    // sign-in with a passkey alone: no password, no e-mail address
    const anon = new Client(t.app, host);
    const signin = await anon.get('/signin');
    expect(textOf(signin.body)).toContain('Se connecter avec une clé d’accès');
    const signOpts = await options(anon, '/signin/passkey/options');
    expect(signOpts.userVerification).toBe('required');
    expect(signOpts.allowCredentials ?? []).toEqual([]);
    r = await anon.post('/signin/passkey', { credential: device.get(signOpts) });
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe('/account');
    expect((await sessionOf(anon))?.auth_methods).toEqual(['passkey']);

    // forged answers: another origin (phishing), a challenge not issued, a counter gone back, another user handle
    const forged = async (tamper: Parameters<SoftAuthenticator['get']>[1]) => {
      const x = new Client(t.app, host);
      await x.get('/signin');
      const o = await options(x, '/signin/passkey/options');
      return (await x.post('/signin/passkey', { credential: device.get(o, tamper) })).status;
    };
    expect(await forged({ origin: 'https://guichet-quebec.example.net' })).toBe(401);
    expect(await forged({ challenge: Buffer.alloc(32, 1).toString('base64url') })).toBe(401);
    expect(await forged({ counter: 1 })).toBe(401);
    expect(await forged({ userHandle: Buffer.alloc(16, 9).toString('base64url') })).toBe(401);
    // user verification required when the passkey is alone
    device.userVerified = false;
    expect(await forged({})).toBe(401);
    device.userVerified = true;
    const failures = (await events('identity.passkey.verify')).filter((e) => e.outcome === 'failure').map((e) => (e.details as { reason: string }).reason);
    expect(failures).toEqual(expect.arrayContaining(['not_verified', 'challenge', 'user_handle']));

    // a passkey is a second factor after the password too
    const p = await passwordStep(email);
    const second = await options(p, '/signin/second-factor/passkey/options');
    expect(second.allowCredentials.length).toBe(3);
    r = await p.post('/signin/passkey', { credential: device.get(second) });
    expect(r.status).toBe(303);
    expect((await sessionOf(p))?.auth_methods).toEqual(['password', 'passkey']);

    // rename, then revoke (its own page): it signs in no more, and the other sessions end
    // The phone's passkey, by its name: the test's clock stands still, so the three share one created_at.
    const [first] = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('webauthn_credentials').select(['id', 'credential_id']).where('account_id', '=', id).where('name', '=', 'Téléphone de Marie').execute());
    await c.get(`/account/security/passkeys/${first!.id}/rename`);
    r = await c.post(`/account/security/passkeys/${first!.id}/rename`, { name: '  Clé USB du bureau  ' });
    expect(r.headers.location).toBe('/account/security?status=passkeyRenamed');
    r = await c.post(`/account/security/passkeys/${first!.id}/rename`, { name: 'x'.repeat(61) });
    expect(r.status).toBe(400);
    expect(textOf((await c.get(`/account/security/passkeys/${first!.id}/revoke`)).body)).toContain('Vous ne pourrez plus vous connecter avec « Clé USB du bureau ».');
    r = await c.post(`/account/security/passkeys/${first!.id}/revoke`);
    expect(r.headers.location).toBe('/account/security?status=passkeyRevoked');
    expect((await anon.get('/account')).status).toBe(303);
    const y = new Client(t.app, host);
    await y.get('/signin');
    const o = await options(y, '/signin/passkey/options');
    expect((await y.post('/signin/passkey', { credential: device.get(o, { credential: 0 }) })).status).toBe(401);
    expect(await events('identity.passkey.revoke', first!.id)).toHaveLength(1);
    expect(await events('identity.passkey.rename', first!.id)).toHaveLength(1);
    // someone else's passkey cannot be renamed or revoked
    const intruder = new Client(t.app, host);
    const intruderEmail = uniqueEmail('intrus');
    await createParent(t, tenant, intruderEmail);
    await intruder.signIn(intruderEmail, PASSWORD);
    const [second2] = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('webauthn_credentials').select('id').where('account_id', '=', id).where('revoked_at', 'is', null).execute());
    expect((await intruder.get(`/account/security/passkeys/${second2!.id}/revoke`)).status).toBe(404);
    await intruder.get('/account/security');
    expect((await intruder.post(`/account/security/passkeys/${second2!.id}/revoke`)).status).toBe(404);
  });

  it('tells a page without JavaScript that passkeys need it', async () => {
    const page = await new Client(t.app, host).get('/signin');
    expect(page.body).toMatch(/<noscript><p class="notice notice--info">Les clés d’accès ont besoin de JavaScript\./);
    expect(page.body).toMatch(/<script src="\/assets\/passkeys.js" defer nonce="[0-9a-f]{32}"><\/script>/);
    expect(page.body).toMatch(/<div data-passkey-controls="true" hidden>/);
    const js = await new Client(t.app, host).get('/assets/passkeys.js');
    expect(js.status).toBe(200);
    expect(js.body).toContain('parseRequestOptionsFromJSON');
  });
});
