import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { createParent, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { follow, freePort, insertActiveClient, rpConfig, type RegisteredClient } from './helpers.ts';

/**
 * openid-client as the relying party against the running server: discovery,
 * the code flow with PKCE through Guichet's own sign-in and consent pages, ID
 * token validation, userinfo, refresh-token rotation and reuse detection,
 * RP-initiated logout; then the standard errors for bad input.
 */
let database: TestDatabase;
let t: TestApp;
let port: number;
let tenant: Tenant;
let issuer: string;
let rp: RegisteredClient;
let config: oidc.Configuration;
let parentId: string;
const EMAIL = 'abonne@example.org';

beforeAll(async () => {
  database = await createTestDatabase();
  port = await freePort();
  t = await startTestApp(database, { port });
  await t.app.listen({ port, host: '127.0.0.1' });
  tenant = await tenantFor(t);
  issuer = `http://${tenant.hosts[0]}:${port}/oidc`;
  parentId = await createParent(t, tenant, EMAIL);
  const a = await createParent(t, tenant, 'demandeur@example.org');
  const b = await createParent(t, tenant, 'approbateur@example.org');
  rp = await insertActiveClient(t, tenant, { scopes: ['openid', 'email', 'profile', 'library'], requestedBy: a, approvedBy: b });
  await inTenant(database.db, tenant.id, (trx) =>
    trx
      .insertInto('oidc_entitlements')
      .values([
        { tenant_id: tenant.id, account_id: parentId, scope: 'library', kind: 'library.patron', value: 'reseau-biblio-x', label_fr: 'Abonné du réseau X', label_en: 'Patron of network X', valid_until: '2099-12-31', created_by: a, created_at: new Date(), revoked_at: null },
        { tenant_id: tenant.id, account_id: parentId, scope: 'library', kind: 'library.patron', value: 'reseau-expire', label_fr: 'Abonnement échu', label_en: 'Lapsed', valid_until: '2001-01-01', created_by: a, created_at: new Date(), revoked_at: null },
        { tenant_id: tenant.id, account_id: parentId, scope: 'residency', kind: 'resident', value: 'longueuil', label_fr: 'Résident de Longueuil', label_en: 'Resident of Longueuil', valid_until: null, created_by: a, created_at: new Date(), revoked_at: null },
      ])
      .execute(),
  );
  config = await rpConfig(issuer, port, rp);
}, 120_000);

afterAll(async () => {
  await t?.close();
  await database?.close();
});

async function auditActions(prefix = 'oidc.'): Promise<{ action: string; outcome: string; details: Record<string, unknown>; fields: string[]; target_ids: string[] }[]> {
  return inTenant(database.db, tenant.id, (trx) =>
    trx.selectFrom('audit_events').select(['action', 'outcome', 'details', 'fields', 'target_ids']).where('action', 'like', `${prefix}%`).orderBy('seq').execute(),
  ) as never;
}

/** A person signs in through Guichet and consents; returns the redirect back to the relying party. */
async function signInAndConsent(person: Client, authUrl: URL, opts: { uncheck?: string[]; signedIn?: boolean } = {}): Promise<URL> {
  let r = await follow(person, authUrl.pathname + authUrl.search);
  if (!opts.signedIn) {
    expect(r.path).toMatch(/^\/signin\?return=%2Foidc%2Finteraction%2F/);
    const back = decodeURIComponent(r.path.split('return=')[1]!);
    const s = await person.signIn(EMAIL, PASSWORD);
    expect(s.status).toBe(303);
    r = await follow(person, back);
  }
  if (r.location) return new URL(r.location);
  expect(r.status).toBe(200);
  expect(r.body).toContain('Catalogue des bibliothèques');
  const uid = /action="\/oidc\/interaction\/([^/"]+)\/consent"/.exec(r.body)?.[1];
  expect(uid).toBeTruthy();
  const scopes = [...r.body.matchAll(/name="scope" value="([a-z_]+)"(?! checked disabled)/g)].map((m) => m[1]!).filter((s) => s !== 'openid' && !(opts.uncheck ?? []).includes(s));
  const p = await person.post(`/oidc/interaction/${uid}/consent`, { decision: 'allow', scope: scopes });
  expect(p.status).toBe(303);
  const done = await follow(person, String(p.headers.location));
  expect(done.location).toBeTruthy();
  return new URL(done.location!);
}

function authRequest(scope: string, extra: Record<string, string> = {}) {
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  return {
    verifier,
    state,
    nonce,
    url: async () =>
      oidc.buildAuthorizationUrl(config, { redirect_uri: rp.redirectUri, scope, code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', state, nonce, ...extra }),
  };
}

describe('OpenID Connect provider, with openid-client as the relying party', () => {
  it('publishes discovery and a JWKS with keys from the key provider, and only the code flow', async () => {
    const m = config.serverMetadata();
    expect(m.issuer).toBe(issuer);
    expect(m.response_types_supported).toEqual(['code']);
    expect(m.code_challenge_methods_supported).toEqual(['S256']);
    expect(m.grant_types_supported?.sort()).toEqual(['authorization_code', 'refresh_token']);
    expect(m.registration_endpoint).toBeUndefined();
    expect(m.token_endpoint_auth_methods_supported?.sort()).toEqual(['client_secret_basic', 'none']);
    expect(m.subject_types_supported).toContain('pairwise');
    expect(m.scopes_supported).toEqual(expect.arrayContaining(['openid', 'email', 'library', 'residency']));
    const jwks = (await (await config[oidc.customFetch]!(m.jwks_uri!, { method: 'GET', headers: {} } as never)).json()) as { keys: Record<string, unknown>[] };
    expect(jwks.keys.map((k) => k.alg).sort()).toEqual(['ES256', 'RS256']);
    // Public halves only; the private halves are in the database wrapped by the master key.
    for (const k of jwks.keys) expect(k.d).toBeUndefined();
    const stored = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_signing_keys').select(['kid', 'private_wrapped']).execute());
    expect(stored).toHaveLength(2);
    for (const s of stored) expect(s.private_wrapped.toString('utf8')).not.toContain('"d"');
  });

  let tokens: Awaited<ReturnType<typeof oidc.authorizationCodeGrant>>;
  const person = () => new Client(t.app, tenant.hosts[0]!);
  let alice: Client;

  it('code + PKCE through Guichet sign-in and consent: a valid ID token with a pairwise subject, userinfo with the consented claims only', async () => {
    alice = person();
    const req = authRequest('openid email library');
    const back = await signInAndConsent(alice, await req.url(), { uncheck: [] });
    expect(back.origin + back.pathname).toBe(rp.redirectUri);
    expect(back.searchParams.get('code')).toBeTruthy();
    tokens = await oidc.authorizationCodeGrant(config, back, { pkceCodeVerifier: req.verifier, expectedState: req.state, expectedNonce: req.nonce });
    const claims = tokens.claims()!;
    expect(claims.iss).toBe(issuer);
    expect(claims.aud).toBe(rp.clientId);
    expect(claims.sub).not.toBe(parentId);
    expect(claims.sub).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(claims.amr).toEqual(['pwd']);
    expect(tokens.refresh_token).toBeTruthy();
    const info = await oidc.fetchUserInfo(config, tokens.access_token, claims.sub);
    expect(info.email).toBe(EMAIL);
    // The lapsed one is not released, nor the residency (a scope this client may not even ask for).
    expect(info.entitlements).toEqual([{ scope: 'library', type: 'library.patron', value: 'reseau-biblio-x', valid_until: '2099-12-31' }]);
    expect(info).not.toHaveProperty('locale');

    const events = await auditActions();
    const names = events.map((e) => e.action);
    expect(names).toEqual(expect.arrayContaining(['oidc.consent', 'oidc.authorization', 'oidc.token', 'oidc.userinfo', 'oidc.claims.release']));
    const release = events.filter((e) => e.action === 'oidc.claims.release').at(-1)!;
    expect(release.fields.sort()).toEqual(['email', 'email_verified', 'entitlements']);
    expect(release.target_ids).toEqual([rp.clientId]);
  });

  it('a tenant locked down at level 3 releases no personal claim (the subject only) until the level comes down', async () => {
    const setLevel = (level: number) => database.ownerDb().updateTable('tenants').set({ lockdown_level: level }).where('id', '=', tenant.id).execute();
    await setLevel(3);
    try {
      const info = await oidc.fetchUserInfo(config, tokens.access_token, tokens.claims()!.sub);
      expect(Object.keys(info)).toEqual(['sub']);
    } finally {
      await setLevel(0);
    }
    const again = await oidc.fetchUserInfo(config, tokens.access_token, tokens.claims()!.sub);
    expect(again.email).toBe(EMAIL);
  });

  it('the same person gets the same pairwise subject again (no consent asked twice)', async () => {
    const req = authRequest('openid');
    const back = await signInAndConsent(alice, await req.url(), { signedIn: true });
    const again = await oidc.authorizationCodeGrant(config, back, { pkceCodeVerifier: req.verifier, expectedState: req.state, expectedNonce: req.nonce });
    expect(again.claims()!.sub).toBe(tokens.claims()!.sub);
  });

  it('a person who unticks a scope does not release it', async () => {
    const bob = person();
    await createParent(t, tenant, 'bob@example.org');
    const req = authRequest('openid email library');
    let r = await follow(bob, (await req.url()).href.replace(/^http:\/\/[^/]+/, ''));
    const s = await bob.signIn('bob@example.org', PASSWORD);
    expect(s.status).toBe(303);
    r = await follow(bob, decodeURIComponent(r.path.split('return=')[1]!));
    const uid = /action="\/oidc\/interaction\/([^/"]+)\/consent"/.exec(r.body)![1]!;
    const p = await bob.post(`/oidc/interaction/${uid}/consent`, { decision: 'allow', scope: ['library'] });
    const back = new URL((await follow(bob, String(p.headers.location))).location!);
    const tk = await oidc.authorizationCodeGrant(config, back, { pkceCodeVerifier: req.verifier, expectedState: req.state, expectedNonce: req.nonce });
    const info = await oidc.fetchUserInfo(config, tk.access_token, tk.claims()!.sub);
    expect(info.email).toBeUndefined();
    expect(info.entitlements).toEqual([]);
  });

  it("the consent page shows the service's registered logo, and its CSP allows that origin only", async () => {
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('oidc_clients').set({ logo_uri: 'https://cdn.example.org/logo.png' }).where('client_id', '=', rp.clientId).execute());
    const gina = new Client(t.app, tenant.hosts[0]!);
    await createParent(t, tenant, 'gina@example.org');
    let r = await follow(gina, (await authRequest('openid email').url()).href.replace(/^http:\/\/[^/]+/, ''));
    await gina.signIn('gina@example.org', PASSWORD);
    r = await follow(gina, decodeURIComponent(r.path.split('return=')[1]!));
    expect(r.body).toMatch(/<img src="https:\/\/cdn.example.org\/logo.png" alt(="")? /);
    expect(String(gina.last!.headers['content-security-policy'])).toContain("img-src 'self' data: https://cdn.example.org;");
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('oidc_clients').set({ logo_uri: null }).where('client_id', '=', rp.clientId).execute());
  });

  it('refresh tokens rotate; a rotated one used again is refused and ends the whole grant', async () => {
    const first = tokens.refresh_token!;
    const second = await oidc.refreshTokenGrant(config, first);
    expect(second.refresh_token).toBeTruthy();
    expect(second.refresh_token).not.toBe(first);
    await expect(oidc.refreshTokenGrant(config, first)).rejects.toMatchObject({ error: 'invalid_grant' });
    // Reuse means theft: the legitimate holder's newer token dies with it.
    await expect(oidc.refreshTokenGrant(config, second.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    const events = await auditActions('oidc.refresh.reuse');
    expect(events).toHaveLength(1);
    expect(events[0]!.outcome).toBe('denied');
  });

  it('an expired refresh token is refused with invalid_grant', async () => {
    const req = authRequest('openid');
    const back = await signInAndConsent(alice, await req.url(), { signedIn: true });
    const tk = await oidc.authorizationCodeGrant(config, back, { pkceCodeVerifier: req.verifier, expectedState: req.state, expectedNonce: req.nonce });
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('oidc_payloads').set({ expires_at: new Date(Date.now() - 1000) }).where('model', '=', 'RefreshToken').execute());
    await expect(oidc.refreshTokenGrant(config, tk.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
  });

  it('the person sees the services they consented to and withdraws one: its tokens end, consent is asked again', async () => {
    const req = authRequest('openid email');
    const back = await signInAndConsent(alice, await req.url(), { signedIn: true });
    const tk = await oidc.authorizationCodeGrant(config, back, { pkceCodeVerifier: req.verifier, expectedState: req.state, expectedNonce: req.nonce });
    const page = await alice.get('/account/access-rights');
    expect(textOf(page.body)).toContain('Catalogue des bibliothèques');
    expect(textOf(page.body)).toContain('Abonné du réseau X');
    const grants = [...page.body.matchAll(/action="\/account\/access-rights\/grants\/([^/"]+)\/withdraw"/g)].map((m) => m[1]!);
    expect(grants.length).toBeGreaterThan(0);
    // Another person cannot withdraw it (and learns nothing).
    const bob = new Client(t.app, tenant.hosts[0]!);
    await bob.signIn('bob@example.org', PASSWORD);
    await bob.get('/account');
    expect((await bob.post(`/account/access-rights/grants/${grants[0]}/withdraw`)).status).toBe(404);
    await expect(oidc.fetchUserInfo(config, tk.access_token, tk.claims()!.sub)).resolves.toBeTruthy();
    for (const g of grants) expect((await alice.post(`/account/access-rights/grants/${g}/withdraw`)).status).toBe(303);
    expect(textOf((await alice.get('/account/access-rights')).body)).toContain('Vous n’avez autorisé aucun service');
    await expect(oidc.fetchUserInfo(config, tk.access_token, tk.claims()!.sub)).rejects.toBeTruthy();
    await expect(oidc.refreshTokenGrant(config, tk.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    const again = await follow(alice, (await authRequest('openid').url()).href.replace(/^http:\/\/[^/]+/, ''));
    expect(again.body).toContain('/consent"');
    const withdrawn = await auditActions('oidc.consent.withdraw');
    expect(withdrawn.filter((e) => e.outcome === 'success').length).toBe(grants.length);
    expect(withdrawn.some((e) => e.outcome === 'denied')).toBe(true);
  });

  it('RP-initiated logout asks the person, ends the provider session and the Guichet session, and returns to the registered address', async () => {
    const req = authRequest('openid');
    const back = await signInAndConsent(alice, await req.url(), { signedIn: true });
    const tk = await oidc.authorizationCodeGrant(config, back, { pkceCodeVerifier: req.verifier, expectedState: req.state, expectedNonce: req.nonce });
    const end = oidc.buildEndSessionUrl(config, { id_token_hint: tk.id_token!, post_logout_redirect_uri: rp.postLogoutRedirectUri, state: 'bye' });
    const page = await follow(alice, end.pathname + end.search);
    expect(page.status).toBe(200);
    expect(page.body).toContain('Oui, me déconnecter');
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(page.body)![1]!;
    const action = /<form method="post" action="(\/oidc\/session\/end\/confirm)"/.exec(page.body)![1]!;
    const done = await alice.post(action, { xsrf, logout: 'yes' });
    expect(done.status).toBe(303);
    expect(done.headers.location).toBe(`${rp.postLogoutRedirectUri}?state=bye`);
    // Guichet's own session is gone too.
    const account = await alice.get('/account');
    expect(account.status).toBe(303);
    expect(String(account.headers.location)).toMatch(/^\/signin/);
    // And the next authorization asks to sign in again.
    const next = await follow(alice, (await authRequest('openid').url()).href.replace(/^http:\/\/[^/]+/, ''));
    expect(next.path).toMatch(/^\/signin\?return=/);
    expect((await auditActions('oidc.logout')).some((e) => e.outcome === 'success' && e.details.signedOutEverywhere === true)).toBe(true);
  });

  it('a scope removed from a service stops at once: a refresh token issued before no longer brings its claims', async () => {
    const a = await createParent(t, tenant, `demandeur.${Date.now().toString(36)}@example.org`);
    const b = await createParent(t, tenant, `approbateur.${Date.now().toString(36)}@example.org`);
    const other = await insertActiveClient(t, tenant, { scopes: ['openid', 'email', 'profile'], requestedBy: a, approvedBy: b });
    const cfg = await rpConfig(issuer, port, other);
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const url = oidc.buildAuthorizationUrl(cfg, { redirect_uri: other.redirectUri, scope: 'openid email profile', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', state });
    const back = await signInAndConsent(person(), url);
    const tk = await oidc.authorizationCodeGrant(cfg, back, { pkceCodeVerifier: verifier, expectedState: state });
    const sub = tk.claims()!.sub;
    expect(await oidc.fetchUserInfo(cfg, tk.access_token, sub)).toMatchObject({ email: EMAIL });
    // The administrator takes e-mail away from the service (narrowing needs nobody else).
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('oidc_clients').set({ scopes: ['openid', 'profile'] }).where('client_id', '=', other.clientId).execute());
    const fresh = await oidc.refreshTokenGrant(cfg, tk.refresh_token!);
    const info = await oidc.fetchUserInfo(cfg, fresh.access_token, sub);
    expect(info.email).toBeUndefined();
    expect(info.locale).toBeTruthy();
    expect(await oidc.fetchUserInfo(cfg, tk.access_token, sub).catch(() => ({}))).not.toHaveProperty('email');
  });

  it('someone else signing in to Guichet on the same browser, then going to the service, stays signed in to Guichet', async () => {
    const browser = person();
    await signInAndConsent(browser, await authRequest('openid').url());
    // The first person's provider session is still alive (their Guichet session lives on): the next person signs in.
    const other = `voisine.${Date.now().toString(36)}@example.org`;
    await createParent(t, tenant, other);
    expect((await browser.signIn(other, PASSWORD)).status).toBe(303);
    // The provider ends the first person's provider session by itself, through a form that posts at once.
    const r = await follow(browser, (await authRequest('openid').url()).href.replace(/^http:\/\/[^/]+/, ''));
    expect(r.status).toBe(200);
    const action = /<form[^>]*action="([^"]+)"/.exec(r.body)?.[1];
    expect(action).toMatch(/\/oidc\/session\/end\/confirm$/);
    const fields = Object.fromEntries([...r.body.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
    expect(fields.logout).toBe('yes');
    const confirmed = await browser.post(new URL(action!, 'http://x').pathname, fields);
    expect(confirmed.status).toBe(303);
    // The person now signed in is still signed in to Guichet, and goes on to the service's consent.
    const account = await browser.get('/account');
    expect(account.status).toBe(200);
    const next = await follow(browser, String(confirmed.headers.location).replace(/^http:\/\/[^/]+/, ''));
    expect(next.body).toContain('Catalogue des bibliothèques');
  });

  it('prompt=login asks a person signed in more than a minute ago to confirm who they are, with Guichet\'s re-authentication page', async () => {
    const hana = new Client(t.app, tenant.hosts[0]!);
    await createParent(t, tenant, 'hana@example.org');
    const first = authRequest('openid');
    let r = await follow(hana, (await first.url()).href.replace(/^http:\/\/[^/]+/, ''));
    await hana.signIn('hana@example.org', PASSWORD);
    r = await follow(hana, decodeURIComponent(r.path.split('return=')[1]!));
    const uid = /action="\/oidc\/interaction\/([^/"]+)\/consent"/.exec(r.body)![1]!;
    await follow(hana, String((await hana.post(`/oidc/interaction/${uid}/consent`, { decision: 'allow' })).headers.location));
    t.setNow(new Date(Date.now() + 120_000));
    try {
      const req = authRequest('openid', { prompt: 'login' });
      r = await follow(hana, (await req.url()).href.replace(/^http:\/\/[^/]+/, ''));
      expect(r.path).toMatch(/^\/reauth\?return=%2Foidc%2Finteraction%2F/);
      const back = decodeURIComponent(/return=([^&]+)/.exec(r.path)![1]!);
      const p = await hana.post('/reauth', { password: PASSWORD, return: back });
      expect(p.status).toBe(303);
      const done = await follow(hana, String(p.headers.location));
      const tk = await oidc.authorizationCodeGrant(config, new URL(done.location!), { pkceCodeVerifier: req.verifier, expectedState: req.state, expectedNonce: req.nonce });
      expect(tk.claims()!.sub).toBeTruthy();
    } finally {
      t.setNow(null as never);
    }
  });
});

describe('bad input: the standard error, nothing issued, an audit event', () => {
  const tokensIssued = () => inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_payloads').select((eb) => eb.fn.countAll<string>().as('n')).where('model', 'in', ['AccessToken', 'RefreshToken', 'AuthorizationCode']).executeTakeFirstOrThrow());

  it('unknown client: an error page, no redirect, invalid_client recorded', async () => {
    const carol = new Client(t.app, tenant.hosts[0]!);
    const before = (await auditActions('oidc.authorization')).length;
    const r = await carol.get(`/oidc/auth?client_id=nobody-nobody-nobody&response_type=code&scope=openid&redirect_uri=${encodeURIComponent(rp.redirectUri)}&code_challenge=${'a'.repeat(43)}&code_challenge_method=S256`);
    expect(r.status).toBe(400);
    expect(r.headers.location).toBeUndefined();
    expect(r.body).toContain('invalid_client');
    expect(r.body).toContain('<html lang="fr">');
    const after = await auditActions('oidc.authorization');
    expect(after.length).toBe(before + 1);
    expect(after.at(-1)).toMatchObject({ outcome: 'denied', details: expect.objectContaining({ error: 'invalid_client' }) });
  });

  it('a redirect URI that is not exactly a registered one: an error page, never a redirect there', async () => {
    const carol = new Client(t.app, tenant.hosts[0]!);
    for (const bad of [`${rp.redirectUri}/`, `${rp.redirectUri}?x=1`, 'https://evil.example/callback', rp.redirectUri.replace('https', 'http')]) {
      const u = new URL(await authRequest('openid').url());
      u.searchParams.set('redirect_uri', bad);
      const r = await carol.get(u.pathname + u.search);
      expect(r.status).toBe(400);
      expect(r.headers.location).toBeUndefined();
      expect(r.body).toContain('invalid_redirect_uri');
    }
    const u = new URL(await authRequest('openid').url());
    u.searchParams.delete('redirect_uri');
    expect((await carol.get(u.pathname + u.search)).status).toBe(400);
    const last = (await auditActions('oidc.authorization')).at(-1)!;
    expect(last.outcome).toBe('denied');
  });

  it('no PKCE challenge, or a plain one: invalid_request sent back to the client', async () => {
    const carol = new Client(t.app, tenant.hosts[0]!);
    const u = new URL(await authRequest('openid').url());
    u.searchParams.delete('code_challenge');
    u.searchParams.delete('code_challenge_method');
    let r = await carol.get(u.pathname + u.search);
    expect(r.status).toBe(303);
    let loc = new URL(String(r.headers.location));
    expect(loc.origin + loc.pathname).toBe(rp.redirectUri);
    expect(loc.searchParams.get('error')).toBe('invalid_request');
    expect(loc.searchParams.get('code')).toBeNull();
    u.searchParams.set('code_challenge', 'x'.repeat(43));
    u.searchParams.set('code_challenge_method', 'plain');
    r = await carol.get(u.pathname + u.search);
    loc = new URL(String(r.headers.location));
    expect(loc.searchParams.get('error')).toBe('invalid_request');
  });

  it('implicit or hybrid response types are refused', async () => {
    const carol = new Client(t.app, tenant.hosts[0]!);
    const u = new URL(await authRequest('openid').url());
    u.searchParams.set('response_type', 'id_token');
    const r = await carol.get(u.pathname + u.search);
    const loc = r.headers.location ? new URL(String(r.headers.location).replace('#', '?')) : null;
    expect(loc?.searchParams.get('error') ?? r.body).toMatch(/unsupported_response_type/);
  });

  it('a wrong PKCE verifier, then a replayed code: invalid_grant, nothing issued, the first exchange revoked', async () => {
    const dave = new Client(t.app, tenant.hosts[0]!);
    const req = authRequest('openid');
    const back = await signInAndConsent(dave, await req.url());
    const before = Number((await tokensIssued()).n);
    await expect(oidc.authorizationCodeGrant(config, back, { pkceCodeVerifier: oidc.randomPKCECodeVerifier(), expectedState: req.state, expectedNonce: req.nonce })).rejects.toMatchObject({ error: 'invalid_grant' });
    expect(Number((await tokensIssued()).n)).toBe(before);

    const req2 = authRequest('openid');
    const back2 = await signInAndConsent(dave, await req2.url(), { signedIn: true });
    const ok = await oidc.authorizationCodeGrant(config, back2, { pkceCodeVerifier: req2.verifier, expectedState: req2.state, expectedNonce: req2.nonce });
    await expect(oidc.authorizationCodeGrant(config, back2, { pkceCodeVerifier: req2.verifier, expectedState: req2.state, expectedNonce: req2.nonce })).rejects.toMatchObject({ error: 'invalid_grant' });
    // A replayed code revokes what the first exchange issued.
    await expect(oidc.fetchUserInfo(config, ok.access_token, ok.claims()!.sub)).rejects.toBeTruthy();
    const denied = (await auditActions('oidc.token')).filter((e) => e.outcome === 'denied');
    expect(denied.length).toBeGreaterThanOrEqual(3);
    expect(denied.every((e) => e.details.error === 'invalid_grant')).toBe(true);
  });

  it('the token endpoint without a verifier at all: invalid_grant', async () => {
    const erin = new Client(t.app, tenant.hosts[0]!);
    await createParent(t, tenant, 'erin@example.org');
    const req = authRequest('openid');
    let r = await follow(erin, (await req.url()).href.replace(/^http:\/\/[^/]+/, ''));
    await erin.signIn('erin@example.org', PASSWORD);
    r = await follow(erin, decodeURIComponent(r.path.split('return=')[1]!));
    const uid = /action="\/oidc\/interaction\/([^/"]+)\/consent"/.exec(r.body)![1]!;
    const p = await erin.post(`/oidc/interaction/${uid}/consent`, { decision: 'allow' });
    const back = new URL((await follow(erin, String(p.headers.location))).location!);
    const res = await config[oidc.customFetch]!(config.serverMetadata().token_endpoint!, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${rp.clientId}:${rp.secret}`).toString('base64')}` },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: back.searchParams.get('code')!, redirect_uri: rp.redirectUri }).toString(),
      redirect: 'manual',
    } as never);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toBe('invalid_grant');
  });

  it('a scope the client may not ask for: invalid_scope, back to the client', async () => {
    const carol = new Client(t.app, tenant.hosts[0]!);
    const r = await carol.get((await authRequest('openid residency').url()).href.replace(/^http:\/\/[^/]+/, ''));
    expect(r.status).toBe(303);
    const loc = new URL(String(r.headers.location));
    expect(loc.searchParams.get('error')).toBe('invalid_scope');
  });

  it('a person who refuses consent: access_denied to the client, recorded', async () => {
    const fred = new Client(t.app, tenant.hosts[0]!);
    await createParent(t, tenant, 'fred@example.org');
    const req = authRequest('openid email');
    let r = await follow(fred, (await req.url()).href.replace(/^http:\/\/[^/]+/, ''));
    await fred.signIn('fred@example.org', PASSWORD);
    r = await follow(fred, decodeURIComponent(r.path.split('return=')[1]!));
    const uid = /action="\/oidc\/interaction\/([^/"]+)\/consent"/.exec(r.body)![1]!;
    const p = await fred.post(`/oidc/interaction/${uid}/consent`, { decision: 'deny' });
    const back = new URL((await follow(fred, String(p.headers.location))).location!);
    expect(back.searchParams.get('error')).toBe('access_denied');
    expect((await auditActions('oidc.consent')).some((e) => e.outcome === 'denied')).toBe(true);
  });

  it('a wrong client secret: invalid_client, nothing issued', async () => {
    const bad = await rpConfig(issuer, port, { ...rp, secret: 'not-the-secret' });
    await expect(oidc.refreshTokenGrant(bad, 'whatever')).rejects.toMatchObject({ status: 401, cause: [expect.objectContaining({ parameters: expect.objectContaining({ error: 'invalid_client' }) })] });
    expect((await auditActions('oidc.token')).at(-1)).toMatchObject({ outcome: 'denied', details: expect.objectContaining({ error: 'invalid_client' }) });
  });
});
