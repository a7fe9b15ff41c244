import { tenantBaseUrl as baseUrlOf } from '../tenants/service.ts';
import { sql } from 'kysely';
import type { Deps } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import type { DetectionSignal } from '../db/schema.ts';
import { appendAudit } from '../audit/log.ts';
import { inTenant } from '../db/tenant.ts';
import { createAlert } from './alerts.ts';
import { checkWindows, purgeHits, record } from './counters.ts';
import { DEFAULT_HOURS, outsideHours, workingHoursFor, type WorkingHours } from './hours.ts';
import { evaluateClient } from './clients.ts';
import { applyResponse, SEVERITY } from './response.ts';
import { exportSignals, refuses, rulesFor, type DetectionRule } from './rules.ts';
import { WebhookSender } from './webhook.ts';
import { PollLoop } from '../jobs/poll.ts';
import { QuietWatch, type PassOutcome } from '../jobs/quiet.ts';

/**
 * Detection on the audit stream, for what is not weighed in the records
 * gateway's transaction: privilege requests, approvals and removals,
 * break-glass, deletions and purges by staff, a staff member's new device or
 * network, exports made outside the gateway (breach reports, the incident
 * register, the audit log), assisted-mode look-ups of a parent, and staff
 * activity outside the tenant's working hours. Every instance writes its
 * events to the same table, and the sealer orders them into the tenant's
 * Merkle tree once their transactions have ended; this reader follows the
 * tree's leaves, so it sees every instance's events, each once, in order.
 * One instance reads a tenant at a time (its cursor row is taken with SKIP
 * LOCKED); an alert follows its event by the sealer's interval and this
 * one's, well under a second. A rule set to more than an alert applies its
 * response then: the event has happened, the next request meets it.
 */

/** How far back a tenant's first read looks (see pass). */
const FIRST_LOOK_BACK_MS = 5 * 60_000;

const PRIVILEGE = new Set(['identity.grant.request', 'identity.grant.endorse', 'identity.grant.approve', 'identity.grant.revoke', 'identity.membership.bootstrap', 'identity.factorReset.request', 'identity.factorReset.approve']);
/**
 * Changes to Guichet's own safeguards that one privileged person makes alone: weakening detection (its rules, the
 * working hours, the webhook, a declared batch), and what relying services are given (a client registered, approved
 * or changed, its secret, its scopes, an access right handed out). An intruder's first moves, each an alert.
 */
const SAFEGUARDS = new Set([
  'detection.rules.update',
  'detection.hours.update',
  'detection.webhook.update',
  'detection.batch.declare',
  'oidc.client.create',
  'oidc.client.update',
  'oidc.client.approve',
  'oidc.client.scopes.request',
  'oidc.client.secret.rotate',
  'oidc.entitlement.create',
]);
const DELETIONS = new Set(['waitlist.childFile.delete', 'records.childFile.purge', 'records.family.purge']);
/** Exports written outside the gateway, and the detail that says how many files or rows each held. */
const EXPORTS: Record<string, string> = { 'privacy.breachReport.create': 'files', 'incident.export': 'incidents', 'audit.export': 'events' };
/** Look-ups of a person by identity written outside the gateway (the NIREC look-up is weighed in it). */
const NAME_SEARCHES = new Set(['assisted.code.request']);

interface StreamEvent {
  id: string;
  action: string;
  outcome: string;
  actor_account_id: string | null;
  actor_roles: string[];
  occurred_at: Date;
  details?: Record<string, unknown> | null;
  target_ids?: string[];
}

/** Anyone who holds a role (the roles the event recorded): not a parent, not the system. */
function isMember(roles: readonly string[]): boolean {
  return roles.length > 0 && !roles.every((r) => r === 'parent' || r === 'anonymous' || r.startsWith('system:'));
}

/** Outside the default working hours (Monday to Friday, 7 h to 19 h, Eastern time); a tenant declares its own (hours.ts). */
export function outsideWorkingHours(at: Date, hours: WorkingHours = DEFAULT_HOURS): boolean {
  return outsideHours(at, hours);
}

/**
 * The stream signals an event is, if any, with their weights. `holdsRole`
 * says whether the actor holds a role now: a sign-in's events are written
 * before the session (and its roles) exist.
 */
export function streamSignals(e: StreamEvent, holdsRole: boolean, hours: WorkingHours = DEFAULT_HOURS): { signal: DetectionSignal; weight: number }[] {
  if (e.outcome !== 'success' || !e.actor_account_id) return [];
  const out: { signal: DetectionSignal; weight: number }[] = [];
  const member = isMember(e.actor_roles);
  if (PRIVILEGE.has(e.action)) out.push({ signal: 'privilege', weight: 1 });
  if (e.action === 'identity.breakGlass.start') out.push({ signal: 'break_glass', weight: 1 });
  if (SAFEGUARDS.has(e.action)) out.push({ signal: 'safeguard', weight: 1 });
  if (DELETIONS.has(e.action) && member) out.push({ signal: 'deletion', weight: Math.max(1, Number(e.details?.files) || 1) });
  if (e.action === 'identity.device.new' && holdsRole) out.push({ signal: 'new_device', weight: 1 });
  if (e.action === 'identity.network.new' && holdsRole) out.push({ signal: 'new_network', weight: 1 });
  const rowsKey = EXPORTS[e.action];
  if (rowsKey) {
    const n = Number(e.details?.[rowsKey]);
    out.push(...exportSignals(Number.isInteger(n) && n > 0 ? n : 0));
  }
  if (NAME_SEARCHES.has(e.action) && member) out.push({ signal: 'name_search', weight: 1 });
  // Any act of a member of staff counts, not only reads: an intruder's first moves are often elsewhere.
  if (member && outsideHours(e.occurred_at, hours)) out.push({ signal: 'off_hours', weight: 1 });
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

const SYSTEM = { actorAccountId: null, actorRoles: ['system:detection'], ip: null, userAgent: null, requestId: null };

async function evaluate(trx: Trx, deps: Deps, tenantId: string, baseUrl: string, e: StreamEvent, rules: readonly DetectionRule[], hours: WorkingHours): Promise<{ alerts: number; raised: boolean }> {
  const byClient = await evaluateClient(trx, deps, tenantId, baseUrl, e);
  if (byClient !== null) return { alerts: byClient, raised: false };
  const signIn = e.action === 'identity.device.new' || e.action === 'identity.network.new';
  const signals = streamSignals(e, signIn && !!e.actor_account_id && (await holdsRole(trx, e.actor_account_id, e.occurred_at)), hours);
  if (!signals.length) return { alerts: 0, raised: false };
  const accountId = e.actor_account_id!;
  const now = deps.clock();
  const crossed: { rule: DetectionRule; total: number }[] = [];
  for (const { signal, weight } of signals) {
    const check = await checkWindows(trx, accountId, tenantId, signal, weight, rules, e.occurred_at);
    await record(trx, tenantId, accountId, signal, weight, e.occurred_at);
    for (const r of check.crossed) crossed.push({ rule: r, total: (check.before.get(r.code) ?? 0) + weight });
  }
  let alerts = 0;
  let raised = false;
  for (const { rule: r, total } of crossed.filter((x) => !refuses(x.rule))) {
    await createAlert(
      trx,
      tenantId,
      { ruleCode: r.code, signal: r.signal, severity: r.signal === 'privilege' || r.signal === 'deletion' || r.signal === 'break_glass' || r.signal === 'safeguard' ? 'high' : 'low', subjectAccountId: accountId, response: 'alert', lockdownLevel: null, eventIds: [e.id], details: { action: e.action, total, threshold: r.threshold, windowSeconds: r.windowSeconds } },
      SYSTEM,
      now,
      baseUrl,
    );
    alerts++;
  }
  // Stronger responses, after the fact: the one event has happened, what the rule says is done to the account now.
  const acting = crossed.filter((x) => refuses(x.rule));
  if (acting.length) {
    const { response, rule, sessionsEnded, raisedTo } = await applyResponse(trx, tenantId, accountId, acting.map((x) => x.rule), now);
    raised = raisedTo !== null;
    const codes = acting.map((x) => x.rule.code).join(',');
    await appendAuditSystem(trx, tenantId, { accountId, eventId: e.id, codes, response, sessionsEnded, raisedTo }, now);
    await createAlert(
      trx,
      tenantId,
      {
        ruleCode: rule.code,
        signal: rule.signal,
        severity: raisedTo ? 'critical' : SEVERITY[response],
        subjectAccountId: accountId,
        response,
        lockdownLevel: raisedTo,
        eventIds: [e.id],
        details: { action: e.action, rules: codes, total: acting.find((x) => x.rule.code === rule.code)?.total ?? 0, threshold: rule.threshold, windowSeconds: rule.windowSeconds, sessionsEnded },
      },
      SYSTEM,
      now,
      baseUrl,
    );
    alerts++;
  }
  return { alerts, raised };
}

async function appendAuditSystem(
  trx: Trx,
  tenantId: string,
  r: { accountId: string; eventId: string; codes: string; response: string; sessionsEnded: number; raisedTo: number | null },
  now: Date,
): Promise<void> {
  await appendAudit(
    trx,
    tenantId,
    {
      action: 'detection.response',
      outcome: 'success',
      actorAccountId: null,
      actorRoles: ['system:detection'],
      targetType: 'account',
      targetIds: [r.accountId, r.eventId],
      details: { rules: r.codes, response: r.response, sessionsEnded: r.sessionsEnded, ...(r.raisedTo ? { lockdownLevel: r.raisedTo } : {}) },
    },
    now,
  );
}

const PAGE = 1000;

/** Reads the tenants' audit streams; started when the server listens. */
export class DetectionStream {
  private readonly loop: PollLoop;
  /** Skips the pass over every tenant while nothing has been sealed since the last quiet one (src/jobs/quiet.ts). */
  readonly watch: QuietWatch;

  constructor(
    private readonly deps: Deps,
    private readonly baseUrlFor: (hosts: readonly string[]) => string,
    private readonly intervalMs = 250,
    /** Which tenants this reader follows (all by default). */
    private readonly follows: (tenantId: string) => boolean = () => true,
    opts: { watchWork?: boolean } = {},
  ) {
    this.watch = new QuietWatch(deps.db.db, 'sealed', opts.watchWork ?? true);
    this.loop = new PollLoop(() => this.pass(), this.intervalMs, this.deps.log, 'detection stream failed', this.watch);
  }

  start(): void {
    this.loop.start();
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }

  /** One pass over every tenant's new leaves. Returns the alerts written. */
  async runOnce(): Promise<number> {
    return (await this.pass()).alerts;
  }

  private async pass(): Promise<PassOutcome & { alerts: number }> {
    let alerts = 0;
    let raised = false;
    // Quiet: every tenant's cursor was ours to read and nothing was left behind it.
    let quiet = true;
    for (const tenant of await this.deps.tenants.all()) {
      if (!this.follows(tenant.id)) continue;
      alerts += await inTenant(this.deps.db.db, tenant.id, async (trx) => {
        // A tenant seen for the first time starts where its events are a few minutes old: detection looks forward,
        // not at history, but a tenant created a moment ago (the directory is read every few seconds) has its first
        // events weighed too — an intruder's first minutes on a new programme included.
        await sql`INSERT INTO detection_stream_cursors (tenant_id, leaf_index)
                  SELECT ${tenant.id}::uuid, coalesce((SELECT l.leaf_index FROM audit_leaves l JOIN audit_events e ON e.id = l.event_id
                                                        WHERE e.occurred_at < ${new Date(this.deps.clock().getTime() - FIRST_LOOK_BACK_MS)}::timestamptz
                                                        ORDER BY l.leaf_index DESC LIMIT 1), -1)
                   WHERE NOT EXISTS (SELECT 1 FROM detection_stream_cursors)
                  ON CONFLICT (tenant_id) DO NOTHING`.execute(trx);
        const cursor = await trx.selectFrom('detection_stream_cursors').select('leaf_index').forUpdate().skipLocked().executeTakeFirst();
        if (!cursor) {
          // Another instance is reading it: if it dies before committing, the leaves are still to read.
          quiet = false;
          return 0;
        }
        const { rows } = await sql<StreamEvent & { leaf_index: string }>`
          SELECT l.leaf_index::text AS leaf_index, e.id, e.action, e.outcome, e.actor_account_id, e.actor_roles, e.occurred_at, e.details, e.target_ids
            FROM audit_leaves l JOIN audit_events e ON e.id = l.event_id
           WHERE l.leaf_index > ${cursor.leaf_index}::bigint
           ORDER BY l.leaf_index
           LIMIT ${PAGE}`.execute(trx);
        if (rows.length === PAGE) quiet = false;
        if (!rows.length) return 0;
        let n = 0;
        const base = this.baseUrlFor(tenant.hosts);
        const rules = await rulesFor(trx);
        const hours = await workingHoursFor(trx);
        for (const e of rows) {
          const r = await evaluate(trx, this.deps, tenant.id, base, { ...e, occurred_at: new Date(e.occurred_at), details: typeof e.details === 'string' ? JSON.parse(e.details) : e.details }, rules, hours);
          n += r.alerts;
          raised ||= r.raised;
        }
        await trx.updateTable('detection_stream_cursors').set({ leaf_index: rows[rows.length - 1]!.leaf_index }).execute();
        return n;
      });
    }
    if (raised) this.deps.tenants.invalidate();
    return { alerts, quiet };
  }
}

/** Where links in alerts point for a tenant: its first host name. */
export function tenantBaseUrl(deps: Deps): (hosts: readonly string[]) => string {
  return (hosts) => baseUrlOf(deps.config, hosts);
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
