/**
 * On PostgreSQL the application must connect as a role that row-level
 * security applies to. (PGlite is single-user: there inTenant's SET LOCAL ROLE
 * is the boundary, as the design notes.)
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../../src/db/connection.ts';
import { createTestDatabase, TEST_APP_ROLE, testDatabaseInfo, type TestDatabase } from '../helpers/db.ts';

describe.runIf(process.env.GUICHET_TEST_DB === 'postgres')('PostgreSQL connection role', () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase();
  });
  afterAll(async () => {
    await t?.close();
  });

  it('openDatabase refuses a superuser URL unless allowPrivilegedRole', async () => {
    const info = testDatabaseInfo();
    if (info.kind !== 'postgres') throw new Error('unreachable');
    await expect(openDatabase({ databaseUrl: info.ownerUrl, migrate: false })).rejects.toThrow(/DATABASE_URL/);
    await expect(openDatabase({ databaseUrl: info.ownerUrl, migrate: false, allowPrivilegedRole: false })).rejects.toThrow(
      /DATABASE_URL: the role "postgres" is a superuser/,
    );
  });

  it('the tests\' application connection is an unprivileged member of guichet_app', async () => {
    const { rows } = await sql<{ user: string; rolsuper: boolean; rolbypassrls: boolean; member: boolean }>`
      SELECT current_user AS user, rolsuper, rolbypassrls, pg_has_role(current_user, 'guichet_app', 'MEMBER') AS member
      FROM pg_roles WHERE rolname = current_user`.execute(t.db);
    expect(rows).toEqual([{ user: TEST_APP_ROLE, rolsuper: false, rolbypassrls: false, member: true }]);
  });

  it('the application connection cannot switch to the owner', async () => {
    await expect(
      t.db.transaction().execute((trx) => sql`SELECT set_config('role', 'postgres', true)`.execute(trx)),
    ).rejects.toThrow(/permission denied/);
  });

  it('without inTenant, the login role itself sees no tenant row', async () => {
    const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM accounts`.execute(t.db);
    expect(rows[0]?.n).toBe('0');
  });
});
