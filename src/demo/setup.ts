import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AuditOrigin } from '../audit/events.ts';
import type { Ctx, Deps } from '../context.ts';
import { inTenant } from '../db/tenant.ts';
import { importFacilities } from '../directory/import.ts';
import { declareVacancies, readPlaces } from '../records/offers.ts';
import { bootstrapAdmins, createDemoAccount } from '../identity/service.ts';
import { busiestFacilities } from '../records/bulk.ts';
import { addApplication, createChildFile } from '../records/gateway.ts';
import { createTenant, type Tenant } from '../tenants/service.ts';
import { addMonths, today } from '../waitlist/dates.ts';
import { seedDemo } from './seed.ts';
import { insertTotp } from '../identity/factors/store.ts';
import { newTotpSecret } from '../identity/factors/totp.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const FACILITIES_CSV = join(ROOT, 'seed-data', 'facilities-monteregie-2022-11.csv');

export const DEMO_FAMILIES = 3000;
export const DEMO_SEED = 20210501;

export interface DemoCredentials {
  password: string;
  parent: string;
  staff: string;
  admin: string;
  /** A second administrator: a privileged role takes two besides its grantee, so with one the demo could grant none. */
  secondAdmin?: string;
  /** The second programme, with rules of its own, on its own host name. */
  secondTenant?: { host: string; parent: string };
  /** Authenticator-app secrets of the demo staff and administrator (staff open no personal data without a second factor). */
  totp?: Record<string, string>;
}

export function demoCredentialsFile(dataDir: string): string {
  return join(resolve(dataDir), 'demo-credentials.json');
}

const CLI_ORIGIN: AuditOrigin = { actorAccountId: null, actorRoles: ['system:demo'], ip: null, userAgent: 'guichet demo setup', requestId: null };

/**
 * Demo mode, first start: the "Québec" tenant with the real Montérégie
 * directory, a few thousand synthetic families, and four accounts to try
 * (a parent, a facility staff member, two administrators) sharing one password
 * drawn at random and kept in the data directory. Later starts only print it.
 */
export async function ensureDemo(deps: Deps): Promise<string> {
  const credFile = demoCredentialsFile(deps.config.dataDir);
  let tenant = await deps.tenants.bySlug(deps.config.defaultTenant);
  if (!tenant || !existsSync(credFile)) {
    const now = deps.clock();
    tenant ??= await createTenant(deps.db.db, { slug: deps.config.defaultTenant, nameFr: 'Québec', nameEn: 'Quebec', hosts: [] }, CLI_ORIGIN, now);
    deps.tenants.invalidate();
    const imported = await importFacilities(deps.db.db, tenant.id, readFileSync(FACILITIES_CSV, 'utf8'), { now, origin: CLI_ORIGIN });
    deps.log.info({ inserted: imported.inserted, skipped: imported.skipped.length }, 'demo: facilities imported');
    const seeded = await seedDemo(deps.db.db, tenant.id, { families: DEMO_FAMILIES, seed: DEMO_SEED, now, origin: CLI_ORIGIN, keys: deps.keys });
    deps.log.info(seeded, 'demo: families seeded');
    const creds = await createDemoAccounts(deps, tenant, now);
    creds.secondTenant = await ensureSecondTenant(deps, creds.password, now);
    writeFileSync(credFile, JSON.stringify(creds, null, 2), { mode: 0o600 });
  }
  const creds = JSON.parse(readFileSync(credFile, 'utf8')) as DemoCredentials;
  return [
    'Demo mode (embedded database, synthetic data). Sign in with:',
    `  parent         ${creds.parent}`,
    `  facility staff ${creds.staff}`,
    `  administrator  ${creds.admin}`,
    ...(creds.secondAdmin ? [`  administrator  ${creds.secondAdmin}`] : []),
    `  password       ${creds.password}`,
    ...(creds.secondTenant ? [`Second programme (points order, registration before birth): http://${creds.secondTenant.host}:${deps.config.port}, parent ${creds.secondTenant.parent}, same password.`] : []),
    ...(creds.secondAdmin ? ['Two administrators: a privileged role (another administrator, a security officer…) is approved by both, each with a passkey (dual control).'] : []),
    'Staff and administrators sign in with a second factor: their current authenticator codes are at /demo/mail.',
    'Mail is not sent in demo mode: read it at /demo/mail.',
  ].join('\n');
}

async function createDemoAccounts(deps: Deps, tenant: Tenant, now: Date): Promise<DemoCredentials> {
  const password = `demo-${randomBytes(9).toString('base64url')}`;
  const creds: DemoCredentials = { password, parent: 'parent@demo.guichet.test', staff: 'personnel@demo.guichet.test', admin: 'admin@demo.guichet.test', secondAdmin: 'admin2@demo.guichet.test' };
  const db = deps.db.db;
  // The administrators come through the same bootstrap as on a real server; the demo then sets their password itself.
  const [admin, secondAdmin] = await bootstrapAdmins(db, tenant, [creds.admin, creds.secondAdmin!], `http://localhost:${deps.config.port}`, CLI_ORIGIN, now);
  const parentId = await inTenant(db, tenant.id, async (trx) => {
    const { hashPassword } = await import('../identity/passwords.ts');
    const hash = await hashPassword(password);
    await trx.updateTable('accounts').set({ password_hash: hash, email_verified_at: now }).where('id', 'in', [admin!.accountId, secondAdmin!.accountId]).execute();
    return createDemoAccount(trx, tenant.id, creds.parent, password, now);
  });
  // The demo parent's child applies to the three facilities with the most candidates, so the staff view is full.
  const busiest = await inTenant(db, tenant.id, (trx) => busiestFacilities(trx, 3));
  const ctx: Ctx = {
    tenant,
    actor: { accountId: parentId, tenantId: tenant.id, sessionId: null, email: creds.parent, emailVerified: true, locale: 'fr', memberships: [] },
    ip: null,
    userAgent: 'guichet demo setup',
    requestId: null,
    locale: 'fr',
    now,
    baseUrl: `http://localhost:${deps.config.port}`,
  };
  const t = today(now);
  const child = await createChildFile(deps, ctx, {
    firstName: 'Léa',
    lastName: 'Tremblay',
    birthDate: addMonths(t, -10),
    nirec: 'DEMO0000001',
    desiredEntryDate: addMonths(t, 2),
    daysOfCare: 31,
    inSubsidisedCare: false,
  });
  for (const facilityId of busiest) await addApplication(deps, ctx, child.id, { facilityId, siblingAttending: false, parentIsStaff: false });
  const staffFacility = busiest[0];
  // Staff and administrators need a second factor: the demo enrols an authenticator app for both.
  creds.totp = {};
  const enrol = async (accountId: string, email: string) => {
    const secret = newTotpSecret();
    await inTenant(db, tenant.id, async (trx) => {
      const id = await insertTotp(trx, deps.keys, tenant.id, accountId, secret, now);
      await trx.updateTable('totp_factors').set({ confirmed_at: now }).where('id', '=', id).execute();
    });
    creds.totp![email] = secret;
  };
  await enrol(admin!.accountId, creds.admin);
  await enrol(secondAdmin!.accountId, creds.secondAdmin!);
  const staffId = await inTenant(db, tenant.id, async (trx) => {
    const staffId = await createDemoAccount(trx, tenant.id, creds.staff, password, now);
    if (staffFacility) {
      await trx
        .insertInto('memberships')
        .values({ tenant_id: tenant.id, account_id: staffId, role: 'facility_staff', facility_id: staffFacility, source: 'invitation', granted_by: admin!.accountId, approved_by: null, created_at: now, expires_at: null })
        .execute();
    }
    return staffId;
  });
  await enrol(staffId, creds.staff);
  if (staffFacility) {
    // A place opens in each age group of the staff member's facility: the referral offers them at once, so the
    // demo has offers to read (the parents' e-mails at /demo/mail) and a vacancy page that is not empty.
    const staffCtx: Ctx = { ...ctx, actor: { accountId: staffId, tenantId: tenant.id, sessionId: null, email: creds.staff, emailVerified: true, locale: 'fr', memberships: [{ id: 'demo', role: 'facility_staff', facilityId: staffFacility, expiresAt: null }], mfa: true } };
    const open = (await readPlaces(deps, staffCtx, staffFacility)).filter((p) => p.places > p.pending);
    if (open.length) await declareVacancies(deps, staffCtx, staffFacility, Object.fromEntries(open.map((p) => [p.ageGroup, 1])));
  }
  return creds;
}

/** The demo's second programme: the same directory, different rules (see SECOND_TENANT_RULES). */
export const SECOND_TENANT = { slug: 'municipal', nameFr: 'Programme municipal (démo)', nameEn: 'Municipal programme (demo)', host: 'municipal.localhost' } as const;

/**
 * Rules unlike Quebec's, so the two can be compared side by side:
 * registration before birth, the points order, a confirmation every three
 * months that keeps seniority on reactivation, at most three kinds of
 * priority, and offers answered within three business days with three
 * refusals allowed (the offers' rules are read by the referral).
 */
export const SECOND_TENANT_RULES = {
  prebirthRegistration: true,
  ordering: { kind: 'points', weights: { siblingAttending: 40, parentIsStaff: 10, notInSubsidisedCare: 20, eachPriority: 25, perMonthWaited: 2 } },
  priorities: { kinds: ['specialNeeds', 'socioEconomic', 'residentOf'], maxKinds: 3, capShare: 0.3 },
  confirmation: { everyMonths: 3, reminderDaysBefore: [14], graceDays: 14, reactivationKeepsSeniority: true },
  offers: { deadlineDays: 3, businessDays: true, refusalsAllowed: 3 },
} as const;

async function ensureSecondTenant(deps: Deps, password: string, now: Date): Promise<{ host: string; parent: string }> {
  const parent = 'parent@municipal.guichet.test';
  let tenant = await deps.tenants.bySlug(SECOND_TENANT.slug);
  if (!tenant) {
    tenant = await createTenant(deps.db.db, { slug: SECOND_TENANT.slug, nameFr: SECOND_TENANT.nameFr, nameEn: SECOND_TENANT.nameEn, hosts: [SECOND_TENANT.host], rules: SECOND_TENANT_RULES as never }, CLI_ORIGIN, now);
    deps.tenants.invalidate();
    await importFacilities(deps.db.db, tenant.id, readFileSync(FACILITIES_CSV, 'utf8'), { now, origin: CLI_ORIGIN });
    await seedDemo(deps.db.db, tenant.id, { families: 300, seed: DEMO_SEED + 1, now, origin: CLI_ORIGIN, keys: deps.keys });
    const t = tenant;
    await inTenant(deps.db.db, t.id, (trx) => createDemoAccount(trx, t.id, parent, password, now));
  }
  return { host: SECOND_TENANT.host, parent };
}
