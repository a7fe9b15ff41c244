import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChainHead, verifyChain } from '../src/audit/log.ts';
import type { AuditOrigin } from '../src/audit/events.ts';
import { openDatabase, type Database } from '../src/db/connection.ts';
import { inTenant } from '../src/db/tenant.ts';
import { generateFamilies, seedDemo, type SeedFacility } from '../src/demo/seed.ts';
import { importFacilities, parseFacilities } from '../src/directory/import.ts';
import { insertSyntheticFamilies, type SyntheticFamily } from '../src/records/bulk.ts';
import { envelopeFor } from '../src/crypto/envelope.ts';
import { keyProviderFromSecret } from '../src/crypto/keys.ts';
import { openChildren } from '../src/records/fields.ts';

// Local set-up, kept small so the shared helper in test/helpers/ can replace it.
let database: Database;
/** Personal fields are encrypted: the families' keys go to this provider's keyring (in memory). */
const keys = keyProviderFromSecret(Buffer.alloc(32, 5));
let tenantCount = 0;

async function newTenant(): Promise<string> {
  tenantCount++;
  const { id } = await database.db
    .insertInto('tenants')
    .values({ slug: `seed-${tenantCount}-${randomBytes(3).toString('hex')}`, name_fr: `Essai ${tenantCount}`, name_en: `Test ${tenantCount}`, hosts: [], rules: '{}' })
    .returning('id')
    .executeTakeFirstOrThrow();
  await inTenant(database.db, id, (trx) => createChainHead(trx, id));
  return id;
}

beforeAll(async () => {
  database = await openDatabase({ dataDir: 'memory://' });
}, 60_000);

afterAll(async () => {
  await database?.close();
});

const origin: AuditOrigin = { actorAccountId: null, actorRoles: ['cli'], ip: null, userAgent: 'vitest', requestId: null };
const now = new Date('2025-09-01T12:00:00.000Z');
const today = '2025-09-01';
const seedCsv = readFileSync(new URL('../seed-data/facilities-monteregie-2022-11.csv', import.meta.url), 'utf8');

// The real directory, with made-up but fixed ids: no database needed to generate.
const facilities: SeedFacility[] = parseFacilities(seedCsv).rows.map((r, i) => ({
  id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
  municipality: r.municipality,
  postal_code: r.postal_code,
  places_infant: r.places_infant,
  places_total: r.places_total,
}));
const byId = new Map(facilities.map((f) => [f.id, f]));

function daysBetween(a: string, b: string): number {
  return (Date.parse(b) - Date.parse(a)) / 86_400_000;
}

describe('generateFamilies', () => {
  it('gives byte-identical families for the same seed, and different ones for another seed', () => {
    const a = JSON.stringify(generateFamilies({ count: 500, seed: 42, facilities, today: now }));
    const b = JSON.stringify(generateFamilies({ count: 500, seed: 42, facilities, today: now }));
    const c = JSON.stringify(generateFamilies({ count: 500, seed: 43, facilities, today: now }));
    const d = JSON.stringify(generateFamilies({ count: 500, seed: 'demo', facilities, today: now }));
    expect(a).toBe(b);
    expect(c).not.toBe(a);
    expect(d).not.toBe(a);
    // A prefix of a larger run is the same population: counts do not reshuffle families.
    expect(JSON.stringify(generateFamilies({ count: 100, seed: 42, facilities, today: now }))).toBe(
      JSON.stringify(JSON.parse(a).slice(0, 100)),
    );
  });

  it('produces plausible, synthetic and well-formed families', () => {
    const families = generateFamilies({ count: 3000, seed: 7, facilities, today: now });
    const children = families.flatMap((f) => f.children);
    const applications = children.flatMap((c) => c.applications);

    expect(families).toHaveLength(3000);
    expect(new Set(families.map((f) => f.email)).size).toBe(3000);
    expect(new Set(children.map((c) => c.reference)).size).toBe(children.length);
    for (const f of families) {
      expect(f.email).toMatch(/^[a-z0-9-]+\.[a-z0-9-]+\.\d{4}@exemple\.test$/);
      expect(f.phone).toMatch(/^(450|579)-555-01\d\d$/);
      expect(f.postalCode).toMatch(/^J\d[A-Z] \d[ABCEGHJ-NPRSTV-Z]\d$/);
      expect(['fr', 'en']).toContain(f.locale);
      for (const c of f.children) {
        expect(c.reference).toMatch(/^[A-Z0-9-]{6,20}$/);
        expect(c.lastName.startsWith(f.parentLastName)).toBe(true);
        const age = daysBetween(c.birthDate, today);
        expect(age).toBeGreaterThanOrEqual(0);
        expect(age).toBeLessThanOrEqual(5 * 366);
        // registered after birth, on or before today; the desired date follows the registration
        expect(c.registeredOn >= c.birthDate && c.registeredOn <= today).toBe(true);
        expect(c.desiredEntryDate >= c.registeredOn).toBe(true);
        expect(daysBetween(c.birthDate, c.desiredEntryDate)).toBeGreaterThanOrEqual(90);
        expect(c.daysOfCare).toBeGreaterThanOrEqual(1);
        expect(c.daysOfCare).toBeLessThanOrEqual(31);
        expect(c.applications.length).toBeGreaterThanOrEqual(1);
        expect(c.applications.length).toBeLessThanOrEqual(5);
        expect(new Set(c.applications.map((a) => a.facilityId)).size).toBe(c.applications.length);
        // A child too young for an 18-months+ group only applies where there are infant places.
        if (daysBetween(c.birthDate, c.desiredEntryDate) < 18 * 30.44) {
          for (const a of c.applications) expect(byId.get(a.facilityId)!.places_infant).toBeGreaterThan(0);
        }
      }
    }

    const share = (n: number, of: number) => n / of;
    expect(share(families.filter((f) => f.children.length === 2).length, families.length)).toBeCloseTo(0.15, 1);
    expect(share(children.filter((c) => c.inSubsidisedCare).length, children.length)).toBeCloseTo(0.2, 1);
    expect(share(children.filter((c) => c.applications.some((a) => a.siblingAttending)).length, children.length)).toBeCloseTo(0.1, 1);
    const staff = share(children.filter((c) => c.applications.some((a) => a.parentIsStaff)).length, children.length);
    expect(staff).toBeGreaterThan(0.015);
    expect(staff).toBeLessThan(0.045);

    // Most choices are in the family's own municipality (the directory has 97).
    const local = families.filter((f) => {
      const first = f.children[0]!.applications[0]!;
      return byId.get(first.facilityId)!.postal_code.slice(0, 2) === f.postalCode.slice(0, 2);
    }).length;
    expect(share(local, families.length)).toBeGreaterThan(0.8);

    // Names follow the real frequencies: Tremblay (rank 1) is the most common surname.
    const surnames = new Map<string, number>();
    for (const f of families) surnames.set(f.parentLastName, (surnames.get(f.parentLastName) ?? 0) + 1);
    const top = [...surnames].sort((x, y) => y[1] - x[1])[0]!;
    expect(top[0]).toBe('Tremblay');
  });
});

describe('seedDemo', () => {
  it('inserts through bulk.ts in one transaction, audits it, and the chain still verifies', async () => {
    const tenant = await newTenant();
    await importFacilities(database.db, tenant, seedCsv, { now, origin });
    const result = await seedDemo(database.db, tenant, { families: 300, seed: 2025, now, origin, keys });
    expect(result.families).toBe(300);
    expect(result.seed).toBe(2025);

    const counts = await inTenant(database.db, tenant, async (trx) => {
      const { rows } = await sql<{ accounts: string; families: string; children: string; applications: string; verified: string }>`
        SELECT (SELECT count(*) FROM accounts) AS accounts,
               (SELECT count(*) FROM accounts WHERE email_verified_at IS NOT NULL AND password_hash IS NULL) AS verified,
               (SELECT count(*) FROM families) AS families,
               (SELECT count(*) FROM children) AS children,
               (SELECT count(*) FROM applications) AS applications`.execute(trx);
      return rows[0]!;
    });
    expect(Number(counts.accounts)).toBe(300);
    expect(Number(counts.verified)).toBe(300);
    expect(Number(counts.families)).toBe(300);
    expect(Number(counts.children)).toBe(result.children);
    expect(Number(counts.applications)).toBe(result.applications);
    expect(result.children).toBeGreaterThan(300);

    const events = await inTenant(database.db, tenant, (trx) => trx.selectFrom('audit_events').select(['action', 'details']).orderBy('seq').execute());
    expect(events.map((e) => e.action)).toEqual(['directory.import', 'demo.seed']);
    expect(events[1]!.details).toEqual({ families: 300, children: result.children, applications: result.applications, seed: 2025 });
    expect(await verifyChain(database.db, tenant)).toMatchObject({ ok: true, events: 2 });
  });

  it('gives two tenants the same families from the same seed', async () => {
    const a = await newTenant();
    const b = await newTenant();
    await importFacilities(database.db, a, seedCsv, { now, origin });
    await importFacilities(database.db, b, seedCsv, { now, origin });
    await seedDemo(database.db, a, { families: 50, seed: 'same', now, origin, keys });
    await seedDemo(database.db, b, { families: 50, seed: 'same', now, origin, keys });
    // Facility ids differ between tenants; the families, their children and the codes they chose do not.
    const snapshot = (tenant: string) =>
      inTenant(database.db, tenant, async (trx) => {
        const { rows } = await sql<{ id: string; family_id: string; email: string; reference: string; first_name_enc: Buffer; birth_date_enc: Buffer; desired_entry_date: string; code: string }>`
          SELECT c.id, c.family_id, a.email, c.reference, c.first_name_enc, c.birth_date_enc, c.desired_entry_date, f.code
          FROM accounts a JOIN families fa ON fa.account_id = a.id JOIN children c ON c.family_id = fa.id
          JOIN applications ap ON ap.child_id = c.id JOIN facilities f ON f.id = ap.facility_id
          ORDER BY c.reference, f.code`.execute(trx);
        // Names and birth dates are stored encrypted: compare what they decrypt to.
        const opened = await openChildren(envelopeFor(keys), tenant, rows, ['first_name', 'birth_date']);
        return rows.map((r) => ({ email: r.email, reference: r.reference, ...opened.get(r.id), desired_entry_date: r.desired_entry_date, code: r.code }));
      });
    expect(await snapshot(b)).toEqual(await snapshot(a));
  });

  it('refuses to seed the same seed twice into a tenant, and leaves it as it was', async () => {
    const tenant = await newTenant();
    await importFacilities(database.db, tenant, seedCsv, { now, origin });
    await seedDemo(database.db, tenant, { families: 20, seed: 1, now, origin, keys });
    await expect(seedDemo(database.db, tenant, { families: 20, seed: 1, now, origin, keys })).rejects.toThrow(/already has an account .*@exemple\.test/);
    const families = await inTenant(database.db, tenant, async (trx) => (await sql<{ n: string }>`SELECT count(*) AS n FROM families`.execute(trx)).rows[0]!.n);
    expect(Number(families)).toBe(20);
    expect(await verifyChain(database.db, tenant)).toMatchObject({ ok: true, events: 2 });
  });

  it('refuses to seed a tenant without facilities', async () => {
    const tenant = await newTenant();
    await expect(seedDemo(database.db, tenant, { families: 5, seed: 1, now, origin, keys })).rejects.toThrow(/no facilities/);
  });
});

describe('insertSyntheticFamilies', () => {
  const family = (over: Partial<SyntheticFamily>): SyntheticFamily => ({
    email: 'ana.roy.0001@exemple.test',
    locale: 'fr',
    parentFirstName: 'Ana',
    parentLastName: 'Roy',
    phone: '450-555-0101',
    postalCode: 'J3G 1A1',
    children: [
      {
        reference: 'E-ABCDEFGH',
        firstName: 'Leo',
        lastName: 'Roy',
        birthDate: '2025-01-01',
        desiredEntryDate: '2025-10-01',
        registeredOn: '2025-02-01',
        daysOfCare: 31,
        inSubsidisedCare: false,
        applications: [],
      },
    ],
    ...over,
  });

  it('refuses anything that does not look synthetic', async () => {
    const tenant = await newTenant();
    const attempt = (f: SyntheticFamily) => inTenant(database.db, tenant, (trx) => insertSyntheticFamilies(trx, tenant, [f], now, keys));
    await expect(attempt(family({ email: 'ana.roy@gmail.com' }))).rejects.toThrow(/reserved \.test domain/);
    await expect(attempt(family({ email: 'Ana.Roy@exemple.test' }))).rejects.toThrow(/reserved \.test domain/);
    await expect(attempt(family({ phone: '450-467-0391' }))).rejects.toThrow(/555-01xx/);
    const child = family({}).children[0]!;
    await expect(attempt(family({ children: [{ ...child, reference: 'e-abc' }] }))).rejects.toThrow(/reference/);
    await expect(attempt(family({ children: [{ ...child, daysOfCare: 32 }] }))).rejects.toThrow(/bitmask/);
    // And a well-formed one goes in.
    expect(await attempt(family({}))).toEqual({ accounts: 1, families: 1, children: 1, applications: 0 });
  });
});
