/**
 * The scale seed: up to ten times Quebec (1,000,000 child files, 30,000
 * facilities, 10 choices a child), for the allocation and the benchmarks.
 *
 * Only the Montérégie directory is real. Other facilities are drawn from its
 * distributions — each synthetic facility copies the kind, subsidy, permit
 * size and infant places of a directory entry picked at random — and placed
 * in a Quebec postal area (seed-data/quebec-fsa.csv) whose place name becomes
 * its municipality. Deterministic like the demo seed: same seed, same data.
 */
import { readFileSync } from 'node:fs';
import { parse } from 'csv-parse/sync';
import { sql, type Kysely } from 'kysely';
import { appendAudit } from '../audit/log.ts';
import type { AuditOrigin } from '../audit/events.ts';
import { loadKeyProvider, type KeyProvider } from '../crypto/keys.ts';
import type { Trx } from '../db/connection.ts';
import type { DB } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import { foldForSearch, parseFacilities } from '../directory/import.ts';
import { insertSyntheticFamilies } from '../records/bulk.ts';
import { createRng, emailPart, familyStream, type Rng, type SeedFacility, type SyntheticFamily } from './seed.ts';

const SEED_DATA = new URL('../../seed-data/', import.meta.url);

export interface SyntheticFacility {
  code: string;
  name: string;
  kind: 'cpe' | 'garderie';
  subsidised: boolean;
  address: string;
  municipality: string;
  postal_code: string;
  region: string;
  places_total: number;
  places_infant: number;
}

// Canada Post's first letters for Quebec: G east, H Montréal, J west and south.
const REGION_OF: Record<string, string> = { G: 'Est du Québec (synthétique)', H: 'Montréal (synthétique)', J: 'Ouest du Québec (synthétique)' };
const POSTAL_LETTERS = 'ABCEGHJKLMNPRSTVWXYZ';

/** `count` facilities drawn from the Montérégie directory's distributions. */
export function generateFacilities(count: number, seed: number | string): SyntheticFacility[] {
  const directory = parseFacilities(readFileSync(new URL('facilities-monteregie-2022-11.csv', SEED_DATA), 'utf8')).rows;
  const areas = (parse(readFileSync(new URL('quebec-fsa.csv', SEED_DATA), 'utf8'), { columns: true, bom: true, skip_empty_lines: true }) as Record<string, string>[]).map((r) => ({
    fsa: r.fsa!,
    place: r.place_name!,
  }));
  const rng = createRng(`facilities:${seed}`);
  const pick = <T>(xs: T[]) => xs[Math.floor(rng() * xs.length)]!;
  const width = String(count).length;
  const out: SyntheticFacility[] = [];
  for (let n = 1; n <= count; n++) {
    const model = pick(directory);
    const area = pick(areas);
    const num = String(n).padStart(width, '0');
    out.push({
      code: `SYN-${String(seed).slice(0, 20)}-${num}`.replace(/[^A-Za-z0-9-]/g, '-').slice(0, 64),
      name: `${model.kind === 'cpe' ? 'CPE' : 'Garderie'} synthétique ${num} (${area.place})`,
      kind: model.kind,
      subsidised: model.subsidised,
      address: `${1 + Math.floor(rng() * 9999)}, rue Synthétique`,
      municipality: area.place,
      postal_code: `${area.fsa} ${Math.floor(rng() * 10)}${POSTAL_LETTERS[Math.floor(rng() * POSTAL_LETTERS.length)]}${Math.floor(rng() * 10)}`,
      region: REGION_OF[area.fsa[0]!] ?? 'Québec (synthétique)',
      places_total: model.places_total,
      places_infant: model.places_infant,
    });
  }
  return out;
}

/**
 * Some places open at every facility of the tenant that has none open yet:
 * a round then has vacancies to fill. Facilities get their places rows from
 * their permit when inserted (migration 0018); rows missing all the same are
 * added. The share open varies by facility (0 to 2 × `openShare`), drawn in
 * code order, infants first.
 */
async function ensurePlaces(trx: Trx, tenantId: string, rng: Rng, openShare: number, now: Date): Promise<number> {
  await sql`INSERT INTO facility_places (tenant_id, facility_id, age_group, places, vacancies, updated_at)
    SELECT f.tenant_id, f.id, g.age_group, LEAST(CASE g.age_group WHEN 'infant' THEN f.places_infant ELSE f.places_total - f.places_infant END, 1000), 0, ${now}
      FROM facilities f CROSS JOIN (VALUES ('infant'), ('toddler')) AS g (age_group)
     WHERE f.tenant_id = ${tenantId}
    ON CONFLICT (facility_id, age_group) DO NOTHING`.execute(trx);
  const closed = await sql<{ id: string; infant: number; toddler: number }>`
    SELECT f.id,
           max(p.places) FILTER (WHERE p.age_group = 'infant') AS infant,
           max(p.places) FILTER (WHERE p.age_group = 'toddler') AS toddler
      FROM facilities f JOIN facility_places p ON p.facility_id = f.id
     WHERE f.tenant_id = ${tenantId}
     GROUP BY f.id, f.code
    HAVING sum(p.vacancies) = 0
     ORDER BY f.code`.execute(trx);
  const rows: { facility: string; group: 'infant' | 'toddler'; vacancies: number }[] = [];
  for (const f of closed.rows) {
    for (const group of ['infant', 'toddler'] as const) {
      const places = Number(f[group] ?? 0);
      rows.push({ facility: f.id, group, vacancies: Math.min(places, Math.round(places * openShare * 2 * rng())) });
    }
  }
  for (let i = 0; i < rows.length; i += 2000) {
    const batch = rows.slice(i, i + 2000).filter((r) => r.vacancies > 0);
    if (!batch.length) continue;
    await sql`UPDATE facility_places p SET vacancies = v.n, updated_at = ${now}
      FROM (VALUES ${sql.join(batch.map((r) => sql`(${r.facility}::uuid, ${r.group}, ${r.vacancies}::int)`))}) AS v (facility_id, age_group, n)
     WHERE p.facility_id = v.facility_id AND p.age_group = v.age_group`.execute(trx);
  }
  return closed.rows.length;
}

export interface ScaleSeedOptions {
  children: number;
  /** Synthetic facilities to add first (none: use the tenant's). */
  facilities: number;
  /** Choices per child. */
  choices: number;
  seed: number | string;
  now: Date;
  origin: AuditOrigin;
  keys?: KeyProvider;
  /** Share of places open on average (default 0.1: 10 %). */
  openShare?: number;
  /** Families are generated and written this many at a time. */
  batch?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface ScaleSeedResult {
  facilities: number;
  families: number;
  children: number;
  applications: number;
}

/**
 * One transaction with its audit event, like the demo seed: the whole
 * population appears, recorded, or nothing does.
 */
export async function seedScale(db: Kysely<DB>, tenantId: string, opts: ScaleSeedOptions): Promise<ScaleSeedResult> {
  if (!opts.keys) {
    const keys = loadKeyProvider(process.env, process.env.GUICHET_DATA_DIR || './data');
    try {
      return await seedScale(db, tenantId, { ...opts, keys });
    } finally {
      await keys.close();
    }
  }
  const keys = opts.keys;
  const { now, origin, seed } = opts;
  const batch = opts.batch ?? 5000;
  return inTenant(
    db,
    tenantId,
    async (trx) => {
      let facilitiesAdded = 0;
      if (opts.facilities > 0) {
        const rows = generateFacilities(opts.facilities, seed).map((f) => ({ ...f, tenant_id: tenantId, search_key: foldForSearch(`${f.name} ${f.municipality}`), created_at: now, updated_at: now }));
        for (let i = 0; i < rows.length; i += 2000) {
          const r = await trx.insertInto('facilities').values(rows.slice(i, i + 2000)).onConflict((oc) => oc.columns(['tenant_id', 'code']).doNothing()).returning('id').execute();
          facilitiesAdded += r.length;
        }
      }
      await ensurePlaces(trx, tenantId, createRng(`places:${seed}`), opts.openShare ?? 0.1, now);
      const facilities: SeedFacility[] = await trx
        .selectFrom('facilities')
        .select(['id', 'municipality', 'postal_code', 'places_infant', 'places_total'])
        .where('tenant_id', '=', tenantId)
        .orderBy('code')
        .execute();
      if (facilities.length === 0) throw new Error('seed: the tenant has no facilities; import the directory first or pass --facilities');

      const total = { families: 0, children: 0, applications: 0 };
      let pending: SyntheticFamily[] = [];
      let pendingChildren = 0;
      const flush = async () => {
        const w = await insertSyntheticFamilies(trx, tenantId, pending, now, keys);
        total.families += w.families;
        total.children += w.children;
        total.applications += w.applications;
        pending = [];
        pendingChildren = 0;
        opts.onProgress?.(total.children, opts.children);
      };
      opts.onProgress?.(0, opts.children);
      for (const f of familyStream({ seed, facilities, today: now, choices: opts.choices, emailDomain: `echelle-${emailPart(String(seed))}.exemple.test` })) {
        const room = opts.children - total.children - pendingChildren;
        if (room <= 0) break;
        // The last family keeps only the children that fit, so the count is exact.
        const family = f.children.length > room ? { ...f, children: f.children.slice(0, room) } : f;
        pending.push(family);
        pendingChildren += family.children.length;
        if (pending.length >= batch) await flush();
      }
      if (pending.length) await flush();
      await appendAudit(
        trx,
        tenantId,
        {
          action: 'demo.seed',
          outcome: 'success',
          actorAccountId: origin.actorAccountId,
          actorRoles: origin.actorRoles,
          ip: origin.ip,
          userAgent: origin.userAgent,
          requestId: origin.requestId,
          targetType: 'family',
          details: { ...total, facilities: facilitiesAdded, choices: opts.choices, seed, scale: true },
        },
        now,
      );
      return { facilities: facilitiesAdded, ...total };
    },
    origin.actorAccountId,
  );
}
