import { sql } from 'kysely';
import type { AuditOrigin } from '../audit/events.ts';
import { appendAudit } from '../audit/log.ts';
import type { Ctx, Deps } from '../context.ts';
import { inTenant } from '../db/tenant.ts';
import { enqueueMail } from '../mail/outbox.ts';
import type { TenantRules } from '../tenants/rules.ts';
import { originFields, tenantBaseUrl, type Tenant } from '../tenants/service.ts';
import { addDays, addMonths, today } from '../waitlist/dates.ts';
import { formatDate, messages } from '../web/i18n/index.ts';
import { audit, childWithOwner, run } from './gateway.ts';
import { cancelPendingOffers, lockChildOffers } from './offers.ts';
import { envelopeFor } from '../crypto/envelope.ts';

/**
 * Periodic confirmation of child files (tenant rules, `confirmation`): every
 * everyMonths the parent says the file is still wanted. Reminders go by
 * e-mail before the due date; grace days after it, an unconfirmed file
 * becomes inactive and leaves every ranking and referral until the parent
 * confirms, keeping its seniority or not as the rules say.
 */

export interface ConfirmationState {
  enabled: boolean;
  lastConfirmed: Date;
  /** The day the next confirmation is due. */
  dueOn: string;
  /** The day the file becomes inactive if still unconfirmed. */
  inactiveOn: string;
  /** The parent is asked now (a reminder window is open, or the file is inactive). */
  asked: boolean;
  inactiveSince: Date | null;
  keepsSeniority: boolean;
}

export function confirmationState(rules: TenantRules, c: { confirmed_at: Date | null; created_at: Date; inactive_since: Date | null }, now: Date): ConfirmationState {
  const r = rules.confirmation;
  const lastConfirmed = c.confirmed_at ?? c.created_at;
  const dueOn = addMonths(today(lastConfirmed), r.everyMonths);
  const firstReminder = addDays(dueOn, -Math.max(0, ...r.reminderDaysBefore));
  return {
    enabled: r.enabled,
    lastConfirmed,
    dueOn,
    inactiveOn: addDays(dueOn, r.graceDays),
    asked: r.enabled && (c.inactive_since !== null || today(now) >= firstReminder),
    inactiveSince: c.inactive_since,
    keepsSeniority: r.reactivationKeepsSeniority,
  };
}

/** The file's confirmation as its parent sees it (a read of the file's own dates). */
export async function readConfirmation(deps: Deps, ctx: Ctx, childId: string): Promise<ConfirmationState> {
  return run(deps, ctx, 'waitlist.childFile.read', async (trx) => {
    const c = await childWithOwner(trx, ctx, childId, 'waitlist.childFile.read');
    return confirmationState(ctx.tenant.rules, c, ctx.now);
  });
}

/**
 * The parent confirms the file. An inactive file comes back into the
 * rankings; if the rules say reactivation loses seniority, seniority counts
 * from today. Someone else's file: recorded as denied, answered "not found".
 */
export async function confirmChildFile(deps: Deps, ctx: Ctx, childId: string): Promise<{ reactivated: boolean }> {
  const action = 'waitlist.childFile.confirm';
  return run(deps, ctx, action, async (trx) => {
    const c = await childWithOwner(trx, ctx, childId, action, { lock: true });
    const reactivated = c.inactive_since !== null;
    const loseSeniority = reactivated && !ctx.tenant.rules.confirmation.reactivationKeepsSeniority;
    await trx
      .updateTable('children')
      .set({ confirmed_at: ctx.now, reminded_at: null, inactive_since: null, ...(loseSeniority ? { seniority_from: today(ctx.now) } : {}) })
      .where('id', '=', c.id)
      .execute();
    await audit(trx, ctx, {
      action,
      targetType: 'child',
      targetIds: [c.id],
      familyIds: [c.family_id],
      fields: ['confirmed_at', ...(reactivated ? ['inactive_since'] : []), ...(loseSeniority ? ['seniority_from'] : [])],
      purpose: 'parent.childFile.confirm',
      details: { reactivated, seniorityKept: reactivated ? !loseSeniority : true },
    });
    return { reactivated };
  });
}

export interface ConfirmationRunResult {
  tenant: string;
  reminded: number;
  inactivated: number;
}

const ORIGIN: AuditOrigin = { actorAccountId: null, actorRoles: ['system:confirmation'], ip: null, userAgent: 'guichet (confirmation)', requestId: null };

/**
 * One pass for one tenant: reminders for files whose reminder day has come
 * and that were not yet reminded since, then inactivation of those past the
 * grace period. Mail names the file by its reference (no decryption) in the
 * account's language. Each change is audited as the server's work.
 */
export async function runTenantConfirmation(deps: Deps, tenant: Tenant, now: Date, baseUrl = ''): Promise<ConfirmationRunResult> {
  const rules = tenant.rules.confirmation;
  const result = { tenant: tenant.slug, reminded: 0, inactivated: 0 };
  if (!rules.enabled) return result;
  const t = today(now);
  await inTenant(deps.db.db, tenant.id, async (trx) => {
    const rows = await trx
      .selectFrom('children as c')
      .innerJoin('families as f', 'f.id', 'c.family_id')
      .innerJoin('accounts as acc', 'acc.id', 'f.account_id')
      .select(['c.id', 'c.family_id', 'c.reference', 'c.created_at', 'c.confirmed_at', 'c.reminded_at', 'c.inactive_since', 'acc.email', 'acc.locale'])
      .where('c.deleted_at', 'is', null)
      .where('c.purged_at', 'is', null)
      .where('c.inactive_since', 'is', null)
      .where('acc.purged_at', 'is', null)
      // Two instances running the pass at once take different files, so no mail goes twice.
      .modifyEnd(sql`FOR NO KEY UPDATE OF c SKIP LOCKED`)
      .execute();
    const remind: typeof rows = [];
    const inactivate: typeof rows = [];
    for (const r of rows) {
      const s = confirmationState(tenant.rules, r, now);
      if (t >= s.inactiveOn) {
        inactivate.push(r);
        continue;
      }
      // The latest reminder day that has come; one mail per reminder day.
      const due = rules.reminderDaysBefore.map((d) => addDays(s.dueOn, -d)).filter((d) => d <= t).sort().at(-1);
      if (due && (!r.reminded_at || today(r.reminded_at) < due)) remind.push(r);
    }
    for (const r of remind) {
      const s = confirmationState(tenant.rules, r, now);
      const m = messages(r.locale).confirmation;
      await enqueueMail(trx, tenant.id, { to: r.email, locale: r.locale, template: 'file_confirmation', subject: m.reminderSubject(r.reference), body: m.reminderBody(r.reference, formatDate(r.locale, s.dueOn), formatDate(r.locale, s.inactiveOn), `${baseUrl}/children/${r.id}`) }, now);
      await trx.updateTable('children').set({ reminded_at: now }).where('id', '=', r.id).execute();
    }
    // Each child's offers lock before it leaves the lists (in one order, as every holder of several takes them): a
    // referral of it under way finishes first, and its offer is found below, rather than left pending on an
    // inactive file.
    for (const id of inactivate.map((r) => r.id).sort()) await lockChildOffers(trx, id);
    if (inactivate.length) await trx.updateTable('children').set({ inactive_since: now }).where('id', 'in', inactivate.map((r) => r.id)).execute();
    for (const r of inactivate) {
      const m = messages(r.locale).confirmation;
      await enqueueMail(trx, tenant.id, { to: r.email, locale: r.locale, template: 'file_inactive', subject: m.inactiveSubject(r.reference), body: m.inactiveBody(r.reference, `${baseUrl}/children/${r.id}`) }, now);
    }
    // An inactive file leaves every list: an offer it was waiting on goes to the next child now, as for a withdrawal.
    // Cancelled in the order the places' rows are locked everywhere (facility, age group), as an allocation round
    // takes them: several cancellations in one transaction never wait on each other's places the other way round.
    const waiting = inactivate.length
      ? await trx.selectFrom('offers').select('child_id').where('child_id', 'in', inactivate.map((r) => r.id)).where('status', '=', 'pending').orderBy('facility_id').orderBy('age_group').execute()
      : [];
    if (waiting.length) {
      const env = envelopeFor(deps.keys);
      const ctx: Ctx = { tenant, actor: null, ip: null, userAgent: ORIGIN.userAgent, requestId: null, locale: 'fr', now, baseUrl };
      for (const w of waiting) await cancelPendingOffers(trx, env, ctx, w.child_id, { reason: 'file_inactive', system: ORIGIN });
    }
    for (const [action, list] of [['waitlist.confirmation.remind', remind], ['waitlist.confirmation.inactivate', inactivate]] as const) {
      if (!list.length) continue;
      await appendAudit(
        trx,
        tenant.id,
        {
          action,
          outcome: 'success',
          ...originFields(ORIGIN),
          targetType: 'child',
          targetIds: list.map((r) => r.id),
          familyIds: [...new Set(list.map((r) => r.family_id))],
          // The parent's address and the file's reference were read to write to them: a breach report counts them.
          fields: ['reference', 'account_email', action === 'waitlist.confirmation.remind' ? 'reminded_at' : 'inactive_since'],
          details: { files: list.length },
        },
        now,
      );
    }
    result.reminded = remind.length;
    result.inactivated = inactivate.length;
  });
  return result;
}

export async function runConfirmation(deps: Deps, now: Date, baseUrl = ''): Promise<ConfirmationRunResult[]> {
  const out: ConfirmationRunResult[] = [];
  // Links in the mail go to the tenant's own host name where it has one.
  for (const t of await deps.tenants.all()) out.push(await runTenantConfirmation(deps, t, now, t.hosts[0] ? tenantBaseUrl(deps.config, t.hosts) : baseUrl));
  return out;
}

/** Hourly, like the identity maintenance: a file due today is reminded within the hour, by whichever instance runs it first. */
export function startConfirmationSchedule(deps: Deps, baseUrl: string, intervalMs = 3600_000): () => void {
  const tick = async () => {
    try {
      const r = await runConfirmation(deps, deps.clock(), baseUrl);
      const changed = r.filter((x) => x.reminded || x.inactivated);
      if (changed.length) deps.log.info({ confirmation: changed }, 'confirmation run');
    } catch (err) {
      deps.log.error({ err: { message: (err as Error).message } }, 'confirmation run failed');
    }
  };
  const timer = setInterval(() => void tick(), intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
