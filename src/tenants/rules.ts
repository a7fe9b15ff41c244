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
  /**
   * Offers (src/records/offers.ts): how long a parent has to answer, how many
   * refusals a child may make, and what an acceptance does to the child's
   * other registrations. Quebec (no published figure): 5 business days — a
   * working week to visit the facility and arrange care, while the place
   * stays empty no longer than a week; refusals unlimited (the 2025 portal
   * publishes no limit, and a family may keep waiting for a place nearer
   * home); the other registrations are kept (the 2025 order itself ranks a
   * child already in a subsidised place lower, category 5, rather than
   * removing it). A tenant like Ottawa: 3 business days and 3 refusals.
   */
  offers: z
    .object({
      deadlineDays: z.number().int().min(1).max(60).default(5),
      /** Count only Monday to Friday (the deadline keeps the offer's time of day). */
      businessDays: z.boolean().default(true),
      /** Refusals a child may make; null: no limit. */
      refusalsAllowed: z.number().int().min(0).max(100).nullable().default(null),
      /** Whether an offer left to expire counts as a refusal. */
      expiryCountsAsRefusal: z.boolean().default(true),
      /** Beyond refusalsAllowed: the child's active registrations are withdrawn (the parent registers again), or kept (nothing happens). */
      beyondRefusals: z.enum(['withdrawApplications', 'keep']).default('withdrawApplications'),
      /** On acceptance, the child's other active registrations: withdrawn (one place per child), or kept (the child waits for a place they prefer). */
      otherApplicationsOnAcceptance: z.enum(['withdraw', 'keep']).default('keep'),
    })
    .prefault({}),
});

export type TenantRules = z.infer<typeof tenantRulesSchema>;

export function parseRules(json: unknown): TenantRules {
  return tenantRulesSchema.parse(json ?? {});
}
