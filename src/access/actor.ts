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
}

export function rolesOf(actor: Actor | null): string[] {
  if (!actor) return ['anonymous'];
  const roles = actor.memberships.map((m) => (m.facilityId ? `${m.role}:${m.facilityId}` : m.role));
  return roles.length ? roles : ['parent'];
}
