/**
 * The programme's statistics: how many children wait (by region, by age
 * group, by month of desired entry), the places and vacancies, and the time
 * from the start of waiting to a place. Everything is aggregated in SQL over
 * the personal-data tables, so no row per child ever leaves the database, and
 * every count of children under five is suppressed here, before it leaves
 * the records layer: the pages and the CSV can only show "<5". Reading them
 * is an audit event (the filters, no family) written before the figures
 * leave, like any other read of the gateway.
 */
import { sql } from 'kysely';
import { decide } from '../access/decide.ts';
import type { Ctx, Deps } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import { AppError } from '../errors.ts';
import { audit, deny, run } from './gateway.ts';

/** Counts of children below this are never shown: "<5". */
export const SMALL_COUNT = 5;

/**
 * A count as it may be shown: the number, "<5" (1 to 4 children), or masked
 * (a larger count hidden so that a suppressed one cannot be worked out from
 * the total: complementary suppression).
 */
export type Shown = { n: number } | { lt5: true } | { masked: true };

export interface StatisticsFilters {
  /** A region as the directory names it ('16 - Montérégie'), or null for all. */
  region: string | null;
  /** First and last month, 'YYYY-MM', inclusive; null for open ends. */
  from: string | null;
  to: string | null;
}

export type AgeGroupKey = 'infant' | 'toddler' | 'unknown';

export interface PlacesRow {
  region: string;
  ageGroup: 'infant' | 'toddler';
  facilities: number;
  places: number;
  vacancies: number;
}

export interface PlacementRow {
  region: string;
  ageGroup: 'infant' | 'toddler';
  placed: Shown;
  /** Days from the start of waiting to the offer; null when the group is too small to show. */
  medianDays: number | null;
  meanDays: number | null;
}

export interface Statistics {
  filters: StatisticsFilters;
  /** Every region of the tenant's directory, for the filter. */
  regions: string[];
  waiting: {
    total: Shown;
    /** A child waiting in several regions counts once in each: the rows may add up to more than the total. */
    byRegion: { key: string; count: Shown }[];
    byAgeGroup: { key: AgeGroupKey; count: Shown }[];
    /** Month of the desired entry date: the date seniority counts from (Quebec 2025). */
    byMonth: { key: string; count: Shown }[];
  };
  places: PlacesRow[];
  placement: PlacementRow[];
}

export function shown(n: number): Shown {
  return n > 0 && n < SMALL_COUNT ? { lt5: true } : { n };
}

/**
 * Suppresses small cells of a breakdown whose cells add up to a shown total:
 * when exactly one cell is "<5", the total would give it away, so the next
 * smallest cell is masked too.
 */
export function suppressPartition<K>(cells: { key: K; n: number }[], total: number): { key: K; count: Shown }[] {
  const out = cells.map((c) => ({ key: c.key, count: shown(c.n) }));
  const small = out.filter((c) => 'lt5' in c.count).length;
  if (small === 1 && total >= SMALL_COUNT) {
    let pick = -1;
    cells.forEach((c, i) => {
      if (c.n >= SMALL_COUNT && (pick < 0 || c.n < cells[pick]!.n)) pick = i;
    });
    if (pick >= 0) out[pick] = { key: out[pick]!.key, count: { masked: true } };
  }
  return out;
}

/** First day of the month after 'YYYY-MM'. */
function monthAfter(m: string): string {
  const [y, mo] = m.split('-').map(Number) as [number, number];
  return mo === 12 ? `${y + 1}-01-01` : `${y}-${String(mo + 1).padStart(2, '0')}-01`;
}

function isoDay(d: Date): string {
  return d.toISOString().slice(0, 10);
}

async function compute(trx: Trx, ctx: Ctx, f: StatisticsFilters): Promise<Omit<Statistics, 'filters'>> {
  const region = f.region;
  const fromDay = f.from ? `${f.from}-01` : null;
  const toDay = f.to ? monthAfter(f.to) : null;
  const today = isoDay(ctx.now);
  const infantMonths = ctx.tenant.rules.infantMaxMonths;
  // The child's terms and its facility's region as the application carries them (kept equal to the child and the
  // facility by the database: migrations 0024, 0045). "Eligible": the file is live and active.
  const period = sql`${fromDay ? sql`AND a.child_desired_entry_date >= ${fromDay}::date` : sql``} ${toDay ? sql`AND a.child_desired_entry_date < ${toDay}::date` : sql``}`;
  const inRegion = region !== null ? sql`AND a.facility_region = ${region}` : sql``;

  const regions = (await trx.selectFrom('facilities').select('region').distinct().orderBy('region').execute()).map((r) => r.region);

  // A child waits while it has an active application (to a facility of the region, when one is chosen): one per
  // child, read in child order from an index (applications_active_child, or applications_waiting_by_region for a
  // region), then the total, the age groups and the months in one pass (grouping sets). The age group is the one
  // when care starts (the later of today and the desired entry date), to the month: the birth month is in clear.
  const waiting = await sql<{ age: AgeGroupKey | null; month: string | null; n: string }>`
    WITH w AS (
      SELECT DISTINCT ON (a.child_id) a.child_birth_month AS birth_month, a.child_desired_entry_date AS desired_entry_date
        FROM applications a
       WHERE a.status = 'active' AND a.child_eligible ${inRegion} ${period}
       ORDER BY a.child_id
    ), terms AS (
      -- A few thousand (birth month, desired entry) pairs for a million children: the age group and the month are
      -- worked out once a pair, not once a child.
      SELECT w.birth_month, w.desired_entry_date, count(*) AS n FROM w GROUP BY w.birth_month, w.desired_entry_date
    ), x AS (
      SELECT CASE WHEN t.birth_month IS NULL THEN 'unknown'
                  WHEN greatest(${today}::date, t.desired_entry_date) < (t.birth_month + make_interval(months => ${infantMonths}))::date THEN 'infant'
                  ELSE 'toddler' END AS age,
             to_char(t.desired_entry_date, 'YYYY-MM') AS month,
             t.n
        FROM terms t
    )
    SELECT age, month, sum(n)::bigint AS n FROM x GROUP BY GROUPING SETS ((age), (month), ())`.execute(trx);
  const total = Number(waiting.rows.find((r) => r.age === null && r.month === null)?.n ?? 0);
  const byAge = { rows: waiting.rows.filter((r) => r.age !== null).map((r) => ({ k: r.age!, n: r.n })) };
  const byMonth = { rows: waiting.rows.filter((r) => r.month !== null).map((r) => ({ k: r.month!, n: r.n })).sort((p, q) => (p.k < q.k ? -1 : 1)) };

  // Distinct (region, child) pairs, read in that order from applications_waiting_by_region, then counted.
  const byRegion = await sql<{ k: string; n: string }>`
    SELECT p.region AS k, count(*) AS n
      FROM (SELECT DISTINCT a.facility_region AS region, a.child_id
              FROM applications a
             WHERE a.status = 'active' AND a.child_eligible ${inRegion} ${period}) p
     GROUP BY p.region ORDER BY p.region`.execute(trx);

  const places = await sql<{ region: string; age_group: 'infant' | 'toddler'; facilities: string; places: string; vacancies: string }>`
    SELECT f.region, p.age_group, count(*) AS facilities, coalesce(sum(p.places), 0) AS places, coalesce(sum(p.vacancies), 0) AS vacancies
      FROM facility_places p JOIN facilities f ON f.id = p.facility_id
     ${region !== null ? sql`WHERE f.region = ${region}` : sql``}
     GROUP BY f.region, p.age_group ORDER BY f.region, p.age_group`.execute(trx);

  // Waiting starts at the later of the registration and the desired entry date; a place offered earlier counts as zero days.
  const placement = await sql<{ region: string; age_group: 'infant' | 'toddler'; n: string; median: string | number | null; mean: string | number | null }>`
    SELECT region, age_group, count(*) AS n,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY days) AS median,
           avg(days) AS mean
      FROM (
        SELECT f.region, o.age_group,
               greatest(0, (o.offered_at AT TIME ZONE 'America/Toronto')::date - greatest(c.desired_entry_date, (a.created_at AT TIME ZONE 'America/Toronto')::date)) AS days
          FROM offers o
          JOIN applications a ON a.id = o.application_id
          JOIN children c ON c.id = o.child_id
          JOIN facilities f ON f.id = o.facility_id
         WHERE o.status IN ('accepted', 'started')
           ${region !== null ? sql`AND f.region = ${region}` : sql``}
           ${fromDay ? sql`AND o.offered_at >= ${fromDay}::date` : sql``}
           ${toDay ? sql`AND o.offered_at < ${toDay}::date` : sql``}
      ) x
     GROUP BY region, age_group ORDER BY region, age_group`.execute(trx);

  const ageOrder: AgeGroupKey[] = ['infant', 'toddler', 'unknown'];
  const ageCounts = new Map(byAge.rows.map((r) => [r.k, Number(r.n)]));
  return {
    regions,
    waiting: {
      total: shown(total),
      byRegion: byRegion.rows.map((r) => ({ key: r.k, count: shown(Number(r.n)) })),
      byAgeGroup: suppressPartition(
        ageOrder.filter((k) => k !== 'unknown' || ageCounts.has(k)).map((k) => ({ key: k, n: ageCounts.get(k) ?? 0 })),
        total,
      ),
      byMonth: suppressPartition(byMonth.rows.map((r) => ({ key: r.k, n: Number(r.n) })), total),
    },
    places: places.rows.map((r) => ({ region: r.region, ageGroup: r.age_group, facilities: Number(r.facilities), places: Number(r.places), vacancies: Number(r.vacancies) })),
    placement: placement.rows.map((r) => {
      const n = Number(r.n);
      const small = n < SMALL_COUNT;
      return {
        region: r.region,
        ageGroup: r.age_group,
        placed: shown(n),
        medianDays: small || r.median === null ? null : Math.round(Number(r.median)),
        meanDays: small || r.mean === null ? null : Math.round(Number(r.mean)),
      };
    }),
  };
}

/**
 * The statistics for a programme operator or an administrator, with the
 * filters already validated by the caller (src/statistics/routes.tsx).
 * `format` says whether a page or a CSV file is being made, for the log.
 */
export async function readStatistics(deps: Deps, ctx: Ctx, filters: StatisticsFilters, format: { kind: 'page' } | { kind: 'csv'; table: string }): Promise<Statistics> {
  const action = format.kind === 'csv' ? 'statistics.export' : 'statistics.read';
  return run(deps, ctx, action, async (trx) => {
    const d = decide(ctx.actor, 'statistics.read', { type: 'tenant' }, ctx.now);
    if (!d.allowed) deny(ctx, action, 'statistics', 'tenant', d.reason ?? 'denied', d, d.reason === 'not_signed_in' ? new AppError('signInRequired') : new AppError('forbidden'));
    const out = await compute(trx, ctx, filters);
    await audit(trx, ctx, {
      action,
      targetType: 'statistics',
      purpose: 'programme.statistics',
      details: { region: filters.region, from: filters.from, to: filters.to, format: format.kind, ...(format.kind === 'csv' ? { table: format.table } : {}) },
    });
    return { filters, ...out };
  });
}
