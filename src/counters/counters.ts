import type { Trx } from '../db/connection.ts';
import type { DetectionSignal } from '../db/schema.ts';
import { PostgresCounters } from './postgres.ts';

/**
 * The counters every instance must share: the sign-in throttle's attempts
 * (src/identity/throttle.ts) and detection's sliding windows
 * (src/detection/counters.ts). Two implementations behave the same:
 * PostgreSQL rows (the default, nothing more to run) and Redis (REDIS_URL),
 * which takes the counting load and the purge off the database.
 *
 * Every method receives the caller's tenant transaction: the PostgreSQL
 * implementation counts in it (so a count commits or rolls back with the
 * request's work); the Redis one ignores it and answers from keys that
 * expire by themselves. Callers that need a transaction only for counting
 * ask `needsTransaction` first.
 */
export interface SignInCounts {
  /** Failures for the account since its last success, in the account window. */
  accountFailures: number;
  /** The account's latest failure in the account window (successes do not move it). */
  accountLast: Date | null;
  /** The source's failures in the source window. */
  sourceFailures: number;
  /** The source's latest failure in the longest source block (spraying). */
  sourceLast: Date | null;
  /** Distinct accounts the source failed on in the source window. */
  sourceAccounts: number;
}

export interface SignInWindows {
  accountMs: number;
  sourceMs: number;
  /** How far back the source's latest failure still blocks (the longest source block). */
  sourceBlockMs: number;
}

export type QuotaKind = 'signup' | 'passkey_options' | 'recovery' | 'api_key_failure';

export type Quota = { ok: true } | { ok: false; first: Date };

export interface SharedCounters {
  readonly kind: 'postgres' | 'redis';
  /** False when the counters live outside the database: a caller may then skip opening a transaction. */
  readonly needsTransaction: boolean;
  signInCounts(trx: Trx | null, tenantId: string, emailKey: Buffer, ip: string | null, windows: SignInWindows, now: Date): Promise<SignInCounts>;
  /** Records a password check's outcome; after a failure, the counts that include it (atomically). */
  recordSignIn(trx: Trx | null, tenantId: string, emailKey: Buffer, ip: string | null, ok: boolean, windows: SignInWindows, now: Date): Promise<SignInCounts | null>;
  /** At most `limit` of `kind` per source in the window: takes one if it fits. */
  takeQuota(trx: Trx | null, tenantId: string, kind: QuotaKind, ip: string | null, emailKey: Buffer, limit: number, windowMs: number, now: Date): Promise<Quota>;
  /** One actor's weighted totals of a signal over each window (seconds), before `now`. */
  windowTotals(trx: Trx | null, tenantId: string, accountId: string, signal: DetectionSignal, windowSeconds: readonly number[], now: Date): Promise<number[]>;
  /** Counts an event in the actor's windows. */
  addHit(trx: Trx | null, tenantId: string, accountId: string, signal: DetectionSignal, weight: number, now: Date): Promise<void>;
  close(): Promise<void>;
}

let current: SharedCounters = new PostgresCounters();

/** The counters of this process: PostgreSQL unless REDIS_URL chose Redis at start. */
export function counters(): SharedCounters {
  return current;
}

/** Chooses the process's counters (at start, from the configuration); returns the previous ones. */
export function useCounters(c: SharedCounters): SharedCounters {
  const previous = current;
  current = c;
  return previous;
}

/** Runs `fn` in the tenant transaction the counters need, or without one when they live elsewhere. */
export async function withCounters<T>(open: <R>(fn: (trx: Trx) => Promise<R>) => Promise<R>, fn: (c: SharedCounters, trx: Trx | null) => Promise<T>): Promise<T> {
  const c = current;
  return c.needsTransaction ? open((trx) => fn(c, trx)) : fn(c, null);
}
