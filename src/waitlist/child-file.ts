import { z } from 'zod';
import { ValidationError } from '../errors.ts';
import type { TenantRules } from '../tenants/rules.ts';
import { checkbox, dateField, fieldKey, text } from '../web/forms.ts';
import type { FieldErrorKey } from '../web/i18n/index.ts';
import { addMonths, today } from './dates.ts';

export const DAYS = ['mon', 'tue', 'wed', 'thu', 'fri'] as const;

export interface ChildInput {
  firstName: string;
  lastName: string;
  birthDate: string;
  /** Normalised (no spaces or hyphens, upper case); null when not given. */
  nirec: string | null;
  desiredEntryDate: string;
  daysOfCare: number;
  inSubsidisedCare: boolean;
}

const NAME = /^[\p{L}\p{M}][\p{L}\p{M}' ’.-]*( [\p{L}\p{M}][\p{L}\p{M}' ’.-]*)*$/u;

function name(requiredKey: FieldErrorKey) {
  return text(requiredKey, 100, 'nameTooLong').pipe(z.string().regex(NAME, { error: 'nameInvalid' }));
}

const dayBox = z.literal('on').optional();

const shape = z.object({
  firstName: name('firstNameRequired'),
  lastName: name('lastNameRequired'),
  birthDate: dateField,
  nirec: z.string().max(64, { error: 'nirecInvalid' }).optional(),
  desiredEntryDate: dateField,
  day_mon: dayBox,
  day_tue: dayBox,
  day_wed: dayBox,
  day_thu: dayBox,
  day_fri: dayBox,
  inSubsidisedCare: checkbox,
});

export function normaliseNirec(raw: string): string {
  return raw.replace(/[\s-]/g, '').toUpperCase();
}

/**
 * Checks a child file against the tenant's rules and today's date, and reports
 * every problem at once (a form shows them all, not one at a time).
 * On an update the NIREC may be left empty to keep the one on file.
 */
export function parseChildInput(body: unknown, rules: TenantRules, now: Date, mode: 'create' | 'update'): ChildInput {
  const fields: Record<string, FieldErrorKey> = {};
  const r = shape.safeParse(body ?? {});
  if (!r.success) {
    for (const issue of r.error.issues) {
      const key = String(issue.path[0] ?? '_');
      const k = key.startsWith('day_') ? 'daysOfCare' : key;
      fields[k] ??= k === 'daysOfCare' ? 'daysRequired' : fieldKey(issue.message);
    }
  }
  const v = r.success ? r.data : null;
  const raw = (body ?? {}) as Record<string, unknown>;
  const t = today(now);

  const birth = v?.birthDate ?? (typeof raw.birthDate === 'string' ? raw.birthDate : '');
  const entry = v?.desiredEntryDate ?? '';
  if (v && !fields.birthDate) {
    if (birth > t && !rules.prebirthRegistration) fields.birthDate = 'birthDateFuture';
    else if (birth > addMonths(t, 9)) fields.birthDate = 'birthDateTooFarFuture';
    else if (birth <= addMonths(t, -72)) fields.birthDate = 'birthDateTooOld';
  }
  if (v && !fields.desiredEntryDate) {
    if (entry < t) fields.desiredEntryDate = 'entryBeforeToday';
    else if (!fields.birthDate && entry < birth) fields.desiredEntryDate = 'entryBeforeBirth';
    else if (!fields.birthDate && entry >= addMonths(birth, 60)) fields.desiredEntryDate = 'entryTooLate';
  }

  let nirec: string | null = null;
  const rawNirec = typeof raw.nirec === 'string' ? normaliseNirec(raw.nirec) : '';
  if (rawNirec) {
    if (!new RegExp(rules.nirecPattern).test(rawNirec)) fields.nirec = 'nirecInvalid';
    else nirec = rawNirec;
  } else if (mode === 'create' && !(birth > t)) {
    // Before birth there is no NIREC yet; after birth it identifies the child.
    fields.nirec ??= 'nirecRequired';
  }

  let days = 0;
  DAYS.forEach((d, i) => {
    if (raw[`day_${d}`] === 'on') days |= 1 << i;
  });
  if (!days) fields.daysOfCare ??= 'daysRequired';

  if (Object.keys(fields).length || !v) throw new ValidationError(fields);
  return {
    firstName: v.firstName,
    lastName: v.lastName,
    birthDate: v.birthDate,
    nirec,
    desiredEntryDate: v.desiredEntryDate,
    daysOfCare: days,
    inSubsidisedCare: v.inSubsidisedCare,
  };
}

export function maskNirec(nirec: string | null): string | null {
  if (!nirec) return null;
  return `${'•'.repeat(Math.max(0, nirec.length - 3))}${nirec.slice(-3)}`;
}
