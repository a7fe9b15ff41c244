import type { MembershipRole } from '../db/schema.ts';

export interface Membership {
  id: string;
  role: MembershipRole;
  facilityId: string | null;
  expiresAt: Date | null;
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
}

export function rolesOf(actor: Actor | null): string[] {
  if (!actor) return ['anonymous'];
  const roles = actor.memberships.map((m) => (m.facilityId ? `${m.role}:${m.facilityId}` : m.role));
  return roles.length ? roles : ['parent'];
}
