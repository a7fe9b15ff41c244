import { BREACH_NOTICE_FIELDS, FAMILY_EXPORT_FIELDS } from '../records/gateway.ts';
import { PURPOSE_FIELDS } from '../records/views.ts';

/**
 * The purposes of the privacy features and the fields each releases. They sit
 * beside, not inside, views.ts: that table is the minimisation policy of the
 * screens that show a child's file, each checked field by field against its
 * gateway read (test/records/minimisation.test.ts); these release the
 * family's own data to the family, or audit metadata, or a notice's address.
 */
export const PRIVACY_PURPOSE_FIELDS = {
  /** A parent reads who consulted the family's files: audit events, never the files' content. */
  'parent.accessLog.view': ['access_log'],
  /** A parent downloads everything Guichet holds on the family (Law 25, portability). The NIREC stays masked, as everywhere. */
  'parent.family.export': [...FAMILY_EXPORT_FIELDS],
  /** The retention rules are computed from each live file's birth date (school age). */
  'retention.schedule': ['birth_date'],
  /** A breach report addresses its notices. */
  'security.breach.notice': [...BREACH_NOTICE_FIELDS],
} as const;

/**
 * The fields a purpose releases, from the versioned tables (views.ts, then
 * this one); null for a purpose neither knows (an event written by a later
 * or an earlier version).
 */
export function fieldsOfPurpose(purpose: string | null): string[] | null {
  if (!purpose) return null;
  const all = { ...PURPOSE_FIELDS, ...PRIVACY_PURPOSE_FIELDS } as Record<string, readonly string[]>;
  return Object.hasOwn(all, purpose) ? [...all[purpose]!] : null;
}
