import { createHmac } from 'node:crypto';
import { sql } from 'kysely';
import { appendAudit } from '../audit/log.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import { inTenant } from '../db/tenant.ts';
import { enqueueMail } from '../mail/outbox.ts';
import { originFields } from '../tenants/service.ts';
import { messages } from '../web/i18n/index.ts';

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
 * answers reveal nothing. Every instance reads the same rows.
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
  recoveriesPerSourcePerHour: 20,
  /** Passkey sign-in options asked for without an account: each stores a challenge, so a source gets so many. */
  passkeyOptionsPerSource: 60,
  passkeyOptionsWindowMs: 10 * 60_000,
} as const;

export type Verdict = { ok: true } | { ok: false; retryAfterSeconds: number; reason: 'account' | 'source' | 'spraying' };

export function emailKey(deps: Deps, tenantId: string, email: string): Buffer {
  return createHmac('sha256', deps.keys.derive('throttle')).update(`${tenantId}\n${email}`).digest();
}

interface Counts {
  account_failures: string;
  account_last: Date | null;
  source_failures: string;
  source_last: Date | null;
  source_accounts: string;
}

async function counts(trx: Trx, key: Buffer, ip: string | null, now: Date): Promise<Counts> {
  const accountSince = new Date(now.getTime() - THROTTLE.accountWindowMs);
  const sourceSince = new Date(now.getTime() - Math.max(THROTTLE.sourceWindowMs, THROTTLE.sprayBlockMs));
  const sprayWindowStart = new Date(now.getTime() - THROTTLE.sourceWindowMs);
  // A success resets the account's count: failures are counted after the last one.
  const { rows } = await sql<Counts>`
    WITH last_ok AS (
      SELECT coalesce(max(at), '-infinity'::timestamptz) AS at FROM auth_attempts
      WHERE email_key = ${key} AND kind = 'signin_success' AND at > ${accountSince}
    )
    SELECT
      (SELECT count(*) FROM auth_attempts, last_ok WHERE email_key = ${key} AND kind = 'signin_failure'
         AND auth_attempts.at > ${accountSince} AND auth_attempts.at > last_ok.at) AS account_failures,
      (SELECT max(at) FROM auth_attempts WHERE email_key = ${key} AND kind = 'signin_failure' AND at > ${accountSince}) AS account_last,
      (SELECT count(*) FROM auth_attempts WHERE ip = ${ip} AND kind = 'signin_failure' AND at > ${sprayWindowStart}) AS source_failures,
      (SELECT max(at) FROM auth_attempts WHERE ip = ${ip} AND kind = 'signin_failure' AND at > ${sourceSince}) AS source_last,
      (SELECT count(DISTINCT email_key) FROM auth_attempts WHERE ip = ${ip} AND kind = 'signin_failure' AND at > ${sprayWindowStart}) AS source_accounts`.execute(trx);
  return rows[0]!;
}

function verdict(c: Counts, now: Date): Verdict {
  const t = now.getTime();
  const wait = (until: number, reason: 'account' | 'source' | 'spraying'): Verdict | null =>
    until > t ? { ok: false, retryAfterSeconds: Math.ceil((until - t) / 1000), reason } : null;
  if (c.source_last && Number(c.source_accounts) >= THROTTLE.sprayAccounts) {
    const v = wait(c.source_last.getTime() + THROTTLE.sprayBlockMs, 'spraying');
    if (v) return v;
  }
  if (c.source_last && Number(c.source_failures) >= THROTTLE.sourceMaxFailures) {
    const v = wait(c.source_last.getTime() + THROTTLE.sourceBlockMs, 'source');
    if (v) return v;
  }
  const n = Number(c.account_failures);
  if (c.account_last && n >= THROTTLE.accountLockFailures) {
    const v = wait(c.account_last.getTime() + THROTTLE.accountLockMs, 'account');
    if (v) return v;
  } else if (c.account_last && n >= THROTTLE.accountFreeFailures) {
    const v = wait(c.account_last.getTime() + 1000 * 2 ** (n - THROTTLE.accountFreeFailures), 'account');
    if (v) return v;
  }
  return { ok: true };
}

/** May this sign-in be attempted now? Asked before the password is checked. */
export async function checkSignIn(deps: Deps, ctx: Ctx, email: string): Promise<Verdict> {
  const key = emailKey(deps, ctx.tenant.id, email);
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => verdict(await counts(trx, key, ctx.ip, ctx.now), ctx.now));
}

/**
 * Records the outcome of a password check. On the failure that locks the
 * account its holder gets an e-mail; on the failure that makes a source a
 * sprayer the tenant's audit log says so.
 */
export async function recordSignIn(deps: Deps, ctx: Ctx, email: string, ok: boolean): Promise<void> {
  const key = emailKey(deps, ctx.tenant.id, email);
  await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    await trx.insertInto('auth_attempts').values({ tenant_id: ctx.tenant.id, kind: ok ? 'signin_success' : 'signin_failure', email_key: key, ip: ctx.ip, at: ctx.now }).execute();
    if (ok) return;
    const c = await counts(trx, key, ctx.ip, ctx.now);
    if (Number(c.account_failures) === THROTTLE.accountLockFailures) {
      const account = await trx.selectFrom('accounts').select(['id', 'locale']).where('email', '=', email).executeTakeFirst();
      if (account) {
        const m = messages(account.locale);
        const minutes = THROTTLE.accountLockMs / 60_000;
        await enqueueMail(trx, ctx.tenant.id, { to: email, locale: account.locale, template: 'account_locked', subject: m.security.lockedSubject, body: m.security.lockedBody(minutes, `${ctx.baseUrl}/signin`) }, ctx.now);
      }
      await appendAudit(trx, ctx.tenant.id, { action: 'identity.account.locked', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'account', targetIds: account ? [account.id] : [], details: { minutes: THROTTLE.accountLockMs / 60_000, known: !!account } }, ctx.now);
    }
    if (Number(c.source_accounts) === THROTTLE.sprayAccounts) {
      await appendAudit(trx, ctx.tenant.id, { action: 'identity.signin.spraying', outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'source', targetIds: ctx.ip ? [ctx.ip] : [], details: { accounts: Number(c.source_accounts), failures: Number(c.source_failures) } }, ctx.now);
    }
  });
}

/**
 * A cap per source on something anyone may ask for: at most `limit` in the
 * window, counted in the database (every instance sees the same rows); the
 * request that fits is counted as it passes.
 */
async function perSource(deps: Deps, ctx: Ctx, kind: 'signup' | 'passkey_options' | 'recovery', limit: number, windowMs: number, keyed: string): Promise<Verdict> {
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const since = new Date(ctx.now.getTime() - windowMs);
    const r = await trx
      .selectFrom('auth_attempts')
      .select([sql<string>`count(*)`.as('n'), sql<Date | null>`min(at)`.as('first')])
      .where('ip', '=', ctx.ip)
      .where('kind', '=', kind)
      .where('at', '>', since)
      .executeTakeFirst();
    if (Number(r?.n ?? 0) >= limit && r?.first) {
      return { ok: false, retryAfterSeconds: Math.max(1, Math.ceil((r.first.getTime() + windowMs - ctx.now.getTime()) / 1000)), reason: 'source' };
    }
    await trx.insertInto('auth_attempts').values({ tenant_id: ctx.tenant.id, kind, email_key: emailKey(deps, ctx.tenant.id, keyed), ip: ctx.ip, at: ctx.now }).execute();
    return { ok: true };
  });
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
