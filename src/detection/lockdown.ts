import { sql } from 'kysely';
import type { Actor } from '../access/actor.ts';
import { decide } from '../access/decide.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import type { AuditAction } from '../audit/events.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import { WRITE_HELD_UNTIL_NEXT } from '../db/held-begin.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError, ValidationError } from '../errors.ts';
import { StepUpRequired, requireRecentAuth } from '../identity/stepup.ts';
import { originFields } from '../tenants/service.ts';

/**
 * A tenant's lockdown level, what each level closes, and how it changes.
 *
 *   0  normal
 *   1  every member of staff re-authenticates (with their second factor)
 *      after the level was raised before opening personal data again
 *   2  staff read only: no change to any file, no export
 *   3  personal data closed to everyone; the public directory and the
 *      information pages stay up
 *   4  maintenance page for everything but signing in and the security
 *      console (where officers lower it again)
 *
 * Raising takes one security officer and applies at once; lowering is a
 * request that a different security officer approves. Levels belong to one
 * tenant: nothing here reads or writes another tenant's row (RLS lets a
 * tenant update only its own).
 *
 * The records gateway reads the level in its own transaction (guardRecords),
 * so a level raised on one instance closes personal data on every instance
 * at its next request; the pages (level 4) follow the tenant cache, within
 * two seconds.
 */

export const MAX_LEVEL = 4;

/** Gateway actions that change personal data (refused to staff at level 2). */
const WRITES: ReadonlySet<AuditAction> = new Set<AuditAction>([
  'waitlist.childFile.create',
  'waitlist.childFile.update',
  'waitlist.childFile.delete',
  'waitlist.childFile.restore.request',
  'waitlist.childFile.restore.approve',
  'waitlist.application.create',
  'waitlist.application.withdraw',
  'waitlist.vacancy.declare',
  'waitlist.offer.confirmStart',
  'family.profile.update',
]);

function isStaff(actor: Actor | null, now: Date): actor is Actor {
  return !!actor && actor.memberships.some((m) => !m.expiresAt || m.expiresAt > now);
}

export interface Refusal {
  reason: 'lockdown_closed' | 'lockdown_read_only' | 'lockdown_stepup' | 'detection_stepup' | 'account_suspended';
  error: AppError;
}

const REFUSALS: Record<Refusal['reason'], () => AppError> = {
  lockdown_closed: () => new AppError('closed'),
  account_suspended: () => new AppError('forbidden'),
  lockdown_read_only: () => new AppError('readOnly'),
  lockdown_stepup: () => new StepUpRequired(false, undefined),
  detection_stepup: () => new StepUpRequired(false, undefined),
};

/**
 * What the tenant's lockdown and the actor's standing allow, judged fresh in
 * the gateway's transaction before any personal data is touched, by the
 * database (records_guard, migration 0035): the statement travels with the
 * transaction's next one, in the same message, and when it refuses it
 * raises, so PostgreSQL runs nothing after it — the refusal is the error of
 * that next statement (of this one where statements are not held back, on
 * the embedded database); refusalOf() reads it.
 */
export async function guardRecords(trx: Trx, ctx: Ctx, action: AuditAction): Promise<void> {
  const actorId = ctx.actor?.accountId ?? null;
  // Signed in without a time (never in practice) counts as long ago: any lockdown or hold since asks again.
  const authAt = ctx.actor?.auth?.at ?? new Date(0);
  // Held as a write is (its answer unread, it always reaches the database: with the next statement or with
  // COMMIT), and so prepared on the connection like one, rather than planned each time as the settings are.
  await sql`SELECT records_guard(${ctx.tenant.id}::uuid, ${actorId}::uuid, ${isStaff(ctx.actor, ctx.now)}::boolean, ${WRITES.has(action)}::boolean, ${authAt}::timestamptz) ${sql.raw(WRITE_HELD_UNTIL_NEXT)}`.execute(trx);
}

/** The guard's refusal in an error, with the answer it gets; null for any other error. */
export function refusalOf(err: unknown): Refusal | null {
  if ((err as { code?: unknown } | null)?.code !== 'GR001') return null;
  const reason = (err as Error).message as Refusal['reason'];
  const make = REFUSALS[reason];
  return make ? { reason, error: make() } : null;
}

async function currentLevel(trx: Trx, tenantId: string): Promise<number> {
  const t = await trx.selectFrom('tenants').select('lockdown_level').where('id', '=', tenantId).forUpdate().executeTakeFirstOrThrow();
  return Number(t.lockdown_level);
}

async function setLevel(trx: Trx, tenantId: string, level: number, now: Date): Promise<void> {
  await trx.updateTable('tenants').set({ lockdown_level: level, lockdown_changed_at: now }).where('id', '=', tenantId).execute();
  // A pending request to lower from another level no longer means what its approver would read.
  await trx.updateTable('lockdown_changes').set({ status: 'superseded', decided_at: now }).where('status', '=', 'pending').execute();
}

/**
 * A rule's response raises the level (never lowers it): to `level`, and by
 * one above the current level when `byOne` (the lockdown grade). Returns the
 * level set, or null if it was already as high (or at the top).
 */
export async function raiseLockdownByDetection(trx: Trx, tenantId: string, atLeast: number, ruleCode: string, now: Date, byOne = false): Promise<number | null> {
  const from = await currentLevel(trx, tenantId);
  const level = Math.min(MAX_LEVEL, Math.max(atLeast, byOne ? from + 1 : 0));
  if (from >= level) return null;
  await setLevel(trx, tenantId, level, now);
  await trx.insertInto('lockdown_changes').values({ tenant_id: tenantId, from_level: from, to_level: level, reason: `detection:${ruleCode}`, requested_by: null, requested_at: now, status: 'applied' }).execute();
  await appendAudit(trx, tenantId, { action: 'detection.lockdown.raise', outcome: 'success', actorRoles: ['system:detection'], targetType: 'tenant', targetIds: [tenantId], details: { from, to: level, rule: ruleCode } }, now);
  return level;
}

async function requireOfficer(deps: Deps, ctx: Ctx, action: 'detection.lockdown.raise' | 'detection.lockdown.lower', audited: AuditAction): Promise<Actor> {
  const d = decide(ctx.actor, action, { type: 'tenant' }, ctx.now);
  if (!d.allowed || !ctx.actor) {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action: audited, outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'tenant', targetIds: [ctx.tenant.id], details: { reason: d.reason ?? 'denied' } }, ctx.now);
    throw new AppError(ctx.actor ? 'forbidden' : 'signInRequired');
  }
  // Changing a whole tenant's access is a sensitive action: a fresh authentication with the second factor.
  requireRecentAuth(ctx);
  return ctx.actor;
}

function validReason(reason: unknown): string {
  const r = typeof reason === 'string' ? reason.trim() : '';
  if (!r || r.length > 500 || /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(r)) throw new ValidationError({ reason: 'reasonRequired' });
  return r;
}

function validLevel(level: unknown): number {
  const n = typeof level === 'number' ? level : Number(level);
  if (!Number.isInteger(n) || n < 0 || n > MAX_LEVEL) throw new ValidationError({ level: 'levelInvalid' });
  return n;
}

/**
 * One security officer raises the tenant's level; it applies at once.
 * `check` validates and answers from and to without changing anything (the
 * confirmation page that names the consequence).
 */
export async function raiseLockdown(deps: Deps, ctx: Ctx, rawLevel: unknown, rawReason: unknown, opts: { check?: boolean } = {}): Promise<{ from: number; to: number; reason: string }> {
  const actor = await requireOfficer(deps, ctx, 'detection.lockdown.raise', 'detection.lockdown.raise');
  const level = validLevel(rawLevel);
  const reason = validReason(rawReason);
  return inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const from = await currentLevel(trx, ctx.tenant.id);
      if (level <= from) throw new ValidationError({ level: 'levelNotHigher' });
      if (opts.check) return { from, to: level, reason };
      await setLevel(trx, ctx.tenant.id, level, ctx.now);
      const { id } = await trx
        .insertInto('lockdown_changes')
        .values({ tenant_id: ctx.tenant.id, from_level: from, to_level: level, reason, requested_by: actor.accountId, requested_at: ctx.now, status: 'applied' })
        .returning('id')
        .executeTakeFirstOrThrow();
      await appendAudit(trx, ctx.tenant.id, { action: 'detection.lockdown.raise', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'tenant', targetIds: [ctx.tenant.id, id], details: { from, to: level } }, ctx.now);
      deps.tenants.invalidate();
      return { from, to: level, reason };
    },
    actor.accountId,
  );
}

/** An officer asks to lower the level; nothing changes until a different officer approves. */
export async function requestLockdownLower(deps: Deps, ctx: Ctx, rawLevel: unknown, rawReason: unknown): Promise<string> {
  const actor = await requireOfficer(deps, ctx, 'detection.lockdown.lower', 'detection.lockdown.lower.request');
  const level = validLevel(rawLevel);
  const reason = validReason(rawReason);
  return inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const from = await currentLevel(trx, ctx.tenant.id);
      if (level >= from) throw new ValidationError({ level: 'levelNotLower' });
      await trx.updateTable('lockdown_changes').set({ status: 'superseded', decided_at: ctx.now }).where('status', '=', 'pending').execute();
      const { id } = await trx
        .insertInto('lockdown_changes')
        .values({ tenant_id: ctx.tenant.id, from_level: from, to_level: level, reason, requested_by: actor.accountId, requested_at: ctx.now, status: 'pending' })
        .returning('id')
        .executeTakeFirstOrThrow();
      await appendAudit(trx, ctx.tenant.id, { action: 'detection.lockdown.lower.request', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'tenant', targetIds: [ctx.tenant.id, id], details: { from, to: level } }, ctx.now);
      return id;
    },
    actor.accountId,
  );
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * A second security officer — not the one who asked — approves or refuses
 * a request to lower the level. The database checks the two people differ
 * (lockdown_changes), and a request made at another level than the current
 * one has been superseded.
 */
export async function decideLockdownLower(deps: Deps, ctx: Ctx, changeId: string, decision: 'approve' | 'refuse'): Promise<void> {
  const audited = decision === 'approve' ? 'detection.lockdown.lower.approve' : 'detection.lockdown.lower.refuse';
  const actor = await requireOfficer(deps, ctx, 'detection.lockdown.lower', audited);
  if (!UUID.test(changeId)) throw new AppError('notFound');
  const refusal = await inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const from = await currentLevel(trx, ctx.tenant.id);
      const c = await trx.selectFrom('lockdown_changes').selectAll().where('id', '=', changeId).forUpdate().executeTakeFirst();
      if (!c || c.status !== 'pending') return 'not_pending';
      if (c.requested_by === actor.accountId) return 'same_person';
      if (c.from_level !== from) return 'superseded';
      await trx.updateTable('lockdown_changes').set({ status: decision === 'approve' ? 'applied' : 'refused', decided_by: actor.accountId, decided_at: ctx.now }).where('id', '=', c.id).execute();
      if (decision === 'approve') await setLevel(trx, ctx.tenant.id, c.to_level, ctx.now);
      await appendAudit(trx, ctx.tenant.id, { action: audited, outcome: 'success', ...originFields(originOf(ctx)), targetType: 'tenant', targetIds: [ctx.tenant.id, c.id], details: { from: c.from_level, to: c.to_level, requestedBy: c.requested_by } }, ctx.now);
      return null;
    },
    actor.accountId,
  );
  if (refusal) {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action: audited, outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'tenant', targetIds: [ctx.tenant.id, changeId], details: { reason: refusal } }, ctx.now);
    throw new AppError(refusal === 'same_person' ? 'forbidden' : 'notFound');
  }
  deps.tenants.invalidate();
}

export interface LockdownChangeView {
  id: string;
  fromLevel: number;
  toLevel: number;
  reason: string;
  requestedBy: string | null;
  requestedByEmail: string | null;
  requestedAt: Date;
  status: 'pending' | 'applied' | 'refused' | 'superseded';
  decidedByEmail: string | null;
  decidedAt: Date | null;
}

/** The current level, since when, and the latest changes (pending first), for the console. */
export async function lockdownState(deps: Deps, ctx: Ctx): Promise<{ level: number; since: Date | null; changes: LockdownChangeView[] }> {
  const d = decide(ctx.actor, 'detection.lockdown.raise', { type: 'tenant' }, ctx.now);
  if (!d.allowed) throw new AppError(ctx.actor ? 'forbidden' : 'signInRequired');
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const t = await trx.selectFrom('tenants').select(['lockdown_level', 'lockdown_changed_at']).where('id', '=', ctx.tenant.id).executeTakeFirstOrThrow();
    const rows = await trx
      .selectFrom('lockdown_changes as c')
      .leftJoin('accounts as r', 'r.id', 'c.requested_by')
      .leftJoin('accounts as d', 'd.id', 'c.decided_by')
      .select(['c.id', 'c.from_level', 'c.to_level', 'c.reason', 'c.requested_by', 'r.email as requested_email', 'c.requested_at', 'c.status', 'd.email as decided_email', 'c.decided_at'])
      .orderBy(sql`c.status = 'pending'`, 'desc')
      .orderBy('c.requested_at', 'desc')
      .limit(20)
      .execute();
    return {
      level: Number(t.lockdown_level),
      since: t.lockdown_changed_at,
      changes: rows.map((r) => ({
        id: r.id,
        fromLevel: r.from_level,
        toLevel: r.to_level,
        reason: r.reason,
        requestedBy: r.requested_by,
        requestedByEmail: r.requested_email,
        requestedAt: r.requested_at,
        status: r.status,
        decidedByEmail: r.decided_email,
        decidedAt: r.decided_at,
      })),
    };
  });
}
