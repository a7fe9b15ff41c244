import type { AuditEventInput } from '../audit/events.ts';
import type { Trx } from '../db/connection.ts';
import type { DetectionResponse, DetectionSignal } from '../db/schema.ts';

/**
 * Detection rules are data: each names a signal counted on the audit stream,
 * a threshold over a sliding window, and the response when an actor crosses
 * it. The defaults below apply to every tenant; a tenant's row with the same
 * code replaces one (a stricter threshold, another response, disabled), a
 * row with a new code adds one (detection_rules, migration 0010).
 */
export interface DetectionRule {
  code: string;
  signal: DetectionSignal;
  /** Crossed when the window's total goes above this. */
  threshold: number;
  windowSeconds: number;
  /** What happens to the actor; each step includes the ones before it: alert → stepup → end_sessions → suspend. */
  response: DetectionResponse;
  /** The tenant's lockdown level to raise to as well, if any. */
  lockdownLevel: number | null;
  /** The rule does not apply while the actor has a declared batch in progress. */
  exceptDeclaredBatch: boolean;
  enabled: boolean;
}

export const RESPONSE_ORDER: readonly DetectionResponse[] = ['alert', 'stepup', 'end_sessions', 'suspend'];

/** Responses that refuse the request that crosses the threshold (containment is synchronous with it). */
export function refuses(r: DetectionRule): boolean {
  return r.response !== 'alert' || r.lockdownLevel !== null;
}

/**
 * The defaults: more than 20 files in 5 minutes, 50 in an hour, 200
 * in a day outside a declared batch. Each suspends the account at once (which
 * ends its sessions): an intruder with valid credentials who signs in again
 * would otherwise carry on, and a person who really needs more opens a batch.
 */
export const DEFAULT_RULES: readonly DetectionRule[] = [
  { code: 'files_read.5m', signal: 'files_read', threshold: 20, windowSeconds: 300, response: 'suspend', lockdownLevel: null, exceptDeclaredBatch: false, enabled: true },
  { code: 'files_read.1h', signal: 'files_read', threshold: 50, windowSeconds: 3600, response: 'suspend', lockdownLevel: null, exceptDeclaredBatch: false, enabled: true },
  { code: 'files_read.1d', signal: 'files_read', threshold: 200, windowSeconds: 86400, response: 'suspend', lockdownLevel: null, exceptDeclaredBatch: true, enabled: true },
];

/** The longest window any rule may have: hits older than this are purged. */
export const MAX_WINDOW_SECONDS = 7 * 86400;

/** The tenant's rules: the defaults, overridden and extended by its own rows. Disabled rules are left out. */
export async function rulesFor(trx: Trx): Promise<DetectionRule[]> {
  const rows = await trx.selectFrom('detection_rules').selectAll().execute();
  const byCode = new Map<string, DetectionRule>(DEFAULT_RULES.map((r) => [r.code, r]));
  for (const r of rows) {
    byCode.set(r.code, {
      code: r.code,
      signal: r.signal,
      threshold: r.threshold,
      windowSeconds: r.window_seconds,
      response: r.response,
      lockdownLevel: r.lockdown_level,
      exceptDeclaredBatch: r.except_declared_batch,
      enabled: r.enabled,
    });
  }
  return [...byCode.values()].filter((r) => r.enabled);
}

/**
 * Which signal an audit event is, and how much it weighs.
 *
 * files_read: a file opened by someone other than its family — a child's
 * file, its history, a family profile, a NIREC look-up that found files:
 * one per family touched. A page of a facility's candidates counts as one:
 * it shows no identity (a pseudonymous reference, an age group, a date, a
 * category) and fifty rows are one ordinary screen of a facility's list; a
 * person paging through it faster than they could work is still caught, page
 * by page, at the same thresholds.
 *
 * Only actors who hold a membership (staff, directors, operators,
 * administrators) are counted: a parent's account opens nothing but its own
 * family's files.
 */
export function signalOf(e: Pick<AuditEventInput, 'action' | 'familyIds'>): { signal: DetectionSignal; weight: number } | null {
  switch (e.action) {
    case 'waitlist.childFile.read':
    case 'waitlist.childFile.history':
    case 'family.profile.read':
      return { signal: 'files_read', weight: Math.max(1, e.familyIds?.length ?? 0) };
    case 'waitlist.childFile.lookupByNirec':
      return e.familyIds?.length ? { signal: 'files_read', weight: e.familyIds.length } : null;
    case 'waitlist.candidates.list':
      return { signal: 'files_read', weight: 1 };
    default:
      return null;
  }
}
