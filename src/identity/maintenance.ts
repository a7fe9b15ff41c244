import type { Deps } from '../context.ts';
import { inTenant } from '../db/tenant.ts';
import { purgeAttempts } from './throttle.ts';

/** Hourly clean-up of identity housekeeping rows, per tenant. Returns a stop function. */
export function startIdentityMaintenance(deps: Deps, intervalMs = 3600_000): () => void {
  const run = async () => {
    try {
      for (const t of await deps.tenants.all()) {
        await inTenant(deps.db.db, t.id, (trx) => purgeAttempts(trx, deps.clock()));
      }
    } catch (err) {
      deps.log.error({ err }, 'identity maintenance failed');
    }
  };
  const timer = setInterval(() => void run(), intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
