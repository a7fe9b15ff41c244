import { z } from 'zod';
import { decide } from '../access/decide.ts';
import type { AuditEventInput } from '../audit/events.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import { untrustedId } from '../audit/untrusted.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import type { DetectionResponse, DetectionSignal } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError, ValidationError } from '../errors.ts';
import { requireRecentAuth } from '../identity/stepup.ts';
import { originFields } from '../tenants/service.ts';

/**
 * Detection rules are data: each names a signal counted on the audit stream,
 * a threshold over a sliding window, and the response when an actor crosses
 * it. The defaults below apply to every tenant; a tenant's row with the same
 * code replaces one (a stricter threshold, another response, disabled), a
 * row with a new code adds one (detection_rules, migration 0010).
 */
export interface DetectionRule {
  code: string;
  signal: DetectionSignal;
  /** Crossed when the window's total goes above this. */
  threshold: number;
  windowSeconds: number;
  /**
   * What happens; each step includes the ones before it: alert → stepup →
   * end_sessions → suspend → lockdown (the tenant's level raised by one).
   */
  response: DetectionResponse;
  /** The tenant's lockdown level to raise to as well, if any. */
  lockdownLevel: number | null;
  /** The rule does not apply while the actor has a declared batch in progress. */
  exceptDeclaredBatch: boolean;
  enabled: boolean;
}

export const RESPONSE_ORDER: readonly DetectionResponse[] = ['alert', 'stepup', 'end_sessions', 'suspend', 'lockdown'];

/** The rule that reports a change to the safeguards: one officer cannot silence it, since silencing is such a change. */
export const SAFEGUARD_RULE = 'safeguard.change';

export const SIGNALS: readonly DetectionSignal[] = ['files_read', 'name_search', 'export', 'export_rows', 'privilege', 'break_glass', 'deletion', 'new_device', 'new_network', 'off_hours', 'safeguard', 'client_tokens', 'client_claims'];

/** Responses that refuse the request that crosses the threshold (containment is synchronous with it). */
export function refuses(r: DetectionRule): boolean {
  return r.response !== 'alert' || r.lockdownLevel !== null;
}

/**
 * The defaults: more than 20 files in 5 minutes, 50 in an hour, 200
 * in a day outside a declared batch. Each suspends the account at once (which
 * ends its sessions): an intruder with valid credentials who signs in again
 * would otherwise carry on, and a person who really needs more opens a batch.
 */
export const DEFAULT_RULES: readonly DetectionRule[] = [
  { code: 'files_read.5m', signal: 'files_read', threshold: 20, windowSeconds: 300, response: 'suspend', lockdownLevel: null, exceptDeclaredBatch: false, enabled: true },
  { code: 'files_read.1h', signal: 'files_read', threshold: 50, windowSeconds: 3600, response: 'suspend', lockdownLevel: null, exceptDeclaredBatch: false, enabled: true },
  { code: 'files_read.1d', signal: 'files_read', threshold: 200, windowSeconds: 86400, response: 'suspend', lockdownLevel: null, exceptDeclaredBatch: true, enabled: true },
  // Read from the audit stream after the fact (stream.ts): an alert within a second, no refusal.
  // Searches by NIREC in the console are weighed on the read path, like the files they find; an
  // assisted-mode look-up of a parent by address is read from the stream.
  { code: 'name_search.5m', signal: 'name_search', threshold: 30, windowSeconds: 300, response: 'stepup', lockdownLevel: null, exceptDeclaredBatch: false, enabled: true },
  // Exports: a family's export and the statistics CSV on the read path; breach reports, the incident
  // register and the audit log from the stream. Counted once each, and by the files or rows they hold.
  { code: 'export.1h', signal: 'export', threshold: 10, windowSeconds: 3600, response: 'alert', lockdownLevel: null, exceptDeclaredBatch: false, enabled: true },
  { code: 'export_rows.1h', signal: 'export_rows', threshold: 1000, windowSeconds: 3600, response: 'alert', lockdownLevel: null, exceptDeclaredBatch: true, enabled: true },
  // Read from the audit stream after the fact (stream.ts): an alert within a second; a rule set to
  // a stronger response applies it then (the event itself has happened).
  { code: 'privilege.change', signal: 'privilege', threshold: 0, windowSeconds: 1, response: 'alert', lockdownLevel: null, exceptDeclaredBatch: false, enabled: true },
  // A change to Guichet's own safeguards (stream.ts, SAFEGUARDS): always on, every officer told (saveRule keeps it so).
  { code: SAFEGUARD_RULE, signal: 'safeguard', threshold: 0, windowSeconds: 1, response: 'alert', lockdownLevel: null, exceptDeclaredBatch: false, enabled: true },
  { code: 'break_glass.start', signal: 'break_glass', threshold: 0, windowSeconds: 1, response: 'alert', lockdownLevel: null, exceptDeclaredBatch: false, enabled: true },
  { code: 'deletion.staff', signal: 'deletion', threshold: 0, windowSeconds: 1, response: 'alert', lockdownLevel: null, exceptDeclaredBatch: false, enabled: true },
  { code: 'deletion.burst', signal: 'deletion', threshold: 10, windowSeconds: 600, response: 'end_sessions', lockdownLevel: null, exceptDeclaredBatch: false, enabled: true },
  { code: 'new_device.staff', signal: 'new_device', threshold: 0, windowSeconds: 1, response: 'alert', lockdownLevel: null, exceptDeclaredBatch: false, enabled: true },
  { code: 'new_network.staff', signal: 'new_network', threshold: 0, windowSeconds: 1, response: 'alert', lockdownLevel: null, exceptDeclaredBatch: false, enabled: true },
  { code: 'off_hours.read', signal: 'off_hours', threshold: 0, windowSeconds: 3600, response: 'alert', lockdownLevel: null, exceptDeclaredBatch: false, enabled: true },
  // Rules that watch a relying party, not a person (clients.ts): off until a tenant sets them to its services' normal volume.
  { code: 'client.tokens.5m', signal: 'client_tokens', threshold: 300, windowSeconds: 300, response: 'alert', lockdownLevel: null, exceptDeclaredBatch: false, enabled: false },
  { code: 'client.claims.1h', signal: 'client_claims', threshold: 2000, windowSeconds: 3600, response: 'alert', lockdownLevel: null, exceptDeclaredBatch: false, enabled: false },
];

/** Signals that require the actor to hold a role; exports count for anyone, a family's own included. */
export const STAFF_SIGNALS: ReadonlySet<DetectionSignal> = new Set<DetectionSignal>(['files_read', 'name_search']);

/** Signals counted per OpenID Connect client (clients.ts), not per person. */
export const CLIENT_SIGNALS: ReadonlySet<DetectionSignal> = new Set<DetectionSignal>(['client_tokens', 'client_claims']);

/** The longest window any rule may have: hits older than this are purged. */
export const MAX_WINDOW_SECONDS = 7 * 86400;

/** The tenant's rules: the defaults, overridden and extended by its own rows. Disabled rules are left out. */
export async function rulesFor(trx: Trx, opts: { includeDisabled?: boolean } = {}): Promise<DetectionRule[]> {
  const rows = await trx.selectFrom('detection_rules').selectAll().execute();
  const byCode = new Map<string, DetectionRule>(DEFAULT_RULES.map((r) => [r.code, r]));
  for (const r of rows) {
    byCode.set(r.code, {
      code: r.code,
      signal: r.signal,
      threshold: r.threshold,
      windowSeconds: r.window_seconds,
      response: r.response,
      lockdownLevel: r.lockdown_level,
      exceptDeclaredBatch: r.except_declared_batch,
      enabled: r.enabled,
    });
  }
  return [...byCode.values()].filter((r) => opts.includeDisabled || r.enabled);
}

/**
 * The signals an event the records gateway writes is, and how much each
 * weighs: these are weighed in the gateway's transaction, before the data
 * leaves, so a rule set to more than an alert refuses the request that
 * crosses it. Events written elsewhere are read from the stream (stream.ts).
 *
 * name_search: a NIREC look-up, found or not. export / export_rows: a
 * family's export (by its files), the statistics CSV (aggregates: once).
 *
 * files_read: a file opened by someone other than its family — a child's
 * file, its history, a family profile, a NIREC look-up that found files:
 * one per family touched. A page of a facility's candidates counts as one:
 * it shows no identity (a pseudonymous reference, an age group, a date, a
 * category) and fifty rows are one ordinary screen of a facility's list; a
 * person paging through it faster than they could work is still caught, page
 * by page, at the same thresholds.
 *
 * Files read and searches count only for actors who hold a membership
 * (staff, directors, operators, administrators): a parent's account opens
 * nothing but its own family's files. Exports count for anyone.
 */
export function signalsOf(e: Pick<AuditEventInput, 'action' | 'familyIds' | 'details'>): { signal: DetectionSignal; weight: number }[] {
  const rows = (k: string) => {
    const v = e.details?.[k];
    return typeof v === 'number' && Number.isInteger(v) && v > 0 ? v : 0;
  };
  switch (e.action) {
    case 'waitlist.childFile.read':
    case 'waitlist.childFile.history':
    case 'family.profile.read':
      return [{ signal: 'files_read', weight: Math.max(1, e.familyIds?.length ?? 0) }];
    case 'waitlist.childFile.lookupByNirec':
      // Every look-up is a search, found or not; what it found is also files read.
      return [{ signal: 'name_search', weight: 1 }, ...(e.familyIds?.length ? [{ signal: 'files_read' as const, weight: e.familyIds.length }] : [])];
    case 'waitlist.candidates.list':
      return [{ signal: 'files_read', weight: 1 }];
    case 'waitlist.referral.list':
      // Like the candidates: one page of the facility's own referrals is one read.
      return [{ signal: 'files_read', weight: 1 }];
    case 'privacy.export':
      return exportSignals(rows('files'));
    case 'statistics.export':
      // Aggregates only (no family named): one export, no rows of files.
      return exportSignals(0);
    default:
      return [];
  }
}

/** An export counts once, and by the files or rows it holds (when it holds any). */
export function exportSignals(rows: number): { signal: DetectionSignal; weight: number }[] {
  return [{ signal: 'export', weight: 1 }, ...(rows > 0 ? [{ signal: 'export_rows' as const, weight: rows }] : [])];
}

/* ------------------------------------------------- changing a tenant's rules */

const RULE_INPUT = z.object({
  code: z.string().regex(/^[a-z0-9_.-]{1,64}$/),
  signal: z.enum(SIGNALS as [DetectionSignal, ...DetectionSignal[]]),
  threshold: z.number().int().min(0).max(1_000_000),
  windowSeconds: z.number().int().min(1).max(MAX_WINDOW_SECONDS),
  response: z.enum(RESPONSE_ORDER as [DetectionResponse, ...DetectionResponse[]]),
  lockdownLevel: z.number().int().min(1).max(4).nullable(),
  exceptDeclaredBatch: z.boolean(),
  enabled: z.boolean(),
});

async function requireOfficer(deps: Deps, ctx: Ctx, action: 'detection.rules.update' | 'detection.batch.declare', target: string): Promise<string> {
  const d = decide(ctx.actor, action, { type: 'tenant' }, ctx.now);
  if (!d.allowed || !ctx.actor) {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action, outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'tenant', targetIds: [untrustedId(target)], details: { reason: d.reason ?? 'denied' } }, ctx.now);
    throw new AppError(ctx.actor ? 'forbidden' : 'signInRequired');
  }
  requireRecentAuth(ctx);
  return ctx.actor.accountId;
}

/** A security officer sets one of the tenant's rules (replacing the default of the same code, or adding one). */
export async function saveRule(deps: Deps, ctx: Ctx, input: DetectionRule): Promise<void> {
  const by = await requireOfficer(deps, ctx, 'detection.rules.update', String(input?.code ?? ''));
  const parsed = RULE_INPUT.safeParse(input);
  if (!parsed.success) throw new ValidationError({ rule: 'invalidValue' });
  const r = parsed.data;
  // Every change alerts: a longer window or a declared batch would let the next ones pass unseen. Only its response may grow.
  if (r.code === SAFEGUARD_RULE && (!r.enabled || r.threshold !== 0 || r.signal !== 'safeguard' || r.windowSeconds !== 1 || r.exceptDeclaredBatch)) throw new ValidationError({ rule: 'safeguardFixed' });
  await inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const values = {
        signal: r.signal,
        threshold: r.threshold,
        window_seconds: r.windowSeconds,
        response: r.response,
        lockdown_level: r.lockdownLevel,
        except_declared_batch: r.exceptDeclaredBatch,
        enabled: r.enabled,
        updated_at: ctx.now,
        updated_by: by,
      };
      await trx
        .insertInto('detection_rules')
        .values({ tenant_id: ctx.tenant.id, code: r.code, ...values })
        .onConflict((oc) => oc.columns(['tenant_id', 'code']).doUpdateSet(values))
        .execute();
      await appendAudit(
        trx,
        ctx.tenant.id,
        {
          action: 'detection.rules.update',
          outcome: 'success',
          ...originFields(originOf(ctx)),
          targetType: 'rule',
          targetIds: [r.code],
          details: { signal: r.signal, threshold: r.threshold, windowSeconds: r.windowSeconds, response: r.response, lockdownLevel: r.lockdownLevel, exceptDeclaredBatch: r.exceptDeclaredBatch, enabled: r.enabled },
        },
        ctx.now,
      );
    },
    by,
  );
}

/** The rules in force for the console: the defaults as the tenant changed them, disabled ones included. */
export async function listRules(deps: Deps, ctx: Ctx): Promise<(DetectionRule & { custom: boolean })[]> {
  const d = decide(ctx.actor, 'detection.rules.update', { type: 'tenant' }, ctx.now);
  if (!d.allowed) throw new AppError(ctx.actor ? 'forbidden' : 'signInRequired');
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const rows = await trx.selectFrom('detection_rules').select('code').execute();
    const custom = new Set(rows.map((r) => r.code));
    const all = await rulesFor(trx, { includeDisabled: true });
    return all.map((r) => ({ ...r, custom: custom.has(r.code) }));
  });
}

/**
 * A security officer declares a batch: for a stated reason and at most a
 * day, the account's reads are not held to the rules marked
 * except_declared_batch (the daily volume by default). Never for their own
 * account (the database refuses it too, migration 0029). The shorter windows
 * still apply: a batch is read at a human pace, or by a job with its own
 * account.
 */
export async function declareBatch(deps: Deps, ctx: Ctx, input: { accountId: string; reason: string; hours: number }): Promise<string> {
  const by = await requireOfficer(deps, ctx, 'detection.batch.declare', String(input?.accountId ?? ''));
  const parsed = z.object({ accountId: z.uuid(), reason: z.string().trim().min(1).max(500), hours: z.number().int().min(1).max(24) }).safeParse(input);
  if (!parsed.success) throw new ValidationError({ reason: 'reasonRequired' });
  const b = parsed.data;
  if (b.accountId === by) {
    // Lifting one's own volume limits is what an insider would do before reading in bulk: another officer declares it.
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action: 'detection.batch.declare', outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'account', targetIds: [by], details: { reason: 'self_batch' } }, ctx.now);
    throw new AppError('forbidden');
  }
  return inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const account = await trx.selectFrom('accounts').select('id').where('id', '=', b.accountId).executeTakeFirst();
      if (!account) throw new AppError('notFound');
      const { id } = await trx
        .insertInto('detection_batches')
        .values({ tenant_id: ctx.tenant.id, account_id: b.accountId, reason: b.reason, starts_at: ctx.now, ends_at: new Date(ctx.now.getTime() + b.hours * 3600_000), declared_by: by, created_at: ctx.now })
        .returning('id')
        .executeTakeFirstOrThrow();
      await appendAudit(trx, ctx.tenant.id, { action: 'detection.batch.declare', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'account', targetIds: [b.accountId, id], details: { hours: b.hours } }, ctx.now);
      return id;
    },
    by,
  );
}
