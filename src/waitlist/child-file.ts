import { z } from 'zod';
import { ValidationError } from '../errors.ts';
import type { TenantRules } from '../tenants/rules.ts';
import { checkbox, dateField, fieldKey, text } from '../web/forms.ts';
import { lookAlike } from '../web/look-alikes.ts';
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
  return text(requiredKey, 100, 'nameTooLong').pipe(
    z
      .string()
      .refine((s) => !lookAlike(s), { error: 'nameLookAlike' })
      .pipe(z.string().regex(NAME, { error: 'nameInvalid' })),
  );
}

const shape = z.object({
  firstName: name('firstNameRequired'),
  lastName: name('lastNameRequired'),
  birthDate: dateField,
  desiredEntryDate: dateField,
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
  const raw = (body && typeof body === 'object' ? body : {}) as Record<string, unknown>;
  const fields: Record<string, FieldErrorKey> = {};
  // Each field is checked on its own, so one bad field never hides another's problem.
  const field = <K extends keyof typeof shape.shape>(key: K): z.infer<(typeof shape.shape)[K]> | undefined => {
    const r = shape.shape[key].safeParse(raw[key]);
    if (r.success) return r.data as z.infer<(typeof shape.shape)[K]>;
    fields[key] ??= fieldKey(r.error.issues[0]?.message ?? '');
    return undefined;
  };
  const firstName = field('firstName');
  const lastName = field('lastName');
  const birthDate = field('birthDate');
  const desiredEntryDate = field('desiredEntryDate');
  const inSubsidisedCare = field('inSubsidisedCare');
  const t = today(now);

  if (birthDate) {
    if (birthDate > t && !rules.prebirthRegistration) fields.birthDate = 'birthDateFuture';
    else if (birthDate > addMonths(t, 9)) fields.birthDate = 'birthDateTooFarFuture';
    else if (birthDate <= addMonths(t, -72)) fields.birthDate = 'birthDateTooOld';
  }
  if (desiredEntryDate) {
    // On an update, a date already on file may have passed: the gateway compares it with the file (updateChildFile).
    if (desiredEntryDate < t && mode === 'create') fields.desiredEntryDate = 'entryBeforeToday';
    else if (birthDate && !fields.birthDate && desiredEntryDate < birthDate) fields.desiredEntryDate = 'entryBeforeBirth';
    else if (birthDate && !fields.birthDate && desiredEntryDate >= addMonths(birthDate, 60)) fields.desiredEntryDate = 'entryTooLate';
  }

  let nirec: string | null = null;
  const rawNirec = typeof raw.nirec === 'string' ? normaliseNirec(raw.nirec) : '';
  // Spaces and hyphens are ignored; a control character (a line feed, a tab) is not a space.
  if (raw.nirec !== undefined && (typeof raw.nirec !== 'string' || /[\u0000-\u001f\u007f-\u009f]/.test(raw.nirec))) fields.nirec = 'nirecInvalid';
  else if (rawNirec) {
    if (rawNirec.length > 64 || !new RegExp(rules.nirecPattern).test(rawNirec)) fields.nirec = 'nirecInvalid';
    else nirec = rawNirec;
  } else if (mode === 'create' && !(birthDate && birthDate > t)) {
    // Before birth there is no NIREC yet; after birth it identifies the child.
    fields.nirec = 'nirecRequired';
  }

  let days = 0;
  DAYS.forEach((d, i) => {
    const v = raw[`day_${d}`];
    if (v === 'on') days |= 1 << i;
    else if (v !== undefined) fields.daysOfCare = 'invalidValue';
  });
  if (!days) fields.daysOfCare ??= 'daysRequired';

  if (Object.keys(fields).length || !firstName || !lastName || !birthDate || !desiredEntryDate) throw new ValidationError(fields);
  return { firstName, lastName, birthDate, nirec, desiredEntryDate, daysOfCare: days, inSubsidisedCare: inSubsidisedCare ?? false };
}

export function maskNirec(nirec: string | null): string | null {
  if (!nirec) return null;
  return `${'•'.repeat(Math.max(0, nirec.length - 3))}${nirec.slice(-3)}`;
}
