import { randomUUID } from 'node:crypto';
import { sql, type Expression, type RawBuilder } from 'kysely';
import type { KeyProvider } from '../../crypto/keys.ts';
import type { Trx } from '../../db/connection.ts';
import { hashToken, newToken } from '../tokens.ts';
import { hashRecoveryCode, newRecoveryCodes, normaliseRecoveryCode } from './recovery.ts';
import { encryptTotpSecret } from './totp.ts';
import type { StoredCredential } from './webauthn.ts';

/**
 * The SQL of second factors. Every function runs inside the caller's tenant
 * transaction (row-level security scopes it); single-use state (a TOTP step,
 * a recovery code, a challenge, a pending sign-in) is claimed by one
 * conditional UPDATE … RETURNING, so two requests racing each other cannot
 * both use it.
 */

/** A sign-in waits this long for its second step. */
export const PENDING_TTL_MS = 10 * 60_000;
/** Wrong codes one pending sign-in may send before it must start again with the password. */
export const PENDING_MAX_FAILURES = 5;
/** A WebAuthn challenge lives this long (the ceremony itself times out at two minutes). */
export const CHALLENGE_TTL_MS = 5 * 60_000;
/** Per account: this many wrong codes (or re-authentication passwords) in the window close code entry until the window passes. */
export const CODE_LOCK = { windowMs: 15 * 60_000, maxFailures: 10 } as const;
/** An unfinished authenticator-app enrolment is offered again for this long (same secret on reload). */
export const TOTP_ENROLMENT_TTL_MS = 30 * 60_000;

/* ------------------------------------------------------------ what is enrolled */

export interface Enrolled {
  totp: boolean;
  passkeys: number;
  recoveryLeft: number;
}

/** For a query over sessions or accounts: whether the account has a confirmed authenticator app. */
export function totpEnabledSql(account: Expression<string>): RawBuilder<boolean> {
  return sql<boolean>`exists (select 1 from totp_factors tf where tf.account_id = ${account} and tf.confirmed_at is not null and tf.disabled_at is null)`;
}

/** How many live passkeys the account has. */
export function passkeyCountSql(account: Expression<string>): RawBuilder<string> {
  return sql<string>`(select count(*) from webauthn_credentials wc where wc.account_id = ${account} and wc.revoked_at is null)`;
}

/** How many live passkeys of the account are vouched for (migration 0049). */
export function vouchedPasskeyCountSql(account: Expression<string>): RawBuilder<string> {
  return sql<string>`(select count(*) from webauthn_credentials wc where wc.account_id = ${account} and wc.revoked_at is null and wc.vouched_at is not null)`;
}

/** Whether a session's last passkey (`passkey`, possibly null) is still the account's, live and vouched for. */
export function passkeyVouchedSql(passkey: Expression<string | null>, account: Expression<string>): RawBuilder<boolean> {
  return sql<boolean>`exists (select 1 from webauthn_credentials wc where wc.id = ${passkey} and wc.account_id = ${account} and wc.revoked_at is null and wc.vouched_at is not null)`;
}

export async function enrolledFactors(trx: Trx, accountId: string): Promise<Enrolled> {
  const account = sql<string>`cast(${accountId} as uuid)`;
  const { rows } = await sql<{ totp: boolean; passkeys: string; recovery: string }>`
    select ${totpEnabledSql(account)} as totp,
           ${passkeyCountSql(account)} as passkeys,
           (select count(*) from recovery_codes rc where rc.account_id = ${accountId} and rc.used_at is null and rc.revoked_at is null) as recovery`.execute(trx);
  const r = rows[0]!;
  return { totp: !!r.totp, passkeys: Number(r.passkeys), recoveryLeft: Number(r.recovery) };
}

export function hasSecondFactor(e: Pick<Enrolled, 'totp' | 'passkeys'>): boolean {
  return e.totp || e.passkeys > 0;
}

/* ------------------------------------------------------------ pending sign-ins */

export interface PendingRow {
  id: string;
  account_id: string | null;
  purpose: 'second_factor' | 'passkey';
  token_hash: Buffer;
  failures: number;
  expires_at: Date;
}

export async function createPending(trx: Trx, tenantId: string, purpose: 'second_factor' | 'passkey', accountId: string | null, now: Date): Promise<{ token: string; expiresAt: Date; tokenHash: Buffer }> {
  await trx.deleteFrom('pending_signins').where('expires_at', '<', new Date(now.getTime() - 86_400_000)).execute();
  const { token, hash } = newToken();
  const expiresAt = new Date(now.getTime() + PENDING_TTL_MS);
  await trx.insertInto('pending_signins').values({ tenant_id: tenantId, account_id: accountId, purpose, token_hash: hash, created_at: now, expires_at: expiresAt, used_at: null }).execute();
  return { token, expiresAt, tokenHash: hash };
}

/**
 * After a right password: when the account has a second factor, a pending
 * sign-in (the second step) instead of a session. Null when it has none.
 */
export async function beginSecondFactor(trx: Trx, tenantId: string, accountId: string, now: Date): Promise<{ token: string; expiresAt: Date } | null> {
  const enrolled = await enrolledFactors(trx, accountId);
  if (!hasSecondFactor(enrolled)) return null;
  const p = await createPending(trx, tenantId, 'second_factor', accountId, now);
  return { token: p.token, expiresAt: p.expiresAt };
}

export async function findPending(trx: Trx, token: string, now: Date): Promise<PendingRow | undefined> {
  return trx
    .selectFrom('pending_signins')
    .select(['id', 'account_id', 'purpose', 'token_hash', 'failures', 'expires_at'])
    .where('token_hash', '=', hashToken(token))
    .where('used_at', 'is', null)
    .where('expires_at', '>', now)
    .where('failures', '<', PENDING_MAX_FAILURES)
    .executeTakeFirst();
}

/** Counts a wrong code against the pending sign-in; returns how many it has had. */
export async function pendingFailed(trx: Trx, id: string): Promise<number> {
  const r = await trx
    .updateTable('pending_signins')
    .set((eb) => ({ failures: eb('failures', '+', 1) }))
    .where('id', '=', id)
    .returning('failures')
    .executeTakeFirst();
  return r?.failures ?? PENDING_MAX_FAILURES;
}

/** Claims the pending sign-in: true once, for one request. */
export async function consumePending(trx: Trx, id: string, now: Date): Promise<boolean> {
  const r = await trx.updateTable('pending_signins').set({ used_at: now }).where('id', '=', id).where('used_at', 'is', null).returning('id').executeTakeFirst();
  return !!r;
}

/* ------------------------------------------------------------ code entry lock */

export async function codeLockedUntil(trx: Trx, accountId: string, now: Date): Promise<Date | null> {
  const since = new Date(now.getTime() - CODE_LOCK.windowMs);
  const rows = await trx.selectFrom('factor_failures').select('at').where('account_id', '=', accountId).where('at', '>', since).orderBy('at', 'asc').execute();
  if (rows.length < CODE_LOCK.maxFailures) return null;
  // Closed until the oldest failure that keeps the count at the limit leaves the window.
  const pivot = rows[rows.length - CODE_LOCK.maxFailures]!.at;
  return new Date(pivot.getTime() + CODE_LOCK.windowMs);
}

export async function recordFactorFailure(trx: Trx, tenantId: string, accountId: string, kind: 'totp' | 'recovery' | 'password', now: Date): Promise<void> {
  await trx.deleteFrom('factor_failures').where('account_id', '=', accountId).where('at', '<', new Date(now.getTime() - 2 * CODE_LOCK.windowMs)).execute();
  await trx.insertInto('factor_failures').values({ tenant_id: tenantId, account_id: accountId, kind, at: now }).execute();
}

/* ------------------------------------------------------------ authenticator app */

export interface TotpRow {
  id: string;
  secret_enc: Buffer;
  created_at: Date;
  confirmed_at: Date | null;
  last_used_step: string | null;
}

/** The account's live authenticator app: confirmed, or an enrolment in progress. */
export async function liveTotp(trx: Trx, accountId: string): Promise<TotpRow | undefined> {
  return trx
    .selectFrom('totp_factors')
    .select(['id', 'secret_enc', 'created_at', 'confirmed_at', 'last_used_step'])
    .where('account_id', '=', accountId)
    .where('disabled_at', 'is', null)
    .executeTakeFirst();
}

export async function insertTotp(trx: Trx, keys: KeyProvider, tenantId: string, accountId: string, secret: string, now: Date): Promise<string> {
  const id = randomUUID();
  const secretEnc = encryptTotpSecret(keys, { tenantId, accountId, factorId: id }, secret);
  await trx.insertInto('totp_factors').values({ id, tenant_id: tenantId, account_id: accountId, secret_enc: secretEnc, created_at: now, confirmed_at: null, last_used_step: null, disabled_at: null }).execute();
  return id;
}

/**
 * Records `step` as the last accepted one, only if it is later than the last:
 * the replay guard of RFC 6238 §5.2. False when that step (or a later one)
 * was already used.
 */
export async function claimTotpStep(trx: Trx, factorId: string, step: number): Promise<boolean> {
  const r = await trx
    .updateTable('totp_factors')
    .set({ last_used_step: step })
    .where('id', '=', factorId)
    .where('disabled_at', 'is', null)
    .where((eb) => eb.or([eb('last_used_step', 'is', null), eb('last_used_step', '<', String(step))]))
    .returning('id')
    .executeTakeFirst();
  return !!r;
}

/* ------------------------------------------------------------ recovery codes */

/** Revokes the account's unused codes and stores ten new ones; returns them, to be shown once. */
export async function replaceRecoveryCodes(trx: Trx, keys: KeyProvider, tenantId: string, accountId: string, now: Date): Promise<string[]> {
  await trx.updateTable('recovery_codes').set({ revoked_at: now }).where('account_id', '=', accountId).where('used_at', 'is', null).where('revoked_at', 'is', null).execute();
  const codes = newRecoveryCodes();
  await trx
    .insertInto('recovery_codes')
    .values(codes.map((c) => ({ tenant_id: tenantId, account_id: accountId, code_hash: hashRecoveryCode(keys, tenantId, accountId, normaliseRecoveryCode(c)!), created_at: now, used_at: null, revoked_at: null })))
    .execute();
  return codes;
}

export async function revokeRecoveryCodes(trx: Trx, accountId: string, now: Date): Promise<void> {
  await trx.updateTable('recovery_codes').set({ revoked_at: now }).where('account_id', '=', accountId).where('used_at', 'is', null).where('revoked_at', 'is', null).execute();
}

/** Uses a recovery code: true once per code. */
export async function claimRecoveryCode(trx: Trx, keys: KeyProvider, tenantId: string, accountId: string, normalised: string, now: Date): Promise<boolean> {
  const r = await trx
    .updateTable('recovery_codes')
    .set({ used_at: now })
    .where('account_id', '=', accountId)
    .where('code_hash', '=', hashRecoveryCode(keys, tenantId, accountId, normalised))
    .where('used_at', 'is', null)
    .where('revoked_at', 'is', null)
    .returning('id')
    .executeTakeFirst();
  return !!r;
}

/* ------------------------------------------------------------ passkeys */

export interface PasskeyRow extends StoredCredential {
  id: string;
  accountId: string;
  rpId: string;
  name: string;
  createdAt: Date;
  lastUsedAt: Date | null;
  vouchedAt: Date | null;
}

function toPasskey(r: {
  id: string;
  account_id: string;
  credential_id: string;
  public_key: Buffer;
  sign_count: string;
  transports: string[];
  rp_id: string;
  name: string;
  created_at: Date;
  last_used_at: Date | null;
  vouched_at: Date | null;
}): PasskeyRow {
  return {
    id: r.id,
    accountId: r.account_id,
    credentialId: r.credential_id,
    publicKey: r.public_key,
    signCount: Number(r.sign_count),
    transports: r.transports ?? [],
    rpId: r.rp_id,
    name: r.name,
    createdAt: r.created_at,
    lastUsedAt: r.last_used_at,
    vouchedAt: r.vouched_at,
  };
}

const PASSKEY_COLUMNS = ['id', 'account_id', 'credential_id', 'public_key', 'sign_count', 'transports', 'rp_id', 'name', 'created_at', 'last_used_at', 'vouched_at'] as const;

export async function activePasskeys(trx: Trx, accountId: string): Promise<PasskeyRow[]> {
  const rows = await trx.selectFrom('webauthn_credentials').select(PASSKEY_COLUMNS).where('account_id', '=', accountId).where('revoked_at', 'is', null).orderBy('created_at').execute();
  return rows.map(toPasskey);
}

export async function passkeyByCredentialId(trx: Trx, credentialId: string): Promise<PasskeyRow | undefined> {
  const r = await trx.selectFrom('webauthn_credentials').select(PASSKEY_COLUMNS).where('credential_id', '=', credentialId).where('revoked_at', 'is', null).executeTakeFirst();
  return r ? toPasskey(r) : undefined;
}

export async function passkeyById(trx: Trx, accountId: string, id: string): Promise<PasskeyRow | undefined> {
  const r = await trx.selectFrom('webauthn_credentials').select(PASSKEY_COLUMNS).where('id', '=', id).where('account_id', '=', accountId).where('revoked_at', 'is', null).executeTakeFirst();
  return r ? toPasskey(r) : undefined;
}

/* ------------------------------------------------------------ challenges */

export async function storeChallenge(
  trx: Trx,
  tenantId: string,
  c: { challenge: string; purpose: 'register' | 'authenticate'; accountId: string | null; boundTo: Buffer; userVerification: 'required' | 'preferred' },
  now: Date,
): Promise<void> {
  await trx.deleteFrom('webauthn_challenges').where('expires_at', '<', new Date(now.getTime() - 86_400_000)).execute();
  await trx
    .insertInto('webauthn_challenges')
    .values({
      tenant_id: tenantId,
      challenge: c.challenge,
      purpose: c.purpose,
      account_id: c.accountId,
      bound_to: c.boundTo,
      user_verification: c.userVerification,
      created_at: now,
      expires_at: new Date(now.getTime() + CHALLENGE_TTL_MS),
      used_at: null,
    })
    .execute();
}

/**
 * Claims a challenge: it must have been issued for this purpose to the
 * browser holding `boundTo`, be unexpired and unused. Used up even if what
 * follows fails: a challenge is good for one attempt.
 */
export async function takeChallenge(trx: Trx, c: { challenge: string; purpose: 'register' | 'authenticate'; boundTo: Buffer }, now: Date) {
  return trx
    .updateTable('webauthn_challenges')
    .set({ used_at: now })
    .where('challenge', '=', c.challenge)
    .where('purpose', '=', c.purpose)
    .where('bound_to', '=', c.boundTo)
    .where('used_at', 'is', null)
    .where('expires_at', '>', now)
    .returning(['account_id', 'user_verification'])
    .executeTakeFirst();
}
