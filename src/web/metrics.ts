import { timingSafeEqual, createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { countPending, latestHead } from '../audit/store.ts';
import type { Deps } from '../context.ts';
import { inTenant } from '../db/tenant.ts';
import { MAX_MAIL_ATTEMPTS } from '../mail/outbox.ts';

/**
 * Prometheus metrics for operators. One registry per process: the request
 * and sign-in counters are this instance's (Prometheus adds the instances
 * up); the audit lag, alerts and queue depth are read from the database at
 * each scrape, so every instance reports the same deployment-wide values,
 * whichever process (server or worker) did the work.
 *
 * /metrics exists only when GUICHET_METRICS_TOKEN is set, and answers only
 * to that bearer token: the per-tenant figures say something about each
 * programme's activity, and nothing here is for the public side.
 */
export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'guichet_' });

const httpRequests = new Counter({
  name: 'guichet_http_requests_total',
  help: 'HTTP requests answered, by method, route (the route pattern, never the address itself) and status.',
  labelNames: ['method', 'route', 'status'] as const,
  registers: [registry],
});

const httpDuration = new Histogram({
  name: 'guichet_http_request_duration_seconds',
  help: 'Time to answer an HTTP request, by method, route and status.',
  labelNames: ['method', 'route', 'status'] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5],
  registers: [registry],
});

const signIns = new Counter({
  name: 'guichet_signins_total',
  help: 'Password sign-in attempts by outcome: success, failure, locked (the failure that locks the account), throttled (refused before the password was checked).',
  labelNames: ['outcome'] as const,
  registers: [registry],
});

const auditUnsealed = new Gauge({
  name: 'guichet_audit_unsealed_events',
  help: 'Audit events not yet in a signed tree head, per tenant.',
  labelNames: ['tenant'] as const,
  registers: [registry],
});

const auditHeadAge = new Gauge({
  name: 'guichet_audit_head_age_seconds',
  help: "Age of the tenant's latest signed tree head (grows while events wait if no sealer runs).",
  labelNames: ['tenant'] as const,
  registers: [registry],
});

const alerts = new Gauge({
  name: 'guichet_detection_alerts_raised',
  help: 'Detection alerts raised since the tenant was created, per tenant and severity (a rise is a new alert).',
  labelNames: ['tenant', 'severity'] as const,
  registers: [registry],
});

const outbox = new Gauge({
  name: 'guichet_mail_outbox_pending',
  help: 'E-mails waiting in the outbox (not sent, still to be retried), per tenant.',
  labelNames: ['tenant'] as const,
  registers: [registry],
});

export type SignInOutcome = 'success' | 'failure' | 'locked' | 'throttled';

export function signInMetric(outcome: SignInOutcome): void {
  signIns.inc({ outcome });
}

function sameToken(given: string, expected: string): boolean {
  // Hashed first: equal lengths for timingSafeEqual, and nothing learnt from the time a comparison takes.
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

async function readDatabaseFigures(deps: Deps): Promise<void> {
  const now = deps.clock();
  auditUnsealed.reset();
  auditHeadAge.reset();
  alerts.reset();
  outbox.reset();
  for (const t of await deps.tenants.all()) {
    await inTenant(deps.db.db, t.id, async (trx) => {
      const head = await latestHead(trx, t.id);
      auditUnsealed.set({ tenant: t.slug }, await countPending(trx, t.id, head ? { ticket: head.lastTicket, seq: head.lastSeq } : null));
      if (head) auditHeadAge.set({ tenant: t.slug }, Math.max(0, (now.getTime() - head.signedAt.getTime()) / 1000));
      const bySeverity = await trx.selectFrom('detection_alerts').select(['severity', (eb) => eb.fn.countAll<string>().as('n')]).groupBy('severity').execute();
      for (const s of ['low', 'high', 'critical']) alerts.set({ tenant: t.slug, severity: s }, Number(bySeverity.find((r) => r.severity === s)?.n ?? 0));
      const pending = await trx.selectFrom('mail_outbox').select((eb) => eb.fn.countAll<string>().as('n')).where('sent_at', 'is', null).where('attempts', '<', MAX_MAIL_ATTEMPTS).executeTakeFirst();
      outbox.set({ tenant: t.slug }, Number(pending?.n ?? 0));
    });
  }
}

/** Counts every answer by its route pattern, and serves /metrics when a token is configured. */
export function metricsRoutes(app: FastifyInstance, deps: Deps): void {
  app.addHook('onResponse', async (req, reply) => {
    // The route pattern (/staff/facilities/:id/candidates), never the address: ids stay out, and the label set stays small.
    const route = req.routeOptions.url ?? 'unmatched';
    const labels = { method: req.method, route, status: String(reply.statusCode) };
    httpRequests.inc(labels);
    httpDuration.observe(labels, reply.elapsedTime / 1000);
  });
  const token = deps.config.metricsToken;
  if (!token) return;
  app.get('/metrics', async (req, reply) => {
    const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
    if (!m || !sameToken(m[1]!, token)) {
      return reply.code(401).header('www-authenticate', 'Bearer realm="guichet-metrics"').type('text/plain; charset=utf-8').send('Unauthorized');
    }
    await readDatabaseFigures(deps);
    return reply.header('cache-control', 'no-store').type(registry.contentType).send(await registry.metrics());
  });
}
