/**
 * `guichet allocate`: a coordinated allocation round for one tenant, or the
 * replay of a stored one. The round itself is src/waitlist/allocation.ts; the
 * reads and writes are src/records/allocation.ts.
 */
import { parseArgs } from 'node:util';
import type { Kysely } from 'kysely';
import type { AuditOrigin } from '../audit/events.ts';
import { loadKeyProvider } from '../crypto/keys.ts';
import type { DB } from '../db/schema.ts';
import { AllocationNotEnabled, replayAllocation, runAllocation } from '../records/allocation.ts';
import type { Tenant } from '../tenants/service.ts';
import { today as quebecToday } from '../waitlist/dates.ts';
import { progress } from './progress.ts';

export interface AllocateDeps {
  withDatabase: <T>(fn: (db: Kysely<DB>) => Promise<T>) => Promise<T>;
  tenant: (db: Kysely<DB>, slug: string | undefined) => Promise<Tenant>;
  origin: (command: string) => AuditOrigin;
  /** Where the tenant's pages are, for the links in the families' e-mails. */
  baseUrl: (tenant: Tenant) => string;
  usage: (message: string) => Error;
  out: (text: string) => void;
  err: (text: string) => void;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export async function allocateCommand(args: string[], deps: AllocateDeps): Promise<number> {
  const { values } = parseArgs({ args, options: { tenant: { type: 'string' }, 'dry-run': { type: 'boolean' }, replay: { type: 'string' }, today: { type: 'string' }, 'deadline-days': { type: 'string' } } });
  const now = new Date();
  // Quebec's date, as every list reads it (late in the evening, UTC is already tomorrow).
  const today = values.today ?? quebecToday(now);
  if (!/^\d{4}-\d{2}-\d{2}$/.test(today) || Number.isNaN(Date.parse(today))) throw deps.usage('--today: a date YYYY-MM-DD');
  const askedDays = values['deadline-days'] === undefined ? null : Number(values['deadline-days']);
  if (askedDays !== null && (!Number.isInteger(askedDays) || askedDays < 1 || askedDays > 60)) throw deps.usage('--deadline-days: a whole number from 1 to 60');
  if (values.replay !== undefined && !UUID.test(values.replay)) throw deps.usage('--replay: a run id (a UUID, as `guichet allocate` printed it)');
  const keys = loadKeyProvider(process.env, process.env.GUICHET_DATA_DIR || './data');
  try {
    return await deps.withDatabase(async (db) => {
      const tenant = await deps.tenant(db, values.tenant);
      const bar = progress();
      if (values.replay) {
        bar.phase('replay');
        const r = await replayAllocation(db, keys, tenant.id, values.replay, deps.origin('allocate --replay'), now).catch((err: Error) => {
          if (err.message === 'notFound' || (err as { code?: string }).code === 'notFound') return null;
          throw err;
        });
        bar.done();
        if (!r) {
          deps.err(`guichet: no allocation run ${values.replay} in tenant ${tenant.slug}\n`);
          return 1;
        }
        deps.out(`run ${values.replay}: ${r.children} children replayed in ${r.seconds.toFixed(2)} s\nstored outputs hash   ${r.storedOutputsHash}\nreplayed outputs hash ${r.replayedOutputsHash ?? '—'}\n`);
        if (!r.ok) {
          deps.err(`guichet: replay FAILED: ${r.problem}\n`);
          return 1;
        }
        deps.out('replay OK: signature, inputs and outputs match\n');
        return 0;
      }
      try {
        const s = await runAllocation(db, keys, tenant, {
          dryRun: !!values['dry-run'],
          today,
          // The tenant's own number of days to answer unless the command names another, counted its way (offerDeadline).
          deadlineDays: askedDays ?? tenant.rules.offers.deadlineDays,
          baseUrl: deps.baseUrl(tenant),
          now,
          origin: deps.origin(values['dry-run'] ? 'allocate --dry-run' : 'allocate'),
          onPhase: (p) => bar.phase(p),
          onProgress: (d, n) => bar.update(d, n),
        });
        bar.done();
        const pct = s.children ? ((100 * s.placed) / s.children).toFixed(1) : '0';
        deps.out(
          `${values['dry-run'] ? 'dry run (no offers made, no result stored; which files it read is kept, for the families\' access lists)' : `run ${s.runId}`}\n` +
            `${s.children} children, ${s.applications} applications: ${s.placed} placed (${pct} %)\n` +
            `by choice: ${s.byChoice.map((n, i) => `${i + 1}: ${n}`).join(', ') || '—'}\n` +
            `inputs hash  ${s.inputsHash}\noutputs hash ${s.outputsHash}\n` +
            `load ${s.seconds.load.toFixed(2)} s, round ${s.seconds.round.toFixed(2)} s, write ${s.seconds.write.toFixed(2)} s\n`,
        );
        return 0;
      } catch (err) {
        if (err instanceof AllocationNotEnabled) {
          bar.done();
          deps.err(`guichet: tenant ${tenant.slug}: ${err.message}\n`);
          return 2;
        }
        throw err;
      }
    });
  } finally {
    await keys.close();
  }
}
