/**
 * Assisted mode: an agent (facility staff, a director, a programme operator)
 * acts for a parent who phones or comes in. The parent consents by reading
 * back a code Guichet e-mails them: six digits, hashed, good for 15 minutes,
 * single use, five tries, and only so many requests per agent and per parent.
 * The session that follows is bound to the agent's own sign-in session and to
 * that one family, lasts 30 minutes unless the agent ends it, and is decided
 * by access.decide like everything else (the 'assistingAgent' rule): the
 * agent may do what the parent does with the child files, nothing more, and
 * every audit event of the session names the parent in on_behalf_of. The
 * parent is e-mailed when it starts and sees each action in their access log.
 */
import { createHmac, randomInt, timingSafeEqual } from 'node:crypto';
import { sql } from 'kysely';
import { AGENT_ROLES } from '../access/actions.ts';
import { assistedFamily, decide } from '../access/decide.ts';
import type { AuditEventInput } from '../audit/events.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError, ValidationError } from '../errors.ts';
import { enqueueMail } from '../mail/outbox.ts';
import { familyIdsOfAccount } from '../records/lookups.ts';
import { originFields } from '../tenants/service.ts';
import { formatDateTime, messages } from '../web/i18n/index.ts';
import { ASSISTED_MINUTES, CODE_MINUTES, CODE_TRIES, REQUEST_WINDOW_MS, REQUESTS_PER_AGENT, REQUESTS_PER_PARENT } from './store.ts';

export type Channel = 'phone' | 'in_person';

export interface CodeRequest {
  email: string;
  channel: Channel;
  note: string;
}

export interface PendingConsent {
  id: string;
  parentEmail: string;
  channel: Channel;
  codeExpiresAt: Date;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function codeHash(deps: Deps, id: string, code: string): Buffer {
  return createHmac('sha256', deps.keys.derive('assisted-code')).update(`${id}\n${code}`).digest();
}

/** The agent's capacity, as the parent will read it: the membership that allows it (a facility role names its facility). */
function capacity(ctx: Ctx) {
  const roles: readonly string[] = AGENT_ROLES;
  const ms = (ctx.actor?.memberships ?? []).filter((m) => roles.includes(m.role) && (!m.expiresAt || m.expiresAt > ctx.now) && !(m.coolingUntil && m.coolingUntil > ctx.now));
  // A facility role first: a parent knows their facility better than the programme.
  return ms.find((m) => m.facilityId) ?? ms[0] ?? null;
}

async function refuse(deps: Deps, ctx: Ctx, action: AuditEventInput['action'], reason: string, error: AppError, targets: string[] = []): Promise<never> {
  await appendAuditAlone(deps.db.db, ctx.tenant.id, { action, outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'assisted_session', targetIds: targets.map((t) => t.slice(0, 64)), details: { reason } }, ctx.now);
  throw error;
}

function mustBeAgent(deps: Deps, ctx: Ctx, action: AuditEventInput['action']) {
  const actor = ctx.actor;
  if (!actor?.sessionId) throw new AppError('signInRequired');
  const d = decide(actor, 'assisted.session.start', { type: 'tenant' }, ctx.now);
  if (!d.allowed) return refuse(deps, ctx, action, d.reason ?? 'denied', d.reason === 'cooling_off' ? new AppError('coolingOff') : new AppError('forbidden'));
  return null;
}

/** Where the organisation's name comes from: the facility of a facility role, otherwise the programme. */
async function organisationOf(trx: Trx, ctx: Ctx, facilityId: string | null, locale: 'fr' | 'en'): Promise<string> {
  if (facilityId) {
    const f = await trx.selectFrom('facilities').select('name').where('id', '=', facilityId).executeTakeFirst();
    if (f) return f.name;
  }
  return locale === 'fr' ? ctx.tenant.nameFr : ctx.tenant.nameEn;
}

/**
 * Asks the parent's consent: e-mails them a code to read back. Any earlier
 * consent of this agent session, pending or running, is closed first.
 */
export async function requestCode(deps: Deps, ctx: Ctx, input: CodeRequest): Promise<{ id: string }> {
  const action = 'assisted.code.request';
  await mustBeAgent(deps, ctx, action);
  const actor = ctx.actor!;
  const as = capacity(ctx);
  if (!as) return refuse(deps, ctx, action, 'no_agent_role', new AppError('forbidden'));
  const since = new Date(ctx.now.getTime() - REQUEST_WINDOW_MS);
  const parent = await inTenant(deps.db.db, ctx.tenant.id, (trx) =>
    trx.selectFrom('accounts').select(['id', 'email', 'locale', 'status', 'email_verified_at']).where('email', '=', input.email).where('purged_at', 'is', null).executeTakeFirst(),
  );
  const counts = await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const r = await trx
      .selectFrom('assisted_sessions')
      .select([
        sql<string>`count(*) FILTER (WHERE agent_account_id = ${actor.accountId})`.as('agent'),
        sql<string>`count(*) FILTER (WHERE parent_account_id = ${parent?.id ?? null}::uuid)`.as('parent'),
      ])
      .where('requested_at', '>', since)
      .executeTakeFirst();
    return { agent: Number(r?.agent ?? 0), parent: Number(r?.parent ?? 0) };
  });
  if (counts.agent >= REQUESTS_PER_AGENT) return refuse(deps, ctx, action, 'throttled_agent', new AppError('tooMany'));
  if (!parent || parent.status !== 'active' || !parent.email_verified_at) return refuse(deps, ctx, action, 'unknown_parent', new ValidationError({ email: 'assistUnknownParent' }));
  if (parent.id === actor.accountId) return refuse(deps, ctx, action, 'self', new ValidationError({ email: 'assistSelf' }), [parent.id]);
  if (counts.parent >= REQUESTS_PER_PARENT) return refuse(deps, ctx, action, 'throttled_parent', new AppError('tooMany'), [parent.id]);

  const code = String(randomInt(0, 1_000_000)).padStart(6, '0');
  const expires = new Date(ctx.now.getTime() + CODE_MINUTES * 60_000);
  return inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      await trx.updateTable('assisted_sessions').set({ ended_at: ctx.now, end_reason: 'superseded' }).where('agent_session_id', '=', actor.sessionId!).where('ended_at', 'is', null).execute();
      const id = crypto.randomUUID();
      await trx
        .insertInto('assisted_sessions')
        .values({
          id,
          tenant_id: ctx.tenant.id,
          agent_account_id: actor.accountId,
          agent_session_id: actor.sessionId!,
          agent_role: as.role as 'facility_staff' | 'facility_director' | 'program_operator',
          agent_facility_id: as.facilityId,
          parent_account_id: parent.id,
          channel: input.channel,
          note: input.note,
          code_hash: codeHash(deps, id, code),
          code_expires_at: expires,
          requested_at: ctx.now,
        })
        .execute();
      const m = messages(parent.locale);
      const org = await organisationOf(trx, ctx, as.facilityId, parent.locale);
      await enqueueMail(trx, ctx.tenant.id, { to: parent.email, locale: parent.locale, template: 'assisted_code', subject: m.assisted.codeSubject, body: m.assisted.codeBody(code, actor.email, org, CODE_MINUTES) }, ctx.now);
      await appendAudit(
        trx,
        ctx.tenant.id,
        { action, outcome: 'success', ...originFields(originOf(ctx)), targetType: 'assisted_session', targetIds: [id, parent.id], details: { channel: input.channel, session: actor.sessionId } },
        ctx.now,
      );
      return { id };
    },
    actor.accountId,
  );
}

/** A consent of this agent session, for the code page (a used or expired one is refused when its code is sent). */
export async function pendingConsent(deps: Deps, ctx: Ctx, id: string): Promise<PendingConsent> {
  await mustBeAgent(deps, ctx, 'assisted.session.start');
  if (!UUID.test(id)) throw new AppError('notFound');
  const r = await inTenant(deps.db.db, ctx.tenant.id, (trx) =>
    trx
      .selectFrom('assisted_sessions as s')
      .innerJoin('accounts as a', 'a.id', 's.parent_account_id')
      .select(['s.id', 's.channel', 's.code_expires_at', 'a.email'])
      .where('s.id', '=', id)
      .where('s.agent_session_id', '=', ctx.actor!.sessionId!)
      .executeTakeFirst(),
  );
  if (!r) throw new AppError('notFound');
  return { id: r.id, parentEmail: r.email, channel: r.channel, codeExpiresAt: r.code_expires_at };
}

/**
 * Checks the code the parent read out. Right: the assisted session starts,
 * and the parent is told by e-mail. Wrong, expired, already used, or another
 * session's consent: refused, nothing started (a wrong try is counted).
 */
export async function verifyCode(deps: Deps, ctx: Ctx, id: string, code: string): Promise<{ until: Date }> {
  const action = 'assisted.session.start';
  await mustBeAgent(deps, ctx, action);
  const actor = ctx.actor!;
  if (!UUID.test(id)) return refuse(deps, ctx, action, 'malformed_id', new AppError('notFound'), [id]);
  const row = await inTenant(deps.db.db, ctx.tenant.id, (trx) => trx.selectFrom('assisted_sessions').selectAll().where('id', '=', id).executeTakeFirst());
  // Another agent's (or another session's) consent is not found, whoever asks.
  if (!row || row.agent_session_id !== actor.sessionId) return refuse(deps, ctx, action, 'not_found', new AppError('notFound'), [id]);
  if (row.started_at || row.end_reason === 'code_failed') return refuse(deps, ctx, action, 'code_used', new ValidationError({ code: 'assistCodeUsed' }), [id]);
  if (row.ended_at) return refuse(deps, ctx, action, 'superseded', new ValidationError({ code: 'assistCodeExpired' }), [id]);
  if (row.code_expires_at <= ctx.now) return refuse(deps, ctx, action, 'code_expired', new ValidationError({ code: 'assistCodeExpired' }), [id]);
  // The try is counted before the code is compared, in one statement: tries sent in parallel each take a count
  // of their own, and none is compared once the count is spent.
  const counted = await inTenant(deps.db.db, ctx.tenant.id, (trx) =>
    trx
      .updateTable('assisted_sessions')
      .set({ code_attempts: sql<number>`code_attempts + 1` })
      .where('id', '=', id)
      .where('started_at', 'is', null)
      .where('ended_at', 'is', null)
      .where('code_attempts', '<', CODE_TRIES)
      .returning('code_attempts')
      .executeTakeFirst(),
  );
  if (!counted) return refuse(deps, ctx, action, 'code_used', new ValidationError({ code: 'assistCodeUsed' }), [id]);
  if (!timingSafeEqual(codeHash(deps, id, code), row.code_hash)) {
    const last = counted.code_attempts >= CODE_TRIES;
    if (last) {
      await inTenant(deps.db.db, ctx.tenant.id, (trx) =>
        trx.updateTable('assisted_sessions').set({ ended_at: ctx.now, end_reason: 'code_failed' }).where('id', '=', id).where('started_at', 'is', null).where('ended_at', 'is', null).execute(),
      );
    }
    return refuse(deps, ctx, action, last ? 'code_wrong_last' : 'code_wrong', new ValidationError({ code: last ? 'assistCodeUsed' : 'assistCodeWrong' }), [id]);
  }
  const until = new Date(ctx.now.getTime() + ASSISTED_MINUTES * 60_000);
  return inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      // Single use, even against a second request racing this one.
      const started = await trx
        .updateTable('assisted_sessions')
        .set({ started_at: ctx.now, expires_at: until })
        .where('id', '=', id)
        .where('started_at', 'is', null)
        .where('ended_at', 'is', null)
        .returning('id')
        .execute();
      if (!started.length) throw new ValidationError({ code: 'assistCodeUsed' });
      const parent = await trx.selectFrom('accounts').select(['email', 'locale']).where('id', '=', row.parent_account_id).executeTakeFirstOrThrow();
      const familyIds = await familyIdsOfAccount(trx, row.parent_account_id);
      await appendAudit(
        trx,
        ctx.tenant.id,
        {
          action,
          outcome: 'success',
          ...originFields(originOf(ctx)),
          onBehalfOf: row.parent_account_id,
          targetType: 'assisted_session',
          targetIds: [id, row.parent_account_id],
          familyIds,
          purpose: 'assisted.session',
          // Not the note: it says what the family asked for, and the log keeps forever what no erasure can reach.
          details: { channel: row.channel, until: until.toISOString(), session: actor.sessionId },
        },
        ctx.now,
      );
      const m = messages(parent.locale);
      const org = await organisationOf(trx, ctx, row.agent_facility_id, parent.locale);
      await enqueueMail(
        trx,
        ctx.tenant.id,
        {
          to: parent.email,
          locale: parent.locale,
          template: 'assisted_notice',
          subject: m.assisted.noticeSubject,
          body: m.assisted.noticeBody(actor.email, org, m.assisted.channel[row.channel], formatDateTime(parent.locale, ctx.now), formatDateTime(parent.locale, until), `${ctx.baseUrl}/account/privacy/access`),
        },
        ctx.now,
      );
      return { until };
    },
    actor.accountId,
  );
}

/** The agent ends the session (it also ends by itself when its time is up). */
export async function endAssisted(deps: Deps, ctx: Ctx): Promise<boolean> {
  const actor = ctx.actor;
  if (!actor?.sessionId) throw new AppError('signInRequired');
  return inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const ended = await trx
        .updateTable('assisted_sessions')
        .set({ ended_at: ctx.now, end_reason: 'agent' })
        .where('agent_session_id', '=', actor.sessionId!)
        .where('ended_at', 'is', null)
        .returning(['id', 'parent_account_id', 'started_at'])
        .execute();
      const running = ended.filter((e) => e.started_at);
      if (!ended.length) return false;
      const parentId = running[0]?.parent_account_id ?? null;
      await appendAudit(
        trx,
        ctx.tenant.id,
        {
          action: 'assisted.session.end',
          outcome: 'success',
          ...originFields(originOf(ctx)),
          ...(parentId ? { onBehalfOf: parentId, familyIds: await familyIdsOfAccount(trx, parentId) } : {}),
          targetType: 'assisted_session',
          targetIds: ended.map((e) => e.id),
          purpose: 'assisted.session',
          details: { session: actor.sessionId },
        },
        ctx.now,
      );
      return true;
    },
    actor.accountId,
  );
}

/** Whether the request's actor is assisting someone now. */
export function isAssisting(ctx: Ctx): boolean {
  return !!assistedFamily(ctx.actor, ctx.now);
}
