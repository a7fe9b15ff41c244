import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import type { Actor } from '../../src/access/actor.ts';
import { loadConfig } from '../../src/config/config.ts';
import type { Ctx, Deps } from '../../src/context.ts';
import { keyProviderFromSecret } from '../../src/crypto/keys.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { foldForSearch } from '../../src/directory/import.ts';
import { bootstrapAdmins, createDemoAccount } from '../../src/identity/service.ts';
import { hashPassword } from '../../src/identity/passwords.ts';
import { counters, useCounters } from '../../src/counters/counters.ts';
import { startJobs, type RunningJobs } from '../../src/jobs/jobs.ts';
import { ROUTES } from '../../src/server.ts';
import { TenantDirectory, type Tenant } from '../../src/tenants/service.ts';
import { buildApp } from '../../src/web/app.ts';
import { createTestTenant, TEST_FILE_TENANTS, type TestDatabase, type TestTenantOverrides } from './db.ts';
import { enrolTotp, registerClockShift } from './factors.ts';
import { connectTestCounters } from './redis.ts';

export interface TestApp {
  app: FastifyInstance;
  deps: Deps;
  database: TestDatabase;
  /** Set the time every service sees. */
  setNow(d: Date): void;
  /** Move the running clock on by `ms` (the time still runs): a long run that needs fresh authenticator codes without waiting for them. */
  shiftClock(ms: number): void;
  close(): Promise<void>;
}

/** The real application over a test database, with a settable clock and no demo routes. */
export async function startTestApp(database: TestDatabase, opts: { demo?: boolean; port?: number; env?: NodeJS.ProcessEnv } = {}): Promise<TestApp> {
  let now: Date | null = null;
  let shift = 0;
  const config = {
    ...loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent', GUICHET_DEFAULT_TENANT: 'no-default-tenant', ...opts.env }),
    demo: opts.demo ?? false,
    port: opts.port ?? 0,
  };
  const deps: Deps = {
    db: database,
    config,
    clock: () => now ?? new Date(Date.now() + shift),
    log: pino({ level: 'silent' }),
    tenants: new TenantDirectory(database.db, config.defaultTenant, 0),
    keys: keyProviderFromSecret(Buffer.alloc(32, 7)),
  };
  registerClockShift(deps.clock, (ms) => {
    shift += ms;
  });
  if (process.env.GUICHET_TEST_COUNTERS === 'redis' && counters().kind !== 'redis') useCounters(await connectTestCounters());
  const app = await buildApp(deps, ROUTES);
  // A test app that listens seals, as `guichet serve` does; one that only injects requests does not.
  let jobs: RunningJobs | null = null;
  app.addHook('onListen', async () => {
    jobs = startJobs(deps, ['sealer'], { tenantFilter: (x) => TEST_FILE_TENANTS.has(x.id) });
  });
  app.addHook('onClose', async () => {
    await jobs?.stop();
  });
  await app.ready();
  return {
    app,
    deps,
    database,
    shiftClock: (ms) => {
      shift += ms;
    },
    setNow: (d) => {
      now = d;
    },
    close: async () => {
      await app.close();
    },
  };
}

export async function tenantFor(t: TestApp, overrides: TestTenantOverrides = {}): Promise<Tenant> {
  const { slug } = await createTestTenant(t.database, overrides);
  const tenant = await t.deps.tenants.bySlug(slug);
  if (!tenant) throw new Error('tenant not visible');
  return tenant;
}

let facilitySeq = 0;

export async function createFacility(t: TestApp, tenant: Tenant, over: Partial<{ name: string; municipality: string; kind: 'cpe' | 'garderie'; subsidised: boolean; places_total: number; places_infant: number }> = {}): Promise<string> {
  facilitySeq++;
  const name = over.name ?? `CPE Test ${facilitySeq}`;
  return inTenant(t.database.db, tenant.id, async (trx) => {
    const r = await trx
      .insertInto('facilities')
      .values({
        tenant_id: tenant.id,
        code: `T${facilitySeq}-${Math.random().toString(36).slice(2, 8)}`,
        name,
        kind: over.kind ?? 'cpe',
        subsidised: over.subsidised ?? true,
        address: '1, rue Principale',
        municipality: over.municipality ?? 'Longueuil',
        postal_code: 'J4K 1A1',
        region: '16 - Montérégie',
        places_total: over.places_total ?? 80,
        places_infant: over.places_infant ?? 10,
        search_key: foldForSearch(`${name} ${over.municipality ?? 'Longueuil'}`),
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    return r.id;
  });
}

export const PASSWORD = 'correct horse battery staple';

export async function createParent(t: TestApp, tenant: Tenant, email: string): Promise<string> {
  return inTenant(t.database.db, tenant.id, (trx) => createDemoAccount(trx, tenant.id, email, PASSWORD, t.deps.clock()));
}

/** Options for staff and administrators: an authenticator app (default), or no second factor at all. */
export interface MemberOptions {
  secondFactor?: boolean;
}

/**
 * A facility staff member, granted by a bootstrapped administrator as an
 * accepted invitation would; with an authenticator app unless told otherwise
 * (staff open no personal data without a second factor; Client.signIn()
 * answers the second step).
 */
/**
 * Gives back an account a test suspended by hand, the only way the database
 * allows (migration 0033): an alert about it, a reinstatement asked by one
 * person and applied by another, in one transaction.
 */
export async function reinstateAccount(t: TestApp, tenant: Tenant, accountId: string, askedBy: string, approvedBy: string): Promise<void> {
  await inTenant(t.database.db, tenant.id, async (trx) => {
    const now = t.deps.clock();
    const alert = await trx
      .insertInto('detection_alerts')
      .values({ tenant_id: tenant.id, rule_code: 'test.suspension', signal: 'test', severity: 'low', subject_account_id: accountId, response: 'suspend', lockdown_level: null, event_ids: [], details: '{}', created_at: now })
      .returning('id')
      .executeTakeFirstOrThrow();
    const r = await trx.insertInto('account_reinstatements').values({ tenant_id: tenant.id, alert_id: alert.id, account_id: accountId, requested_by: askedBy, requested_at: now, status: 'pending' }).returning('id').executeTakeFirstOrThrow();
    await trx.updateTable('account_reinstatements').set({ status: 'applied', decided_by: approvedBy, decided_at: now }).where('id', '=', r.id).execute();
    await trx.updateTable('accounts').set({ status: 'active' }).where('id', '=', accountId).execute();
  });
}

export async function createStaff(t: TestApp, tenant: Tenant, email: string, facilityId: string, adminId?: string, opts: MemberOptions = {}): Promise<string> {
  const id = await createStaffAccount(t, tenant, email, facilityId, adminId);
  if (opts.secondFactor !== false) await enrolTotp(t.deps, tenant, id, email);
  return id;
}

async function createStaffAccount(t: TestApp, tenant: Tenant, email: string, facilityId: string, adminId?: string): Promise<string> {
  return inTenant(t.database.db, tenant.id, async (trx) => {
    const id = await createDemoAccount(trx, tenant.id, email, PASSWORD, t.deps.clock());
    await trx
      .insertInto('memberships')
      .values({ tenant_id: tenant.id, account_id: id, role: 'facility_staff', facility_id: facilityId, source: 'invitation', granted_by: adminId ?? null, approved_by: null, created_at: t.deps.clock(), expires_at: null })
      .execute();
    return id;
  });
}

export async function createAdmin(t: TestApp, tenant: Tenant, email: string, opts: MemberOptions = {}): Promise<string> {
  return (await createAdmins(t, tenant, [email], opts))[0]!;
}

/** The tenant's bootstrap administrators, one or two (two are needed before any privileged role can be granted). */
export async function createAdmins(t: TestApp, tenant: Tenant, emails: string[], opts: MemberOptions = {}): Promise<string[]> {
  const rs = await bootstrapAdmins(t.database.db, tenant, emails, 'http://localhost', { actorAccountId: null, actorRoles: ['system:test'], ip: null, userAgent: null, requestId: null }, t.deps.clock());
  const hash = await hashPassword(PASSWORD);
  for (const [i, r] of rs.entries()) {
    await inTenant(t.database.db, tenant.id, (trx) => trx.updateTable('accounts').set({ password_hash: hash, email_verified_at: t.deps.clock() }).where('id', '=', r.accountId).execute());
    if (opts.secondFactor !== false) await enrolTotp(t.deps, tenant, r.accountId, emails[i]!);
  }
  return rs.map((r) => r.accountId);
}

/** A service-level context for calling services directly, as a request would. */
export function ctxFor(t: TestApp, tenant: Tenant, actor: Actor | null): Ctx {
  return { tenant, actor, ip: '127.0.0.1', userAgent: 'vitest', requestId: 'test', locale: 'fr', now: t.deps.clock(), baseUrl: 'http://localhost' };
}

/**
 * Reads the POST routes out of the router's own tree, so that a test over
 * every route cannot leave a new one out. Two prints of the tree, each
 * flawed in its own way (one shows a wildcard under a static prefix, /oidc/*,
 * as if at the root; the other drops a few parametric routes); a wildcard
 * counts only if the router confirms it holds it.
 */
export function registeredPostRoutes(app: TestApp['app']): string[] {
  return registeredRoutes(app, 'POST');
}

/** The routes registered for a method (GET, POST…), read from the router as registeredPostRoutes() does. */
export function registeredRoutes(app: TestApp['app'], method: 'GET' | 'POST'): string[] {
  const out = new Set<string>();
  for (const tree of [app.printRoutes({ commonPrefix: false }), app.printRoutes({ method })]) {
    const stack: string[] = [];
    for (const line of tree.split('\n')) {
      const m = /^((?:[│ ] {3})*)[├└]── (.*?)(?: \(([^)]*)\))?$/.exec(line);
      if (!m) continue;
      const depth = m[1]!.length / 4;
      stack.length = depth;
      stack.push(m[2]!);
      const methods = (m[3] ?? '').split(',').map((s) => s.trim());
      const route = stack.join('');
      if (methods.includes(method) && (!route.includes('*') || app.hasRoute({ method, url: route }))) out.add(route);
    }
  }
  return [...out].sort();
}

/**
 * The actor a session would resolve for the account with this e-mail, signed
 * in `ageSeconds` before `now` with `methods` (a passkey by default): for
 * calling services directly. Memberships are read as the session would,
 * without cooling-off (test/identity/break-glass.test.ts covers that).
 */
export async function actorByEmail(t: TestApp, tenant: Tenant, email: string, now: Date, ageSeconds = 10, methods: ('password' | 'passkey' | 'totp')[] = ['passkey']): Promise<Actor> {
  return inTenant(t.database.db, tenant.id, async (trx) => {
    const a = await trx.selectFrom('accounts').select(['id', 'locale']).where('email', '=', email).executeTakeFirstOrThrow();
    const ms = await trx
      .selectFrom('memberships')
      .select(['id', 'role', 'facility_id', 'expires_at'])
      .where('account_id', '=', a.id)
      .where('revoked_at', 'is', null)
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]))
      .execute();
    return {
      accountId: a.id,
      tenantId: tenant.id,
      sessionId: null,
      email,
      emailVerified: true,
      locale: a.locale,
      memberships: ms.map((m) => ({ id: m.id, role: m.role, facilityId: m.facility_id, expiresAt: m.expires_at })),
      mfa: methods.some((x) => x !== 'password'),
      auth: { methods, at: new Date(now.getTime() - ageSeconds * 1000), totp: methods.includes('totp'), passkeys: methods.includes('passkey') ? 1 : 0, vouchedPasskeys: methods.includes('passkey') ? 1 : 0, vouchedPasskey: methods.includes('passkey') },
    };
  });
}
