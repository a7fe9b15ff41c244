import { decide, refusal } from '../access/decide.ts';
import type { Action } from '../access/actions.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import type { AuditAction, AuditOrigin } from '../audit/events.ts';
import { untrustedId } from '../audit/untrusted.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError, ValidationError } from '../errors.ts';
import { enqueueMail } from '../mail/outbox.ts';
import { originFields } from '../tenants/service.ts';
import { messages } from '../web/i18n/index.ts';
import { enrolledFactors, hasSecondFactor } from './factors/store.ts';
import { requirePhishingResistantAuth } from './stepup.ts';

/**
 * Removing the second factors of someone who lost them all. E-mail recovery
 * never does it (a stolen mailbox would then be a stolen account): one
 * administrator asks, after checking who the person is by other means; a
 * *different* current administrator approves, each with a fresh passkey. On
 * approval the person's app, passkeys and recovery codes are gone and every
 * session ends; they sign in with their password and enrol anew. The person
 * and every privileged holder of the tenant are told at each step.
 * factor_reset_requests_guard refuses the same things again in the database.
 */
const REQUEST_TTL_MS = 24 * 3600_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface FactorResetInput {
  email: string;
  reason: string;
}

export interface FactorResetView {
  id: string;
  email: string;
  accountId: string;
  reason: string;
  requestedBy: string;
  requestedById: string;
  requestedAt: Date;
  expiresAt: Date;
  status: 'pending' | 'approved' | 'refused' | 'cancelled' | 'expired';
  decidedBy: string | null;
  decidedAt: Date | null;
}

async function refuse(deps: Deps, ctx: Ctx, action: AuditAction, targetIds: string[], reason: string, error: AppError): Promise<never> {
  await appendAuditAlone(deps.db.db, ctx.tenant.id, { action, outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'factor_reset_request', targetIds: targetIds.map(untrustedId), details: { reason } }, ctx.now);
  throw error;
}

async function check(deps: Deps, ctx: Ctx, action: Action, audited: AuditAction, targetIds: string[]): Promise<void> {
  const d = decide(ctx.actor, action, { type: 'tenant' }, ctx.now);
  if (!d.allowed) await refuse(deps, ctx, audited, targetIds, d.reason ?? 'denied', refusal(ctx.actor, d));
}

type Notice = 'requested' | 'approved' | 'refused';

/** The person concerned, in their language, and every current administrator and security officer. */
async function notify(trx: Trx, ctx: Ctx, notice: Notice, subject: { email: string; locale: 'fr' | 'en' }) {
  const holders = await trx
    .selectFrom('memberships as m')
    .innerJoin('accounts as a', 'a.id', 'm.account_id')
    .select(['a.email', 'a.locale'])
    .distinct()
    .where('m.role', 'in', ['tenant_admin', 'security_officer'])
    .where('m.revoked_at', 'is', null)
    .where((eb) => eb.or([eb('m.expires_at', 'is', null), eb('m.expires_at', '>', ctx.now)]))
    .where('a.status', '=', 'active')
    .execute();
  const m = messages(subject.locale);
  await enqueueMail(trx, ctx.tenant.id, { to: subject.email, locale: subject.locale, template: 'factor_reset', subject: m.factorResets.personMail.subject[notice], body: m.factorResets.personMail.body[notice](`${ctx.baseUrl}/signin`) }, ctx.now);
  for (const h of holders) {
    if (h.email === subject.email) continue;
    const hm = messages(h.locale);
    await enqueueMail(trx, ctx.tenant.id, { to: h.email, locale: h.locale, template: 'factor_reset', subject: hm.factorResets.holderMail.subject[notice], body: hm.factorResets.holderMail.body[notice](subject.email, `${ctx.baseUrl}/admin/factor-resets`) }, ctx.now);
  }
}

export async function requestFactorReset(deps: Deps, ctx: Ctx, input: FactorResetInput): Promise<string> {
  await check(deps, ctx, 'identity.factorReset.request', 'identity.factorReset.request', []);
  const actor = ctx.actor!;
  requirePhishingResistantAuth(ctx, undefined, { returnTo: '/admin/factor-resets/new' });
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const person = await trx.selectFrom('accounts').select(['id', 'email', 'locale', 'status']).where('email', '=', input.email).executeTakeFirst();
    if (!person || person.status !== 'active') throw new ValidationError({ email: 'factorResetUnknownAccount' });
    if (person.id === actor.accountId) throw new ValidationError({ email: 'factorResetSelf' });
    if (!hasSecondFactor(await enrolledFactors(trx, person.id))) throw new ValidationError({ email: 'factorResetNothing' });
    const pending = await trx.selectFrom('factor_reset_requests').select('id').where('account_id', '=', person.id).where('status', '=', 'pending').where('expires_at', '>', ctx.now).executeTakeFirst();
    if (pending) throw new ValidationError({ email: 'factorResetPending' });
    const r = await trx
      .insertInto('factor_reset_requests')
      .values({ tenant_id: ctx.tenant.id, account_id: person.id, reason: input.reason, requested_by: actor.accountId, requested_at: ctx.now, expires_at: new Date(ctx.now.getTime() + REQUEST_TTL_MS) })
      .returning('id')
      .executeTakeFirstOrThrow();
    await appendAudit(trx, ctx.tenant.id, { action: 'identity.factorReset.request', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'factor_reset_request', targetIds: [r.id, person.id], details: {} }, ctx.now);
    await notify(trx, ctx, 'requested', person);
    return r.id;
  });
}

async function load(trx: Trx, now: Date, id?: string): Promise<FactorResetView[]> {
  let q = trx
    .selectFrom('factor_reset_requests as r')
    .innerJoin('accounts as p', 'p.id', 'r.account_id')
    .innerJoin('accounts as q', 'q.id', 'r.requested_by')
    .leftJoin('accounts as d', 'd.id', 'r.decided_by')
    .select(['r.id', 'p.email', 'r.account_id', 'r.reason', 'q.email as requested_by', 'r.requested_by as requested_by_id', 'r.requested_at', 'r.expires_at', 'r.status', 'd.email as decided_by', 'r.decided_at'])
    .orderBy('r.requested_at', 'desc')
    .limit(100);
  if (id) q = q.where('r.id', '=', id);
  return (await q.execute()).map((r) => ({
    id: r.id,
    email: r.email,
    accountId: r.account_id,
    reason: r.reason,
    requestedBy: r.requested_by,
    requestedById: r.requested_by_id,
    requestedAt: r.requested_at,
    expiresAt: r.expires_at,
    status: r.status === 'pending' && r.expires_at <= now ? 'expired' : r.status,
    decidedBy: r.decided_by,
    decidedAt: r.decided_at,
  }));
}

export async function listFactorResets(deps: Deps, ctx: Ctx): Promise<FactorResetView[]> {
  await check(deps, ctx, 'identity.factorReset.list', 'identity.factorReset.list', []);
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const rows = await load(trx, ctx.now);
    if (rows.length) {
      await appendAudit(trx, ctx.tenant.id, { action: 'identity.factorReset.list', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'factor_reset_request', targetIds: rows.map((r) => r.id), fields: ['email', 'reason', 'requested_by'], purpose: 'admin.factorResets.list' }, ctx.now);
    }
    return rows;
  });
}

export async function getFactorReset(deps: Deps, ctx: Ctx, id: string): Promise<FactorResetView> {
  await check(deps, ctx, 'identity.factorReset.list', 'identity.factorReset.list', [id]);
  if (!UUID.test(id)) throw new AppError('notFound');
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const [r] = await load(trx, ctx.now, id);
    if (!r) throw new AppError('notFound');
    await appendAudit(trx, ctx.tenant.id, { action: 'identity.factorReset.list', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'factor_reset_request', targetIds: [r.id, r.accountId], fields: ['email', 'reason', 'requested_by'], purpose: 'admin.factorResets.review' }, ctx.now);
    return r;
  });
}

/**
 * Approves or refuses a pending request, once. The approver is a current
 * administrator who is neither the one who asked nor the person concerned;
 * approving needs a passkey used within the last five minutes.
 */
export async function decideFactorReset(deps: Deps, ctx: Ctx, id: string, decision: 'approve' | 'refuse'): Promise<void> {
  const action: AuditAction = decision === 'approve' ? 'identity.factorReset.approve' : 'identity.factorReset.refuse';
  await check(deps, ctx, 'identity.factorReset.approve', action, [id]);
  const actor = ctx.actor!;
  if (!UUID.test(id)) await refuse(deps, ctx, action, [id], 'not_found', new AppError('notFound'));
  const exists = await inTenant(deps.db.db, ctx.tenant.id, (trx) => trx.selectFrom('factor_reset_requests').select('id').where('id', '=', id).executeTakeFirst());
  if (!exists) await refuse(deps, ctx, action, [id], 'not_found', new AppError('notFound'));
  if (decision === 'approve') requirePhishingResistantAuth(ctx, undefined, { returnTo: `/admin/factor-resets/${id}` });
  const outcome = await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const r = await trx.selectFrom('factor_reset_requests').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
    if (!r) return 'not_found' as const;
    if (r.status !== 'pending' || r.expires_at <= ctx.now) return 'decided' as const;
    if (r.requested_by === actor.accountId || r.account_id === actor.accountId) return 'self' as const;
    // The one who asked vouched for the person's identity: that holds only while they are still an administrator.
    if (decision === 'approve' && !(await activeAdmin(trx, r.requested_by, ctx.now))) return 'requester_gone' as const;
    const person = await trx.selectFrom('accounts').select(['id', 'email', 'locale']).where('id', '=', r.account_id).executeTakeFirstOrThrow();
    let removed = { totp: 0, passkeys: 0, recoveryCodes: 0, sessions: 0 };
    if (decision === 'approve') {
      removed = {
        totp: (await trx.updateTable('totp_factors').set({ disabled_at: ctx.now }).where('account_id', '=', person.id).where('disabled_at', 'is', null).returning('id').execute()).length,
        passkeys: (await trx.updateTable('webauthn_credentials').set({ revoked_at: ctx.now }).where('account_id', '=', person.id).where('revoked_at', 'is', null).returning('id').execute()).length,
        recoveryCodes: (await trx.updateTable('recovery_codes').set({ revoked_at: ctx.now }).where('account_id', '=', person.id).where('revoked_at', 'is', null).where('used_at', 'is', null).returning('id').execute()).length,
        sessions: (await trx.updateTable('sessions').set({ revoked_at: ctx.now }).where('account_id', '=', person.id).where('revoked_at', 'is', null).returning('id').execute()).length,
      };
    }
    await trx.updateTable('factor_reset_requests').set({ status: decision === 'approve' ? 'approved' : 'refused', decided_by: actor.accountId, decided_at: ctx.now }).where('id', '=', id).execute();
    await appendAudit(trx, ctx.tenant.id, { action, outcome: 'success', ...originFields(originOf(ctx)), targetType: 'factor_reset_request', targetIds: [id, person.id], details: removed }, ctx.now);
    await notify(trx, ctx, decision === 'approve' ? 'approved' : 'refused', person);
    return 'ok' as const;
  });
  if (outcome === 'not_found') await refuse(deps, ctx, action, [id], 'not_found', new AppError('notFound'));
  if (outcome === 'decided') await refuse(deps, ctx, action, [id], 'already_decided_or_expired', new ValidationError({ _: 'factorResetDecided' }));
  if (outcome === 'self') await refuse(deps, ctx, action, [id], 'self_approval', new AppError('forbidden'));
  if (outcome === 'requester_gone') await refuse(deps, ctx, action, [id], 'requester_not_admin', new ValidationError({ _: 'factorResetRequesterGone' }));
}

/** A current administrator role, on an active account (the database's guard checks the same again). */
async function activeAdmin(trx: Trx, accountId: string, now: Date): Promise<boolean> {
  const m = await trx
    .selectFrom('memberships as m')
    .innerJoin('accounts as a', 'a.id', 'm.account_id')
    .select('m.id')
    .where('m.account_id', '=', accountId)
    .where('m.role', '=', 'tenant_admin')
    .where('a.status', '=', 'active')
    .where('m.revoked_at', 'is', null)
    .where((eb) => eb.or([eb('m.expires_at', 'is', null), eb('m.expires_at', '>', now)]))
    .executeTakeFirst();
  return !!m;
}

/**
 * The pending reset requests an account asked for or is the subject of,
 * cancelled when detection suspends it or retention closes it (migration
 * 0050): a request an intruder made with a taken-over administrator account
 * must not wait for a busy colleague to approve it. By nobody in particular
 * (decided_by stays empty), in the caller's transaction, one audit event each;
 * called with the privilege requests' own (cancelPendingRequestsOf, grants.ts).
 */
export async function cancelPendingFactorResetsOf(trx: Trx, tenantId: string, accountId: string, why: 'account_suspended' | 'account_closed', origin: AuditOrigin, now: Date): Promise<number> {
  const cancelled = await trx
    .updateTable('factor_reset_requests')
    .set({ status: 'cancelled', decided_at: now })
    .where('status', '=', 'pending')
    .where((eb) => eb.or([eb('account_id', '=', accountId), eb('requested_by', '=', accountId)]))
    .returning(['id', 'account_id'])
    .execute();
  for (const r of cancelled) {
    await appendAudit(trx, tenantId, { action: 'identity.factorReset.cancel', outcome: 'success', ...originFields(origin), targetType: 'factor_reset_request', targetIds: [r.id, r.account_id], details: { reason: why } }, now);
  }
  return cancelled.length;
}
