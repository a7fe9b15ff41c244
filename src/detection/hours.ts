import { z } from 'zod';
import { decide } from '../access/decide.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError, ValidationError } from '../errors.ts';
import { requireRecentAuth } from '../identity/stepup.ts';
import { originFields } from '../tenants/service.ts';

/**
 * A tenant's declared working hours: staff activity outside them is the
 * off_hours signal (stream.ts). Days are ISO weekdays (1 = Monday); minutes
 * count from midnight in the tenant's time zone, end excluded.
 */
export interface WorkingHours {
  timeZone: string;
  days: number[];
  startMinute: number;
  endMinute: number;
}

/** Without a declaration: Monday to Friday, 7 h to 19 h, Eastern time (the programme's usual office hours). */
export const DEFAULT_HOURS: Readonly<WorkingHours> = Object.freeze({ timeZone: 'America/Toronto', days: [1, 2, 3, 4, 5], startMinute: 7 * 60, endMinute: 19 * 60 });

const WEEKDAY: Record<string, number> = { Mon: 1, Tue: 2, Wed: 3, Thu: 4, Fri: 5, Sat: 6, Sun: 7 };

export function isTimeZone(tz: string): boolean {
  if (!/^[A-Za-z_]+(?:\/[A-Za-z0-9_+-]+){0,2}$/.test(tz) || tz.length > 64) return false;
  try {
    new Intl.DateTimeFormat('en-CA', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

export function outsideHours(at: Date, h: WorkingHours = DEFAULT_HOURS): boolean {
  const parts = new Intl.DateTimeFormat('en-CA', { timeZone: h.timeZone, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).formatToParts(at);
  const day = WEEKDAY[parts.find((p) => p.type === 'weekday')?.value ?? ''] ?? 0;
  const minute = Number(parts.find((p) => p.type === 'hour')?.value ?? 0) * 60 + Number(parts.find((p) => p.type === 'minute')?.value ?? 0);
  return !h.days.includes(day) || minute < h.startMinute || minute >= h.endMinute;
}

export async function workingHoursFor(trx: Trx): Promise<WorkingHours> {
  const row = await trx.selectFrom('detection_working_hours').selectAll().executeTakeFirst();
  if (!row || !isTimeZone(row.time_zone)) return { ...DEFAULT_HOURS, days: [...DEFAULT_HOURS.days] };
  return { timeZone: row.time_zone, days: row.days.map(Number).sort(), startMinute: row.start_minute, endMinute: row.end_minute };
}

const HOURS_INPUT = z.object({
  timeZone: z.string().refine(isTimeZone),
  days: z.array(z.number().int().min(1).max(7)).min(1).max(7),
  startMinute: z.number().int().min(0).max(1439),
  endMinute: z.number().int().min(1).max(1440),
});

/** The working hours in force, for the rules page (officers only). */
export async function workingHoursOf(deps: Deps, ctx: Ctx): Promise<WorkingHours> {
  const d = decide(ctx.actor, 'detection.rules.update', { type: 'tenant' }, ctx.now);
  if (!d.allowed) throw new AppError(ctx.actor ? 'forbidden' : 'signInRequired');
  return inTenant(deps.db.db, ctx.tenant.id, workingHoursFor);
}

/** A security officer declares the tenant's working hours (replacing the defaults). Bad input changes nothing. */
export async function saveWorkingHours(deps: Deps, ctx: Ctx, input: WorkingHours): Promise<void> {
  const d = decide(ctx.actor, 'detection.rules.update', { type: 'tenant' }, ctx.now);
  if (!d.allowed || !ctx.actor) {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action: 'detection.hours.update', outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'tenant', targetIds: [ctx.tenant.id], details: { reason: d.reason ?? 'denied' } }, ctx.now);
    throw new AppError(ctx.actor ? 'forbidden' : 'signInRequired');
  }
  requireRecentAuth(ctx);
  const by = ctx.actor.accountId;
  const parsed = HOURS_INPUT.safeParse(input);
  if (!parsed.success) {
    const field = String(parsed.error.issues[0]?.path[0] ?? 'days');
    if (field === 'timeZone') throw new ValidationError({ timeZone: 'timeZoneInvalid' });
    if (field === 'days') throw new ValidationError({ days: 'hoursDays' });
    throw new ValidationError({ [field === 'startMinute' ? 'start' : 'end']: 'hoursTime' });
  }
  const h = parsed.data;
  if (h.endMinute <= h.startMinute) throw new ValidationError({ end: 'hoursOrder' });
  const days = [...new Set(h.days)].sort();
  await inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const values = { time_zone: h.timeZone, days, start_minute: h.startMinute, end_minute: h.endMinute, updated_at: ctx.now, updated_by: by };
      await trx
        .insertInto('detection_working_hours')
        .values({ tenant_id: ctx.tenant.id, ...values })
        .onConflict((oc) => oc.column('tenant_id').doUpdateSet(values))
        .execute();
      await appendAudit(
        trx,
        ctx.tenant.id,
        { action: 'detection.hours.update', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'tenant', targetIds: [ctx.tenant.id], details: { timeZone: h.timeZone, days: days.join(','), startMinute: h.startMinute, endMinute: h.endMinute } },
        ctx.now,
      );
    },
    by,
  );
}
