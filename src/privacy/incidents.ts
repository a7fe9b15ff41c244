/**
 * The register of confidentiality incidents (Law 25, s. 3.8; Règlement sur
 * les incidents de confidentialité, s. 11): what the regulation asks each
 * entry to hold, kept five years after the organisation learned of the
 * incident. Entries are amended, never removed (the database refuses
 * DELETE and a shorter retention); every creation, change, look and export
 * is an audit event. An entry links to the audit events it rests on (the
 * breach report's, the intruder's reads: by id, or chosen by a range of the
 * log's sequence numbers, an actor or a session) and to the tenant's
 * detection alerts; the page and the export show each with its summary.
 */
import { sql } from 'kysely';
import { decide } from '../access/decide.ts';
import type { Action } from '../access/actions.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import type { AuditAction } from '../audit/events.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import type { IncidentsTable } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError, ValidationError } from '../errors.ts';
import { requireRecentAuth } from '../identity/stepup.ts';
import { withSession } from '../records/gateway.ts';
import { originFields } from '../tenants/service.ts';
import { csvLine } from './breach.ts';

export type RiskLevel = IncidentsTable['risk_level'];

export interface IncidentInput {
  title: string;
  dataConcerned: string;
  circumstances: string;
  occurredFrom: string | null;
  occurredTo: string | null;
  discoveredOn: string;
  personsCount: number | null;
  riskLevel: RiskLevel;
  riskAssessment: string;
  commissionNotifiedOn: string | null;
  personsNotifiedOn: string | null;
  publicNotice: string;
  measures: string;
  auditEventIds: string[];
  alertIds: string | null;
}

export interface Incident extends IncidentInput {
  id: string;
  number: number;
  linkedAlertIds: string[];
  createdAt: Date;
  updatedAt: Date;
  retainUntil: string;
}

const COLUMNS: Record<keyof IncidentInput, keyof IncidentsTable> = {
  title: 'title',
  dataConcerned: 'data_concerned',
  circumstances: 'circumstances',
  occurredFrom: 'occurred_from',
  occurredTo: 'occurred_to',
  discoveredOn: 'discovered_on',
  personsCount: 'persons_count',
  riskLevel: 'risk_level',
  riskAssessment: 'risk_assessment',
  commissionNotifiedOn: 'commission_notified_on',
  personsNotifiedOn: 'persons_notified_on',
  publicNotice: 'public_notice',
  measures: 'measures',
  auditEventIds: 'audit_event_ids',
  alertIds: 'alert_ids',
};

function toIncident(r: Record<string, unknown>): Incident {
  const out = { id: r.id, number: Number(r.number), linkedAlertIds: (r.linked_alert_ids as string[] | undefined) ?? [], createdAt: r.created_at, updatedAt: r.updated_at, retainUntil: r.retain_until } as Incident;
  for (const [k, col] of Object.entries(COLUMNS)) (out as unknown as Record<string, unknown>)[k] = r[col];
  out.personsCount = r.persons_count === null ? null : Number(r.persons_count);
  return out;
}

/** Five years after the organisation learned of it (s. 11). */
export function retentionDate(discoveredOn: string): string {
  const [y, m, d] = discoveredOn.split('-').map(Number) as [number, number, number];
  const dt = new Date(Date.UTC(y + 5, m - 1, d));
  // 29 February plus five years: 1 March, never earlier than five years.
  if (dt.getUTCMonth() !== m - 1) dt.setUTCDate(1);
  return dt.toISOString().slice(0, 10);
}

/** Refuses (recorded) unless the actor may perform the action on the register. */
export async function authorize(deps: Deps, ctx: Ctx, action: Action, audited: AuditAction, target: string): Promise<void> {
  const d = decide(ctx.actor, action, { type: 'tenant' }, ctx.now);
  if (d.allowed) return;
  await appendAuditAlone(deps.db.db, ctx.tenant.id, { action: audited, outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'incident', targetIds: [target.slice(0, 64).replace(/[\u0000-\u001f\u007f-\u009f]/g, '\ufffd')], details: withSession(ctx, { reason: d.reason ?? 'denied' }) }, ctx.now);
  throw new AppError(ctx.actor ? 'forbidden' : 'signInRequired');
}

function record(trx: Trx, ctx: Ctx, action: AuditAction, ids: string[], details: Record<string, string | number | boolean | null>) {
  return appendAudit(trx, ctx.tenant.id, { action, outcome: 'success', ...originFields(originOf(ctx)), targetType: 'incident', targetIds: ids, details: withSession(ctx, details) }, ctx.now);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The linked events must be this tenant's. */
async function checkEvents(trx: Trx, ids: readonly string[]): Promise<void> {
  if (!ids.length) return;
  if (ids.some((id) => !UUID.test(id)) || ids.length > 500) throw new ValidationError({ auditEventIds: 'incidentEventUnknown' });
  const found = await trx.selectFrom('audit_events').select('id').where('id', 'in', [...ids]).execute();
  if (found.length !== new Set(ids).size) throw new ValidationError({ auditEventIds: 'incidentEventUnknown' });
}

function rowOf(input: IncidentInput) {
  return {
    title: input.title,
    data_concerned: input.dataConcerned,
    circumstances: input.circumstances,
    occurred_from: input.occurredFrom,
    occurred_to: input.occurredTo,
    discovered_on: input.discoveredOn,
    persons_count: input.personsCount,
    risk_level: input.riskLevel,
    risk_assessment: input.riskAssessment,
    commission_notified_on: input.commissionNotifiedOn,
    persons_notified_on: input.personsNotifiedOn,
    public_notice: input.publicNotice,
    measures: input.measures,
    audit_event_ids: [...new Set(input.auditEventIds)],
    alert_ids: input.alertIds,
  };
}

export async function listIncidents(deps: Deps, ctx: Ctx): Promise<Incident[]> {
  await authorize(deps, ctx, 'incident.read', 'incident.list', 'list');
  return inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const rows = await trx.selectFrom('incidents').selectAll().orderBy('number', 'desc').execute();
      await record(trx, ctx, 'incident.list', [], { incidents: rows.length });
      return rows.map((r) => toIncident(r as never));
    },
    ctx.actor?.accountId,
  );
}

export async function getIncident(deps: Deps, ctx: Ctx, id: string): Promise<Incident> {
  await authorize(deps, ctx, 'incident.read', 'incident.list', id);
  if (!UUID.test(id)) throw new AppError('notFound');
  return inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const r = await trx.selectFrom('incidents').selectAll().where('id', '=', id).executeTakeFirst();
      if (!r) throw new AppError('notFound');
      await record(trx, ctx, 'incident.list', [id], { number: r.number });
      return toIncident(r as never);
    },
    ctx.actor?.accountId,
  );
}

export async function createIncident(deps: Deps, ctx: Ctx, input: IncidentInput): Promise<Incident> {
  await authorize(deps, ctx, 'incident.write', 'incident.create', 'new');
  return inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      await checkEvents(trx, input.auditEventIds);
      // Numbers per tenant: the unique index settles two officers at the same instant (one retries).
      const next = await trx.selectFrom('incidents').select(sql<number>`coalesce(max(number), 0) + 1`.as('n')).executeTakeFirst();
      const r = await trx
        .insertInto('incidents')
        .values({
          tenant_id: ctx.tenant.id,
          number: Number(next?.n ?? 1),
          ...rowOf(input),
          created_by: ctx.actor!.accountId,
          created_at: ctx.now,
          updated_by: ctx.actor!.accountId,
          updated_at: ctx.now,
          retain_until: retentionDate(input.discoveredOn),
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      await record(trx, ctx, 'incident.create', [r.id, ...r.audit_event_ids], { number: r.number, risk: r.risk_level, persons: r.persons_count });
      return toIncident(r as never);
    },
    ctx.actor?.accountId,
  );
}

export async function updateIncident(deps: Deps, ctx: Ctx, id: string, input: IncidentInput): Promise<Incident> {
  await authorize(deps, ctx, 'incident.write', 'incident.update', id);
  if (!UUID.test(id)) throw new AppError('notFound');
  // Amending the register (a risk level, a notice date, the circumstances): who does it has just proved who they are.
  requireRecentAuth(ctx, undefined, { returnTo: `/security/incidents/${id}` });
  return inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const cur = await trx.selectFrom('incidents').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
      if (!cur) throw new AppError('notFound');
      await checkEvents(trx, input.auditEventIds);
      // The entry is amended, never rewritten (migration 0056 keeps each earlier version): a link stays, and a notice
      // date once written stays written. Said here in words; the database holds it too.
      if (cur.audit_event_ids.some((e) => !input.auditEventIds.includes(e))) throw new ValidationError({ auditEventIds: 'incidentLinkKept' });
      const kept: Record<string, 'incidentNoticeKept'> = {};
      if (cur.commission_notified_on && !input.commissionNotifiedOn) kept.commissionNotifiedOn = 'incidentNoticeKept';
      if (cur.persons_notified_on && !input.personsNotifiedOn) kept.personsNotifiedOn = 'incidentNoticeKept';
      if (Object.keys(kept).length) throw new ValidationError(kept);
      const next = rowOf(input);
      const changed = (Object.keys(next) as (keyof typeof next)[]).filter((k) => JSON.stringify(next[k]) !== JSON.stringify(cur[k]));
      if (!changed.length) return toIncident(cur as never);
      const retain = retentionDate(input.discoveredOn);
      const r = await trx
        .updateTable('incidents')
        .set({ ...next, updated_by: ctx.actor!.accountId, updated_at: ctx.now, retain_until: retain > cur.retain_until ? retain : cur.retain_until })
        .where('id', '=', id)
        .returningAll()
        .executeTakeFirstOrThrow();
      await record(trx, ctx, 'incident.update', [id, ...r.audit_event_ids], { number: r.number, changed: changed.join(' ') });
      return toIncident(r as never);
    },
    ctx.actor?.accountId,
  );
}

/** The whole register, for the Commission or an auditor: JSON or CSV; a sensitive export, behind a fresh authentication. */
export async function exportIncidents(deps: Deps, ctx: Ctx, format: 'json' | 'csv'): Promise<string> {
  await authorize(deps, ctx, 'incident.read', 'incident.export', 'register');
  requireRecentAuth(ctx);
  return inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const rows = (await trx.selectFrom('incidents').selectAll().orderBy('number').execute()).map((r) => toIncident(r as never));
      const links = await linksOf(trx, rows);
      await record(trx, ctx, 'incident.export', [], { format, incidents: rows.length });
      const whole = rows.map((r) => ({ ...r, ...links.get(r.id)! }));
      if (format === 'json') return `${JSON.stringify({ format: 'guichet.incident-register.v2', tenant: ctx.tenant.slug, exportedAt: ctx.now.toISOString(), incidents: whole }, null, 2)}\n`;
      const cols = ['number', 'title', 'dataConcerned', 'circumstances', 'occurredFrom', 'occurredTo', 'discoveredOn', 'personsCount', 'riskLevel', 'riskAssessment', 'commissionNotifiedOn', 'personsNotifiedOn', 'publicNotice', 'measures', 'auditEventIds', 'alertIds', 'createdAt', 'updatedAt', 'retainUntil'] as const;
      let out = `\ufeff${csvLine([...cols, 'linkedAlerts', 'linkedEvents', 'noticesSent'])}`;
      for (const r of whole) {
        out += csvLine([
          ...cols.map((c) => {
            const v = r[c];
            return Array.isArray(v) ? v.join(' ') : v instanceof Date ? v.toISOString() : (v as string | number | null);
          }),
          r.alerts.map((a) => `${a.createdAt.toISOString()} ${a.ruleCode} ${a.severity} ${a.status} ${a.id}`).join(' | '),
          r.events.map((e) => `#${e.seq} ${e.occurredAt.toISOString()} ${e.action} ${e.outcome} ${e.actor ?? '-'} ${e.id}`).join(' | '),
          r.notices.families,
        ]);
      }
      return out;
    },
    ctx.actor?.accountId,
  );
}

/* ------------------------------------------------------------------ links */

export interface LinkedAlert {
  id: string;
  ruleCode: string;
  signal: string;
  severity: string;
  status: string;
  subject: string | null;
  createdAt: Date;
}

export interface LinkedEvent {
  id: string;
  seq: number;
  occurredAt: Date;
  action: string;
  outcome: string;
  /** The actor's address, or their roles when the account has none (the server's own work). */
  actor: string | null;
  targetType: string | null;
  targets: number;
}

export interface IncidentLinks {
  alerts: LinkedAlert[];
  events: LinkedEvent[];
  /** Breach notices queued from this entry. */
  notices: { families: number; firstAt: Date | null; lastAt: Date | null };
}

/** What the entry said before an amendment (migration 0056), and who wrote it and replaced it. */
export interface IncidentVersion {
  version: number;
  writtenAt: Date;
  writtenBy: string | null;
  replacedAt: Date;
  replacedBy: string | null;
  title: string;
  riskLevel: string;
  riskAssessment: string;
  personsCount: number | null;
  commissionNotifiedOn: string | null;
  personsNotifiedOn: string | null;
  circumstances: string;
  dataConcerned: string;
  measures: string;
}

/** The summaries of what the entries link to, read in the same transaction as the entries. */
async function linksOf(trx: Trx, incidents: Incident[]): Promise<Map<string, IncidentLinks>> {
  const alertIds = [...new Set(incidents.flatMap((i) => i.linkedAlertIds))];
  const eventIds = [...new Set(incidents.flatMap((i) => i.auditEventIds))];
  const alerts = alertIds.length
    ? await trx
        .selectFrom('detection_alerts as a')
        .leftJoin('accounts as s', 's.id', 'a.subject_account_id')
        .select(['a.id', 'a.rule_code', 'a.signal', 'a.severity', 'a.status', 'a.created_at', 's.email'])
        .where('a.id', 'in', alertIds)
        .execute()
    : [];
  const events = eventIds.length
    ? await trx
        .selectFrom('audit_events as e')
        .leftJoin('accounts as a', 'a.id', 'e.actor_account_id')
        .select(['e.id', 'e.seq', 'e.occurred_at', 'e.action', 'e.outcome', 'e.actor_roles', 'e.target_type', 'e.target_ids', 'a.email'])
        .where('e.id', 'in', eventIds)
        .execute()
    : [];
  const notices = incidents.length
    ? await trx
        .selectFrom('incident_notices')
        .select(['incident_id', sql<string>`count(*)`.as('n'), sql<Date>`min(queued_at)`.as('first'), sql<Date>`max(queued_at)`.as('last')])
        .where('incident_id', 'in', incidents.map((i) => i.id))
        .groupBy('incident_id')
        .execute()
    : [];
  const alertById = new Map<string, LinkedAlert>(
    alerts.map((a) => [a.id, { id: a.id, ruleCode: a.rule_code, signal: a.signal, severity: a.severity, status: a.status, subject: a.email, createdAt: new Date(a.created_at) }]),
  );
  const eventById = new Map<string, LinkedEvent>(
    events.map((e) => [
      e.id,
      { id: e.id, seq: Number(e.seq), occurredAt: new Date(e.occurred_at), action: e.action, outcome: e.outcome, actor: e.email ?? (e.actor_roles.length ? e.actor_roles.join(' ') : null), targetType: e.target_type, targets: e.target_ids.length },
    ]),
  );
  const noticeBy = new Map(notices.map((n) => [n.incident_id, { families: Number(n.n), firstAt: new Date(n.first), lastAt: new Date(n.last) }]));
  return new Map(
    incidents.map((i) => [
      i.id,
      {
        alerts: i.linkedAlertIds.map((id) => alertById.get(id)).filter((a): a is LinkedAlert => !!a).sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime()),
        events: i.auditEventIds.map((id) => eventById.get(id)).filter((e): e is LinkedEvent => !!e).sort((a, b) => a.seq - b.seq),
        notices: noticeBy.get(i.id) ?? { families: 0, firstAt: null, lastAt: null },
      },
    ]),
  );
}

/** An entry with the summaries of its alerts, events and notices, and the tenant's latest alerts to choose from. */
export async function getIncidentWithLinks(deps: Deps, ctx: Ctx, id: string): Promise<{ incident: Incident; links: IncidentLinks; recentAlerts: LinkedAlert[]; versions: IncidentVersion[] }> {
  const incident = await getIncident(deps, ctx, id);
  return inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const links = (await linksOf(trx, [incident])).get(incident.id)!;
      const recent = await trx
        .selectFrom('detection_alerts as a')
        .leftJoin('accounts as s', 's.id', 'a.subject_account_id')
        .select(['a.id', 'a.rule_code', 'a.signal', 'a.severity', 'a.status', 'a.created_at', 's.email'])
        .orderBy('a.created_at', 'desc')
        .limit(50)
        .execute();
      const recentAlerts: LinkedAlert[] = recent.map((a) => ({ id: a.id, ruleCode: a.rule_code, signal: a.signal, severity: a.severity, status: a.status, subject: a.email, createdAt: new Date(a.created_at) }));
      // Linked alerts older than the latest fifty are listed too (linked for good).
      for (const a of links.alerts) if (!recentAlerts.some((r) => r.id === a.id)) recentAlerts.push(a);
      const rows = await trx
        .selectFrom('incident_versions as v')
        .leftJoin('accounts as w', 'w.id', 'v.written_by')
        .leftJoin('accounts as r', 'r.id', 'v.replaced_by')
        .select(['v.version', 'v.content', 'v.written_at', 'v.replaced_at', 'w.email as written_by', 'r.email as replaced_by'])
        .where('v.incident_id', '=', incident.id)
        .orderBy('v.version', 'desc')
        .execute();
      const versions = rows.map((r): IncidentVersion => {
        const c = r.content as Record<string, unknown>;
        const text = (k: string) => (typeof c[k] === 'string' ? (c[k] as string) : '');
        const date = (k: string) => (typeof c[k] === 'string' ? (c[k] as string).slice(0, 10) : null);
        return {
          version: r.version,
          writtenAt: r.written_at,
          writtenBy: r.written_by,
          replacedAt: r.replaced_at,
          replacedBy: r.replaced_by,
          title: text('title'),
          riskLevel: text('risk_level'),
          riskAssessment: text('risk_assessment'),
          personsCount: typeof c.persons_count === 'number' ? c.persons_count : null,
          commissionNotifiedOn: date('commission_notified_on'),
          personsNotifiedOn: date('persons_notified_on'),
          circumstances: text('circumstances'),
          dataConcerned: text('data_concerned'),
          measures: text('measures'),
        };
      });
      return { incident, links, recentAlerts, versions };
    },
    ctx.actor?.accountId,
  );
}

/** Sets which of the tenant's alerts the entry links to (each checked to be the tenant's). */
export async function linkAlerts(deps: Deps, ctx: Ctx, id: string, alertIds: string[]): Promise<Incident> {
  await authorize(deps, ctx, 'incident.write', 'incident.link', id);
  if (!UUID.test(id)) throw new AppError('notFound');
  const asked = [...new Set(alertIds)];
  if (asked.length > 200 || asked.some((a) => !UUID.test(a))) throw new ValidationError({ alerts: 'incidentAlertUnknown' });
  requireRecentAuth(ctx, undefined, { returnTo: `/security/incidents/${id}` });
  return inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const cur = await trx.selectFrom('incidents').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
      if (!cur) throw new AppError('notFound');
      const added = asked.filter((a) => !cur.linked_alert_ids.includes(a));
      if (added.length) {
        const found = await trx.selectFrom('detection_alerts').select('id').where('id', 'in', added).execute();
        if (found.length !== added.length) throw new ValidationError({ alerts: 'incidentAlertUnknown' });
      }
      // Links are added, never taken away (the page shows the linked ones fixed): what an entry was tied to stays.
      if (!added.length) return toIncident(cur as never);
      const r = await trx.updateTable('incidents').set({ linked_alert_ids: [...cur.linked_alert_ids, ...added], updated_by: ctx.actor!.accountId, updated_at: ctx.now }).where('id', '=', id).returningAll().executeTakeFirstOrThrow();
      await record(trx, ctx, 'incident.link', [id, ...added], { number: r.number, kind: 'alerts', added: added.length });
      return toIncident(r as never);
    },
    ctx.actor?.accountId,
  );
}

export interface EventSelection {
  seqFrom: number | null;
  seqTo: number | null;
  /** An account id or e-mail address. */
  actor: string | null;
  /** A session id, as the gateway's events carry it. */
  session: string | null;
}

/** At most this many events are linked by one selection: a wider one is refused, to be narrowed. */
export const MAX_LINKED_EVENTS = 500;

/** Adds to the entry the tenant's audit events a selection names (a range of sequence numbers, an actor, a session; together they narrow). */
export async function linkAuditEvents(deps: Deps, ctx: Ctx, id: string, sel: EventSelection): Promise<{ incident: Incident; added: number }> {
  await authorize(deps, ctx, 'incident.write', 'incident.link', id);
  if (!UUID.test(id)) throw new AppError('notFound');
  if (sel.seqFrom === null && sel.seqTo === null && !sel.actor && !sel.session) throw new ValidationError({ seqFrom: 'incidentSelectionEmpty' });
  if (sel.seqFrom !== null && sel.seqTo !== null && sel.seqFrom > sel.seqTo) throw new ValidationError({ seqTo: 'incidentSeqOrder' });
  if (sel.session && !UUID.test(sel.session)) throw new ValidationError({ session: 'incidentSessionUnknown' });
  return inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const cur = await trx.selectFrom('incidents').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
      if (!cur) throw new AppError('notFound');
      let accountId: string | null = null;
      if (sel.actor) {
        const v = sel.actor.trim();
        const q = trx.selectFrom('accounts').select('id');
        const found = await (UUID.test(v) ? q.where('id', '=', v) : q.where('email', '=', v.toLowerCase())).executeTakeFirst();
        if (!found) throw new ValidationError({ actor: 'incidentActorUnknown' });
        accountId = found.id;
      }
      let q = trx.selectFrom('audit_events').select('id').where('tenant_id', '=', ctx.tenant.id);
      if (sel.seqFrom !== null) q = q.where('seq', '>=', String(sel.seqFrom));
      if (sel.seqTo !== null) q = q.where('seq', '<=', String(sel.seqTo));
      if (sel.session) {
        // A session's events are its account's: the account's index finds them, the session narrows them.
        // A facility's API key carries its id as its requests' session (src/api/keys.ts).
        const session =
          (await trx.selectFrom('sessions').select('account_id').where('id', '=', sel.session).executeTakeFirst()) ??
          (await trx.selectFrom('facility_api_keys').select('created_by as account_id').where('id', '=', sel.session).executeTakeFirst());
        // No such session in this tenant, or another person's than the one named: nothing can match, as before.
        if (!session || (accountId && accountId !== session.account_id)) throw new ValidationError({ seqFrom: 'incidentSelectionNone' });
        accountId = session.account_id;
      }
      if (accountId) q = q.where('actor_account_id', '=', accountId);
      if (sel.session) q = q.where(sql<string>`details->>'session'`, '=', sel.session);
      const found = await q.orderBy('seq').limit(MAX_LINKED_EVENTS + 1).execute();
      if (found.length > MAX_LINKED_EVENTS) throw new ValidationError({ seqFrom: 'incidentSelectionTooWide' });
      if (!found.length) throw new ValidationError({ seqFrom: 'incidentSelectionNone' });
      const have = new Set(cur.audit_event_ids);
      const added = found.map((e) => e.id).filter((e) => !have.has(e));
      if (cur.audit_event_ids.length + added.length > MAX_LINKED_EVENTS) throw new ValidationError({ seqFrom: 'incidentSelectionTooWide' });
      if (!added.length) return { incident: toIncident(cur as never), added: 0 };
      const r = await trx
        .updateTable('incidents')
        .set({ audit_event_ids: [...cur.audit_event_ids, ...added], updated_by: ctx.actor!.accountId, updated_at: ctx.now })
        .where('id', '=', id)
        .returningAll()
        .executeTakeFirstOrThrow();
      await record(trx, ctx, 'incident.link', [id, ...added], {
        number: r.number,
        kind: 'events',
        added: added.length,
        seq_from: sel.seqFrom,
        seq_to: sel.seqTo,
        actor: accountId,
        session: sel.session,
      });
      return { incident: toIncident(r as never), added: added.length };
    },
    ctx.actor?.accountId,
  );
}
