import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { createTestDatabase, createTestTenant, type TestDatabase } from '../helpers/db.ts';

describe('tenants and cross-tenant references', () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase();
  });
  afterAll(async () => {
    await t?.close();
  });

  it('a tenant reads every tenant’s public row but changes only its own lockdown level', async () => {
    const a = await createTestTenant(t);
    const b = await createTestTenant(t);
    const seen = await inTenant(t.db, a.id, (trx) => trx.selectFrom('tenants').select('id').where('id', 'in', [a.id, b.id]).execute());
    expect(seen).toHaveLength(2);
    const other = await inTenant(t.db, a.id, (trx) => trx.updateTable('tenants').set({ lockdown_level: 4 }).where('id', '=', b.id).executeTakeFirst());
    expect(other.numUpdatedRows).toBe(0n);
    const own = await inTenant(t.db, a.id, (trx) => trx.updateTable('tenants').set({ lockdown_level: 1 }).where('id', '=', a.id).executeTakeFirst());
    expect(own.numUpdatedRows).toBe(1n);
    const rows = await t.ownerDb().selectFrom('tenants').select(['id', 'lockdown_level']).where('id', 'in', [a.id, b.id]).execute();
    expect(Object.fromEntries(rows.map((r) => [r.id, r.lockdown_level]))).toEqual({ [a.id]: 1, [b.id]: 0 });
    await expect(inTenant(t.db, a.id, (trx) => trx.updateTable('tenants').set({ name_fr: 'X' }).where('id', '=', a.id).execute())).rejects.toThrow(/permission denied/);
  });

  it('a host name serves one tenant, written as a request compares it; a Host that names none reaches the default only where that is safe', async () => {
    const a = await createTestTenant(t);
    const b = await createTestTenant(t);
    const owner = t.ownerDb();
    await expect(owner.updateTable('tenants').set({ hosts: [`${a.slug}.localhost`] }).where('id', '=', b.id).execute()).rejects.toThrow(/already serves another tenant/);
    await expect(owner.updateTable('tenants').set({ hosts: ['Guichet.Example.org'] }).where('id', '=', b.id).execute()).rejects.toThrow(/lower case/);
    await expect(owner.updateTable('tenants').set({ hosts: ['https://guichet.example.org/'] }).where('id', '=', b.id).execute()).rejects.toThrow(/lower case/);
    await expect(owner.updateTable('tenants').set({ hosts: ['b.example.org', 'b.example.org'] }).where('id', '=', b.id).execute()).rejects.toThrow(/listed twice/);
    await expect(owner.updateTable('tenants').set({ hosts: ['guichet-b.example.org:8443'] }).where('id', '=', b.id).execute()).rejects.toThrow(/without scheme, port or path/);
    await owner.updateTable('tenants').set({ hosts: [`${b.slug}.localhost`, 'guichet-b.example.org'] }).where('id', '=', b.id).execute();
    // The lockdown level changes without the hosts being looked at.
    await owner.updateTable('tenants').set({ lockdown_level: 1 }).where('id', '=', a.id).execute();
    const { TenantDirectory } = await import('../../src/tenants/service.ts');
    const lenient = new TenantDirectory(owner, a.slug, 0);
    const strict = new TenantDirectory(owner, a.slug, 0, true);
    expect((await strict.forHost(`${b.slug.toUpperCase()}.LOCALHOST:3000`))?.id).toBe(b.id);
    expect((await lenient.forHost('upstream:3000'))?.id).toBe(a.id);
    // In production, a Host nobody named (a proxy that does not pass the browser's on) is refused, not sent to the default.
    expect(await strict.forHost('upstream:3000')).toBeUndefined();
  });

  it('the records guard judges the transaction\'s own tenant and a known account only: a mistake fails closed', async () => {
    const a = await createTestTenant(t);
    const b = await createTestTenant(t);
    const guard = (tenant: string, actor: string | null) => sql`SELECT records_guard(${tenant}::uuid, ${actor}::uuid, false, false, now())`;
    await inTenant(t.db, a.id, (trx) => guard(a.id, null).execute(trx));
    await expect(inTenant(t.db, a.id, (trx) => guard(b.id, null).execute(trx))).rejects.toThrow(/lockdown_closed/);
    await expect(inTenant(t.db, a.id, (trx) => guard(a.id, randomUUID()).execute(trx))).rejects.toThrow(/account_suspended/);
  });

  it('an invitation, membership or application cannot name another tenant’s facility', async () => {
    const a = await createTestTenant(t);
    const b = await createTestTenant(t);
    const facilityB = await inTenant(t.db, b.id, (trx) =>
      trx
        .insertInto('facilities')
        .values({ tenant_id: b.id, code: 'X1', name: 'CPE B', kind: 'cpe', subsidised: true, address: '1', municipality: 'Laval', postal_code: 'H7A 1A1', region: 'Laval', places_total: 10, places_infant: 0, search_key: 'cpe b' })
        .returning('id')
        .executeTakeFirstOrThrow(),
    );
    await expect(
      inTenant(t.db, a.id, async (trx) => {
        const acct = await trx.insertInto('accounts').values({ tenant_id: a.id, email: `x${Date.now()}@exemple.test`, locale: 'fr', email_verified_at: null, password_hash: null }).returning('id').executeTakeFirstOrThrow();
        await trx
          .insertInto('memberships')
          .values({ tenant_id: a.id, account_id: acct.id, role: 'facility_staff', facility_id: facilityB.id, source: 'invitation', granted_by: null, approved_by: null, created_at: new Date(), expires_at: null })
          .execute();
      }),
    ).rejects.toThrow(/foreign key/);
    await expect(
      inTenant(t.db, a.id, async (trx) => {
        const acct = await trx.insertInto('accounts').values({ tenant_id: a.id, email: `y${Date.now()}@exemple.test`, locale: 'fr', email_verified_at: null, password_hash: null }).returning('id').executeTakeFirstOrThrow();
        await trx
          .insertInto('invitations')
          .values({ tenant_id: a.id, email: 'z@exemple.test', role: 'facility_staff', facility_id: facilityB.id, token_hash: Buffer.from(randomUUID()), invited_by: acct.id, created_at: new Date(), expires_at: new Date() })
          .execute();
      }),
    ).rejects.toThrow(/foreign key/);
  });

  it('a session or a known device names an account of its own tenant (the key to accounts); a sign-in attempt or a detection hit is the transaction tenant’s (the row policy)', async () => {
    const a = await createTestTenant(t);
    const b = await createTestTenant(t);
    const accountB = await inTenant(t.db, b.id, (trx) =>
      trx.insertInto('accounts').values({ tenant_id: b.id, email: `s${Date.now()}@exemple.test`, locale: 'fr', email_verified_at: null, password_hash: null }).returning('id').executeTakeFirstOrThrow(),
    );
    const now = new Date();
    // B's account, from A: the composite key to accounts refuses it (migration 0026 kept it when it dropped the key to tenants).
    await expect(
      inTenant(t.db, a.id, (trx) =>
        trx
          .insertInto('sessions')
          .values({ tenant_id: a.id, account_id: accountB.id, token_hash: Buffer.from(randomUUID()), created_at: now, last_seen_at: now, idle_timeout_seconds: 60, expires_at: now, revoked_at: null, ip: null, user_agent: null })
          .execute(),
      ),
    ).rejects.toThrow(/foreign key/);
    await expect(
      inTenant(t.db, a.id, (trx) =>
        trx.insertInto('known_devices').values({ tenant_id: a.id, account_id: accountB.id, device_hash: Buffer.from(randomUUID()), first_seen_at: now, last_seen_at: now, user_agent: null }).execute(),
      ),
    ).rejects.toThrow(/foreign key/);
    // Rows naming another tenant than the transaction's are refused by the row policy.
    await expect(
      inTenant(t.db, a.id, (trx) => trx.insertInto('auth_attempts').values({ tenant_id: b.id, kind: 'signin_failure', email_key: Buffer.from('k'), ip: null, at: now }).execute()),
    ).rejects.toThrow(/row-level security/);
    await expect(
      inTenant(t.db, a.id, (trx) => trx.insertInto('detection_hits').values({ tenant_id: b.id, account_id: accountB.id, signal: 'file.read', weight: 1, at: now }).execute()),
    ).rejects.toThrow(/row-level security/);
  });
});
