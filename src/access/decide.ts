import { sql, type Expression, type SqlBool } from 'kysely';
import { ACTIONS, AGENT_ROLES, OPENS_NO_PERSONAL_DATA, type Action, type Resource, type Rule } from './actions.ts';
import { AppError } from '../errors.ts';
import type { Actor, Membership } from './actor.ts';

/**
 * A role granted by dual control opens no personal data for this long: an
 * intruder who obtains a grant (by tricking two people) still cannot start
 * reading at once, and every privileged holder has been e-mailed meanwhile.
 * Break-glass (a stated reason, 30 minutes, everyone alerted) lifts it.
 */
export const COOLING_OFF_MINUTES = 60;

export interface Decision {
  allowed: boolean;
  action: Action;
  /** The rule that allowed it, for the audit trail. */
  rule?: Rule;
  reason?: 'not_signed_in' | 'email_not_verified' | 'no_rule_matches' | 'second_factor_required' | 'cooling_off';
}

function current(actor: Actor, now: Date) {
  return actor.memberships.filter((m) => !m.expiresAt || m.expiresAt > now);
}

export function breakGlassActive(actor: Actor | null, now: Date): boolean {
  return !!actor?.breakGlass && actor.breakGlass.until > now;
}

function cooling(m: Membership, now: Date): boolean {
  return !!m.coolingUntil && m.coolingUntil > now;
}

/** The memberships that count for this action now: cooling ones only for actions that open no personal data, or under break-glass. */
function usable(actor: Actor, action: Action, now: Date) {
  const all = current(actor, now);
  if (OPENS_NO_PERSONAL_DATA.has(action) || breakGlassActive(actor, now)) return all;
  return all.filter((m) => !cooling(m, now));
}

/**
 * The family an assisted session acts for, while it lasts and while the agent
 * still holds an agent role that opens personal data now (not cooling off,
 * not expired); null otherwise.
 */
export function assistedFamily(actor: Actor | null, now: Date): string | null {
  const a = actor?.assisting;
  if (!actor || !a || a.until <= now) return null;
  const roles: readonly string[] = AGENT_ROLES;
  return current(actor, now).some((m) => roles.includes(m.role) && !cooling(m, now)) ? a.accountId : null;
}

/** Whose family the actor's family actions are about: the assisted parent's while a session assists, otherwise the actor's own. */
export function familyAccountOf(actor: Actor, now: Date): string {
  return assistedFamily(actor, now) ?? actor.accountId;
}

function roleMatches(rule: Extract<Rule, { who: 'role' }>, memberships: readonly Membership[], resource: Resource): boolean {
  return memberships.some((m) => m.role === rule.role && (rule.scope === 'tenant' || (resource.type === 'facility' && m.facilityId === resource.facilityId)));
}

function matches(rule: Rule, actor: Actor | null, action: Action, resource: Resource, now: Date): boolean {
  switch (rule.who) {
    case 'anyone':
      return true;
    case 'verifiedAccount':
      return !!actor && actor.emailVerified;
    case 'familyOwner':
      // While assisting, the session acts for the consented family alone, not for the agent's own.
      return !!actor && actor.emailVerified && !actor.assisting && resource.type === 'family' && resource.ownerAccountId === actor.accountId;
    case 'assistingAgent': {
      const family = assistedFamily(actor, now);
      return !!family && resource.type === 'family' && resource.ownerAccountId === family;
    }
    case 'role':
      if (!actor) return false;
      return roleMatches(rule, usable(actor, action, now), resource);
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
    if (matches(rule, actor, action, resource, now)) return { allowed: true, action, rule };
  }
  if (!actor) return { allowed: false, action, reason: 'not_signed_in' };
  if (rules.some((r) => r.who === 'role' && roleMatches(r, current(actor, now), resource))) return { allowed: false, action, reason: 'cooling_off' };
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
        if (actor?.emailVerified && !actor.assisting && cols.familyOwner) parts.push(sql<SqlBool>`${cols.familyOwner} = ${actor.accountId}`);
        break;
      case 'assistingAgent': {
        const family = assistedFamily(actor, now);
        if (family && cols.familyOwner) parts.push(sql<SqlBool>`${cols.familyOwner} = ${family}`);
        break;
      }
      case 'role': {
        if (!actor) break;
        const ms = usable(actor, action, now).filter((m) => m.role === rule.role);
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

/** The error a person reads for a refusal: sign in, confirm the e-mail, wait out (or break) the cooling-off, or plain "forbidden". */
export function refusal(actor: Actor | null, d: Decision): AppError {
  if (!actor || d.reason === 'not_signed_in') return new AppError('signInRequired');
  if (d.reason === 'email_not_verified') return new AppError('emailNotVerified');
  if (d.reason === 'cooling_off') return new AppError('coolingOff');
  return new AppError('forbidden');
}
