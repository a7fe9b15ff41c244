import { PRIVILEGED_ROLES, type PrivilegedRole } from '../access/actor.ts';
import { decide, refusal } from '../access/decide.ts';
import type { Action } from '../access/actions.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import type { AuditAction, AuditOrigin } from '../audit/events.ts';
import { untrustedId } from '../audit/untrusted.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import type { MembershipRole } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError, ValidationError } from '../errors.ts';
import { enqueueMail } from '../mail/outbox.ts';
import { originFields } from '../tenants/service.ts';
import { messages } from '../web/i18n/index.ts';
import { cancelPendingFactorResetsOf } from './factor-resets.ts';
import { isRecentAuth, RECENT_AUTH_SECONDS, requirePhishingResistantAuth, StepUpRequired } from './stepup.ts';

/**
 * Privileged access by dual control. No single person confers a privileged
 * role, and the person it is for never counts as one of the two: an
 * administrator asks for someone and a *different* current administrator
 * approves; or a staff member asks for themselves, one administrator endorses
 * the request and a different one approves it (migration 0042). The role
 * expires (4 hours by default, 12 at most). Every request, approval, refusal
 * and revocation is an audit event and is e-mailed to every privileged holder
 * of the tenant. The database (memberships_guard, privilege_requests_guard)
 * refuses the same things again, whatever code path tries.
 */
export { PRIVILEGED_ROLES, type PrivilegedRole };
export const DEFAULT_GRANT_MINUTES = 240;
export const MAX_GRANT_MINUTES = 720;
/** A request nobody decided on lapses after a day. */
const REQUEST_TTL_MS = 24 * 3600_000;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface GrantRequestInput {
  email: string;
  role: PrivilegedRole;
  facilityId: string | null;
  reason: string;
  durationMinutes: number;
}

async function refuse(deps: Deps, ctx: Ctx, action: AuditAction, targetIds: string[], reason: string, error: AppError): Promise<never> {
  await appendAuditAlone(deps.db.db, ctx.tenant.id, { action, outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'privilege_request', targetIds: targetIds.map(untrustedId), details: { reason } }, ctx.now);
  throw error;
}

function check(deps: Deps, ctx: Ctx, action: Action, audited: AuditAction, targetIds: string[]): Promise<void> | void {
  const d = decide(ctx.actor, action, { type: 'tenant' }, ctx.now);
  if (!d.allowed) return refuse(deps, ctx, audited, targetIds, d.reason ?? 'denied', refusal(ctx.actor, d));
}

/** Everyone who holds a privileged role now: they hear of every change to privilege. */
async function privilegedHolders(trx: Trx, now: Date) {
  return trx
    .selectFrom('memberships as m')
    .innerJoin('accounts as a', 'a.id', 'm.account_id')
    .select(['a.id', 'a.email', 'a.locale'])
    .distinct()
    .where('m.role', 'in', ['tenant_admin', 'security_officer'])
    .where('m.revoked_at', 'is', null)
    .where((eb) => eb.or([eb('m.expires_at', 'is', null), eb('m.expires_at', '>', now)]))
    .where('a.status', '=', 'active')
    .execute();
}

type Notice = 'requested' | 'endorsed' | 'approved' | 'refused' | 'revoked';

async function notifyHolders(trx: Trx, ctx: Ctx, notice: Notice, who: string, role: MembershipRole, extra: string[] = []) {
  const holders = await privilegedHolders(trx, ctx.now);
  const recipients = new Map(holders.map((h) => [h.email, h.locale]));
  for (const e of extra) if (!recipients.has(e)) recipients.set(e, 'fr');
  for (const [to, locale] of recipients) {
    const m = messages(locale);
    await enqueueMail(
      trx,
      ctx.tenant.id,
      { to, locale, template: 'privilege_notice', subject: m.grants.mailSubject[notice](m.admin.roles[role]), body: m.grants.mailBody[notice](who, m.admin.roles[role], `${ctx.baseUrl}/admin/grants`) },
      ctx.now,
    );
  }
}

export async function requestGrant(deps: Deps, ctx: Ctx, input: GrantRequestInput): Promise<string> {
  const actor = ctx.actor;
  if (!actor) throw new AppError('signInRequired');
  const forSelf = input.email === actor.email;
  await check(deps, ctx, forSelf ? 'identity.grant.requestForSelf' : 'identity.grant.request', 'identity.grant.request', []);
  // Both sides of dual control sign their step with a passkey, within the last five minutes.
  requirePhishingResistantAuth(ctx);
  if (input.durationMinutes < 15 || input.durationMinutes > MAX_GRANT_MINUTES) throw new ValidationError({ durationMinutes: 'grantDuration' });
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const grantee = await trx.selectFrom('accounts').select(['id', 'status', 'email_verified_at']).where('email', '=', input.email).executeTakeFirst();
    if (!grantee || grantee.status !== 'active' || !grantee.email_verified_at) throw new ValidationError({ email: 'grantUnknownAccount' });
    if (input.role === 'facility_director') {
      const f = input.facilityId && UUID.test(input.facilityId) ? await trx.selectFrom('facilities').select('id').where('id', '=', input.facilityId).executeTakeFirst() : undefined;
      if (!f) throw new ValidationError({ facilityId: 'facilityUnknown' });
    }
    const facilityId = input.role === 'facility_director' ? input.facilityId : null;
    const pending = await trx
      .selectFrom('privilege_requests')
      .select('id')
      .where('account_id', '=', grantee.id)
      .where('role', '=', input.role)
      .where('status', '=', 'pending')
      .where('expires_at', '>', ctx.now)
      .executeTakeFirst();
    if (pending) throw new ValidationError({ role: 'grantPending' });
    const r = await trx
      .insertInto('privilege_requests')
      .values({
        tenant_id: ctx.tenant.id,
        account_id: grantee.id,
        role: input.role,
        facility_id: facilityId,
        reason: input.reason,
        duration_minutes: input.durationMinutes,
        requested_by: actor.accountId,
        requested_at: ctx.now,
        expires_at: new Date(ctx.now.getTime() + REQUEST_TTL_MS),
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    await appendAudit(trx, ctx.tenant.id, { action: 'identity.grant.request', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'privilege_request', targetIds: [r.id, grantee.id], details: { role: input.role, minutes: input.durationMinutes, forSelf } }, ctx.now);
    await notifyHolders(trx, ctx, 'requested', input.email, input.role);
    return r.id;
  });
}

export interface GrantRequestView {
  id: string;
  email: string;
  role: PrivilegedRole;
  facilityName: string | null;
  reason: string;
  durationMinutes: number;
  requestedBy: string;
  requestedById: string;
  accountId: string;
  requestedAt: Date;
  expiresAt: Date;
  status: 'pending' | 'approved' | 'refused' | 'cancelled';
  decidedBy: string | null;
  /** A request for oneself: the administrator who endorsed it, the first of the two it needs. */
  endorsedBy: string | null;
  endorsedById: string | null;
  /** Who brought the grantee into the tenant (their invitations): none of them may approve. */
  invitedBy: string[];
}

/**
 * The accounts that invited `accountId` into the tenant. Whoever vouched for
 * who an account is cannot also approve its privilege: otherwise one
 * administrator invites an address they control, asks for the role from it
 * and approves the request. memberships_guard (0027) refuses the same.
 */
async function inviters(trx: Trx, accountIds: string[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  if (!accountIds.length) return out;
  const rows = await trx
    .selectFrom('memberships')
    .select(['account_id', 'granted_by'])
    .distinct()
    .where('account_id', 'in', accountIds)
    .where('source', '=', 'invitation')
    .where('granted_by', 'is not', null)
    .execute();
  for (const r of rows) out.set(r.account_id, [...(out.get(r.account_id) ?? []), r.granted_by!]);
  return out;
}

async function loadRequests(trx: Trx, where: { id?: string }) {
  let q = trx
    .selectFrom('privilege_requests as r')
    .innerJoin('accounts as g', 'g.id', 'r.account_id')
    .innerJoin('accounts as q', 'q.id', 'r.requested_by')
    .leftJoin('accounts as d', 'd.id', 'r.decided_by')
    .leftJoin('accounts as n', 'n.id', 'r.endorsed_by')
    .leftJoin('facilities as f', 'f.id', 'r.facility_id')
    .select([
      'r.id',
      'g.email',
      'r.role',
      'f.name as facility_name',
      'r.reason',
      'r.duration_minutes',
      'q.email as requested_by',
      'r.requested_by as requested_by_id',
      'r.account_id',
      'r.requested_at',
      'r.expires_at',
      'r.status',
      'd.email as decided_by',
      'n.email as endorsed_by',
      'r.endorsed_by as endorsed_by_id',
    ])
    .orderBy('r.requested_at', 'desc')
    .limit(100);
  if (where.id) q = q.where('r.id', '=', where.id);
  const rows = await q.execute();
  const invited = await inviters(trx, [...new Set(rows.map((r) => r.account_id))]);
  return rows.map(
    (r): GrantRequestView => ({
      id: r.id,
      email: r.email,
      role: r.role,
      facilityName: r.facility_name,
      reason: r.reason,
      durationMinutes: r.duration_minutes,
      requestedBy: r.requested_by,
      requestedById: r.requested_by_id,
      accountId: r.account_id,
      requestedAt: r.requested_at,
      expiresAt: r.expires_at,
      status: r.status,
      decidedBy: r.decided_by,
      endorsedBy: r.endorsed_by,
      endorsedById: r.endorsed_by_id,
      invitedBy: invited.get(r.account_id) ?? [],
    }),
  );
}

export async function listGrantRequests(deps: Deps, ctx: Ctx): Promise<GrantRequestView[]> {
  await check(deps, ctx, 'identity.grant.list', 'identity.grant.list', []);
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const rows = await loadRequests(trx, {});
    if (rows.length) {
      await appendAudit(trx, ctx.tenant.id, { action: 'identity.grant.list', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'privilege_request', targetIds: rows.map((r) => r.id), fields: ['email', 'role', 'reason', 'requested_by'], purpose: 'admin.grants.list' }, ctx.now);
    }
    return rows;
  });
}

export async function getGrantRequest(deps: Deps, ctx: Ctx, id: string): Promise<GrantRequestView> {
  await check(deps, ctx, 'identity.grant.list', 'identity.grant.list', [id]);
  if (!UUID.test(id)) throw new AppError('notFound');
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const [r] = await loadRequests(trx, { id });
    if (!r) throw new AppError('notFound');
    return r;
  });
}

export type Decision = 'approve' | 'refuse';

/** What a decision did: a request for oneself is endorsed by its first administrator and granted by the second. */
export type DecisionOutcome = 'endorsed' | 'approved' | 'refused';

/**
 * An account that stops being trusted (suspended by detection, closed by
 * retention) takes its pending requests with it, as grantee or as asker: the
 * approval would refuse them anyway (the grantee inactive, the asker no longer
 * an administrator), but left pending they would still be offered to the
 * administrators as something to approve. Cancelled by nobody in particular
 * (decided_by stays empty) in the caller's transaction, one audit event each:
 * privilege requests here, second-factor resets in ./factor-resets.ts.
 */
export async function cancelPendingRequestsOf(trx: Trx, tenantId: string, accountId: string, why: 'account_suspended' | 'account_closed', origin: AuditOrigin, now: Date): Promise<number> {
  return (await cancelPrivilegeRequestsOf(trx, tenantId, accountId, why, origin, now)) + (await cancelPendingFactorResetsOf(trx, tenantId, accountId, why, origin, now));
}

async function cancelPrivilegeRequestsOf(trx: Trx, tenantId: string, accountId: string, why: 'account_suspended' | 'account_closed', origin: AuditOrigin, now: Date): Promise<number> {
  const cancelled = await trx
    .updateTable('privilege_requests')
    .set({ status: 'cancelled', decided_at: now })
    .where('status', '=', 'pending')
    .where((eb) => eb.or([eb('account_id', '=', accountId), eb('requested_by', '=', accountId)]))
    .returning(['id', 'account_id', 'role'])
    .execute();
  for (const r of cancelled) {
    await appendAudit(trx, tenantId, { action: 'identity.grant.cancel', outcome: 'success', ...originFields(origin), targetType: 'privilege_request', targetIds: [r.id, r.account_id], details: { role: r.role, reason: why } }, now);
  }
  return cancelled.length;
}

/** A current administrator role of the account, as the approval's transaction sees it. */
async function holdsAdmin(trx: Trx, accountId: string, now: Date): Promise<boolean> {
  const m = await trx
    .selectFrom('memberships')
    .select('id')
    .where('account_id', '=', accountId)
    .where('role', '=', 'tenant_admin')
    .where('revoked_at', 'is', null)
    .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]))
    .executeTakeFirst();
  return !!m;
}

/**
 * Approves or refuses a pending request. The approver is a current
 * administrator who is neither the requester, nor the grantee, nor someone
 * who invited the grantee. The grantee never counts as one of the two
 * people: a request for oneself is first endorsed by an administrator (the
 * approval of the first one to approve), then approved by a different one;
 * a request made for someone else is approved only while its requester still
 * holds an administrator role. A request is decided once (a replayed approval
 * finds it decided and changes nothing).
 */
export async function decideGrant(deps: Deps, ctx: Ctx, id: string, decision: Decision): Promise<DecisionOutcome> {
  const action: AuditAction = decision === 'approve' ? 'identity.grant.approve' : 'identity.grant.refuse';
  await check(deps, ctx, 'identity.grant.approve', action, [id]);
  const actor = ctx.actor!;
  if (!UUID.test(id)) await refuse(deps, ctx, action, [id], 'not_found', new AppError('notFound'));
  // An unknown request is "not found" before any ceremony; a real one is approved only with a fresh passkey.
  const exists = await inTenant(deps.db.db, ctx.tenant.id, (trx) => trx.selectFrom('privilege_requests').select('id').where('id', '=', id).executeTakeFirst());
  if (!exists) await refuse(deps, ctx, action, [id], 'not_found', new AppError('notFound'));
  if (decision === 'approve') requirePhishingResistantAuth(ctx);
  const outcome = await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const r = await trx.selectFrom('privilege_requests').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
    if (!r) return 'not_found' as const;
    if (r.status !== 'pending' || r.expires_at <= ctx.now) return 'decided' as const;
    const forSelf = r.requested_by === r.account_id;
    if (decision === 'approve') {
      if (r.requested_by === actor.accountId || r.account_id === actor.accountId) return 'self' as const;
      if (r.endorsed_by === actor.accountId) return 'endorser' as const;
      if ((await inviters(trx, [r.account_id])).get(r.account_id)?.includes(actor.accountId)) return 'inviter' as const;
      if (!forSelf && !(await holdsAdmin(trx, r.requested_by, ctx.now))) return 'requester_not_admin' as const;
    }
    const grantee = await trx.selectFrom('accounts').select(['email', 'status']).where('id', '=', r.account_id).executeTakeFirstOrThrow();
    if (decision === 'approve' && grantee.status !== 'active') return 'grantee_inactive' as const;
    if (decision === 'approve' && forSelf && !r.endorsed_by) {
      await trx.updateTable('privilege_requests').set({ endorsed_by: actor.accountId, endorsed_at: ctx.now }).where('id', '=', id).execute();
      await appendAudit(trx, ctx.tenant.id, { action: 'identity.grant.endorse', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'privilege_request', targetIds: [id, r.account_id], details: { role: r.role, minutes: r.duration_minutes } }, ctx.now);
      await notifyHolders(trx, ctx, 'endorsed', grantee.email, r.role);
      return 'endorsed' as const;
    }
    let membershipId: string | null = null;
    if (decision === 'approve') {
      membershipId = (
        await trx
          .insertInto('memberships')
          .values({
            tenant_id: ctx.tenant.id,
            account_id: r.account_id,
            role: r.role,
            facility_id: r.facility_id,
            source: 'grant',
            // The first of the two people: whoever asked for someone else, or the administrator who endorsed a request for oneself.
            granted_by: forSelf ? r.endorsed_by! : r.requested_by,
            approved_by: actor.accountId,
            created_at: ctx.now,
            expires_at: new Date(ctx.now.getTime() + r.duration_minutes * 60_000),
          })
          .returning('id')
          .executeTakeFirstOrThrow()
      ).id;
      // Roles changed: the grantee signs in again, with its new session policy.
      await trx.updateTable('sessions').set({ revoked_at: ctx.now }).where('account_id', '=', r.account_id).where('revoked_at', 'is', null).execute();
    }
    await trx
      .updateTable('privilege_requests')
      .set({ status: decision === 'approve' ? 'approved' : 'refused', decided_by: actor.accountId, decided_at: ctx.now, membership_id: membershipId })
      .where('id', '=', id)
      .execute();
    await appendAudit(trx, ctx.tenant.id, { action, outcome: 'success', ...originFields(originOf(ctx)), targetType: 'privilege_request', targetIds: [id, r.account_id, ...(membershipId ? [membershipId] : [])], details: { role: r.role, minutes: r.duration_minutes } }, ctx.now);
    await notifyHolders(trx, ctx, decision === 'approve' ? 'approved' : 'refused', grantee.email, r.role, [grantee.email]);
    return decision === 'approve' ? ('approved' as const) : ('refused' as const);
  });
  if (outcome === 'not_found') await refuse(deps, ctx, action, [id], 'not_found', new AppError('notFound'));
  if (outcome === 'decided') await refuse(deps, ctx, action, [id], 'already_decided_or_expired', new ValidationError({ _: 'grantDecided' }));
  if (outcome === 'self') await refuse(deps, ctx, action, [id], 'self_approval', new AppError('forbidden'));
  if (outcome === 'endorser') await refuse(deps, ctx, action, [id], 'endorser_cannot_approve', new AppError('forbidden'));
  if (outcome === 'inviter') await refuse(deps, ctx, action, [id], 'approver_invited_grantee', new AppError('forbidden'));
  if (outcome === 'requester_not_admin') await refuse(deps, ctx, action, [id], 'requester_no_longer_admin', new ValidationError({ _: 'grantRequesterGone' }));
  if (outcome === 'grantee_inactive') await refuse(deps, ctx, action, [id], 'grantee_inactive', new ValidationError({ _: 'grantGranteeInactive' }));
  return outcome as DecisionOutcome;
}

/**
 * Ends a membership at once, and the holder's sessions with it. Removing
 * someone else's role is a role change like granting one: it takes a passkey
 * used in the last five minutes, so that a phished administrator session
 * (password and app code) cannot strip the other administrators and the
 * security officers — those who would see what it does next. Giving up one's
 * own role needs nothing more: it only ever reduces the remover's privilege.
 */
export async function revokeMembership(deps: Deps, ctx: Ctx, membershipId: string): Promise<void> {
  await check(deps, ctx, 'identity.grant.revoke', 'identity.grant.revoke', [membershipId]);
  if (!UUID.test(membershipId)) throw new AppError('notFound');
  const outcome = await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const held = await trx.selectFrom('memberships').select(['account_id', 'role']).where('id', '=', membershipId).where('revoked_at', 'is', null).forUpdate().executeTakeFirst();
    if (!held) throw new AppError('notFound');
    if (held.account_id !== ctx.actor!.accountId && !isRecentAuth(ctx.actor, ctx.now, RECENT_AUTH_SECONDS, true)) return 'step_up' as const;
    if (held.role === 'tenant_admin') {
      // The tenant keeps an administrator: without one, no role could be granted again (bootstrap is once).
      // Every administrator's row is locked, so two removals at once cannot each count on the other.
      const admins = await trx
        .selectFrom('memberships')
        .select('account_id')
        .where('role', '=', 'tenant_admin')
        .where('revoked_at', 'is', null)
        .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', ctx.now)]))
        .forUpdate()
        .execute();
      if (!admins.some((a) => a.account_id !== held.account_id)) return 'last_admin' as const;
    }
    const m = await trx
      .updateTable('memberships')
      .set({ revoked_at: ctx.now })
      .where('id', '=', membershipId)
      .where('revoked_at', 'is', null)
      .returning(['account_id', 'role'])
      .executeTakeFirst();
    if (!m) throw new AppError('notFound');
    await trx.updateTable('sessions').set({ revoked_at: ctx.now }).where('account_id', '=', m.account_id).where('revoked_at', 'is', null).execute();
    const who = await trx.selectFrom('accounts').select('email').where('id', '=', m.account_id).executeTakeFirstOrThrow();
    await appendAudit(trx, ctx.tenant.id, { action: 'identity.grant.revoke', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'membership', targetIds: [membershipId, m.account_id], details: { role: m.role } }, ctx.now);
    await notifyHolders(trx, ctx, 'revoked', who.email, m.role, [who.email]);
    return 'ok' as const;
  });
  if (outcome === 'step_up') await refuse(deps, ctx, 'identity.grant.revoke', [membershipId], 'step_up_required', new StepUpRequired(true, '/admin/grants'));
  if (outcome === 'last_admin') await refuse(deps, ctx, 'identity.grant.revoke', [membershipId], 'last_administrator', new ValidationError({ _: 'lastAdministrator' }));
}
