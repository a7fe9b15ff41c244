import { sql, type Expression, type SqlBool } from 'kysely';
import { ACTIONS, OPENS_NO_PERSONAL_DATA, type Action, type Resource, type Rule } from './actions.ts';
import type { Actor } from './actor.ts';

export interface Decision {
  allowed: boolean;
  action: Action;
  /** The rule that allowed it, for the audit trail. */
  rule?: Rule;
  reason?: 'not_signed_in' | 'email_not_verified' | 'no_rule_matches' | 'second_factor_required';
}

function current(actor: Actor, now: Date) {
  return actor.memberships.filter((m) => !m.expiresAt || m.expiresAt > now);
}

function matches(rule: Rule, actor: Actor | null, resource: Resource, now: Date): boolean {
  switch (rule.who) {
    case 'anyone':
      return true;
    case 'verifiedAccount':
      return !!actor && actor.emailVerified;
    case 'familyOwner':
      return !!actor && actor.emailVerified && resource.type === 'family' && resource.ownerAccountId === actor.accountId;
    case 'role':
      if (!actor) return false;
      return current(actor, now).some(
        (m) =>
          m.role === rule.role &&
          (rule.scope === 'tenant' || (resource.type === 'facility' && m.facilityId === resource.facilityId)),
      );
  }
}

/**
 * Staff must have a second factor before they open personal data: an actor
 * with any current membership, not signed in with one, may perform no action
 * that opens personal data (see OPENS_NO_PERSONAL_DATA in actions.ts).
 */
export function secondFactorMissing(actor: Actor | null, action: Action, now: Date): boolean {
  return !!actor && !actor.mfa && !OPENS_NO_PERSONAL_DATA.has(action) && current(actor, now).length > 0;
}

/** The one place where a permission is decided. */
export function decide(actor: Actor | null, action: Action, resource: Resource, now: Date): Decision {
  const rules: readonly Rule[] = ACTIONS[action];
  if (secondFactorMissing(actor, action, now)) return { allowed: false, action, reason: 'second_factor_required' };
  for (const rule of rules) {
    if (matches(rule, actor, resource, now)) return { allowed: true, action, rule };
  }
  if (!actor) return { allowed: false, action, reason: 'not_signed_in' };
  if (!actor.emailVerified && rules.some((r) => r.who === 'verifiedAccount' || r.who === 'familyOwner')) {
    return { allowed: false, action, reason: 'email_not_verified' };
  }
  return { allowed: false, action, reason: 'no_rule_matches' };
}

/** Columns of the listed rows that the rules are checked against. */
export interface FilterColumns {
  familyOwner?: Expression<string>;
  facilityId?: Expression<string>;
}

/**
 * The same rules as decide(), as a SQL condition over a list query. A rule
 * that needs a column the query does not provide contributes nothing (false),
 * so a missing column can only hide rows, never reveal them.
 */
export function sqlFilter(actor: Actor | null, action: Action, cols: FilterColumns, now: Date): Expression<SqlBool> {
  const rules: readonly Rule[] = ACTIONS[action];
  if (secondFactorMissing(actor, action, now)) return sql<SqlBool>`false`;
  const parts: Expression<SqlBool>[] = [];
  for (const rule of rules) {
    switch (rule.who) {
      case 'anyone':
        parts.push(sql<SqlBool>`true`);
        break;
      case 'verifiedAccount':
        if (actor?.emailVerified) parts.push(sql<SqlBool>`true`);
        break;
      case 'familyOwner':
        if (actor?.emailVerified && cols.familyOwner) parts.push(sql<SqlBool>`${cols.familyOwner} = ${actor.accountId}`);
        break;
      case 'role': {
        if (!actor) break;
        const ms = current(actor, now).filter((m) => m.role === rule.role);
        if (!ms.length) break;
        if (rule.scope === 'tenant') {
          parts.push(sql<SqlBool>`true`);
        } else if (cols.facilityId) {
          const ids = ms.map((m) => m.facilityId).filter((x): x is string => !!x);
          if (ids.length) parts.push(sql<SqlBool>`${cols.facilityId} IN (${sql.join(ids)})`);
        }
        break;
      }
    }
  }
  if (!parts.length) return sql<SqlBool>`false`;
  return sql<SqlBool>`(${sql.join(parts, sql` OR `)})`;
}
