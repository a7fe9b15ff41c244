/**
 * Sending a breach report's notices, from an incident entry: one e-mail per
 * family, in the family's language, through the mail outbox (written in the
 * same transaction as the register's notice date, so a notice is never
 * queued for a date that rolled back, nor a date recorded for notices that
 * were not). Sending twice queues nothing new: incident_notices holds one row
 * per family per incident. A security officer who authenticated in the last
 * minutes only; every attempt is recorded.
 *
 * The report is produced again at the moment of sending, verified against
 * the signed heads like any report: what is sent rests on the log as it
 * stands, not on a copy kept since.
 */
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import { decide } from '../access/decide.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError } from '../errors.ts';
import { isRecentAuth, StepUpRequired } from '../identity/stepup.ts';
import { enqueueMail } from '../mail/outbox.ts';
import { withSession } from '../records/gateway.ts';
import { originFields } from '../tenants/service.ts';
import { today } from '../waitlist/dates.ts';
import { createBreachReport, type BreachInput } from './breach.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface NoticesSent {
  incidentNumber: number;
  /** Notices queued by this request. */
  queued: number;
  /** Families already told for this incident: nothing queued again. */
  already: number;
  personsNotifiedOn: string | null;
  reportEventId: string;
}

export async function sendBreachNotices(deps: Deps, ctx: Ctx, incidentId: string, input: BreachInput): Promise<NoticesSent> {
  const db = deps.db.db;
  const refuse = async (reason: string, outcome: 'denied' | 'failure') => {
    await appendAuditAlone(
      db,
      ctx.tenant.id,
      { action: 'privacy.breachNotices.send', outcome, ...originFields(originOf(ctx)), targetType: 'incident', targetIds: [String(incidentId).slice(0, 64).replace(/[\u0000-\u001f\u007f-\u009f]/g, '\ufffd')], details: withSession(ctx, { reason }) },
      ctx.now,
    );
  };
  const d = decide(ctx.actor, 'privacy.breachNotices.send', { type: 'tenant' }, ctx.now);
  if (!d.allowed) {
    await refuse(d.reason ?? 'denied', 'denied');
    throw new AppError(ctx.actor ? 'forbidden' : 'signInRequired');
  }
  if (!isRecentAuth(ctx.actor, ctx.now)) {
    await refuse('step_up_required', 'denied');
    throw new StepUpRequired(false, undefined);
  }
  const exists = UUID.test(incidentId) ? await inTenant(db, ctx.tenant.id, (trx) => trx.selectFrom('incidents').select('id').where('id', '=', incidentId).executeTakeFirst()) : undefined;
  if (!exists) {
    await refuse('unknown_incident', 'failure');
    throw new AppError('notFound');
  }
  // Bad input in the window or the selector is refused and recorded by the report itself.
  const report = await createBreachReport(deps, { kind: 'web', ctx }, input);
  return inTenant(
    db,
    ctx.tenant.id,
    async (trx) => {
      const incident = await trx.selectFrom('incidents').selectAll().where('id', '=', incidentId).forUpdate().executeTakeFirstOrThrow();
      const told = new Set((await trx.selectFrom('incident_notices').select('family_id').where('incident_id', '=', incidentId).execute()).map((r) => r.family_id));
      const queuedFamilies: string[] = [];
      for (const n of report.notices) {
        if (told.has(n.familyId)) continue;
        const inserted = await trx
          .insertInto('incident_notices')
          .values({ tenant_id: ctx.tenant.id, incident_id: incidentId, family_id: n.familyId, locale: n.locale, report_event_id: report.eventId, queued_by: ctx.actor!.accountId, queued_at: ctx.now })
          .onConflict((oc) => oc.doNothing())
          .returning('family_id')
          .executeTakeFirst();
        if (!inserted) continue;
        await enqueueMail(trx, ctx.tenant.id, { to: n.to, locale: n.locale, template: 'breach_notice', subject: n.subject, body: n.body }, ctx.now);
        queuedFamilies.push(n.familyId);
      }
      // The register keeps the date persons were first told; later sends (families found later) do not move it.
      const notifiedOn = incident.persons_notified_on ?? (queuedFamilies.length ? today(ctx.now) : null);
      const eventIds = incident.audit_event_ids.includes(report.eventId) ? incident.audit_event_ids : [...incident.audit_event_ids, report.eventId];
      await trx
        .updateTable('incidents')
        .set({ persons_notified_on: notifiedOn, audit_event_ids: eventIds, updated_by: ctx.actor!.accountId, updated_at: ctx.now })
        .where('id', '=', incidentId)
        .execute();
      await appendAudit(
        trx,
        ctx.tenant.id,
        {
          action: 'privacy.breachNotices.send',
          outcome: 'success',
          ...originFields(originOf(ctx)),
          targetType: 'incident',
          targetIds: [incidentId, report.eventId],
          familyIds: queuedFamilies,
          details: withSession(ctx, { number: incident.number, queued: queuedFamilies.length, already: report.notices.length - queuedFamilies.length, notified_on: notifiedOn }),
        },
        ctx.now,
      );
      return { incidentNumber: incident.number, queued: queuedFamilies.length, already: report.notices.length - queuedFamilies.length, personsNotifiedOn: notifiedOn, reportEventId: report.eventId };
    },
    ctx.actor?.accountId,
  );
}
