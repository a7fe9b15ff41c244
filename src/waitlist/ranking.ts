import { sql, type RawBuilder } from 'kysely';
import { addMonths, today } from './dates.ts';

export type Category = 1 | 2 | 3 | 4 | 5;
export type AgeGroup = 'infant' | 'toddler';

/**
 * Quebec 2025 admission order (domain.md): five categories, then time waited
 * since the desired entry date (earliest first), then registration time, then
 * the file reference so that the order is total and stable.
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

export function rankOrderSql(app: string, child: string): RawBuilder<unknown> {
  return sql`${categorySql(app, child)}, ${sql.ref(`${child}.desired_entry_date`)}, ${sql.ref(`${app}.created_at`)}, ${sql.ref(`${child}.reference`)}`;
}

export function category(x: { parentIsStaff: boolean; siblingAttending: boolean; inSubsidisedCare: boolean }): Category {
  if (x.parentIsStaff && x.siblingAttending) return 1;
  if (x.parentIsStaff) return 2;
  if (x.siblingAttending) return 3;
  if (!x.inSubsidisedCare) return 4;
  return 5;
}

/** The age group the child will be in when care starts (the later of today and the desired entry date). */
export function ageGroup(birthDate: string, desiredEntryDate: string, now: Date, infantMaxMonths: number): AgeGroup {
  const t = today(now);
  const start = desiredEntryDate > t ? desiredEntryDate : t;
  return start < addMonths(birthDate, infantMaxMonths) ? 'infant' : 'toddler';
}
