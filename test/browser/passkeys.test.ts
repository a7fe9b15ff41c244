/**
 * Second factors in a real browser (Debian's Chromium through playwright-core),
 * with Chromium's own virtual authenticator (DevTools protocol WebAuthn.*:
 * CTAP2, internal, resident keys, user verification) — not a mock. A person
 * registers a passkey, signs out, signs in with the passkey alone, then
 * revokes it and can no longer use it; an authenticator app is enrolled from
 * its QR page's key and asked for at the next sign-in. axe-core checks every
 * page on the way (0 violations), with the pages' real CSP in force, and a
 * page without JavaScript says that passkeys need it.
 */
import type { CDPSession, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { totpCodeAt } from '../../src/identity/factors/totp.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { createParent, PASSWORD, type TestApp } from '../helpers/app.ts';
import { mainText, pathOf as path, startBrowserApp, type BrowserApp } from '../helpers/browser-app.ts';
import { shot } from '../helpers/browser.ts';
import type { TestDatabase } from '../helpers/db.ts';

let b: BrowserApp;
let database: TestDatabase;
let t: TestApp;
let tenant: Tenant;

beforeAll(async () => {
  b = await startBrowserApp();
  ({ database, t, tenant } = b);
}, 120_000);

afterAll(async () => {
  await b?.close();
});

const freshPage = (options: Parameters<BrowserApp['page']>[0] = {}) => b.page(options);
const check = (page: Page, label: string) => b.check(page, label);
const visit = (page: Page, p: string, label: string, status = 200) => b.visit(page, p, label, status);
const go = (page: Page, label: string, action: () => Promise<unknown>) => b.go(page, label, action);

const nav = (page: Page) => page.getByRole('navigation', { name: /Navigation principale|Main navigation/ });

/** Chromium's virtual authenticator for this page: a platform authenticator with a PIN or biometrics. */
async function virtualAuthenticator(page: Page): Promise<{ cdp: CDPSession; id: string }> {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true },
  });
  return { cdp, id: authenticatorId };
}

async function signInWithPassword(page: Page, email: string, label: string): Promise<void> {
  await visit(page, '/signin', `${label}: sign-in page`);
  await page.getByLabel('Adresse courriel').fill(email);
  await page.getByLabel('Mot de passe').fill(PASSWORD);
  await go(page, `${label}: after the password`, () => page.getByRole('main').getByRole('button', { name: 'Se connecter', exact: true }).click());
}

async function signOut(page: Page, label: string): Promise<void> {
  await go(page, label, () => nav(page).getByRole('button', { name: 'Se déconnecter' }).click());
  expect(path(page)).toBe('/signin?signedOut=1');
}

describe('passkeys in Chromium, with its virtual authenticator', () => {
  it('registers a passkey, signs out, signs in with the passkey alone, revokes it; a revoked passkey signs in no more', async () => {
    const email = 'marie.tremblay@exemple.test';
    const accountId = await createParent(t, tenant, email);
    const page = await freshPage();
    const { cdp, id } = await virtualAuthenticator(page);
    await signInWithPassword(page, email, 'parent');
    expect(path(page)).toBe('/account');
    await go(page, 'account security', () => page.getByRole('link', { name: 'Clés d’accès, application d’authentification et codes de récupération' }).click());
    expect(path(page)).toBe('/account/security');
    expect(await mainText(page)).toContain('Vous n’avez encore ajouté aucune clé d’accès.');
    // JavaScript on and WebAuthn available: the button shows, the notices do not
    await expect.poll(() => page.getByRole('button', { name: 'Ajouter une clé d’accès' }).isVisible()).toBe(true);
    expect(await page.locator('[data-passkey-unsupported]').isVisible()).toBe(false);

    await page.getByLabel('Nom de la clé d’accès (facultatif)').fill('Ordinateur du bureau');
    await go(page, 'recovery codes after the first passkey', () => page.getByRole('button', { name: 'Ajouter une clé d’accès' }).click());
    expect(await page.getByRole('heading', { level: 1 }).innerText()).toBe('Vos codes de récupération');
    expect(await page.locator('ol.recovery-codes li').count()).toBe(10);
    await shot(page, '10-recovery-codes');
    await go(page, 'account security with a passkey', () => page.getByRole('link', { name: 'J’ai conservé mes codes' }).click());
    expect(await mainText(page)).toContain('La clé d’accès a été ajoutée.');
    expect(await page.locator('main tbody tr').filter({ hasText: 'Ordinateur du bureau' }).count()).toBe(1);
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId: id });
    expect(credentials).toHaveLength(1);
    expect(credentials[0]!.isResidentCredential).toBe(true);
    await shot(page, '11-account-security');

    // renamed on its own page
    await go(page, 'rename a passkey', () => page.getByRole('link', { name: 'Renommer Ordinateur du bureau' }).click());
    await page.getByLabel('Nom', { exact: true }).fill('Portable de Marie');
    await go(page, 'passkey renamed', () => page.getByRole('button', { name: 'Enregistrer le nom' }).click());
    expect(await mainText(page)).toContain('La clé d’accès a été renommée.');

    // signs out, then in with the passkey alone: no e-mail address, no password
    await signOut(page, 'signed out');
    expect(await page.getByRole('heading', { name: 'Se connecter avec une clé d’accès' }).count()).toBe(1);
    await go(page, 'signed in with the passkey', () => page.getByRole('button', { name: 'Utiliser une clé d’accès' }).click());
    expect(path(page)).toBe('/account');
    const methods = await inTenant(database.db, tenant.id, (trx) =>
      trx.selectFrom('sessions').select('auth_methods').where('account_id', '=', accountId).where('revoked_at', 'is', null).orderBy('created_at', 'desc').executeTakeFirstOrThrow(),
    );
    expect(methods.auth_methods).toEqual(['passkey']);

    // revoked on its own confirmation page, which names the consequence
    await visit(page, '/account/security', 'account security, signed in by passkey');
    await go(page, 'revoke confirmation', () => page.getByRole('link', { name: 'Retirer Portable de Marie' }).click());
    expect(await mainText(page)).toContain('Vous ne pourrez plus vous connecter avec « Portable de Marie ».');
    expect(await mainText(page)).toContain('C’est votre seule deuxième étape de connexion.');
    await go(page, 'passkey revoked', () => page.getByRole('button', { name: 'Retirer la clé d’accès' }).click());
    expect(await mainText(page)).toContain('La clé d’accès a été retirée.');
    expect(await mainText(page)).toContain('Vous n’avez encore ajouté aucune clé d’accès.');

    // the authenticator still holds it, but the server no longer accepts it
    await signOut(page, 'signed out again');
    const refused = await go(page, 'passkey refused after revocation', () => page.getByRole('button', { name: 'Utiliser une clé d’accès' }).click());
    expect(refused).toBe(401);
    expect(await mainText(page)).toContain('La clé d’accès n’a pas pu être vérifiée.');
    const events = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['action', 'outcome']).where('action', 'like', 'identity.passkey.%').orderBy('seq').execute());
    expect(events.map((e) => `${e.action}:${e.outcome}`)).toEqual([
      'identity.passkey.register:success',
      'identity.passkey.rename:success',
      'identity.passkey.verify:success',
      'identity.passkey.revoke:success',
      'identity.passkey.verify:failure',
    ]);
  });

  it('an authenticator app from the QR page, then the second step asks for its code or a passkey', async () => {
    const email = 'luc.gagnon@exemple.test';
    await createParent(t, tenant, email);
    const page = await freshPage();
    await virtualAuthenticator(page);
    await signInWithPassword(page, email, 'second parent');
    await visit(page, '/account/security', 'account security, nothing yet');
    await go(page, 'authenticator app set-up', () => page.getByRole('link', { name: 'Configurer une application d’authentification' }).click());
    expect(await page.getByRole('img', { name: 'Code QR à balayer avec votre application d’authentification' }).isVisible()).toBe(true);
    await shot(page, '12-totp-setup');
    const secret = (await page.locator('code.manual-key').innerText()).replace(/\s/g, '');
    await page.getByLabel('Code à 6 chiffres').fill('000000' === (await totpCodeAt(secret, new Date())) ? '111111' : '000000');
    expect(await go(page, 'authenticator app set-up, wrong code', () => page.getByRole('button', { name: 'Activer' }).click())).toBe(400);
    expect((await page.title()).startsWith('Erreur\u202f: ')).toBe(true);
    await page.getByLabel('Code à 6 chiffres').fill(await totpCodeAt(secret, new Date()));
    await go(page, 'recovery codes after the app', () => page.getByRole('button', { name: 'Activer' }).click());
    await go(page, 'account security with the app', () => page.getByRole('link', { name: 'J’ai conservé mes codes' }).click());
    await page.getByLabel('Nom de la clé d’accès (facultatif)').fill('Téléphone');
    await go(page, 'passkey added', () => page.getByRole('button', { name: 'Ajouter une clé d’accès' }).click());
    expect(await mainText(page)).toContain('La clé d’accès a été ajoutée.');

    await signOut(page, 'second parent signed out');
    await page.getByLabel('Adresse courriel').fill(email);
    await page.getByLabel('Mot de passe').fill(PASSWORD);
    await go(page, 'second step', () => page.getByRole('main').getByRole('button', { name: 'Se connecter', exact: true }).click());
    expect(path(page)).toBe('/signin/second-factor');
    expect(await page.getByRole('heading', { level: 1 }).innerText()).toBe('Deuxième étape de la connexion');
    await shot(page, '13-second-step');
    await go(page, 'recovery code page', () => page.getByRole('link', { name: /Utiliser un code de récupération/ }).click());
    await go(page, 'back to the second step', () => page.getByRole('link', { name: 'Revenir aux autres méthodes' }).click());
    await go(page, 'signed in with password and passkey', () => page.getByRole('button', { name: 'Utiliser une clé d’accès' }).click());
    expect(path(page)).toBe('/account');

    // the re-authentication pages, both levels
    await visit(page, '/reauth?return=%2Faccount%2Fsecurity', 're-authentication');
    expect(await page.getByLabel('Code à 6 chiffres').count()).toBe(1);
    await visit(page, '/reauth?return=%2Faccount%2Fsecurity&level=passkey', 're-authentication, passkey only');
    expect(await page.getByLabel('Mot de passe').count()).toBe(0);
    await go(page, 're-authenticated with the passkey', () => page.getByRole('button', { name: 'Utiliser une clé d’accès' }).click());
    expect(path(page)).toBe('/account/security');
  });

  it('without JavaScript, the pages say that passkeys need it, and the rest works', async () => {
    const page = await freshPage({ javaScriptEnabled: false });
    await visit(page, '/signin', 'sign-in page without JavaScript');
    expect(await mainText(page)).toContain('Les clés d’accès ont besoin de JavaScript.');
    expect(await page.getByRole('button', { name: 'Utiliser une clé d’accès' }).count()).toBe(0);
    await page.getByLabel('Adresse courriel').fill('marie.tremblay@exemple.test');
    await page.getByLabel('Mot de passe').fill(PASSWORD);
    await go(page, 'signed in without JavaScript', () => page.getByRole('main').getByRole('button', { name: 'Se connecter', exact: true }).click());
    await visit(page, '/account/security', 'account security without JavaScript');
    expect(await mainText(page)).toContain('Les clés d’accès ont besoin de JavaScript.');
  });
});

describe('the password, in Chromium', () => {
  it('is changed from account security with the current one; a guessable one is refused with the reason', async () => {
    const email = 'sophie.bouchard@exemple.test';
    await createParent(t, tenant, email);
    const page = await freshPage();
    await signInWithPassword(page, email, 'parent changing the password');
    await visit(page, '/account/security', 'account security, before the change');
    await go(page, 'password change form', () => page.getByRole('link', { name: 'Changer le mot de passe' }).click());
    expect(path(page)).toBe('/account/security/password');
    await page.getByLabel('Mot de passe actuel').fill(PASSWORD);
    await page.getByLabel('Nouveau mot de passe', { exact: true }).fill('sophie.bouchard2026');
    await page.getByLabel('Confirmez le nouveau mot de passe').fill('sophie.bouchard2026');
    const refused = await go(page, 'a guessable new password refused', () => page.getByRole('main').getByRole('button', { name: 'Changer le mot de passe' }).click());
    expect(refused).toBe(400);
    expect(await mainText(page)).toContain('Ce mot de passe se devine trop facilement');
    // the summary links to the field
    expect(await page.getByRole('alert').getByRole('link').first().getAttribute('href')).toBe('#f-password');
    await page.getByLabel('Mot de passe actuel').fill(PASSWORD);
    await page.getByLabel('Nouveau mot de passe', { exact: true }).fill('girafe parapluie tempête violoncelle');
    await page.getByLabel('Confirmez le nouveau mot de passe').fill('girafe parapluie tempête violoncelle');
    await go(page, 'password changed', () => page.getByRole('main').getByRole('button', { name: 'Changer le mot de passe' }).click());
    expect(path(page)).toBe('/account/security?status=passwordChanged');
    expect(await mainText(page)).toContain('Votre mot de passe a été changé. Vos autres sessions ont pris fin.');
    // still signed in, under the session's new token
    await visit(page, '/account', 'account after the change');
    expect(path(page)).toBe('/account');
  });
});
