/**
 * No path confers privilege without a second person's approval. Every POST
 * route the application registers (read from the router, so a new route is
 * covered the day it is added) is tried by every kind of person — signed
 * out, parent, facility staff, programme operator, security officer and
 * administrator — with a body full of privilege: role fields naming the
 * administrator role, the person's own account and e-mail, ids of a real
 * pending request for the person's own promotion. Afterwards the tenant
 * holds exactly the privileged memberships it held before, and every one of
 * them carries the approval of a second person (or is the tenant's bootstrap).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { PRIVILEGED_ROLES, requestGrant } from '../../src/identity/grants.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, registeredPostRoutes, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { grantRole } from '../records/people.ts';

let database: TestDatabase;
let t: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
});
afterAll(async () => {
  await t?.close();
  await database?.close();
});

/** Routes that end the session making the request: tried last, so that the others are tried signed in. */
const ENDS_SESSION = ['/signout', '/account/sessions/end-others', '/account/sessions/:id/end', '/account/security/totp/remove', '/account/security/passkeys/:id/revoke'];

async function privileged(tenant: Tenant) {
  return inTenant(database.db, tenant.id, (trx) =>
    trx
      .selectFrom('memberships')
      .select(['id', 'account_id', 'role', 'source', 'granted_by', 'approved_by', 'revoked_at'])
      .where('role', 'in', [...PRIVILEGED_ROLES])
      .orderBy('id')
      .execute(),
  );
}

describe('privilege only by dual control, whatever the path', () => {
  it('every registered POST route, by every kind of person, with privilege in the body: no new privileged membership', async () => {
    const tenant = await tenantFor(t);
    const host = tenant.hosts[0]!;
    const tag = Math.random().toString(36).slice(2, 8);
    const facility = await createFacility(t, tenant);
    const emails = { admin: `admin.${tag}@exemple.test`, staff: `staff.${tag}@exemple.test`, operator: `operateur.${tag}@exemple.test`, officer: `securite.${tag}@exemple.test`, parent: `parent.${tag}@exemple.test` };
    const adminId = await createAdmin(t, tenant, emails.admin);
    const staffId = await createStaff(t, tenant, emails.staff, facility, adminId);
    const operatorId = await createStaff(t, tenant, emails.operator, facility);
    const officerId = await createStaff(t, tenant, emails.officer, facility);
    await grantRole(t, tenant, operatorId, 'program_operator', staffId, adminId);
    await grantRole(t, tenant, officerId, 'security_officer', staffId, adminId);
    const parentId = await createParent(t, tenant, emails.parent);
    const ids: Record<string, string> = { admin: adminId, staff: staffId, operator: operatorId, officer: officerId, parent: parentId };

    // A real pending request: the staff member asked to become administrator. Only a second person's passkey may approve it.
    const staffActor: Actor = {
      accountId: staffId,
      tenantId: tenant.id,
      sessionId: null,
      email: emails.staff,
      emailVerified: true,
      locale: 'fr',
      memberships: [],
      mfa: true,
      auth: { methods: ['passkey'], at: t.deps.clock(), totp: false, passkeys: 1, vouchedPasskeys: 1, vouchedPasskey: true },
    };
    staffActor.memberships = (await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('memberships').select(['id', 'role', 'facility_id', 'expires_at']).where('account_id', '=', staffId).execute())).map((m) => ({ id: m.id, role: m.role, facilityId: m.facility_id, expiresAt: m.expires_at }));
    const pendingRequest = await requestGrant(t.deps, ctxFor(t, tenant, staffActor), { email: emails.staff, role: 'tenant_admin', facilityId: null, reason: 'Je voudrais tout voir', durationMinutes: 720 });

    const before = await privileged(tenant);
    expect(before.map((m) => m.role).sort()).toEqual(['program_operator', 'security_officer', 'tenant_admin']);

    const clients: [string, Client][] = [['anonymous', new Client(t.app, host)]];
    for (const who of ['parent', 'staff', 'operator', 'officer', 'admin'] as const) {
      const c = new Client(t.app, host);
      const r = await c.signIn(emails[who], PASSWORD);
      expect(r.status, `${who} signs in`).toBe(303);
      clients.push([who, c]);
    }
    for (const [, c] of clients) await c.get('/signin');

    const routes = registeredPostRoutes(t.app);
    expect(routes.length).toBeGreaterThan(30);
    const ordered = [...routes.filter((r) => !ENDS_SESSION.includes(r)), ...routes.filter((r) => ENDS_SESSION.includes(r))];
    const statuses = new Map<string, number>();
    for (const route of ordered) {
      for (const [who, c] of clients) {
        const own = ids[who] ?? staffId;
        // Path ids: the pending request, the person's own account, and (for anything else) the pending request again.
        const path = route.replace(/:(\w+)/g, (_, name: string) => (name === 'id' && route.startsWith('/admin/accounts') ? own : pendingRequest));
        const body = {
          email: emails[who as keyof typeof emails] ?? emails.staff,
          role: 'tenant_admin',
          roles: 'tenant_admin',
          membership: 'tenant_admin',
          accountId: own,
          account_id: own,
          approvedBy: own,
          approved_by: own,
          grantedBy: own,
          source: 'bootstrap',
          facilityId: facility,
          reason: 'Je demande tous les droits maintenant',
          durationMinutes: '720',
          requestId: pendingRequest,
          decision: 'approve',
          return: '/admin',
          password: PASSWORD,
          passwordConfirm: PASSWORD,
        };
        const r = await c.post(path, body);
        statuses.set(`${who} ${route}`, r.status);
        expect(r.status, `${who} POST ${path}`).toBeLessThan(500);
      }
    }

    const after = await privileged(tenant);
    expect(after.map((m) => ({ id: m.id, role: m.role, account: m.account_id }))).toEqual(before.map((m) => ({ id: m.id, role: m.role, account: m.account_id })));
    for (const m of after) {
      if (m.source === 'bootstrap') continue;
      expect(m.approved_by, `membership ${m.id}`).not.toBeNull();
      expect(m.approved_by).not.toBe(m.granted_by);
      expect(m.approved_by).not.toBe(m.account_id);
    }
    // the request is still waiting: nobody approved it along the way
    const req = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('privilege_requests').select('status').where('id', '=', pendingRequest).executeTakeFirstOrThrow());
    expect(req.status).toBe('pending');
    // and the approval attempts are in the log, refused
    const approvals = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['outcome', 'actor_account_id']).where('action', '=', 'identity.grant.approve').execute());
    expect(approvals.every((e) => e.outcome !== 'success')).toBe(true);
    expect(statuses.get('staff /admin/grants/:id/approve')).toBe(403);
    // the requests reached the handlers (signed in, with their CSRF token), not only the guards in front of them
    expect([...statuses.values()].filter((s) => s < 400).length).toBeGreaterThan(20);
  });
});
