import type { FastifyInstance } from 'fastify';
import { originOf, type Deps } from '../context.ts';
import { appendAuditAlone, takeRefusalRecorded } from '../audit/log.ts';
import { untrustedId } from '../audit/untrusted.ts';
import { originFields } from '../tenants/service.ts';

/** Body fields that name an object (a child, a facility, an application, an offer, an account…). */
const ID_FIELD = /^(?:[a-z]+Id|id|assignee)$/;

/**
 * A signed-in person's request that names an object — in the path or in a
 * field naming an id — and is refused (400, 401, 403, 404) leaves a refusal
 * in the tenant's log even where the route's service recorded none (an id of
 * another family, facility or tenant that simply is not found for them):
 * probing for other people's ids is what an intruder with a stolen session
 * does first, and detection can only count what the log holds. Written
 * before the answer leaves, like every other refusal. Signed-out requests are
 * not recorded here, so that anonymous scanning cannot fill the log.
 */
export function recordRefusedObjectRequests(app: FastifyInstance, deps: Deps): void {
  app.addHook('onSend', async (req, reply, payload) => {
    const ctx = req.ctx;
    const status = reply.statusCode;
    if (!ctx?.actor || ![400, 401, 403, 404].includes(status)) return payload;
    const params = Object.values((req.params ?? {}) as Record<string, unknown>).filter((v): v is string => typeof v === 'string' && v !== '');
    const body = req.body && typeof req.body === 'object' && !Array.isArray(req.body) ? (req.body as Record<string, unknown>) : {};
    const named = Object.entries(body)
      .filter(([k, v]) => ID_FIELD.test(k) && typeof v === 'string' && v !== '')
      .map(([, v]) => v as string);
    const route = req.routeOptions.url ?? '';
    if (!params.length && !named.length) return payload;
    if (route === '/*' || takeRefusalRecorded(ctx.tenant.id, req.id)) return payload;
    await appendAuditAlone(
      deps.db.db,
      ctx.tenant.id,
      { action: 'web.object.refused', outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'request', targetIds: [...params, ...named].slice(0, 8).map(untrustedId), details: { method: req.method, route: route.slice(0, 120), status } },
      ctx.now,
    );
    return payload;
  });
  // A refusal recorded by a service for a request that was then answered otherwise is forgotten as the answer leaves.
  app.addHook('onResponse', async (req) => {
    if (req.ctx) takeRefusalRecorded(req.ctx.tenant.id, req.id);
  });
}
