import { sql } from 'kysely';
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { sweepExpired } from '../../src/oidc/adapter.ts';
import { listEntitlements } from '../../src/oidc/entitlements.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { actorByEmail, createAdmin, createParent, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { enrolTotp } from '../helpers/factors.ts';
import { grantRole } from '../records/people.ts';
import { follow, freePort, rpConfig } from './helpers.ts';

/**
 * The console: tenant administrators register relying parties (dual control
 * for those that may receive personal claims), manage access rights, and a
 * person sees their own. Then tenant isolation of everything OpenID Connect.
 */
let database: TestDatabase;
let t: TestApp;
let port: number;
let tenant: Tenant;
let other: Tenant;
let admin1: Client;
let admin2: Client;
let admin1Id: string;
const A1 = 'admin1@example.org';
const A2 = 'admin2@example.org';
const PATRON = 'patron@example.org';

beforeAll(async () => {
  database = await createTestDatabase();
  port = await freePort();
  t = await startTestApp(database, { port });
  await t.app.listen({ port, host: '127.0.0.1' });
  tenant = await tenantFor(t);
  other = await tenantFor(t);
  admin1Id = await createAdmin(t, tenant, A1);
  const requester = await createParent(t, tenant, 'requester@example.org');
  const admin2Id = await createParent(t, tenant, A2);
  await grantRole(t, tenant, admin2Id, 'tenant_admin', requester, admin1Id);
  await enrolTotp(t.deps, tenant, admin2Id, A2);
  await createParent(t, tenant, PATRON);
  admin1 = new Client(t.app, tenant.hosts[0]!);
  admin2 = new Client(t.app, tenant.hosts[0]!);
  expect((await admin1.signIn(A1, PASSWORD)).status).toBe(303);
  expect((await admin2.signIn(A2, PASSWORD)).status).toBe(303);
}, 120_000);

afterAll(async () => {
  await t?.close();
  await database?.close();
});

const events = (tenantId: string, action: string) =>
  inTenant(database.db, tenantId, (trx) => trx.selectFrom('audit_events').select(['outcome', 'details', 'actor_account_id', 'target_ids']).where('action', '=', action).orderBy('seq').execute());

/** Approves as a person does: from the client's page, with the version of it they read. */
async function approveAsReviewed(c: Client, clientId: string, decision: 'approve' | 'approveScopes' = 'approve') {
  const page = await c.get(`/admin/oidc/clients/${clientId}`);
  const reviewed = /name="reviewed" value="([^"]+)"/.exec(page.body)?.[1] ?? '';
  return c.post(`/admin/oidc/clients/${clientId}/decision`, { decision, reviewed });
}

async function register(c: Client, fields: Record<string, string | string[]>) {
  await c.get('/admin/oidc/clients/new');
  return c.post('/admin/oidc/clients', { kind: 'confidential', redirectUris: 'https://ebooks.example.org/cb', ...fields });
}

describe('registering a relying party in the console', () => {
  let clientId: string;
  let secret: string;

  it('a client that may receive personal claims waits for a second administrator; its secret is shown once', async () => {
    const r = await register(admin1, { name: 'Livres numériques', scope: ['email'], extraScopes: 'library' });
    expect(r.status).toBe(201);
    clientId = /client_id\)<\/dt><dd[^>]*><code>([A-Za-z0-9_-]+)<\/code>/.exec(r.body)?.[1] ?? /<code>([A-Za-z0-9_-]{24})<\/code>/.exec(r.body)![1]!;
    secret = [...r.body.matchAll(/<code>([A-Za-z0-9_-]{43})<\/code>/g)][0]![1]!;
    expect(textOf(r.body)).toContain('deuxième administrateur');
    const row = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_clients').selectAll().where('client_id', '=', clientId).executeTakeFirstOrThrow());
    expect(row).toMatchObject({ status: 'pending', personal: true, scopes: ['openid', 'email', 'library'] });
    // Stored wrapped, never in clear.
    expect(row.secret_wrapped!.toString('latin1')).not.toContain(secret);
    // The detail page never shows it again.
    expect((await admin1.get(`/admin/oidc/clients/${clientId}`)).body).not.toContain(secret);

    // Pending: the provider does not know it.
    const person = new Client(t.app, tenant.hosts[0]!);
    const auth = await person.get(`/oidc/auth?client_id=${clientId}&response_type=code&scope=openid&redirect_uri=${encodeURIComponent('https://ebooks.example.org/cb')}&code_challenge=${'a'.repeat(43)}&code_challenge_method=S256`);
    expect(auth.status).toBe(400);
    expect(auth.body).toContain('invalid_client');
  });

  it('the requester cannot approve it, in the console or in the database', async () => {
    const page = await admin1.get(`/admin/oidc/clients/${clientId}`);
    expect(page.body).not.toContain('value="approve"');
    const r = await admin1.post(`/admin/oidc/clients/${clientId}/decision`, { decision: 'approve' });
    expect(r.status).toBe(403);
    expect((await events(tenant.id, 'oidc.client.approve')).at(-1)).toMatchObject({ outcome: 'denied', details: { reason: 'self_approval' } });
    await expect(
      inTenant(database.db, tenant.id, (trx) => trx.updateTable('oidc_clients').set({ status: 'active', approved_by: admin1Id, approved_at: new Date() }).where('client_id', '=', clientId).execute()),
    ).rejects.toThrow(/second administrator/);
  });

  it('an administrator who edits a pending client becomes its requester: the other one approves what it has become', async () => {
    const r = await register(admin1, { name: 'Prêt numérique', scope: ['email'] });
    const id = /<code>([A-Za-z0-9_-]{24})<\/code>/.exec(r.body)![1]!;
    await admin2.get(`/admin/oidc/clients/${id}/edit`);
    const edit = await admin2.post(`/admin/oidc/clients/${id}/edit`, { name: 'Prêt numérique', redirectUris: 'https://autre.example.net/cb', scope: ['email', 'offline_access'] });
    expect(edit.status).toBe(303);
    const admin2Id = (await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('accounts').select('id').where('email', '=', A2).executeTakeFirstOrThrow())).id;
    const row = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_clients').select(['status', 'requested_by', 'redirect_uris']).where('client_id', '=', id).executeTakeFirstOrThrow());
    expect(row).toMatchObject({ status: 'pending', requested_by: admin2Id, redirect_uris: ['https://autre.example.net/cb'] });
    // The editor cannot approve it; the first administrator, who now sees what it has become, can.
    expect((await approveAsReviewed(admin2, id)).status).toBe(403);
    expect((await events(tenant.id, 'oidc.client.approve')).at(-1)).toMatchObject({ outcome: 'denied', details: { reason: 'self_approval' } });
    // The database holds the same: an edit in a transaction naming its actor must make that actor the requester.
    await expect(
      inTenant(database.db, tenant.id, (trx) => trx.updateTable('oidc_clients').set({ redirect_uris: ['https://ailleurs.example.net/cb'] }).where('client_id', '=', id).execute(), admin1Id),
    ).rejects.toThrow(/becomes its requester/);
    expect((await approveAsReviewed(admin1, id)).status).toBe(303);
    expect((await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_clients').select(['status', 'approved_by']).where('client_id', '=', id).executeTakeFirstOrThrow()))).toMatchObject({ status: 'active', approved_by: admin1Id });
  });

  it('a second administrator approves it, and then it works with openid-client', async () => {
    const page = await admin2.get(`/admin/oidc/clients/${clientId}`);
    expect(page.body).toContain('value="approve"');
    const r = await approveAsReviewed(admin2, clientId);
    expect(r.status).toBe(303);
    expect((await events(tenant.id, 'oidc.client.approve')).at(-1)).toMatchObject({ outcome: 'success' });
    const config = await rpConfig(`http://${tenant.hosts[0]}:${port}/oidc`, port, { clientId, secret, redirectUri: 'https://ebooks.example.org/cb', postLogoutRedirectUri: '' });
    expect(config.serverMetadata().scopes_supported).toContain('library');
    const verifier = oidc.randomPKCECodeVerifier();
    const url = oidc.buildAuthorizationUrl(config, { redirect_uri: 'https://ebooks.example.org/cb', scope: 'openid email', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
    const person = new Client(t.app, tenant.hosts[0]!);
    const r2 = await follow(person, url.pathname + url.search);
    expect(r2.path).toMatch(/^\/signin\?return=/);
  });

  it('a client without personal claims is active at once', async () => {
    const r = await register(admin1, { name: 'Portail municipal', kind: 'public' });
    expect(r.status).toBe(201);
    expect(textOf(r.body)).toContain('Ce service est actif');
    expect(r.body).not.toMatch(/<code>[A-Za-z0-9_-]{43}<\/code>/);
    const rows = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_clients').select(['status', 'secret_wrapped']).where('name', '=', 'Portail municipal').execute());
    expect(rows).toEqual([{ status: 'active', secret_wrapped: null }]);
  });

  it('bad input: a clear error, nothing registered', async () => {
    const before = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_clients').select('client_id').execute());
    for (const redirectUris of ['http://ebooks.example.org/cb', 'https://a.example.org/cb https://b.example.org/cb', 'https://x.example.org/cb#frag', 'javascript:alert(1)', '']) {
      const r = await register(admin1, { name: 'X', redirectUris });
      expect(r.status, redirectUris).toBe(400);
      expect(r.body).toContain('Erreur');
    }
    expect((await register(admin1, { name: '', scope: 'email' })).status).toBe(400);
    expect((await register(admin1, { name: 'Y', extraScopes: 'Not A Scope' })).status).toBe(400);
    expect((await register(admin1, { name: '<script>alert(1)</script>', extraScopes: 'ok' })).body).not.toContain('<script>alert(1)');
    const after = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_clients').select('client_id').execute());
    expect(after.length).toBe(before.length + 1); // the escaped name is a valid registration
  });

  it('someone who is not an administrator is refused, and recorded', async () => {
    const patron = new Client(t.app, tenant.hosts[0]!);
    await patron.signIn(PATRON, PASSWORD);
    expect((await patron.get('/admin/oidc/clients')).status).toBe(403);
    await patron.get('/account');
    expect((await patron.post('/admin/oidc/clients', { name: 'Z', redirectUris: 'https://z.example.org/cb' })).status).toBe(403);
    expect((await events(tenant.id, 'oidc.client.create')).some((e) => e.outcome === 'denied')).toBe(true);
  });

  it('the console reads in English too', async () => {
    const r = await admin1.get('/admin/oidc/clients?lang=en');
    expect(r.body).toContain('Connected services (OpenID Connect)');
    expect(r.body).toContain('<html lang="en">');
  });

  it('disabling a client ends its tokens at once, and asks a session older than five minutes who it is first', async () => {
    // Six minutes on: the request goes to the re-authentication page, and the client stays as it was.
    t.setNow(new Date(Date.now() + 6 * 60_000));
    try {
      await admin2.get(`/admin/oidc/clients/${clientId}`);
      const stale = await admin2.post(`/admin/oidc/clients/${clientId}/decision`, { decision: 'disable' });
      expect(stale.status).toBe(303);
      expect(String(stale.headers.location)).toMatch(/^\/reauth\?/);
      expect((await admin2.get('/admin/oidc/entitlements')).headers.location).toMatch(/^\/reauth\?/);
      const row = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_clients').select('status').where('client_id', '=', clientId).executeTakeFirstOrThrow());
      expect(row.status).toBe('active');
    } finally {
      t.setNow(null as never);
    }
    await inTenant(database.db, tenant.id, (trx) =>
      trx.insertInto('oidc_payloads').values({ tenant_id: tenant.id, model: 'RefreshToken', id: 'rt-1', payload: JSON.stringify({ clientId, grantId: 'g1' }), grant_id: 'g1', uid: null, user_code: null, expires_at: new Date(Date.now() + 3600_000), consumed_at: null }).execute(),
    );
    await admin2.get(`/admin/oidc/clients/${clientId}`);
    expect((await admin2.post(`/admin/oidc/clients/${clientId}/decision`, { decision: 'disable' })).status).toBe(303);
    const left = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_payloads').select('id').where('id', '=', 'rt-1').execute());
    expect(left).toEqual([]);
    expect((await events(tenant.id, 'oidc.client.disable')).at(-1)).toMatchObject({ outcome: 'success' });
  });
});

describe('editing a relying party', () => {
  it('an administrator edits name, addresses and logo; narrowing applies at once; widening to personal claims waits for a second administrator; all recorded', async () => {
    const r = await register(admin1, { name: 'Portail du citoyen', redirectUris: 'https://portail.example.org/cb' });
    expect(r.status).toBe(201);
    const clientId = /<code>([A-Za-z0-9_-]{24})<\/code>/.exec(r.body)![1]!;
    const form = await admin1.get(`/admin/oidc/clients/${clientId}/edit`);
    expect(form.status).toBe(200);
    expect(form.body).toContain('value="Portail du citoyen"');
    // Name, addresses, logo: applied. Bad input: the form again, nothing changed.
    const bad = await admin1.post(`/admin/oidc/clients/${clientId}/edit`, { name: 'Portail', redirectUris: 'http://portail.example.org/cb' });
    expect(bad.status).toBe(400);
    const ok = await admin1.post(`/admin/oidc/clients/${clientId}/edit`, { name: 'Portail citoyen', redirectUris: 'https://portail.example.org/cb https://portail.example.org/cb2', logoUri: 'https://portail.example.org/logo.png', scope: 'offline_access' });
    expect(ok.status).toBe(303);
    expect(ok.headers.location).toBe(`/admin/oidc/clients/${clientId}?edited=1`);
    let row = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_clients').selectAll().where('client_id', '=', clientId).executeTakeFirstOrThrow());
    expect(row).toMatchObject({ name: 'Portail citoyen', redirect_uris: ['https://portail.example.org/cb', 'https://portail.example.org/cb2'], logo_uri: 'https://portail.example.org/logo.png', scopes: ['openid', 'offline_access'], status: 'active', pending_scopes: null });

    // Widening to e-mail: the scopes wait; the client keeps the ones it had.
    const wide = await admin1.post(`/admin/oidc/clients/${clientId}/edit`, { name: 'Portail citoyen', redirectUris: 'https://portail.example.org/cb', scope: ['email', 'offline_access'] });
    expect(wide.headers.location).toBe(`/admin/oidc/clients/${clientId}?edited=pending`);
    row = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_clients').selectAll().where('client_id', '=', clientId).executeTakeFirstOrThrow());
    expect(row).toMatchObject({ scopes: ['openid', 'offline_access'], pending_scopes: ['openid', 'email', 'offline_access'], redirect_uris: ['https://portail.example.org/cb'] });
    // The requester cannot approve it, in the console or in the database.
    expect((await admin1.get(`/admin/oidc/clients/${clientId}`)).body).not.toContain('value="approveScopes"');
    expect((await admin1.post(`/admin/oidc/clients/${clientId}/decision`, { decision: 'approveScopes' })).status).toBe(403);
    await expect(
      inTenant(database.db, tenant.id, (trx) => trx.updateTable('oidc_clients').set({ scopes: ['openid', 'email'] }).where('client_id', '=', clientId).execute()),
    ).rejects.toThrow(/second administrator/);
    // A second administrator approves: the scopes apply.
    const page = await admin2.get(`/admin/oidc/clients/${clientId}`);
    expect(page.body).toContain('value="approveScopes"');
    expect((await approveAsReviewed(admin2, clientId, 'approveScopes')).status).toBe(303);
    row = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_clients').selectAll().where('client_id', '=', clientId).executeTakeFirstOrThrow());
    expect(row).toMatchObject({ scopes: ['openid', 'email', 'offline_access'], personal: true, pending_scopes: null, approved_by: expect.any(String) });
    // One scope removed while another is added: the removal applies at once, the addition waits; refused, the
    // narrowed set stays.
    await admin1.post(`/admin/oidc/clients/${clientId}/edit`, { name: 'Portail citoyen', redirectUris: 'https://portail.example.org/cb', scope: ['email', 'profile'] });
    row = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_clients').selectAll().where('client_id', '=', clientId).executeTakeFirstOrThrow());
    expect(row).toMatchObject({ scopes: ['openid', 'email'], pending_scopes: ['openid', 'email', 'profile'] });
    await admin2.get(`/admin/oidc/clients/${clientId}`);
    expect((await admin2.post(`/admin/oidc/clients/${clientId}/decision`, { decision: 'refuseScopes' })).status).toBe(303);
    row = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_clients').selectAll().where('client_id', '=', clientId).executeTakeFirstOrThrow());
    expect(row).toMatchObject({ scopes: ['openid', 'email'], pending_scopes: null });
    // Narrowing back: at once.
    await admin1.post(`/admin/oidc/clients/${clientId}/edit`, { name: 'Portail citoyen', redirectUris: 'https://portail.example.org/cb' });
    row = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_clients').selectAll().where('client_id', '=', clientId).executeTakeFirstOrThrow());
    expect(row).toMatchObject({ scopes: ['openid'], personal: false });
    expect((await events(tenant.id, 'oidc.client.update')).filter((e) => e.target_ids[0] === clientId).map((e) => e.outcome)).toEqual(['success', 'success', 'success', 'success']);
    expect((await events(tenant.id, 'oidc.client.scopes.request')).filter((e) => e.target_ids[0] === clientId)).toHaveLength(2);
    expect((await events(tenant.id, 'oidc.client.approve')).at(-1)).toMatchObject({ outcome: 'success', details: expect.objectContaining({ widening: true }) });
  });

  it('a new redirect address for an approved client with personal claims waits for a second administrator; removing one applies at once', async () => {
    const r = await register(admin1, { name: 'Catalogue municipal', scope: ['email'], redirectUris: 'https://catalogue.example.org/cb' });
    const id = /<code>([A-Za-z0-9_-]{24})<\/code>/.exec(r.body)![1]!;
    await admin2.get(`/admin/oidc/clients/${id}`);
    expect((await approveAsReviewed(admin2, id)).status).toBe(303);
    const row = () => inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_clients').selectAll().where('client_id', '=', id).executeTakeFirstOrThrow());

    // One administrator replaces the address with one of their own (one host per client): it waits; the client goes on with its own.
    await admin1.get(`/admin/oidc/clients/${id}/edit`);
    const edit = await admin1.post(`/admin/oidc/clients/${id}/edit`, { name: 'Catalogue municipal', redirectUris: 'https://ailleurs.example.net/cb', scope: ['email'] });
    expect(edit.status, textOf(edit.body).slice(0, 600)).toBe(303);
    expect(edit.headers.location).toBe(`/admin/oidc/clients/${id}?edited=pending`);
    expect(await row()).toMatchObject({ redirect_uris: ['https://catalogue.example.org/cb'], pending_redirect_uris: ['https://ailleurs.example.net/cb'], scopes: ['openid', 'email'] });
    const person = new Client(t.app, tenant.hosts[0]!);
    const auth = await person.get(`/oidc/auth?client_id=${id}&response_type=code&scope=openid&redirect_uri=${encodeURIComponent('https://ailleurs.example.net/cb')}&code_challenge=${'a'.repeat(43)}&code_challenge_method=S256`);
    expect(auth.status).toBe(400);
    expect(auth.body).toContain('redirect_uri');
    // Not by the console, nor by the database.
    expect((await admin1.get(`/admin/oidc/clients/${id}`)).body).not.toContain('value="approveScopes"');
    expect((await admin1.post(`/admin/oidc/clients/${id}/decision`, { decision: 'approveScopes' })).status).toBe(403);
    await expect(
      inTenant(database.db, tenant.id, (trx) => trx.updateTable('oidc_clients').set({ redirect_uris: ['https://ailleurs.example.net/cb'] }).where('client_id', '=', id).execute()),
    ).rejects.toThrow(/second administrator/);
    // The second administrator sees the new address, marked, and approves it.
    const page = await admin2.get(`/admin/oidc/clients/${id}`);
    expect(textOf(page.body)).toContain('https://ailleurs.example.net/cb — nouvelle');
    expect((await approveAsReviewed(admin2, id, 'approveScopes')).status).toBe(303);
    expect(await row()).toMatchObject({ redirect_uris: ['https://ailleurs.example.net/cb'], pending_redirect_uris: null, pending_scopes: null });
    expect((await events(tenant.id, 'oidc.client.approve')).at(-1)).toMatchObject({ outcome: 'success', details: expect.objectContaining({ redirect_uris: 'https://ailleurs.example.net/cb' }) });

    // A second address on the same host waits as well; removing one narrows: at once.
    await admin1.get(`/admin/oidc/clients/${id}/edit`);
    await admin1.post(`/admin/oidc/clients/${id}/edit`, { name: 'Catalogue municipal', redirectUris: 'https://ailleurs.example.net/cb https://ailleurs.example.net/cb2', scope: ['email'] });
    expect(await row()).toMatchObject({ redirect_uris: ['https://ailleurs.example.net/cb'], pending_redirect_uris: ['https://ailleurs.example.net/cb', 'https://ailleurs.example.net/cb2'] });
    await admin2.get(`/admin/oidc/clients/${id}`);
    expect((await approveAsReviewed(admin2, id, 'approveScopes')).status).toBe(303);
    await admin1.get(`/admin/oidc/clients/${id}/edit`);
    const narrow = await admin1.post(`/admin/oidc/clients/${id}/edit`, { name: 'Catalogue municipal', redirectUris: 'https://ailleurs.example.net/cb2', scope: ['email'] });
    expect(narrow.headers.location).toBe(`/admin/oidc/clients/${id}?edited=1`);
    expect(await row()).toMatchObject({ redirect_uris: ['https://ailleurs.example.net/cb2'], pending_redirect_uris: null });
  });

  it('an approval is of what the approver read: an edit made after they opened the page is not approved with it', async () => {
    const r = await register(admin1, { name: 'Prêt entre bibliothèques', scope: ['email'], redirectUris: 'https://pret.example.org/cb' });
    const id = /<code>([A-Za-z0-9_-]{24})<\/code>/.exec(r.body)![1]!;
    const read = await admin2.get(`/admin/oidc/clients/${id}`);
    const reviewed = /name="reviewed" value="([^"]+)"/.exec(read.body)![1]!;
    // Meanwhile the requester changes the pending client's address.
    await admin1.get(`/admin/oidc/clients/${id}/edit`);
    expect((await admin1.post(`/admin/oidc/clients/${id}/edit`, { name: 'Prêt entre bibliothèques', redirectUris: 'https://ailleurs.example.net/cb', scope: ['email'] })).status).toBe(303);
    const stale = await admin2.post(`/admin/oidc/clients/${id}/decision`, { decision: 'approve', reviewed });
    expect(stale.status).toBe(409);
    expect(textOf(stale.body)).toContain('relisez-le avant de décider');
    const row = () => inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_clients').select(['status', 'redirect_uris']).where('client_id', '=', id).executeTakeFirstOrThrow());
    expect(await row()).toEqual({ status: 'pending', redirect_uris: ['https://ailleurs.example.net/cb'] });
    expect((await events(tenant.id, 'oidc.client.approve')).at(-1)).toMatchObject({ outcome: 'denied', details: { reason: 'changed_since_review' } });
    // Without the version read, no approval either; read again, it goes through.
    expect((await admin2.post(`/admin/oidc/clients/${id}/decision`, { decision: 'approve' })).status).toBe(409);
    expect((await approveAsReviewed(admin2, id)).status).toBe(303);
    expect((await row()).status).toBe('active');
  });

  it('rotating the secret shows the new one once; the old one is refused at once, the new one works', async () => {
    const r = await register(admin1, { name: 'Catalogue régional', redirectUris: 'https://catalogue.example.org/cb' });
    const clientId = /<code>([A-Za-z0-9_-]{24})<\/code>/.exec(r.body)![1]!;
    const oldSecret = [...r.body.matchAll(/<code>([A-Za-z0-9_-]{43})<\/code>/g)][0]![1]!;
    const issuer = `http://${tenant.hosts[0]}:${port}/oidc`;
    const rp = { clientId, redirectUri: 'https://catalogue.example.org/cb', postLogoutRedirectUri: '' };
    // Before: the old secret authenticates (the refresh token is unknown: invalid_grant, not invalid_client).
    await expect(oidc.refreshTokenGrant(await rpConfig(issuer, port, { ...rp, secret: oldSecret }), 'inconnu')).rejects.toMatchObject({ error: 'invalid_grant' });
    const rotated = await admin1.post(`/admin/oidc/clients/${clientId}/secret`, {});
    expect(rotated.status).toBe(200);
    expect(rotated.headers['cache-control']).toBe('no-store');
    const newSecret = [...rotated.body.matchAll(/<code>([A-Za-z0-9_-]{43})<\/code>/g)][0]![1]!;
    expect(newSecret).not.toBe(oldSecret);
    expect(textOf(rotated.body)).toMatch(/L’ancien secret ne fonctionne plus|The old secret no longer works/);
    expect((await admin1.get(`/admin/oidc/clients/${clientId}`)).body).not.toContain(newSecret);
    await expect(oidc.refreshTokenGrant(await rpConfig(issuer, port, { ...rp, secret: oldSecret }), 'inconnu')).rejects.toMatchObject({ status: 401 });
    await expect(oidc.refreshTokenGrant(await rpConfig(issuer, port, { ...rp, secret: newSecret }), 'inconnu')).rejects.toMatchObject({ error: 'invalid_grant' });
    expect((await events(tenant.id, 'oidc.client.secret.rotate')).at(-1)).toMatchObject({ outcome: 'success', actor_account_id: admin1Id, target_ids: [clientId] });
    // Someone who is not an administrator: refused, recorded, nothing changed.
    const parent = new Client(t.app, tenant.hosts[0]!);
    expect((await parent.signIn(PATRON, PASSWORD)).status).toBe(303);
    await parent.get('/account');
    expect((await parent.post(`/admin/oidc/clients/${clientId}/secret`, {})).status).toBe(403);
    expect((await parent.post(`/admin/oidc/clients/${clientId}/edit`, { name: 'Pirate', redirectUris: 'https://pirate.example.org/cb' })).status).toBe(403);
    expect((await events(tenant.id, 'oidc.client.secret.rotate')).at(-1)).toMatchObject({ outcome: 'denied' });
  });
});

describe('access rights as data', () => {
  it('an administrator records one, the person sees it on their account, and it can be removed', async () => {
    await admin1.get('/admin/oidc/entitlements');
    const r = await admin1.post('/admin/oidc/entitlements', { email: PATRON, scope: 'library', kind: 'library.patron', value: 'reseau-x', labelFr: 'Abonné du réseau X', labelEn: 'Patron of network X', validUntil: '2099-06-30' });
    expect(r.status).toBe(303);
    const patron = new Client(t.app, tenant.hosts[0]!);
    await patron.signIn(PATRON, PASSWORD);
    expect((await patron.get('/account')).body).toContain('/account/access-rights');
    let mine = await patron.get('/account/access-rights');
    expect(textOf(mine.body)).toContain('Abonné du réseau X');
    expect(textOf(mine.body)).toContain('30 juin 2099');
    expect(textOf(mine.body)).toContain('En vigueur');
    expect(textOf((await patron.get('/account/access-rights?lang=en')).body)).toContain('Patron of network X');

    const list = await admin1.get('/admin/oidc/entitlements');
    const id = /action="\/admin\/oidc\/entitlements\/([0-9a-f-]{36})\/revoke"/.exec(list.body)![1]!;
    expect((await admin1.post(`/admin/oidc/entitlements/${id}/revoke`)).status).toBe(303);
    mine = await patron.get('/account/access-rights?lang=fr');
    expect(textOf(mine.body)).toContain('Retiré');
    expect((await events(tenant.id, 'oidc.entitlement.create')).length).toBe(1);
    expect((await events(tenant.id, 'oidc.entitlement.revoke')).length).toBe(1);
  });

  it('the access rights list closes with the personal data at lockdown level 3', async () => {
    const closed = await tenantFor(t, { lockdown_level: 3 });
    const email = `admin.ferme.${Date.now().toString(36)}@example.org`;
    await createAdmin(t, closed, email);
    const ctx = ctxFor(t, closed, await actorByEmail(t, closed, email, t.deps.clock(), 10, ['password', 'totp']));
    await expect(listEntitlements(t.deps, ctx)).rejects.toMatchObject({ kind: 'closed' });
  });

  it('bad input and someone else than an administrator: refused', async () => {
    await admin1.get('/admin/oidc/entitlements');
    expect((await admin1.post('/admin/oidc/entitlements', { email: 'nobody@example.org', scope: 'library', kind: 'k', value: 'v', labelFr: 'a', labelEn: 'b' })).status).toBe(400);
    expect((await admin1.post('/admin/oidc/entitlements', { email: PATRON, scope: 'email', kind: 'kk', value: 'v', labelFr: 'a', labelEn: 'b' })).status).toBe(400);
    const patron = new Client(t.app, tenant.hosts[0]!);
    await patron.signIn(PATRON, PASSWORD);
    await patron.get('/account');
    expect((await patron.post('/admin/oidc/entitlements', { email: PATRON, scope: 'library', kind: 'kk', value: 'v', labelFr: 'a', labelEn: 'b' })).status).toBe(403);
    expect((await events(tenant.id, 'oidc.entitlement.create')).some((e) => e.outcome === 'denied')).toBe(true);
  });
});

describe('tenant isolation', () => {
  it('the tables have row-level security enabled and forced, with the tenant policy', async () => {
    const TABLES = ['oidc_clients', 'oidc_entitlements', 'oidc_payloads', 'oidc_signing_keys'];
    const { rows } = await sql<{ relname: string; relrowsecurity: boolean; relforcerowsecurity: boolean; policies: string[] }>`
      SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
             array(SELECT polname::text FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
      FROM pg_class c WHERE c.relname IN (${sql.join(TABLES)}) ORDER BY c.relname`.execute(database.ownerDb());
    expect(rows.map((r) => r.relname)).toEqual(TABLES);
    for (const r of rows) expect(r, r.relname).toMatchObject({ relrowsecurity: true, relforcerowsecurity: true, policies: ['tenant_isolation'] });
  });

  it('expired provider artefacts are swept, tenant by tenant, and live ones kept', async () => {
    const row = (tenantId: string, id: string, expires: number) => ({ tenant_id: tenantId, model: 'AccessToken', id, payload: JSON.stringify({}), grant_id: null, uid: null, user_code: null, expires_at: new Date(Date.now() + expires), consumed_at: null });
    await inTenant(database.db, tenant.id, (trx) => trx.insertInto('oidc_payloads').values([row(tenant.id, 'old-1', -60_000), row(tenant.id, 'live-1', 60_000)]).execute());
    await inTenant(database.db, other.id, (trx) => trx.insertInto('oidc_payloads').values([row(other.id, 'old-2', -60_000)]).execute());
    expect(await sweepExpired(database.db, [tenant.id], new Date())).toBeGreaterThanOrEqual(1);
    const ids = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_payloads').select('id').where('id', 'in', ['old-1', 'live-1']).execute());
    expect(ids.map((r) => r.id)).toEqual(['live-1']);
    // The other tenant's row is untouched until its own sweep.
    expect(await inTenant(database.db, other.id, (trx) => trx.selectFrom('oidc_payloads').select('id').where('id', '=', 'old-2').execute())).toHaveLength(1);
    await sweepExpired(database.db, [other.id], new Date());
    expect(await inTenant(database.db, other.id, (trx) => trx.selectFrom('oidc_payloads').select('id').where('id', '=', 'old-2').execute())).toHaveLength(0);
  });

  it("another tenant's provider has its own issuer and keys and does not know this tenant's clients", async () => {
    const [c] = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_clients').select('client_id').where('status', '=', 'active').execute());
    const person = new Client(t.app, other.hosts[0]!);
    const r = await person.get(`/oidc/auth?client_id=${c!.client_id}&response_type=code&scope=openid&redirect_uri=${encodeURIComponent('https://ebooks.example.org/cb')}&code_challenge=${'a'.repeat(43)}&code_challenge_method=S256`);
    expect(r.status).toBe(400);
    expect(r.body).toContain('invalid_client');
    const d1 = JSON.parse((await person.get('/oidc/.well-known/openid-configuration')).body) as { issuer: string };
    expect(d1.issuer).toBe(`http://${other.hosts[0]}:${port}/oidc`);
    const k1 = JSON.parse((await person.get('/oidc/jwks')).body) as { keys: { kid: string }[] };
    const k2 = JSON.parse((await new Client(t.app, tenant.hosts[0]!).get('/oidc/jwks')).body) as { keys: { kid: string }[] };
    expect(k1.keys.map((k) => k.kid)).not.toEqual(expect.arrayContaining(k2.keys.map((k) => k.kid)));
    // The failed attempt is recorded in the tenant that was asked, not in the client's.
    expect((await events(other.id, 'oidc.authorization')).at(-1)).toMatchObject({ outcome: 'denied' });
  });
});
