/**
 * Cooling-off and break-glass. A role granted by dual control opens no
 * personal data for its first hour (actions that open none still work); its
 * holder may break the glass for one session: a stated reason, a passkey
 * used within five minutes, 30 minutes at most, every privileged holder
 * e-mailed, and every audit event of the session marked. Over HTTP, with the
 * app's clock moved on.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { COOLING_OFF_MINUTES, decide } from '../../src/access/decide.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { decideGrant, requestGrant } from '../../src/identity/grants.ts';
import { hashToken } from '../../src/identity/tokens.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { actorByEmail, PASSWORD, createAdmin, createAdmins, createFacility, createStaff, ctxFor, tenantFor, type TestApp, startTestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';

let database: TestDatabase;
let t: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
});
afterAll(async () => {
  t?.setNow(new Date());
  await t?.close();
  await database?.close();
});

const MIN = 60_000;


const actor = (tenant: Tenant, email: string, now: Date) => actorByEmail(t, tenant, email, now);

/** The session just authenticated with a vouched passkey (the ceremonies themselves: test/browser/passkeys.test.ts, test/identity/passkey-vouch.test.ts). */
async function passkeySession(tenant: Tenant, c: Client, accountId: string, now: Date) {
  await inTenant(database.db, tenant.id, async (trx) => {
    // what vouches for it, as the database requires (migration 0052): this session followed a mailed link
    await trx.updateTable('sessions').set({ mailbox_proven_at: now }).where('token_hash', '=', hashToken(c.cookies.get('guichet_session')!)).execute();
    const key = await trx
      .insertInto('webauthn_credentials')
      .values({ tenant_id: tenant.id, account_id: accountId, credential_id: randomBytes(32).toString('base64url'), public_key: Buffer.from('x'), sign_count: 0, transports: [], rp_id: 'localhost', name: 'Clé', aaguid: null, backed_up: false, created_at: now, last_used_at: null, revoked_at: null, vouched_at: now })
      .returning('id')
      .executeTakeFirstOrThrow();
    await trx.updateTable('sessions').set({ auth_methods: ['passkey'], authenticated_at: now, auth_passkey_id: key.id }).where('token_hash', '=', hashToken(c.cookies.get('guichet_session')!)).execute();
  });
}

describe('cooling-off of a newly granted role, and break-glass', () => {
  it('decide(): a cooling role opens no personal data, except under break-glass; actions that open none are allowed; it ends by itself', () => {
    const now = new Date('2026-06-01T12:00:00Z');
    const base: Actor = {
      accountId: '10000000-0000-4000-8000-000000000001',
      tenantId: '20000000-0000-4000-8000-000000000002',
      sessionId: null,
      email: 'a@exemple.test',
      emailVerified: true,
      locale: 'fr',
      mfa: true,
      memberships: [{ id: 'm', role: 'tenant_admin', facilityId: null, expiresAt: new Date(now.getTime() + 240 * MIN), coolingUntil: new Date(now.getTime() + 30 * MIN) }],
    };
    expect(decide(base, 'identity.staff.list', { type: 'tenant' }, now)).toMatchObject({ allowed: false, reason: 'cooling_off' });
    expect(decide(base, 'waitlist.childFile.lookupByNirec', { type: 'tenant' }, now)).toMatchObject({ allowed: false, reason: 'cooling_off' });
    expect(decide(base, 'directory.facility.read', { type: 'tenant' }, now).allowed).toBe(true);
    expect(decide({ ...base, breakGlass: { id: 'b', until: new Date(now.getTime() + MIN) } }, 'identity.staff.list', { type: 'tenant' }, now).allowed).toBe(true);
    expect(decide({ ...base, breakGlass: { id: 'b', until: now } }, 'identity.staff.list', { type: 'tenant' }, now)).toMatchObject({ reason: 'cooling_off' });
    expect(decide(base, 'identity.staff.list', { type: 'tenant' }, new Date(now.getTime() + 30 * MIN)).allowed).toBe(true);
    // a role that would not match anyway is "no rule", not "cooling off"
    expect(decide(base, 'waitlist.candidates.list', { type: 'facility', facilityId: 'f' }, now)).toMatchObject({ reason: 'no_rule_matches' });
  });

  it('over HTTP: refused with an explanation for an hour; break-glass with a reason and a passkey opens it for 30 minutes, marked and announced', async () => {
    const start = new Date();
    t.setNow(start);
    const tenant = await tenantFor(t);
    const tag = Math.random().toString(36).slice(2, 8);
    const admin = `direction.${tag}@exemple.test`;
    const newcomer = `adjoint.${tag}@exemple.test`;
    const facility = await createFacility(t, tenant);
    const admin2 = `direction2.${tag}@exemple.test`;
    const [adminId] = await createAdmins(t, tenant, [admin, admin2]);
    const newcomerId = await createStaff(t, tenant, newcomer, facility);
    const req = await requestGrant(t.deps, ctxFor(t, tenant, await actor(tenant, newcomer, start)), { email: newcomer, role: 'tenant_admin', facilityId: null, reason: 'Remplacement', durationMinutes: 240 });
    await decideGrant(t.deps, ctxFor(t, tenant, await actor(tenant, admin, start)), req, 'approve');
    await decideGrant(t.deps, ctxFor(t, tenant, await actor(tenant, admin2, start)), req, 'approve');

    const c = new Client(t.app, tenant.hosts[0]!);
    await c.signIn(newcomer, PASSWORD);
    let r = await c.get('/admin');
    expect(r.status).toBe(403);
    expect(textOf(r.body)).toContain('Rôle en période d’attente');
    expect(r.body).toContain('href="/break-glass?return=%2Fadmin"');
    const denied = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select('details').where('action', '=', 'identity.invitation.list').where('outcome', '=', 'denied').execute());
    expect(denied.map((e) => e.details)).toEqual([{ reason: 'cooling_off' }]);

    r = await c.get('/break-glass?return=%2Fadmin');
    expect(r.status).toBe(200);
    expect(textOf(r.body)).toContain('Administrateur : en attente jusqu’au');
    // bad input changes nothing
    r = await c.post('/break-glass', { reason: 'vite', return: '/admin' });
    expect(r.status).toBe(400);
    expect(textOf(r.body)).toContain('Donnez la raison de l’urgence (au moins 10 caractères)');
    // an app code is not enough: a passkey, within five minutes
    r = await c.post('/break-glass', { reason: 'Enfant signalé en danger, dossier à retrouver ce soir', return: '/admin' });
    expect(r.status).toBe(303);
    expect(r.headers.location).toMatch(/^\/reauth\?return=.*&level=passkey$/);
    const none = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('break_glass').select('id').execute());
    expect(none).toEqual([]);

    await passkeySession(tenant, c, newcomerId, t.deps.clock());
    r = await c.post('/break-glass', { reason: 'Enfant signalé en danger, dossier à retrouver ce soir', return: '/admin' });
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe('/admin');
    const [glass] = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('break_glass').selectAll().execute());
    expect(glass!.expires_at.getTime() - glass!.started_at.getTime()).toBe(30 * MIN);
    expect((await c.get('/admin')).status).toBe(200);
    expect(textOf((await c.get('/break-glass')).body)).toContain('La glace est brisée');

    // everyone privileged heard of it, with the reason
    const mails = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('mail_outbox').select(['to_address', 'body_text']).where('template', '=', 'break_glass').execute());
    expect(mails.map((m) => m.to_address).sort()).toEqual([admin, admin2, newcomer].sort());
    expect(mails[0]!.body_text).toContain('Enfant signalé en danger, dossier à retrouver ce soir');
    // every event of the session says so
    const marked = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['action', 'actor_roles']).where('actor_account_id', '=', newcomerId).where('action', '=', 'identity.staff.list').where('outcome', '=', 'success').execute());
    expect(marked.length).toBeGreaterThan(0);
    for (const e of marked) expect(e.actor_roles).toContain(`break_glass:${glass!.id}`);
    // a second one while it lasts is refused
    expect((await c.post('/break-glass', { reason: 'Encore une autre urgence ce soir', return: '/admin' })).status).toBe(400);

    // 30 minutes later it is over (the session kept alive meanwhile), and the hour of cooling-off still runs
    for (const m of [10, 20, 31]) {
      t.setNow(new Date(start.getTime() + m * MIN));
      r = await c.get('/admin');
    }
    expect(r.status).toBe(403);
    // then the role cools no more
    for (const m of [44, 57, COOLING_OFF_MINUTES + 1]) {
      t.setNow(new Date(start.getTime() + m * MIN));
      r = await c.get('/admin');
    }
    expect(r.status).toBe(200);
    expect(textOf((await c.get('/break-glass')).body)).toContain('Aucun de vos rôles n’est en période d’attente');
    const started = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select('outcome').where('action', '=', 'identity.breakGlass.start').orderBy('seq').execute());
    expect(started.map((e) => e.outcome)).toEqual(['success', 'denied']);
    t.setNow(new Date());
  });

  it('ends early on request; an account without a cooling role has nothing to break', async () => {
    const start = new Date();
    t.setNow(start);
    const tenant = await tenantFor(t);
    const tag = Math.random().toString(36).slice(2, 8);
    const admin = `direction.${tag}@exemple.test`;
    const adminId = await createAdmin(t, tenant, admin);
    const c = new Client(t.app, tenant.hosts[0]!);
    await c.signIn(admin, PASSWORD);
    await passkeySession(tenant, c, adminId, start);
    expect(textOf((await c.get('/break-glass')).body)).toContain('Aucun de vos rôles n’est en période d’attente');
    const r = await c.post('/break-glass', { reason: 'Aucune raison réelle ici', return: '/admin' });
    expect(r.status).toBe(400);
    expect(textOf(r.body)).toContain('vous n’avez pas besoin de briser la glace');
    const rows = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('break_glass').select('id').execute());
    expect(rows).toEqual([]);
    expect((await c.post('/break-glass/end')).headers.location).toBe('/break-glass?ended=1');
    t.setNow(new Date());
  });
});
