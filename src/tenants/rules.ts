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
  /** Age in months below which a child is in the infant (poupon) group at entry. */
  infantMaxMonths: z.number().int().min(1).max(36).default(18),
  /**
   * Days a deleted child file stays restorable (by a second person) before the
   * purge destroys its key for good (crypto-shredding, src/records/purge.ts).
   */
  deletedFileRetentionDays: z.number().int().min(1).max(3650).default(30),
});

export type TenantRules = z.infer<typeof tenantRulesSchema>;

export function parseRules(json: unknown): TenantRules {
  return tenantRulesSchema.parse(json ?? {});
}
