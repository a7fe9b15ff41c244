import type { Deps } from '../context.ts';
import { inTenant } from '../db/tenant.ts';
import { sweepExpired } from '../oidc/adapter.ts';
import { purgeAttempts } from './throttle.ts';

/** Hourly clean-up of identity housekeeping rows, per tenant. Returns a stop function. */
export function startIdentityMaintenance(deps: Deps, intervalMs = 3600_000): () => void {
  const run = async () => {
    try {
      const tenants = await deps.tenants.all();
      for (const t of tenants) {
        await inTenant(deps.db.db, t.id, (trx) => purgeAttempts(trx, deps.clock()));
      }
      // Expired OpenID Connect codes, tokens, sessions and interactions (never read once expired).
      await sweepExpired(deps.db.db, tenants.map((t) => t.id), deps.clock());
    } catch (err) {
      deps.log.error({ err }, 'identity maintenance failed');
    }
  };
  const timer = setInterval(() => void run(), intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
