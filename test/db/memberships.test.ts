/**
 * The memberships_guard trigger: no single person confers privilege, and a
 * membership's substance never changes after the fact.
 */
import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import type { Insertable } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MembershipRole, MembershipsTable } from '../../src/db/schema.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { createTestDatabase, createTestTenant, type TestDatabase } from '../helpers/db.ts';

const PRIVILEGED: MembershipRole[] = ['tenant_admin', 'security_officer', 'program_operator', 'facility_director'];
const NEEDS_SECOND_PERSON = /memberships: a privileged role needs the approval of a second person/;
const MUST_EXPIRE = /memberships: a granted privileged role must expire/;
const ALREADY_BOOTSTRAPPED = /memberships: tenant already bootstrapped/;

interface World {
  tenantId: string;
  facilityId: string;
  /** Three distinct accounts: who grants, who approves, who receives. */
  granter: string;
  approver: string;
  grantee: string;
}

/** With `approverIsAdmin`, the approver is the tenant's bootstrapped administrator, as an approver must be. */
async function world(t: TestDatabase, approverIsAdmin = true): Promise<World> {
  const { id: tenantId } = await createTestTenant(t);
  const tag = randomBytes(4).toString('hex');
  return inTenant(t.db, tenantId, async (trx) => {
    const facility = await trx
      .insertInto('facilities')
      .values({
        tenant_id: tenantId,
        code: `F-${tag}`,
        name: `CPE ${tag}`,
        kind: 'cpe',
        subsidised: true,
        address: '1 rue Principale',
        municipality: 'Laval',
        postal_code: 'H7A 1A1',
        region: 'Laval',
        places_total: 60,
        places_infant: 10,
        search_key: `cpe ${tag} laval`,
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    const ids: string[] = [];
    for (const who of ['granter', 'approver', 'grantee']) {
      const a = await trx
        .insertInto('accounts')
        .values({ tenant_id: tenantId, email: `${who}-${tag}@example.test`, email_verified_at: null, password_hash: null, locale: 'fr' })
        .returning('id')
        .executeTakeFirstOrThrow();
      ids.push(a.id);
    }
    const [granter, approver, grantee] = ids as [string, string, string];
    if (approverIsAdmin) {
      await trx
        .insertInto('memberships')
        .values({ tenant_id: tenantId, account_id: approver, role: 'tenant_admin', facility_id: null, source: 'bootstrap', granted_by: null, approved_by: null, created_at: new Date(), expires_at: null })
        .execute();
    }
    return { tenantId, facilityId: facility.id, granter, approver, grantee };
  });
}

type MembershipValues = Partial<Insertable<MembershipsTable>> & { role: MembershipRole };

/** Inserts a membership as the application does (guichet_app, tenant set); returns its id. */
async function insertMembership(t: TestDatabase, w: World, values: MembershipValues): Promise<string> {
  const row = await inTenant(t.db, w.tenantId, (trx) =>
    trx
      .insertInto('memberships')
      .values({
        tenant_id: w.tenantId,
        account_id: w.grantee,
        facility_id: values.role === 'facility_director' || values.role === 'facility_staff' ? w.facilityId : null,
        source: 'grant',
        granted_by: null,
        approved_by: null,
        created_at: new Date(),
        expires_at: null,
        revoked_at: null,
        ...values,
      })
      .returning('id')
      .executeTakeFirstOrThrow(),
  );
  return row.id;
}

const inOneHour = () => new Date(Date.now() + 3_600_000);

describe('memberships_guard', () => {
  let t: TestDatabase;
  let w: World;

  beforeAll(async () => {
    t = await createTestDatabase();
    w = await world(t);
  });
  afterAll(async () => {
    await t?.close();
  });

  describe.each(PRIVILEGED)('a privileged %s membership', (role) => {
    it('is refused without approved_by', async () => {
      await expect(insertMembership(t, w, { role, granted_by: w.granter, expires_at: inOneHour() })).rejects.toThrow(NEEDS_SECOND_PERSON);
    });
    it('is refused without granted_by', async () => {
      await expect(insertMembership(t, w, { role, approved_by: w.approver, expires_at: inOneHour() })).rejects.toThrow(NEEDS_SECOND_PERSON);
    });
    it('is refused when approved_by = granted_by', async () => {
      await expect(insertMembership(t, w, { role, granted_by: w.granter, approved_by: w.granter, expires_at: inOneHour() })).rejects.toThrow(
        NEEDS_SECOND_PERSON,
      );
    });
    it('is refused when the account approves its own membership', async () => {
      await expect(insertMembership(t, w, { role, granted_by: w.granter, approved_by: w.grantee, expires_at: inOneHour() })).rejects.toThrow(
        NEEDS_SECOND_PERSON,
      );
    });
    it('is refused without an expiry', async () => {
      await expect(insertMembership(t, w, { role, granted_by: w.granter, approved_by: w.approver, expires_at: null })).rejects.toThrow(MUST_EXPIRE);
    });
    it('is accepted with a second person\'s approval and an expiry', async () => {
      const id = await insertMembership(t, w, { role, granted_by: w.granter, approved_by: w.approver, expires_at: inOneHour() });
      expect(id).toMatch(/^[0-9a-f-]{36}$/);
    });
  });

  it('bootstrap makes the first tenant_admin once; a second bootstrap is refused', async () => {
    const v = await world(t, false);
    const id = await insertMembership(t, v, { role: 'tenant_admin', source: 'bootstrap', account_id: v.granter });
    expect(id).toBeTruthy();
    await expect(insertMembership(t, v, { role: 'tenant_admin', source: 'bootstrap', account_id: v.approver })).rejects.toThrow(ALREADY_BOOTSTRAPPED);
    // Even after the first administrator's membership is revoked.
    await inTenant(t.db, v.tenantId, (trx) => trx.updateTable('memberships').set({ revoked_at: new Date() }).where('id', '=', id).execute());
    await expect(insertMembership(t, v, { role: 'tenant_admin', source: 'bootstrap', account_id: v.grantee })).rejects.toThrow(ALREADY_BOOTSTRAPPED);
  });

  it('bootstrap may name two administrators in one transaction: not three, not one account twice, not later', async () => {
    const v = await world(t, false);
    const bootstrap = (accountId: string) => ({ tenant_id: v.tenantId, account_id: accountId, role: 'tenant_admin' as const, facility_id: null, source: 'bootstrap' as const, granted_by: null, approved_by: null, created_at: new Date(), expires_at: null });
    const refusedTogether = async (accounts: string[]) =>
      expect(
        inTenant(t.db, v.tenantId, async (trx) => {
          for (const a of accounts) await trx.insertInto('memberships').values(bootstrap(a)).execute();
        }),
      ).rejects.toThrow(ALREADY_BOOTSTRAPPED);
    await refusedTogether([v.granter, v.granter]);
    await refusedTogether([v.granter, v.approver, v.grantee]);
    // Nothing of a refused transaction stays: the tenant is still not bootstrapped.
    await inTenant(t.db, v.tenantId, async (trx) => {
      await trx.insertInto('memberships').values(bootstrap(v.granter)).execute();
      await trx.insertInto('memberships').values(bootstrap(v.approver)).execute();
    });
    const admins = await inTenant(t.db, v.tenantId, (trx) => trx.selectFrom('memberships').select('account_id').where('role', '=', 'tenant_admin').execute());
    expect(admins.map((a) => a.account_id).sort()).toEqual([v.granter, v.approver].sort());
    await expect(insertMembership(t, v, { role: 'tenant_admin', source: 'bootstrap', account_id: v.grantee })).rejects.toThrow(ALREADY_BOOTSTRAPPED);
  });

  it('whoever invited the grantee may not approve their privileged role, even after the invitation was revoked', async () => {
    const v = await world(t);
    // The administrator (approver) invites the grantee as staff: one person's act, as invitations are.
    const staff = await insertMembership(t, v, { role: 'facility_staff', source: 'invitation', granted_by: v.approver });
    for (const role of PRIVILEGED) {
      // Another administrator asks for the grantee (granted_by), the inviter approves: the alias path.
      await expect(insertMembership(t, v, { role, granted_by: v.granter, approved_by: v.approver, expires_at: inOneHour() }), role).rejects.toThrow(
        /the approver invited the grantee/,
      );
    }
    await inTenant(t.db, v.tenantId, (trx) => trx.updateTable('memberships').set({ revoked_at: new Date() }).where('id', '=', staff).execute());
    await expect(insertMembership(t, v, { role: 'tenant_admin', granted_by: v.granter, approved_by: v.approver, expires_at: inOneHour() })).rejects.toThrow(/the approver invited the grantee/);
    // Someone the approver did not invite is approved as before.
    const other = await world(t);
    await insertMembership(t, other, { role: 'facility_staff', source: 'invitation', granted_by: other.granter });
    await expect(insertMembership(t, other, { role: 'tenant_admin', granted_by: other.granter, approved_by: other.approver, expires_at: inOneHour() })).resolves.toBeTruthy();
  });

  it('bootstrap in one tenant does not use up another tenant\'s', async () => {
    const v1 = await world(t, false);
    const v2 = await world(t, false);
    await insertMembership(t, v1, { role: 'tenant_admin', source: 'bootstrap', account_id: v1.granter });
    await expect(insertMembership(t, v2, { role: 'tenant_admin', source: 'bootstrap', account_id: v2.granter })).resolves.toBeTruthy();
  });

  it('bootstrap is refused after a tenant_admin was granted normally', async () => {
    const v = await world(t);
    await insertMembership(t, v, { role: 'tenant_admin', granted_by: v.granter, approved_by: v.approver, expires_at: inOneHour() });
    await expect(insertMembership(t, v, { role: 'tenant_admin', source: 'bootstrap', account_id: v.granter })).rejects.toThrow(ALREADY_BOOTSTRAPPED);
  });

  it('bootstrap confers tenant_admin only', async () => {
    const v = await world(t, false);
    for (const role of ['security_officer', 'program_operator', 'facility_director'] as const) {
      await expect(insertMembership(t, v, { role, source: 'bootstrap' }), role).rejects.toThrow(/memberships:/);
    }
    await expect(insertMembership(t, v, { role: 'facility_staff', source: 'bootstrap' })).rejects.toThrow(/bootstrap confers tenant_admin only/);
  });

  it('the approver must hold a current administrator role', async () => {
    const v = await world(t, false);
    await expect(insertMembership(t, v, { role: 'security_officer', granted_by: v.granter, approved_by: v.approver, expires_at: inOneHour() })).rejects.toThrow(
      /the approver holds no current administrator role/,
    );
    // an administrator whose role was revoked approves nothing any more
    const u = await world(t);
    await inTenant(t.db, u.tenantId, (trx) => trx.updateTable('memberships').set({ revoked_at: new Date() }).where('account_id', '=', u.approver).execute());
    await expect(insertMembership(t, u, { role: 'security_officer', granted_by: u.granter, approved_by: u.approver, expires_at: inOneHour() })).rejects.toThrow(
      /the approver holds no current administrator role/,
    );
  });

  it('the person a role is for is never one of the two who confer it: not as the first person, not as the approver', async () => {
    const v = await world(t);
    await expect(insertMembership(t, v, { role: 'tenant_admin', granted_by: v.grantee, approved_by: v.approver, expires_at: inOneHour() })).rejects.toThrow(/grantee cannot be one of the two/);
    await expect(insertMembership(t, v, { role: 'tenant_admin', granted_by: v.granter, approved_by: v.grantee, expires_at: inOneHour() })).rejects.toThrow(/second person/);
    await expect(insertMembership(t, v, { role: 'tenant_admin', granted_by: v.granter, approved_by: v.approver, expires_at: inOneHour() })).resolves.toBeTruthy();
  });

  it('the approver and grantor must be accounts of the same tenant', async () => {
    const v = await world(t);
    const other = await world(t);
    await expect(insertMembership(t, v, { role: 'program_operator', granted_by: other.granter, approved_by: v.approver, expires_at: inOneHour() })).rejects.toThrow();
  });

  it('facility_staff from an invitation needs no approval', async () => {
    const id = await insertMembership(t, w, { role: 'facility_staff', source: 'invitation', account_id: w.grantee, granted_by: w.granter });
    expect(id).toBeTruthy();
  });

  describe('after the fact', () => {
    let membershipId: string;
    beforeAll(async () => {
      membershipId = await insertMembership(t, w, { role: 'program_operator', granted_by: w.granter, approved_by: w.approver, expires_at: inOneHour() });
    });

    it('the application role may not change the role (no column privilege)', async () => {
      await expect(
        inTenant(t.db, w.tenantId, (trx) => trx.updateTable('memberships').set({ role: 'tenant_admin' }).where('id', '=', membershipId).execute()),
      ).rejects.toThrow(/permission denied/);
    });

    it('even the owner may not change the role, approver, grantor or account (trigger)', async () => {
      const o = t.ownerDb();
      const changes = [
        sql`UPDATE memberships SET role = 'tenant_admin' WHERE id = ${membershipId}`,
        sql`UPDATE memberships SET approved_by = ${w.granter} WHERE id = ${membershipId}`,
        sql`UPDATE memberships SET granted_by = ${w.approver} WHERE id = ${membershipId}`,
        sql`UPDATE memberships SET account_id = ${w.granter} WHERE id = ${membershipId}`,
        sql`UPDATE memberships SET source = 'bootstrap' WHERE id = ${membershipId}`,
      ];
      for (const change of changes) {
        await expect(change.execute(o)).rejects.toThrow(/memberships: only revocation and expiry may change/);
      }
      const row = await o.selectFrom('memberships').selectAll().where('id', '=', membershipId).executeTakeFirstOrThrow();
      expect([row.role, row.granted_by, row.approved_by, row.account_id, row.source]).toEqual(['program_operator', w.granter, w.approver, w.grantee, 'grant']);
    });

    it('an expiry may be brought forward, never removed or pushed back', async () => {
      const sooner = new Date(Date.now() + 600_000);
      await inTenant(t.db, w.tenantId, (trx) => trx.updateTable('memberships').set({ expires_at: sooner }).where('id', '=', membershipId).execute());
      await expect(inTenant(t.db, w.tenantId, (trx) => trx.updateTable('memberships').set({ expires_at: null }).where('id', '=', membershipId).execute())).rejects.toThrow(
        /an expiry may only be brought forward/,
      );
      await expect(
        inTenant(t.db, w.tenantId, (trx) => trx.updateTable('memberships').set({ expires_at: new Date('9999-01-01') }).where('id', '=', membershipId).execute()),
      ).rejects.toThrow(/an expiry may only be brought forward/);
    });

    it('revocation works', async () => {
      const revokedAt = new Date();
      const r = await inTenant(t.db, w.tenantId, (trx) =>
        trx.updateTable('memberships').set({ revoked_at: revokedAt }).where('id', '=', membershipId).executeTakeFirst(),
      );
      expect(r.numUpdatedRows).toBe(1n);
      const row = await t.ownerDb().selectFrom('memberships').select('revoked_at').where('id', '=', membershipId).executeTakeFirstOrThrow();
      expect(row.revoked_at?.getTime()).toBe(revokedAt.getTime());
      await expect(inTenant(t.db, w.tenantId, (trx) => trx.updateTable('memberships').set({ revoked_at: null }).where('id', '=', membershipId).execute())).rejects.toThrow(
        /a revocation is final/,
      );
    });
  });
});
