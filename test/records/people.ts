/**
 * People of a test tenant beyond parents and staff: a second administrator
 * and a programme operator, granted as the database demands (a second
 * person approves, the grant expires), and the Actor a request of theirs
 * would carry.
 */
import type { Actor } from '../../src/access/actor.ts';
import { COOLING_OFF_MINUTES } from '../../src/access/decide.ts';
import type { MembershipRole } from '../../src/db/schema.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { createDemoAccount } from '../../src/identity/service.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { PASSWORD, type TestApp } from '../helpers/app.ts';

/**
 * A privileged role for `accountId`, asked by `grantedBy` and approved by the
 * administrator `approvedBy`, granted past its cooling-off hour (these tests
 * are about what an established operator may do; test/identity/break-glass.test.ts
 * is about the first hour).
 */
export async function grantRole(t: TestApp, tenant: Tenant, accountId: string, role: MembershipRole, grantedBy: string, approvedBy: string): Promise<void> {
  const now = t.deps.clock().getTime();
  await inTenant(t.database.db, tenant.id, (trx) =>
    trx
      .insertInto('memberships')
      .values({ tenant_id: tenant.id, account_id: accountId, role, facility_id: null, source: 'grant', granted_by: grantedBy, approved_by: approvedBy, created_at: new Date(now - (COOLING_OFF_MINUTES + 1) * 60_000), expires_at: new Date(now + 8 * 3600_000) })
      .execute(),
  );
}

export async function createAccount(t: TestApp, tenant: Tenant, email: string): Promise<string> {
  return inTenant(t.database.db, tenant.id, (trx) => createDemoAccount(trx, tenant.id, email, PASSWORD, t.deps.clock()));
}

/**
 * The actor of a signed-in account, as a request would resolve it. Staff and
 * administrators sign in with a second factor (mfa: true), which the access
 * rules may require to open personal data; the sign-in is as old as the
 * test clock's "now" when the actor is made (approving a restore wants it at
 * most five minutes old).
 */
export async function actorOf(t: TestApp, tenant: Tenant, accountId: string, email: string): Promise<Actor> {
  const ms = await inTenant(t.database.db, tenant.id, (trx) => trx.selectFrom('memberships').select(['id', 'role', 'facility_id', 'expires_at']).where('account_id', '=', accountId).where('revoked_at', 'is', null).execute());
  return {
    accountId,
    tenantId: tenant.id,
    sessionId: null,
    email,
    emailVerified: true,
    locale: 'fr',
    memberships: ms.map((m) => ({ id: m.id, role: m.role, facilityId: m.facility_id, expiresAt: m.expires_at })),
    ...{ mfa: true },
    auth: { methods: ['password', 'totp'], at: t.deps.clock(), totp: true, passkeys: 0, vouchedPasskeys: 0, vouchedPasskey: false },
  } as Actor;
}
