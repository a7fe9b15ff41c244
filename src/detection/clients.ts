/**
 * Detection rules can watch a relying party as well as a person: tokens
 * issued to an OpenID Connect client (`client_tokens`, from `oidc.token`) and
 * personal claims released to it (`client_claims`, from `oidc.claims.release`),
 * counted per client over each rule's sliding window. A client that suddenly
 * receives far more than its normal volume — a stolen client secret, a
 * scraper behind a real service — raises an alert naming the client. The
 * rules are data per tenant like the others (rules.ts): off by default, set
 * by a security officer to the tenant's services' normal volume.
 *
 * Read from the audit stream (stream.ts), never in the request: nothing is
 * refused on the spot, and each event counts once, in log order.
 */
import { sql } from 'kysely';
import type { Deps } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import { createAlert } from './alerts.ts';
import { MAX_WINDOW_SECONDS, rulesFor } from './rules.ts';

const SIGNAL_OF: Record<string, 'client_tokens' | 'client_claims'> = {
  'oidc.token': 'client_tokens',
  'oidc.claims.release': 'client_claims',
};

interface ClientEvent {
  id: string;
  action: string;
  outcome: string;
  occurred_at: Date;
  target_ids?: string[];
}

/** null: not a client event (the person rules look at it); else the alerts written. */
export async function evaluateClient(trx: Trx, deps: Deps, tenantId: string, baseUrl: string, e: ClientEvent): Promise<number | null> {
  const signal = SIGNAL_OF[e.action];
  if (!signal) return null;
  const clientId = e.target_ids?.[0];
  if (e.outcome !== 'success' || !clientId) return 0;
  const rules = (await rulesFor(trx)).filter((r) => r.signal === signal);
  if (!rules.length) return 0;
  const at = e.occurred_at;
  // Older than any window: gone, so the counts stay small.
  await trx.deleteFrom('detection_client_hits').where('client_id', '=', clientId).where('at', '<', new Date(at.getTime() - MAX_WINDOW_SECONDS * 1000)).execute();
  const windows = [...new Set(rules.map((r) => r.windowSeconds))];
  const totals = new Map<number, number>();
  for (const w of windows) {
    const r = await trx
      .selectFrom('detection_client_hits')
      .select(sql<string>`count(*)`.as('n'))
      .where('client_id', '=', clientId)
      .where('signal', '=', signal)
      .where('at', '>', new Date(at.getTime() - w * 1000))
      .executeTakeFirst();
    totals.set(w, Number(r?.n ?? 0));
  }
  await trx.insertInto('detection_client_hits').values({ tenant_id: tenantId, client_id: clientId, signal, at }).execute();
  let alerts = 0;
  for (const r of rules) {
    const before = totals.get(r.windowSeconds) ?? 0;
    // Crossed by this event: one alert when the window goes over, not one per event above it.
    if (!(before <= r.threshold && before + 1 > r.threshold)) continue;
    await createAlert(
      trx,
      tenantId,
      { ruleCode: r.code, signal, severity: 'high', subjectAccountId: null, response: 'alert', lockdownLevel: null, eventIds: [e.id], details: { client: clientId, action: e.action, total: before + 1, threshold: r.threshold, windowSeconds: r.windowSeconds } },
      { actorAccountId: null, actorRoles: ['system:detection'], ip: null, userAgent: null, requestId: null },
      deps.clock(),
      baseUrl,
    );
    alerts++;
  }
  return alerts;
}
