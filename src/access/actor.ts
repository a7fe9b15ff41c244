import type { MembershipRole } from '../db/schema.ts';

export interface Membership {
  id: string;
  role: MembershipRole;
  facilityId: string | null;
  expiresAt: Date | null;
  /**
   * A role granted by dual control opens no personal data until then (the
   * cooling-off period, COOLING_OFF_MINUTES in decide.ts), unless the session
   * has broken the glass. Absent or null: no cooling-off.
   */
  coolingUntil?: Date | null;
}

/** Who is acting: resolved once per request from the session, passed to every service. */
export interface Actor {
  accountId: string;
  tenantId: string;
  sessionId: string | null;
  email: string;
  emailVerified: boolean;
  locale: 'fr' | 'en';
  memberships: readonly Membership[];
  /**
   * Signed in with a second factor: the session's last authentication used a
   * TOTP code, a recovery code or a passkey, and the account still has a
   * factor. Absent (an actor built outside a session) counts as false.
   */
  mfa?: boolean;
  /** How and when the session last authenticated; absent outside a session. See src/identity/stepup.ts. */
  auth?: SessionAuth;
  /** The session's break-glass, while it lasts (src/identity/break-glass.ts). */
  breakGlass?: { id: string; until: Date } | null;
  /**
   * The session is acting for a parent who consented (src/assisted): the
   * parent's account, their address (for the banner), and until when. Only
   * the actions whose rules name 'assistingAgent' follow it, for that one
   * family; every audit event of the session carries on_behalf_of.
   */
  assisting?: Assisting | null;
}

export interface Assisting {
  id: string;
  accountId: string;
  email: string;
  until: Date;
}

/** How a session (re)authenticated. A passkey alone is multi-factor: the device, and its PIN or biometrics. */
export type AuthMethod = 'password' | 'totp' | 'recovery' | 'passkey';

export const SECOND_FACTOR_METHODS: readonly AuthMethod[] = ['totp', 'recovery', 'passkey'];

export interface SessionAuth {
  /** The methods of the session's last authentication (sign-in or step-up). */
  methods: readonly AuthMethod[];
  /** When it happened. */
  at: Date;
  /** What the account has enrolled now. */
  totp: boolean;
  passkeys: number;
  /** How many of those passkeys are vouched for (src/identity/factors/mailbox.ts): only these count for privileged actions. */
  vouchedPasskeys: number;
  /** The passkey of the session's last authentication is one of them (still enrolled, vouched for). */
  vouchedPasskey: boolean;
}

/**
 * The privileged roles: never granted by one person (src/identity/grants.ts),
 * and their every privileged action signed with a vouched passkey.
 */
export const PRIVILEGED_ROLES = ['tenant_admin', 'security_officer', 'program_operator', 'facility_director'] as const;
export type PrivilegedRole = (typeof PRIVILEGED_ROLES)[number];

/** Whether the actor holds a privileged role now (cooling off or not). */
export function holdsPrivilegedRole(actor: Pick<Actor, 'memberships'>, now: Date): boolean {
  return actor.memberships.some((m) => (PRIVILEGED_ROLES as readonly string[]).includes(m.role) && (!m.expiresAt || m.expiresAt > now));
}

/**
 * The roles written into each audit event. A session that has broken the
 * glass says so in every event it causes ("break_glass:<id>"), so that its
 * reads can be found and reviewed.
 */
export function rolesOf(actor: Actor | null, now?: Date): string[] {
  if (!actor) return ['anonymous'];
  const roles = actor.memberships.map((m) => (m.facilityId ? `${m.role}:${m.facilityId}` : m.role));
  if (actor.breakGlass && (!now || actor.breakGlass.until > now)) roles.push(`break_glass:${actor.breakGlass.id}`);
  return roles.length ? roles : ['parent'];
}
