import { sql, type RawBuilder } from 'kysely';
import type { PriorityKind, TenantRules } from '../tenants/rules.ts';
import { addMonths, monthsBetween, today } from './dates.ts';

export type Category = 1 | 2 | 3 | 4 | 5;
export type AgeGroup = 'infant' | 'toddler';

/**
 * What an order needs beyond the rows: the tenant's ordering rules, the
 * facility's declared priorities, whether the facility is still under its
 * priority cap (priorityOpen, from priorityCapOpen), and today's date (the
 * points order counts months waited up to it).
 */
export interface OrderingContext {
  ordering: TenantRules['ordering'];
  declared: readonly PriorityKind[];
  priorityOpen: boolean;
  today: string;
}

/** Quebec 2025 with no declared priority: what the ranking was before priorities and points. */
export function quebecContext(now = new Date()): OrderingContext {
  return { ordering: { kind: 'categories' }, declared: [], priorityOpen: false, today: today(now) };
}

/**
 * Quebec 2025 categories (domain.md):
 *   1 child of a staff member, with a sibling admitted at the service
 *   2 child of a staff member
 *   3 sibling admitted at the service
 *   4 not already in a CPE or subsidised garderie
 *   5 everyone else
 */
export function categorySql(app: string, child: string): RawBuilder<number> {
  const a = sql.ref(app);
  const c = sql.ref(child);
  return sql<number>`CASE
    WHEN ${a}.parent_is_staff AND ${a}.sibling_attending THEN 1
    WHEN ${a}.parent_is_staff THEN 2
    WHEN ${a}.sibling_attending THEN 3
    WHEN NOT ${c}.in_subsidised_care THEN 4
    ELSE 5 END`;
}

/**
 * The day seniority counts from: the desired entry date, or the day a file
 * came back from inactivity when the rules say it loses its seniority.
 */
export function senioritySql(child: string): RawBuilder<string> {
  return sql<string>`greatest(${sql.ref(`${child}.desired_entry_date`)}, ${sql.ref(`${child}.seniority_from`)})`;
}

function kindsArray(kinds: readonly string[]): RawBuilder<string[]> {
  return kinds.length ? sql<string[]>`ARRAY[${sql.join(kinds.map((k) => sql`${k}`))}]::text[]` : sql<string[]>`ARRAY[]::text[]`;
}

/** How many of the facility's declared priorities the application says the child meets. */
export function prioritiesMetSql(app: string, declared: readonly PriorityKind[]): RawBuilder<number> {
  if (!declared.length) return sql<number>`0`;
  // The overlap test first: an index-free array operator, where the intersection is a subquery for every row.
  const kinds = kindsArray(declared);
  return sql<number>`CASE WHEN ${sql.ref(`${app}.priorities`)} && ${kinds} THEN cardinality(ARRAY(SELECT unnest(${sql.ref(`${app}.priorities`)}) INTERSECT SELECT unnest(${kinds}))) ELSE 0 END`;
}

/** Full months from the seniority date to today, never negative (a future entry date has waited nothing yet). */
export function monthsWaitedSql(child: string, todayIso: string): RawBuilder<number> {
  const s = senioritySql(child);
  return sql<number>`greatest(0, (date_part('year', age(${todayIso}::date, ${s})) * 12 + date_part('month', age(${todayIso}::date, ${s})))::int)`;
}

/** The points an application has under the points order; 0 under the categories order. */
export function pointsSql(app: string, child: string, o: OrderingContext): RawBuilder<number> {
  if (o.ordering.kind !== 'points') return sql<number>`0`;
  const w = o.ordering.weights;
  const a = sql.ref(app);
  const c = sql.ref(child);
  const pri = o.priorityOpen ? sql`${prioritiesMetSql(app, o.declared)} * ${sql.lit(w.eachPriority)}` : sql`0`;
  return sql<number>`(CASE WHEN ${a}.sibling_attending THEN ${sql.lit(w.siblingAttending)} ELSE 0 END
    + CASE WHEN ${a}.parent_is_staff THEN ${sql.lit(w.parentIsStaff)} ELSE 0 END
    + CASE WHEN NOT ${c}.in_subsidised_care THEN ${sql.lit(w.notInSubsidisedCare)} ELSE 0 END
    + ${pri}
    + ${monthsWaitedSql(child, o.today)} * ${sql.lit(w.perMonthWaited)})`;
}

/** 1 when a declared priority lifts the application (the facility is under its cap and the child meets one), else 0. */
export function liftedSql(app: string, o: OrderingContext): RawBuilder<number> {
  if (!o.priorityOpen || !o.declared.length) return sql<number>`0`;
  return sql<number>`CASE WHEN ${sql.ref(`${app}.priorities`)} && ${kindsArray(o.declared)} THEN 1 ELSE 0 END`;
}

/**
 * The ORDER BY of a facility's candidates under the tenant's rules.
 *  categories: lifted by a declared priority first (while under the cap),
 *    then category, then seniority (earliest first);
 *  points: most points first (a met priority adds its weight, while under
 *    the cap), then seniority.
 * Both then break ties by the application's time, then the file reference,
 * so that the order is total and stable. Without a context: Quebec 2025
 * with no declared priority.
 */
export function rankOrderSql(app: string, child: string, o?: OrderingContext): RawBuilder<unknown> {
  const ctx = o ?? quebecContext();
  const tail = sql`${senioritySql(child)}, ${sql.ref(`${app}.created_at`)}, ${sql.ref(`${child}.reference`)}`;
  if (ctx.ordering.kind === 'points') return sql`${pointsSql(app, child, ctx)} DESC, ${tail}`;
  // A bare constant in ORDER BY would name a column position: the lift is there only when it can apply.
  if (!ctx.priorityOpen || !ctx.declared.length) return sql`${categorySql(app, child)}, ${tail}`;
  return sql`${liftedSql(app, ctx)} DESC, ${categorySql(app, child)}, ${tail}`;
}

/**
 * rankOrderSql for rows of several facilities in one query: the same order,
 * with the facility's lifting priorities read from a column of the row
 * (`lifting`: the facility's declared kinds while it is under its cap, else
 * an empty array) instead of written into the statement. A parent's ranks at
 * ten facilities are then one statement planned once, not ten.
 */
export function rankOrderSqlPerRow(app: string, child: string, ordering: TenantRules['ordering'], todayIso: string, lifting: string): RawBuilder<unknown> {
  const overlaps = sql<boolean>`${sql.ref(`${app}.priorities`)} && ${sql.ref(lifting)}`;
  const met = sql<number>`CASE WHEN ${overlaps} THEN cardinality(ARRAY(SELECT unnest(${sql.ref(`${app}.priorities`)}) INTERSECT SELECT unnest(${sql.ref(lifting)}))) ELSE 0 END`;
  const tail = sql`${senioritySql(child)}, ${sql.ref(`${app}.created_at`)}, ${sql.ref(`${child}.reference`)}`;
  if (ordering.kind === 'points') {
    const w = ordering.weights;
    const a = sql.ref(app);
    const c = sql.ref(child);
    const points = sql`(CASE WHEN ${a}.sibling_attending THEN ${sql.lit(w.siblingAttending)} ELSE 0 END
      + CASE WHEN ${a}.parent_is_staff THEN ${sql.lit(w.parentIsStaff)} ELSE 0 END
      + CASE WHEN NOT ${c}.in_subsidised_care THEN ${sql.lit(w.notInSubsidisedCare)} ELSE 0 END
      + ${met} * ${sql.lit(w.eachPriority)}
      + ${monthsWaitedSql(child, todayIso)} * ${sql.lit(w.perMonthWaited)})`;
    return sql`${points} DESC, ${tail}`;
  }
  return sql`CASE WHEN ${overlaps} THEN 1 ELSE 0 END DESC, ${categorySql(app, child)}, ${tail}`;
}

export function category(x: { parentIsStaff: boolean; siblingAttending: boolean; inSubsidisedCare: boolean }): Category {
  if (x.parentIsStaff && x.siblingAttending) return 1;
  if (x.parentIsStaff) return 2;
  if (x.siblingAttending) return 3;
  if (!x.inSubsidisedCare) return 4;
  return 5;
}

/** Full months from `from` to `to` (ISO dates), never negative: the same count as monthsWaitedSql. */
export function monthsWaited(from: string, to: string): number {
  return to <= from ? 0 : Math.max(0, monthsBetween(from, to));
}

/** The parts of an application's points, for the parent's "why" and for tests; the same sum as pointsSql. */
export interface PointsParts {
  siblingAttending: number;
  parentIsStaff: number;
  notInSubsidisedCare: number;
  priorities: number;
  monthsWaited: number;
  total: number;
}

export function pointsOf(
  x: { parentIsStaff: boolean; siblingAttending: boolean; inSubsidisedCare: boolean; prioritiesMet: number; seniorityDate: string },
  o: OrderingContext,
): PointsParts | null {
  if (o.ordering.kind !== 'points') return null;
  const w = o.ordering.weights;
  const parts = {
    siblingAttending: x.siblingAttending ? w.siblingAttending : 0,
    parentIsStaff: x.parentIsStaff ? w.parentIsStaff : 0,
    notInSubsidisedCare: x.inSubsidisedCare ? 0 : w.notInSubsidisedCare,
    priorities: o.priorityOpen ? x.prioritiesMet * w.eachPriority : 0,
    monthsWaited: monthsWaited(x.seniorityDate, o.today) * w.perMonthWaited,
  };
  return { ...parts, total: parts.siblingAttending + parts.parentIsStaff + parts.notInSubsidisedCare + parts.priorities + parts.monthsWaited };
}

/**
 * The cap on priorities: a declared priority lifts a child only while the
 * facility's admissions by priority over the window are below the cap's
 * share of all its admissions (a facility with no admission yet counts as
 * one, so its first admission may come by priority).
 */
export function priorityCapOpen(byPriority: number, total: number, capShare: number): boolean {
  return byPriority < capShare * Math.max(total, 1);
}

/** The age group the child will be in when care starts (the later of today and the desired entry date). */
export function ageGroup(birthDate: string, desiredEntryDate: string, now: Date, infantMaxMonths: number): AgeGroup {
  const t = today(now);
  const start = desiredEntryDate > t ? desiredEntryDate : t;
  return start < addMonths(birthDate, infantMaxMonths) ? 'infant' : 'toddler';
}

/**
 * The age group from the clear birth month (children.birth_month, the first
 * day of the month; migrations 0019 and 0020 say why it is kept): an infant
 * until the first day of the month after it reaches the tenant's age.
 * Rounding up errs towards an infant place: a few days' older toddler in an
 * infant place is within the ratios; the reverse would not be. The one rule
 * for the candidate list, the ranks, the referral and the allocation, so that
 * none opens a birth date to sort children into groups.
 */
export function ageGroupOfMonth(birthMonth: string, desiredEntryDate: string, todayIso: string, infantMaxMonths: number): AgeGroup {
  const start = desiredEntryDate > todayIso ? desiredEntryDate : todayIso;
  return start < addMonths(birthMonth, infantMaxMonths + 1) ? 'infant' : 'toddler';
}

/** ageGroupOfMonth in SQL; NULL for a file written before the clear birth month (its birth date must be opened). */
export function ageGroupSql(child: string, todayIso: string, infantMaxMonths: number): RawBuilder<AgeGroup | null> {
  const c = sql.ref(child);
  return sql<AgeGroup | null>`CASE WHEN ${c}.birth_month IS NULL THEN NULL
    WHEN greatest(${todayIso}::date, ${c}.desired_entry_date) < (${c}.birth_month + make_interval(months => ${infantMaxMonths + 1}))::date THEN 'infant'
    ELSE 'toddler' END`;
}
