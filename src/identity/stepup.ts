import type { FastifyReply, FastifyRequest } from 'fastify';
import { holdsPrivilegedRole, SECOND_FACTOR_METHODS, type Actor } from '../access/actor.ts';
import type { Ctx } from '../context.ts';
import { AppError } from '../errors.ts';
import { safeReturnPath } from '../web/render.tsx';

/**
 * Step-up authentication: sensitive actions (role changes, exports, key
 * operations, deleting a file, changing a child's NIREC, changing one's own
 * factors) need an authentication of the session that is at most a few
 * minutes old. Each session records how and when it last authenticated
 * (sessions.auth_methods, sessions.authenticated_at); the actor carries it.
 *
 * A fresh authentication counts only at the strength the account has: an
 * account with a second factor must have used one (password alone is not
 * enough), and the phishing-resistant variant demands a passkey, whose
 * signature is bound to this site's origin (what a privileged action needs).
 * For a holder of a privileged role, that passkey must also be vouched for
 * (src/identity/factors/mailbox.ts): one enrolled with a relayed password and
 * app code, before the role was granted, does not count.
 */

/** NIST SP 800-63B §4.3.3 re-authentication; the "≤ 5 minutes". */
export const RECENT_AUTH_SECONDS = 300;

export interface StepUpOptions {
  /** Demand a passkey (WebAuthn) authentication. */
  phishingResistant?: boolean;
  /** Where to come back after re-authenticating (a path of this site); defaults to the page that was asked for. */
  returnTo?: string;
}

/** Thrown by requireRecentAuth(); the web layer answers it with the re-authentication page. */
export class StepUpRequired extends AppError {
  constructor(
    readonly phishingResistant: boolean,
    readonly returnTo: string | undefined,
  ) {
    super('forbidden');
  }
}

/** Whether the actor's session authenticated recently enough, at the required strength. */
export function isRecentAuth(actor: Actor | null, now: Date, maxAgeSeconds = RECENT_AUTH_SECONDS, phishingResistant = false): boolean {
  if (!actor?.auth) return false;
  const auth = actor.auth;
  if (now.getTime() - auth.at.getTime() > maxAgeSeconds * 1000) return false;
  if (phishingResistant) return auth.methods.includes('passkey') && auth.passkeys > 0 && (auth.vouchedPasskey || !holdsPrivilegedRole(actor, now));
  const hasSecondFactor = auth.totp || auth.passkeys > 0;
  return !hasSecondFactor || auth.methods.some((m) => SECOND_FACTOR_METHODS.includes(m));
}

/**
 * Refuses (StepUpRequired) unless the session authenticated within
 * maxAgeSeconds, with a second factor if the account has one, and with a
 * passkey when `phishingResistant` is set. Not signed in: signInRequired.
 */
export function requireRecentAuth(ctx: Ctx, maxAgeSeconds = RECENT_AUTH_SECONDS, opts: StepUpOptions = {}): void {
  if (!ctx.actor) throw new AppError('signInRequired');
  if (!isRecentAuth(ctx.actor, ctx.now, maxAgeSeconds, !!opts.phishingResistant)) {
    throw new StepUpRequired(!!opts.phishingResistant, opts.returnTo);
  }
}

/** The phishing-resistant variant: a passkey authentication of at most maxAgeSeconds (for privileged actions). */
export function requirePhishingResistantAuth(ctx: Ctx, maxAgeSeconds = RECENT_AUTH_SECONDS, opts: Omit<StepUpOptions, 'phishingResistant'> = {}): void {
  requireRecentAuth(ctx, maxAgeSeconds, { ...opts, phishingResistant: true });
}

/** The re-authentication page for a return path (validated: this site only). */
export function reauthUrl(returnTo: string | undefined, phishingResistant = false): string {
  const ret = safeReturnPath(returnTo, '/account');
  return `/reauth?return=${encodeURIComponent(ret)}${phishingResistant ? '&level=passkey' : ''}`;
}

/**
 * Where a refused request should come back to: the route's own choice, else
 * the page asked for (GET), else the same-site page the form was posted from.
 */
export function returnPathFor(req: FastifyRequest, err: StepUpRequired): string {
  if (err.returnTo) return safeReturnPath(err.returnTo, '/account');
  if (req.method === 'GET' || req.method === 'HEAD') return safeReturnPath(req.url, '/account');
  const referer = req.headers.referer;
  if (typeof referer === 'string') {
    try {
      const u = new URL(referer);
      if (u.host === req.headers.host) return safeReturnPath(u.pathname + u.search, '/account');
    } catch {
      /* not a URL: ignore */
    }
  }
  return '/account';
}

/** The web layer's answer to StepUpRequired: to the re-authentication page, then back. */
export function stepUpRedirect(req: FastifyRequest, reply: FastifyReply, err: StepUpRequired): FastifyReply {
  return reply.header('cache-control', 'no-store').redirect(reauthUrl(returnPathFor(req, err), err.phishingResistant), 303);
}
