import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import type { Trx } from '../db/connection.ts';
import type { DetectionSignal } from '../db/schema.ts';
import { counters } from '../counters/counters.ts';
import { MAX_WINDOW_SECONDS, type DetectionRule } from './rules.ts';

/**
 * Sliding windows shared by every instance: each counted event is a row of
 * detection_hits (or a member of a Redis sorted set when REDIS_URL is set,
 * src/counters/), and a window's total is a sum over the events younger than
 * it. Nothing is held in a process's memory, so a reader spread over several
 * instances is counted at the same total as one who uses only one.
 *
 * Two reads by the same actor at the same moment (two instances, two tabs)
 * must not both see 20 and both be served: the count and the insert happen
 * under a transaction-level advisory lock on (tenant, actor) — in PostgreSQL
 * whichever store holds the counts — so one actor's
 * counted reads are taken one after the other while everybody else's run
 * side by side.
 */

function lockKey(tenantId: string, accountId: string): string {
  return createHash('sha256').update(`detection:${tenantId}:${accountId}`).digest().readBigInt64BE(0).toString();
}

/** Takes one actor's detection lock until the end of the transaction. */
export async function lockActor(trx: Trx, tenantId: string, accountId: string): Promise<void> {
  await sql`SELECT pg_advisory_xact_lock(${lockKey(tenantId, accountId)}::bigint)`.execute(trx);
}

export interface WindowCheck {
  /** Rules whose threshold this event takes the total above (it was at or below before). */
  crossed: DetectionRule[];
  /** Each applicable rule's total before this event. */
  before: Map<string, number>;
  batchActive: boolean;
}

/**
 * Locks the actor's windows, sums them and says which rules this event would
 * cross. Does not record the event: record() does that once the caller knows
 * the event is served.
 */
export async function checkWindows(trx: Trx, accountId: string, tenantId: string, signal: DetectionSignal, weight: number, rules: readonly DetectionRule[], now: Date): Promise<WindowCheck> {
  await lockActor(trx, tenantId, accountId);
  const applicable = rules.filter((r) => r.signal === signal);
  if (!applicable.length) return { crossed: [], before: new Map(), batchActive: false };
  const windows = [...new Set(applicable.map((r) => Math.min(r.windowSeconds, MAX_WINDOW_SECONDS)))];
  const totals = await counters().windowTotals(trx, tenantId, accountId, signal, windows, now);
  const totalFor = (w: number) => totals[windows.indexOf(Math.min(w, MAX_WINDOW_SECONDS))] ?? 0;
  const batchActive = applicable.some((r) => r.exceptDeclaredBatch)
    ? !!(await trx.selectFrom('detection_batches').select('id').where('account_id', '=', accountId).where('starts_at', '<=', now).where('ends_at', '>', now).executeTakeFirst())
    : false;
  const before = new Map<string, number>();
  const crossed: DetectionRule[] = [];
  for (const r of applicable) {
    if (r.exceptDeclaredBatch && batchActive) continue;
    const b = totalFor(r.windowSeconds);
    before.set(r.code, b);
    if (b <= r.threshold && b + weight > r.threshold) crossed.push(r);
  }
  return { crossed, before, batchActive };
}

/**
 * Counts a served event in the actor's windows. As rows, in the read's
 * transaction: it counts only if the read commits. In Redis, at once, still
 * under the actor's lock: a read that fails after being weighed still
 * counts, which errs on the side of the intruder's total.
 */
export async function record(trx: Trx, tenantId: string, accountId: string, signal: DetectionSignal, weight: number, now: Date): Promise<void> {
  await counters().addHit(trx, tenantId, accountId, signal, weight, now);
}

/** Hits older than the longest window count for nothing any more. */
export async function purgeHits(trx: Trx, now: Date): Promise<number> {
  const r = await trx.deleteFrom('detection_hits').where('at', '<', new Date(now.getTime() - MAX_WINDOW_SECONDS * 1000)).executeTakeFirst();
  return Number(r.numDeletedRows ?? 0);
}
