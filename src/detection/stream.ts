import { sql } from 'kysely';
import type { Deps } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import type { DetectionSignal } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import { createAlert } from './alerts.ts';
import { checkWindows, purgeHits, record } from './counters.ts';
import { evaluateClient } from './clients.ts';
import { CLIENT_SIGNALS, rulesFor, SYNCHRONOUS_SIGNALS } from './rules.ts';
import { WebhookSender } from './webhook.ts';
import { PollLoop } from './poll.ts';

/**
 * Detection on the audit stream, for what need not be refused on the spot:
 * privilege requests, approvals and removals, deletions by staff, a staff
 * member's new device, files opened outside working hours. Every instance
 * writes its events to the same table, and the sealer orders them into the
 * tenant's Merkle tree once their transactions have ended; this reader
 * follows the tree's leaves, so it sees every instance's events, each once,
 * in order. One instance reads a tenant at a time (its cursor row is taken
 * with SKIP LOCKED); an alert follows its event by the sealer's interval and
 * this one's, well under a second.
 *
 * Working hours: Monday to Friday, 7 h to 19 h, Eastern time.
 */

const PRIVILEGE = new Set(['identity.grant.request', 'identity.grant.approve', 'identity.grant.revoke', 'identity.membership.bootstrap', 'identity.breakGlass.start', 'identity.factorReset.request', 'identity.factorReset.approve']);
const READS = new Set(['waitlist.childFile.read', 'waitlist.childFile.history', 'family.profile.read', 'waitlist.childFile.lookupByNirec', 'waitlist.candidates.list']);

interface StreamEvent {
  id: string;
  action: string;
  outcome: string;
  actor_account_id: string | null;
  actor_roles: string[];
  occurred_at: Date;
  target_ids?: string[];
}

/** Anyone who holds a role (the roles the event recorded): not a parent, not the system. */
function isMember(roles: readonly string[]): boolean {
  return roles.length > 0 && !roles.every((r) => r === 'parent' || r === 'anonymous' || r.startsWith('system:'));
}

export function outsideWorkingHours(at: Date): boolean {
  const parts = new Intl.DateTimeFormat('en-CA', { timeZone: 'America/Toronto', weekday: 'short', hour: '2-digit', hourCycle: 'h23' }).formatToParts(at);
  const day = parts.find((p) => p.type === 'weekday')?.value ?? '';
  const hour = Number(parts.find((p) => p.type === 'hour')?.value ?? 0);
  return day === 'Sat' || day === 'Sun' || hour < 7 || hour >= 19;
}

/**
 * The stream signals an event is, if any. `holdsRole` says whether the
 * actor holds a role now: a sign-in's events are written before the session
 * (and its roles) exist.
 */
export function streamSignals(e: StreamEvent, holdsRole: boolean): DetectionSignal[] {
  if (e.outcome !== 'success' || !e.actor_account_id) return [];
  const out: DetectionSignal[] = [];
  if (PRIVILEGE.has(e.action)) out.push('privilege');
  if (e.action === 'waitlist.childFile.delete' && isMember(e.actor_roles)) out.push('deletion');
  if (e.action === 'identity.device.new' && holdsRole) out.push('new_device');
  if (READS.has(e.action) && isMember(e.actor_roles) && outsideWorkingHours(e.occurred_at)) out.push('off_hours');
  return out;
}

async function holdsRole(trx: Trx, accountId: string, now: Date): Promise<boolean> {
  const m = await trx
    .selectFrom('memberships')
    .select('id')
    .where('account_id', '=', accountId)
    .where('revoked_at', 'is', null)
    .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]))
    .executeTakeFirst();
  return !!m;
}

async function evaluate(trx: Trx, deps: Deps, tenantId: string, baseUrl: string, e: StreamEvent): Promise<number> {
  const byClient = await evaluateClient(trx, deps, tenantId, baseUrl, e);
  if (byClient !== null) return byClient;
  const signals = streamSignals(e, e.action === 'identity.device.new' && !!e.actor_account_id && (await holdsRole(trx, e.actor_account_id, e.occurred_at)));
  if (!signals.length) return 0;
  const rules = (await rulesFor(trx)).filter((r) => !SYNCHRONOUS_SIGNALS.has(r.signal) && !CLIENT_SIGNALS.has(r.signal));
  let alerts = 0;
  for (const signal of signals) {
    const check = await checkWindows(trx, e.actor_account_id!, tenantId, signal, 1, rules, e.occurred_at);
    await record(trx, tenantId, e.actor_account_id!, signal, 1, e.occurred_at);
    for (const r of check.crossed) {
      await createAlert(
        trx,
        tenantId,
        { ruleCode: r.code, signal, severity: signal === 'privilege' || signal === 'deletion' ? 'high' : 'low', subjectAccountId: e.actor_account_id, response: 'alert', lockdownLevel: null, eventIds: [e.id], details: { action: e.action, total: (check.before.get(r.code) ?? 0) + 1, threshold: r.threshold, windowSeconds: r.windowSeconds } },
        { actorAccountId: null, actorRoles: ['system:detection'], ip: null, userAgent: null, requestId: null },
        deps.clock(),
        baseUrl,
      );
      alerts++;
    }
  }
  return alerts;
}

/** Reads the tenants' audit streams; started when the server listens. */
export class DetectionStream {
  private readonly loop: PollLoop;

  constructor(
    private readonly deps: Deps,
    private readonly baseUrlFor: (hosts: readonly string[]) => string,
    private readonly intervalMs = 250,
    /** Which tenants this reader follows (all by default). */
    private readonly follows: (tenantId: string) => boolean = () => true,
  ) {
    this.loop = new PollLoop(() => this.runOnce(), this.intervalMs, this.deps.log, 'detection stream failed');
  }

  start(): void {
    this.loop.start();
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }

  /** One pass over every tenant's new leaves. Returns the alerts written. */
  async runOnce(): Promise<number> {
    let alerts = 0;
    for (const tenant of await this.deps.tenants.all()) {
      if (!this.follows(tenant.id)) continue;
      alerts += await inTenant(this.deps.db.db, tenant.id, async (trx) => {
        // A tenant seen for the first time starts at its current end: detection looks forward, not at history.
        await sql`INSERT INTO detection_stream_cursors (tenant_id, leaf_index)
                  SELECT ${tenant.id}::uuid, coalesce((SELECT max(leaf_index) FROM audit_leaves), -1)
                  ON CONFLICT (tenant_id) DO NOTHING`.execute(trx);
        const cursor = await trx.selectFrom('detection_stream_cursors').select('leaf_index').forUpdate().skipLocked().executeTakeFirst();
        if (!cursor) return 0;
        const { rows } = await sql<StreamEvent & { leaf_index: string }>`
          SELECT l.leaf_index::text AS leaf_index, e.id, e.action, e.outcome, e.actor_account_id, e.actor_roles, e.occurred_at, e.target_ids
            FROM audit_leaves l JOIN audit_events e ON e.id = l.event_id
           WHERE l.leaf_index > ${cursor.leaf_index}::bigint
           ORDER BY l.leaf_index
           LIMIT 1000`.execute(trx);
        if (!rows.length) return 0;
        let n = 0;
        const base = this.baseUrlFor(tenant.hosts);
        for (const e of rows) n += await evaluate(trx, this.deps, tenant.id, base, { ...e, occurred_at: new Date(e.occurred_at) });
        await trx.updateTable('detection_stream_cursors').set({ leaf_index: rows[rows.length - 1]!.leaf_index }).execute();
        return n;
      });
    }
    return alerts;
  }
}

/** Where links in alerts point for a tenant: its first host name. */
export function tenantBaseUrl(deps: Deps): (hosts: readonly string[]) => string {
  const c = deps.config;
  return (hosts) => (hosts[0] ? `${c.production ? 'https' : 'http'}://${hosts[0]}${c.production ? '' : `:${c.port}`}` : (c.publicUrl ?? `http://localhost:${c.port}`));
}

/**
 * The background work of detection on one instance — the audit stream reader
 * and the webhook sender — as `guichet serve` runs it. Returns its stop.
 */
export function startDetectionWork(deps: Deps, purgeEveryMs = 3600_000): () => Promise<void> {
  const stream = new DetectionStream(deps, tenantBaseUrl(deps));
  const webhooks = new WebhookSender(deps);
  stream.start();
  webhooks.start();
  const purge = setInterval(() => {
    void (async () => {
      for (const t of await deps.tenants.all()) await inTenant(deps.db.db, t.id, (trx) => purgeHits(trx, deps.clock()));
    })().catch((err) => deps.log.error({ err }, 'detection: purge of old counts failed'));
  }, purgeEveryMs);
  purge.unref();
  return async () => {
    clearInterval(purge);
    await stream.stop();
    await webhooks.stop();
  };
}
