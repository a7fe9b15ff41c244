/**
 * « Qui a consulté le dossier »: every read and change of a family's files,
 * read straight from the audit log — the very rows the hash tree seals — not
 * from a copy kept for the page, which could differ. An event names the
 * families it touched (family_ids; and one row a family in
 * audit_event_families, written by the database with the event, which is
 * what the look-up uses), so the family's events are one index look-up, as
 * soon as they are committed. A coordinated allocation round's event names
 * its run instead, not the hundreds of thousands of families it read: the
 * family's rounds are found by its files — a real run's results with the
 * run's event, a dry run's rows of the files it read (migration 0047) —
 * and listed with its other events.
 *
 * What a parent sees of each event: when, which organisation (the facility
 * of a facility role, the programme for a tenant role, Guichet itself for
 * server work), which role, for what purpose, which of their files, which
 * fields, and whether it was done on their behalf. Never who personally:
 * the person's account id stays in the log, for the security officer.
 * Reading the list is itself recorded (with the same event as the export
 * when it is part of one).
 */
import { sql } from 'kysely';
import { decide } from '../access/decide.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError } from '../errors.ts';
import { withSession } from '../records/gateway.ts';
import { originFields } from '../tenants/service.ts';
import { kindOf, type AccessKind } from './breach.ts';
import { fieldsOfPurpose } from './purposes.ts';
import { childReferences, childrenOfFamilies, familyIdsOfAccount, filesReadByRounds, roundsThatRead } from '../records/lookups.ts';

/** A coordinated allocation round's event (src/records/allocation.ts). */
const ROUND_ACTION = 'allocation.run';

export type AccessorKind = 'you' | 'staff' | 'programme' | 'system' | 'other';

export interface AccessEntry {
  eventId: string;
  at: Date;
  action: string;
  kind: AccessKind;
  outcome: 'success' | 'failure';
  accessor: AccessorKind;
  /** Roles as the log has them, without facility ids: 'facility_staff', 'tenant_admin', 'parent', 'system:cli' … */
  roles: string[];
  /** Facility names for facility roles; empty otherwise. */
  facilities: string[];
  purpose: string | null;
  fields: string[];
  /** References of the family's files the event named. */
  files: string[];
  onBehalf: boolean;
  /** For an action done for the parent in an assisted session: the agent's work address (the parent gave their consent to that person). */
  agentEmail: string | null;
}

export interface AccessLogPage {
  entries: AccessEntry[];
  total: number;
  page: number;
  pages: number;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function accessorOf(roles: readonly string[], actor: string | null, self: string): AccessorKind {
  if (actor && actor === self) return 'you';
  if (roles.some((r) => r.startsWith('system:'))) return 'system';
  if (roles.some((r) => r.startsWith('facility_staff') || r.startsWith('facility_director'))) return 'staff';
  if (roles.some((r) => ['tenant_admin', 'program_operator', 'security_officer'].includes(r))) return 'programme';
  return 'other';
}

/** The family's events, newest first; `own` includes the parent's own actions. */
async function entriesOf(trx: Trx, familyIds: readonly string[], self: string, opts: { own: boolean; limit: number | null; offset: number }): Promise<{ entries: AccessEntry[]; total: number }> {
  if (!familyIds.length) return { entries: [], total: 0 };
  const own = (await childrenOfFamilies(trx, [...familyIds])).map((c) => c.id);
  // The family's events newest first, by the rows that name each event's families (migration 0039: under
  // row-level security an index on family_ids is out of reach of the overlap operator), and the allocation
  // rounds that read one of its files (migration 0047: a round's event names the run, not the families);
  // then the page's rows read by primary key. Both are index look-ups; the union removes the events named twice.
  const named = trx.selectFrom('audit_event_families').select(['tenant_id', 'seq']).where('family_id', '=', sql<string>`ANY(${sql.val([...familyIds])}::uuid[])`);
  let found = trx
    .selectFrom(named.union(roundsThatRead(trx, own)).as('f'))
    .innerJoin('audit_events as e', (j) => j.onRef('e.tenant_id', '=', 'f.tenant_id').onRef('e.seq', '=', 'f.seq'))
    .select('e.seq as s')
    .where('e.outcome', '<>', 'denied');
  if (!opts.own) found = found.where((eb) => eb.or([eb('e.actor_account_id', 'is', null), eb('e.actor_account_id', '<>', self)]));
  const seqs = (await found.orderBy('e.seq', 'desc').execute()).map((r) => String(r.s));
  const total = seqs.length;
  const page = opts.limit === null ? seqs.slice(opts.offset) : seqs.slice(opts.offset, opts.offset + opts.limit);
  if (!page.length) return { entries: [], total };
  // Of an event's targets, only the family's own files come back: an event of the programme's work can name
  // hundreds of thousands of files, and the page needs the family's few.
  const ours = sql<string[]>`ARRAY(SELECT t FROM pg_catalog.unnest(target_ids) AS t WHERE t = ANY(${sql.val(own)}::text[]))`;
  const rows = trx
    .selectFrom('audit_events')
    .select(['id', 'seq', 'occurred_at', 'action', 'outcome', 'actor_account_id', 'actor_roles', 'on_behalf_of', ours.as('target_ids'), 'fields', 'purpose'])
    .where('seq', '=', sql<string>`ANY(${sql.val(page)}::bigint[])`)
    .orderBy('seq', 'desc');
  const events = await rows.execute();
  // A round's files are not among its targets (it names its run): they are the ones it recorded reading.
  const roundFiles = new Map<string, string[]>();
  for (const r of await filesReadByRounds(trx, events.filter((e) => e.action === ROUND_ACTION).map((e) => String(e.seq)), own)) {
    roundFiles.set(r.seq, [...(roundFiles.get(r.seq) ?? []), r.childId]);
  }
  for (const e of events) e.target_ids = [...e.target_ids, ...(roundFiles.get(String(e.seq)) ?? [])];
  const targetIds = [...new Set(events.flatMap((e) => e.target_ids).filter((x) => UUID.test(x)))];
  const refOf = await childReferences(trx, targetIds, [...familyIds]);
  const facilityIds = [...new Set(events.flatMap((e) => e.actor_roles.map((r) => r.split(':')[1] ?? '').filter((x) => UUID.test(x))))];
  const facilities = facilityIds.length ? await trx.selectFrom('facilities').select(['id', 'name']).where('id', 'in', facilityIds).execute() : [];
  const nameOf = new Map(facilities.map((f) => [f.id, f.name]));
  // Who acted for the parent, by name: they consented to that person, so they may know who it was.
  const agentIds = [...new Set(events.filter((e) => e.on_behalf_of === self && e.actor_account_id && e.actor_account_id !== self).map((e) => e.actor_account_id!))];
  const agents = agentIds.length ? await trx.selectFrom('accounts').select(['id', 'email']).where('id', 'in', agentIds).execute() : [];
  const emailOf = new Map(agents.map((a) => [a.id, a.email]));
  return {
    total,
    entries: events.map((e) => ({
      eventId: e.id,
      at: e.occurred_at,
      action: e.action,
      kind: kindOf(e.action),
      outcome: e.outcome === 'failure' ? 'failure' : 'success',
      // A round is the programme's work, whoever started it on the server.
      accessor: e.action === ROUND_ACTION && !(e.actor_account_id && e.actor_account_id === self) ? 'programme' : accessorOf(e.actor_roles, e.actor_account_id, self),
      roles: [...new Set(e.actor_roles.map((r) => (r.startsWith('system:') ? r : r.split(':')[0]!)))],
      facilities: [...new Set(e.actor_roles.map((r) => nameOf.get(r.split(':')[1] ?? '')).filter((x): x is string => !!x))],
      purpose: e.purpose,
      fields: e.fields.length ? [...e.fields] : (fieldsOfPurpose(e.purpose) ?? []),
      files: [...new Set(e.target_ids.map((id) => refOf.get(id)).filter((x): x is string => !!x))],
      onBehalf: !!e.on_behalf_of && e.on_behalf_of === self,
      agentEmail: e.on_behalf_of === self && e.actor_account_id ? (emailOf.get(e.actor_account_id) ?? null) : null,
    })),
  };
}

async function familiesOf(trx: Trx, accountId: string): Promise<string[]> {
  return familyIdsOfAccount(trx, accountId);
}

export const ACCESS_LOG_PAGE_SIZE = 50;

/** The signed-in parent's access list, a page at a time. */
export async function readAccessLog(deps: Deps, ctx: Ctx, opts: { page: number; own: boolean }): Promise<AccessLogPage> {
  const action = 'privacy.accessLog.read';
  const actor = ctx.actor;
  const d = decide(actor, action, { type: 'family', ownerAccountId: actor?.accountId ?? '' }, ctx.now);
  if (!d.allowed || !actor) {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action, outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'family', details: { reason: d.reason ?? 'denied' } }, ctx.now);
    throw new AppError(actor ? (d.reason === 'email_not_verified' ? 'emailNotVerified' : 'forbidden') : 'signInRequired');
  }
  const page = Number.isInteger(opts.page) && opts.page >= 1 && opts.page <= 100_000 ? opts.page : 1;
  return inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const familyIds = await familiesOf(trx, actor.accountId);
      const { entries, total } = await entriesOf(trx, familyIds, actor.accountId, { own: opts.own, limit: ACCESS_LOG_PAGE_SIZE, offset: (page - 1) * ACCESS_LOG_PAGE_SIZE });
      // Recorded before the list leaves; it is the family's too, so it shows among the parent's own actions.
      await appendAudit(
        trx,
        ctx.tenant.id,
        {
          action,
          outcome: 'success',
          ...originFields(originOf(ctx)),
          targetType: 'family',
          familyIds,
          fields: ['access_log'],
          purpose: 'parent.accessLog.view',
          details: withSession(ctx, { page, entries: entries.length }),
        },
        ctx.now,
      );
      return { entries, total, page, pages: Math.max(1, Math.ceil(total / ACCESS_LOG_PAGE_SIZE)) };
    },
    actor.accountId,
  );
}

/**
 * The whole list, for the export: read in the export's own transaction
 * (after the gateway recorded it), everyone's actions included.
 */
export async function accessLogForExport(deps: Deps, ctx: Ctx, familyIds: readonly string[]): Promise<AccessEntry[]> {
  const self = ctx.actor!.accountId;
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => (await entriesOf(trx, familyIds, self, { own: true, limit: null, offset: 0 })).entries, self);
}
