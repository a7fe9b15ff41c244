/**
 * A patron of a library catalogue signs in with Guichet, in Chromium: the
 * catalogue (a small relying party built on openid-client, on its own
 * loopback port) sends the browser to Guichet, the patron signs in with
 * Guichet's own page, consents, and comes back signed in to the catalogue
 * with their access right; then signs out from the catalogue. axe-core checks
 * every Guichet page on the way, with the real Content-Security-Policy.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as oidc from 'openid-client';
import type { Browser, BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { createParent, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { assertNoPageProblems, checkA11y, closeBrowser, follow, launchBrowser, newContext, newPage, shot } from '../helpers/browser.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { freePort, insertActiveClient, rpConfig, type RegisteredClient } from './helpers.ts';

let database: TestDatabase;
let t: TestApp;
let tenant: Tenant;
let browser: Browser;
const contexts: BrowserContext[] = [];
let catalogue: Server;
let catalogueBase: string;
let guichetBase: string;
const EMAIL = 'lectrice@example.org';

/** The relying party: /login, /callback, /logout, /signed-out; one pending sign-in at a time is enough here. */
async function startCatalogue(config: () => oidc.Configuration, rp: () => RegisteredClient): Promise<Server> {
  let pending: { verifier: string; state: string } | null = null;
  let idToken = '';
  const server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', catalogueBase);
      const page = (body: string) => {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(`<!doctype html><html lang="fr"><head><title>Catalogue</title></head><body><main>${body}</main></body></html>`);
      };
      if (url.pathname === '/login') {
        pending = { verifier: oidc.randomPKCECodeVerifier(), state: oidc.randomState() };
        const to = oidc.buildAuthorizationUrl(config(), { redirect_uri: rp().redirectUri, scope: 'openid email library', code_challenge: await oidc.calculatePKCECodeChallenge(pending.verifier), code_challenge_method: 'S256', state: pending.state });
        res.writeHead(303, { location: to.href }).end();
      } else if (url.pathname === '/callback' && pending) {
        const tokens = await oidc.authorizationCodeGrant(config(), url, { pkceCodeVerifier: pending.verifier, expectedState: pending.state });
        idToken = tokens.id_token ?? '';
        const info = await oidc.fetchUserInfo(config(), tokens.access_token, tokens.claims()!.sub);
        const rights = (info.entitlements as { value: string }[] | undefined)?.map((e) => e.value).join(', ') ?? '';
        page(`<h1>Catalogue</h1><p id="who">Bonjour ${String(info.email)}</p><p id="rights">${rights}</p>`);
      } else if (url.pathname === '/logout') {
        const to = oidc.buildEndSessionUrl(config(), { id_token_hint: idToken, post_logout_redirect_uri: rp().postLogoutRedirectUri });
        res.writeHead(303, { location: to.href }).end();
      } else if (url.pathname === '/signed-out') {
        page('<h1>Déconnecté du catalogue</h1>');
      } else {
        res.writeHead(404).end();
      }
    })().catch((err: Error) => {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`catalogue error: ${err.message}`);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return server;
}

beforeAll(async () => {
  database = await createTestDatabase();
  const port = await freePort();
  t = await startTestApp(database, { port });
  await t.app.listen({ port, host: '127.0.0.1' });
  tenant = await tenantFor(t);
  guichetBase = `http://${tenant.hosts[0]}:${port}`;
  const patron = await createParent(t, tenant, EMAIL);
  const a = await createParent(t, tenant, 'demandeur@example.org');
  const b = await createParent(t, tenant, 'approbateur@example.org');
  let config: oidc.Configuration | null = null;
  let rp: RegisteredClient | null = null;
  catalogue = await startCatalogue(() => config!, () => rp!);
  catalogueBase = `http://catalogue.localhost:${(catalogue.address() as AddressInfo).port}`;
  rp = await insertActiveClient(t, tenant, { scopes: ['openid', 'email', 'library'], requestedBy: a, approvedBy: b, redirectUri: `${catalogueBase}/callback`, postLogoutRedirectUri: `${catalogueBase}/signed-out`, name: 'Catalogue des bibliothèques de la Rive-Sud' });
  await inTenant(database.db, tenant.id, (trx) =>
    trx
      .insertInto('oidc_entitlements')
      .values({ tenant_id: tenant.id, account_id: patron, scope: 'library', kind: 'library.patron', value: 'reseau-rive-sud', label_fr: 'Abonnée du réseau de la Rive-Sud', label_en: 'Patron of the Rive-Sud network', valid_until: '2099-12-31', created_by: a, created_at: new Date(), revoked_at: null })
      .execute(),
  );
  config = await rpConfig(`${guichetBase}/oidc`, port, rp);
  browser = await launchBrowser();
}, 120_000);

afterAll(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  await closeBrowser(browser);
  await new Promise((r) => catalogue?.close(r));
  await t?.close();
  await database?.close();
});

describe('a patron signs in to a library catalogue with Guichet', () => {
  it('sign-in, consent, back to the catalogue with the access right; sign-out; axe-clean pages', async () => {
    const context = await newContext(browser);
    contexts.push(context);
    const page = await newPage(context);

    expect(await follow(page, () => page.goto(`${catalogueBase}/login`))).toBe(200);
    expect(page.url()).toMatch(new RegExp(`^${guichetBase}/signin\\?return=%2Foidc%2Finteraction%2F`));
    await checkA11y(page, 'Guichet sign-in, for a relying party');
    await page.getByLabel('Adresse courriel').fill(EMAIL);
    await page.getByLabel('Mot de passe').fill(PASSWORD);
    expect(await follow(page, () => page.getByRole('button', { name: 'Se connecter', exact: true }).click())).toBe(200);

    // The consent page: who asks, what would be shared, the access right itself.
    expect(page.url()).toMatch(new RegExp(`^${guichetBase}/oidc/interaction/`));
    expect(await page.locator('h1').innerText()).toBe('Se connecter à Catalogue des bibliothèques de la Rive-Sud');
    expect(await page.getByLabel('Votre adresse courriel').isChecked()).toBe(true);
    expect(await page.locator('main').innerText()).toContain('Abonnée du réseau de la Rive-Sud');
    await checkA11y(page, 'consent page');
    assertNoPageProblems(page, 'consent page');
    await shot(page, '20-oidc-consent');

    // The consent page in English, same interaction.
    await follow(page, () => page.getByRole('link', { name: /English/ }).click());
    expect(await page.locator('h1').innerText()).toBe('Sign in to Catalogue des bibliothèques de la Rive-Sud');
    await checkA11y(page, 'consent page, English');
    expect(await follow(page, () => page.getByRole('button', { name: 'Allow and continue' }).click())).toBe(200);

    expect(page.url()).toMatch(new RegExp(`^${catalogueBase}/callback\\?`));
    expect(await page.locator('#who').innerText()).toBe(`Bonjour ${EMAIL}`);
    expect(await page.locator('#rights').innerText()).toBe('reseau-rive-sud');

    // Signing out from the catalogue: Guichet asks, then sends the patron back.
    expect(await follow(page, () => page.goto(`${catalogueBase}/logout`))).toBe(200);
    expect(page.url()).toMatch(new RegExp(`^${guichetBase}/oidc/session/end`));
    await checkA11y(page, 'sign-out confirmation');
    assertNoPageProblems(page, 'sign-out confirmation');
    expect(await follow(page, () => page.getByRole('button', { name: 'Yes, sign me out' }).click())).toBe(200);
    expect(page.url()).toBe(`${catalogueBase}/signed-out`);
    // Signed out of Guichet too.
    expect(await follow(page, () => page.goto(`${guichetBase}/account`))).toBe(200);
    expect(page.url()).toMatch(new RegExp(`^${guichetBase}/signin`));
  });

  it('a protocol error is a Guichet page, in the frame and axe-clean', async () => {
    const context = await newContext(browser);
    contexts.push(context);
    const page = await newPage(context);
    expect(await follow(page, () => page.goto(`${guichetBase}/oidc/auth?client_id=unknown-client-0000&response_type=code&scope=openid`))).toBe(400);
    expect(await page.locator('h1').innerText()).toBe('La connexion à ce service n’a pas pu se faire');
    await checkA11y(page, 'protocol error page');
    assertNoPageProblems(page, 'protocol error page');
  });
});
