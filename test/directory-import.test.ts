import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parse } from 'csv-parse/sync';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChainHead, verifyChain } from '../src/audit/log.ts';
import type { AuditOrigin } from '../src/audit/events.ts';
import { openDatabase, type Database } from '../src/db/connection.ts';
import { inTenant } from '../src/db/tenant.ts';
import { DirectoryFormatError, importFacilities, parseFacilities } from '../src/directory/import.ts';

// Local set-up, kept small so the shared helper in test/helpers/ can replace it.
let database: Database;
let tenantCount = 0;

async function newTenant(): Promise<string> {
  tenantCount++;
  const { id } = await database.db
    .insertInto('tenants')
    .values({ slug: `dir-${tenantCount}-${randomBytes(3).toString('hex')}`, name_fr: `Essai ${tenantCount}`, name_en: `Test ${tenantCount}`, hosts: [], rules: '{}' })
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
const seedCsv = readFileSync(new URL('../seed-data/facilities-monteregie-2022-11.csv', import.meta.url), 'utf8');

const HEADER = 'name,region,address,municipality,postal_code,type,places_total,places_17_months_or_less,reduced_contribution';

function csvCell(v: string): string {
  return /[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v;
}

/**
 * The seed file rewritten in the layout the ministry publishes: title lines,
 * French headers, contact columns (left empty), "CR" flags and the legend.
 */
function asMinistryFile(csv: string): string {
  const rows = parse(csv, { columns: true }) as Record<string, string>[];
  const lines = [
    'LISTE DES CENTRES DE LA PETITE ENFANCE ET GARDERIES EN FONCTION,,,,,,,,,,,,,',
    'Mise à jour le 1er novembre 2022,,,,,,,,,,,,,',
    ',,,,,,,,,,,,,',
    "Nom de l'installation,Région administrative,Adresse,Municipalité,Code postal,Téléphone,Télécopieur,Adresse courriel,Type de service de garde,Places totales au permis,Places 17 mois ou moins,Place à contribution réduite,Coordonnées géographiques,ARTM",
    ...rows.map((r) =>
      [
        r.name!, r.region!, r.address!, r.municipality!, r.postal_code!, '', '', '', r.type!,
        r.places_total!, r.places_17_months_or_less!, r.reduced_contribution === 'yes' ? 'CR' : '', '', '1',
      ].map(csvCell).join(','),
    ),
    ',,,,,,,,,,,,,',
    'Légende,,,,,,,,,,,,,',
    'CPE : Centre de la petite enfance     GARD : Garderie     CR : Place à contribution réduite,,,,,,,,,,,,,',
  ];
  return lines.join('\r\n') + '\r\n';
}

async function facilityStats(tenantId: string) {
  return inTenant(database.db, tenantId, async (trx) => {
    const r = await trx
      .selectFrom('facilities')
      .select([
        sql<string>`count(*)`.as('n'),
        sql<string>`count(DISTINCT code)`.as('codes'),
        sql<string>`sum(places_total)`.as('places'),
        sql<string>`sum(places_infant)`.as('infant'),
        sql<string>`count(*) FILTER (WHERE subsidised)`.as('subsidised'),
        sql<string>`count(*) FILTER (WHERE kind = 'cpe')`.as('cpe'),
      ])
      .executeTakeFirstOrThrow();
    return { n: Number(r.n), codes: Number(r.codes), places: Number(r.places), infant: Number(r.infant), subsidised: Number(r.subsidised), cpe: Number(r.cpe) };
  });
}

async function auditEvents(tenantId: string) {
  return inTenant(database.db, tenantId, (trx) => trx.selectFrom('audit_events').select(['seq', 'action', 'details']).orderBy('seq').execute());
}

describe('importFacilities', () => {
  it('imports the shipped Montérégie directory: 592 facilities, none skipped', async () => {
    const tenant = await newTenant();
    const result = await importFacilities(database.db, tenant, seedCsv, { now, origin });
    expect(result).toEqual({ inserted: 592, updated: 0, skipped: [] });
    expect(await facilityStats(tenant)).toEqual({ n: 592, codes: 592, places: 38_900, infant: 5_661, subsidised: 400, cpe: 257 });

    const one = await inTenant(database.db, tenant, (trx) =>
      trx.selectFrom('facilities').selectAll().where('name', '=', 'CENTRE DE LA PETITE ENFANCE "LA DOUCE COUVÉE"').executeTakeFirstOrThrow(),
    );
    expect(one).toMatchObject({
      kind: 'cpe',
      subsidised: true,
      address: '545, rue Bonin',
      municipality: 'Acton Vale',
      postal_code: 'J0H 1A0',
      region: '16 - Montérégie',
      places_total: 65,
      places_infant: 10,
      search_key: 'centre de la petite enfance "la douce couvee" acton vale',
    });
    expect(one.created_at.toISOString()).toBe(now.toISOString());

    const events = await auditEvents(tenant);
    expect(events.map((e) => e.action)).toEqual(['directory.import']);
    expect(events[0]!.details).toEqual({ format: 'guichet', inserted: 592, updated: 0, skipped: 0 });
    expect((await verifyChain(database.db, tenant)).ok).toBe(true);
  });

  it('updates on a second import instead of duplicating, and keeps created_at', async () => {
    const tenant = await newTenant();
    await importFacilities(database.db, tenant, seedCsv, { now, origin });
    const later = new Date(now.getTime() + 86_400_000);
    // One facility changes its permit between the two files.
    const changed = seedCsv.replace('Acton Vale,J0H 1A0,CPE,65,10,yes', 'Acton Vale,J0H 1A0,CPE,70,12,yes');
    const result = await importFacilities(database.db, tenant, changed, { now: later, origin });
    expect(result).toEqual({ inserted: 0, updated: 592, skipped: [] });
    expect((await facilityStats(tenant)).n).toBe(592);

    const row = await inTenant(database.db, tenant, (trx) =>
      trx.selectFrom('facilities').select(['places_total', 'places_infant', 'created_at', 'updated_at']).where('municipality', '=', 'Acton Vale').where('address', '=', '545, rue Bonin').executeTakeFirstOrThrow(),
    );
    expect(row).toMatchObject({ places_total: 70, places_infant: 12 });
    expect(row.created_at.toISOString()).toBe(now.toISOString());
    expect(row.updated_at.toISOString()).toBe(later.toISOString());
    expect((await auditEvents(tenant)).map((e) => e.action)).toEqual(['directory.import', 'directory.import']);
    expect((await verifyChain(database.db, tenant)).ok).toBe(true);
  });

  it("reads the ministry's published layout, and gives facilities the same codes as the seed file", async () => {
    const ministry = asMinistryFile(seedCsv);
    const parsed = parseFacilities(ministry);
    expect(parsed.format).toBe('ministere');
    expect(parsed.skipped).toEqual([]);
    // The first data row is on line 5, after three title lines and the header.
    expect(parsed.rows[0]!.line).toBe(5);
    expect(parsed.rows.map((r) => r.code)).toEqual(parseFacilities(seedCsv).rows.map((r) => r.code));

    const tenant = await newTenant();
    expect(await importFacilities(database.db, tenant, ministry, { now, origin })).toEqual({ inserted: 592, updated: 0, skipped: [] });
    expect(await facilityStats(tenant)).toEqual({ n: 592, codes: 592, places: 38_900, infant: 5_661, subsidised: 400, cpe: 257 });
    // Switching formats updates the same facilities.
    expect(await importFacilities(database.db, tenant, seedCsv, { now, origin })).toEqual({ inserted: 0, updated: 592, skipped: [] });
    expect((await facilityStats(tenant)).n).toBe(592);
  });

  it('accepts semicolon-separated files (Excel saving CSV in a French locale)', () => {
    const file = HEADER.replace(/,/g, ';') + '\nGARDERIE A;16 - Montérégie;1, rue A;Beloeil;J3G 5S8;GARD;49;9;no\n';
    const parsed = parseFacilities(file);
    expect(parsed.skipped).toEqual([]);
    expect(parsed.rows).toHaveLength(1);
    expect(parsed.rows[0]).toMatchObject({ name: 'GARDERIE A', address: '1, rue A', places_total: 49, places_infant: 9, subsidised: false, kind: 'garderie' });
  });

  it('keeps apart facilities listed twice at the same address', () => {
    const rows = parseFacilities(seedCsv).rows.filter((r) => r.name === 'C.P.E. LES FRIMOUSSES DU FORT');
    expect(rows).toHaveLength(2);
    expect(rows[0]!.code).not.toBe(rows[1]!.code);
  });

  it('skips malformed rows with their line number and reason, and imports the rest', async () => {
    const file = [
      HEADER,
      'GOOD ONE,16 - Montérégie,"1, rue A",Beloeil,J3G 5S8,GARD,49,9,no', // 2
      'NEGATIVE,16 - Montérégie,"2, rue B",Beloeil,J3G 5S8,GARD,-5,0,no', // 3
      'TOO MANY INFANTS,16 - Montérégie,"3, rue C",Beloeil,J3G 5S8,CPE,40,41,yes', // 4
      'HOME CARE,16 - Montérégie,"4, rue D",Beloeil,J3G 5S8,MF,6,2,yes', // 5
      'BAD POSTAL,16 - Montérégie,"5, rue E",Beloeil,J3G 5S,CPE,60,10,yes', // 6
      'SHORT ROW,16 - Montérégie,"6, rue F",Beloeil', // 7
      '', // 8: blank lines are not rows
      'NOT A NUMBER,16 - Montérégie,"7, rue G",Beloeil,J3G 5S8,CPE,soixante,10,yes', // 9
      'FLAG,16 - Montérégie,"8, rue H",Beloeil,J3G 5S8,CPE,60,10,peut-être', // 10
      '"MULTI\nLINE NAME",16 - Montérégie,"9, rue I",Beloeil,J3G 5S8,CPE,60,10,maybe', // 11-12
      'COMPACT POSTAL,16 - Montérégie,"10, rue J",Beloeil,j3g5s8,CPE,60,10,yes', // 13
    ].join('\n');
    const tenant = await newTenant();
    const result = await importFacilities(database.db, tenant, file, { now, origin });
    expect(result.inserted).toBe(2);
    expect(result.updated).toBe(0);
    expect(result.skipped.map((s) => s.line)).toEqual([3, 4, 5, 6, 7, 9, 10, 11]);
    const reason = (line: number) => result.skipped.find((s) => s.line === line)!.reason;
    expect(reason(3)).toMatch(/places total "-5" is not a whole number/);
    expect(reason(4)).toMatch(/\(41\) exceed places total \(40\)/);
    expect(reason(5)).toMatch(/unknown type "MF"/);
    expect(reason(6)).toMatch(/postal code "J3G 5S" is not a Canadian postal code/);
    expect(reason(7)).toMatch(/missing columns: 4 found, 9 expected/);
    expect(reason(9)).toMatch(/places total "soixante"/);
    expect(reason(10)).toMatch(/reduced-contribution flag "peut-être"/);

    const stored = await inTenant(database.db, tenant, (trx) => trx.selectFrom('facilities').select(['name', 'postal_code']).orderBy('name').execute());
    expect(stored).toEqual([
      { name: 'COMPACT POSTAL', postal_code: 'J3G 5S8' },
      { name: 'GOOD ONE', postal_code: 'J3G 5S8' },
    ]);
    const events = await auditEvents(tenant);
    expect(events[0]!.details).toEqual({ format: 'guichet', inserted: 2, updated: 0, skipped: 8 });
  });

  it('refuses a file whose headers it does not know, and writes nothing', async () => {
    const tenant = await newTenant();
    const file = 'nom,ville,places\nCPE A,Beloeil,60\n';
    await expect(importFacilities(database.db, tenant, file, { now, origin })).rejects.toThrow(DirectoryFormatError);
    await expect(importFacilities(database.db, tenant, file, { now, origin })).rejects.toThrow(/no header row matches a known format/);
    // A header that lacks one required column is just as unknown.
    const partial = HEADER.replace(',reduced_contribution', '') + '\nCPE A,16 - Montérégie,"1, rue A",Beloeil,J3G 5S8,CPE,60,10\n';
    await expect(importFacilities(database.db, tenant, partial, { now, origin })).rejects.toThrow(/Unrecognised facility directory/);
    expect((await facilityStats(tenant)).n).toBe(0);
    expect(await auditEvents(tenant)).toEqual([]);
  });

  it("keeps one tenant's directory out of another's", async () => {
    const a = await newTenant();
    const b = await newTenant();
    await importFacilities(database.db, a, seedCsv, { now, origin });
    expect((await facilityStats(b)).n).toBe(0);
    // The same file in another tenant inserts its own rows: codes are unique per tenant only.
    expect((await importFacilities(database.db, b, seedCsv, { now, origin })).inserted).toBe(592);
  });
});
