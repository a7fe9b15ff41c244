import { sql } from 'kysely';
import { decide } from '../access/decide.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import { untrustedId } from '../audit/untrusted.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError, ValidationError } from '../errors.ts';
import { originFields } from '../tenants/service.ts';
import { isRealDate } from '../web/forms.ts';
import { createAlert } from './alerts.ts';
import type { ReadContext } from './response.ts';
import { childReferences, liveChildFamily } from '../records/lookups.ts';

/**
 * Protected files: a programme operator or administrator marks a child's
 * file as protected (a public figure's child, a staff member's child).
 * Whoever opens it other than its own family must state a reason; the
 * opening raises an alert at once, in the read's transaction, and is listed
 * in the security officers' daily review with the reason given. The records
 * gateway asks protectedAmong() before it lets such a file's data leave.
 *
 * A facility's candidate list is not an opening: it shows a protected
 * child as any other, by a pseudonymous reference and an age group.
 */

export const PROTECTED_RULE = 'protected_file.open';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A reason a person typed: trimmed, 1 to 500 printable characters; null when there is none worth the name. */
export function accessReason(raw: unknown): string | null {
  const r = typeof raw === 'string' ? raw.trim() : '';
  if (!r || r.length > 500 || /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(r)) return null;
  return r;
}

/** Which of these files are protected now. */
export async function protectedAmong(trx: Trx, childIds: readonly string[]): Promise<string[]> {
  if (!childIds.length) return [];
  const rows = await trx.selectFrom('protected_files').select('child_id').where('child_id', 'in', [...childIds]).where('unmarked_at', 'is', null).execute();
  return rows.map((r) => r.child_id);
}

/**
 * In the read's transaction, once its audit event is written: the alert and
 * the review entries. The reason is kept on the openings alone, not copied
 * into the alert: the purge of a file erases it there (src/records/purge.ts),
 * and the alert page reads it from them.
 */
export async function recordProtectedOpenings(trx: Trx, rc: ReadContext, action: string, childIds: readonly string[], reason: string, eventId: string): Promise<void> {
  if (!childIds.length || !rc.actor) return;
  const alertId = await createAlert(
    trx,
    rc.tenantId,
    { ruleCode: PROTECTED_RULE, signal: 'protected_file', severity: 'high', subjectAccountId: rc.actor.accountId, response: 'alert', lockdownLevel: null, eventIds: [eventId], details: { files: childIds.length } },
    rc.origin,
    rc.now,
    rc.baseUrl,
  );
  await trx
    .insertInto('protected_file_openings')
    .values(childIds.map((c) => ({ tenant_id: rc.tenantId, child_id: c, account_id: rc.actor!.accountId, reason, action, audit_event_id: eventId, alert_id: alertId, opened_at: rc.now })))
    .execute();
}

async function requireMarker(deps: Deps, ctx: Ctx, childId: string, audited: 'records.childFile.protect' | 'records.childFile.unprotect'): Promise<string> {
  const d = decide(ctx.actor, 'records.childFile.protect', { type: 'tenant' }, ctx.now);
  if (!d.allowed || !ctx.actor) {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action: audited, outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'child', targetIds: [untrustedId(childId)], details: { reason: d.reason ?? 'denied' } }, ctx.now);
    throw new AppError(ctx.actor ? 'forbidden' : 'signInRequired');
  }
  if (!UUID.test(childId)) throw new AppError('notFound');
  return ctx.actor.accountId;
}

/** Marks a file as protected, with why (kept for the officers, never shown to the family). */
export async function markProtected(deps: Deps, ctx: Ctx, childId: string, rawReason: unknown): Promise<void> {
  const by = await requireMarker(deps, ctx, childId, 'records.childFile.protect');
  const reason = accessReason(rawReason);
  if (!reason) throw new ValidationError({ reason: 'reasonRequired' });
  await inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const child = await liveChildFamily(trx, childId);
      if (!child) throw new AppError('notFound');
      if ((await protectedAmong(trx, [childId])).length) return;
      await trx.insertInto('protected_files').values({ tenant_id: ctx.tenant.id, child_id: childId, reason, marked_by: by, marked_at: ctx.now }).execute();
      await appendAudit(trx, ctx.tenant.id, { action: 'records.childFile.protect', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'child', targetIds: [childId], familyIds: [child.family_id] }, ctx.now);
    },
    by,
  );
}

export async function unmarkProtected(deps: Deps, ctx: Ctx, childId: string): Promise<void> {
  const by = await requireMarker(deps, ctx, childId, 'records.childFile.unprotect');
  await inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const r = await trx.updateTable('protected_files').set({ unmarked_by: by, unmarked_at: ctx.now }).where('child_id', '=', childId).where('unmarked_at', 'is', null).returning('id').execute();
      if (!r.length) throw new AppError('notFound');
      await appendAudit(trx, ctx.tenant.id, { action: 'records.childFile.unprotect', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'child', targetIds: [childId] }, ctx.now);
    },
    by,
  );
}

export interface ProtectedOpening {
  openedAt: Date;
  accountEmail: string;
  reference: string;
  /** Null once the file is purged: the reason went with it. */
  reason: string | null;
  action: string;
  alertId: string | null;
}

/**
 * The day's openings of protected files (the tenant's day, Eastern time),
 * for the security officers' daily review: who, which file (by reference),
 * when, and the reason they gave — or, once the file is purged, that the
 * reason was erased with it.
 */
export async function protectedReview(deps: Deps, ctx: Ctx, day: string): Promise<ProtectedOpening[]> {
  const d = decide(ctx.actor, 'detection.protected.review', { type: 'tenant' }, ctx.now);
  if (!d.allowed || !ctx.actor) {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action: 'detection.protected.review', outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'tenant', targetIds: [ctx.tenant.id], details: { reason: d.reason ?? 'denied' } }, ctx.now);
    throw new AppError(ctx.actor ? 'forbidden' : 'signInRequired');
  }
  if (!/^\d{4}-\d{2}-\d{2}$/.test(day) || !isRealDate(day)) throw new ValidationError({ date: 'dateInvalid' });
  const by = ctx.actor.accountId;
  return inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const rows = await trx
        .selectFrom('protected_file_openings as o')
        .innerJoin('accounts as a', 'a.id', 'o.account_id')
        .select(['o.opened_at', 'a.email', 'o.child_id', 'o.reason', 'o.action', 'o.alert_id'])
        .where('o.opened_at', '>=', sql<Date>`(${day}::date::timestamp AT TIME ZONE 'America/Toronto')`)
        .where('o.opened_at', '<', sql<Date>`((${day}::date + 1)::timestamp AT TIME ZONE 'America/Toronto')`)
        .orderBy('o.opened_at')
        .execute();
      await appendAudit(trx, ctx.tenant.id, { action: 'detection.protected.review', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'tenant', targetIds: [ctx.tenant.id], details: { day, count: rows.length } }, ctx.now);
      const refs = await childReferences(trx, [...new Set(rows.map((r) => r.child_id))]);
      return rows.map((r) => ({ openedAt: r.opened_at, accountEmail: r.email, reference: refs.get(r.child_id) ?? '', reason: r.reason, action: r.action, alertId: r.alert_id }));
    },
    by,
  );
}
