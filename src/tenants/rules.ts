import { z } from 'zod';

/**
 * The kinds of need a facility may give priority to (Quebec 2025). Those
 * marked in PRIORITY_DETAIL name what they are about (which institution,
 * employer or municipality), given by the facility when it declares them.
 */
export const PRIORITY_KINDS = ['specialNeeds', 'socioEconomic', 'studentAt', 'employeeOf', 'residentOf', 'indigenous'] as const;
export type PriorityKind = (typeof PRIORITY_KINDS)[number];
export const PRIORITY_DETAIL: Record<PriorityKind, boolean> = { specialNeeds: false, socioEconomic: false, studentAt: true, employeeOf: true, residentOf: true, indigenous: false };

/**
 * A tenant's waitlist rules, stored as data (tenants.rules). Missing keys take
 * the Quebec 2025 defaults, so the default tenant needs no configuration.
 */
export const tenantRulesSchema = z.object({
  /** Quebec 2025: registration after birth or adoption only. */
  prebirthRegistration: z.boolean().default(false),
  /**
   * How a facility's candidates are ordered (src/waitlist/ranking.ts).
   * 'categories' is Quebec 2025: the five categories, then seniority counted
   * from the desired entry date. 'points' adds weighted points; ties go to
   * the earlier seniority date, then the earlier application, then the file
   * reference, so the order is total and stable. The string 'quebec-2025'
   * (the rules' first form) still reads as the categories.
   */
  ordering: z
    .preprocess(
      (v) => (typeof v === 'string' ? { kind: v === 'points' ? 'points' : 'categories' } : v),
      z.discriminatedUnion('kind', [
        z.object({ kind: z.literal('categories') }),
        z.object({
          kind: z.literal('points'),
          weights: z
            .object({
              siblingAttending: z.number().int().min(0).max(1000).default(30),
              parentIsStaff: z.number().int().min(0).max(1000).default(20),
              notInSubsidisedCare: z.number().int().min(0).max(1000).default(10),
              /** For each priority the facility declared that the child meets (while the facility is under its cap). */
              eachPriority: z.number().int().min(0).max(1000).default(15),
              /** For each full month waited since the seniority date. */
              perMonthWaited: z.number().int().min(0).max(1000).default(1),
            })
            .prefault({}),
        }),
      ]),
    )
    .default({ kind: 'categories' }),
  /**
   * The priorities a facility may declare (Quebec 2025: at most six kinds of
   * need, applied on at most half of its admissions over the last year).
   */
  priorities: z
    .object({
      kinds: z.array(z.enum(PRIORITY_KINDS)).max(PRIORITY_KINDS.length).default([...PRIORITY_KINDS]),
      maxKinds: z.number().int().min(0).max(PRIORITY_KINDS.length).default(6),
      /** The share of a facility's admissions that may come by priority. */
      capShare: z.number().min(0).max(1).default(0.5),
      /** Over how many months the admissions are counted. */
      windowMonths: z.number().int().min(1).max(60).default(12),
    })
    .prefault({}),
  /**
   * How often a parent confirms the file is still wanted. Unconfirmed after
   * the grace period, the file becomes inactive: out of every ranking and
   * referral until the parent confirms again.
   */
  confirmation: z
    .object({
      enabled: z.boolean().default(true),
      everyMonths: z.number().int().min(1).max(60).default(6),
      /** Reminders by e-mail, this many days before the file is due. */
      reminderDaysBefore: z.array(z.number().int().min(0).max(365)).max(5).default([30, 7]),
      /** Days after the due date before an unconfirmed file becomes inactive. */
      graceDays: z.number().int().min(0).max(365).default(30),
      /** Whether a file confirmed after becoming inactive keeps its seniority; if not, seniority counts from the day it comes back. */
      reactivationKeepsSeniority: z.boolean().default(false),
    })
    .prefault({}),
  /** Who may see a candidate's identity before a referral, per kind of facility (Quebec 2025: nobody at CPE and subsidised garderies). */
  identitiesBeforeReferral: z
    .object({
      subsidised: z.enum(['nobody', 'director', 'staff']).default('nobody'),
      nonSubsidised: z.enum(['nobody', 'director', 'staff']).default('nobody'),
    })
    .prefault({}),
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
      /** Count only business days: Monday to Friday, less holidays (the deadline keeps the offer's time of day). */
      businessDays: z.boolean().default(true),
      /** The holidays a business day is not: Quebec's statutory holidays (src/waitlist/dates.ts), or none. */
      holidays: z.enum(['quebec', 'none']).default('quebec'),
      /** Further days that do not count (a municipality's own holidays), as YYYY-MM-DD. */
      closedDays: z.array(z.string().regex(/^\d{4}-\d{2}-\d{2}$/)).max(100).default([]),
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
}).loose();

export type TenantRules = z.infer<typeof tenantRulesSchema>;

export function parseRules(json: unknown): TenantRules {
  return tenantRulesSchema.parse(json ?? {});
}
