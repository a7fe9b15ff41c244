import type { Actor } from '../access/actor.ts';
import { appendAudit } from '../audit/log.ts';
import type { AuditEventInput, AuditOrigin } from '../audit/events.ts';
import type { Deps } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import type { DetectionResponse } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError } from '../errors.ts';
import { StepUpRequired } from '../identity/stepup.ts';
import { cancelPendingRequestsOf } from '../identity/grants.ts';
import { createAlert, type Severity } from './alerts.ts';
import { checkWindows, lockActor, record } from './counters.ts';
import { raiseLockdownByDetection } from './lockdown.ts';
import { RESPONSE_ORDER, refuses, rulesFor, signalsOf, STAFF_SIGNALS, type DetectionRule } from './rules.ts';

/**
 * Thrown inside a records transaction when the event it is about to serve
 * crosses a rule that refuses: the transaction rolls back (the read is not
 * served and is not counted), and the records gateway then calls contain()
 * which records the refusal, the alert and the containment in a transaction
 * of their own — they must persist although the read's transaction did not.
 */
export class Contained extends Error {
  constructor(
    readonly rules: readonly DetectionRule[],
    readonly event: AuditEventInput,
    readonly totals: Readonly<Record<string, number>>,
  ) {
    super('contained');
  }
}

export interface ReadContext {
  tenantId: string;
  actor: Actor | null;
  origin: AuditOrigin;
  now: Date;
  baseUrl: string;
}

function holdsMembership(actor: Actor | null, now: Date): actor is Actor {
  return !!actor && actor.memberships.some((m) => !m.expiresAt || m.expiresAt > now);
}

/**
 * Evaluates an event the records gateway has just written, in its
 * transaction, before the data leaves. Counts it if it is a signal; an
 * alert-only crossing writes its alert here (it commits with the read); a
 * refusing crossing throws Contained.
 */
export async function onRecordEvent(trx: Trx, rc: ReadContext, event: AuditEventInput, eventId: string): Promise<void> {
  if (event.outcome !== 'success' || !rc.actor) return;
  const staff = holdsMembership(rc.actor, rc.now);
  const sigs = signalsOf(event).filter((x) => staff || !STAFF_SIGNALS.has(x.signal));
  if (!sigs.length) return;
  const actor = rc.actor;
  const rules = await rulesFor(trx);
  const crossed: DetectionRule[] = [];
  const totals: Record<string, number> = {};
  for (const sig of sigs) {
    const check = await checkWindows(trx, actor.accountId, rc.tenantId, sig.signal, sig.weight, rules, rc.now);
    crossed.push(...check.crossed);
    for (const [k, v] of check.before) totals[k] = v + sig.weight;
  }
  let refusing = crossed.filter(refuses);
  // A step-up rule the actor has since satisfied (re-authenticated after the demand) lets the reads go on.
  if (refusing.length && refusing.every((r) => r.response === 'stepup' && r.lockdownLevel === null)) {
    const satisfied = await stepUpSatisfied(trx, actor, refusing, rc.now);
    if (satisfied) refusing = [];
  }
  if (refusing.length) throw new Contained(refusing, event, totals);
  for (const sig of sigs) await record(trx, rc.tenantId, actor.accountId, sig.signal, sig.weight, rc.now);
  // A step-up the actor has already answered is not alerted again.
  for (const r of crossed.filter((x) => !refuses(x))) {
    await createAlert(
      trx,
      rc.tenantId,
      { ruleCode: r.code, signal: r.signal, severity: 'low', subjectAccountId: actor.accountId, response: 'alert', lockdownLevel: null, eventIds: [eventId], details: { total: totals[r.code] ?? 0, threshold: r.threshold, windowSeconds: r.windowSeconds } },
      rc.origin,
      rc.now,
      rc.baseUrl,
    );
  }
}

async function stepUpSatisfied(trx: Trx, actor: Actor, rules: readonly DetectionRule[], now: Date): Promise<boolean> {
  if (!actor.auth) return false;
  const since = new Date(now.getTime() - Math.max(...rules.map((r) => r.windowSeconds)) * 1000);
  const hold = await trx
    .selectFrom('detection_holds')
    .select('since')
    .where('account_id', '=', actor.accountId)
    .where('rule_code', 'in', rules.map((r) => r.code))
    .where('since', '>', since)
    .orderBy('since', 'desc')
    .executeTakeFirst();
  return !!hold && actor.auth.at.getTime() > hold.since.getTime();
}

function strongest(rules: readonly DetectionRule[]): { response: DetectionResponse; lockdownLevel: number | null; rule: DetectionRule } {
  let best = rules[0]!;
  for (const r of rules) if (RESPONSE_ORDER.indexOf(r.response) > RESPONSE_ORDER.indexOf(best.response)) best = r;
  const levels = rules.map((r) => r.lockdownLevel ?? 0);
  const level = Math.max(...levels);
  return { response: best.response, lockdownLevel: level > 0 ? level : null, rule: best };
}

const DETECTION_ORIGIN: AuditOrigin = { actorAccountId: null, actorRoles: ['system:detection'], ip: null, userAgent: null, requestId: null };

export const SEVERITY: Record<DetectionResponse, Severity> = { alert: 'low', stepup: 'high', end_sessions: 'high', suspend: 'critical', lockdown: 'critical' };

/**
 * Applies the strongest of the crossed rules' responses to the account, in
 * the caller's transaction: a demand for step-up (every later request for
 * personal data asks for it until the person re-authenticates), the end of
 * its sessions, its suspension, the tenant's lockdown level raised (by one
 * for the lockdown grade, to the rule's level if it names one; never
 * lowered). Each step includes the ones before it.
 */
export async function applyResponse(
  trx: Trx,
  tenantId: string,
  accountId: string,
  rules: readonly DetectionRule[],
  now: Date,
): Promise<{ response: DetectionResponse; rule: DetectionRule; sessionsEnded: number; raisedTo: number | null }> {
  const { response, lockdownLevel, rule } = strongest(rules);
  const step = RESPONSE_ORDER.indexOf(response);
  let sessionsEnded = 0;
  if (response === 'stepup') {
    for (const r of rules) await trx.insertInto('detection_holds').values({ tenant_id: tenantId, account_id: accountId, kind: 'stepup', rule_code: r.code, since: now }).execute();
  }
  if (step >= RESPONSE_ORDER.indexOf('end_sessions')) {
    const ended = await trx.updateTable('sessions').set({ revoked_at: now }).where('account_id', '=', accountId).where('revoked_at', 'is', null).returning('id').execute();
    // The facility API keys the account made act as it: a key would otherwise go on reading after its sessions end.
    await trx.updateTable('facility_api_keys').set({ revoked_at: now }).where('created_by', '=', accountId).where('revoked_at', 'is', null).execute();
    sessionsEnded = ended.length;
  }
  if (step >= RESPONSE_ORDER.indexOf('suspend')) {
    await trx.updateTable('accounts').set({ status: 'suspended' }).where('id', '=', accountId).execute();
    await cancelPendingRequestsOf(trx, tenantId, accountId, 'account_suspended', DETECTION_ORIGIN, now);
  }
  const byOne = response === 'lockdown';
  const raisedTo = lockdownLevel || byOne ? await raiseLockdownByDetection(trx, tenantId, lockdownLevel ?? 0, rule.code, now, byOne) : null;
  return { response, rule, sessionsEnded, raisedTo };
}

/**
 * The response to a refusing crossing, in a transaction of its own (the
 * read's has rolled back): the refused read in the audit log, the step-up
 * demand, the end of the sessions, the suspension, the lockdown, the alert
 * that names them, the e-mail to the officers. Returns the error the request
 * is answered with.
 */
export async function contain(deps: Deps, rc: ReadContext, c: Contained): Promise<AppError> {
  const actor = rc.actor!;
  const { rule } = strongest(c.rules);
  let raised = false;
  let answer: DetectionResponse = strongest(c.rules).response;
  const codes = c.rules.map((r) => r.code).join(',');
  await inTenant(
    deps.db.db,
    rc.tenantId,
    async (trx) => {
      const refused = await appendAudit(trx, rc.tenantId, { ...c.event, outcome: 'denied', details: { ...(c.event.details ?? {}), reason: 'detection', rules: codes } }, rc.now);
      // Reads already on their way when the first one crossed cross too: they are refused, but contained once.
      await lockActor(trx, rc.tenantId, actor.accountId);
      const since = Math.max(rc.now.getTime() - rule.windowSeconds * 1000, actor.auth?.at.getTime() ?? 0);
      const already = await trx
        .selectFrom('detection_alerts')
        .select('id')
        .where('subject_account_id', '=', actor.accountId)
        .where('rule_code', '=', rule.code)
        .where('created_at', '>', new Date(since))
        .executeTakeFirst();
      if (already) return;
      const { response, sessionsEnded, raisedTo } = await applyResponse(trx, rc.tenantId, actor.accountId, c.rules, rc.now);
      raised = raisedTo !== null;
      answer = response;
      await appendAudit(
        trx,
        rc.tenantId,
        {
          action: 'detection.response',
          outcome: 'success',
          actorAccountId: null,
          actorRoles: ['system:detection'],
          requestId: rc.origin.requestId,
          targetType: 'account',
          targetIds: [actor.accountId, refused.id],
          details: { rules: codes, response, sessionsEnded, ...(raisedTo ? { lockdownLevel: raisedTo } : {}) },
        },
        rc.now,
      );
      await createAlert(
        trx,
        rc.tenantId,
        {
          ruleCode: rule.code,
          signal: rule.signal,
          severity: raisedTo ? 'critical' : SEVERITY[response],
          subjectAccountId: actor.accountId,
          response,
          lockdownLevel: raisedTo,
          eventIds: [refused.id],
          details: { rules: codes, total: c.totals[rule.code] ?? 0, threshold: rule.threshold, windowSeconds: rule.windowSeconds, sessionsEnded },
        },
        rc.origin,
        rc.now,
        rc.baseUrl,
      );
    },
    null,
  );
  if (raised) deps.tenants.invalidate();
  if (answer === 'stepup' && !c.rules.some((r) => r.lockdownLevel)) return new StepUpRequired(false, undefined);
  return new AppError('forbidden');
}
