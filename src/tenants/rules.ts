import { z } from 'zod';

/**
 * A tenant's waitlist rules, stored as data (tenants.rules). Missing keys take
 * the Quebec 2025 defaults, so the default tenant needs no configuration.
 */
export const tenantRulesSchema = z.object({
  /** Quebec 2025: registration after birth or adoption only. */
  prebirthRegistration: z.boolean().default(false),
  /** The ordering used for candidates; more orderings come with per-tenant rules. */
  ordering: z.enum(['quebec-2025']).default('quebec-2025'),
  /** The NIREC format is not published: an opaque identifier checked against this pattern. */
  nirecPattern: z.string().default('^[0-9A-Z]{6,20}$'),
  /**
   * Whether the programme runs coordinated allocation rounds (`guichet
   * allocate`): a central deferred-acceptance round instead of, or beside,
   * each facility referring down its own list.
   */
  coordinatedAllocation: z.boolean().default(false),
  /** Age in months below which a child is in the infant (poupon) group at entry. */
  infantMaxMonths: z.number().int().min(1).max(36).default(18),
  /**
   * Days a deleted child file stays restorable (by a second person) before the
   * purge destroys its key for good (crypto-shredding, src/records/purge.ts).
   */
  deletedFileRetentionDays: z.number().int().min(1).max(3650).default(30),
  /**
   * When a child file has served its purpose (Law 25: destroy it then), the
   * retention job (src/privacy/retention.ts) deletes it softly; it is then
   * purged like any deleted file, deletedFileRetentionDays later.
   */
  retention: z
    .object({
      /** The age at which a child leaves childcare for school (Quebec: kindergarten at 5). */
      schoolAgeYears: z.number().int().min(3).max(8).default(5),
      /** Months after that age before the file is deleted. */
      afterSchoolAgeMonths: z.number().int().min(0).max(120).default(12),
      /** Months without any change to the file or its registrations before it is deleted. */
      inactiveFileMonths: z.number().int().min(1).max(240).default(36),
      /** Months a parent's account is kept with no child file left (none created, or all purged), counted from its last activity. */
      accountWithoutChildMonths: z.number().int().min(1).max(240).default(24),
    })
    .prefault({}),
});

export type TenantRules = z.infer<typeof tenantRulesSchema>;

export function parseRules(json: unknown): TenantRules {
  return tenantRulesSchema.parse(json ?? {});
}
