import { sql } from 'kysely';
import type { Trx } from '../db/connection.ts';
import type { DetectionSignal } from '../db/schema.ts';
import type { Quota, QuotaKind, SharedCounters, SignInCounts, SignInWindows } from './counters.ts';

function need(trx: Trx | null): Trx {
  if (!trx) throw new Error('PostgreSQL counters: a tenant transaction is required');
  return trx;
}

export interface SignInCountsRow {
  account_failures: string;
  account_last: Date | null;
  source_failures: string;
  source_last: Date | null;
  source_accounts: string;
}

/**
 * The sign-in totals as a one-row subquery, for a caller that reads them with
 * its own row in the same statement (the sign-in reads the account with them).
 * A success resets the account's count: failures are counted after the last one.
 */
export function signInCountsSql(key: Buffer, ip: string | null, w: SignInWindows, now: Date) {
  const accountSince = new Date(now.getTime() - w.accountMs);
  const sourceSince = new Date(now.getTime() - Math.max(w.sourceMs, w.sourceBlockMs));
  const sprayWindowStart = new Date(now.getTime() - w.sourceMs);
  return sql<SignInCountsRow>`(
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
      (SELECT count(DISTINCT email_key) FROM auth_attempts WHERE ip = ${ip} AND kind = 'signin_failure' AND at > ${sprayWindowStart}) AS source_accounts)`;
}

/**
 * The subquery's columns by name, for reading it as `c`: a statement that
 * names its columns is prepared on the connection (src/db/held-begin.ts),
 * one with `c.*` is planned anew every time — five index scans' worth of
 * planning on every sign-in.
 */
export const SIGN_IN_COUNT_COLUMNS = sql.raw('c.account_failures, c.account_last, c.source_failures, c.source_last, c.source_accounts');

export function signInCountsOf(r: SignInCountsRow): SignInCounts {
  return {
    accountFailures: Number(r.account_failures),
    accountLast: r.account_last ? new Date(r.account_last) : null,
    sourceFailures: Number(r.source_failures),
    sourceLast: r.source_last ? new Date(r.source_last) : null,
    sourceAccounts: Number(r.source_accounts),
  };
}

/**
 * Counters as rows (auth_attempts, detection_hits), read by the tenant's
 * row-level security like everything else; a count is a query, and old rows
 * are purged by the periodic jobs.
 */
export class PostgresCounters implements SharedCounters {
  readonly kind = 'postgres' as const;
  readonly needsTransaction = true;

  async signInCounts(t: Trx | null, _tenantId: string, key: Buffer, ip: string | null, w: SignInWindows, now: Date): Promise<SignInCounts> {
    const { rows } = await sql<SignInCountsRow>`SELECT ${SIGN_IN_COUNT_COLUMNS} FROM ${signInCountsSql(key, ip, w, now)} AS c`.execute(need(t));
    return signInCountsOf(rows[0]!);
  }

  async recordSignIn(t: Trx | null, tenantId: string, key: Buffer, ip: string | null, ok: boolean, w: SignInWindows, now: Date): Promise<SignInCounts | null> {
    const trx = need(t);
    await trx.insertInto('auth_attempts').values({ tenant_id: tenantId, kind: ok ? 'signin_success' : 'signin_failure', email_key: key, ip, at: now }).execute();
    return ok ? null : this.signInCounts(trx, tenantId, key, ip, w, now);
  }

  async takeQuota(t: Trx | null, tenantId: string, kind: QuotaKind, ip: string | null, key: Buffer, limit: number, windowMs: number, now: Date): Promise<Quota> {
    const trx = need(t);
    const since = new Date(now.getTime() - windowMs);
    const r = await trx
      .selectFrom('auth_attempts')
      .select([sql<string>`count(*)`.as('n'), sql<Date | null>`min(at)`.as('first')])
      .where('ip', '=', ip)
      .where('kind', '=', kind)
      .where('at', '>', since)
      .executeTakeFirst();
    if (Number(r?.n ?? 0) >= limit && r?.first) return { ok: false, first: new Date(r.first) };
    await trx.insertInto('auth_attempts').values({ tenant_id: tenantId, kind, email_key: key, ip, at: now }).execute();
    return { ok: true };
  }

  async windowTotals(t: Trx | null, _tenantId: string, accountId: string, signal: DetectionSignal, windowSeconds: readonly number[], now: Date): Promise<number[]> {
    const trx = need(t);
    if (!windowSeconds.length) return [];
    const oldest = new Date(now.getTime() - Math.max(...windowSeconds) * 1000);
    const sums = windowSeconds.map((w, i) => sql<string>`coalesce(sum(weight) FILTER (WHERE at > ${new Date(now.getTime() - w * 1000)}), 0)`.as(`w${i}`));
    const row = (await trx
      .selectFrom('detection_hits')
      .select(sums)
      .where('account_id', '=', accountId)
      .where('signal', '=', signal)
      .where('at', '>', oldest)
      .executeTakeFirst()) as Record<string, string> | undefined;
    return windowSeconds.map((_, i) => Number(row?.[`w${i}`] ?? 0));
  }

  async addHit(t: Trx | null, tenantId: string, accountId: string, signal: DetectionSignal, weight: number, now: Date): Promise<void> {
    await need(t).insertInto('detection_hits').values({ tenant_id: tenantId, account_id: accountId, signal, weight, at: now }).execute();
  }

  async close(): Promise<void> {}
}
