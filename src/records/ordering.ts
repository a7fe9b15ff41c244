import { sql, type Expression, type RawBuilder, type SqlBool } from 'kysely';
import type { Trx } from '../db/connection.ts';
import type { PriorityKind } from '../tenants/rules.ts';
import type { Tenant } from '../tenants/service.ts';
import { addMonths, today } from '../waitlist/dates.ts';
import { priorityCapOpen, type OrderingContext } from '../waitlist/ranking.ts';

export interface DeclaredPriority {
  kind: PriorityKind;
  detail: string | null;
}

/** How a facility orders its candidates today: the tenant's rules, its declared priorities, and where it stands against the cap. */
export interface FacilityOrdering extends OrderingContext {
  priorities: DeclaredPriority[];
  admissions: { total: number; byPriority: number; since: string };
}

/** A facility's declared priorities, those the tenant's rules still allow. */
export async function declaredPriorities(trx: Trx, tenant: Pick<Tenant, 'rules'>, facilityId: string): Promise<DeclaredPriority[]> {
  const rows = await trx.selectFrom('facility_priorities').select(['kind', 'detail']).where('facility_id', '=', facilityId).orderBy('kind').execute();
  const allowed = new Set<string>(tenant.rules.priorities.kinds);
  return rows.filter((r) => allowed.has(r.kind)).map((r) => ({ kind: r.kind as PriorityKind, detail: r.detail }));
}

/**
 * The facility's order for today: its admissions over the rules' window
 * (offers accepted or started), how many came by priority, and so whether a
 * declared priority may still lift a child.
 */
export async function facilityOrdering(trx: Trx, tenant: Pick<Tenant, 'rules'>, facilityId: string, now: Date): Promise<FacilityOrdering> {
  return (await facilityOrderings(trx, tenant, [facilityId], now)).get(facilityId)!;
}


/**
 * facilityOrdering for several facilities at once (a parent's chosen ones):
 * the same answer for each, in two grouped queries instead of two each.
 */
export async function facilityOrderings(trx: Trx, tenant: Pick<Tenant, 'rules'>, facilityIds: readonly string[], now: Date): Promise<Map<string, FacilityOrdering>> {
  const out = new Map<string, FacilityOrdering>();
  if (!facilityIds.length) return out;
  const ids = [...new Set(facilityIds)];
  const allowed = new Set<string>(tenant.rules.priorities.kinds);
  const since = addMonths(today(now), -tenant.rules.priorities.windowMonths);
  const declared = await trx.selectFrom('facility_priorities').select(['facility_id', 'kind', 'detail']).where('facility_id', 'in', ids).orderBy('facility_id').orderBy('kind').execute();
  const counts = await trx
      .selectFrom('offers')
      .select(['facility_id', sql<string>`count(*)`.as('total'), sql<string>`count(*) FILTER (WHERE by_priority IS NOT NULL)`.as('by_priority')])
      .where('facility_id', 'in', ids)
      // Pending offers count as admissions to come: the places a declaration fills one after another, or an offer
      // still awaiting its answer, would otherwise each find the cap open and all go by priority.
      .where('status', 'in', ['pending', 'accepted', 'started'])
      .where('offered_at', '>=', new Date(`${since}T00:00:00Z`))
      .groupBy('facility_id')
      .execute();
  const byFacility = new Map(counts.map((c) => [c.facility_id, c]));
  for (const id of ids) {
    const priorities = declared.filter((r) => r.facility_id === id && allowed.has(r.kind)).map((r) => ({ kind: r.kind as PriorityKind, detail: r.detail }));
    const c = byFacility.get(id);
    const total = Number(c?.total ?? 0);
    const byPriority = Number(c?.by_priority ?? 0);
    out.set(id, {
      ordering: tenant.rules.ordering,
      declared: priorities.map((p) => p.kind),
      priorities,
      priorityOpen: priorities.length > 0 && priorityCapOpen(byPriority, total, tenant.rules.priorities.capShare),
      today: today(now),
      admissions: { total, byPriority, since },
    });
  }
  return out;
}

/** Where one facility stands, for a round over all of them: its declared kinds (the rules' allowed ones, by kind) and whether they lift children now. */
export interface FacilityPriorityState {
  declared: PriorityKind[];
  priorityOpen: boolean;
}

/**
 * facilityOrdering for every facility of the tenant at once, as of `todayIso`
 * (a coordinated round reads them all): the same declared kinds, window and
 * cap, in two grouped queries instead of two per facility. Facilities with no
 * declared priority are left out (nothing lifts there).
 */
export async function facilityPriorityStates(trx: Trx, tenant: Pick<Tenant, 'rules'>, todayIso: string): Promise<Map<string, FacilityPriorityState>> {
  const allowed = new Set<string>(tenant.rules.priorities.kinds);
  const rows = await trx.selectFrom('facility_priorities').select(['facility_id', 'kind']).orderBy('facility_id').orderBy('kind').execute();
  const out = new Map<string, FacilityPriorityState>();
  for (const r of rows) {
    if (!allowed.has(r.kind)) continue;
    const s = out.get(r.facility_id);
    if (s) s.declared.push(r.kind as PriorityKind);
    else out.set(r.facility_id, { declared: [r.kind as PriorityKind], priorityOpen: false });
  }
  if (!out.size) return out;
  const since = addMonths(todayIso, -tenant.rules.priorities.windowMonths);
  const counts = await trx
    .selectFrom('offers')
    .select(['facility_id', sql<string>`count(*)`.as('total'), sql<string>`count(*) FILTER (WHERE by_priority IS NOT NULL)`.as('by_priority')])
    .where('status', 'in', ['pending', 'accepted', 'started'])
    .where('offered_at', '>=', new Date(`${since}T00:00:00Z`))
    .groupBy('facility_id')
    .execute();
  const byFacility = new Map(counts.map((c) => [c.facility_id, c]));
  for (const [id, s] of out) {
    const c = byFacility.get(id);
    s.priorityOpen = priorityCapOpen(Number(c?.by_priority ?? 0), Number(c?.total ?? 0), tenant.rules.priorities.capShare);
  }
  return out;
}

/**
 * A facility's eligible applications with every term of their order, as rows
 * that stand for both the application and its child (rankOrderSql('x', 'x')):
 * the child's terms are the application's copies of them (migration 0024), so
 * this reads the applications_rank_terms index alone. `facility` is a value or
 * a column of an enclosing query.
 */
export function eligibleRankTermsSql(facility: RawBuilder<unknown> | string, filter: Expression<SqlBool> = sql<SqlBool>`true`): RawBuilder<unknown> {
  const f = typeof facility === 'string' ? sql`${facility}::uuid` : facility;
  return sql`SELECT a.id, a.created_at, a.sibling_attending, a.parent_is_staff, a.priorities,
                    a.child_birth_month AS birth_month, a.child_desired_entry_date AS desired_entry_date,
                    a.child_seniority_from AS seniority_from, a.child_in_subsidised_care AS in_subsidised_care,
                    a.child_reference AS reference
               FROM applications a
              WHERE a.facility_id = ${f} AND a.status = 'active' AND a.child_eligible AND ${filter}`;
}
