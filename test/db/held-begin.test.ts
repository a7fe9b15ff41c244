/**
 * On PostgreSQL a tenant transaction opens in one round trip
 * (src/db/held-begin.ts): BEGIN, the tenant's settings and the first statement
 * that reads, with its parameters written in as literals — and it is still a
 * transaction in every respect: isolation level, row-level security, rollback.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/config.ts';
import { HELD_UNTIL_NEXT, LAST_OF_TRANSACTION, PREPARED_PER_CONNECTION, WRITE_HELD_UNTIL_NEXT, preparable, withLiterals } from '../../src/db/held-begin.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { createTestDatabase, createTestTenant, recordMessages, type TestDatabase, type TestTenant } from '../helpers/db.ts';

describe('parameters written in as literals', () => {
  it('writes each parameter as pg would send it, quoted, and refuses any text where a $ could be something else', () => {
    const at = new Date('2026-11-23T17:21:27.123Z');
    expect(withLiterals('select $1, $2, $3, $10', ['a', 1, null, 'j', 'e', 'f', 'g', 'h', 'i', "l'x"])).toBe("select 'a', '1', NULL, 'l''x'");
    expect(withLiterals('select $1::bytea', [Buffer.from([0, 255])])).toBe(`select ${pg.escapeLiteral('\\x00ff')}::bytea`);
    expect(withLiterals('select $1::timestamptz', [at])).toMatch(/^select '2026-11-23T\d\d:21:27\.123[+-]\d\d:\d\d'::timestamptz$/);
    expect(withLiterals('select $1::text[]', [['a', 'b"c']])).toBe(`select ${pg.escapeLiteral('{"a","b\\"c"}')}::text[]`);
    expect(withLiterals(`select 'it''s', "col" from t where a = $1`, ['x'])).toBe(`select 'it''s', "col" from t where a = 'x'`);
    expect(withLiterals(`select '$1', $1`, ['x'])).toBeNull();
    expect(withLiterals('select $$x$$, $1', ['x'])).toBeNull();
    expect(withLiterals(`select E'\\n', $1`, ['x'])).toBeNull();
    expect(withLiterals('select $2', ['x'])).toBeNull();
    expect(withLiterals("select 'open", [])).toBeNull();
    // A comment's quote would throw the scan off: no literals then.
    expect(withLiterals("-- it's\nselect '$1', $1", ['x'])).toBeNull();
    expect(withLiterals("/* it's */ select $1", ['x'])).toBeNull();
    expect(withLiterals(`select $1 ${LAST_OF_TRANSACTION}`, ['x'])).toBe(`select 'x' ${LAST_OF_TRANSACTION}`);
  });
});

describe('which statements are prepared', () => {
  it('one SELECT, INSERT, UPDATE, DELETE, WITH or VALUES whose columns are not a *', () => {
    for (const text of [
      'select "id" from "accounts" where "id" = $1',
      'SELECT count(*)::int AS n FROM t',
      "select a from t where last_seen_at + idle * interval '1 second' > $1",
      `insert into t (a) values ($1) returning id ${WRITE_HELD_UNTIL_NEXT}`,
      `update t set a = $1 ${LAST_OF_TRANSACTION}`,
      'with x as (select 1 as a) select a from x',
      "INSERT INTO t (a, b) VALUES ($1, '$1')",
    ]) {
      expect(preparable(text), text).toBe(true);
    }
    for (const text of [
      'select * from t',
      'select "c".*, "f"."key_version" from c',
      'select t. * from t',
      'select a, * from t',
      'select distinct * from t',
      'insert into t (a) values ($1) returning *',
      'with x as (select 1) select * from x',
      'select 1; select 2',
      `${HELD_UNTIL_NEXT} set local role x`,
      'begin',
      'create table t (a int)',
      '-- a comment\nselect 1',
      'select /* a comment */ 1',
    ]) {
      expect(preparable(text), text).toBe(false);
    }
  });

  it('DATABASE_PREPARED_STATEMENTS: on unless set to off', () => {
    expect(loadConfig({}).databasePreparedStatements).toBe(true);
    expect(loadConfig({ DATABASE_PREPARED_STATEMENTS: 'off' }).databasePreparedStatements).toBe(false);
    expect(() => loadConfig({ DATABASE_PREPARED_STATEMENTS: 'no' })).toThrow(ConfigError);
  });
});

// Statements not prepared here (DATABASE_PREPARED_STATEMENTS=off): each message's text shows its literals. With
// them prepared, the same messages carry EXECUTE instead of the statement (the block after this one).
describe.runIf(process.env.GUICHET_TEST_DB === 'postgres')('a tenant transaction’s opening on PostgreSQL', () => {
  let t: TestDatabase;
  let a: TestTenant;
  let b: TestTenant;
  const sent: string[] = [];
  let stopRecording: (() => void) | undefined;

  beforeAll(async () => {
    t = await createTestDatabase({ preparedStatements: false });
    a = await createTestTenant(t);
    b = await createTestTenant(t);
    stopRecording = recordMessages(sent);
  });
  afterEach(() => {
    sent.length = 0;
  });
  afterAll(async () => {
    stopRecording?.();
    await t?.close();
  });

  const accountIn = async (tenantId: string) => {
    const id = randomUUID();
    await t.ownerDb().insertInto('accounts').values({ id, tenant_id: tenantId, email: `${id}@exemple.test`, password_hash: 'x', locale: 'fr', status: 'active' } as never).execute();
    return id;
  };

  it('sends BEGIN, the settings and the first statement in one message; the settings hold for the transaction and end with it', async () => {
    const mine = await accountIn(a.id);
    await accountIn(b.id);
    sent.length = 0;
    const seen = await inTenant(t.db, a.id, async (trx) => {
      const first = await trx.selectFrom('accounts').select('id').where('tenant_id', 'in', [a.id, b.id]).execute();
      const r = await sql<{ tenant: string; role: string }>`SELECT current_setting('app.tenant_id') AS tenant, current_user AS role`.execute(trx);
      return { ids: first.map((x) => x.id), ...r.rows[0]! };
    });
    expect(seen).toEqual({ tenant: a.id, role: 'guichet_app', ids: [mine] });
    expect(sent).toHaveLength(3);
    expect(sent[0]).toMatch(new RegExp(`^begin; /\\* guichet:held \\*/ SELECT pg_catalog\\.set_config\\('role', 'guichet_app', true\\).*; select "id" from "accounts" where "tenant_id" in \\('${a.id}', '${b.id}'\\)$`));
    expect(sent[2]).toBe('commit');
    const after = await sql<{ tenant: string | null }>`SELECT nullif(current_setting('app.tenant_id', true), '') AS tenant`.execute(t.db);
    expect(after.rows[0]!.tenant).toBeNull();
  });

  it('gives the same answers with the parameters written in as with them sent apart', async () => {
    const at = new Date('2026-11-23T17:21:27.123Z');
    const ask = (trx: Parameters<Parameters<typeof inTenant>[2]>[0]) =>
      sql<Record<string, unknown>>`SELECT ${'l’été « 1 » \'x\' \\ $1'}::text AS s, ${42}::int AS i, ${1.5}::numeric AS n, ${true}::boolean AS b, ${null}::text AS z,
        ${at}::timestamptz AS t, ${Buffer.from([0, 1, 254, 255])}::bytea AS y, ${['a', 'b c', 'd"e']}::text[] AS arr, ${JSON.stringify({ k: ['v'] })}::jsonb AS j`.execute(trx);
    const first = await inTenant(t.db, a.id, async (trx) => (await ask(trx)).rows[0]);
    expect(sent[0]).toMatch(/^begin; \/\* guichet:held \*\/ .*; SELECT +E'l’été « 1 » ''x'' \\\\ \$1'::text AS s, '42'::int/);
    const second = await inTenant(t.db, a.id, async (trx) => {
      await sql`SELECT 1`.execute(trx);
      return (await ask(trx)).rows[0];
    });
    expect(first).toEqual(second);
    expect(first).toEqual({ s: 'l’été « 1 » \'x\' \\ $1', i: 42, n: '1.5', b: true, z: null, t: at, y: Buffer.from([0, 1, 254, 255]), arr: ['a', 'b c', 'd"e'], j: { k: ['v'] } });
  });

  it('a statement marked as the last of its transaction carries COMMIT: a transaction of one statement is one round trip', async () => {
    const id = randomUUID();
    const written = await inTenant(t.db, a.id, async (trx) => {
      const r = await sql<{ id: string }>`INSERT INTO accounts (id, tenant_id, email, password_hash) VALUES (${id}, ${a.id}, ${`${id}@exemple.test`}, 'x') RETURNING id ${sql.raw(LAST_OF_TRANSACTION)}`.execute(trx);
      return r.rows;
    });
    expect(written).toEqual([{ id }]);
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatch(/^begin; \/\* guichet:held \*\/ .*; INSERT INTO accounts .* RETURNING id \/\* guichet:last \*\/; commit$/);
    expect(await t.ownerDb().selectFrom('accounts').select('id').where('id', '=', id).execute()).toEqual([{ id }]);
    // Nothing more runs in a transaction that has ended.
    sent.length = 0;
    await expect(
      inTenant(t.db, a.id, async (trx) => {
        await sql`SELECT 1 ${sql.raw(LAST_OF_TRANSACTION)}`.execute(trx);
        await sql`SELECT 2`.execute(trx);
      }),
    ).rejects.toThrow(/committed with its last statement/);
    expect(sent).toHaveLength(1);
    // A last statement that fails commits nothing, and the transaction is rolled back.
    sent.length = 0;
    const other = randomUUID();
    await expect(
      inTenant(t.db, a.id, async (trx) => {
        await sql`INSERT INTO accounts (id, tenant_id, email, password_hash) VALUES (${other}, ${a.id}, ${`${other}@exemple.test`}, 'x')`.execute(trx);
        await sql`SELECT 1 / ${0}::int ${sql.raw(LAST_OF_TRANSACTION)}`.execute(trx);
      }),
    ).rejects.toThrow(/division by zero/);
    expect(sent.at(-2)).toMatch(/^SELECT 1 \/ '0'::int \/\* guichet:last \*\/; commit$/);
    expect(sent.at(-1)).toBe('rollback');
    expect(await t.ownerDb().selectFrom('accounts').select('id').where('id', '=', other).execute()).toEqual([]);
  });

  it('a write whose answer nobody reads goes with the next statement, which sees it, or with COMMIT; refused, it takes the transaction with it', async () => {
    const ids = [randomUUID(), randomUUID(), randomUUID()];
    const insert = (id: string) => sql`INSERT INTO accounts (id, tenant_id, email, password_hash) VALUES (${id}, ${a.id}, ${`${id}@exemple.test`}, 'x') ${sql.raw(WRITE_HELD_UNTIL_NEXT)}`;
    const seen = await inTenant(t.db, a.id, async (trx) => {
      await insert(ids[0]!).execute(trx);
      const r = await sql<{ n: number }>`SELECT count(*)::int AS n FROM accounts WHERE id = ${ids[0]}`.execute(trx);
      await insert(ids[1]!).execute(trx);
      return r.rows[0]!.n;
    });
    expect(seen).toBe(1);
    expect(sent).toHaveLength(2);
    expect(sent[0]).toMatch(/^begin; \/\* guichet:held \*\/ .*; INSERT INTO accounts .* \/\* guichet:held-write \*\/; SELECT count/);
    expect(sent[1]).toMatch(/^INSERT INTO accounts .* \/\* guichet:held-write \*\/; commit$/);
    expect(await t.ownerDb().selectFrom('accounts').select('id').where('id', 'in', ids.slice(0, 2)).orderBy('id').execute()).toEqual(ids.slice(0, 2).sort().map((id) => ({ id })));
    // The same address twice: the held write is refused with COMMIT, and nothing of the transaction stays.
    sent.length = 0;
    await expect(
      inTenant(t.db, a.id, async (trx) => {
        await sql`INSERT INTO accounts (id, tenant_id, email, password_hash) VALUES (${ids[2]}, ${a.id}, ${'doublon@exemple.test'}, 'x')`.execute(trx);
        await sql`INSERT INTO accounts (id, tenant_id, email, password_hash) VALUES (${randomUUID()}, ${a.id}, ${'doublon@exemple.test'}, 'x') ${sql.raw(WRITE_HELD_UNTIL_NEXT)}`.execute(trx);
      }),
    ).rejects.toThrow(/duplicate key/);
    expect(sent.at(-1)).toBe('rollback');
    expect(await t.ownerDb().selectFrom('accounts').select('id').where('id', '=', ids[2]!).execute()).toEqual([]);
    // A transaction that fails before anything else is sent never sends its held write.
    sent.length = 0;
    await expect(
      inTenant(t.db, a.id, async (trx) => {
        await insert(randomUUID()).execute(trx);
        throw new Error('stop');
      }),
    ).rejects.toThrow('stop');
    expect(sent).toEqual([]);
  });

  it('keeps the isolation level asked for', async () => {
    const level = await t.db
      .transaction()
      .setIsolationLevel('repeatable read')
      .execute(async (trx) => {
        await sql.raw(`${HELD_UNTIL_NEXT} SELECT pg_catalog.set_config('app.tenant_id', '${a.id}', true)`).execute(trx);
        return (await sql<{ l: string }>`SELECT current_setting('transaction_isolation') AS l`.execute(trx)).rows[0]!.l;
      });
    expect(level).toBe('repeatable read');
    expect(sent[0]).toMatch(/^start transaction isolation level repeatable read; /);
  });

  it('rolls back what a failed transaction wrote, whether its first statement travelled with BEGIN or not', async () => {
    const id = randomUUID();
    await expect(
      inTenant(t.db, a.id, async (trx) => {
        await trx.insertInto('accounts').values({ id, tenant_id: a.id, email: `${id}@exemple.test`, password_hash: 'x', locale: 'fr', status: 'active' } as never).execute();
        throw new Error('stop');
      }),
    ).rejects.toThrow('stop');
    expect(sent).toHaveLength(2);
    expect(sent[1]).toBe('rollback');
    const other = randomUUID();
    sent.length = 0;
    await expect(
      inTenant(t.db, a.id, async (trx) => {
        // A quoted $: the held statements go first, on their own, then this one with its parameters.
        await sql`INSERT INTO accounts (id, tenant_id, email, password_hash, locale, status) VALUES (${other}, ${a.id}, ${`${other}@exemple.test`}, '$1', 'fr', 'active')`.execute(trx);
        throw new Error('stop');
      }),
    ).rejects.toThrow('stop');
    expect(sent).toHaveLength(3);
    expect(sent[0]).toMatch(/^begin; \/\* guichet:held \*\/ [^;]*$/);
    expect(sent[1]).toMatch(/VALUES \(\$1, \$2, \$3, '\$1'/);
    const left = await t.ownerDb().selectFrom('accounts').select('id').where('id', 'in', [id, other]).execute();
    expect(left).toEqual([]);
  });

  it('a failing first statement leaves nothing open: the connection serves the next transaction', async () => {
    await expect(inTenant(t.db, a.id, async (trx) => sql`SELECT 1 / ${0}::int`.execute(trx))).rejects.toThrow(/division by zero/);
    expect(sent.at(-1)).toBe('rollback');
    const n = await inTenant(t.db, a.id, async (trx) => (await sql<{ n: number }>`SELECT 2 AS n`.execute(trx)).rows[0]!.n);
    expect(n).toBe(2);
  });

  it('sends nothing for a transaction that ends before its first statement', async () => {
    await t.db.transaction().execute(async () => 'nothing');
    await inTenant(t.db, a.id, async () => 'settings only');
    await expect(
      t.db.transaction().execute(async () => {
        throw new Error('before any statement');
      }),
    ).rejects.toThrow('before any statement');
    expect(sent).toEqual([]);
  });
});

describe.runIf(process.env.GUICHET_TEST_DB === 'postgres')('statements prepared on each connection', () => {
  let t: TestDatabase;
  let a: TestTenant;
  const sent: string[] = [];
  let stopRecording: (() => void) | undefined;
  // A text no other test sends: the connection has not prepared it yet.
  let n = 0;
  const unique = () => `held-begin-${randomUUID()}-${++n}`;

  beforeAll(async () => {
    t = await createTestDatabase();
    a = await createTestTenant(t);
    stopRecording = recordMessages(sent);
  });
  afterEach(() => {
    sent.length = 0;
  });
  afterAll(async () => {
    stopRecording?.();
    await t?.close();
  });

  it('is prepared the first time in a message of its own, then travels as EXECUTE with BEGIN, the settings and COMMIT', async () => {
    const tag = unique();
    const ask = (v: string) => inTenant(t.db, a.id, async (trx) => (await sql<{ v: string; tag: string }>`SELECT ${v}::text AS v, ${tag}::text AS tag ${sql.raw(LAST_OF_TRANSACTION)}`.execute(trx)).rows);
    expect(await ask('un')).toEqual([{ v: 'un', tag }]);
    expect(sent).toHaveLength(2);
    const name = /^prepare (guichet_\d+) as SELECT \$1::text AS v, \$2::text AS tag \/\* guichet:last \*\/$/.exec(sent[0]!)?.[1];
    expect(name, sent[0]).toBeTruthy();
    expect(sent[1]).toMatch(new RegExp(`^begin; /\\* guichet:held \\*/ [^;]*; execute ${name}\\('un', '${tag}'\\); commit$`));
    sent.length = 0;
    // The pool hands back the connection released last: the same one, which has it prepared.
    expect(await ask('deux')).toEqual([{ v: 'deux', tag }]);
    expect(sent).toEqual([expect.stringMatching(new RegExp(`^begin; .*; execute ${name}\\('deux', '${tag}'\\); commit$`))]);
  });

  it('gives the same answers prepared as written in, for every kind of parameter', async () => {
    const at = new Date('2026-11-23T17:21:27.123Z');
    const values = (trx: Parameters<Parameters<typeof inTenant>[2]>[0], tag: string) =>
      sql<Record<string, unknown>>`SELECT ${'l’été « 1 » \'x\' \\ $1'}::text AS s, ${42}::int AS i, ${1.5}::numeric AS n, ${true}::boolean AS b, ${null}::text AS z,
        ${at}::timestamptz AS t, ${Buffer.from([0, 1, 254, 255])}::bytea AS y, ${['a', 'b c', 'd"e']}::text[] AS arr, ${JSON.stringify({ k: ['v'] })}::jsonb AS j, ${tag}::text AS tag`.execute(trx);
    const tag = unique();
    const first = await inTenant(t.db, a.id, async (trx) => (await values(trx, tag)).rows[0]);
    const second = await inTenant(t.db, a.id, async (trx) => (await values(trx, tag)).rows[0]);
    expect(sent.filter((m) => m.startsWith('prepare '))).toHaveLength(1);
    expect(sent.filter((m) => / execute guichet_\d+\(/.test(m))).toHaveLength(2);
    const expected = { s: 'l’été « 1 » \'x\' \\ $1', i: 42, n: '1.5', b: true, z: null, t: at, y: Buffer.from([0, 1, 254, 255]), arr: ['a', 'b c', 'd"e'], j: { k: ['v'] }, tag };
    expect(first).toEqual(expected);
    expect(second).toEqual(expected);
  });

  it('keeps a generic plan under row-level security once PostgreSQL has seen it is no worse', async () => {
    const tag = unique();
    const plans = await inTenant(t.db, a.id, async (trx) => {
      for (let i = 0; i < 8; i++) await sql`SELECT id FROM accounts WHERE id = ${randomUUID()} AND email <> ${tag}`.execute(trx);
      return (
        await sql<{ generic: string; custom: string }>`SELECT generic_plans::text AS generic, custom_plans::text AS custom FROM pg_prepared_statements WHERE statement LIKE ${'%SELECT id FROM accounts WHERE id = $1 AND email <> $2%'}`.execute(trx)
      ).rows;
    });
    expect(plans).toHaveLength(1);
    expect(Number(plans[0]!.custom)).toBeLessThanOrEqual(5);
    expect(Number(plans[0]!.generic)).toBeGreaterThanOrEqual(3);
  });

  it('never prepares a statement whose columns are a *: a column added under a running server would break its plan', async () => {
    const rows = await inTenant(t.db, a.id, async (trx) => trx.selectFrom('accounts').selectAll().where('email', '=', `${unique()}@exemple.test`).execute());
    expect(rows).toEqual([]);
    expect(sent.some((m) => m.startsWith('prepare '))).toBe(false);
    expect(sent.some((m) => /select \* from "accounts" where "email" = 'held-begin-/.test(m))).toBe(true);
  });

  it('a statement that fails stays prepared, and the next transaction uses it', async () => {
    const tag = unique();
    const divide = (by: number) => inTenant(t.db, a.id, async (trx) => (await sql<{ q: number }>`SELECT (10 / ${by}::int) AS q, ${tag}::text AS tag`.execute(trx)).rows[0]!.q);
    await expect(divide(0)).rejects.toThrow(/division by zero/);
    expect(sent.filter((m) => m.startsWith('prepare '))).toHaveLength(1);
    expect(sent.at(-1)).toBe('rollback');
    sent.length = 0;
    expect(await divide(5)).toBe(2);
    expect(sent.some((m) => m.startsWith('prepare '))).toBe(false);
  });

  it(`a connection keeps at most ${PREPARED_PER_CONNECTION}, dropping the least recently used`, async () => {
    const kept = await inTenant(t.db, a.id, async (trx) => {
      const tags = Array.from({ length: PREPARED_PER_CONNECTION + 1 }, () => unique());
      // The tag in the text: as many statements as tags.
      for (const tag of tags) await sql`SELECT ${sql.lit(tag)}::text AS tag, ${1}::int AS one`.execute(trx);
      return (await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_prepared_statements WHERE name LIKE 'guichet\_%'`.execute(trx)).rows[0]!.n;
    });
    expect(kept).toBeLessThanOrEqual(PREPARED_PER_CONNECTION);
    expect(sent.filter((m) => /^deallocate guichet_\d+; prepare guichet_\d+ as /.test(m)).length).toBeGreaterThanOrEqual(1);
  });
});
