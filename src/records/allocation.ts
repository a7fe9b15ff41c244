/**
 * The coordinated allocation's way in and out of personal data: the round's
 * inputs read in bulk (one audit event naming the run), its outcome written
 * as a signed run, per-child results, per-slot cutoffs and offers, its replay,
 * and a family's explanation.
 *
 * The bulk read is audited as one event with the run id rather than one per
 * family: a round reads every waiting file, and naming 870,000 families in one
 * event would make the log a copy of the table. A family's access list
 * (src/privacy/access-log.ts) finds the rounds that read its files by the
 * files: a real run's allocation_results (its child is there) and the run's
 * event, on the run (audit_seq); a dry run, which stores no results, writes
 * one row a file it read, by its event (allocation_reads).
 */
import { createHash, randomUUID, sign, verify, createPublicKey } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import { appendAudit, appendAuditMany } from '../audit/log.ts';
import type { AuditOrigin } from '../audit/events.ts';
import { ed25519FromSeed } from '../audit/signing.ts';
import { envelopeFor } from '../crypto/envelope.ts';
import type { KeyProvider } from '../crypto/keys.ts';
import type { Deps, Ctx } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import type { DB } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError } from '../errors.ts';
import { parseRules, type TenantRules } from '../tenants/rules.ts';
import { decide } from '../access/decide.ts';
import { addMonths } from '../waitlist/dates.ts';
import { ageGroupOfMonth, category, senioritySql } from '../waitlist/ranking.ts';
import { facilityPriorityStates } from './ordering.ts';
import {
  allocate,
  compressSnapshot,
  decodeInputs,
  decompressSnapshot,
  encodeInputs,
  inputsHash,
  FLAG_SIBLING,
  FLAG_STAFF,
  FLAG_SUBSIDISED,
  dayOfIso,
  lifted,
  monthsWaitedDays,
  orderFor,
  outputsHash,
  pointsOfApp,
  type PointsWeights,
  signedText,
  INFANT,
  TODDLER,
  type AllocationInputs,
} from '../waitlist/allocation.ts';
import { audit, childWithOwner, deny, run } from './gateway.ts';
import { openChildren } from './fields.ts';
import { ensureTenantEncrypted } from './legacy.ts';
import { offerDeadline, referralOrigin } from './offers.ts';
import { originFields } from '../tenants/service.ts';
import { formatDateTime, messages, type Locale } from '../web/i18n/index.ts';

const DAY_MS = 86_400_000;
const dayOf = (iso: string) => Math.floor(Date.parse(`${iso}T00:00:00Z`) / DAY_MS);
const isoOf = (day: number) => new Date(day * DAY_MS).toISOString().slice(0, 10);
const AGE = ['infant', 'toddler'] as const;

/** The tenant's allocation key: derived from the master key like the audit log's, for another purpose. */
function allocationKey(keys: KeyProvider, tenantId: string) {
  return ed25519FromSeed(keys.derive(`allocation-signing:${tenantId}`, 32));
}

export interface AllocationParameters {
  /** 'categories' or 'points' (runs stored before priorities were read: 'quebec-2025', the categories). */
  order: string;
  /** The points order's weights, part of what the run is signed over. */
  weights?: PointsWeights;
  /** The day the age group is judged from (YYYY-MM-DD). */
  today: string;
  infantMaxMonths: number;
  deadlineDays: number;
  [k: string]: unknown;
}

export interface Loaded {
  inputs: AllocationInputs;
  /** Application ids, parallel to inputs.appFacility: for the offers. */
  appIds: string[];
  /** The declared priority that lifts each application (for offers.by_priority, counted against the cap), or null. */
  appByPriority: (string | null)[];
  /** Files written before the clear birth month, whose birth date was opened for the age group. */
  birthDatesOpened: number;
}

function ageGroupFromDate(birthDate: string, desired: string, today: string, infantMaxMonths: number): number {
  const start = desired > today ? desired : today;
  return start < addMonths(birthDate, infantMaxMonths) ? INFANT : TODDLER;
}

const CHILD_BATCH = 20_000;

/**
 * Every live child waiting with at least one active application and no
 * pending offer, in reference order, with its applications in its order of
 * preference; every facility of the tenant with its vacancies.
 */
export async function loadInputs(trx: Trx, tenant: { id: string; rules: TenantRules }, keys: KeyProvider, params: AllocationParameters, onProgress?: (done: number, total: number) => void): Promise<Loaded> {
  const tenantId = tenant.id;
  const facilities = await trx
    .selectFrom('facilities as f')
    .leftJoin('facility_places as p', 'p.facility_id', 'f.id')
    .select(['f.id', 'p.age_group', 'p.vacancies'])
    .where('f.tenant_id', '=', tenantId)
    .orderBy('f.id')
    .execute();
  const facilityIds: string[] = [];
  const facilityIndex = new Map<string, number>();
  for (const f of facilities) {
    if (!facilityIndex.has(f.id)) {
      facilityIndex.set(f.id, facilityIds.length);
      facilityIds.push(f.id);
    }
  }
  const vacancies = new Int32Array(facilityIds.length * 2);
  for (const f of facilities) if (f.age_group) vacancies[facilityIndex.get(f.id)! * 2 + (f.age_group === 'infant' ? INFANT : TODDLER)] = f.vacancies ?? 0;
  // Each facility's declared priorities and its cap, as its own candidate list reads them (src/records/ordering.ts).
  const states = await facilityPriorityStates(trx, tenant, params.today);
  const facilityPriorityOpen = new Uint8Array(facilityIds.length);
  const declaredOf: (readonly string[] | null)[] = new Array(facilityIds.length).fill(null);
  for (const [id, st] of states) {
    const i = facilityIndex.get(id);
    if (i === undefined) continue;
    declaredOf[i] = st.declared;
    facilityPriorityOpen[i] = st.priorityOpen ? 1 : 0;
  }

  const waiting = (q: Trx) =>
    q
      .selectFrom('children as c')
      .where('c.tenant_id', '=', tenantId)
      .where('c.deleted_at', 'is', null)
      .where('c.purged_at', 'is', null)
      // An unconfirmed file is out of every ranking (src/records/confirmation.ts), so out of the round too.
      .where('c.inactive_since', 'is', null)
      .where(({ exists, not, selectFrom }) => not(exists(selectFrom('offers as o').select('o.id').whereRef('o.child_id', '=', 'c.id').where('o.status', '=', 'pending'))))
      .where(({ exists, selectFrom }) => exists(selectFrom('applications as a').select('a.id').whereRef('a.child_id', '=', 'c.id').where('a.status', '=', 'active')));
  const total = Number((await waiting(trx).select(sql<string>`count(*)`.as('n')).executeTakeFirstOrThrow()).n);

  const env = envelopeFor(keys);
  const childIds: string[] = [];
  const desired: number[] = [];
  const ages: number[] = [];
  const starts: number[] = [0];
  const appFacility: number[] = [];
  const appCategory: number[] = [];
  const appCreated: number[] = [];
  const appFlags: number[] = [];
  const appMet: number[] = [];
  const appByPriority: (string | null)[] = [];
  const appIds: string[] = [];
  let after = '';
  let birthDatesOpened = 0;
  onProgress?.(0, total);
  for (;;) {
    const children = await waiting(trx)
      .select(['c.id', 'c.reference', 'c.family_id', 'c.desired_entry_date', 'c.in_subsidised_care', 'c.birth_month', senioritySql('c').as('seniority'), sql<Buffer | null>`CASE WHEN c.birth_month IS NULL THEN c.birth_date_enc END`.as('birth_date_enc')])
      .where('c.reference', '>', after)
      .orderBy('c.reference')
      .limit(CHILD_BATCH)
      .execute();
    if (children.length === 0) break;
    after = children[children.length - 1]!.reference;
    // Files written before the clear birth month: open only their birth dates.
    const unknown = children.filter((c) => !c.birth_month);
    birthDatesOpened += unknown.length;
    const opened = unknown.length ? await openChildren(env, tenantId, unknown.map((c) => ({ id: c.id, family_id: c.family_id, birth_date_enc: c.birth_date_enc })), ['birth_date']) : new Map();
    const apps = await trx
      .selectFrom('applications')
      .select(['id', 'child_id', 'facility_id', 'sibling_attending', 'parent_is_staff', 'priorities', 'created_at'])
      .where('child_id', 'in', children.map((c) => c.id))
      .where('status', '=', 'active')
      .orderBy('child_id')
      .orderBy('preference')
      .orderBy('created_at')
      .orderBy('id')
      .execute();
    const byChild = new Map<string, typeof apps>();
    for (const a of apps) {
      const list = byChild.get(a.child_id);
      if (list) list.push(a);
      else byChild.set(a.child_id, [a]);
    }
    for (const c of children) {
      const list = byChild.get(c.id) ?? [];
      const birth = c.birth_month ?? null;
      const age = birth
        ? (ageGroupOfMonth(birth, c.desired_entry_date, params.today, params.infantMaxMonths) === 'infant' ? INFANT : TODDLER)
        : ageGroupFromDate(opened.get(c.id)?.birth_date ?? c.desired_entry_date, c.desired_entry_date, params.today, params.infantMaxMonths);
      childIds.push(c.id);
      // Seniority as the ranking counts it: a file that lost it on reactivation counts from its return.
      desired.push(dayOf(c.seniority));
      ages.push(age);
      for (const a of list) {
        const f = facilityIndex.get(a.facility_id)!;
        // The facility's declared kinds the parent says the child meets, in the declaration's order (by kind), as rankFacilityIn counts them.
        const met = declaredOf[f]?.filter((k) => a.priorities.includes(k)) ?? [];
        appFacility.push(f);
        appFlags.push((a.sibling_attending ? FLAG_SIBLING : 0) | (a.parent_is_staff ? FLAG_STAFF : 0) | (c.in_subsidised_care ? FLAG_SUBSIDISED : 0));
        appMet.push(met.length);
        appByPriority.push(facilityPriorityOpen[f] && met.length ? met[0]! : null);
        appCategory.push(category({ parentIsStaff: a.parent_is_staff, siblingAttending: a.sibling_attending, inSubsidisedCare: c.in_subsidised_care }));
        appCreated.push(new Date(a.created_at).getTime());
        appIds.push(a.id);
      }
      starts.push(appFacility.length);
    }
    onProgress?.(childIds.length, total);
  }
  return {
    birthDatesOpened,
    inputs: {
      childIds,
      facilityIds,
      childDesiredDay: Int32Array.from(desired),
      childAgeGroup: Uint8Array.from(ages),
      choiceStart: Int32Array.from(starts),
      appFacility: Int32Array.from(appFacility),
      appCategory: Uint8Array.from(appCategory),
      appCreatedMs: Float64Array.from(appCreated),
      vacancies,
      appFlags: Uint8Array.from(appFlags),
      appPrioritiesMet: Uint8Array.from(appMet),
      facilityPriorityOpen,
    },
    appIds,
    appByPriority,
  };
}

export interface RunOptions {
  dryRun: boolean;
  today: string;
  deadlineDays: number;
  now: Date;
  origin: AuditOrigin;
  /** Where the tenant's pages are, for the link in each family's e-mail (tenantBaseUrl). */
  baseUrl?: string;
  onPhase?: (name: string) => void;
  onProgress?: (done: number, total: number) => void;
}

export interface RunSummary {
  runId: string;
  children: number;
  applications: number;
  placed: number;
  byChoice: number[];
  inputsHash: string;
  outputsHash: string;
  seconds: { load: number; round: number; write: number };
}

export class AllocationNotEnabled extends Error {}

/** What a round reads of each waiting file. */
export const ROUND_FIELDS = ['desired_entry_date', 'birth_month', 'in_subsidised_care', 'applications'] as const;

/** The files a dry run read, in the order it read them, as its event seals them: what allocation_reads can be checked against. */
export function filesHash(childIds: readonly string[]): string {
  const h = createHash('sha256');
  for (const id of childIds) h.update(`${id}\n`);
  return h.digest('hex');
}

/**
 * One row a file a dry run read, by its event (migration 0047): how a family's access list finds it, since
 * the event names the run and not the families, and a dry run stores no results. A real run's results say
 * which files it read, with the run's event on the run.
 */
async function writeReads(trx: Trx, tenantId: string, seq: string, childIds: readonly string[]): Promise<void> {
  for (let i = 0; i < childIds.length; i += ROWS) {
    await sql`INSERT INTO allocation_reads (tenant_id, child_id, seq)
      SELECT ${tenantId}::uuid, t, ${seq}::bigint FROM unnest(${childIds.slice(i, i + ROWS)}::uuid[]) AS t`.execute(trx);
  }
}

export interface DryRunReadsCheck {
  /** Dry runs found in the log (events that carry a filesHash). */
  runs: number;
  /** The first whose recorded reads do not hash to its event's list, or null. */
  bad: { seq: string; eventId: string; recorded: number; announced: number } | null;
}

/**
 * Checks, for each dry run in the tenant's log, that the files allocation_reads
 * says it read are the list its event sealed (details.filesHash; the order read
 * is the files' references): rows removed, added or pointed elsewhere show. The
 * event itself is vouched for by the audit tree (`guichet audit verify`, which
 * runs this too).
 */
export async function checkDryRunReads(db: Kysely<DB>, tenantId: string): Promise<DryRunReadsCheck> {
  return inTenant(db, tenantId, async (trx) => {
    const { rows: runs } = await sql<{ seq: string; id: string; hash: string; children: string | null }>`
      SELECT e.seq::text AS seq, e.id, e.details->>'filesHash' AS hash, e.details->>'children' AS children
      FROM audit_events e
      WHERE e.tenant_id = ${tenantId} AND e.action = 'allocation.run' AND e.outcome = 'success' AND e.details->>'filesHash' IS NOT NULL
      ORDER BY e.seq`.execute(trx);
    for (const r of runs) {
      const { rows } = await sql<{ child_id: string }>`SELECT a.child_id FROM allocation_reads a JOIN children c ON c.id = a.child_id
        WHERE a.tenant_id = ${tenantId} AND a.seq = ${r.seq}::bigint ORDER BY c.reference`.execute(trx);
      if (filesHash(rows.map((x) => x.child_id)) !== r.hash) {
        return { runs: runs.length, bad: { seq: r.seq, eventId: r.id, recorded: rows.length, announced: Number(r.children ?? 0) } };
      }
    }
    return { runs: runs.length, bad: null };
  });
}

/** One round in one transaction: read, allocate, and (unless dry) record and offer. */
export async function runAllocation(db: Kysely<DB>, keys: KeyProvider, tenant: { id: string; rules: TenantRules }, opts: RunOptions): Promise<RunSummary> {
  if (!tenant.rules.coordinatedAllocation) throw new AllocationNotEnabled('this tenant does not run coordinated allocation (rules: coordinatedAllocation)');
  // The tenant's own order, the one its facilities' candidate lists show (src/waitlist/ranking.ts).
  const o = tenant.rules.ordering;
  const params: AllocationParameters = { order: o.kind, ...(o.kind === 'points' ? { weights: { ...o.weights } } : {}), today: opts.today, infantMaxMonths: tenant.rules.infantMaxMonths, deadlineDays: opts.deadlineDays };
  const order = orderFor(params);
  if (!order) throw new Error(`allocation: no allocation order for "${params.order}"`);
  const runId = randomUUID();
  // Files written before the clear birth month get it first, each opening on the record (src/records/legacy.ts).
  await ensureTenantEncrypted(db, keys, tenant.id, opts.now);
  return inTenant(db, tenant.id, async (trx) => {
    const t0 = performance.now();
    // A real round holds every facility's places from before it reads them to its commit: a vacancy declared, or an
    // offer refused or cancelled meanwhile, waits for it and then sees its offers, rather than offering the same
    // child twice or more places than there are (it would fail the round). The order is the one every other
    // transaction locks a facility's rows in; a dry run changes nothing and holds nothing.
    if (!opts.dryRun) await sql`SELECT 1 FROM facility_places WHERE tenant_id = ${tenant.id}::uuid ORDER BY facility_id, age_group FOR UPDATE`.execute(trx);
    opts.onPhase?.('load');
    const { inputs, appIds, appByPriority, birthDatesOpened } = await loadInputs(trx, tenant, keys, params, opts.onProgress);
    // Written before anything leaves this function: the bulk read is on the record even if the round fails.
    const event = await appendAudit(
      trx,
      tenant.id,
      {
        action: 'allocation.run',
        outcome: 'success',
        actorAccountId: opts.origin.actorAccountId,
        actorRoles: opts.origin.actorRoles,
        ip: opts.origin.ip,
        userAgent: opts.origin.userAgent,
        requestId: opts.origin.requestId,
        targetType: 'allocation_run',
        targetIds: [runId],
        // Files written before the clear birth month had their birth date opened for the age group.
        fields: birthDatesOpened ? [...ROUND_FIELDS, 'birth_date'] : [...ROUND_FIELDS],
        // A dry run reads the same files for another purpose: to see what a round would do, changing nothing.
        purpose: opts.dryRun ? 'allocation.round.dryRun' : 'allocation.round',
        details: { run: runId, dryRun: opts.dryRun, children: inputs.childIds.length, applications: inputs.appFacility.length, order: params.order, today: params.today, ...(opts.dryRun ? { filesHash: filesHash(inputs.childIds) } : {}) },
      },
      opts.now,
    );
    const t1 = performance.now();
    opts.onPhase?.('allocate');
    const result = allocate(inputs, order, (share) => opts.onProgress?.(Math.round(share * inputs.childIds.length), inputs.childIds.length));
    const snapshot = encodeInputs(inputs);
    const inHash = inputsHash(snapshot, params);
    const outHash = outputsHash(snapshot, result);
    const t2 = performance.now();

    const byChoice: number[] = [];
    let placed = 0;
    for (let c = 0; c < inputs.childIds.length; c++) {
      const a = result.assigned[c]!;
      if (a < 0) continue;
      placed++;
      const k = a - inputs.choiceStart[c]!;
      byChoice[k] = (byChoice[k] ?? 0) + 1;
    }

    opts.onPhase?.('write');
    if (opts.dryRun) await writeReads(trx, tenant.id, event.seq, inputs.childIds);
    else {
      const key = allocationKey(keys, tenant.id);
      const signature = sign(null, Buffer.from(signedText(runId, tenant.id, params, inHash, outHash), 'utf8'), key.privateKey);
      await trx
        .insertInto('allocation_runs')
        .values({
          id: runId,
          tenant_id: tenant.id,
          started_at: opts.now,
          finished_at: new Date(opts.now.getTime() + Math.round(performance.now() - t0)),
          dry_run: false,
          parameters: JSON.stringify(params),
          children: inputs.childIds.length,
          applications: inputs.appFacility.length,
          placed,
          inputs_hash: inHash,
          outputs_hash: outHash,
          inputs_snapshot: compressSnapshot(snapshot),
          signature,
          public_key: key.publicKey,
          audit_seq: event.seq,
        })
        .execute();
      await writeResults(trx, tenant, runId, inputs, appIds, appByPriority, result, params, opts);
    }
    const t3 = performance.now();
    return {
      runId,
      children: inputs.childIds.length,
      applications: inputs.appFacility.length,
      placed,
      byChoice: Array.from(byChoice, (n) => n ?? 0),
      inputsHash: inHash.toString('hex'),
      outputsHash: outHash.toString('hex'),
      seconds: { load: (t1 - t0) / 1000, round: (t2 - t1) / 1000, write: (t3 - t2) / 1000 },
    };
  });
}

const ROWS = 10_000;

async function writeResults(trx: Trx, tenant: { id: string; rules: TenantRules }, runId: string, x: AllocationInputs, appIds: string[], appByPriority: (string | null)[], r: ReturnType<typeof allocate>, params: AllocationParameters, opts: RunOptions): Promise<void> {
  const tenantId = tenant.id;
  const n = x.childIds.length;
  // The terms of the order each explanation shows: points (points order) and the lift by a declared priority.
  const points = params.order === 'points' && params.weights ? new Int32Array(x.appFacility.length) : null;
  if (points) {
    const todayDay = dayOfIso(params.today);
    for (let c = 0; c < n; c++) {
      const months = monthsWaitedDays(x.childDesiredDay[c]!, todayDay);
      for (let a = x.choiceStart[c]!; a < x.choiceStart[c + 1]!; a++) points[a] = pointsOfApp(x, params.weights!, months, a);
    }
  }
  for (let i = 0; i < n; i += ROWS) {
    const child: string[] = [];
    const pts: (string | null)[] = [];
    const lifts: string[] = [];
    const age: string[] = [];
    const cats: string[] = [];
    const facs: string[] = [];
    const dates: string[] = [];
    const got: (number | null)[] = [];
    for (let c = i; c < Math.min(n, i + ROWS); c++) {
      const s = x.choiceStart[c]!;
      const e = x.choiceStart[c + 1]!;
      child.push(x.childIds[c]!);
      age.push(AGE[x.childAgeGroup[c]!]!);
      cats.push(`{${Array.from(x.appCategory.subarray(s, e)).join(',')}}`);
      facs.push(`{${Array.from(x.appFacility.subarray(s, e), (f) => x.facilityIds[f]).join(',')}}`);
      dates.push(isoOf(x.childDesiredDay[c]!));
      pts.push(points ? `{${Array.from(points.subarray(s, e)).join(',')}}` : null);
      const l: string[] = [];
      for (let a = s; a < e; a++) l.push(lifted(x, a) ? 't' : 'f');
      lifts.push(`{${l.join(',')}}`);
      got.push(r.assigned[c]! >= 0 ? r.assigned[c]! - s + 1 : null);
    }
    await sql`INSERT INTO allocation_results (run_id, tenant_id, child_id, age_group, category_by_choice, facility_by_choice, desired_entry_date, placed_choice, points_by_choice, lifted_by_choice)
      SELECT ${runId}::uuid, ${tenantId}::uuid, t.child, t.age, t.cats::smallint[], t.facs::uuid[], t.d, t.p, t.pts::int[], t.lifts::boolean[]
      FROM unnest(${child}::uuid[], ${age}::text[], ${cats}::text[], ${facs}::text[], ${dates}::date[], ${got}::smallint[], ${pts}::text[], ${lifts}::text[]) AS t(child, age, cats, facs, d, p, pts, lifts)`.execute(trx);
  }

  const cut = { fac: [] as string[], age: [] as string[], vac: [] as number[], adm: [] as number[], cat: [] as (number | null)[], date: [] as (string | null)[], pts: [] as (number | null)[], lift: [] as (boolean | null)[] };
  const appChild = new Int32Array(x.appFacility.length);
  for (let c = 0; c < n; c++) appChild.fill(c, x.choiceStart[c]!, x.choiceStart[c + 1]!);
  for (let s = 0; s < x.vacancies.length; s++) {
    if (x.vacancies[s]! <= 0 && r.admitted[s]! === 0) continue;
    const last = r.lastAdmitted[s]!;
    cut.fac.push(x.facilityIds[s >> 1]!);
    cut.age.push(AGE[s & 1]!);
    cut.vac.push(x.vacancies[s]!);
    cut.adm.push(r.admitted[s]!);
    cut.cat.push(last >= 0 ? x.appCategory[last]! : null);
    cut.date.push(last >= 0 ? isoOf(x.childDesiredDay[appChild[last]!]!) : null);
    cut.pts.push(last >= 0 && points ? points[last]! : null);
    cut.lift.push(last >= 0 ? lifted(x, last) : null);
  }
  for (let i = 0; i < cut.fac.length; i += ROWS) {
    const sl = <T>(a: T[]) => a.slice(i, i + ROWS);
    await sql`INSERT INTO allocation_cutoffs (run_id, tenant_id, facility_id, age_group, vacancies, admitted, last_category, last_desired_entry_date, last_points, last_lifted)
      SELECT ${runId}::uuid, ${tenantId}::uuid, t.* FROM unnest(${sl(cut.fac)}::uuid[], ${sl(cut.age)}::text[], ${sl(cut.vac)}::int[], ${sl(cut.adm)}::int[], ${sl(cut.cat)}::smallint[], ${sl(cut.date)}::date[], ${sl(cut.pts)}::int[], ${sl(cut.lift)}::boolean[])
      AS t(facility_id, age_group, vacancies, admitted, last_category, last_desired_entry_date, last_points, last_lifted)`.execute(trx);
  }

  // One pending offer per placed child (the partial unique index holds it), and the places it takes are no longer open.
  // The tenant's way of counting (business days, holidays, the time of day on Quebec's clocks), for the round's number of days.
  const deadline = offerDeadline(opts.now, { ...tenant.rules.offers, deadlineDays: params.deadlineDays });
  const offer = { app: [] as string[], child: [] as string[], fac: [] as string[], age: [] as string[], pri: [] as (string | null)[] };
  for (let c = 0; c < n; c++) {
    const a = r.assigned[c]!;
    if (a < 0) continue;
    offer.app.push(appIds[a]!);
    offer.child.push(x.childIds[c]!);
    offer.fac.push(x.facilityIds[x.appFacility[a]!]!);
    offer.age.push(AGE[x.childAgeGroup[c]!]!);
    offer.pri.push(appByPriority[a] ?? null);
  }
  for (let i = 0; i < offer.app.length; i += ROWS) {
    const sl = <T>(a: T[]) => a.slice(i, i + ROWS);
    // by_priority as the facility's own referral writes it: an admission by priority counts against its cap. A
    // registration withdrawn, a file deleted or made inactive, or a child offered a place elsewhere since the round
    // read its inputs (those hold no facility's places, so they did not wait for it) gets no offer: its place stays open.
    await sql`INSERT INTO offers (tenant_id, application_id, child_id, facility_id, age_group, status, source, allocation_run_id, offered_at, deadline, by_priority)
      SELECT ${tenantId}::uuid, t.app, t.child, t.fac, t.age, 'pending', 'allocation', ${runId}::uuid, ${opts.now}::timestamptz, ${deadline}::timestamptz, t.pri
      FROM unnest(${sl(offer.app)}::uuid[], ${sl(offer.child)}::uuid[], ${sl(offer.fac)}::uuid[], ${sl(offer.age)}::text[], ${sl(offer.pri)}::text[]) AS t(app, child, fac, age, pri)
      JOIN applications a ON a.id = t.app AND a.status = 'active'
      JOIN children c ON c.id = t.child AND c.deleted_at IS NULL AND c.purged_at IS NULL AND c.inactive_since IS NULL
      WHERE NOT EXISTS (SELECT 1 FROM offers o WHERE o.child_id = t.child AND o.status = 'pending')`.execute(trx);
  }
  await sql`UPDATE facility_places p SET vacancies = p.vacancies - o.n, updated_at = ${opts.now}
    FROM (SELECT facility_id, age_group, count(*)::int AS n FROM offers WHERE allocation_run_id = ${runId}::uuid GROUP BY facility_id, age_group) o
    WHERE p.facility_id = o.facility_id AND p.age_group = o.age_group`.execute(trx);

  // Each family is told at once, in its account's language, as a facility's own referral tells it (fillVacancies);
  // reading the parent's address to write to them is Guichet's own work, one event an offer, as there.
  const made = await trx
    .selectFrom('offers as o')
    .innerJoin('children as c', 'c.id', 'o.child_id')
    .innerJoin('families as f', 'f.id', 'c.family_id')
    .innerJoin('accounts as a', 'a.id', 'f.account_id')
    .innerJoin('facilities as fa', 'fa.id', 'o.facility_id')
    .select(['o.id', 'o.child_id', 'o.application_id', 'o.facility_id', 'o.age_group', 'c.reference', 'c.family_id', 'a.email', 'a.locale', 'fa.name'])
    .where('o.allocation_run_id', '=', runId)
    .orderBy('o.id')
    .execute();
  const referral = referralOrigin(opts.origin.requestId);
  for (let i = 0; i < made.length; i += 1000) {
    const part = made.slice(i, i + 1000);
    await trx
      .insertInto('mail_outbox')
      .values(
        part.map((o) => {
          const locale = o.locale as Locale;
          const m = messages(locale).offers;
          return { tenant_id: tenantId, to_address: o.email, locale, template: 'offer', subject: m.mailSubject, body_text: m.mailBody(o.reference, o.name, formatDateTime(locale, deadline), `${opts.baseUrl ?? ''}/offers/${o.id}`), created_at: opts.now };
        }),
      )
      .execute();
    await appendAuditMany(
      trx,
      tenantId,
      part.map((o) => ({
        action: 'waitlist.offer.create' as const,
        outcome: 'success' as const,
        ...originFields(referral),
        targetType: 'offer',
        targetIds: [o.id, o.child_id, o.application_id, o.facility_id],
        familyIds: [o.family_id],
        fields: ['reference', 'account_email', 'account_locale'],
        purpose: 'referral.offer' as const,
        details: { ageGroup: o.age_group, deadline: deadline.toISOString(), run: runId },
      })),
      opts.now,
    );
  }
}

export interface ReplayOutcome {
  ok: boolean;
  /** What failed first, when not ok. */
  problem: string | null;
  storedOutputsHash: string;
  replayedOutputsHash: string | null;
  children: number;
  seconds: number;
}

/**
 * Rebuilds the run's inputs from its snapshot, checks them against the signed
 * inputs hash, runs the round again and compares the output hash. Any change
 * to the stored run — snapshot, parameters, hashes or signature — fails.
 */
export async function replayAllocation(db: Kysely<DB>, keys: KeyProvider, tenantId: string, runId: string, origin: AuditOrigin, now: Date): Promise<ReplayOutcome> {
  return inTenant(db, tenantId, async (trx) => {
    const row = await trx.selectFrom('allocation_runs').selectAll().where('id', '=', runId).executeTakeFirst();
    if (!row) throw new AppError('notFound');
    await appendAudit(
      trx,
      tenantId,
      {
        action: 'allocation.replay',
        outcome: 'success',
        actorAccountId: origin.actorAccountId,
        actorRoles: origin.actorRoles,
        ip: origin.ip,
        userAgent: origin.userAgent,
        requestId: origin.requestId,
        targetType: 'allocation_run',
        targetIds: [runId],
        purpose: 'allocation.replay',
        details: { run: runId },
      },
      now,
    );
    const t0 = performance.now();
    const params = (typeof row.parameters === 'string' ? JSON.parse(row.parameters) : row.parameters) as AllocationParameters;
    const stored = Buffer.from(row.outputs_hash).toString('hex');
    const out = (problem: string | null, replayed: string | null, children: number): ReplayOutcome => ({ ok: problem === null, problem, storedOutputsHash: stored, replayedOutputsHash: replayed, children, seconds: (performance.now() - t0) / 1000 });

    const key = allocationKey(keys, tenantId);
    if (!key.publicKey.equals(Buffer.from(row.public_key))) return out('the run was signed with another key than this tenant\'s allocation key', null, row.children);
    const spki = createPublicKey(key.privateKey);
    if (!verify(null, Buffer.from(signedText(row.id, tenantId, params, Buffer.from(row.inputs_hash), Buffer.from(row.outputs_hash)), 'utf8'), spki, Buffer.from(row.signature))) {
      return out('the signature does not match the run\'s parameters and hashes', null, row.children);
    }
    let snapshot: Buffer;
    let inputs: AllocationInputs;
    try {
      snapshot = decompressSnapshot(Buffer.from(row.inputs_snapshot));
      inputs = decodeInputs(snapshot);
    } catch (err) {
      return out(`the inputs snapshot cannot be read (${(err as Error).message})`, null, row.children);
    }
    if (!inputsHash(snapshot, params).equals(Buffer.from(row.inputs_hash))) return out('the inputs snapshot does not match the signed inputs hash', null, inputs.childIds.length);
    const order = orderFor(params);
    if (!order) return out(`no allocation order "${params.order}" in this version`, null, inputs.childIds.length);
    const replayed = outputsHash(snapshot, allocate(inputs, order)).toString('hex');
    return out(replayed === stored ? null : 'the replayed outputs differ from the signed outputs hash', replayed, inputs.childIds.length);
  });
}

// ---------------------------------------------------------------------------
// A family's explanation

export type ChoiceOutcome = 'placed' | 'ahead' | 'noVacancy' | 'notNeeded';

export interface ChoiceExplanation {
  preference: number;
  facilityName: string;
  municipality: string;
  outcome: ChoiceOutcome;
  /** For 'ahead': what the last admitted candidate had over this child. */
  why: 'priority' | 'points' | 'category' | 'date' | 'registration' | null;
  /** Under the points order: this choice's points; null under the categories. */
  points: number | null;
  /**
   * The last admitted candidate's terms, shown only where the round admitted at least
   * LAST_ADMITTED_MIN_GROUP children in this age group at this facility; null otherwise (see lastWithheld).
   */
  lastPoints: number | null;
  lastCategory: number | null;
  lastDesiredEntryDate: string | null;
  /** True when the facility admitted someone in this age group but too few for the last one's terms to be shown. */
  lastWithheld: boolean;
  category: number;
}

/**
 * Below this many children admitted in an age group at a facility, the last admitted one's category, desired
 * entry date and points are not shown to other families: at a facility that admitted one or two, they come
 * close to naming that child (its family's staff or sibling ties, when it wished to start, how long it
 * waited). From five up, the last admitted is one of at least five, as in k-anonymity with k = 5; the
 * decisive term (why) is still given.
 */
export const LAST_ADMITTED_MIN_GROUP = 5;

export interface AllocationExplanation {
  childId: string;
  reference: string;
  firstName: string;
  runAt: Date;
  ageGroup: 'infant' | 'toddler';
  desiredEntryDate: string;
  placedChoice: number | null;
  choices: ChoiceExplanation[];
}

export const EXPLANATION_FIELDS = ['reference', 'first_name', 'age_group', 'desired_entry_date', 'category', 'allocation_outcome', 'choices'];

/** The child's outcome in the latest round that included it, or null when none did. */
export async function readAllocationExplanation(deps: Deps, ctx: Ctx, childId: string): Promise<AllocationExplanation | null> {
  return run(deps, ctx, 'waitlist.allocation.read', async (trx, env) => {
    const c = await childWithOwner(trx, ctx, childId, 'waitlist.allocation.read');
    const r = await trx
      .selectFrom('allocation_results as r')
      .innerJoin('allocation_runs as u', 'u.id', 'r.run_id')
      .select(['r.run_id', 'r.age_group', 'r.category_by_choice', 'r.facility_by_choice', 'r.desired_entry_date', 'r.placed_choice', 'r.points_by_choice', 'r.lifted_by_choice', 'u.started_at'])
      .where('r.child_id', '=', c.id)
      .orderBy('u.started_at', 'desc')
      .limit(1)
      .executeTakeFirst();
    const v = (await openChildren(env, ctx.tenant.id, [c], ['first_name'])).get(c.id)!;
    await audit(trx, ctx, { action: 'waitlist.allocation.read', targetType: 'child', targetIds: [c.id], familyIds: [c.family_id], fields: EXPLANATION_FIELDS, purpose: 'parent.allocation.view', details: r ? { run: r.run_id } : {} });
    if (!r) return null;
    const facilityIds = r.facility_by_choice;
    const facilities = facilityIds.length ? await trx.selectFrom('facilities').select(['id', 'name', 'municipality']).where('id', 'in', facilityIds).execute() : [];
    const cutoffs = facilityIds.length
      ? await trx.selectFrom('allocation_cutoffs').selectAll().where('run_id', '=', r.run_id).where('age_group', '=', r.age_group).where('facility_id', 'in', facilityIds).execute()
      : [];
    const fac = new Map(facilities.map((f) => [f.id, f]));
    const cut = new Map(cutoffs.map((k) => [k.facility_id, k]));
    const choices = facilityIds.map((fid, i): ChoiceExplanation => {
      const preference = i + 1;
      const mine = r.category_by_choice[i]!;
      const k = cut.get(fid);
      const points = r.points_by_choice?.[i] ?? null;
      // allocation_cutoffs.admitted: the children the round admitted in this age group at this facility.
      const shown = !!k && k.admitted >= LAST_ADMITTED_MIN_GROUP;
      const base = {
        preference,
        facilityName: fac.get(fid)?.name ?? '—',
        municipality: fac.get(fid)?.municipality ?? '',
        category: mine,
        lastCategory: shown ? k.last_category : null,
        lastDesiredEntryDate: shown ? k.last_desired_entry_date : null,
        points,
        lastPoints: shown && points !== null ? k.last_points : null,
        lastWithheld: !!k && k.admitted > 0 && !shown,
      };
      if (r.placed_choice === preference) return { ...base, outcome: 'placed', why: null };
      if (r.placed_choice !== null && preference > r.placed_choice) return { ...base, outcome: 'notNeeded', why: null };
      if (!k || k.vacancies === 0 || k.last_category === null) return { ...base, outcome: 'noVacancy', why: null };
      // The terms in the order's own sequence (src/waitlist/allocation.ts): the first one that differs is the reason.
      const why: ChoiceExplanation['why'] =
        points !== null && k.last_points !== null
          ? k.last_points > points
            ? 'points'
            : (k.last_desired_entry_date ?? '') < r.desired_entry_date
              ? 'date'
              : 'registration'
          : k.last_lifted && !r.lifted_by_choice?.[i]
            ? 'priority'
            : k.last_category < mine
              ? 'category'
              : (k.last_desired_entry_date ?? '') < r.desired_entry_date
                ? 'date'
                : 'registration';
      return { ...base, outcome: 'ahead', why };
    });
    return {
      childId: c.id,
      reference: c.reference,
      firstName: v.first_name ?? '',
      runAt: new Date(r.started_at),
      ageGroup: r.age_group,
      desiredEntryDate: r.desired_entry_date,
      placedChoice: r.placed_choice,
      choices,
    };
  });
}

// ---------------------------------------------------------------------------
// The programme's page: whether coordinated allocation runs, and its last rounds

export interface AllocationRunView {
  id: string;
  startedAt: Date;
  finishedAt: Date;
  order: string;
  children: number;
  applications: number;
  placed: number;
}

export interface AllocationSettings {
  enabled: boolean;
  runs: AllocationRunView[];
}

function checkTenant(ctx: Ctx, action: 'allocation.settings.read' | 'allocation.settings.update'): void {
  const d = decide(ctx.actor, action, { type: 'tenant' }, ctx.now);
  if (!d.allowed) deny(ctx, action, 'tenant', ctx.tenant.id, d.reason ?? 'denied', d, d.reason === 'not_signed_in' ? new AppError('signInRequired') : new AppError('forbidden'));
}

/** Read from the table, not the tenant cache: the page shows what the next round will do. */
async function enabledNow(trx: Trx, tenantId: string): Promise<boolean> {
  const r = await trx.selectFrom('tenants').select('rules').where('id', '=', tenantId).executeTakeFirstOrThrow();
  return parseRules(typeof r.rules === 'string' ? JSON.parse(r.rules) : r.rules).coordinatedAllocation;
}

export async function readAllocationSettings(deps: Deps, ctx: Ctx, limit = 10): Promise<AllocationSettings> {
  const action = 'allocation.settings.read';
  return run(deps, ctx, action, async (trx) => {
    checkTenant(ctx, action);
    const rows = await trx
      .selectFrom('allocation_runs')
      .select(['id', 'started_at', 'finished_at', 'parameters', 'children', 'applications', 'placed'])
      .orderBy('started_at', 'desc')
      .orderBy('id')
      .limit(limit)
      .execute();
    await audit(trx, ctx, { action, targetType: 'tenant', targetIds: [ctx.tenant.id], purpose: 'programme.allocation', details: { runs: rows.length } });
    return {
      enabled: await enabledNow(trx, ctx.tenant.id),
      runs: rows.map((r) => {
        const p = (typeof r.parameters === 'string' ? JSON.parse(r.parameters) : r.parameters) as AllocationParameters;
        return { id: r.id, startedAt: new Date(r.started_at), finishedAt: new Date(r.finished_at), order: p.order === 'quebec-2025' ? 'categories' : p.order, children: r.children, applications: r.applications, placed: r.placed };
      }),
    };
  });
}

/**
 * Turns the programme's coordinated allocation on or off (rules:
 * coordinatedAllocation), through the database function that changes that
 * one key of this tenant's rules only (migration 0021). Audited with the
 * value before and after.
 */
export async function setCoordinatedAllocation(deps: Deps, ctx: Ctx, enabled: boolean): Promise<{ before: boolean }> {
  const action = 'allocation.settings.update';
  const out = await run(deps, ctx, action, async (trx) => {
    checkTenant(ctx, action);
    const r = await sql<{ before: boolean }>`SELECT set_coordinated_allocation(${enabled}) AS before`.execute(trx);
    const before = !!r.rows[0]?.before;
    await audit(trx, ctx, { action, targetType: 'tenant', targetIds: [ctx.tenant.id], fields: ['rules.coordinatedAllocation'], purpose: 'programme.allocation', details: { before, after: enabled } });
    return { before };
  });
  deps.tenants.invalidate();
  return out;
}
