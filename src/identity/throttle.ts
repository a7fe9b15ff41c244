import { createHmac } from 'node:crypto';
import { appendAuditManyHeld } from '../audit/log.ts';
import { LAST_OF_TRANSACTION } from '../db/held-begin.ts';
import type { AuditEventInput } from '../audit/events.ts';
import type { Ctx, Deps } from '../context.ts';
import { sql } from 'kysely';
import { counters, withCounters, type QuotaKind, type SignInCounts, type SignInWindows } from '../counters/counters.ts';
import { originOf } from '../context.ts';
import { PostgresCounters, SIGN_IN_COUNT_COLUMNS, signInCountsOf, signInCountsSql, type SignInCountsRow } from '../counters/postgres.ts';
import type { Trx } from '../db/connection.ts';
import { inTenant } from '../db/tenant.ts';
import { enqueueMail } from '../mail/outbox.ts';
import { originFields } from '../tenants/service.ts';
import { messages, type Locale } from '../web/i18n/index.ts';
import { signInMetric } from '../web/metrics.ts';

/**
 * Brute-force defence, on by default (OWASP Authentication Cheat Sheet,
 * "Protect against automated attacks"; NIST SP 800-63B §5.2.2 rate limiting):
 *  - per account: 5 failures in 15 minutes are free, then each attempt waits
 *    1, 2, 4, 8 … seconds after the last failure; at 10 the account is locked
 *    for 15 minutes and its holder is told by e-mail;
 *  - per source: 50 failures in 10 minutes block the address for 10 minutes;
 *  - password spraying: one source failing on 8 different accounts in 10
 *    minutes is blocked for 30 minutes, and the attempt is an audit event.
 * The account is keyed by a keyed hash of the address typed, so an address
 * without an account is throttled exactly like one with an account: the
 * answers reveal nothing. Every instance reads the same counters: rows in
 * the database, or Redis when REDIS_URL is set (src/counters/).
 */
export const THROTTLE = {
  accountWindowMs: 15 * 60_000,
  accountFreeFailures: 5,
  accountLockFailures: 10,
  accountLockMs: 15 * 60_000,
  sourceWindowMs: 10 * 60_000,
  sourceMaxFailures: 50,
  sourceBlockMs: 10 * 60_000,
  sprayAccounts: 8,
  sprayBlockMs: 30 * 60_000,
  signupsPerSourcePerHour: 20,
  /** Refused API keys recorded per source in ten minutes (recordApiKeyRefusal). */
  apiKeyRefusalsRecordedPerSource: 30,
  recoveriesPerSourcePerHour: 20,
  /** Passkey sign-in options asked for without an account: each stores a challenge, so a source gets so many. */
  passkeyOptionsPerSource: 60,
  passkeyOptionsWindowMs: 10 * 60_000,
  /** Links to add a privileged holder's first passkey: each is an e-mail, so an account gets so many an hour (src/identity/factors/mailbox.ts). */
  passkeyLinksPerAccount: 5,
  passkeyLinksWindowMs: 3600_000,
} as const;

export type Verdict = { ok: true } | { ok: false; retryAfterSeconds: number; reason: 'account' | 'source' | 'spraying' };

// The subkey is derived (HKDF) once per key provider, not on every attempt.
const throttleKeys = new WeakMap<object, Buffer>();

export function emailKey(deps: Deps, tenantId: string, email: string): Buffer {
  let key = throttleKeys.get(deps.keys);
  if (!key) throttleKeys.set(deps.keys, (key = deps.keys.derive('throttle')));
  return createHmac('sha256', key).update(`${tenantId}\n${email}`).digest();
}

const WINDOWS: SignInWindows = { accountMs: THROTTLE.accountWindowMs, sourceMs: THROTTLE.sourceWindowMs, sourceBlockMs: THROTTLE.sprayBlockMs };

function verdict(c: SignInCounts, now: Date): Verdict {
  const t = now.getTime();
  const wait = (until: number, reason: 'account' | 'source' | 'spraying'): Verdict | null =>
    until > t ? { ok: false, retryAfterSeconds: Math.ceil((until - t) / 1000), reason } : null;
  if (c.sourceLast && c.sourceAccounts >= THROTTLE.sprayAccounts) {
    const v = wait(c.sourceLast.getTime() + THROTTLE.sprayBlockMs, 'spraying');
    if (v) return v;
  }
  if (c.sourceLast && c.sourceFailures >= THROTTLE.sourceMaxFailures) {
    const v = wait(c.sourceLast.getTime() + THROTTLE.sourceBlockMs, 'source');
    if (v) return v;
  }
  const n = c.accountFailures;
  if (c.accountLast && n >= THROTTLE.accountLockFailures) {
    const v = wait(c.accountLast.getTime() + THROTTLE.accountLockMs, 'account');
    if (v) return v;
  } else if (c.accountLast && n >= THROTTLE.accountFreeFailures) {
    const v = wait(c.accountLast.getTime() + 1000 * 2 ** (n - THROTTLE.accountFreeFailures), 'account');
    if (v) return v;
  }
  return { ok: true };
}

/** What a password sign-in needs of the account. */
export interface SignInAccount {
  id: string;
  password_hash: string | null;
  status: string;
  email_verified_at: Date | null;
  locale: Locale;
}

/**
 * May this sign-in be attempted now? Asked before the password is checked,
 * in the sign-in's own tenant transaction, which reads the account with the
 * totals: one statement with the PostgreSQL counters (Redis answers the
 * totals beside it). The account is read only when the attempt may go on.
 */
export async function signInVerdict(deps: Deps, ctx: Ctx, email: string, trx: Trx): Promise<{ verdict: Verdict; account: SignInAccount | undefined }> {
  // The verdict is its transaction's only statement: on PostgreSQL it carries the COMMIT (src/db/held-begin.ts).
  const last = sql.raw(` ${LAST_OF_TRANSACTION}`);
  const c = counters();
  const key = emailKey(deps, ctx.tenant.id, email);
  let v: Verdict;
  let account: SignInAccount | undefined;
  if (c instanceof PostgresCounters) {
    const { rows } = await sql<SignInCountsRow & { id: string | null; password_hash: string | null; status: string; email_verified_at: Date | null; locale: Locale }>`
      SELECT ${SIGN_IN_COUNT_COLUMNS}, a.id, a.password_hash, a.status, a.email_verified_at, a.locale
      FROM ${signInCountsSql(key, ctx.ip, WINDOWS, ctx.now)} AS c LEFT JOIN accounts a ON a.email = ${email}${last}`.execute(trx);
    const r = rows[0]!;
    v = verdict(signInCountsOf(r), ctx.now);
    account = r.id ? { id: r.id, password_hash: r.password_hash, status: r.status, email_verified_at: r.email_verified_at, locale: r.locale } : undefined;
  } else {
    v = verdict(await c.signInCounts(null, ctx.tenant.id, key, ctx.ip, WINDOWS, ctx.now), ctx.now);
    if (v.ok) account = await trx.selectFrom('accounts').select(['id', 'password_hash', 'status', 'email_verified_at', 'locale']).where('email', '=', email).modifyEnd(last).executeTakeFirst();
  }
  if (!v.ok) signInMetric('throttled');
  return { verdict: v, account: v.ok ? account : undefined };
}

/**
 * Counts a right password. With the PostgreSQL counters the attempt's row
 * comes back for the caller to insert within a statement of its own (its
 * transaction's first: one round trip fewer); elsewhere it is counted here.
 */
export async function countSuccess(deps: Deps, ctx: Ctx, email: string): Promise<{ tenant_id: string; kind: 'signin_success'; email_key: Buffer; ip: string | null; at: Date } | null> {
  if (!(counters() instanceof PostgresCounters)) {
    await countSignIn(deps, ctx, email, true, null);
    return null;
  }
  signInMetric('success');
  return { tenant_id: ctx.tenant.id, kind: 'signin_success', email_key: emailKey(deps, ctx.tenant.id, email), ip: ctx.ip, at: ctx.now };
}

/** Counts a password check's outcome (in `trx` with the PostgreSQL counters); after a failure, the totals that include it. */
export async function countSignIn(deps: Deps, ctx: Ctx, email: string, ok: boolean, trx: Trx | null): Promise<SignInCounts | null> {
  signInMetric(ok ? 'success' : 'failure');
  const shared = counters();
  return shared.recordSignIn(shared.needsTransaction ? trx : null, ctx.tenant.id, emailKey(deps, ctx.tenant.id, email), ctx.ip, ok, WINDOWS, ctx.now);
}

/**
 * What a failure's totals call for, written in the caller's transaction: the
 * lock notice and its audit event at exactly the locking failure, the
 * spraying event at exactly the failure that makes a sprayer. `account` is
 * the account already looked up by the caller (null: none), or undefined to
 * look it up here. `before` are audit events of the same request that must
 * come first in the log; they are written in the same statement.
 */
export async function actOnCounts(trx: Trx, ctx: Ctx, email: string, c: SignInCounts, account: { id: string; locale: Locale } | null | undefined, before: readonly AuditEventInput[] = []): Promise<void> {
  const events: AuditEventInput[] = [...before];
  if (c.accountFailures === THROTTLE.accountLockFailures) {
    signInMetric('locked');
    const holder = account === undefined ? await trx.selectFrom('accounts').select(['id', 'locale']).where('email', '=', email).executeTakeFirst() : account;
    if (holder) {
      const m = messages(holder.locale);
      const minutes = THROTTLE.accountLockMs / 60_000;
      await enqueueMail(trx, ctx.tenant.id, { to: email, locale: holder.locale, template: 'account_locked', subject: m.security.lockedSubject, body: m.security.lockedBody(minutes, `${ctx.baseUrl}/signin`) }, ctx.now);
    }
    events.push({ action: 'identity.account.locked', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'account', targetIds: holder ? [holder.id] : [], details: { minutes: THROTTLE.accountLockMs / 60_000, known: !!holder } });
  }
  if (c.sourceAccounts === THROTTLE.sprayAccounts) {
    events.push({ action: 'identity.signin.spraying', outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'source', targetIds: ctx.ip ? [ctx.ip] : [], details: { accounts: c.sourceAccounts, failures: c.sourceFailures } });
  }
  await appendAuditManyHeld(trx, ctx.tenant.id, events, ctx.now);
}

/**
 * A cap per source on something anyone may ask for: at most `limit` in the
 * window, counted where every instance sees the same total; the request
 * that fits is counted as it passes.
 */
async function perSource(deps: Deps, ctx: Ctx, kind: QuotaKind, limit: number, windowMs: number, keyed: string): Promise<Verdict> {
  const q = await withCounters(
    (fn) => inTenant(deps.db.db, ctx.tenant.id, fn),
    (c, trx) => c.takeQuota(trx, ctx.tenant.id, kind, ctx.ip, emailKey(deps, ctx.tenant.id, keyed), limit, windowMs, ctx.now),
  );
  if (q.ok) return q;
  return { ok: false, retryAfterSeconds: Math.max(1, Math.ceil((q.first.getTime() + windowMs - ctx.now.getTime()) / 1000)), reason: 'source' };
}

/**
 * Refused API keys per source whose refusal is recorded: a burst of junk keys leaves its first events in the log,
 * enough to see it, and not one row each forever. The request is refused either way.
 */
export function recordApiKeyRefusal(deps: Deps, ctx: Ctx): Promise<Verdict> {
  return perSource(deps, ctx, 'api_key_failure', THROTTLE.apiKeyRefusalsRecordedPerSource, 600_000, 'api-key');
}

/** Sign-ups per source are capped: each one sends an e-mail. */
export function checkSignUp(deps: Deps, ctx: Ctx, email: string): Promise<Verdict> {
  return perSource(deps, ctx, 'signup', THROTTLE.signupsPerSourcePerHour, 3600_000, email);
}

/** Password-reset requests likewise: each one sends an e-mail, to any address typed. */
export function checkRecovery(deps: Deps, ctx: Ctx, email: string): Promise<Verdict> {
  return perSource(deps, ctx, 'recovery', THROTTLE.recoveriesPerSourcePerHour, 3600_000, email);
}

/**
 * Passkey sign-in needs no address, so its options are given to anyone — and
 * each one writes a challenge. One source gets THROTTLE.passkeyOptionsPerSource
 * in a window: plenty for a person, a ceiling for a script filling the table.
 */
export function checkPasskeyOptions(deps: Deps, ctx: Ctx): Promise<Verdict> {
  return perSource(deps, ctx, 'passkey_options', THROTTLE.passkeyOptionsPerSource, THROTTLE.passkeyOptionsWindowMs, `source:${ctx.ip ?? ''}`);
}

/** Attempts older than a day serve no window any more. */
export async function purgeAttempts(trx: Trx, now: Date): Promise<number> {
  const r = await trx.deleteFrom('auth_attempts').where('at', '<', new Date(now.getTime() - 24 * 3600_000)).executeTakeFirst();
  return Number(r.numDeletedRows);
}
