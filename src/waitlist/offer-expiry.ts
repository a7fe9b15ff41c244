import type { Ctx, Deps } from '../context.ts';
import { expireDueOffers } from '../records/offers.ts';
import { tenantBaseUrl } from '../tenants/service.ts';

/**
 * Offers past their deadline expire and their places go to the next child.
 * Runs in every server process, every minute, like the identity maintenance:
 * each offer is taken FOR UPDATE SKIP LOCKED in its own transaction, so
 * several instances share the work and none expires an offer twice.
 */
export async function runOfferExpiry(deps: Deps): Promise<number> {
  let n = 0;
  for (const tenant of await deps.tenants.all()) {
    // The links in the next parents' e-mails lead to the tenant's own address, as a request's would.
    const baseUrl = tenantBaseUrl(deps.config, tenant.hosts);
    const ctx: Ctx = { tenant, actor: null, ip: null, userAgent: 'guichet offer expiry', requestId: null, locale: 'fr', now: deps.clock(), baseUrl };
    // One tenant's trouble stays its own: a tenant closed by a lockdown (level 3 and up, personal data closed)
    // keeps its offers until it reopens, and every other tenant's places still move on.
    try {
      n += await expireDueOffers(deps, ctx);
    } catch (err) {
      deps.log.warn({ tenant: tenant.slug, err: { message: (err as Error).message } }, 'offer expiry skipped this tenant');
    }
  }
  return n;
}

export function startOfferExpiry(deps: Deps, intervalMs = 60_000): () => void {
  let running = false;
  const run = async () => {
    if (running) return;
    running = true;
    try {
      const n = await runOfferExpiry(deps);
      if (n) deps.log.info({ expired: n }, 'offers expired');
    } catch (err) {
      deps.log.error({ err }, 'offer expiry failed');
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void run(), intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
