import { sql } from 'kysely';
import { decide } from '../access/decide.ts';
import type { AuditAction, AuditOrigin } from '../audit/events.ts';
import { appendAudit } from '../audit/log.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import type { Envelope } from '../crypto/envelope.ts';
import type { Trx } from '../db/connection.ts';
import { AppError } from '../errors.ts';
import type { PriorityKind } from '../tenants/rules.ts';
import { originFields, type Tenant } from '../tenants/service.ts';
import { addMonths, today } from '../waitlist/dates.ts';
import {
  ageGroup as ageGroupOf,
  ageGroupOfMonth,
  ageGroupSql,
  category,
  categorySql,
  pointsOf,
  pointsSql,
  priorityCapOpen,
  rankOrderSql,
  rankOrderSqlPerRow,
  senioritySql,
  type AgeGroup,
  type Category,
  type OrderingContext,
  type PointsParts,
} from '../waitlist/ranking.ts';
import { confirmationState, type ConfirmationState } from './confirmation.ts';
import { declaredPriorities, eligibleRankTermsSql, facilityOrdering, facilityOrderings, type DeclaredPriority, type FacilityOrdering } from './ordering.ts';
export { declaredPriorities, facilityOrdering, type DeclaredPriority, type FacilityOrdering };
import { audit, childWithOwner, deny, run, UUID, withSession, type ChildRow } from './gateway.ts';
import { openChildren, required } from './fields.ts';
import { fieldsFor } from './views.ts';

/**
 * The one place that orders a facility's eligible applications under the
 * tenant's rules: the staff's candidate list, the parent's rank, the
 * automatic referral and the coordinated allocation all read this order.
 * Eligible: an active application, of a live file that is not inactive
 * (unconfirmed past its grace period).
 */

export interface RankedApplication {
  /** 1-based, within the age group asked for (or the whole facility). */
  rank: number;
  applicationId: string;
  childId: string;
  familyId: string;
  reference: string;
  ageGroup: AgeGroup;
  category: Category;
  /** The points and their parts under the points order; null under the categories order. */
  points: PointsParts | null;
  seniorityDate: string;
  appliedAt: Date;
  /** The facility's declared priorities the parent says the child meets (to be verified at referral). */
  prioritiesMet: PriorityKind[];
  /** The priority that lifted the child (the facility under its cap), for offers.by_priority; null if none did. */
  byPriority: PriorityKind | null;
  siblingAttending: boolean;
  parentIsStaff: boolean;
  inSubsidisedCare: boolean;
}

/**
 * The ordered eligible applications of one facility, for one age group (or
 * all with null), inside the caller's transaction. Writes no audit event:
 * the caller records what it does with them (listRankedApplications does,
 * and a referral must). The age group comes from the clear birth month; only
 * a file written before it has its birth date opened, and it does not leave; each file opened so is added to
 * `opened` (child → family), for the caller to record. `withoutPendingOffer` leaves out children who
 * already hold a pending offer (they cannot be offered a second place).
 */
export async function rankFacilityIn(
  trx: Trx,
  env: Envelope,
  tenant: Tenant,
  facilityId: string,
  ageGroup: AgeGroup | null,
  now: Date,
  opts: { withoutPendingOffer?: boolean; ordering?: FacilityOrdering; opened?: Map<string, string> } = {},
): Promise<RankedApplication[]> {
  const o = opts.ordering ?? (await facilityOrdering(trx, tenant, facilityId, now));
  let q = trx
    .selectFrom('applications as a')
    .innerJoin('children as c', 'c.id', 'a.child_id')
    .where('a.facility_id', '=', facilityId)
    .where('a.status', '=', 'active')
    .where('c.deleted_at', 'is', null)
    .where('c.purged_at', 'is', null)
    .where('c.inactive_since', 'is', null);
  if (opts.withoutPendingOffer) q = q.where(({ not, exists, selectFrom }) => not(exists(selectFrom('offers as o').select('o.id').whereRef('o.child_id', '=', 'c.id').where('o.status', '=', 'pending'))));
  // The age group from the clear birth month, below: a filter on it in the query misleads the planner (see rankInFacility).
  const t = today(now);
  const rows = await q
    .select([
      'a.id as application_id',
      'a.created_at',
      'a.sibling_attending',
      'a.parent_is_staff',
      'a.priorities',
      'c.id',
      'c.family_id',
      'c.reference',
      sql<Buffer | null>`CASE WHEN c.birth_month IS NULL THEN c.birth_date_enc END`.as('birth_date_enc'),
      'c.birth_month',
      'c.desired_entry_date',
      'c.in_subsidised_care',
      senioritySql('c').as('seniority_date'),
      categorySql('a', 'c').as('category'),
      pointsSql('a', 'c', o).as('points'),
    ])
    .orderBy(rankOrderSql('a', 'c', o))
    .execute();
  const unknown = rows.filter((r) => !r.birth_month);
  const births = unknown.length ? await openChildren(env, tenant.id, unknown, ['birth_date']) : new Map();
  for (const r of unknown) opts.opened?.set(r.id, r.family_id);
  const declared = new Set<string>(o.declared);
  const out: RankedApplication[] = [];
  for (const r of rows) {
    const group = r.birth_month
      ? ageGroupOfMonth(r.birth_month, r.desired_entry_date, t, tenant.rules.infantMaxMonths)
      : ageGroupOf(required(births.get(r.id)!.birth_date, 'birth date'), r.desired_entry_date, now, tenant.rules.infantMaxMonths);
    if (ageGroup && group !== ageGroup) continue;
    const met = o.declared.filter((k) => (r.priorities ?? []).includes(k) && declared.has(k));
    const seniorityDate = typeof r.seniority_date === 'string' ? r.seniority_date : today(r.seniority_date as unknown as Date);
    const points = pointsOf({ parentIsStaff: r.parent_is_staff, siblingAttending: r.sibling_attending, inSubsidisedCare: r.in_subsidised_care, prioritiesMet: met.length, seniorityDate }, o);
    out.push({
      rank: out.length + 1,
      applicationId: r.application_id,
      childId: r.id,
      familyId: r.family_id,
      reference: r.reference,
      ageGroup: group,
      category: Number(r.category) as Category,
      points,
      seniorityDate,
      appliedAt: r.created_at,
      prioritiesMet: met,
      byPriority: o.priorityOpen && met.length ? met[0]! : null,
      siblingAttending: r.sibling_attending,
      parentIsStaff: r.parent_is_staff,
      inSubsidisedCare: r.in_subsidised_care,
    });
  }
  return out;
}

/**
 * Files whose birth date a ranking opened (written before the birth month was kept in clear): every one,
 * listed in the end or not, is named with its family, as fillVacancies does for a referral's. The date goes
 * no further than the age group, to nobody: the read is Guichet's own work, recorded as such (with the
 * request that caused it), so that the family sees « Guichet (traitement automatique) » rather than whoever
 * happened to open a page.
 */
async function recordBirthDatesOpened(trx: Trx, ctx: Ctx, action: AuditAction, facilityIds: readonly string[], opened: ReadonlyMap<string, string>): Promise<void> {
  if (!opened.size) return;
  const origin: AuditOrigin = { actorAccountId: null, actorRoles: ['system:ranking'], ip: null, userAgent: null, requestId: ctx.requestId };
  await appendAudit(
    trx,
    ctx.tenant.id,
    {
      action,
      outcome: 'success',
      ...originFields(origin),
      targetType: 'child',
      targetIds: [...opened.keys()],
      familyIds: [...new Set(opened.values())],
      fields: ['birth_date'],
      purpose: 'ranking.ageGroup',
      details: { facilities: facilityIds.join(' '), opened: opened.size },
    },
    ctx.now,
  );
}

/**
 * The ordered eligible applications of a facility for an age group, audited
 * (purpose 'system.ranking': references and order, no identity). Called by
 * the facility's staff (waitlist.candidates.list) or by the server's own
 * work with `system` set (referral job, allocation run, no actor).
 */
export async function listRankedApplications(
  deps: Deps,
  ctx: Ctx,
  facilityId: string,
  ageGroup: AgeGroup | null,
  opts: { system?: AuditOrigin; withoutPendingOffer?: boolean; limit?: number } = {},
): Promise<RankedApplication[]> {
  const action = 'waitlist.candidates.list';
  return run(deps, ctx, action, async (trx, env) => {
    if (!UUID.test(facilityId)) deny(ctx, action, 'facility', facilityId, 'malformed_id');
    if (ctx.actor) {
      const d = decide(ctx.actor, action, { type: 'facility', facilityId }, ctx.now);
      if (!d.allowed) deny(ctx, action, 'facility', facilityId, d.reason ?? 'denied', d);
    } else if (!opts.system || !opts.system.actorRoles.some((r) => r.startsWith('system:'))) {
      deny(ctx, action, 'facility', facilityId, 'not_signed_in', undefined, new AppError('signInRequired'));
    }
    const opened = new Map<string, string>();
    const all = await rankFacilityIn(trx, env, ctx.tenant, facilityId, ageGroup, ctx.now, { withoutPendingOffer: opts.withoutPendingOffer ?? false, opened });
    const rows = opts.limit ? all.slice(0, opts.limit) : all;
    await recordBirthDatesOpened(trx, ctx, action, [facilityId], opened);
    if (rows.length) {
      await appendAudit(
        trx,
        ctx.tenant.id,
        {
          action,
          outcome: 'success',
          ...originFields(opts.system && !ctx.actor ? opts.system : originOf(ctx)),
          targetType: 'facility',
          targetIds: [facilityId, ...rows.map((r) => r.childId)],
          familyIds: [...new Set(rows.map((r) => r.familyId))],
          fields: fieldsFor('system.ranking'),
          purpose: 'system.ranking',
          details: withSession(ctx, { ageGroup, count: rows.length }),
        },
        ctx.now,
      );
    }
    return rows;
  });
}

interface Place {
  rank: number | null;
  total: number;
  /** The ranked row, when the whole list was read (files without a birth month); else the caller computes the terms. */
  mine?: RankedApplication | undefined;
}

/**
 * Each application's rank in its facility's age group, and how many are
 * there, ordered and counted in SQL — one statement for all of a child's
 * facilities, each ordered by its own priorities (rankOrderSqlPerRow):
 * nothing but numbers leaves the database. A facility's answer is null when
 * a candidate there has no clear birth month (a file written before it): its
 * age group needs its birth date opened, and the caller reads the whole list
 * instead.
 */
async function ranksInFacilities(
  trx: Trx,
  tenant: Tenant,
  wanted: readonly { facilityId: string; applicationId: string; o: FacilityOrdering }[],
  group: AgeGroup,
  now: Date,
): Promise<Map<string, Place | null>> {
  const out = new Map<string, Place | null>();
  if (!wanted.length) return out;
  const t = today(now);
  const lifting = (o: FacilityOrdering) => (o.priorityOpen && o.declared.length ? sql`ARRAY[${sql.join(o.declared.map((k) => sql`${k}`))}]::text[]` : sql`ARRAY[]::text[]`);
  const facilities = sql.join(wanted.map((w) => sql`(${w.facilityId}::uuid, ${w.applicationId}::uuid, ${lifting(w.o)})`));
  // The order's terms about each child are copies on the application (migration 0024), so the facility's
  // candidates are read from one index alone; `x` stands for both the application and its child.
  const x = eligibleRankTermsSql(sql.ref('f.facility_id'));
  const gx = ageGroupSql('x', t, tenant.rules.infantMaxMonths);
  // Only the child's own age group is ordered (the other group's rows are left before the sort); a candidate
  // with no clear birth month is kept to say so (the facility's answer is then null: see above).
  const r = await sql<{ app: string; rank: string | null; total: string; legacy: boolean | null }>`
    WITH f (facility_id, app_id, lifting) AS (VALUES ${facilities}),
    ranked AS (
      SELECT x.id, f.app_id, x.birth_month IS NULL AS legacy,
             row_number() OVER (PARTITION BY f.app_id ORDER BY ${rankOrderSqlPerRow('x', 'x', tenant.rules.ordering, t, 'f.lifting')}) AS rank
        FROM f CROSS JOIN LATERAL (${x}) x
       WHERE x.birth_month IS NULL OR ${gx} = ${group}
    )
    SELECT app_id::text AS app,
           max(rank) FILTER (WHERE id = app_id) AS rank,
           count(*) AS total,
           bool_or(legacy) AS legacy
      FROM ranked GROUP BY app_id`.execute(trx);
  for (const row of r.rows) out.set(row.app, row.legacy ? null : { rank: row.rank === null ? null : Number(row.rank), total: Number(row.total) });
  // A facility with no eligible application at all has no row: no rank, nobody in the group.
  for (const w of wanted) if (!out.has(w.applicationId)) out.set(w.applicationId, { rank: null, total: 0 });
  return out;
}

async function rankFromList(trx: Trx, env: Envelope, tenant: Tenant, facilityId: string, group: AgeGroup, applicationId: string, now: Date, o: FacilityOrdering, opened: Map<string, string>): Promise<Place> {
  const list = await rankFacilityIn(trx, env, tenant, facilityId, group, now, { ordering: o, opened });
  const mine = list.find((r) => r.applicationId === applicationId);
  return { rank: mine?.rank ?? null, total: list.length, mine };
}

/** The child's place at one chosen facility, and why, for the parent. */
export interface ChildRank {
  applicationId: string;
  facilityId: string;
  facilityName: string;
  ageGroup: AgeGroup;
  /** null: not ranked (the file is inactive). */
  rank: number | null;
  /** How many eligible children in the child's age group at that facility. */
  total: number;
  ordering: 'categories' | 'points';
  category: Category;
  points: PointsParts | null;
  seniorityDate: string;
  prioritiesMet: PriorityKind[];
  /** Whether the facility's declared priorities lift children now (it is under its cap). */
  priorityOpen: boolean;
}

/**
 * The child's rank and why at each facility with an active application,
 * computed live. Only the parent's own file is named in the audit event;
 * other children's rows are counted and ordered (their age group from the
 * clear birth month), and nothing of them leaves but the count.
 */
export async function readChildRanks(deps: Deps, ctx: Ctx, childId: string): Promise<{ confirmation: ConfirmationState; ranks: ChildRank[] }> {
  return run(deps, ctx, 'waitlist.childFile.read', (trx, env) => childRanksIn(trx, env, ctx, childId));
}

/** readChildRanks's work inside a gateway transaction; `loaded` is the child's row when the caller has just read it. */
export async function childRanksIn(trx: Trx, env: Envelope, ctx: Ctx, childId: string, loaded?: ChildRow): Promise<{ confirmation: ConfirmationState; ranks: ChildRank[] }> {
  const action = 'waitlist.childFile.read';
  {
    const c = loaded ?? (await childWithOwner(trx, ctx, childId, action));
    const apps = await trx
      .selectFrom('applications as a')
      .innerJoin('facilities as f', 'f.id', 'a.facility_id')
      .select(['a.id', 'a.facility_id', 'a.sibling_attending', 'a.parent_is_staff', 'a.priorities', 'f.name'])
      .where('a.child_id', '=', c.id)
      .where('a.status', '=', 'active')
      .orderBy('a.created_at')
      .execute();
    const group = c.birth_month
      ? ageGroupOfMonth(c.birth_month, c.desired_entry_date, today(ctx.now), ctx.tenant.rules.infantMaxMonths)
      : ageGroupOf(required((await openChildren(env, ctx.tenant.id, [c], ['birth_date'])).get(c.id)!.birth_date, 'birth date'), c.desired_entry_date, ctx.now, ctx.tenant.rules.infantMaxMonths);
    const orderings = await facilityOrderings(trx, ctx.tenant, apps.map((a) => a.facility_id), ctx.now);
    const places = await ranksInFacilities(trx, ctx.tenant, apps.map((a) => ({ facilityId: a.facility_id, applicationId: a.id, o: orderings.get(a.facility_id)! })), group, ctx.now);
    const ranks: ChildRank[] = [];
    const opened = new Map<string, string>();
    const listedAt: string[] = [];
    for (const a of apps) {
      const o = orderings.get(a.facility_id)!;
      let place = places.get(a.id);
      if (!place) {
        // A group with a file written before the clear birth month: ranked from the whole list.
        listedAt.push(a.facility_id);
        place = await rankFromList(trx, env, ctx.tenant, a.facility_id, group, a.id, ctx.now, o, opened);
      }
      const mine = place.mine;
      const met = o.declared.filter((k) => a.priorities.includes(k));
      const seniorityDate = c.seniority_from && c.seniority_from > c.desired_entry_date ? c.seniority_from : c.desired_entry_date;
      ranks.push({
        applicationId: a.id,
        facilityId: a.facility_id,
        facilityName: a.name,
        ageGroup: group,
        rank: place.rank,
        total: place.total,
        ordering: o.ordering.kind,
        category: mine?.category ?? category({ parentIsStaff: a.parent_is_staff, siblingAttending: a.sibling_attending, inSubsidisedCare: c.in_subsidised_care }),
        points: mine?.points ?? pointsOf({ parentIsStaff: a.parent_is_staff, siblingAttending: a.sibling_attending, inSubsidisedCare: c.in_subsidised_care, prioritiesMet: met.length, seniorityDate }, o),
        seniorityDate,
        prioritiesMet: met,
        priorityOpen: o.priorityOpen,
      });
    }
    // The family's own file, without a clear month, had its birth date opened above: on the family's own event.
    opened.delete(c.id);
    await recordBirthDatesOpened(trx, ctx, action, listedAt, opened);
    await audit(trx, ctx, {
      action,
      targetType: 'child',
      targetIds: [c.id],
      familyIds: [c.family_id],
      fields: c.birth_month ? fieldsFor('parent.childFile.rank') : [...fieldsFor('parent.childFile.rank'), 'birth_date'],
      purpose: 'parent.childFile.rank',
      details: { facilities: apps.length },
    });
    return { confirmation: confirmationState(ctx.tenant.rules, c, ctx.now), ranks };
  }
}

