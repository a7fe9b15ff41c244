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

/** "22 novembre 2026" / "November 22, 2026", from a 'YYYY-MM-DD' date or a Date. */
export function formatDate(locale: Locale, value: string | Date): string {
  const d = typeof value === 'string' ? new Date(`${value}T12:00:00Z`) : value;
  const key = `${locale}:${typeof value === 'string' ? 'date' : 'instant'}`;
  let f = dateFormats.get(key);
  if (!f) {
    f = new Intl.DateTimeFormat(locale === 'fr' ? 'fr-CA' : 'en-CA', {
      day: 'numeric',
      month: 'long',
      year: 'numeric',
      timeZone: typeof value === 'string' ? 'UTC' : 'America/Toronto',
    });
    dateFormats.set(key, f);
  }
  return f.format(d);
}

// A formatter costs about a millisecond to build and a page formats many dates: one per language and kind.
const dateFormats = new Map<string, Intl.DateTimeFormat>();

/** "22 novembre 2026 à 14 h 30" / "November 22, 2026, 2:30 p.m." */
export function formatDateTime(locale: Locale, d: Date): string {
  if (locale === 'fr') {
    const parts = new Intl.DateTimeFormat('fr-CA', {
      hour: '2-digit',
      minute: '2-digit',
      hourCycle: 'h23',
      timeZone: 'America/Toronto',
    }).formatToParts(d);
    const h = parts.find((p) => p.type === 'hour')?.value ?? '00';
    const m = parts.find((p) => p.type === 'minute')?.value ?? '00';
    return `${formatDate(locale, d)} à ${Number(h)}\u00a0h\u00a0${m}`;
  }
  return new Intl.DateTimeFormat('en-CA', { dateStyle: 'long', timeStyle: 'short', timeZone: 'America/Toronto' }).format(d);
}
