import { sql, type RawBuilder } from 'kysely';
import { breakGlassActive } from '../access/decide.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError, ValidationError } from '../errors.ts';
import { enqueueMail } from '../mail/outbox.ts';
import { originFields } from '../tenants/service.ts';
import { formatDateTime, messages } from '../web/i18n/index.ts';
import { requirePhishingResistantAuth } from './stepup.ts';

/**
 * Break-glass: the holder of a role still in its cooling-off period opens
 * personal data in an emergency. It takes a stated reason and a passkey used
 * within five minutes; it lasts 30 minutes, for this session only; every
 * privileged holder of the tenant is e-mailed at once; and every audit event
 * the session writes meanwhile carries "break_glass:<id>" among its roles, so
 * its reads can be reviewed one by one.
 */
export const BREAK_GLASS_MINUTES = 30;

/** activeBreakGlass as a column of another statement (the session's look-up): JSON, or null. */
export function activeBreakGlassSql(sessionId: RawBuilder<unknown>, now: Date) {
  // An alias of its own: the statement around this one names its tables.
  return sql<{ id: string; until: string } | null>`(SELECT pg_catalog.json_build_object('id', bgl.id, 'until', bgl.expires_at) FROM break_glass bgl
    WHERE bgl.session_id = ${sessionId} AND bgl.ended_at IS NULL AND bgl.expires_at > ${now} ORDER BY bgl.expires_at DESC LIMIT 1)`;
}

export function breakGlassOfJson(j: { id: string; until: string } | null): { id: string; until: Date } | null {
  return j ? { id: j.id, until: new Date(j.until) } : null;
}

export async function activeBreakGlass(trx: Trx, sessionId: string, now: Date): Promise<{ id: string; until: Date } | null> {
  const r = await trx
    .selectFrom('break_glass')
    .select(['id', 'expires_at'])
    .where('session_id', '=', sessionId)
    .where('ended_at', 'is', null)
    .where('expires_at', '>', now)
    .orderBy('expires_at', 'desc')
    .executeTakeFirst();
  return r ? { id: r.id, until: r.expires_at } : null;
}

/** Whether the signed-in person has a role in its cooling-off period (the only case break-glass is for). */
export function coolingRoles(ctx: Ctx) {
  return (ctx.actor?.memberships ?? []).filter((m) => m.coolingUntil && m.coolingUntil > ctx.now && (!m.expiresAt || m.expiresAt > ctx.now));
}

/** `after`: the page the person goes on to (a path of this site), kept through a re-authentication. */
export async function startBreakGlass(deps: Deps, ctx: Ctx, reason: string, after?: string): Promise<{ id: string; until: Date }> {
  const actor = ctx.actor;
  if (!actor?.sessionId) throw new AppError('signInRequired');
  const refuse = async (why: string, error: AppError): Promise<never> => {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action: 'identity.breakGlass.start', outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'account', targetIds: [actor.accountId], details: { reason: why } }, ctx.now);
    throw error;
  };
  if (!coolingRoles(ctx).length) await refuse('nothing_to_break', new ValidationError({ reason: 'breakGlassNotNeeded' }));
  if (breakGlassActive(actor, ctx.now)) await refuse('already_active', new ValidationError({ reason: 'breakGlassActive' }));
  requirePhishingResistantAuth(ctx, undefined, { returnTo: after ? `/break-glass?return=${encodeURIComponent(after)}` : '/break-glass' });
  const until = new Date(ctx.now.getTime() + BREAK_GLASS_MINUTES * 60_000);
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const r = await trx
      .insertInto('break_glass')
      .values({ tenant_id: ctx.tenant.id, account_id: actor.accountId, session_id: actor.sessionId!, reason, started_at: ctx.now, expires_at: until })
      .returning('id')
      .executeTakeFirstOrThrow();
    await appendAudit(
      trx,
      ctx.tenant.id,
      { action: 'identity.breakGlass.start', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'break_glass', targetIds: [r.id, actor.accountId], details: { reason, until: until.toISOString(), roles: coolingRoles(ctx).map((m) => m.role).join(',') } },
      ctx.now,
    );
    await alertHolders(trx, ctx, actor.email, reason, until);
    return { id: r.id, until };
  });
}

export async function endBreakGlass(deps: Deps, ctx: Ctx): Promise<boolean> {
  const actor = ctx.actor;
  if (!actor?.sessionId) throw new AppError('signInRequired');
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const ended = await trx.updateTable('break_glass').set({ ended_at: ctx.now }).where('session_id', '=', actor.sessionId!).where('ended_at', 'is', null).where('expires_at', '>', ctx.now).returning('id').execute();
    if (!ended.length) return false;
    await appendAudit(trx, ctx.tenant.id, { action: 'identity.breakGlass.end', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'break_glass', targetIds: [...ended.map((e) => e.id), actor.accountId], details: {} }, ctx.now);
    return true;
  });
}

/** Everyone who holds a privileged role now hears of it, with the reason given. */
async function alertHolders(trx: Trx, ctx: Ctx, who: string, reason: string, until: Date) {
  const holders = await trx
    .selectFrom('memberships as m')
    .innerJoin('accounts as a', 'a.id', 'm.account_id')
    .select(['a.email', 'a.locale'])
    .distinct()
    .where('m.role', 'in', ['tenant_admin', 'security_officer', 'program_operator'])
    .where('m.revoked_at', 'is', null)
    .where((eb) => eb.or([eb('m.expires_at', 'is', null), eb('m.expires_at', '>', ctx.now)]))
    .where('a.status', '=', 'active')
    .execute();
  for (const h of holders) {
    const m = messages(h.locale);
    await enqueueMail(trx, ctx.tenant.id, { to: h.email, locale: h.locale, template: 'break_glass', subject: m.breakGlass.mailSubject(who), body: m.breakGlass.mailBody(who, reason, formatDateTime(h.locale, until), `${ctx.baseUrl}/security/audit`) }, ctx.now);
  }
}
