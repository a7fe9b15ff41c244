import { holdsPrivilegedRole, type Actor } from '../../access/actor.ts';
import type { AuditEventInput } from '../../audit/events.ts';
import { appendAudit, appendAuditAlone } from '../../audit/log.ts';
import type { Ctx, Deps } from '../../context.ts';
import { originOf } from '../../context.ts';
import type { Trx } from '../../db/connection.ts';
import { inTenant } from '../../db/tenant.ts';
import { AppError } from '../../errors.ts';
import { enqueueMail } from '../../mail/outbox.ts';
import { originFields } from '../../tenants/service.ts';
import { messages } from '../../web/i18n/index.ts';
import { describeDevice } from '../sessions.ts';
import { THROTTLE } from '../throttle.ts';
import { hashToken, isTokenShaped, newToken } from '../tokens.ts';

/**
 * A privileged holder's passkeys, and the mailbox behind them.
 *
 * Every privileged action asks for a passkey. A holder without one yet would
 * enrol it after a recent password and authenticator-app sign-in — both of
 * which a phishing proxy relays in real time, so whoever phished them would
 * enrol their own passkey and hold the phishing-resistant factor from then
 * on. The same goes for a passkey enrolled *before* the role was granted,
 * when nothing more than a password and a code was asked. So a passkey counts
 * for privileged actions only once it is vouched for (webauthn_credentials.
 * vouched_at, migration 0049):
 *
 * - enrolled, or used to re-authenticate, by a session that proved the
 *   account's mailbox in the last MAILBOX_PROOF_MS: it asked for a link
 *   (e-mailed to the account, valid MAILBOX_LINK_MS, only the latest good,
 *   single use, bound to the hash of the session's token) and followed it
 *   from that very session — a link followed from anywhere else (the
 *   holder's own browser, when the intruder asked) is refused and changes
 *   nothing;
 * - or enrolled by a session whose last authentication used a vouched passkey.
 *
 * A holder of a privileged role with no vouched passkey proves the mailbox
 * before enrolling one; one who has some must use them to add another.
 * Accounts without a privileged role enrol as they like; their passkeys are
 * vouched for when their holder, once privileged, confirms them so.
 */
export const MAILBOX_LINK_MS = 15 * 60_000;
export const MAILBOX_PROOF_MS = 15 * 60_000;

/** Thrown when the session has not proved the mailbox; the routes send the person back to account security. */
export class MailboxProofRequired extends AppError {
  constructor() {
    super('forbidden');
  }
}

export type MailboxProof = 'notNeeded' | 'needed' | 'proven';

/** Whether the actor's session followed a mailed link in the last MAILBOX_PROOF_MS. */
export async function mailboxProvenRecently(trx: Trx, actor: Actor, now: Date): Promise<boolean> {
  if (!actor.sessionId) return false;
  const s = await trx.selectFrom('sessions').select('mailbox_proven_at').where('id', '=', actor.sessionId).where('revoked_at', 'is', null).executeTakeFirst();
  const at = s?.mailbox_proven_at;
  return !!at && at.getTime() <= now.getTime() && now.getTime() - at.getTime() <= MAILBOX_PROOF_MS;
}

/**
 * Whether this session must prove the mailbox before enrolling a passkey, or
 * vouching for one it has, and whether it has (in the last MAILBOX_PROOF_MS):
 * a privileged holder without a vouched passkey must.
 */
export async function mailboxProofState(trx: Trx, actor: Actor, now: Date): Promise<MailboxProof> {
  if (!holdsPrivilegedRole(actor, now)) return 'notNeeded';
  const vouched = await trx
    .selectFrom('webauthn_credentials')
    .select('id')
    .where('account_id', '=', actor.accountId)
    .where('revoked_at', 'is', null)
    .where('vouched_at', 'is not', null)
    .limit(1)
    .execute();
  if (vouched.length) return 'notNeeded';
  return (await mailboxProvenRecently(trx, actor, now)) ? 'proven' : 'needed';
}

function event(ctx: Ctx, action: 'identity.passkeyLink.request' | 'identity.passkeyLink.use' | 'identity.passkey.register' | 'identity.passkey.revoke' | 'identity.password.change', outcome: AuditEventInput['outcome'], targetIds: string[], details: Record<string, string | number | boolean | null>): AuditEventInput {
  return { action, outcome, ...originFields(originOf(ctx)), targetType: 'account', targetIds, details };
}

const STEP_ACTION = { options: 'identity.passkey.register', register: 'identity.passkey.register', revoke: 'identity.passkey.revoke', password: 'identity.password.change' } as const;

/**
 * Refuses (MailboxProofRequired) a step of a session that must prove the
 * mailbox and has not; the refusal is an audit event of its own. Enrolling a
 * passkey (`options`, `register`): a privileged holder without a vouched
 * passkey. Removing one or changing the password (`revoke`, `password`): such
 * a holder who has passkeys, none vouched for — for whom a password and an app
 * code would otherwise do, where a passkey used to be asked, and let a phisher
 * lock the holder out.
 */
export async function requireMailboxProof(deps: Deps, ctx: Ctx, step: keyof typeof STEP_ACTION): Promise<void> {
  const actor = ctx.actor;
  if (!actor) throw new AppError('signInRequired');
  if ((step === 'revoke' || step === 'password') && !((actor.auth?.passkeys ?? 0) > 0 && (actor.auth?.vouchedPasskeys ?? 0) === 0)) return;
  const state = await inTenant(deps.db.db, ctx.tenant.id, (trx) => mailboxProofState(trx, actor, ctx.now));
  if (state !== 'needed') return;
  await appendAuditAlone(deps.db.db, ctx.tenant.id, event(ctx, STEP_ACTION[step], 'denied', [actor.accountId], { reason: 'mailbox_unproven', step }), ctx.now);
  throw new MailboxProofRequired();
}

export type LinkRequest = { ok: true } | { ok: false; reason: 'notNeeded' } | { ok: false; reason: 'throttled'; retryAfterSeconds: number };

/**
 * E-mails the signed-in holder a link that proves the mailbox for this
 * session (`sessionTokenHash`); older links stop working. `returnTo`, a path
 * of this site already validated, is where following it leads back to.
 */
export async function requestPasskeyLink(deps: Deps, ctx: Ctx, sessionTokenHash: Buffer, returnTo: string | null = null): Promise<LinkRequest> {
  const actor = ctx.actor;
  if (!actor?.sessionId) throw new AppError('signInRequired');
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    if ((await mailboxProofState(trx, actor, ctx.now)) === 'notNeeded') {
      await appendAudit(trx, ctx.tenant.id, event(ctx, 'identity.passkeyLink.request', 'denied', [actor.accountId], { reason: 'not_needed' }), ctx.now);
      return { ok: false, reason: 'notNeeded' } as const;
    }
    // Each link is an e-mail: an account gets so many a window, counted from the links themselves.
    const since = new Date(ctx.now.getTime() - THROTTLE.passkeyLinksWindowMs);
    const recent = await trx.selectFrom('passkey_enrolment_links').select('created_at').where('account_id', '=', actor.accountId).where('created_at', '>', since).orderBy('created_at').execute();
    if (recent.length >= THROTTLE.passkeyLinksPerAccount) {
      const retryAfterSeconds = Math.max(1, Math.ceil((recent[0]!.created_at.getTime() + THROTTLE.passkeyLinksWindowMs - ctx.now.getTime()) / 1000));
      await appendAudit(trx, ctx.tenant.id, event(ctx, 'identity.passkeyLink.request', 'denied', [actor.accountId], { reason: 'throttled', recent: recent.length }), ctx.now);
      return { ok: false, reason: 'throttled', retryAfterSeconds } as const;
    }
    // Only the latest link is good.
    await trx.updateTable('passkey_enrolment_links').set({ used_at: ctx.now }).where('account_id', '=', actor.accountId).where('used_at', 'is', null).execute();
    const { token, hash } = newToken();
    const row = await trx
      .insertInto('passkey_enrolment_links')
      .values({ tenant_id: ctx.tenant.id, account_id: actor.accountId, session_id: actor.sessionId!, session_token_hash: sessionTokenHash, token_hash: hash, created_at: ctx.now, expires_at: new Date(ctx.now.getTime() + MAILBOX_LINK_MS), return_to: returnTo })
      .returning('id')
      .executeTakeFirstOrThrow();
    const m = messages(actor.locale);
    const device = `${describeDevice(ctx.userAgent) ?? m.security.unknownDevice}${ctx.ip ? ` (${ctx.ip})` : ''}`;
    await enqueueMail(
      trx,
      ctx.tenant.id,
      {
        to: actor.email,
        locale: actor.locale,
        template: 'passkey_link',
        subject: m.factors.mailbox.mailSubject,
        body: m.factors.mailbox.mailBody(`${ctx.baseUrl}/account/security/passkey-link?token=${token}`, MAILBOX_LINK_MS / 60_000, device, `${ctx.baseUrl}/account/security`),
      },
      ctx.now,
    );
    await appendAudit(trx, ctx.tenant.id, { ...event(ctx, 'identity.passkeyLink.request', 'success', [actor.accountId, row.id], { minutes: MAILBOX_LINK_MS / 60_000 }), targetType: 'passkey_link' }, ctx.now);
    return { ok: true } as const;
  });
}

export type LinkRefusal = 'invalid' | 'expired' | 'used' | 'otherSession';
export type LinkUse = { ok: true; returnTo: string | null } | { ok: false; reason: LinkRefusal };

/**
 * Following a link: from the session that asked for it (same account, same
 * session token), before it expires, unused and the account's latest, it
 * marks the session as having proved the mailbox now. Anything else is
 * refused, recorded, and changes nothing — so a mail scanner's visit, or the
 * holder opening a link an intruder asked for, leaves the intruder nothing.
 */
export async function usePasskeyLink(deps: Deps, ctx: Ctx, token: unknown, sessionToken: string | null): Promise<LinkUse> {
  const refuse = async (trx: Trx, reason: string, targetIds: string[], answer: LinkRefusal) => {
    await appendAudit(trx, ctx.tenant.id, { ...event(ctx, 'identity.passkeyLink.use', 'failure', targetIds, { reason }), targetType: targetIds.length ? 'passkey_link' : 'account' }, ctx.now);
    return { ok: false, reason: answer } as const;
  };
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    if (!isTokenShaped(token)) return refuse(trx, 'malformed', [], 'invalid');
    const link = await trx.selectFrom('passkey_enrolment_links').selectAll().where('token_hash', '=', hashToken(token)).executeTakeFirst();
    if (!link) return refuse(trx, 'unknown', [], 'invalid');
    const ids = [link.account_id, link.id];
    if (link.used_at) {
      // A newer link marks the older ones used at its own creation.
      const newer = await trx.selectFrom('passkey_enrolment_links').select('id').where('account_id', '=', link.account_id).where('id', '<>', link.id).where('created_at', '=', link.used_at).limit(1).execute();
      return refuse(trx, newer.length ? 'replaced' : 'used', ids, 'used');
    }
    if (link.expires_at.getTime() <= ctx.now.getTime()) return refuse(trx, 'expired', ids, 'expired');
    const actor = ctx.actor;
    if (!actor || !sessionToken) return refuse(trx, 'signed_out', ids, 'otherSession');
    if (actor.accountId !== link.account_id) return refuse(trx, 'other_account', ids, 'otherSession');
    if (actor.sessionId !== link.session_id || !hashToken(sessionToken).equals(link.session_token_hash)) return refuse(trx, 'other_session', ids, 'otherSession');
    const claimed = await trx.updateTable('passkey_enrolment_links').set({ used_at: ctx.now }).where('id', '=', link.id).where('used_at', 'is', null).returning('id').executeTakeFirst();
    if (!claimed) return refuse(trx, 'used', ids, 'used');
    await trx.updateTable('sessions').set({ mailbox_proven_at: ctx.now }).where('id', '=', link.session_id).where('revoked_at', 'is', null).execute();
    await appendAudit(trx, ctx.tenant.id, { ...event(ctx, 'identity.passkeyLink.use', 'success', ids, { minutes: MAILBOX_PROOF_MS / 60_000 }), targetType: 'passkey_link' }, ctx.now);
    return { ok: true, returnTo: link.return_to } as const;
  });
}
