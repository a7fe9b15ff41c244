import type { PublicKeyCredentialCreationOptionsJSON, PublicKeyCredentialRequestOptionsJSON } from '@simplewebauthn/server';
import { holdsPrivilegedRole, type Actor, type AuthMethod } from '../../access/actor.ts';
import type { AuditAction, AuditEventInput, AuditOutcome } from '../../audit/events.ts';
import { appendAudit, appendAuditAlone } from '../../audit/log.ts';
import type { Ctx, Deps } from '../../context.ts';
import { originOf } from '../../context.ts';
import type { Trx } from '../../db/connection.ts';
import { inTenant } from '../../db/tenant.ts';
import { AppError } from '../../errors.ts';
import { originFields } from '../../tenants/service.ts';
import { enqueueMail } from '../../mail/outbox.ts';
import { formatDateTime, messages } from '../../web/i18n/index.ts';
import { describeDevice } from '../sessions.ts';
import { hashPassword, verifyPassword } from '../passwords.ts';
import { createSession, loadMemberships, type SessionResult } from '../service.ts';
import { mailboxProofState, mailboxProvenRecently, requireMailboxProof, type MailboxProof } from './mailbox.ts';
import { requirePhishingResistantAuth, requireRecentAuth } from '../stepup.ts';
import { newToken } from '../tokens.ts';
import { normaliseRecoveryCode } from './recovery.ts';
import * as store from './store.ts';
import { checkTotp, decryptTotpSecret, newTotpSecret, normaliseTotpCode, otpauthUri } from './totp.ts';
import {
  accountIdOfUserHandle,
  authenticationOptions,
  challengeOf,
  newChallenge,
  parseAuthenticationResponse,
  parseRegistrationResponse,
  registrationOptions,
  verifyAuthentication,
  verifyRegistration,
  type RelyingParty,
} from './webauthn.ts';

/**
 * Second factors: enrolment and removal (by the signed-in person, after a
 * fresh authentication), the second step of a sign-in, passkey sign-in, and
 * re-authentication (step-up). Every enrolment, removal, use and failure is
 * an audit event; failures are written even though nothing else changes.
 */

type Details = Record<string, string | number | boolean | null>;

function event(ctx: Ctx, action: AuditAction, outcome: AuditOutcome, o: { accountId: string; asActor?: boolean; targetType?: string; targetIds?: string[]; details?: Details }): AuditEventInput {
  return {
    action,
    outcome,
    ...originFields(originOf(ctx)),
    ...(o.asActor ? { actorAccountId: o.accountId } : {}),
    targetType: o.targetType ?? 'account',
    targetIds: o.targetIds ?? [o.accountId],
    details: o.details ?? {},
  };
}

function audit(trx: Trx, ctx: Ctx, action: AuditAction, outcome: AuditOutcome, o: Parameters<typeof event>[3]) {
  return appendAudit(trx, ctx.tenant.id, event(ctx, action, outcome, o), ctx.now);
}

function signedIn(ctx: Ctx): Actor {
  if (!ctx.actor) throw new AppError('signInRequired');
  return ctx.actor;
}

function keys(deps: Deps) {
  return deps.keys;
}

/** Adds a method the session has just proved (an enrolment confirmed with the new factor); a new passkey becomes the session's passkey. */
async function addSessionMethod(trx: Trx, actor: Actor, method: AuthMethod, passkeyId?: string): Promise<void> {
  if (!actor.sessionId) return;
  const methods = [...new Set([...(actor.auth?.methods ?? ['password']), method])];
  await trx
    .updateTable('sessions')
    .set(passkeyId ? { auth_methods: methods, auth_passkey_id: passkeyId } : { auth_methods: methods })
    .where('id', '=', actor.sessionId)
    .where('revoked_at', 'is', null)
    .execute();
}

/** A factor was removed: every other session of the account ends (a thief's session with it). */
async function endOtherSessions(trx: Trx, actor: Actor, now: Date): Promise<void> {
  let q = trx.updateTable('sessions').set({ revoked_at: now }).where('account_id', '=', actor.accountId).where('revoked_at', 'is', null);
  if (actor.sessionId) q = q.where('id', '<>', actor.sessionId);
  await q.execute();
}

/** No factor left: the recovery codes, which only stand in for a factor, go too. */
async function dropRecoveryIfNoFactor(trx: Trx, ctx: Ctx, accountId: string): Promise<void> {
  const e = await store.enrolledFactors(trx, accountId);
  if (!store.hasSecondFactor(e) && e.recoveryLeft > 0) await store.revokeRecoveryCodes(trx, accountId, ctx.now);
}

/** The first factor comes with recovery codes (returned to be shown once); later ones do not change them. */
async function recoveryCodesIfNone(deps: Deps, trx: Trx, ctx: Ctx, accountId: string): Promise<string[] | null> {
  const e = await store.enrolledFactors(trx, accountId);
  if (e.recoveryLeft > 0) return null;
  const codes = await store.replaceRecoveryCodes(trx, keys(deps), ctx.tenant.id, accountId, ctx.now);
  await audit(trx, ctx, 'identity.recovery.generate', 'success', { accountId, details: { count: codes.length, reason: 'first_factor' } });
  return codes;
}


type FactorChange = 'totpAdded' | 'totpRemoved' | 'passkeyAdded' | 'passkeyRemoved' | 'recoveryRegenerated';

/**
 * Every change to a person's factors is e-mailed to them, in the same
 * transaction: someone who has taken over a session and adds their own
 * authenticator (or removes the owner's) is announced to the owner at once.
 */
async function notifyFactorChange(trx: Trx, ctx: Ctx, actor: Actor, change: FactorChange, name?: string): Promise<void> {
  const m = messages(actor.locale);
  const device = describeDevice(ctx.userAgent) ?? m.security.unknownDevice;
  await enqueueMail(
    trx,
    ctx.tenant.id,
    {
      to: actor.email,
      locale: actor.locale,
      template: 'factor_changed',
      subject: m.factors.changeMail.subject,
      body: m.factors.changeMail.body(m.factors.changeMail.what[change](name ?? ''), formatDateTime(actor.locale, ctx.now), `${device}${ctx.ip ? ` (${ctx.ip})` : ''}`, `${ctx.baseUrl}/account/security`),
    },
    ctx.now,
  );
}

/* ------------------------------------------------------------ the overview */

export interface PasskeyView {
  id: string;
  name: string;
  createdAt: Date;
  lastUsedAt: Date | null;
  /** Counts for privileged actions (./mailbox.ts). */
  vouched: boolean;
  /** The host it was registered for: it signs there only. */
  rpId: string;
}

function passkeyView(p: store.PasskeyRow): PasskeyView {
  return { id: p.id, name: p.name, createdAt: p.createdAt, lastUsedAt: p.lastUsedAt, vouched: !!p.vouchedAt, rpId: p.rpId };
}

export interface FactorOverview {
  totp: boolean;
  passkeys: PasskeyView[];
  recoveryLeft: number;
  /** Whether this session must prove the mailbox before adding a passkey (./mailbox.ts), and whether it has. */
  mailboxProof: MailboxProof;
}

export async function overview(deps: Deps, ctx: Ctx): Promise<FactorOverview> {
  const actor = signedIn(ctx);
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const e = await store.enrolledFactors(trx, actor.accountId);
    const passkeys = await store.activePasskeys(trx, actor.accountId);
    const mailboxProof = await mailboxProofState(trx, actor, ctx.now);
    return { totp: e.totp, recoveryLeft: e.recoveryLeft, passkeys: passkeys.map(passkeyView), mailboxProof };
  });
}

/* ------------------------------------------------------------ authenticator app */

export type TotpEnrolment = { state: 'enabled' } | { state: 'pending'; secret: string; uri: string };

/** The enrolment in progress (the same secret while it lasts, so a reload does not break a scan), or a new one. */
export async function startTotpEnrolment(deps: Deps, ctx: Ctx): Promise<TotpEnrolment> {
  const actor = signedIn(ctx);
  requireRecentAuth(ctx, undefined, { returnTo: '/account/security/totp' });
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const live = await store.liveTotp(trx, actor.accountId);
    if (live?.confirmed_at) return { state: 'enabled' } as const;
    let secret: string;
    if (live && live.created_at.getTime() > ctx.now.getTime() - store.TOTP_ENROLMENT_TTL_MS) {
      secret = decryptTotpSecret(keys(deps), { tenantId: ctx.tenant.id, accountId: actor.accountId, factorId: live.id }, live.secret_enc);
    } else {
      if (live) await trx.updateTable('totp_factors').set({ disabled_at: ctx.now }).where('id', '=', live.id).execute();
      secret = newTotpSecret();
      await store.insertTotp(trx, keys(deps), ctx.tenant.id, actor.accountId, secret, ctx.now);
    }
    const issuer = `Guichet ${ctx.locale === 'fr' ? ctx.tenant.nameFr : ctx.tenant.nameEn}`.replace(/:/g, ' ').slice(0, 80);
    return { state: 'pending', secret, uri: otpauthUri(issuer, actor.email, secret) } as const;
  });
}

export type TotpConfirmation = { ok: true; recoveryCodes: string[] | null } | { ok: false; reason: 'missing' | 'invalid' | 'expired' };

/** Turns the app on once the person types a first code from it; the code's step is recorded (used). */
export async function confirmTotpEnrolment(deps: Deps, ctx: Ctx, rawCode: unknown): Promise<TotpConfirmation> {
  const actor = signedIn(ctx);
  requireRecentAuth(ctx, undefined, { returnTo: '/account/security/totp' });
  const code = normaliseTotpCode(rawCode);
  if (typeof rawCode !== 'string' || rawCode.trim() === '') return { ok: false, reason: 'missing' };
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const live = await store.liveTotp(trx, actor.accountId);
    if (!live || live.confirmed_at || live.created_at.getTime() <= ctx.now.getTime() - store.TOTP_ENROLMENT_TTL_MS) return { ok: false, reason: 'expired' } as const;
    const secret = decryptTotpSecret(keys(deps), { tenantId: ctx.tenant.id, accountId: actor.accountId, factorId: live.id }, live.secret_enc);
    const check = code ? await checkTotp(secret, code, ctx.now) : ({ valid: false } as const);
    if (!check.valid || !(await store.claimTotpStep(trx, live.id, check.step))) {
      await audit(trx, ctx, 'identity.totp.enrol', 'failure', { accountId: actor.accountId, targetType: 'totp', targetIds: [live.id], details: { reason: 'bad_code' } });
      return { ok: false, reason: 'invalid' } as const;
    }
    await trx.updateTable('totp_factors').set({ confirmed_at: ctx.now }).where('id', '=', live.id).execute();
    await audit(trx, ctx, 'identity.totp.enrol', 'success', { accountId: actor.accountId, targetType: 'totp', targetIds: [live.id] });
    await notifyFactorChange(trx, ctx, actor, 'totpAdded');
    const recoveryCodes = await recoveryCodesIfNone(deps, trx, ctx, actor.accountId);
    await addSessionMethod(trx, actor, 'totp');
    return { ok: true, recoveryCodes } as const;
  });
}

export async function removeTotp(deps: Deps, ctx: Ctx): Promise<boolean> {
  const actor = signedIn(ctx);
  requireRecentAuth(ctx, undefined, { returnTo: '/account/security/totp/remove' });
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const live = await store.liveTotp(trx, actor.accountId);
    if (!live?.confirmed_at) return false;
    await trx.updateTable('totp_factors').set({ disabled_at: ctx.now }).where('id', '=', live.id).execute();
    await dropRecoveryIfNoFactor(trx, ctx, actor.accountId);
    await endOtherSessions(trx, actor, ctx.now);
    await audit(trx, ctx, 'identity.totp.remove', 'success', { accountId: actor.accountId, targetType: 'totp', targetIds: [live.id] });
    await notifyFactorChange(trx, ctx, actor, 'totpRemoved');
    return true;
  });
}

/* ------------------------------------------------------------ recovery codes */

/** Ten new codes in place of the unused ones; returned to be shown once. */
export async function regenerateRecoveryCodes(deps: Deps, ctx: Ctx): Promise<string[]> {
  const actor = signedIn(ctx);
  requireRecentAuth(ctx, undefined, { returnTo: '/account/security/recovery-codes' });
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    if (!store.hasSecondFactor(await store.enrolledFactors(trx, actor.accountId))) throw new AppError('badRequest');
    const codes = await store.replaceRecoveryCodes(trx, keys(deps), ctx.tenant.id, actor.accountId, ctx.now);
    await audit(trx, ctx, 'identity.recovery.generate', 'success', { accountId: actor.accountId, details: { count: codes.length, reason: 'regenerate' } });
    await notifyFactorChange(trx, ctx, actor, 'recoveryRegenerated');
    return codes;
  });
}

/* ------------------------------------------------------------ passkeys: registration */

/**
 * Adding or removing a passkey, or changing the password, of an account that
 * holds a privileged role and has a vouched passkey asks for one of those
 * used in the last five minutes; with passkeys none of which is vouched for,
 * a recent authentication and proof of the mailbox (requireMailboxProof).
 * Otherwise a session taken with a password and an app code (through a
 * phishing proxy, say) would add the intruder's passkey — and pass every
 * privileged step-up from then on — or remove the holder's own. Without a
 * vouched passkey, a recent authentication and, for a passkey of a
 * privileged holder, proof of the mailbox by this session (./mailbox.ts:
 * a password and an app code alone are phishable); a holder who lost
 * theirs has them reset by two administrators.
 */
function requireAccountSecurityAuth(ctx: Ctx, returnTo: string): void {
  const actor = signedIn(ctx);
  if (holdsPrivilegedRole(actor, ctx.now) && (actor.auth?.vouchedPasskeys ?? 0) > 0) requirePhishingResistantAuth(ctx, undefined, { returnTo });
  else requireRecentAuth(ctx, undefined, { returnTo });
}

export async function passkeyRegistrationOptions(deps: Deps, ctx: Ctx, rp: RelyingParty, sessionTokenHash: Buffer): Promise<PublicKeyCredentialCreationOptionsJSON> {
  const actor = signedIn(ctx);
  requireAccountSecurityAuth(ctx, '/account/security');
  await requireMailboxProof(deps, ctx, 'options');
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const existing = await store.activePasskeys(trx, actor.accountId);
    const c = newChallenge();
    await store.storeChallenge(trx, ctx.tenant.id, { challenge: c.value, purpose: 'register', accountId: actor.accountId, boundTo: sessionTokenHash, userVerification: 'preferred' }, ctx.now);
    return registrationOptions(rp, { accountId: actor.accountId, email: actor.email }, c.bytes, existing.filter((p) => p.rpId === rp.id));
  });
}

export type PasskeyRegistration = { ok: true; id: string; recoveryCodes: string[] | null } | { ok: false; reason: 'invalid' };

export async function registerPasskey(deps: Deps, ctx: Ctx, rp: RelyingParty, sessionTokenHash: Buffer, rawCredential: unknown, name: string | null): Promise<PasskeyRegistration> {
  const actor = signedIn(ctx);
  requireAccountSecurityAuth(ctx, '/account/security');
  await requireMailboxProof(deps, ctx, 'register');
  const response = parseRegistrationResponse(rawCredential);
  const challenge = response ? challengeOf(response) : null;
  const fail = async (trx: Trx, reason: string) => {
    await audit(trx, ctx, 'identity.passkey.register', 'failure', { accountId: actor.accountId, details: { reason } });
    return { ok: false, reason: 'invalid' } as const;
  };
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    if (!response || !challenge) return fail(trx, 'malformed');
    const claimed = await store.takeChallenge(trx, { challenge, purpose: 'register', boundTo: sessionTokenHash }, ctx.now);
    if (!claimed || claimed.account_id !== actor.accountId) return fail(trx, 'challenge');
    const v = await verifyRegistration(rp, response, challenge);
    if (!v.ok) {
      deps.log.info({ err: v.error }, 'passkey registration not verified');
      return fail(trx, 'not_verified');
    }
    const taken = await trx.selectFrom('webauthn_credentials').select('id').where('credential_id', '=', v.credential.credentialId).executeTakeFirst();
    if (taken) return fail(trx, 'duplicate');
    const count = (await store.activePasskeys(trx, actor.accountId)).length;
    // Vouched for by the mailbox this session just proved, or by the vouched passkey it authenticated with.
    const vouchedBy = (await mailboxProvenRecently(trx, actor, ctx.now)) ? 'mailbox' : actor.auth?.vouchedPasskey ? 'passkey' : null;
    const row = await trx
      .insertInto('webauthn_credentials')
      .values({
        tenant_id: ctx.tenant.id,
        account_id: actor.accountId,
        credential_id: v.credential.credentialId,
        public_key: v.credential.publicKey,
        sign_count: v.credential.signCount,
        transports: v.credential.transports,
        rp_id: rp.id,
        name: name || messages(ctx.locale).factors.defaultPasskeyName(count + 1),
        aaguid: v.credential.aaguid,
        backed_up: v.credential.backedUp,
        created_at: ctx.now,
        last_used_at: null,
        revoked_at: null,
        vouched_at: vouchedBy ? ctx.now : null,
      })
      .returning(['id', 'name'])
      .executeTakeFirstOrThrow();
    await audit(trx, ctx, 'identity.passkey.register', 'success', {
      accountId: actor.accountId,
      targetType: 'passkey',
      targetIds: [row.id],
      details: { aaguid: v.credential.aaguid, backedUp: v.credential.backedUp, userVerified: v.credential.userVerified, rpId: rp.id, vouchedBy },
    });
    await notifyFactorChange(trx, ctx, actor, 'passkeyAdded', row.name);
    const recoveryCodes = await recoveryCodesIfNone(deps, trx, ctx, actor.accountId);
    await addSessionMethod(trx, actor, 'passkey', row.id);
    return { ok: true, id: row.id, recoveryCodes } as const;
  });
}

export async function getPasskey(deps: Deps, ctx: Ctx, id: string): Promise<PasskeyView | null> {
  const actor = signedIn(ctx);
  if (!UUID.test(id)) return null;
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const p = await store.passkeyById(trx, actor.accountId, id);
    return p ? passkeyView(p) : null;
  });
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export async function renamePasskey(deps: Deps, ctx: Ctx, id: string, name: string): Promise<boolean> {
  const actor = signedIn(ctx);
  if (!UUID.test(id)) return false;
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const r = await trx.updateTable('webauthn_credentials').set({ name }).where('id', '=', id).where('account_id', '=', actor.accountId).where('revoked_at', 'is', null).returning('id').executeTakeFirst();
    if (r) await audit(trx, ctx, 'identity.passkey.rename', 'success', { accountId: actor.accountId, targetType: 'passkey', targetIds: [id] });
    return !!r;
  });
}

export async function revokePasskey(deps: Deps, ctx: Ctx, id: string): Promise<boolean> {
  const actor = signedIn(ctx);
  requireAccountSecurityAuth(ctx, `/account/security/passkeys/${UUID.test(id) ? id : ''}/revoke`);
  if (!UUID.test(id)) return false;
  await requireMailboxProof(deps, ctx, 'revoke');
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const r = await trx.updateTable('webauthn_credentials').set({ revoked_at: ctx.now }).where('id', '=', id).where('account_id', '=', actor.accountId).where('revoked_at', 'is', null).returning(['id', 'name']).executeTakeFirst();
    if (!r) return false;
    await dropRecoveryIfNoFactor(trx, ctx, actor.accountId);
    await endOtherSessions(trx, actor, ctx.now);
    await audit(trx, ctx, 'identity.passkey.revoke', 'success', { accountId: actor.accountId, targetType: 'passkey', targetIds: [id] });
    await notifyFactorChange(trx, ctx, actor, 'passkeyRemoved', r.name);
    return true;
  });
}

/* ------------------------------------------------------------ the second step of a sign-in */

export interface PendingView {
  purpose: 'second_factor' | 'passkey';
  accountId: string | null;
  enrolled: store.Enrolled;
}

/** The sign-in awaiting its second step in this browser, or null (none, used, expired, too many wrong codes). */
export async function pendingSignIn(deps: Deps, ctx: Ctx, token: string | undefined): Promise<PendingView | null> {
  if (!token) return null;
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const p = await store.findPending(trx, token, ctx.now);
    if (!p) return null;
    const enrolled = p.account_id ? await store.enrolledFactors(trx, p.account_id) : { totp: false, passkeys: 0, recoveryLeft: 0 };
    return { purpose: p.purpose, accountId: p.account_id, enrolled };
  });
}

export type Completion =
  | { ok: true; session: SessionResult; actor: Actor; methods: AuthMethod[]; recoveryLeft: number }
  | { ok: false; reason: 'missing' | 'invalid' | 'expired' | 'locked'; lockedUntil?: Date };

/** The account behind a finished sign-in gets its session, with the methods it used. */
async function finish(trx: Trx, ctx: Ctx, pendingId: string, accountId: string, methods: AuthMethod[], passkeyId: string | null = null): Promise<Completion> {
  const account = await trx.selectFrom('accounts').select(['id', 'email', 'locale', 'status', 'email_verified_at']).where('id', '=', accountId).executeTakeFirst();
  if (!account || account.status !== 'active' || !account.email_verified_at || !(await store.consumePending(trx, pendingId, ctx.now))) {
    return { ok: false, reason: 'expired' };
  }
  const memberships = await loadMemberships(trx, accountId, ctx.now);
  const session = await createSession(trx, ctx, accountId, memberships, methods, passkeyId);
  await audit(trx, ctx, 'identity.signin', 'success', { accountId, asActor: true, details: { methods: methods.join('+') } });
  const e = await store.enrolledFactors(trx, accountId);
  const actor: Actor = { accountId, tenantId: ctx.tenant.id, sessionId: null, email: account.email, emailVerified: true, locale: account.locale, memberships };
  return { ok: true, session, actor, methods, recoveryLeft: e.recoveryLeft };
}

/** A wrong code: counted against the pending sign-in and the account. */
async function wrongCode(trx: Trx, ctx: Ctx, p: store.PendingRow, kind: 'totp' | 'recovery', action: AuditAction, reason: string): Promise<Completion> {
  const accountId = p.account_id!;
  await store.recordFactorFailure(trx, ctx.tenant.id, accountId, kind, ctx.now);
  const failures = await store.pendingFailed(trx, p.id);
  await audit(trx, ctx, action, 'failure', { accountId, details: { reason, step: 'signin', failures } });
  return failures >= store.PENDING_MAX_FAILURES ? { ok: false, reason: 'expired' } : { ok: false, reason: 'invalid' };
}

async function lockedOrNull(trx: Trx, ctx: Ctx, accountId: string, action: AuditAction): Promise<Completion | null> {
  const until = await store.codeLockedUntil(trx, accountId, ctx.now);
  if (!until) return null;
  await audit(trx, ctx, action, 'denied', { accountId, details: { reason: 'locked' } });
  return { ok: false, reason: 'locked', lockedUntil: until };
}

/** TOTP verification with the replay guard; `valid` only for a code of an unused step. */
async function verifyTotpFor(deps: Deps, trx: Trx, ctx: Ctx, accountId: string, code: string): Promise<'ok' | 'bad' | 'replay' | 'none'> {
  const live = await store.liveTotp(trx, accountId);
  if (!live?.confirmed_at) return 'none';
  const secret = decryptTotpSecret(keys(deps), { tenantId: ctx.tenant.id, accountId, factorId: live.id }, live.secret_enc);
  const check = await checkTotp(secret, code, ctx.now);
  if (!check.valid) return 'bad';
  return (await store.claimTotpStep(trx, live.id, check.step)) ? 'ok' : 'replay';
}

export async function completeWithTotp(deps: Deps, ctx: Ctx, pendingToken: string | undefined, rawCode: unknown): Promise<Completion> {
  if (!pendingToken) return { ok: false, reason: 'expired' };
  if (typeof rawCode !== 'string' || rawCode.trim() === '') return { ok: false, reason: 'missing' };
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const p = await store.findPending(trx, pendingToken, ctx.now);
    if (!p || p.purpose !== 'second_factor' || !p.account_id) return { ok: false, reason: 'expired' } as const;
    const locked = await lockedOrNull(trx, ctx, p.account_id, 'identity.totp.verify');
    if (locked) return locked;
    const code = normaliseTotpCode(rawCode);
    const r = code ? await verifyTotpFor(deps, trx, ctx, p.account_id, code) : 'bad';
    if (r !== 'ok') return wrongCode(trx, ctx, p, 'totp', 'identity.totp.verify', r === 'replay' ? 'replay' : r === 'none' ? 'no_totp' : 'bad_code');
    await audit(trx, ctx, 'identity.totp.verify', 'success', { accountId: p.account_id, asActor: true, details: { step: 'signin' } });
    return finish(trx, ctx, p.id, p.account_id, ['password', 'totp']);
  });
}

export async function completeWithRecoveryCode(deps: Deps, ctx: Ctx, pendingToken: string | undefined, rawCode: unknown): Promise<Completion> {
  if (!pendingToken) return { ok: false, reason: 'expired' };
  if (typeof rawCode !== 'string' || rawCode.trim() === '') return { ok: false, reason: 'missing' };
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const p = await store.findPending(trx, pendingToken, ctx.now);
    if (!p || p.purpose !== 'second_factor' || !p.account_id) return { ok: false, reason: 'expired' } as const;
    const locked = await lockedOrNull(trx, ctx, p.account_id, 'identity.recovery.use');
    if (locked) return locked;
    const code = normaliseRecoveryCode(rawCode);
    if (!code || !(await store.claimRecoveryCode(trx, keys(deps), ctx.tenant.id, p.account_id, code, ctx.now))) {
      return wrongCode(trx, ctx, p, 'recovery', 'identity.recovery.use', 'bad_code');
    }
    const left = (await store.enrolledFactors(trx, p.account_id)).recoveryLeft;
    await audit(trx, ctx, 'identity.recovery.use', 'success', { accountId: p.account_id, asActor: true, details: { step: 'signin', left } });
    return finish(trx, ctx, p.id, p.account_id, ['password', 'recovery']);
  });
}

/* ------------------------------------------------------------ passkey sign-in */

/**
 * Options for a passkey sign-in. `alone`: any discoverable passkey of this
 * site, with user verification (the passkey is then both factors); a new
 * pending sign-in binds the challenge to this browser. `second_factor`: the
 * passkeys of the account whose password was just given.
 */
export async function signInPasskeyOptions(
  deps: Deps,
  ctx: Ctx,
  rp: RelyingParty,
  mode: 'alone' | 'second_factor',
  pendingToken: string | undefined,
): Promise<{ options: PublicKeyCredentialRequestOptionsJSON; newPending: { token: string; expiresAt: Date } | null } | null> {
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const c = newChallenge();
    if (mode === 'alone') {
      const p = await store.createPending(trx, ctx.tenant.id, 'passkey', null, ctx.now);
      await store.storeChallenge(trx, ctx.tenant.id, { challenge: c.value, purpose: 'authenticate', accountId: null, boundTo: p.tokenHash, userVerification: 'required' }, ctx.now);
      return { options: await authenticationOptions(rp, c.bytes, null, 'required'), newPending: { token: p.token, expiresAt: p.expiresAt } };
    }
    const p = pendingToken ? await store.findPending(trx, pendingToken, ctx.now) : undefined;
    if (!p || p.purpose !== 'second_factor' || !p.account_id) return null;
    const allow = (await store.activePasskeys(trx, p.account_id)).filter((k) => k.rpId === rp.id);
    if (!allow.length) return null;
    await store.storeChallenge(trx, ctx.tenant.id, { challenge: c.value, purpose: 'authenticate', accountId: p.account_id, boundTo: p.token_hash, userVerification: 'preferred' }, ctx.now);
    return { options: await authenticationOptions(rp, c.bytes, allow, 'preferred'), newPending: null };
  });
}

type PasskeyCheck = { ok: true; accountId: string; passkeyId: string; vouched: boolean } | { ok: false; reason: string; accountId: string | null };

/** Claims the challenge, finds the credential and verifies the signature; updates the counter. */
async function checkPasskey(deps: Deps, trx: Trx, ctx: Ctx, rp: RelyingParty, boundTo: Buffer, rawCredential: unknown, expectAccount: string | null): Promise<PasskeyCheck> {
  const response = parseAuthenticationResponse(rawCredential);
  const challenge = response ? challengeOf(response) : null;
  if (!response || !challenge) return { ok: false, reason: 'malformed', accountId: expectAccount };
  const claimed = await store.takeChallenge(trx, { challenge, purpose: 'authenticate', boundTo }, ctx.now);
  if (!claimed) return { ok: false, reason: 'challenge', accountId: expectAccount };
  const cred = await store.passkeyByCredentialId(trx, response.id);
  if (!cred) return { ok: false, reason: 'unknown_credential', accountId: expectAccount };
  if ((expectAccount && cred.accountId !== expectAccount) || (claimed.account_id && claimed.account_id !== cred.accountId)) {
    return { ok: false, reason: 'other_account', accountId: expectAccount ?? cred.accountId };
  }
  if (cred.rpId !== rp.id) return { ok: false, reason: 'other_host', accountId: cred.accountId };
  const handle = response.response.userHandle;
  if (handle !== undefined && accountIdOfUserHandle(handle) !== cred.accountId) return { ok: false, reason: 'user_handle', accountId: cred.accountId };
  const v = await verifyAuthentication(rp, response, challenge, cred, claimed.user_verification === 'required');
  if (!v.ok) {
    deps.log.info({ err: v.error }, 'passkey assertion not verified');
    return { ok: false, reason: 'not_verified', accountId: cred.accountId };
  }
  await trx.updateTable('webauthn_credentials').set({ sign_count: v.newSignCount, last_used_at: ctx.now, backed_up: v.backedUp }).where('id', '=', cred.id).execute();
  return { ok: true, accountId: cred.accountId, passkeyId: cred.id, vouched: !!cred.vouchedAt };
}

/** A passkey finishes a sign-in: alone (its own pending sign-in), or as the second step after the password. */
export async function completeWithPasskey(deps: Deps, ctx: Ctx, rp: RelyingParty, pendingToken: string | undefined, rawCredential: unknown): Promise<Completion> {
  if (!pendingToken) return { ok: false, reason: 'expired' };
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const p = await store.findPending(trx, pendingToken, ctx.now);
    if (!p) return { ok: false, reason: 'expired' } as const;
    const step = p.purpose === 'passkey' ? 'signin_alone' : 'signin';
    const r = await checkPasskey(deps, trx, ctx, rp, p.token_hash, rawCredential, p.account_id);
    if (!r.ok) {
      await appendAudit(trx, ctx.tenant.id, { ...event(ctx, 'identity.passkey.verify', 'failure', { accountId: r.accountId ?? '' }), targetIds: r.accountId ? [r.accountId] : [], details: { reason: r.reason, step } }, ctx.now);
      return { ok: false, reason: 'invalid' } as const;
    }
    await audit(trx, ctx, 'identity.passkey.verify', 'success', { accountId: r.accountId, asActor: true, targetType: 'passkey', targetIds: [r.passkeyId, r.accountId], details: { step } });
    return finish(trx, ctx, p.id, r.accountId, p.purpose === 'passkey' ? ['passkey'] : ['password', 'passkey'], r.passkeyId);
  });
}

/* ------------------------------------------------------------ re-authentication (step-up) */

export type Reauth = { ok: true; session: SessionResult } | { ok: false; reason: 'missing' | 'invalid' | 'locked' | 'passkeyRequired'; lockedUntil?: Date };

/**
 * A re-authentication gives the session a new token (ASVS 7.2.4): a token
 * copied before it — from a shared computer, a proxy's log, a stolen cookie —
 * does not carry the fresh authentication, and stops working at once.
 */
async function markReauthenticated(trx: Trx, ctx: Ctx, actor: Actor, methods: AuthMethod[], passkeyId: string | null = null): Promise<SessionResult> {
  const session = await renewSessionToken(trx, actor, { authenticated_at: ctx.now, auth_methods: methods, auth_passkey_id: passkeyId });
  await audit(trx, ctx, 'identity.stepup', 'success', { accountId: actor.accountId, details: { methods: methods.join('+') } });
  return session;
}

/** The actor's live session under a new token (its row, and so its id, kept), with what else changes with it. */
async function renewSessionToken(trx: Trx, actor: Actor, also: { authenticated_at?: Date; auth_methods?: AuthMethod[]; auth_passkey_id?: string | null } = {}): Promise<SessionResult> {
  if (!actor.sessionId) throw new AppError('signInRequired');
  const { token, hash } = newToken();
  const s = await trx.updateTable('sessions').set({ ...also, token_hash: hash }).where('id', '=', actor.sessionId).where('revoked_at', 'is', null).returning('expires_at').executeTakeFirst();
  if (!s) throw new AppError('signInRequired');
  return { token, expiresAt: s.expires_at };
}

/**
 * Re-authentication with the password, and the authenticator app's code
 * when the account has one. An account whose only factor is a passkey
 * re-authenticates with the passkey.
 */
export async function reauthWithPassword(deps: Deps, ctx: Ctx, password: unknown, rawCode: unknown): Promise<Reauth> {
  const actor = signedIn(ctx);
  const before = await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const account = await trx.selectFrom('accounts').select(['password_hash']).where('id', '=', actor.accountId).executeTakeFirstOrThrow();
    return { hash: account.password_hash, enrolled: await store.enrolledFactors(trx, actor.accountId), lockedUntil: await store.codeLockedUntil(trx, actor.accountId, ctx.now) };
  });
  if (before.lockedUntil) {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, event(ctx, 'identity.stepup', 'denied', { accountId: actor.accountId, details: { reason: 'locked' } }), ctx.now);
    return { ok: false, reason: 'locked', lockedUntil: before.lockedUntil };
  }
  if (!before.enrolled.totp && before.enrolled.passkeys > 0) return { ok: false, reason: 'passkeyRequired' };
  if (typeof password !== 'string' || password === '' || (before.enrolled.totp && (typeof rawCode !== 'string' || rawCode.trim() === ''))) return { ok: false, reason: 'missing' };
  const passwordOk = password.length <= 1024 && (await verifyPassword(before.hash, password));
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    if (!passwordOk) {
      await store.recordFactorFailure(trx, ctx.tenant.id, actor.accountId, 'password', ctx.now);
      await audit(trx, ctx, 'identity.stepup', 'failure', { accountId: actor.accountId, details: { reason: 'bad_password' } });
      return { ok: false, reason: 'invalid' } as const;
    }
    if (before.enrolled.totp) {
      const code = normaliseTotpCode(rawCode);
      const r = code ? await verifyTotpFor(deps, trx, ctx, actor.accountId, code) : 'bad';
      if (r !== 'ok') {
        await store.recordFactorFailure(trx, ctx.tenant.id, actor.accountId, 'totp', ctx.now);
        await audit(trx, ctx, 'identity.totp.verify', 'failure', { accountId: actor.accountId, details: { reason: r === 'replay' ? 'replay' : 'bad_code', step: 'reauth' } });
        await audit(trx, ctx, 'identity.stepup', 'failure', { accountId: actor.accountId, details: { reason: r === 'replay' ? 'replay' : 'bad_code' } });
        return { ok: false, reason: 'invalid' } as const;
      }
      await audit(trx, ctx, 'identity.totp.verify', 'success', { accountId: actor.accountId, details: { step: 'reauth' } });
      return { ok: true, session: await markReauthenticated(trx, ctx, actor, ['password', 'totp']) } as const;
    }
    return { ok: true, session: await markReauthenticated(trx, ctx, actor, ['password']) } as const;
  });
}

/**
 * Options for a re-authentication with a passkey. At the privileged level, a
 * privileged holder who has vouched passkeys is offered only those: another
 * would sign in vain.
 */
export async function reauthPasskeyOptions(deps: Deps, ctx: Ctx, rp: RelyingParty, sessionTokenHash: Buffer, privilegedLevel = false): Promise<PublicKeyCredentialRequestOptionsJSON | null> {
  const actor = signedIn(ctx);
  const vouchedOnly = privilegedLevel && holdsPrivilegedRole(actor, ctx.now) && (actor.auth?.vouchedPasskeys ?? 0) > 0;
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const allow = (await store.activePasskeys(trx, actor.accountId)).filter((k) => k.rpId === rp.id && (!vouchedOnly || k.vouchedAt));
    if (!allow.length) return null;
    const c = newChallenge();
    await store.storeChallenge(trx, ctx.tenant.id, { challenge: c.value, purpose: 'authenticate', accountId: actor.accountId, boundTo: sessionTokenHash, userVerification: 'required' }, ctx.now);
    return authenticationOptions(rp, c.bytes, allow, 'required');
  });
}

/** Re-authentication with a passkey (with user verification): what the phishing-resistant step-up needs. */
export async function reauthWithPasskey(deps: Deps, ctx: Ctx, rp: RelyingParty, sessionTokenHash: Buffer, rawCredential: unknown): Promise<Reauth> {
  const actor = signedIn(ctx);
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const r = await checkPasskey(deps, trx, ctx, rp, sessionTokenHash, rawCredential, actor.accountId);
    if (!r.ok) {
      await audit(trx, ctx, 'identity.passkey.verify', 'failure', { accountId: actor.accountId, details: { reason: r.reason, step: 'reauth' } });
      await audit(trx, ctx, 'identity.stepup', 'failure', { accountId: actor.accountId, details: { reason: `passkey_${r.reason}` } });
      return { ok: false, reason: 'invalid' } as const;
    }
    await audit(trx, ctx, 'identity.passkey.verify', 'success', { accountId: actor.accountId, targetType: 'passkey', targetIds: [r.passkeyId, actor.accountId], details: { step: 'reauth' } });
    // A passkey used just after this session proved the mailbox is vouched for from now on.
    if (!r.vouched && (await mailboxProvenRecently(trx, actor, ctx.now))) {
      await trx.updateTable('webauthn_credentials').set({ vouched_at: ctx.now }).where('id', '=', r.passkeyId).where('vouched_at', 'is', null).execute();
      await audit(trx, ctx, 'identity.passkey.vouch', 'success', { accountId: actor.accountId, targetType: 'passkey', targetIds: [r.passkeyId, actor.accountId], details: { by: 'mailbox', step: 'reauth' } });
    }
    return { ok: true, session: await markReauthenticated(trx, ctx, actor, ['passkey'], r.passkeyId) } as const;
  });
}

/* ------------------------------------------------------------ password change */

export type PasswordChange = { ok: true; session: SessionResult } | { ok: false; reason: 'invalid' | 'locked'; lockedUntil?: Date };

/** Whether the signed-in person may change their password now, or must re-authenticate first (StepUpRequired). */
export function requirePasswordChangeAuth(ctx: Ctx): void {
  requireAccountSecurityAuth(ctx, '/account/security/password');
}

/**
 * A signed-in person changes their password with the current one (ASVS
 * 6.2.2, 6.2.3), in a session that authenticated in the last five minutes
 * (a passkey for a privileged holder who has one). A wrong current password
 * counts against the same lock as a wrong code. The new one takes effect at
 * once: every other session of the account ends, this one gets a new token,
 * and the holder is told by e-mail. The new password has been weighed by the
 * caller (src/identity/password-strength.ts).
 */
export async function changePassword(deps: Deps, ctx: Ctx, current: string, next: string): Promise<PasswordChange> {
  const actor = signedIn(ctx);
  requirePasswordChangeAuth(ctx);
  if (!actor.sessionId) throw new AppError('signInRequired');
  await requireMailboxProof(deps, ctx, 'password');
  const before = await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const account = await trx.selectFrom('accounts').select(['password_hash']).where('id', '=', actor.accountId).executeTakeFirstOrThrow();
    return { hash: account.password_hash, lockedUntil: await store.codeLockedUntil(trx, actor.accountId, ctx.now) };
  });
  if (before.lockedUntil) {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, event(ctx, 'identity.password.change', 'denied', { accountId: actor.accountId, details: { reason: 'locked' } }), ctx.now);
    return { ok: false, reason: 'locked', lockedUntil: before.lockedUntil };
  }
  const currentOk = current.length <= 1024 && (await verifyPassword(before.hash, current));
  if (!currentOk) {
    await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
      await store.recordFactorFailure(trx, ctx.tenant.id, actor.accountId, 'password', ctx.now);
      await audit(trx, ctx, 'identity.password.change', 'failure', { accountId: actor.accountId, details: { reason: 'bad_password' } });
    });
    return { ok: false, reason: 'invalid' };
  }
  const passwordHash = await hashPassword(next);
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    await trx.updateTable('accounts').set({ password_hash: passwordHash }).where('id', '=', actor.accountId).execute();
    const ended = await trx.updateTable('sessions').set({ revoked_at: ctx.now }).where('account_id', '=', actor.accountId).where('id', '<>', actor.sessionId!).where('revoked_at', 'is', null).returning('id').execute();
    const session = await renewSessionToken(trx, actor);
    const account = await trx.selectFrom('accounts').select(['email', 'locale']).where('id', '=', actor.accountId).executeTakeFirstOrThrow();
    const m = messages(account.locale);
    await enqueueMail(trx, ctx.tenant.id, { to: account.email, locale: account.locale, template: 'password_changed', subject: m.recovery.changedSubject, body: m.recovery.changedSignedInBody(`${ctx.baseUrl}/password/forgot`) }, ctx.now);
    await audit(trx, ctx, 'identity.password.change', 'success', { accountId: actor.accountId, details: { otherSessionsEnded: ended.length } });
    return { ok: true, session } as const;
  });
}
