/**
 * Broken object-level authorization, tried on every route that takes an id.
 * The routes are read from the router (GET and POST), so a route added
 * tomorrow is tried the day it is registered. Each is called by each kind of
 * person of one tenant — parent, facility staff (director of one facility),
 * programme operator, security officer, administrator — with the ids of
 * objects that are not theirs: another family's child and application (for
 * the parent), another facility (for the staff member), and a real id of every
 * kind of row of another tenant (for everyone). Body fields naming a child,
 * facility, application, offer or account carry the same ids. None of these
 * requests succeeds, each leaves a refusal in the tenant's audit log, and
 * nothing of the other family, facility or tenant changes.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { registeredRoutes, startTestApp, type TestApp } from '../helpers/app.ts';
import type { Client, Response } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { buildSide, idsOfEveryKind, ROLES, type Role, type Side } from '../helpers/world.ts';

let database: TestDatabase;
let t: TestApp;
let A: Side;
let B: Side;
let foreignOfB: Map<string, string>;
const clients = new Map<Role, Client>();
const started = Date.now();

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
  [A, B] = [await buildSide(t), await buildSide(t)];
  foreignOfB = await idsOfEveryKind(t, B.tenant);
  for (const who of ROLES) clients.set(who, await A.signIn(who));
  console.log(`[object-access] fixtures (two tenants, four families, four facilities, ten people) in ${Date.now() - started} ms; ${foreignOfB.size} kinds of ids of the other tenant`);
}, 120_000);

afterAll(async () => {
  console.log(`[object-access] whole file in ${Date.now() - started} ms`);
  await t?.close();
  await database?.close();
});

/**
 * Routes that are no object's to a signed-in person: a statistics table's
 * name; the facility API, which ignores sessions and answers any request
 * without a key 401 (a key's misuse is recorded as api.key.use, tried in
 * test/api/facility-api.test.ts).
 */
const NOT_AN_OBJECT = (route: string) => route === '/operator/statistics/:table' || route.startsWith('/api/');

/** Routes of the public directory: any facility of the tenant is everyone's to read; another tenant's is not. */
const PUBLIC_FACILITY = /^\/directory\/:id$/;

/** The rows of the other tenant worth trying in a parameter: the kind the route names first, then the core kinds. */
function tenantBIds(route: string, param: string): [string, string][] {
  const segment = (route.split('/:' + param)[0] ?? '').split('/').pop() ?? '';
  const stem = segment.replace(/-/g, '_').replace(/ies$/, 'y').replace(/s$/, '');
  const named = [...foreignOfB].filter(([table]) => stem.length > 2 && table.includes(stem)).slice(0, 1);
  const core: [string, string][] = [
    ['children', B.child1],
    ['facilities', B.facility1],
  ];
  const seen = new Set<string>();
  return [...named, ...core].filter(([, id]) => !seen.has(id) && !!seen.add(id)).map(([table, id]) => [`another tenant's ${table} row`, id]);
}

/** Ids of the same tenant that are not this person's to use. */
function sameTenantForeign(who: Role, route: string): [string, string][] {
  if (who === 'parent') return [["another family's child", A.child2], ["another family's application", A.app2], ["another family's account", A.accounts.parent2]];
  if (who === 'staff' && /facilities\/:id/.test(route) && !PUBLIC_FACILITY.test(route)) return [['another facility', A.facility2]];
  return [];
}

const ID_FIELDS = ['childId', 'facilityId', 'applicationId', 'offerId', 'accountId', 'familyId', 'assignee', 'id'];

async function deniedCount(side: Side): Promise<number> {
  const r = await inTenant(database.db, side.tenant.id, (trx) => trx.selectFrom('audit_events').select((eb) => eb.fn.countAll<string>().as('n')).where('outcome', '=', 'denied').executeTakeFirstOrThrow());
  return Number(r.n);
}

/** Every row of the other family, facility and tenant that a request could change. */
async function foreignState(): Promise<unknown> {
  const of = (side: Side, f: (trx: Parameters<Parameters<typeof inTenant>[2]>[0]) => Promise<unknown>) => inTenant(database.db, side.tenant.id, f);
  return {
    a: await of(A, async (trx) => ({
      child2: await trx.selectFrom('children').selectAll().where('id', '=', A.child2).execute(),
      apps: await trx.selectFrom('applications').selectAll().where('child_id', '=', A.child2).orderBy('id').execute(),
      facility2: await trx.selectFrom('facilities').selectAll().where('id', '=', A.facility2).execute(),
      places2: await trx.selectFrom('facility_places').selectAll().where('facility_id', '=', A.facility2).execute(),
      parent2: await trx.selectFrom('accounts').select(['id', 'status', 'email', 'password_hash']).where('id', '=', A.accounts.parent2).execute(),
    })),
    b: await of(B, async (trx) => {
      const out: Record<string, unknown> = {};
      for (const table of ['children', 'applications', 'facilities', 'facility_places', 'accounts', 'memberships', 'sessions', 'offers', 'privilege_requests']) {
        out[table] = (await sql`select * from ${sql.table(table)} order by 1`.execute(trx)).rows.map((r) => JSON.stringify(r, (_, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v)));
      }
      return out;
    }),
  };
}

/** A request reached what it asked for: a page of the object (GET 200) or a change (POST answered 2xx or sent on elsewhere than to sign in again). */
function succeeded(method: 'GET' | 'POST', r: Response): boolean {
  if (r.status >= 400) return false;
  if (r.status >= 300) {
    const to = String(r.headers.location ?? '');
    return !/^\/(signin|reauth)(\?|$|\/)/.test(to);
  }
  return true;
}

describe('object-level authorization on every route that takes an id', () => {
  it("every route, every role, another family's, another facility's and another tenant's ids: no success, every attempt audited, nothing changed", async () => {
    const t0 = Date.now();
    const routes = (['GET', 'POST'] as const).flatMap((method) => registeredRoutes(t.app, method).filter((r) => r.includes('/:') && !NOT_AN_OBJECT(r)).map((route) => ({ method, route })));
    expect(routes.length).toBeGreaterThan(40);
    const before = await foreignState();
    const successes: string[] = [];
    const unaudited: string[] = [];
    const fivexx: string[] = [];
    let attempts = 0;
    let denied = await deniedCount(A);
    // Routes that would end the session making them go last (with a foreign id they must not, but if one did the rest would run signed out).
    const ordered = [...routes.filter((r) => !/\/(end|revoke|remove)$/.test(r.route)), ...routes.filter((r) => /\/(end|revoke|remove)$/.test(r.route))];
    for (const { method, route } of ordered) {
      const params = [...route.matchAll(/:(\w+)/g)].map((m) => m[1]!);
      for (const who of ROLES) {
        const c = clients.get(who)!;
        const seen = new Set<string>();
        const tries = [...sameTenantForeign(who, route), ...params.flatMap((p) => tenantBIds(route, p))].filter(([, id]) => !seen.has(id) && !!seen.add(id));
        for (const [what, id] of tries) {
          if (PUBLIC_FACILITY.test(route) && !what.startsWith('another tenant')) continue;
          const path = route.replace(/:(\w+)/g, () => id);
          const deniedBefore = denied;
          const body = Object.fromEntries(ID_FIELDS.map((f) => [f, id]));
          const r = method === 'GET' ? await c.get(path) : await c.post(path, body);
          attempts++;
          const label = `${who} ${method} ${route} with ${what} → ${r.status}${r.headers.location ? ` ${r.headers.location}` : ''}`;
          if (r.status >= 500) fivexx.push(label);
          if (succeeded(method, r)) successes.push(label);
          denied = await deniedCount(A);
          if (!succeeded(method, r) && denied <= deniedBefore) unaudited.push(label);
        }
      }
    }
    // Body ids on routes without a path id: a child, facility, application of another family or tenant named in the form.
    const bodyRoutes = registeredRoutes(t.app, 'POST').filter((r) => !r.includes(':') && !r.includes('*'));
    const bodyRefusals: string[] = [];
    for (const who of ['parent', 'staff'] as const) {
      const c = clients.get(who)!;
      for (const [what, body] of [
        ["another family's child", { childId: A.child2, facilityId: A.facility1 }],
        ["another tenant's child", { childId: B.child1, facilityId: A.facility1 }],
        ["another tenant's facility", { childId: A.child1, facilityId: B.facility1 }],
      ] as [string, Record<string, string>][]) {
        const deniedBefore = await deniedCount(A);
        const r = await c.post('/applications', body);
        attempts++;
        const label = `${who} POST /applications with ${what} → ${r.status}`;
        if (succeeded('POST', r)) successes.push(label);
        else if ((await deniedCount(A)) <= deniedBefore) bodyRefusals.push(label);
      }
    }
    expect(bodyRoutes).toContain('/applications');
    const ms = Date.now() - t0;
    console.log(`[object-access] ${routes.length} routes with ids × ${ROLES.length} roles: ${attempts} attempts in ${ms} ms; ${successes.length} succeeded, ${unaudited.length + bodyRefusals.length} refused without an audit event, ${fivexx.length} 5xx`);
    if (unaudited.length || bodyRefusals.length) console.log(`[object-access] refused without an audit event:\n  ${[...unaudited, ...bodyRefusals].join('\n  ')}`);
    expect(fivexx).toEqual([]);
    expect(successes).toEqual([]);
    expect([...unaudited, ...bodyRefusals]).toEqual([]);
    expect(await foreignState()).toEqual(before);
  }, 600_000);
});
