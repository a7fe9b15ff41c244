import { sql } from 'kysely';
import { createPublicKey, verify } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { oidcCommand } from '../../src/oidc/cli.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { createAdmin, createParent, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { follow, freePort, insertActiveClient, rpConfig, type RegisteredClient } from './helpers.ts';

/**
 * Signing-key rotation (the CLI) with a published JWKS, and back-channel
 * logout: a relying party that registered a back-channel address is told,
 * with a signed logout token, when the person signs out.
 */
let database: TestDatabase;
let t: TestApp;
let port: number;
let tenant: Tenant;
let issuer: string;
let rp: RegisteredClient;
let config: oidc.Configuration;
let bcl: Server;
const received: string[] = [];
const EMAIL = 'usager@example.org';

beforeAll(async () => {
  database = await createTestDatabase();
  port = await freePort();
  t = await startTestApp(database, { port });
  await t.app.listen({ port, host: '127.0.0.1' });
  tenant = await tenantFor(t);
  issuer = `http://${tenant.hosts[0]}:${port}/oidc`;
  await createParent(t, tenant, EMAIL);
  const a = await createParent(t, tenant, 'demandeur@example.org');
  const b = await createParent(t, tenant, 'approbateur@example.org');
  bcl = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString('utf8')));
    req.on('end', () => {
      received.push(new URLSearchParams(body).get('logout_token') ?? '');
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((r) => bcl.listen(0, '127.0.0.1', r));
  rp = await insertActiveClient(t, tenant, { scopes: ['openid', 'email'], requestedBy: a, approvedBy: b, backchannelLogoutUri: `http://127.0.0.1:${(bcl.address() as AddressInfo).port}/backchannel-logout` });
  config = await rpConfig(issuer, port, rp);
}, 120_000);

afterAll(async () => {
  await new Promise((r) => bcl?.close(r));
  await t?.close();
  await database?.close();
});

async function signIn(person: Client, signedIn = false) {
  const verifier = oidc.randomPKCECodeVerifier();
  const url = oidc.buildAuthorizationUrl(config, { redirect_uri: rp.redirectUri, scope: 'openid email', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
  let r = await follow(person, url.pathname + url.search);
  if (!signedIn) {
    await person.signIn(EMAIL, PASSWORD);
    r = await follow(person, decodeURIComponent(r.path.split('return=')[1]!));
  }
  if (!r.location) {
    const uid = /action="\/oidc\/interaction\/([^/"]+)\/consent"/.exec(r.body)![1]!;
    const p = await person.post(`/oidc/interaction/${uid}/consent`, { decision: 'allow', scope: 'email' });
    r = await follow(person, String(p.headers.location));
  }
  return oidc.authorizationCodeGrant(config, new URL(r.location!), { pkceCodeVerifier: verifier });
}

const header = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[0]!, 'base64url').toString('utf8')) as { kid: string; alg: string };
const payload = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
const jwks = async () => JSON.parse((await new Client(t.app, tenant.hosts[0]!).get('/oidc/jwks')).body) as { keys: (Record<string, string> & { kid: string })[] };

/** The published keys once they satisfy `ok`, or as they are after 30 s: a server looks again every five seconds, so the test asks until it has. */
async function jwksOnce(ok: (keys: { kid: string }[]) => boolean): Promise<Awaited<ReturnType<typeof jwks>>> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const published = await jwks();
    if (ok(published.keys) || Date.now() > deadline) return published;
    await new Promise((r) => setTimeout(r, 200));
  }
}

function verifyRs256(jwt: string, keys: { kid: string }[]): boolean {
  const [h, p, s] = jwt.split('.') as [string, string, string];
  const jwk = keys.find((k) => k.kid === header(jwt).kid);
  if (!jwk) return false;
  return verify('sha256', Buffer.from(`${h}.${p}`), createPublicKey({ key: jwk as never, format: 'jwk' }), Buffer.from(s, 'base64url'));
}

const cli = (args: string[], out: string[]) =>
  oidcCommand(args, {
    config: t.deps.config,
    withDatabase: (fn) => fn(database.db),
    tenant: async () => tenant,
    origin: (command) => ({ actorAccountId: null, actorRoles: ['system:cli'], ip: null, userAgent: command, requestId: null }),
    usage: (m) => new Error(m),
    out: (text) => out.push(text),
    keys: t.deps.keys,
  });

describe('signing keys', () => {
  it('rotate: new tokens are signed with the new key, the old key stays published until the next rotation', async () => {
    const person = new Client(t.app, tenant.hosts[0]!);
    const before = await signIn(person);
    const oldKid = header(before.id_token!).kid;
    expect((await jwks()).keys.map((k) => k.kid)).toContain(oldKid);

    const out: string[] = [];
    expect(await cli(['rotate-keys', '--tenant', tenant.slug], out)).toBe(0);
    expect(out.join('')).toMatch(/new signing keys/);
    // Running servers look again within five seconds.
    const published = await jwksOnce((keys) => keys.length === 4);
    expect(published.keys).toHaveLength(4);
    expect(published.keys.map((k) => k.kid)).toContain(oldKid);
    expect(verifyRs256(before.id_token!, published.keys)).toBe(true);

    const after = await signIn(person, true);
    const newKid = header(after.id_token!).kid;
    expect(newKid).not.toBe(oldKid);
    expect(verifyRs256(after.id_token!, published.keys)).toBe(true);

    expect(await cli(['rotate-keys', '--tenant', tenant.slug], [])).toBe(0);
    const again = (await jwksOnce((keys) => !keys.some((k) => k.kid === oldKid))).keys.map((k) => k.kid);
    expect(again).not.toContain(oldKid);
    expect(again).toContain(newKid);

    const listing: string[] = [];
    await cli(['keys', '--tenant', tenant.slug], listing);
    expect(listing.join('')).toMatch(new RegExp(`${oldKid}\\s+RS256\\s+retired`));
    const audit = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select('action').where('action', '=', 'oidc.keys.rotate').execute());
    expect(audit).toHaveLength(2);
  });

  it('the private halves are wrapped by the key provider and bound to their tenant and kid', async () => {
    const rows = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_signing_keys').select(['kid', 'private_wrapped']).execute());
    for (const r of rows) {
      expect(r.private_wrapped.toString('latin1')).not.toMatch(/"d"|"kty"/);
      await expect(t.deps.keys.unwrap(r.private_wrapped, `oidc-signing-key:${tenant.id}:another-kid`)).rejects.toThrow();
      const jwk = JSON.parse((await t.deps.keys.unwrap(r.private_wrapped, `oidc-signing-key:${tenant.id}:${r.kid}`)).toString('utf8')) as { d?: string };
      expect(jwk.d).toBeTruthy();
    }
  });

  it('bad usage is refused', async () => {
    await expect(cli(['rotate-keys'], [])).rejects.toThrow(/usage/);
    await expect(cli(['spin'], [])).rejects.toThrow(/usage/);
  });
});

describe('back-channel logout', () => {
  it('signing out tells the relying party with a signed logout token naming the pairwise subject and the session', async () => {
    const person = new Client(t.app, tenant.hosts[0]!);
    const tokens = await signIn(person);
    const sub = tokens.claims()!.sub;
    const sid = tokens.claims()!.sid;
    expect(sid).toBeTruthy();
    const end = oidc.buildEndSessionUrl(config, { id_token_hint: tokens.id_token!, post_logout_redirect_uri: rp.postLogoutRedirectUri });
    const page = await follow(person, end.pathname + end.search);
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(page.body)![1]!;
    const done = await person.post('/oidc/session/end/confirm', { xsrf, logout: 'yes' });
    expect(done.status).toBe(303);
    expect(received).toHaveLength(1);
    const token = received[0]!;
    expect(verifyRs256(token, (await jwks()).keys)).toBe(true);
    const claims = payload(token);
    expect(claims).toMatchObject({ iss: issuer, aud: rp.clientId, sub, sid });
    expect(claims.events).toEqual({ 'http://schemas.openid.net/event/backchannel-logout': {} });
    expect(claims.nonce).toBeUndefined();
    const audit = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['action', 'outcome']).where('action', '=', 'oidc.logout').execute());
    expect(audit.some((e) => e.outcome === 'success')).toBe(true);
  });

  it('signing out of Guichet itself ends the provider session: the service is told, session-bound tokens stop working', async () => {
    received.length = 0;
    const person = new Client(t.app, tenant.hosts[0]!);
    const tokens = await signIn(person);
    await expect(oidc.fetchUserInfo(config, tokens.access_token, tokens.claims()!.sub)).resolves.toBeTruthy();
    await person.get('/account');
    const out = await person.post('/signout');
    expect(out.status).toBe(303);
    expect(received).toHaveLength(1);
    expect(payload(received[0]!)).toMatchObject({ sub: tokens.claims()!.sub, sid: tokens.claims()!.sid });
    await expect(oidc.fetchUserInfo(config, tokens.access_token, tokens.claims()!.sub)).rejects.toBeTruthy();
    await expect(oidc.refreshTokenGrant(config, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    const audit = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['details']).where('action', '=', 'oidc.logout').orderBy('seq', 'desc').limit(1).executeTakeFirstOrThrow());
    expect(audit.details).toMatchObject({ via: 'guichet_signout', backchannel: 1 });
  });

  it('when every Guichet session of the person has ended (an administrator ended them), the services\' tokens stop', async () => {
    const person = new Client(t.app, tenant.hosts[0]!);
    const tokens = await signIn(person);
    await expect(oidc.fetchUserInfo(config, tokens.access_token, tokens.claims()!.sub)).resolves.toBeTruthy();
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('sessions').set({ revoked_at: new Date() }).where('revoked_at', 'is', null).execute());
    await expect(oidc.fetchUserInfo(config, tokens.access_token, tokens.claims()!.sub)).rejects.toBeTruthy();
    await expect(oidc.refreshTokenGrant(config, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
  });

  it('a Guichet session that merely runs out: the minute\'s sweep tells each service, once, with no request to set it off', async () => {
    const person = new Client(t.app, tenant.hosts[0]!);
    const tokens = await signIn(person);
    const sid = tokens.claims()!.sid;
    const personId = (await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('accounts').select('id').where('email', '=', EMAIL).executeTakeFirstOrThrow())).id;
    received.length = 0;
    // Nothing has ended: the sweep tells nobody.
    await t.app.endLapsedOidcSessions();
    expect(received).toHaveLength(0);
    // The session's time runs out (an idle or absolute timeout), and nobody sends a request.
    const past = new Date(t.deps.clock().getTime() - 1000);
    // (The application's role may only revoke a session, not move its end: the owner plays the passing time.)
    await database.ownerDb().updateTable('sessions').set({ expires_at: past }).where('tenant_id', '=', tenant.id).where('account_id', '=', personId).where('revoked_at', 'is', null).execute();
    const r = await t.app.endLapsedOidcSessions();
    // Every provider session of the person ends (the earlier tests' sign-ins too), each service told for each.
    expect(r.failed).toBe(0);
    expect(r.told).toBe(r.sessions);
    expect(r.sessions).toBeGreaterThanOrEqual(1);
    const mine = received.filter((x) => payload(x).sid === sid);
    expect(mine).toHaveLength(1);
    expect(verifyRs256(mine[0]!, (await jwks()).keys)).toBe(true);
    expect(payload(mine[0]!)).toMatchObject({ iss: issuer, aud: rp.clientId, sub: tokens.claims()!.sub, sid });
    await expect(oidc.refreshTokenGrant(config, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    const audit = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['details', 'actor_roles']).where('action', '=', 'oidc.logout').orderBy('seq', 'desc').limit(1).executeTakeFirstOrThrow());
    expect(audit).toMatchObject({ actor_roles: ['system:oidc-sweep'], details: expect.objectContaining({ via: 'sessions_ended', account: personId, backchannel: 1 }) });
    // Told once: the next sweep finds nothing left.
    expect(await t.app.endLapsedOidcSessions()).toMatchObject({ sessions: 0, told: 0 });
    expect(received.filter((x) => payload(x).sid === sid)).toHaveLength(1);
  });

  it('a Guichet session left idle past its limit: the services\' tokens stop, and the sweep tells each service', async () => {
    const person = new Client(t.app, tenant.hosts[0]!);
    const tokens = await signIn(person);
    const sid = tokens.claims()!.sid;
    const personId = (await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('accounts').select('id').where('email', '=', EMAIL).executeTakeFirstOrThrow())).id;
    await expect(oidc.fetchUserInfo(config, tokens.access_token, tokens.claims()!.sub)).resolves.toBeTruthy();
    received.length = 0;
    const now = t.deps.clock();
    const seen = () => inTenant(database.db, tenant.id, async (trx) => (await trx.selectFrom('sessions').select('last_seen_at').where('account_id', '=', personId).where('revoked_at', 'is', null).orderBy('last_seen_at', 'desc').executeTakeFirstOrThrow()).last_seen_at);
    // Using the service is activity: five minutes after the last Guichet page, a refresh keeps the session alive.
    await database.ownerDb().updateTable('sessions').set({ last_seen_at: new Date(now.getTime() - 5 * 60_000) }).where('tenant_id', '=', tenant.id).where('account_id', '=', personId).where('revoked_at', 'is', null).execute();
    const kept = await oidc.refreshTokenGrant(config, tokens.refresh_token!);
    expect((await seen()).getTime()).toBeGreaterThan(now.getTime() - 60_000);
    // Nobody touched Guichet or the service for longer than the session's idle limit (the absolute end is hours away).
    await database
      .ownerDb()
      .updateTable('sessions')
      .set({ last_seen_at: sql<Date>`${now}::timestamptz - (idle_timeout_seconds + 60) * interval '1 second'` })
      .where('tenant_id', '=', tenant.id)
      .where('account_id', '=', personId)
      .where('revoked_at', 'is', null)
      .execute();
    expect((await person.get('/account')).status).not.toBe(200);
    await expect(oidc.refreshTokenGrant(config, kept.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    const r = await t.app.endLapsedOidcSessions();
    expect(r.failed).toBe(0);
    expect(r.sessions).toBeGreaterThanOrEqual(1);
    expect(received.filter((x) => payload(x).sid === sid)).toHaveLength(1);
  });

  it('an administrator ends the person\'s sessions, or suspends the account: each service the person signed into is told at once, by back-channel', async () => {
    const person = new Client(t.app, tenant.hosts[0]!);
    const tokens = await signIn(person);
    const sid = tokens.claims()!.sid;
    const adminEmail = `admin.${Date.now().toString(36)}@example.org`;
    await createAdmin(t, tenant, adminEmail);
    const admin = new Client(t.app, tenant.hosts[0]!);
    expect((await admin.signIn(adminEmail, PASSWORD)).status).toBe(303);
    const personId = (await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('accounts').select('id').where('email', '=', EMAIL).executeTakeFirstOrThrow())).id;
    received.length = 0;
    await admin.get('/admin');
    const ended = await admin.post(`/admin/accounts/${personId}/sessions/end`, {});
    expect(ended.status).toBe(303);
    // The relying party is told after the answer: wait for it, generously (a loaded machine).
    const mine = () => received.filter((x) => payload(x).sid === sid);
    for (let i = 0; i < 100 && !mine().length; i++) await new Promise((r) => setTimeout(r, 100));
    expect(mine()).toHaveLength(1);
    expect(verifyRs256(mine()[0]!, (await jwks()).keys)).toBe(true);
    expect(payload(mine()[0]!)).toMatchObject({ iss: issuer, aud: rp.clientId, sub: tokens.claims()!.sub, sid });
    await expect(oidc.refreshTokenGrant(config, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    const audit = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['details', 'outcome', 'target_ids']).where('action', '=', 'oidc.logout').orderBy('seq', 'desc').limit(1).executeTakeFirstOrThrow());
    expect(audit).toMatchObject({ outcome: 'success', target_ids: [rp.clientId], details: expect.objectContaining({ via: 'sessions_ended', account: personId, backchannel: 1 }) });
    // Told once: another request finds nothing left to end.
    await admin.post(`/admin/accounts/${personId}/sessions/end`, {});
    await new Promise((r) => setTimeout(r, 300));
    expect(mine()).toHaveLength(1);

    // A suspended account: the same, whatever suspended it (here the database), at the tenant's next request.
    const again = new Client(t.app, tenant.hosts[0]!);
    const second = await signIn(again);
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('accounts').set({ status: 'suspended' }).where('id', '=', personId).execute());
    expect((await admin.post('/account/sessions/end-others', {})).status).toBe(303);
    const theirs = () => received.filter((x) => payload(x).sid === second.claims()!.sid);
    for (let i = 0; i < 100 && !theirs().length; i++) await new Promise((r) => setTimeout(r, 100));
    expect(theirs()).toHaveLength(1);
  });
});
