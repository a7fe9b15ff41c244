import { z } from 'zod';
import { ValidationError } from '../errors.ts';
import type { FieldErrorKey } from './i18n/index.ts';
import { messages } from './i18n/index.ts';

const FIELD_KEYS = new Set(Object.keys(messages('fr').errors.field));

export function fieldKey(message: string): FieldErrorKey {
  return (FIELD_KEYS.has(message) ? message : 'invalidValue') as FieldErrorKey;
}

/**
 * Parses a request body with a zod schema whose messages are field-error keys
 * (see i18n errors.field). Anything that fails becomes a ValidationError that
 * the page renders in the reader's language; an unknown message (a type
 * mismatch zod reports itself) becomes the generic "invalid value".
 */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  const r = schema.safeParse(body ?? {});
  if (r.success) return r.data;
  const fields: Record<string, FieldErrorKey> = {};
  for (const issue of r.error.issues) {
    const name = String(issue.path[0] ?? '_');
    if (fields[name]) continue;
    fields[name] = fieldKey(issue.message);
  }
  throw new ValidationError(fields);
}

/** A form text field: trimmed, control characters refused, bounded. */
export function text(requiredKey: FieldErrorKey, max = 200, tooLongKey: FieldErrorKey = 'invalidValue') {
  return z
    .string({ error: requiredKey })
    .transform((s) => s.normalize('NFC').trim())
    .pipe(
      z
        .string()
        .min(1, { error: requiredKey })
        .max(max, { error: tooLongKey })
        .refine((s) => !/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/.test(s), { error: 'invalidValue' }),
    );
}

export const emailField = z
  .string({ error: 'emailRequired' })
  .transform((s) => s.trim().toLowerCase())
  .pipe(z.string().min(1, { error: 'emailRequired' }).max(254, { error: 'emailInvalid' }).email({ error: 'emailInvalid' }));

export const newPasswordField = z
  .string({ error: 'passwordRequired' })
  .min(1, { error: 'passwordRequired' })
  .min(12, { error: 'passwordTooShort' })
  .max(256, { error: 'passwordTooLong' });

export const passwordField = z.string({ error: 'passwordRequired' }).min(1, { error: 'passwordRequired' }).max(1024, { error: 'passwordTooLong' });

/** A checkbox posts "on" or nothing. */
export const checkbox = z
  .enum(['on', 'true', '1'])
  .optional()
  .transform((v) => v !== undefined);

export const uuidField = (key: FieldErrorKey) => z.string({ error: key }).uuid({ error: key });

/** 'YYYY-MM-DD' that is a real calendar date. */
export const dateField = z
  .string({ error: 'dateRequired' })
  .trim()
  .min(1, { error: 'dateRequired' })
  .refine((s) => isRealDate(s), { error: 'dateInvalid' });

export function isRealDate(s: string): boolean {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s);
  if (!m) return false;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (y < 1900 || y > 2200) return false;
  const dt = new Date(Date.UTC(y, mo - 1, d));
  return dt.getUTCFullYear() === y && dt.getUTCMonth() === mo - 1 && dt.getUTCDate() === d;
}
