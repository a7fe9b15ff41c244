import { sql } from 'kysely';
import { decide } from '../access/decide.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import type { AuditAction, AuditOrigin } from '../audit/events.ts';
import { untrustedId } from '../audit/untrusted.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError, ValidationError } from '../errors.ts';
import { requireRecentAuth } from '../identity/stepup.ts';
import { originFields } from '../tenants/service.ts';
import { enqueueWebhook } from './webhook.ts';
import { enqueueMail } from '../mail/outbox.ts';
import { formatDateTime, messages } from '../web/i18n/index.ts';
import { childReferences } from '../records/lookups.ts';

export type Severity = 'low' | 'high' | 'critical';

export interface NewAlert {
  ruleCode: string;
  signal: string;
  severity: Severity;
  subjectAccountId: string | null;
  /** What was done automatically. */
  response: string;
  lockdownLevel: number | null;
  eventIds: readonly string[];
  details: Record<string, string | number | boolean | null>;
}

/**
 * Writes an alert in the caller's transaction, with its audit event and the
 * e-mail to each of the tenant's current security officers (through the
 * outbox, so the message goes if and only if the alert commits). Called in
 * the transaction of the event that caused it: the alert exists when that
 * event does.
 */
export async function createAlert(trx: Trx, tenantId: string, a: NewAlert, origin: AuditOrigin, now: Date, baseUrl: string): Promise<string> {
  const { id } = await trx
    .insertInto('detection_alerts')
    .values({
      tenant_id: tenantId,
      rule_code: a.ruleCode,
      signal: a.signal,
      severity: a.severity,
      subject_account_id: a.subjectAccountId,
      response: a.response,
      lockdown_level: a.lockdownLevel,
      event_ids: [...a.eventIds],
      details: JSON.stringify(a.details),
      created_at: now,
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  await appendAudit(
    trx,
    tenantId,
    {
      action: 'detection.alert',
      outcome: 'success',
      actorAccountId: origin.actorAccountId,
      actorRoles: origin.actorRoles,
      ip: origin.ip,
      userAgent: origin.userAgent,
      requestId: origin.requestId,
      targetType: 'alert',
      targetIds: [id, ...(a.subjectAccountId ? [a.subjectAccountId] : []), ...a.eventIds],
      details: { rule: a.ruleCode, severity: a.severity, response: a.response, ...(a.lockdownLevel ? { lockdownLevel: a.lockdownLevel } : {}) },
    },
    now,
  );
  for (const officer of await securityOfficers(trx, now)) {
    const m = messages(officer.locale);
    await enqueueMail(
      trx,
      tenantId,
      {
        to: officer.email,
        locale: officer.locale,
        template: 'security_alert',
        subject: m.detection.mailSubject(m.detection.severity[a.severity], m.detection.rules[ruleLabelKey(a.ruleCode)] ?? a.ruleCode),
        body: m.detection.mailBody(formatDateTime(officer.locale, now), m.detection.rules[ruleLabelKey(a.ruleCode)] ?? a.ruleCode, m.detection.responses[responseKey(a.response)], `${baseUrl}/security/alerts/${id}`, a.lockdownLevel),
      },
      now,
    );
  }
  await enqueueWebhook(
    trx,
    tenantId,
    id,
    { type: 'security_alert', id, tenant: tenantId, rule: a.ruleCode, severity: a.severity, response: a.response, lockdownLevel: a.lockdownLevel, subjectAccountId: a.subjectAccountId, createdAt: now.toISOString(), url: `${baseUrl}/security/alerts/${id}` },
    now,
  );
  return id;
}

export function ruleLabelKey(code: string): keyof ReturnType<typeof messages>['detection']['rules'] {
  return code as never;
}

export function responseKey(r: string): keyof ReturnType<typeof messages>['detection']['responses'] {
  return (['alert', 'stepup', 'end_sessions', 'suspend', 'lockdown'].includes(r) ? r : 'alert') as never;
}

/** The tenant's security officers whose role is current, with where to write to them. */
export async function securityOfficers(trx: Trx, now: Date): Promise<{ id: string; email: string; locale: 'fr' | 'en' }[]> {
  return trx
    .selectFrom('memberships as m')
    .innerJoin('accounts as a', 'a.id', 'm.account_id')
    .select(['a.id', 'a.email', 'a.locale'])
    .where('m.role', '=', 'security_officer')
    .where('m.revoked_at', 'is', null)
    .where((eb) => eb.or([eb('m.expires_at', 'is', null), eb('m.expires_at', '>', now)]))
    .where('a.status', '=', 'active')
    .groupBy(['a.id', 'a.email', 'a.locale'])
    .orderBy(sql`a.email`)
    .execute();
}

/* ------------------------------------------------------ the security console */

export type AlertStatus = 'open' | 'acknowledged' | 'closed';
export const ALERT_STATUSES: readonly AlertStatus[] = ['open', 'acknowledged', 'closed'];
export const SEVERITIES: readonly Severity[] = ['low', 'high', 'critical'];

export interface AlertRow {
  id: string;
  ruleCode: string;
  severity: Severity;
  subjectAccountId: string | null;
  subjectEmail: string | null;
  subjectStatus: string | null;
  response: string;
  lockdownLevel: number | null;
  status: AlertStatus;
  assignedTo: string | null;
  assignedEmail: string | null;
  acknowledgedEmail: string | null;
  acknowledgedAt: Date | null;
  createdAt: Date;
  eventIds: string[];
  details: Record<string, unknown>;
}

export interface AlertEvent {
  id: string;
  seq: string;
  occurredAt: Date;
  action: string;
  outcome: string;
  actorEmail: string | null;
  targetType: string | null;
  count: number;
  requestId: string | null;
  ip: string | null;
  /** One of the events the alert names, rather than the subject's activity before it. */
  cause: boolean;
}

/** A protected file the alert's opening concerned, by reference, and the reason given: null once the file is purged. */
export interface AlertOpening {
  reference: string;
  reason: string | null;
}

export interface AlertNote {
  authorEmail: string;
  body: string;
  createdAt: Date;
}

async function officerOnly(deps: Deps, ctx: Ctx, action: 'detection.alert.list' | 'detection.alert.update', audited: AuditAction, target: string): Promise<string> {
  const d = decide(ctx.actor, action, { type: 'tenant' }, ctx.now);
  if (!d.allowed || !ctx.actor) {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action: audited, outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'alert', targetIds: [untrustedId(target)], details: { reason: d.reason ?? 'denied' } }, ctx.now);
    throw new AppError(ctx.actor ? 'forbidden' : 'signInRequired');
  }
  return ctx.actor.accountId;
}

function alertQuery(trx: Trx) {
  return trx
    .selectFrom('detection_alerts as al')
    .leftJoin('accounts as s', 's.id', 'al.subject_account_id')
    .leftJoin('accounts as g', 'g.id', 'al.assigned_to')
    .leftJoin('accounts as k', 'k.id', 'al.acknowledged_by')
    .select([
      'al.id',
      'al.rule_code',
      'al.signal',
      'al.severity',
      'al.subject_account_id',
      's.email as subject_email',
      's.status as subject_status',
      'al.response',
      'al.lockdown_level',
      'al.status',
      'al.assigned_to',
      'g.email as assigned_email',
      'k.email as acknowledged_email',
      'al.acknowledged_at',
      'al.created_at',
      'al.event_ids',
      'al.details',
    ]);
}

function toAlert(r: Awaited<ReturnType<ReturnType<typeof alertQuery>['executeTakeFirstOrThrow']>>): AlertRow {
  return {
    id: r.id,
    ruleCode: r.rule_code,
    severity: r.severity,
    subjectAccountId: r.subject_account_id,
    subjectEmail: r.subject_email,
    subjectStatus: r.subject_status,
    response: r.response,
    lockdownLevel: r.lockdown_level,
    status: r.status,
    assignedTo: r.assigned_to,
    assignedEmail: r.assigned_email,
    acknowledgedEmail: r.acknowledged_email,
    acknowledgedAt: r.acknowledged_at,
    createdAt: r.created_at,
    eventIds: r.event_ids,
    details: (typeof r.details === 'string' ? JSON.parse(r.details) : r.details) as Record<string, unknown>,
  };
}

export interface AlertFilter {
  status?: AlertStatus | undefined;
  severity?: Severity | undefined;
  /** Only those assigned to the actor. */
  mine?: boolean | undefined;
  page?: number | undefined;
}

export const ALERTS_PAGE_SIZE = 25;

/** Alerts, newest first, filtered; the console's list. */
export async function listAlerts(deps: Deps, ctx: Ctx, f: AlertFilter): Promise<{ rows: AlertRow[]; total: number }> {
  const me = await officerOnly(deps, ctx, 'detection.alert.list', 'detection.alert.list', 'list');
  const page = Math.max(1, Math.min(10_000, Math.floor(f.page ?? 1)));
  return inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      let q = alertQuery(trx);
      if (f.status) q = q.where('al.status', '=', f.status);
      if (f.severity) q = q.where('al.severity', '=', f.severity);
      if (f.mine) q = q.where('al.assigned_to', '=', me);
      const total = Number((await q.clearSelect().select(sql<string>`count(*)`.as('n')).executeTakeFirst())?.n ?? 0);
      const rows = await q.orderBy('al.created_at', 'desc').orderBy('al.id').limit(ALERTS_PAGE_SIZE).offset((page - 1) * ALERTS_PAGE_SIZE).execute();
      await appendAudit(trx, ctx.tenant.id, { action: 'detection.alert.list', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'alert', targetIds: rows.map((r) => r.id), details: { status: f.status ?? null, severity: f.severity ?? null, mine: !!f.mine, page } }, ctx.now);
      return { rows: rows.map(toAlert), total };
    },
    me,
  );
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * One alert with its notes, the audit events that caused it, and what its
 * subject did in the rule's window before it (the reads that led there),
 * as the audit log records them: actions and counts, no family's data.
 */
export async function readAlert(
  deps: Deps,
  ctx: Ctx,
  id: string,
): Promise<{ alert: AlertRow; notes: AlertNote[]; events: AlertEvent[]; officers: { id: string; email: string }[]; reinstatement: PendingReinstatement | null; openings: AlertOpening[] }> {
  const me = await officerOnly(deps, ctx, 'detection.alert.list', 'detection.alert.read', id);
  if (!UUID.test(id)) throw new AppError('notFound');
  return inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const row = await alertQuery(trx).where('al.id', '=', id).executeTakeFirst();
      if (!row) throw new AppError('notFound');
      const alert = toAlert(row);
      const notes = await trx
        .selectFrom('detection_alert_notes as n')
        .innerJoin('accounts as a', 'a.id', 'n.author_account_id')
        .select(['a.email', 'n.body', 'n.created_at'])
        .where('n.alert_id', '=', id)
        .orderBy('n.created_at')
        .execute();
      const windowSeconds = Number(alert.details.windowSeconds ?? 3600);
      const from = new Date(alert.createdAt.getTime() - Math.min(windowSeconds, 86400) * 1000);
      const causes = new Set(alert.eventIds);
      const events = await trx
        .selectFrom('audit_events as e')
        .leftJoin('accounts as a', 'a.id', 'e.actor_account_id')
        .select(['e.id', 'e.seq', 'e.occurred_at', 'e.action', 'e.outcome', 'a.email', 'e.target_type', 'e.target_ids', 'e.request_id', 'e.ip'])
        .where((eb) =>
          eb.or([
            ...(alert.eventIds.length ? [eb('e.id', 'in', alert.eventIds)] : []),
            ...(alert.subjectAccountId ? [eb.and([eb('e.actor_account_id', '=', alert.subjectAccountId), eb('e.occurred_at', '>=', from), eb('e.occurred_at', '<=', alert.createdAt)])] : []),
            eb.val(false),
          ]),
        )
        .orderBy('e.seq', 'desc')
        .limit(100)
        .execute();
      const officers = await securityOfficers(trx, ctx.now);
      const reinstatement = alert.subjectStatus === 'suspended' ? await pendingReinstatement(trx, alert.subjectAccountId, false) : null;
      // An opening of protected files: the reason lives on the openings (src/detection/protected.ts), not in the details.
      const opened =
        row.signal === 'protected_file'
          ? await trx.selectFrom('protected_file_openings').select(['child_id', 'reason']).where('alert_id', '=', id).orderBy('opened_at').orderBy('id').execute()
          : [];
      const refs = await childReferences(trx, [...new Set(opened.map((o) => o.child_id))]);
      await appendAudit(trx, ctx.tenant.id, { action: 'detection.alert.read', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'alert', targetIds: [id] }, ctx.now);
      return {
        alert,
        notes: notes.map((n) => ({ authorEmail: n.email, body: n.body, createdAt: n.created_at })),
        events: events.map((e) => ({
          id: e.id,
          seq: String(e.seq),
          occurredAt: e.occurred_at,
          action: e.action,
          outcome: e.outcome,
          actorEmail: e.email,
          targetType: e.target_type,
          count: e.target_ids.length,
          requestId: e.request_id,
          ip: e.ip,
          cause: causes.has(e.id),
        })),
        officers: officers.map((o) => ({ id: o.id, email: o.email })),
        reinstatement,
        openings: opened.map((o) => ({ reference: refs.get(o.child_id) ?? '', reason: o.reason })),
      };
    },
    me,
  );
}

export type AlertUpdate =
  | { kind: 'acknowledge' }
  | { kind: 'close' }
  | { kind: 'reopen' }
  | { kind: 'assign'; accountId: string }
  | { kind: 'note'; body: string }
  /** Asks to give the suspended account back; nothing changes until a different officer approves. */
  | { kind: 'reinstate' }
  | { kind: 'reinstateApprove' }
  /** Refuses (or, by its requester, withdraws) the pending request. */
  | { kind: 'reinstateRefuse' };

/** A request to give the alert's suspended account back, waiting for a second officer. */
export interface PendingReinstatement {
  id: string;
  requestedBy: string;
  requestedByEmail: string;
  requestedAt: Date;
}

async function pendingReinstatement(trx: Trx, accountId: string | null, lock = true): Promise<PendingReinstatement | null> {
  if (!accountId) return null;
  const q = trx
    .selectFrom('account_reinstatements as r')
    .innerJoin('accounts as a', 'a.id', 'r.requested_by')
    .select(['r.id', 'r.requested_by', 'a.email', 'r.requested_at'])
    .where('r.account_id', '=', accountId)
    .where('r.status', '=', 'pending');
  const r = await (lock ? q.forUpdate('r') : q).executeTakeFirst();
  return r ? { id: r.id, requestedBy: r.requested_by, requestedByEmail: r.email, requestedAt: r.requested_at } : null;
}

/** Acknowledge, close, reopen, assign to an officer, or add a note; each one an audit event. */
export async function updateAlert(deps: Deps, ctx: Ctx, id: string, u: AlertUpdate): Promise<void> {
  const me = await officerOnly(deps, ctx, 'detection.alert.update', 'detection.alert.update', id);
  if (!UUID.test(id)) throw new AppError('notFound');
  if (u.kind === 'note') {
    const body = typeof u.body === 'string' ? u.body.trim() : '';
    if (!body || body.length > 2000 || /\u0000/.test(body)) throw new ValidationError({ note: 'noteRequired' });
    u = { kind: 'note', body };
  }
  // Giving a suspended account back is a sensitive action: a fresh authentication, and two officers.
  if (u.kind === 'reinstate' || u.kind === 'reinstateApprove') requireRecentAuth(ctx);
  const refused = await inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const a = await trx.selectFrom('detection_alerts').select(['id', 'status', 'subject_account_id']).where('id', '=', id).forUpdate().executeTakeFirst();
      if (!a) throw new AppError('notFound');
      const details: Record<string, string> = { change: u.kind };
      // An alert about oneself is for the other officers to take in charge, assign or close; a note or a reopening only adds scrutiny.
      if (a.subject_account_id === me && (u.kind === 'acknowledge' || u.kind === 'close' || u.kind === 'assign')) return 'own_alert' as const;
      switch (u.kind) {
        case 'acknowledge':
          await trx.updateTable('detection_alerts').set({ status: 'acknowledged', acknowledged_by: me, acknowledged_at: ctx.now }).where('id', '=', id).execute();
          break;
        case 'close':
          await trx.updateTable('detection_alerts').set({ status: 'closed' }).where('id', '=', id).execute();
          break;
        case 'reopen':
          await trx.updateTable('detection_alerts').set({ status: 'open' }).where('id', '=', id).execute();
          break;
        case 'assign': {
          const officer = (await securityOfficers(trx, ctx.now)).find((o) => o.id === u.accountId);
          // Not to the person the alert is about, whoever assigns it.
          if (!officer || officer.id === a.subject_account_id) throw new ValidationError({ assignee: 'invalidValue' });
          await trx.updateTable('detection_alerts').set({ assigned_to: officer.id }).where('id', '=', id).execute();
          details.assignee = officer.id;
          break;
        }
        case 'note':
          await trx.insertInto('detection_alert_notes').values({ tenant_id: ctx.tenant.id, alert_id: id, author_account_id: me, body: u.body, created_at: ctx.now }).execute();
          break;
        case 'reinstate': {
          const subject = a.subject_account_id;
          const suspended = subject ? await trx.selectFrom('accounts').select('id').where('id', '=', subject).where('status', '=', 'suspended').executeTakeFirst() : undefined;
          if (!suspended) throw new AppError('notFound');
          if (subject === me) return 'own_account' as const;
          if (await pendingReinstatement(trx, subject)) throw new ValidationError({ _: 'reinstatePending' });
          // Two officers asking at once: the pending request's unique index lets one in, the other is told.
          const r = await trx
            .insertInto('account_reinstatements')
            .values({ tenant_id: ctx.tenant.id, alert_id: id, account_id: subject!, requested_by: me, requested_at: ctx.now, status: 'pending' })
            .onConflict((oc) => oc.column('account_id').where('status', '=', 'pending').doNothing())
            .returning('id')
            .executeTakeFirst();
          if (!r) throw new ValidationError({ _: 'reinstatePending' });
          details.account = subject!;
          details.request = r.id;
          break;
        }
        case 'reinstateApprove': {
          const p = await pendingReinstatement(trx, a.subject_account_id);
          if (!p) throw new AppError('notFound');
          if (p.requestedBy === me || a.subject_account_id === me) return 'same_officer' as const;
          // The request is applied first: the accounts table lets a suspended account back only in the transaction that
          // applied a reinstatement (migration 0033). It comes back with empty windows: its old reads would otherwise
          // suspend it again at the next one.
          const subject = a.subject_account_id!;
          await trx.updateTable('account_reinstatements').set({ status: 'applied', decided_by: me, decided_at: ctx.now }).where('id', '=', p.id).execute();
          const done = await trx.updateTable('accounts').set({ status: 'active' }).where('id', '=', subject).where('status', '=', 'suspended').returning('id').execute();
          if (!done.length) throw new AppError('notFound');
          await trx.deleteFrom('detection_hits').where('account_id', '=', subject).execute();
          details.account = subject;
          details.request = p.id;
          details.requestedBy = p.requestedBy;
          break;
        }
        case 'reinstateRefuse': {
          const p = await pendingReinstatement(trx, a.subject_account_id);
          if (!p) throw new AppError('notFound');
          await trx.updateTable('account_reinstatements').set({ status: 'refused', decided_by: me, decided_at: ctx.now }).where('id', '=', p.id).execute();
          details.account = a.subject_account_id!;
          details.request = p.id;
          break;
        }
      }
      await appendAudit(trx, ctx.tenant.id, { action: 'detection.alert.update', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'alert', targetIds: [id], details }, ctx.now);
      return null;
    },
    me,
  );
  if (refused) {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action: 'detection.alert.update', outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'alert', targetIds: [id], details: { change: u.kind, reason: refused } }, ctx.now);
    throw new ValidationError({ _: refused === 'own_account' ? 'reinstateOwn' : refused === 'own_alert' ? 'alertOwn' : 'reinstateSecondOfficer' });
  }
}
