import type { MembershipRole } from '../db/schema.ts';

/**
 * Every action Guichet performs, with who may perform it. This table is the
 * whole authorization policy: decide() reads it for one resource, and
 * sqlFilter() turns the same rules into a WHERE clause for lists, so a list
 * can never show what a single read would refuse.
 */
export type Rule =
  /** Anyone, signed in or not (public information). */
  | { readonly who: 'anyone' }
  /** Any signed-in account whose e-mail address is verified. */
  | { readonly who: 'verifiedAccount' }
  /** The account that owns the family the resource belongs to. */
  | { readonly who: 'familyOwner' }
  /**
   * An agent acting for the family that owns the resource, in an assisted
   * session the parent consented to (src/assisted): that family only, while
   * the session lasts, and while the agent still holds an agent role.
   */
  | { readonly who: 'assistingAgent' }
  /** A current member with this role, tenant-wide or for the resource's facility. */
  | { readonly who: 'role'; readonly role: MembershipRole; readonly scope: 'tenant' | 'facility' };

const facilityStaff = [
  { who: 'role', role: 'facility_staff', scope: 'facility' },
  { who: 'role', role: 'facility_director', scope: 'facility' },
] as const satisfies readonly Rule[];

/** Who may act for a parent who phones or comes in (assisted mode). */
export const AGENT_ROLES = ['facility_staff', 'facility_director', 'program_operator'] as const satisfies readonly MembershipRole[];

const agents = AGENT_ROLES.map((role) => ({ who: 'role', role, scope: 'tenant' }) as const) satisfies readonly Rule[];

const familyOrAgent = [{ who: 'familyOwner' }, { who: 'assistingAgent' }] as const satisfies readonly Rule[];

const tenantAdmin = [{ who: 'role', role: 'tenant_admin', scope: 'tenant' }] as const satisfies readonly Rule[];

export const ACTIONS = {
  'directory.facility.read': [{ who: 'anyone' }],
  'waitlist.childFile.create': [{ who: 'verifiedAccount' }, { who: 'assistingAgent' }],
  'waitlist.childFile.read': familyOrAgent,
  'waitlist.childFile.list': familyOrAgent,
  'waitlist.childFile.update': familyOrAgent,
  'waitlist.application.create': familyOrAgent,
  'waitlist.application.withdraw': familyOrAgent,
  'family.profile.read': [{ who: 'familyOwner' }],
  'family.profile.update': [{ who: 'familyOwner' }],
  'waitlist.candidates.list': facilityStaff,
  /** A family reads why its child got the place it got in an allocation round. */
  'waitlist.allocation.read': [{ who: 'familyOwner' }],
  'staff.facility.open': facilityStaff,
  'identity.invitation.create': tenantAdmin,
  'identity.invitation.list': tenantAdmin,
  'identity.sessions.end': tenantAdmin,
  /** Ask a privileged role for someone else; a different administrator must approve. */
  'identity.grant.request': tenantAdmin,
  /** Ask a privileged role for oneself: any current member of the tenant's staff. */
  'identity.grant.requestForSelf': [
    { who: 'role', role: 'facility_staff', scope: 'tenant' },
    { who: 'role', role: 'facility_director', scope: 'tenant' },
    { who: 'role', role: 'program_operator', scope: 'tenant' },
    { who: 'role', role: 'security_officer', scope: 'tenant' },
  ],
  'identity.grant.approve': tenantAdmin,
  'identity.grant.list': tenantAdmin,
  'identity.grant.revoke': tenantAdmin,
  'identity.staff.list': tenantAdmin,
  /** Ask for the second factors of someone who lost them all to be removed; a different administrator approves. */
  'identity.factorReset.request': tenantAdmin,
  'identity.factorReset.approve': tenantAdmin,
  'identity.factorReset.list': tenantAdmin,
  /** The security console's view of the audit log: latest signed head, witness agreement. */
  'audit.head.read': [
    { who: 'role', role: 'security_officer', scope: 'tenant' },
    { who: 'role', role: 'tenant_admin', scope: 'tenant' },
  ],
  /** Delete a child file softly (restorable within the tenant's retention window): the parent, or the programme. */
  'waitlist.childFile.delete': [{ who: 'familyOwner' }, { who: 'role', role: 'program_operator', scope: 'tenant' }, { who: 'role', role: 'tenant_admin', scope: 'tenant' }],
  /** Ask for a deleted file back; a second person decides. */
  'waitlist.childFile.restore.request': [{ who: 'familyOwner' }, { who: 'role', role: 'program_operator', scope: 'tenant' }, { who: 'role', role: 'tenant_admin', scope: 'tenant' }],
  /** Decide a restore request: an administrator who is not the one who asked (the gateway and the database check that too). */
  'waitlist.childFile.restore.approve': [{ who: 'role', role: 'tenant_admin', scope: 'tenant' }],
  /** Find a child's files by NIREC (blind index), deleted ones included. */
  'waitlist.childFile.lookupByNirec': [{ who: 'role', role: 'tenant_admin', scope: 'tenant' }, { who: 'role', role: 'program_operator', scope: 'tenant' }],
  /** Read every version of a child file. */
  'waitlist.childFile.history': [{ who: 'role', role: 'tenant_admin', scope: 'tenant' }, { who: 'role', role: 'program_operator', scope: 'tenant' }],
  /** Relying parties of the tenant's OpenID Connect provider (src/oidc): register, list, disable. */
  'oidc.client.create': tenantAdmin,
  'oidc.client.list': tenantAdmin,
  /** Edit a client (name, addresses, scopes, logo) or rotate its secret; widening to personal claims waits for approval like a new client. */
  'oidc.client.update': tenantAdmin,
  /** A client that may receive personal claims: a second administrator (not the requester) approves it. */
  'oidc.client.approve': tenantAdmin,
  /** Access rights as data (library patron, resident): the tenant manages them. */
  'oidc.entitlement.manage': tenantAdmin,
  /** A person's own entitlements and the services they signed in to, on their account page. */
  'oidc.entitlement.readOwn': [{ who: 'verifiedAccount' }],
  /** A parent reads who consulted their family's files (from the audit log). */
  'privacy.accessLog.read': [{ who: 'familyOwner' }],
  /** A parent downloads all of the family's data (Law 25, portability). */
  'privacy.export': [{ who: 'familyOwner' }],
  /** A parent asks for the family's data to be deleted: applications withdrawn, files deleted softly, then purged by the retention rules. */
  'privacy.deletion.request': [{ who: 'familyOwner' }],
  /** A breach impact report: who and which fields an actor, session or address reached in a window (step-up required too). */
  'privacy.breachReport.create': [{ who: 'role', role: 'security_officer', scope: 'tenant' }],
  /** The incident register (Law 25: kept five years). */
  'incident.read': [{ who: 'role', role: 'security_officer', scope: 'tenant' }],
  'incident.write': [{ who: 'role', role: 'security_officer', scope: 'tenant' }],
  /** Queue a breach report's notices to the families, from an incident entry (step-up required too). */
  'privacy.breachNotices.send': [{ who: 'role', role: 'security_officer', scope: 'tenant' }],
  /** What the retention job will purge next. */
  'retention.preview': [{ who: 'role', role: 'program_operator', scope: 'tenant' }, { who: 'role', role: 'tenant_admin', scope: 'tenant' }],
  /** The security console's alerts: list, read, acknowledge, assign, annotate. */
  'detection.alert.list': [{ who: 'role', role: 'security_officer', scope: 'tenant' }],
  'detection.alert.update': [{ who: 'role', role: 'security_officer', scope: 'tenant' }],
  /** Change the tenant's detection rules; declare a batch that lets an account read beyond the daily volume. */
  'detection.rules.update': [{ who: 'role', role: 'security_officer', scope: 'tenant' }],
  'detection.batch.declare': [{ who: 'role', role: 'security_officer', scope: 'tenant' }],
  /** Where the tenant's alerts are sent as signed webhooks. */
  'detection.webhook.update': [{ who: 'role', role: 'security_officer', scope: 'tenant' }],
  /** Mark a child file as protected (a public figure, a staff member's child), or remove the mark. */
  'records.childFile.protect': [{ who: 'role', role: 'program_operator', scope: 'tenant' }, { who: 'role', role: 'tenant_admin', scope: 'tenant' }],
  /** The daily review of protected files opened, with the reasons given. */
  'detection.protected.review': [{ who: 'role', role: 'security_officer', scope: 'tenant' }],
  /** Raise the tenant's lockdown level: one security officer. */
  'detection.lockdown.raise': [{ who: 'role', role: 'security_officer', scope: 'tenant' }],
  /** Ask to lower it, or approve another officer's request: two different security officers. */
  'detection.lockdown.lower': [{ who: 'role', role: 'security_officer', scope: 'tenant' }],
  /** A facility's director declares its priorities (kinds from the tenant's rules), or a programme administrator for it. */
  'waitlist.facility.priorities.update': [{ who: 'role', role: 'facility_director', scope: 'facility' }, { who: 'role', role: 'tenant_admin', scope: 'tenant' }],
  /** A parent confirms the child's file is still wanted (periodic confirmation; an inactive file comes back). */
  'waitlist.childFile.confirm': [{ who: 'familyOwner' }],
  /** The programme's statistics: aggregates only, small counts suppressed (src/records/statistics.ts). */
  'statistics.read': [{ who: 'role', role: 'program_operator', scope: 'tenant' }, { who: 'role', role: 'tenant_admin', scope: 'tenant' }],
  /** The programme's coordinated allocation: whether it runs, and its last rounds (counts and hashes, no family). */
  'allocation.settings.read': [{ who: 'role', role: 'program_operator', scope: 'tenant' }, { who: 'role', role: 'tenant_admin', scope: 'tenant' }],
  /** Turn the programme's coordinated allocation on or off: how every child is offered a place changes, so an administrator only. */
  'allocation.settings.update': [{ who: 'role', role: 'tenant_admin', scope: 'tenant' }],
  /** Ask a parent's consent (a code by e-mail) and act for them for a while (src/assisted). */
  'assisted.session.start': agents,
  /** A facility's places and open vacancies per age group (no personal data). */
  'waitlist.places.read': facilityStaff,
  /** Declare the vacancies open now: the referral refers the next children at once. */
  'waitlist.vacancy.declare': facilityStaff,
  /** A facility's referrals: references, and the identity of the children whose parents accepted. */
  'waitlist.referral.list': facilityStaff,
  /** Confirm that care has started for an accepted offer: the facility's director only. */
  'waitlist.offer.confirmStart': [{ who: 'role', role: 'facility_director', scope: 'facility' }],
  /** A parent reads the offers made for their children (an agent helping them too), and accepts or refuses one: the
   * parent alone, since a refusal may withdraw every registration of the child (rules.offers.beyondRefusals). */
  'waitlist.offer.read': familyOrAgent,
  'waitlist.offer.answer': [{ who: 'familyOwner' }],
  /** Keys of the facility API: created (with a fresh authentication) by the facility's director. */
  'api.key.manage': [{ who: 'role', role: 'facility_director', scope: 'facility' }],
  /** …listed and revoked by the director, and by the tenant's administrators and security officers (containment). */
  'api.key.revoke': [
    { who: 'role', role: 'facility_director', scope: 'facility' },
    { who: 'role', role: 'tenant_admin', scope: 'tenant' },
    { who: 'role', role: 'security_officer', scope: 'tenant' },
  ],
} as const satisfies Record<string, readonly Rule[]>;

export type Action = keyof typeof ACTIONS;

/** What a rule is checked against. */
export type Resource =
  | { readonly type: 'tenant' }
  | { readonly type: 'facility'; readonly facilityId: string }
  | { readonly type: 'family'; readonly ownerAccountId: string };

/**
 * Actions that open no personal data. Every other action does — new actions
 * included, until they are listed here — and an actor who holds any current
 * membership (facility staff, directors, administrators) may perform those
 * only when signed in with a second factor (Actor.mfa), whichever rule would
 * allow it: a staff member's password alone opens nobody's data, not even
 * their own family's. decide() and sqlFilter() both apply it.
 */
export const OPENS_NO_PERSONAL_DATA: ReadonlySet<Action> = new Set<Action>(['directory.facility.read', 'staff.facility.open', 'waitlist.places.read']);
