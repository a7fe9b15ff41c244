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

  it('an idle connection the server ends (a restart, an administrator) is dropped and opened again, and the process lives on', async () => {
    const info = testDatabaseInfo();
    if (info.kind !== 'postgres') throw new Error('unreachable');
    const { rows } = await sql<{ d: string }>`SELECT current_database() AS d`.execute(t.db);
    const u = new URL(info.appUrl);
    u.pathname = `/${rows[0]!.d}`;
    // Its own connections only, by name: the other test files share this database and must keep theirs.
    const name = `guichet-terminated-${process.pid}`;
    u.searchParams.set('application_name', name);
    const notes: string[] = [];
    const app = await openDatabase({ databaseUrl: u.toString(), migrate: false, log: (m) => notes.push(m) });
    try {
      await sql`SELECT 1`.execute(app.db);
      await new Promise((r) => setTimeout(r, 200));
      const ended = await sql<{ n: number }>`SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE datname = current_database() AND usename = ${TEST_APP_ROLE} AND application_name = ${name}`.execute(t.ownerDb());
      expect(ended.rows[0]!.n).toBeGreaterThan(0);
      await new Promise((r) => setTimeout(r, 300));
      expect(notes.some((n) => n.includes('closed by the server'))).toBe(true);
      expect((await sql<{ one: number }>`SELECT 1 AS one`.execute(app.db)).rows).toEqual([{ one: 1 }]);
    } finally {
      await app.close();
    }
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
