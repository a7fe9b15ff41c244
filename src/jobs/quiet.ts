import { sql, type Kysely } from 'kysely';
import type { DB } from '../db/schema.ts';

/**
 * The kinds of background work whose writers signal it (migration 0040):
 * 'audit' events appended (the sealer's), 'sealed' leaves (the detection
 * stream's), 'webhook' deliveries and 'mail' queued.
 */
export type WorkKind = 'audit' | 'sealed' | 'webhook' | 'mail';

/** How a pass ended: `quiet` when it found nothing to do and left nothing waiting; `wakeInMs` when work is due in that long. */
export interface PassOutcome {
  quiet: boolean;
  wakeInMs?: number;
}

/** A full pass at least this often, whatever the signal says. */
const RECHECK_MS = 10_000;

/**
 * Lets a background loop skip the pass over every tenant when nothing of its
 * kind has been written since its last pass that found nothing: one small
 * query instead of a transaction per tenant. Why this never skips committed
 * work is in migration 0040.
 *
 * A full pass still runs at least every RECHECK_MS: work another instance
 * took and then dropped by dying (its rows were locked, so the pass that
 * skipped them was quiet), or rows written with the triggers off.
 */
export class QuietWatch {
  private quietMark: string | null = null;
  private lastPass = 0;
  private wakeAt = Infinity;
  /** Passes run and skipped, for tests and the idle benchmark. */
  readonly counts = { passes: 0, skipped: 0 };

  constructor(
    private readonly db: Kysely<DB>,
    private readonly kind: WorkKind,
    /** Off: every tick is a full pass, as before migration 0040 (the idle benchmark's baseline). */
    private readonly enabled = true,
  ) {}

  /**
   * Before a pass: null to skip it, or the function to call with how the pass
   * ended. The mark is read before the pass, so that what is written during
   * it moves the mark past the one kept.
   */
  async begin(): Promise<((outcome: PassOutcome) => void) | null> {
    if (!this.enabled) {
      this.counts.passes++;
      return () => {};
    }
    const { rows } = await sql<{ mark: string | null; in_flight: boolean }>`SELECT mark::text AS mark, in_flight FROM work_signal_read(${this.kind})`.execute(this.db);
    const mark = rows[0]?.mark ?? null;
    const inFlight = rows[0]?.in_flight ?? true;
    const now = Date.now();
    if (this.quietMark !== null && mark === this.quietMark && now - this.lastPass < RECHECK_MS && now < this.wakeAt) {
      this.counts.skipped++;
      return null;
    }
    this.counts.passes++;
    // Until the pass says otherwise: one that fails leaves the next tick to run again.
    this.quietMark = null;
    return (outcome) => {
      this.lastPass = Date.now();
      this.quietMark = outcome.quiet && !inFlight && mark !== null ? mark : null;
      this.wakeAt = outcome.wakeInMs === undefined ? Infinity : this.lastPass + outcome.wakeInMs;
    };
  }
}
