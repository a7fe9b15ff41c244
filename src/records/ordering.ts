import { sql } from 'kysely';
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
  const priorities = await declaredPriorities(trx, tenant, facilityId);
  const since = addMonths(today(now), -tenant.rules.priorities.windowMonths);
  const r = await trx
    .selectFrom('offers')
    .select([sql<string>`count(*)`.as('total'), sql<string>`count(*) FILTER (WHERE by_priority IS NOT NULL)`.as('by_priority')])
    .where('facility_id', '=', facilityId)
    .where('status', 'in', ['accepted', 'started'])
    .where('offered_at', '>=', new Date(`${since}T00:00:00Z`))
    .executeTakeFirst();
  const total = Number(r?.total ?? 0);
  const byPriority = Number(r?.by_priority ?? 0);
  return {
    ordering: tenant.rules.ordering,
    declared: priorities.map((p) => p.kind),
    priorities,
    priorityOpen: priorities.length > 0 && priorityCapOpen(byPriority, total, tenant.rules.priorities.capShare),
    today: today(now),
    admissions: { total, byPriority, since },
  };
}

