import { sql } from 'kysely';
import { appendAudit } from '../audit/log.ts';
import type { AuditOrigin } from '../audit/events.ts';
import type { Trx } from '../db/connection.ts';
import { enqueueMail } from '../mail/outbox.ts';
import { formatDateTime, messages } from '../web/i18n/index.ts';

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
        body: m.detection.mailBody(formatDateTime(officer.locale, now), m.detection.rules[ruleLabelKey(a.ruleCode)] ?? a.ruleCode, m.detection.responses[responseKey(a.response)], `${baseUrl}/security/alerts/${id}`),
      },
      now,
    );
  }
  return id;
}

export function ruleLabelKey(code: string): keyof ReturnType<typeof messages>['detection']['rules'] {
  return code as never;
}

export function responseKey(r: string): keyof ReturnType<typeof messages>['detection']['responses'] {
  return (['alert', 'stepup', 'end_sessions', 'suspend'].includes(r) ? r : 'alert') as never;
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
