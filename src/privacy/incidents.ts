/**
 * The register of confidentiality incidents (Law 25, s. 3.8; Règlement sur
 * les incidents de confidentialité, s. 11): what the regulation asks each
 * entry to hold, kept five years after the organisation learned of the
 * incident. Entries are amended, never removed (the database refuses
 * DELETE and a shorter retention); every creation, change, look and export
 * is an audit event. An entry links to the audit events it rests on (the
 * breach report's, the intruder's reads) and, as free text until detection
 * lands, to alerts.
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
  const out = { id: r.id, number: Number(r.number), createdAt: r.created_at, updatedAt: r.updated_at, retainUntil: r.retain_until } as Incident;
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
  return inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const cur = await trx.selectFrom('incidents').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
      if (!cur) throw new AppError('notFound');
      await checkEvents(trx, input.auditEventIds);
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
      await record(trx, ctx, 'incident.export', [], { format, incidents: rows.length });
      if (format === 'json') return `${JSON.stringify({ format: 'guichet.incident-register.v1', tenant: ctx.tenant.slug, exportedAt: ctx.now.toISOString(), incidents: rows }, null, 2)}\n`;
      const cols = ['number', 'title', 'dataConcerned', 'circumstances', 'occurredFrom', 'occurredTo', 'discoveredOn', 'personsCount', 'riskLevel', 'riskAssessment', 'commissionNotifiedOn', 'personsNotifiedOn', 'publicNotice', 'measures', 'auditEventIds', 'alertIds', 'createdAt', 'updatedAt', 'retainUntil'] as const;
      let out = `\ufeff${csvLine([...cols])}`;
      for (const r of rows) {
        out += csvLine(
          cols.map((c) => {
            const v = r[c];
            return Array.isArray(v) ? v.join(' ') : v instanceof Date ? v.toISOString() : (v as string | number | null);
          }),
        );
      }
      return out;
    },
    ctx.actor?.accountId,
  );
}
