/**
 * A password changed while signed in (ASVS 6.2.2, 6.2.3), and new passwords
 * weighed against guessing wherever one is chosen (6.2.4, 6.2.11, 6.2.12):
 * the current password is asked for and counted when wrong; a fresh session
 * is needed; the change ends the other sessions, renews this one's token and
 * is told by e-mail; a common or self-referential password is refused with
 * its reason at sign-up, on the link's page, on an invitation and here, and
 * nothing is written.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Trx } from '../../src/db/connection.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { CODE_LOCK } from '../../src/identity/factors/store.ts';
import { contextWords, isGuessable } from '../../src/identity/password-strength.ts';
import { hashToken } from '../../src/identity/tokens.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { createAdmin, createFacility, createParent, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';

let database: TestDatabase;
let t: TestApp;
let tenant: Tenant;
let host: string;
let now = new Date('2026-09-14T14:00:00Z');

const at = (ms: number) => {
  now = new Date(now.getTime() + ms);
  t.setNow(now);
};

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
const uniqueEmail = (p: string) => `${p}.${Date.now().toString(36)}${(seq++).toString(36)}@exemple.test`;
const NEW_PASSWORD = 'girafe parapluie tempête violoncelle';

const q = <T,>(fn: (trx: Trx) => Promise<T>) => inTenant(database.db, tenant.id, fn);
const passwordHash = (email: string) => q((trx) => trx.selectFrom('accounts').select('password_hash').where('email', '=', email).executeTakeFirstOrThrow());
const mails = (email: string) => q((trx) => trx.selectFrom('mail_outbox').select(['template', 'body_text']).where('to_address', '=', email).orderBy('created_at').execute());
const changes = (outcome?: 'success' | 'failure' | 'denied') =>
  q((trx) => {
    let s = trx.selectFrom('audit_events').select(['outcome', 'details', 'actor_account_id']).where('action', '=', 'identity.password.change');
    if (outcome) s = s.where('outcome', '=', outcome);
    return s.orderBy('seq').execute();
  });

describe('weighing a new password', () => {
  it('refuses common passwords, keyboard rows, words with a year, and the person’s own address or the service’s name; passes long unrelated words', async () => {
    const ctx = contextWords('marie.tremblay@exemple.test', tenant);
    for (const weak of ['motdepasse123', 'password1234', 'azertyuiop12', 'qwertyuiop123', 'p@ssw0rd12345', 'marie.tremblay2026', 'guichet123456', '1234567890123']) {
      expect(await isGuessable(weak, ctx), weak).toBe(true);
    }
    for (const strong of [PASSWORD, NEW_PASSWORD, 'une phrase de passe toute neuve 2026', 'Tr0ub4dor&3xx', 'k9#vQ!2zLm@8pW']) {
      expect(await isGuessable(strong, ctx), strong).toBe(false);
    }
  });

  it('refuses a guessable password at sign-up, on the set-password link and on an invitation, and writes nothing', async () => {
    const email = uniqueEmail('nouveau');
    const c = new Client(t.app, host);
    await c.get('/signup');
    const r = await c.post('/signup', { email, password: 'motdepasse2026', passwordConfirm: 'motdepasse2026' });
    expect(r.status).toBe(400);
    expect(textOf(r.body)).toContain('Ce mot de passe se devine trop facilement');
    expect(await q((trx) => trx.selectFrom('accounts').select('id').where('email', '=', email).execute())).toEqual([]);
    expect(await mails(email)).toEqual([]);

    // The first administrator's link to choose a password: its own address refused as a password.
    const admin = uniqueEmail('direction');
    await createAdmin(t, tenant, admin);
    const link = /\/set-password\?token=[A-Za-z0-9_-]{43}/.exec((await mails(admin))[0]!.body_text)![0];
    const token = new URL(link, 'http://x').searchParams.get('token')!;
    const before = await passwordHash(admin);
    await c.get(link);
    const weak = `${admin.split('@')[0]}!`;
    const s = await c.post('/set-password', { token, password: weak, passwordConfirm: weak });
    expect(s.status).toBe(400);
    expect(textOf(s.body)).toContain('Ce mot de passe se devine trop facilement');
    expect(await passwordHash(admin)).toEqual(before);
    expect(await q((trx) => trx.selectFrom('account_tokens').select('used_at').where('token_hash', '=', hashToken(token)).executeTakeFirstOrThrow())).toEqual({ used_at: null });
    // the link still works with a good one
    expect((await c.post('/set-password', { token, password: NEW_PASSWORD, passwordConfirm: NEW_PASSWORD })).status).toBe(303);

    // An invitation for a new account.
    const facility = await createFacility(t, tenant);
    const invitee = uniqueEmail('educ');
    const boss = new Client(t.app, host);
    await boss.signIn(admin, NEW_PASSWORD);
    await boss.get(`/directory/${facility}`);
    expect((await boss.post(`/admin/facilities/${facility}/invitations`, { email: invitee })).status).toBe(200);
    const invitation = /\/invitations\/accept\?token=[A-Za-z0-9_-]{43}/.exec((await mails(invitee))[0]!.body_text)![0];
    const i = new Client(t.app, host);
    await i.get(invitation);
    const itoken = new URL(invitation, 'http://x').searchParams.get('token')!;
    const own = `${invitee.split('@')[0]}!`;
    const a = await i.post('/invitations/accept', { token: itoken, password: own, passwordConfirm: own });
    expect(a.status).toBe(400);
    expect(textOf(a.body)).toContain('Ce mot de passe se devine trop facilement');
    expect(await q((trx) => trx.selectFrom('accounts').select('id').where('email', '=', invitee).execute())).toEqual([]);
  });
});

describe('changing one’s password while signed in', () => {
  it('asks for the current one, refuses a wrong, unchanged, mismatched or guessable one without writing, then changes it', async () => {
    const email = uniqueEmail('parent');
    const accountId = await createParent(t, tenant, email);
    const c = new Client(t.app, host);
    await c.signIn(email, PASSWORD);
    const other = new Client(t.app, host, '198.51.100.7');
    await other.signIn(email, PASSWORD);
    const security = await c.get('/account/security');
    expect(security.body).toContain('href="/account/security/password"');
    const page = await c.get('/account/security/password');
    expect(page.status).toBe(200);
    expect(page.body).toContain('autocomplete="current-password"');
    const before = await passwordHash(email);

    const tries: [Record<string, string>, number, string][] = [
      [{ currentPassword: 'pas le bon mot de passe', password: NEW_PASSWORD, passwordConfirm: NEW_PASSWORD }, 401, 'Le mot de passe actuel n’est pas le bon'],
      [{ currentPassword: PASSWORD, password: PASSWORD, passwordConfirm: PASSWORD }, 400, 'Choisissez un mot de passe différent de l’actuel'],
      [{ currentPassword: PASSWORD, password: NEW_PASSWORD, passwordConfirm: 'autre chose encore ici' }, 400, 'Les deux mots de passe ne sont pas identiques'],
      [{ currentPassword: PASSWORD, password: 'azertyuiop2026', passwordConfirm: 'azertyuiop2026' }, 400, 'Ce mot de passe se devine trop facilement'],
      [{ currentPassword: PASSWORD, password: 'court', passwordConfirm: 'court' }, 400, 'au moins 12 caractères'],
    ];
    for (const [fields, status, message] of tries) {
      await c.get('/account/security/password');
      const r = await c.post('/account/security/password', fields);
      expect(r.status, message).toBe(status);
      expect(textOf(r.body)).toContain(message);
    }
    expect(await passwordHash(email)).toEqual(before);
    expect(await changes('failure')).toEqual([{ outcome: 'failure', details: { reason: 'bad_password' }, actor_account_id: accountId }]);
    expect((await other.get('/account')).status).toBe(200);

    const tokenBefore = c.cookies.get('guichet_session')!;
    await c.get('/account/security/password');
    const r = await c.post('/account/security/password', { currentPassword: PASSWORD, password: NEW_PASSWORD, passwordConfirm: NEW_PASSWORD });
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe('/account/security?status=passwordChanged');
    expect(textOf((await c.get('/account/security?status=passwordChanged')).body)).toContain('Votre mot de passe a été changé.');
    // this session goes on under a new token; the other one, and a copy of the old token, are signed out
    expect(c.cookies.get('guichet_session')).not.toBe(tokenBefore);
    expect((await c.get('/account')).status).toBe(200);
    expect((await other.get('/account')).status).toBe(303);
    const copy = new Client(t.app, host);
    copy.cookies.set('guichet_session', tokenBefore);
    expect((await copy.get('/account')).status).toBe(303);
    // the old password no longer signs in, the new one does
    expect((await new Client(t.app, host, '198.51.100.8').signIn(email, PASSWORD)).headers.location).not.toBe('/account');
    expect((await new Client(t.app, host, '198.51.100.9').signIn(email, NEW_PASSWORD)).status).toBe(303);
    const [notice] = (await mails(email)).filter((m) => m.template === 'password_changed');
    expect(notice!.body_text).toContain('depuis une session ouverte');
    expect(notice!.body_text).toContain('/password/forgot');
    expect(await changes('success')).toEqual([{ outcome: 'success', details: { otherSessionsEnded: 1 }, actor_account_id: accountId }]);
  });

  it('needs a session authenticated in the last five minutes, and locks after repeated wrong current passwords', async () => {
    const email = uniqueEmail('parent');
    await createParent(t, tenant, email);
    const c = new Client(t.app, host);
    await c.signIn(email, PASSWORD);
    at(6 * 60_000);
    const page = await c.get('/account/security/password');
    expect(page.status).toBe(303);
    expect(page.headers.location).toBe(`/reauth?return=${encodeURIComponent('/account/security/password')}`);
    const before = await passwordHash(email);
    await c.get('/account/security'); // a form's token of now (the one from the sign-in page has aged out)
    const stale = await c.post('/account/security/password', { currentPassword: PASSWORD, password: NEW_PASSWORD, passwordConfirm: NEW_PASSWORD });
    expect(stale.status).toBe(303);
    expect(String(stale.headers.location)).toMatch(/^\/reauth\?return=/);
    expect(await passwordHash(email)).toEqual(before);

    await c.get('/reauth?return=%2Faccount%2Fsecurity%2Fpassword');
    expect((await c.post('/reauth', { return: '/account/security/password', password: PASSWORD })).headers.location).toBe('/account/security/password');
    let last;
    for (let i = 0; i <= CODE_LOCK.maxFailures; i++) {
      await c.get('/account/security/password');
      last = await c.post('/account/security/password', { currentPassword: `mauvais mot de passe ${i}`, password: NEW_PASSWORD, passwordConfirm: NEW_PASSWORD });
    }
    expect(last!.status).toBe(429);
    expect(textOf(last!.body)).toContain('Trop d’essais incorrects');
    // locked: even the right current password is refused for now
    await c.get('/account/security/password');
    expect((await c.post('/account/security/password', { currentPassword: PASSWORD, password: NEW_PASSWORD, passwordConfirm: NEW_PASSWORD })).status).toBe(429);
    expect(await passwordHash(email)).toEqual(before);
    expect((await changes('denied')).length).toBeGreaterThanOrEqual(1);
  });
});
