/**
 * The notes behind back-channel logout (migration 0036, src/oidc/logout.ts):
 * the database notes every account whose sign-ins may just have ended —
 * whatever wrote the change — and a request looks only at those accounts'
 * provider sessions, not at every provider session of the tenant (with
 * thousands of people signed in to other services, that look was seconds of
 * the database's time after every POST).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { Provider } from 'oidc-provider';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { endOrphanedProviderSessions, orphanedProviderSessions } from '../../src/oidc/logout.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { createParent, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client } from '../helpers/client.ts';
import { createTestDatabase, recordMessages, type TestDatabase } from '../helpers/db.ts';

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

const ORIGIN = { actorAccountId: null, actorRoles: ['system:test'], ip: null, userAgent: null, requestId: null };

async function person(tenant: Tenant): Promise<string> {
  return createParent(t, tenant, `p.${randomBytes(4).toString('hex')}@exemple.test`);
}

async function openSession(tenant: Tenant, accountId: string): Promise<string> {
  const now = t.deps.clock();
  const row = await inTenant(database.db, tenant.id, (trx) =>
    trx
      .insertInto('sessions')
      .values({ tenant_id: tenant.id, account_id: accountId, token_hash: randomBytes(32), created_at: now, last_seen_at: now, idle_timeout_seconds: 3600, expires_at: new Date(now.getTime() + 3_600_000), ip: null, user_agent: null, auth_methods: ['password'], authenticated_at: now })
      .returning('id')
      .executeTakeFirstOrThrow(),
  );
  return row.id;
}

async function providerSession(tenant: Tenant, accountId: string): Promise<string> {
  const id = randomUUID();
  await inTenant(database.db, tenant.id, (trx) => trx.insertInto('oidc_payloads').values({ tenant_id: tenant.id, model: 'Session', id, payload: JSON.stringify({ accountId, authorizations: {} }) }).execute());
  return id;
}

async function notes(tenant: Tenant): Promise<string[]> {
  const rows = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_logout_checks').select('account_id').orderBy('account_id').execute());
  return rows.map((r) => r.account_id);
}

async function providerSessions(tenant: Tenant): Promise<string[]> {
  const rows = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('oidc_payloads').select('id').where('model', '=', 'Session').execute());
  return rows.map((r) => r.id);
}

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Index Cond'?: string;
  Plans?: PlanNode[];
}

const noProvider = async (): Promise<Provider> => ({}) as Provider;

describe('the notes', () => {
  it('a revoked session and an account no longer active are noted, whoever wrote the change; nothing else is', async () => {
    const tenant = await tenantFor(t);
    const [a, b, c] = [await person(tenant), await person(tenant), await person(tenant)];
    await openSession(tenant, a);
    await openSession(tenant, b);
    const c1 = await openSession(tenant, c);
    // Opening sessions, seeing them used, a sign-in: no note.
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('sessions').set({ last_seen_at: new Date() }).where('account_id', 'in', [a, b, c]).execute());
    expect(await notes(tenant)).toEqual([]);
    // A session revoked (here by a plain UPDATE, as any path would write it), an account suspended.
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('sessions').set({ revoked_at: new Date() }).where('id', '=', c1).execute());
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('accounts').set({ status: 'suspended' }).where('id', '=', b).execute());
    expect(await notes(tenant)).toEqual([b, c].sort());
    // Revoking again, or suspending a suspended account, notes nothing more (and nothing twice).
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('sessions').set({ revoked_at: new Date() }).where('id', '=', c1).execute());
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('accounts').set({ status: 'suspended' }).where('id', '=', b).execute());
    expect(await notes(tenant)).toEqual([b, c].sort());
    // Another tenant sees none of them.
    const other = await tenantFor(t);
    expect(await notes(other)).toEqual([]);
  });

  it('after a request, only the noted accounts are looked at; each note is taken once', async () => {
    const tenant = await tenantFor(t);
    const [kept, ended, alsoLive] = [await person(tenant), await person(tenant), await person(tenant)];
    await openSession(tenant, kept);
    const s = await openSession(tenant, ended);
    await openSession(tenant, alsoLive);
    const keptPs = await providerSession(tenant, kept);
    const endedPs = await providerSession(tenant, ended);
    // A provider session whose person has no live Guichet session but was never noted (a sign-in that ran out):
    // a request leaves it to the minute's sweep.
    const lapsed = await person(tenant);
    const lapsedPs = await providerSession(tenant, lapsed);
    const livePs = await providerSession(tenant, alsoLive);

    // Nothing noted: nothing is looked at, nothing ends.
    expect(await endOrphanedProviderSessions(t.deps, tenant.id, noProvider, ORIGIN, t.deps.clock())).toEqual({ sessions: 0, told: 0, failed: 0 });
    expect((await providerSessions(tenant)).sort()).toEqual([keptPs, endedPs, lapsedPs, livePs].sort());

    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('sessions').set({ revoked_at: new Date() }).where('id', '=', s).execute());
    // Two servers taking the notes at once: the ended person's provider session ends once.
    const [r1, r2] = await Promise.all([
      endOrphanedProviderSessions(t.deps, tenant.id, noProvider, ORIGIN, t.deps.clock()),
      endOrphanedProviderSessions(t.deps, tenant.id, noProvider, ORIGIN, t.deps.clock()),
    ]);
    expect(r1.sessions + r2.sessions).toBe(1);
    expect(await notes(tenant)).toEqual([]);
    expect((await providerSessions(tenant)).sort()).toEqual([keptPs, lapsedPs, livePs].sort());

    // The sweep looks at them all: the lapsed one ends, the live ones stay.
    expect(await endOrphanedProviderSessions(t.deps, tenant.id, noProvider, ORIGIN, t.deps.clock(), undefined, 'all')).toMatchObject({ sessions: 1 });
    expect((await providerSessions(tenant)).sort()).toEqual([keptPs, livePs].sort());
    const audit = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select('details').where('action', '=', 'oidc.logout').execute());
    expect(audit.map((e) => (e.details as { account: string }).account).sort()).toEqual([ended, lapsed].sort());
  });

  it.runIf(process.env.GUICHET_TEST_DB === 'postgres')('the look at noted accounts, the sweep and a person’s grants reach their indexes under row-level security', async () => {
    // Under the application role's policies an index is usable only through leakproof operators (jsonb's ->> is
    // not; uuid equality is). With sequential scans priced out, a plan that still scans a table could use no index.
    const tenant = await tenantFor(t);
    const someone = await person(tenant);
    // A tenant with people signed in elsewhere, and statistics that say so: on an empty table any plan will do.
    await inTenant(database.db, tenant.id, (trx) =>
      sql`INSERT INTO oidc_payloads (tenant_id, model, id, payload)
          SELECT ${tenant.id}, m, gen_random_uuid()::text, jsonb_build_object('accountId', gen_random_uuid()::text, 'authorizations', '{}'::jsonb)
            FROM generate_series(1, 500), unnest(ARRAY['Session', 'Grant']) AS m`.execute(trx),
    );
    await sql`ANALYZE oidc_payloads`.execute(database.ownerDb());
    const scans = (query: { sql: string; parameters: readonly unknown[] }) =>
      inTenant(database.db, tenant.id, async (trx) => {
        await sql`SET LOCAL enable_seqscan = off`.execute(trx);
        const text = query.sql.replace(/\$(\d+)/g, (_, n: string) => {
          const v = query.parameters[Number(n) - 1];
          return `'${(Array.isArray(v) ? `{${v.join(',')}}` : v instanceof Date ? v.toISOString() : String(v)).replace(/'/g, "''")}'`;
        });
        const { rows } = await sql.raw<{ 'QUERY PLAN': { Plan: PlanNode }[] }>(`EXPLAIN (FORMAT JSON) ${text}`).execute(trx);
        const out: string[] = [];
        const walk = (n: PlanNode) => {
          if (n['Relation Name'] || n['Index Name']) out.push(`${n['Node Type']} ${n['Relation Name'] ?? ''} ${n['Index Name'] ?? ''} (${n['Index Cond'] ?? ''})`);
          for (const c of n.Plans ?? []) walk(c);
        };
        walk(rows[0]!['QUERY PLAN'][0]!.Plan);
        return out;
      });
    const look = (accounts: string[] | null) => sql`SELECT 1 FROM oidc_payloads p WHERE ${orphanedProviderSessions(tenant.id, accounts, new Date())}`.compile(database.db);
    const noted = await scans(look([someone]));
    expect(noted.filter((x) => x.startsWith('Seq Scan'))).toEqual([]);
    expect(noted.some((x) => /oidc_payloads_account \(.*account_id = ANY/.test(x)), noted.join('\n')).toBe(true);
    // The sweep reads every provider session of the tenant by design, and the live sessions by index.
    expect((await scans(look(null))).filter((x) => x.startsWith('Seq Scan'))).toEqual([]);
    const grants = await scans(database.db.selectFrom('oidc_payloads').select('id').where('model', '=', 'Grant').where('account_id', '=', someone).compile());
    expect(grants.filter((x) => x.startsWith('Seq Scan'))).toEqual([]);
    expect(grants.some((x) => /oidc_payloads_account \(.*account_id = /.test(x)), grants.join('\n')).toBe(true);
  });

  it.runIf(process.env.GUICHET_TEST_DB === 'postgres')('a POST that ends nobody’s sign-in sends one statement for it, whatever the number of provider sessions', async () => {
    // Statements sent as text (not prepared), so that what each message reads can be seen.
    const plain = await createTestDatabase({ preparedStatements: false });
    const app = await startTestApp(plain);
    try {
      const tenant = await tenantFor(app);
      const email = `p.${randomBytes(4).toString('hex')}@exemple.test`;
      const me = await createParent(app, tenant, email);
      // People signed in to other services, and this person too.
      for (let i = 0; i < 20; i++) {
        const p = await createParent(app, tenant, `o.${randomBytes(4).toString('hex')}@exemple.test`);
        await openSession(tenant, p);
        await providerSession(tenant, p);
      }
      await providerSession(tenant, me);
      const c = new Client(app.app, tenant.hosts[0]!);
      expect((await c.signIn(email, PASSWORD)).status).toBe(303);
      await c.get('/account/sessions');
      const sent: string[] = [];
      const stop = recordMessages(sent);
      try {
        // This browser's is the person's only session: ending the others ends none.
        expect((await c.post('/account/sessions/end-others', {})).status).toBe(303);
        // The look runs after the answer is sent (src/oidc/routes.tsx): give it its moment.
        for (let i = 0; i < 50 && !sent.some((m) => /oidc_logout_checks/i.test(m)); i++) await new Promise((r) => setTimeout(r, 20));
        await new Promise((r) => setTimeout(r, 100));
      } finally {
        stop();
      }
      expect(sent.filter((m) => /oidc_logout_checks/i.test(m))).toHaveLength(1);
      expect(sent.filter((m) => /oidc_payloads/i.test(m))).toEqual([]);
      expect((await providerSessions(tenant)).length).toBe(21);
    } finally {
      await app.close();
      await plain.close();
    }
  });
});
