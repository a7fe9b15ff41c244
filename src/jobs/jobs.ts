import { Sealer, type SealerOptions } from '../audit/sealer.ts';
import { witnessConfig } from '../audit/witness.ts';
import type { Deps } from '../context.ts';
import { startDetectionWork } from '../detection/stream.ts';
import { startIdentityMaintenance } from '../identity/maintenance.ts';
import { MailSender } from '../mail/sender.ts';
import { retentionHour, startRetentionSchedule } from '../privacy/retention.ts';
import { startConfirmationSchedule } from '../records/confirmation.ts';
import { startOfferExpiry } from '../waitlist/offer-expiry.ts';

/**
 * The background work of Guichet, in one place: `guichet serve` runs it in
 * its own process (the default, so one command is a whole installation) and
 * `guichet worker` runs it beside servers started with GUICHET_JOBS=off.
 *
 * Every job is safe with several processes running it at once, so a worker
 * beside a server that still runs its jobs, or two workers, only share the
 * work:
 * - sealer: one seal per tenant at a time, under a tried advisory lock
 *   (src/audit/sealer.ts); a busy tenant is skipped that pass;
 * - detection stream: each tenant's cursor row is taken FOR UPDATE SKIP
 *   LOCKED, so one reader reads a stretch of the log, once;
 * - webhook deliveries and mail: rows taken FOR UPDATE SKIP LOCKED, marked
 *   in the same transaction;
 * - retention: a session advisory lock, tried (another instance running it
 *   means this one skips the day);
 * - purges of old throttle attempts, detection hits and expired OpenID
 *   Connect rows: deletes by age, which give the same result run twice;
 * - confirmation reminders and inactivity, offer expiry: the files or offers
 *   due are taken FOR UPDATE SKIP LOCKED and changed in the same transaction.
 *
 * The loops that run several times a second (sealer, detection stream,
 * webhooks, mail) look at every tenant only when their kind of work has been
 * written since their last pass that found nothing (src/jobs/quiet.ts,
 * migration 0040): idle, a tick is one query, however many tenants.
 */
export const JOB_NAMES = ['sealer', 'detection', 'mail', 'maintenance', 'retention', 'confirmation', 'offer-expiry'] as const;
export type JobName = (typeof JOB_NAMES)[number];

export interface RunningJobs {
  /** The jobs started (mail only with SMTP_URL, retention unless GUICHET_RETENTION_HOUR=off). */
  readonly names: readonly JobName[];
  /** Stops every job, each finishing what it was doing. */
  stop(): Promise<void>;
}

/**
 * Starts the background jobs (all, or those named). Settings are read now,
 * like the rest of the configuration: a bad one stops the start, naming the
 * variable, before anything runs.
 */
/** GUICHET_SEALER_TENANTS: tenant slugs or ids, comma-separated, that this process seals; unset: every tenant. */
export function sealerTenantsFromEnv(env: NodeJS.ProcessEnv): SealerOptions['tenantFilter'] {
  const list = (env.GUICHET_SEALER_TENANTS ?? '').split(',').map((x) => x.trim()).filter(Boolean);
  if (!list.length) return undefined;
  const wanted = new Set(list);
  return (t) => wanted.has(t.slug) || wanted.has(t.id);
}

export function startJobs(deps: Deps, only: readonly JobName[] = JOB_NAMES, opts: { tenantFilter?: SealerOptions['tenantFilter'] } = {}): RunningJobs {
  const want = new Set(only);
  const witness = want.has('sealer') ? witnessConfig(process.env, deps.config.dataDir) : null;
  const hour = want.has('retention') ? retentionHour(process.env) : null;
  const stops: (() => Promise<void> | void)[] = [];
  const names: JobName[] = [];
  if (witness) {
    const tenantFilter = opts.tenantFilter ?? sealerTenantsFromEnv(process.env);
    const sealer = new Sealer(deps.db.db, deps.keys, deps.log, { witness, clock: deps.clock, ...(tenantFilter ? { tenantFilter } : {}) });
    sealer.start();
    stops.push(() => sealer.stop());
    names.push('sealer');
  }
  if (want.has('detection')) {
    stops.push(startDetectionWork(deps));
    names.push('detection');
  }
  if (want.has('mail') && deps.config.smtpUrl) {
    const sender = new MailSender(deps, deps.config.smtpUrl);
    sender.start();
    stops.push(() => sender.stop());
    names.push('mail');
  }
  if (want.has('maintenance')) {
    stops.push(startIdentityMaintenance(deps));
    names.push('maintenance');
  }
  if (hour !== null) {
    stops.push(startRetentionSchedule(deps, hour));
    names.push('retention');
  }
  if (want.has('confirmation')) {
    // Reminders link to the parent's file: the public address when set, the local one in a demo.
    stops.push(startConfirmationSchedule(deps, deps.config.publicUrl ?? `http://localhost:${deps.config.port}`));
    names.push('confirmation');
  }
  if (want.has('offer-expiry')) {
    // Offers past their deadline expire and the place goes to the next child (FOR UPDATE SKIP LOCKED: instances share the work).
    stops.push(startOfferExpiry(deps));
    names.push('offer-expiry');
  }
  let stopping: Promise<void> | null = null;
  return {
    names,
    stop: () =>
      (stopping ??= (async () => {
        // Newest first; one job failing to stop does not keep the others running.
        for (const s of stops.reverse()) {
          try {
            await s();
          } catch (err) {
            deps.log.error({ err }, 'a background job did not stop cleanly');
          }
        }
      })()),
  };
}
