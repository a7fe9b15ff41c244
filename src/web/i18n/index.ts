import { en } from './en.ts';
import { fr, type Messages } from './fr.ts';

export type Locale = 'fr' | 'en';
export type { Messages };
export type FieldErrorKey = keyof Messages['errors']['field'];

const catalogues: Record<Locale, Messages> = { fr, en };

export function messages(locale: Locale): Messages {
  return catalogues[locale];
}

export function isLocale(x: unknown): x is Locale {
  return x === 'fr' || x === 'en';
}

// Building an Intl.DateTimeFormat costs far more than formatting with one (tens of
// microseconds, on every date of every page): each is made once and kept.
const formats = new Map<string, Intl.DateTimeFormat>();
function dateTimeFormat(locale: string, options: Intl.DateTimeFormatOptions): Intl.DateTimeFormat {
  const key = `${locale}|${JSON.stringify(options)}`;
  let f = formats.get(key);
  if (!f) formats.set(key, (f = new Intl.DateTimeFormat(locale, options)));
  return f;
}

/** "22 novembre 2026" / "November 22, 2026", from a 'YYYY-MM-DD' date or a Date. */
export function formatDate(locale: Locale, value: string | Date): string {
  const d = typeof value === 'string' ? new Date(`${value}T12:00:00Z`) : value;
  return dateTimeFormat(locale === 'fr' ? 'fr-CA' : 'en-CA', {
    day: 'numeric',
    month: 'long',
    year: 'numeric',
    timeZone: typeof value === 'string' ? 'UTC' : 'America/Toronto',
  }).format(d);
}

/** "22 novembre 2026 à 14 h 30" / "November 22, 2026, 2:30 p.m." */
export function formatDateTime(locale: Locale, d: Date): string {
  if (locale === 'fr') {
    const parts = dateTimeFormat('fr-CA', {
      hour: '2-digit',
      minute: '2-digit',
      hourCycle: 'h23',
      timeZone: 'America/Toronto',
    }).formatToParts(d);
    const h = parts.find((p) => p.type === 'hour')?.value ?? '00';
    const m = parts.find((p) => p.type === 'minute')?.value ?? '00';
    return `${formatDate(locale, d)} à ${Number(h)}\u00a0h\u00a0${m}`;
  }
  return dateTimeFormat('en-CA', { dateStyle: 'long', timeStyle: 'short', timeZone: 'America/Toronto' }).format(d);
}
