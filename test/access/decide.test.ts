/**
 * decide() against a written table: every action of the catalogue, for every
 * kind of actor. Then the property that makes lists safe: for any actor and
 * any resource, sqlFilter() selects the row exactly when decide() allows it,
 * checked with real queries on the test database.
 */
import { sql, type Expression, type SqlBool } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ACTIONS, type Action, type Resource } from '../../src/access/actions.ts';
import type { Actor, Membership } from '../../src/access/actor.ts';
import { decide, sqlFilter, type FilterColumns } from '../../src/access/decide.ts';
import type { MembershipRole } from '../../src/db/schema.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';

let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase();
});

afterAll(async () => {
  await database?.close();
});

const NOW = new Date('2026-03-15T14:00:00Z');
const HOUR = 3600_000;

const FACILITY_A = 'a0000000-0000-4000-8000-00000000000a';
const FACILITY_B = 'b0000000-0000-4000-8000-00000000000b';
const OWNER = '10000000-0000-4000-8000-000000000001';
const OTHER = '20000000-0000-4000-8000-000000000002';
const TENANT = 'f0000000-0000-4000-8000-0000000000ff';

function actor(accountId: string, emailVerified: boolean, memberships: Omit<Membership, 'id'>[] = []): Actor {
  return {
    accountId,
    tenantId: TENANT,
    sessionId: null,
    email: `${accountId.slice(0, 8)}@exemple.test`,
    emailVerified,
    locale: 'fr',
    memberships: memberships.map((m, i) => ({ id: `${accountId.slice(0, 30)}${String(i).padStart(6, '0')}`, ...m })),
    // Signed in with a second factor: without one, staff open no personal data (test/identity/factors-stepup.test.ts).
    mfa: true,
  };
}

/* ------------------------------------------------------------ the actors */

const ACTORS = {
  anonymous: null,
  unverified: actor('30000000-0000-4000-8000-000000000003', false),
  unverifiedOwner: actor(OWNER, false),
  owner: actor(OWNER, true),
  otherParent: actor(OTHER, true),
  staffA: actor('40000000-0000-4000-8000-000000000004', true, [{ role: 'facility_staff', facilityId: FACILITY_A, expiresAt: null }]),
  staffB: actor('50000000-0000-4000-8000-000000000005', true, [{ role: 'facility_staff', facilityId: FACILITY_B, expiresAt: null }]),
  directorA: actor('60000000-0000-4000-8000-000000000006', true, [{ role: 'facility_director', facilityId: FACILITY_A, expiresAt: new Date(NOW.getTime() + HOUR) }]),
  admin: actor('70000000-0000-4000-8000-000000000007', true, [{ role: 'tenant_admin', facilityId: null, expiresAt: null }]),
  expiredStaffA: actor('80000000-0000-4000-8000-000000000008', true, [{ role: 'facility_staff', facilityId: FACILITY_A, expiresAt: new Date(NOW.getTime() - 1) }]),
  // expires at this very instant: an expiry is the first moment it no longer counts
  expiringAdmin: actor('90000000-0000-4000-8000-000000000009', true, [{ role: 'tenant_admin', facilityId: null, expiresAt: NOW }]),
  // the security console: the audit head, alerts and lockdown
  securityOfficer: actor('a1000000-0000-4000-8000-0000000000a1', true, [{ role: 'security_officer', facilityId: null, expiresAt: null }]),
} satisfies Record<string, Actor | null>;

type ActorName = keyof typeof ACTORS;
const COLUMNS = Object.keys(ACTORS) as ActorName[];

/** The resource each action is checked against in the application. */
const RESOURCE_OF: Record<Action, Resource> = {
  'directory.facility.read': { type: 'facility', facilityId: FACILITY_A },
  'waitlist.childFile.create': { type: 'tenant' },
  'waitlist.childFile.read': { type: 'family', ownerAccountId: OWNER },
  'waitlist.allocation.read': { type: 'family', ownerAccountId: OWNER },
  'waitlist.childFile.list': { type: 'family', ownerAccountId: OWNER },
  'waitlist.childFile.update': { type: 'family', ownerAccountId: OWNER },
  'waitlist.application.create': { type: 'family', ownerAccountId: OWNER },
  'waitlist.application.withdraw': { type: 'family', ownerAccountId: OWNER },
  'family.profile.read': { type: 'family', ownerAccountId: OWNER },
  'family.profile.update': { type: 'family', ownerAccountId: OWNER },
  'waitlist.facility.priorities.update': { type: 'facility', facilityId: FACILITY_A },
  'waitlist.childFile.confirm': { type: 'family', ownerAccountId: OWNER },
  'waitlist.candidates.list': { type: 'facility', facilityId: FACILITY_A },
  'staff.facility.open': { type: 'facility', facilityId: FACILITY_A },
  'identity.invitation.create': { type: 'tenant' },
  'identity.invitation.list': { type: 'tenant' },
  'identity.sessions.end': { type: 'tenant' },
  'identity.grant.request': { type: 'tenant' },
  'identity.grant.requestForSelf': { type: 'tenant' },
  'identity.grant.approve': { type: 'tenant' },
  'identity.grant.list': { type: 'tenant' },
  'identity.grant.revoke': { type: 'tenant' },
  'identity.staff.list': { type: 'tenant' },
  'identity.factorReset.request': { type: 'tenant' },
  'identity.factorReset.approve': { type: 'tenant' },
  'identity.factorReset.list': { type: 'tenant' },
  'audit.head.read': { type: 'tenant' },
  'waitlist.childFile.delete': { type: 'family', ownerAccountId: OWNER },
  'waitlist.childFile.restore.request': { type: 'family', ownerAccountId: OWNER },
  'waitlist.childFile.restore.approve': { type: 'tenant' },
  'waitlist.childFile.lookupByNirec': { type: 'tenant' },
  'waitlist.childFile.history': { type: 'tenant' },
  'oidc.client.create': { type: 'tenant' },
  'oidc.client.list': { type: 'tenant' },
  'oidc.client.update': { type: 'tenant' },
  'oidc.client.approve': { type: 'tenant' },
  'oidc.entitlement.manage': { type: 'tenant' },
  'oidc.entitlement.readOwn': { type: 'tenant' },
  'privacy.accessLog.read': { type: 'family', ownerAccountId: OWNER },
  'privacy.export': { type: 'family', ownerAccountId: OWNER },
  'privacy.deletion.request': { type: 'family', ownerAccountId: OWNER },
  'privacy.breachReport.create': { type: 'tenant' },
  'incident.read': { type: 'tenant' },
  'incident.write': { type: 'tenant' },
  'privacy.breachNotices.send': { type: 'tenant' },
  'retention.preview': { type: 'tenant' },
  'detection.alert.list': { type: 'tenant' },
  'detection.alert.update': { type: 'tenant' },
  'detection.rules.update': { type: 'tenant' },
  'detection.batch.declare': { type: 'tenant' },
  'detection.webhook.update': { type: 'tenant' },
  'records.childFile.protect': { type: 'tenant' },
  'detection.protected.review': { type: 'tenant' },
  'detection.lockdown.raise': { type: 'tenant' },
  'detection.lockdown.lower': { type: 'tenant' },
  'statistics.read': { type: 'tenant' },
  'allocation.settings.read': { type: 'tenant' },
  'allocation.settings.update': { type: 'tenant' },
  'assisted.session.start': { type: 'tenant' },
  'waitlist.places.read': { type: 'facility', facilityId: FACILITY_A },
  'waitlist.vacancy.declare': { type: 'facility', facilityId: FACILITY_A },
  'waitlist.referral.list': { type: 'facility', facilityId: FACILITY_A },
  'waitlist.offer.confirmStart': { type: 'facility', facilityId: FACILITY_A },
  'waitlist.offer.read': { type: 'family', ownerAccountId: OWNER },
  'waitlist.offer.answer': { type: 'family', ownerAccountId: OWNER },
  'api.key.manage': { type: 'facility', facilityId: FACILITY_A },
  'api.key.revoke': { type: 'facility', facilityId: FACILITY_A },
};

/*
 * The written expectation. One letter per actor, in the order of ACTORS:
 *   Y allowed    s refused, not signed in    v refused, e-mail not verified    n refused, no rule matches
 *
 *                                  anonymous
 *                                  | unverified
 *                                  | | unverifiedOwner
 *                                  | | | owner
 *                                  | | | | otherParent
 *                                  | | | | | staffA
 *                                  | | | | | | staffB
 *                                  | | | | | | | directorA
 *                                  | | | | | | | | admin
 *                                  | | | | | | | | | expiredStaffA
 *                                  | | | | | | | | | | expiringAdmin
 *                                  | | | | | | | | | | | securityOfficer
 */
const TABLE: Record<Action, string> = {
  'directory.facility.read':       'Y Y Y Y Y Y Y Y Y Y Y Y',
  'waitlist.childFile.create':     's v v Y Y Y Y Y Y Y Y Y',
  'waitlist.childFile.read':       's v v Y n n n n n n n n',
  'waitlist.allocation.read':      's v v Y n n n n n n n n',
  'waitlist.childFile.list':       's v v Y n n n n n n n n',
  'waitlist.childFile.update':     's v v Y n n n n n n n n',
  'waitlist.application.create':   's v v Y n n n n n n n n',
  'waitlist.application.withdraw': 's v v Y n n n n n n n n',
  'family.profile.read':           's v v Y n n n n n n n n',
  'family.profile.update':         's v v Y n n n n n n n n',
  'waitlist.facility.priorities.update': 's n n n n n n Y Y n n n',
  'waitlist.childFile.confirm':    's v v Y n n n n n n n n',
  'waitlist.candidates.list':      's n n n n Y n Y n n n n',
  'staff.facility.open':           's n n n n Y n Y n n n n',
  'identity.invitation.create':    's n n n n n n n Y n n n',
  'identity.invitation.list':      's n n n n n n n Y n n n',
  'identity.sessions.end':         's n n n n n n n Y n n n',
  'identity.grant.request':        's n n n n n n n Y n n n',
  'identity.grant.requestForSelf': 's n n n n Y Y Y n n n Y',
  'identity.grant.approve':        's n n n n n n n Y n n n',
  'identity.grant.list':           's n n n n n n n Y n n n',
  'identity.grant.revoke':         's n n n n n n n Y n n n',
  'identity.staff.list':           's n n n n n n n Y n n n',
  'identity.factorReset.request':  's n n n n n n n Y n n n',
  'identity.factorReset.approve':  's n n n n n n n Y n n n',
  'identity.factorReset.list':     's n n n n n n n Y n n n',
  'audit.head.read':               's n n n n n n n Y n n Y',
  'waitlist.childFile.delete':          's v v Y n n n n Y n n n',
  'waitlist.childFile.restore.request': 's v v Y n n n n Y n n n',
  'waitlist.childFile.restore.approve': 's n n n n n n n Y n n n',
  'waitlist.childFile.lookupByNirec':   's n n n n n n n Y n n n',
  'waitlist.childFile.history':         's n n n n n n n Y n n n',
  'oidc.client.create':                 's n n n n n n n Y n n n',
  'oidc.client.list':                   's n n n n n n n Y n n n',
  'oidc.client.update':                 's n n n n n n n Y n n n',
  'oidc.client.approve':                's n n n n n n n Y n n n',
  'oidc.entitlement.manage':            's n n n n n n n Y n n n',
  'oidc.entitlement.readOwn':           's v v Y Y Y Y Y Y Y Y Y',
  'privacy.accessLog.read':             's v v Y n n n n n n n n',
  'privacy.export':                     's v v Y n n n n n n n n',
  'privacy.deletion.request':           's v v Y n n n n n n n n',
  'privacy.breachReport.create':        's n n n n n n n n n n Y',
  'incident.read':                      's n n n n n n n n n n Y',
  'incident.write':                     's n n n n n n n n n n Y',
  'privacy.breachNotices.send':         's n n n n n n n n n n Y',
  'retention.preview':                  's n n n n n n n Y n n n',
  'detection.alert.list':               's n n n n n n n n n n Y',
  'detection.alert.update':             's n n n n n n n n n n Y',
  'detection.rules.update':             's n n n n n n n n n n Y',
  'detection.batch.declare':            's n n n n n n n n n n Y',
  'detection.webhook.update':           's n n n n n n n n n n Y',
  'records.childFile.protect':          's n n n n n n n Y n n n',
  'detection.protected.review':         's n n n n n n n n n n Y',
  'detection.lockdown.raise':           's n n n n n n n n n n Y',
  'detection.lockdown.lower':           's n n n n n n n n n n Y',
  'statistics.read':                    's n n n n n n n Y n n n',
  'allocation.settings.read':           's n n n n n n n Y n n n',
  'allocation.settings.update':         's n n n n n n n Y n n n',
  'assisted.session.start':             's n n n n Y Y Y n n n n',
  'waitlist.places.read':               's n n n n Y n Y n n n n',
  'waitlist.vacancy.declare':           's n n n n Y n Y n n n n',
  'waitlist.referral.list':             's n n n n Y n Y n n n n',
  'waitlist.offer.confirmStart':        's n n n n n n Y n n n n',
  'waitlist.offer.read':                's v v Y n n n n n n n n',
  'waitlist.offer.answer':              's v v Y n n n n n n n n',
  'api.key.manage':                     's n n n n n n Y n n n n',
  'api.key.revoke':                     's n n n n n n Y Y n n Y',
};

const REASON = { s: 'not_signed_in', v: 'email_not_verified', n: 'no_rule_matches' } as const;

describe('decide(), action by actor', () => {
  it('the table names every action of the catalogue, and each row has one entry per actor', () => {
    expect(Object.keys(TABLE).sort()).toEqual(Object.keys(ACTIONS).sort());
    expect(Object.keys(RESOURCE_OF).sort()).toEqual(Object.keys(ACTIONS).sort());
    for (const [action, row] of Object.entries(TABLE)) expect(row.split(' '), action).toHaveLength(COLUMNS.length);
  });

  for (const action of Object.keys(ACTIONS) as Action[]) {
    it(`${action}`, () => {
      const expected = TABLE[action].split(' ');
      const got = COLUMNS.map((name) => {
        const d = decide(ACTORS[name], action, RESOURCE_OF[action], NOW);
        if (d.allowed) {
          expect(d.rule, `${action} × ${name}: an allowed decision names its rule`).toBeDefined();
          expect(d.reason).toBeUndefined();
          return 'Y';
        }
        const letter = (Object.entries(REASON).find(([, r]) => r === d.reason) ?? ['?'])[0];
        return letter;
      });
      expect(got.map((g, i) => `${COLUMNS[i]}:${g}`)).toEqual(expected.map((e, i) => `${COLUMNS[i]}:${e}`));
    });
  }

  it('a facility role counts only for its own facility, whatever the action', () => {
    for (const action of ['waitlist.candidates.list', 'staff.facility.open'] as const) {
      expect(decide(ACTORS.staffA, action, { type: 'facility', facilityId: FACILITY_B }, NOW).allowed).toBe(false);
      expect(decide(ACTORS.staffB, action, { type: 'facility', facilityId: FACILITY_B }, NOW).allowed).toBe(true);
      // a facility rule never matches a resource that is not a facility
      expect(decide(ACTORS.staffA, action, { type: 'tenant' }, NOW).allowed).toBe(false);
      expect(decide(ACTORS.staffA, action, { type: 'family', ownerAccountId: ACTORS.staffA.accountId }, NOW).allowed).toBe(false);
    }
  });

  it('a membership is current until its expiry, and not at it', () => {
    const at = (ms: number) => decide(ACTORS.directorA, 'waitlist.candidates.list', RESOURCE_OF['waitlist.candidates.list'], new Date(NOW.getTime() + ms)).allowed;
    expect(at(HOUR - 1)).toBe(true);
    expect(at(HOUR)).toBe(false);
    expect(at(HOUR + 1)).toBe(false);
  });

  it('the allowing rule is the one that matched', () => {
    const d = decide(ACTORS.directorA, 'waitlist.candidates.list', RESOURCE_OF['waitlist.candidates.list'], NOW);
    expect(d.rule).toEqual({ who: 'role', role: 'facility_director', scope: 'facility' });
    expect(decide(ACTORS.owner, 'waitlist.childFile.read', RESOURCE_OF['waitlist.childFile.read'], NOW).rule).toEqual({ who: 'familyOwner' });
  });
});

/* ----------------------------------------------- sqlFilter() equals decide() */

/** mulberry32: a small seeded generator, so that a failure can be replayed from its seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ROLES: MembershipRole[] = ['tenant_admin', 'security_officer', 'program_operator', 'facility_director', 'facility_staff'];
const ACCOUNT_POOL = [OWNER, OTHER, '30000000-0000-4000-8000-000000000003', '40000000-0000-4000-8000-000000000004'];
const FACILITY_POOL = [FACILITY_A, FACILITY_B, 'c0000000-0000-4000-8000-00000000000c'];
const EXPIRIES = [null, null, new Date(NOW.getTime() - 1), NOW, new Date(NOW.getTime() + 1), new Date(NOW.getTime() + HOUR), new Date(NOW.getTime() - 86_400_000)];

function pick<T>(r: () => number, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)]!;
}

function randomActor(r: () => number): Actor | null {
  if (r() < 0.1) return null;
  const n = Math.floor(r() * 4);
  const ms: Omit<Membership, 'id'>[] = [];
  for (let i = 0; i < n; i++) {
    const role = pick(r, ROLES);
    ms.push({ role, facilityId: r() < 0.3 ? null : pick(r, FACILITY_POOL), expiresAt: pick(r, EXPIRIES) });
  }
  return actor(pick(r, ACCOUNT_POOL), r() < 0.8, ms);
}

function randomResource(r: () => number): Resource {
  const k = r();
  if (k < 0.2) return { type: 'tenant' };
  if (k < 0.6) return { type: 'facility', facilityId: pick(r, FACILITY_POOL) };
  return { type: 'family', ownerAccountId: pick(r, ACCOUNT_POOL) };
}

/** The row a resource stands for: its owner and its facility, or NULL for what it does not have. */
function rowOf(resource: Resource): { owner: string | null; facility: string | null } {
  if (resource.type === 'family') return { owner: resource.ownerAccountId, facility: null };
  if (resource.type === 'facility') return { owner: null, facility: resource.facilityId };
  return { owner: null, facility: null };
}

/** Does the filter select the resource's row? A real query: SELECT … FROM (VALUES …) WHERE <filter>. */
async function selects(filter: Expression<SqlBool>, resource: Resource): Promise<boolean> {
  const { owner, facility } = rowOf(resource);
  const { rows } = await sql<{ hit: boolean }>`
    SELECT EXISTS (
      SELECT 1 FROM (VALUES (CAST(${owner} AS uuid), CAST(${facility} AS uuid))) AS r(family_owner, facility_id)
      WHERE ${filter}
    ) AS hit`.execute(database.db);
  return rows[0]!.hit;
}

const ALL_COLUMNS: FilterColumns = { familyOwner: sql.ref('r.family_owner'), facilityId: sql.ref('r.facility_id') };

function describeCase(seed: number, i: number, a: Actor | null, action: Action, resource: Resource): string {
  return JSON.stringify({ seed, i, action, resource, actor: a && { accountId: a.accountId, emailVerified: a.emailVerified, memberships: a.memberships } });
}

describe('sqlFilter() selects a row exactly when decide() allows it', () => {
  const SEED = 20260315;
  const CASES = 1200;

  it(`on ${CASES} random actors and resources (seed ${SEED}), and on every table actor × every resource`, async () => {
    const r = rng(SEED);
    const actions = Object.keys(ACTIONS) as Action[];
    const cases: [Actor | null, Action, Resource][] = [];
    for (let i = 0; i < CASES; i++) cases.push([randomActor(r), pick(r, actions), randomResource(r)]);
    // and the fixed actors against a spread of resources
    const resources: Resource[] = [{ type: 'tenant' }, ...FACILITY_POOL.map((f) => ({ type: 'facility', facilityId: f }) as const), ...ACCOUNT_POOL.map((o) => ({ type: 'family', ownerAccountId: o }) as const)];
    for (const name of COLUMNS) for (const action of actions) for (const res of resources) cases.push([ACTORS[name], action, res]);

    const mismatches: string[] = [];
    let allowed = 0;
    for (const [i, [a, action, resource]] of cases.entries()) {
      const d = decide(a, action, resource, NOW).allowed;
      const s = await selects(sqlFilter(a, action, ALL_COLUMNS, NOW), resource);
      if (d) allowed++;
      if (d !== s) mismatches.push(`decide=${d} sql=${s} ${describeCase(SEED, i, a, action, resource)}`);
    }
    expect(mismatches).toEqual([]);
    // the generator must produce both answers in fair numbers, or the property proves little
    // (12 %: most actions added since are one tenant role's, which few random actors hold)
    expect(allowed).toBeGreaterThan(cases.length * 0.12);
    expect(cases.length - allowed).toBeGreaterThan(cases.length * 0.15);
  });

  it('a filter missing a column can only hide rows, never show one that decide() refuses', async () => {
    const r = rng(7);
    const actions = Object.keys(ACTIONS) as Action[];
    const wrong: string[] = [];
    for (let i = 0; i < 400; i++) {
      const a = randomActor(r);
      const action = pick(r, actions);
      const resource = randomResource(r);
      const cols: FilterColumns = pick(r, [{}, { familyOwner: ALL_COLUMNS.familyOwner! }, { facilityId: ALL_COLUMNS.facilityId! }]);
      const d = decide(a, action, resource, NOW).allowed;
      const s = await selects(sqlFilter(a, action, cols, NOW), resource);
      if (s && !d) wrong.push(`columns=${Object.keys(cols).join(',') || 'none'} ${describeCase(7, i, a, action, resource)}`);
    }
    expect(wrong).toEqual([]);
  });

  it('an identifier cannot inject SQL through the filter', async () => {
    const evil = actor("x' OR true --", true, [{ role: 'facility_staff', facilityId: "y') OR true --", expiresAt: null }]);
    const filter = sqlFilter(evil, 'waitlist.candidates.list', { facilityId: sql.ref('r.facility_id') }, NOW);
    const { rows } = await sql<{ hit: boolean }>`SELECT EXISTS (SELECT 1 FROM (VALUES (CAST(${FACILITY_A} AS text))) AS r(facility_id) WHERE ${filter}) AS hit`.execute(database.db);
    expect(rows[0]!.hit).toBe(false);
    const owner = sqlFilter(evil, 'waitlist.childFile.read', { familyOwner: sql.ref('r.owner') }, NOW);
    const { rows: rows2 } = await sql<{ hit: boolean }>`SELECT EXISTS (SELECT 1 FROM (VALUES (CAST(${OWNER} AS text))) AS r(owner) WHERE ${owner}) AS hit`.execute(database.db);
    expect(rows2[0]!.hit).toBe(false);
  });
});
