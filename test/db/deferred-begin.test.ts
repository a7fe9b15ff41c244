/**
 * On PostgreSQL a tenant transaction's BEGIN travels with its settings
 * (src/db/deferred-begin.ts): one round trip fewer, and still a transaction
 * in every respect — isolation level, row-level security, rollback.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { createTestDatabase, createTestTenant, type TestDatabase, type TestTenant } from '../helpers/db.ts';

describe.runIf(process.env.GUICHET_TEST_DB === 'postgres')('a tenant transaction’s BEGIN on PostgreSQL', () => {
  let t: TestDatabase;
  let a: TestTenant;
  let b: TestTenant;
  const sent: string[] = [];
  const query = pg.Client.prototype.query;

  beforeAll(async () => {
    t = await createTestDatabase();
    a = await createTestTenant(t);
    b = await createTestTenant(t);
    // Every statement the pool's clients send, in order.
    (pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown }).query = function (this: pg.Client, ...args: unknown[]) {
      const q = args[0];
      sent.push(typeof q === 'string' ? q : String((q as { text?: string })?.text ?? ''));
      return (query as (...a: unknown[]) => unknown).apply(this, args);
    };
  });
  afterEach(() => {
    sent.length = 0;
  });
  afterAll(async () => {
    pg.Client.prototype.query = query;
    await t?.close();
  });

  const accountIn = async (tenantId: string) => {
    const id = randomUUID();
    await t.ownerDb().insertInto('accounts').values({ id, tenant_id: tenantId, email: `${id}@exemple.test`, password_hash: 'x', locale: 'fr', status: 'active' } as never).execute();
    return id;
  };

  it('sends BEGIN with the settings in one round trip, and the settings hold for the transaction', async () => {
    const mine = await accountIn(a.id);
    await accountIn(b.id);
    sent.length = 0;
    const seen = await inTenant(t.db, a.id, async (trx) => {
      const r = await sql<{ tenant: string; role: string; ids: string[] }>`SELECT current_setting('app.tenant_id') AS tenant, current_user AS role,
        (SELECT array_agg(id::text) FROM accounts) AS ids`.execute(trx);
      return r.rows[0]!;
    });
    expect(seen).toEqual({ tenant: a.id, role: 'guichet_app', ids: [mine] });
    expect(sent).toHaveLength(3);
    expect(sent[0]).toMatch(/^begin; \/\* guichet:tenant \*\/ SELECT pg_catalog\.set_config\('role', 'guichet_app', true\)/);
    expect(sent[2]).toBe('commit');
    // Outside the transaction nothing is left of them.
    const after = await sql<{ tenant: string | null }>`SELECT nullif(current_setting('app.tenant_id', true), '') AS tenant`.execute(t.db);
    expect(after.rows[0]!.tenant).toBeNull();
  });

  it('keeps the isolation level asked for', async () => {
    const level = await t.db
      .transaction()
      .setIsolationLevel('repeatable read')
      .execute(async (trx) => {
        await sql.raw(`/* guichet:tenant */ SELECT pg_catalog.set_config('app.tenant_id', '${a.id}', true)`).execute(trx);
        return (await sql<{ l: string }>`SELECT current_setting('transaction_isolation') AS l`.execute(trx)).rows[0]!.l;
      });
    expect(level).toBe('repeatable read');
    expect(sent[0]).toMatch(/^start transaction isolation level repeatable read; /);
  });

  it('rolls back what a failed transaction wrote, whether its first statement carried BEGIN or not', async () => {
    const id = randomUUID();
    await expect(
      inTenant(t.db, a.id, async (trx) => {
        await trx.insertInto('accounts').values({ id, tenant_id: a.id, email: `${id}@exemple.test`, password_hash: 'x', locale: 'fr', status: 'active' } as never).execute();
        throw new Error('stop');
      }),
    ).rejects.toThrow('stop');
    expect(sent.at(-1)).toBe('rollback');
    const other = randomUUID();
    sent.length = 0;
    await expect(
      t.db.transaction().execute(async (trx) => {
        // A first statement with parameters cannot carry BEGIN: it goes first, on its own.
        await sql`SELECT set_config('role', 'guichet_app', true), set_config('app.tenant_id', ${a.id}, true)`.execute(trx);
        await trx.insertInto('accounts').values({ id: other, tenant_id: a.id, email: `${other}@exemple.test`, password_hash: 'x', locale: 'fr', status: 'active' } as never).execute();
        throw new Error('stop');
      }),
    ).rejects.toThrow('stop');
    expect(sent.filter((s) => s === 'begin')).toHaveLength(1);
    const left = await t.ownerDb().selectFrom('accounts').select('id').where('id', 'in', [id, other]).execute();
    expect(left).toEqual([]);
  });

  it('sends nothing for a transaction that ends before its first statement', async () => {
    await t.db.transaction().execute(async () => 'nothing');
    await expect(
      t.db.transaction().execute(async () => {
        throw new Error('before any statement');
      }),
    ).rejects.toThrow('before any statement');
    expect(sent).toEqual([]);
  });
});
