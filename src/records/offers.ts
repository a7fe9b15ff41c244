/**
 * Places, vacancies, referrals and offers: the facility declares the places
 * open now, and Guichet refers the next eligible child at once, in the same
 * transaction; the parent accepts or refuses before the tenant's deadline,
 * or the offer expires (the periodic job, src/waitlist/offer-expiry.ts); a
 * refused or expired place goes to the next child the same way; on
 * acceptance the facility learns who the child is; the director confirms
 * the start of care.
 *
 * Like the rest of src/records/, every function decides with access.decide,
 * writes its audit event in its transaction before any data leaves, and
 * opens only the fields its purpose needs (views.ts).
 *
 * Concurrency. A declaration locks its facility_places row, so vacancies are
 * counted once. Every change to one child's offers and registrations — an
 * answer, a withdrawal, an expiry, a cancellation, a referral — holds the
 * child's offers lock (lockChildOffers: a transaction-scoped advisory lock).
 * A person's change takes the child's row first (FOR NO KEY UPDATE, which a
 * new offer's foreign key check does not wait for), then that lock, waiting
 * for it; a referral only tries it and passes to the next child, then checks
 * again with a fresh statement that the registration is still active and no
 * offer is pending, so two declarations at two facilities at once never
 * offer the same child (the partial unique index offers_one_pending_per_child
 * is the last line); the expiry job takes the offer, the row and the lock
 * without waiting and leaves an offer someone is answering to its next pass.
 * So an answer and a withdrawal of the same registration at once follow one
 * another, whichever comes first, and never deadlock.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { decide } from '../access/decide.ts';
import { appendAudit } from '../audit/log.ts';
import type { AuditAction, AuditEventInput, AuditOrigin } from '../audit/events.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import type { Envelope } from '../crypto/envelope.ts';
import type { Trx } from '../db/connection.ts';
import type { AgeGroupValue, OfferStatus } from '../db/schema.ts';
import { AppError, ValidationError, type ErrorKind } from '../errors.ts';
import { enqueueMail } from '../mail/outbox.ts';
import type { TenantRules } from '../tenants/rules.ts';
import { originFields } from '../tenants/service.ts';
import { ageGroup, ageGroupOfMonth, rankOrderSql, type AgeGroup } from '../waitlist/ranking.ts';
import { addDays, isoWeekday, quebecHolidays, today } from '../waitlist/dates.ts';
import type { PriorityKind } from '../tenants/rules.ts';
import { facilityOrdering } from './ordering.ts';
import { formatDateTime, messages, type Locale } from '../web/i18n/index.ts';
import { FAMILY_FIELDS, openCells, openChildren, required } from './fields.ts';
import { audit, deny, markInSubsidisedCare, protectedAccess, readContext, run, UUID, withSession } from './gateway.ts';
import { protectedAmong, recordProtectedOpenings } from '../detection/protected.ts';

/**
 * What each offer purpose may see (the same policy as views.ts, for the
 * referral's screens): a parent's offers carry references, no name; a
 * facility sees identities for accepted offers only.
 */
export const OFFER_PURPOSE_FIELDS = {
  'parent.offers': ['reference', 'facility', 'age_group', 'status', 'offered_at', 'deadline', 'answered_at', 'start_date'],
  'parent.offer': ['reference', 'first_name', 'facility', 'age_group', 'status', 'offered_at', 'deadline', 'answered_at', 'start_date'],
  'facility.referrals': ['reference', 'age_group', 'status', 'offered_at', 'deadline', 'answered_at', 'start_date'],
  'facility.referrals.accepted': ['reference', 'age_group', 'status', 'offered_at', 'deadline', 'answered_at', 'start_date', 'first_name', 'last_name', 'birth_date', 'parent_first_name', 'parent_last_name', 'phone', 'account_email'],
} as const;

function fieldsFor(purpose: keyof typeof OFFER_PURPOSE_FIELDS): string[] {
  return [...OFFER_PURPOSE_FIELDS[purpose]];
}

export const AGE_GROUPS: readonly AgeGroup[] = ['infant', 'toddler'];

/** Why an answer, a declaration or a confirmation was refused; the route gives each its status. */
export type OfferRefusalReason = 'deadline_passed' | 'already_answered' | 'not_accepted';

export class OfferRefused extends AppError {
  constructor(
    kind: ErrorKind,
    readonly reason: OfferRefusalReason,
  ) {
    super(kind);
  }
}

/* ------------------------------------------------------------- deadlines */

const OFFER_TIME_ZONE = 'America/Toronto';
const localClock = new Intl.DateTimeFormat('en-CA', { timeZone: OFFER_TIME_ZONE, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });

/** The instant's date and wall-clock time in Quebec, as a UTC timestamp of those same figures. */
function wallClock(t: number): number {
  const p = Object.fromEntries(localClock.formatToParts(new Date(t)).map((x) => [x.type, x.value]));
  return Date.UTC(Number(p.year), Number(p.month) - 1, Number(p.day), Number(p.hour), Number(p.minute), Number(p.second)) + (t % 1000 + 1000) % 1000;
}

/** The instant at which Quebec's clocks read `wall` (figures as in wallClock), across a change of hour. */
function instantOf(wall: number): Date {
  let t = wall - (wallClock(wall) - wall);
  // Near a change of hour the first guess used the other side's offset: once more settles it.
  t = wall - (wallClock(t) - t);
  // A time the clocks skip in spring (02:30 on that Sunday) is read an hour on, so that a day stays 24 hours or more.
  if (wallClock(t) !== wall) t += 3600_000;
  return new Date(t);
}

/**
 * The answer's deadline: the tenant's days after the offer, at the same time of day on Quebec's clocks (a change
 * of hour in between moves no deadline by an hour). With businessDays, only Monday to Friday count, less
 * Quebec's statutory holidays (rules.holidays) and the tenant's own closed days.
 */
export function offerDeadline(offeredAt: Date, rules: TenantRules['offers']): Date {
  const wall = wallClock(offeredAt.getTime());
  const start = new Date(wall).toISOString().slice(0, 10);
  const closed = new Set(rules.closedDays);
  let date = start;
  for (let left = rules.deadlineDays; left > 0; ) {
    date = addDays(date, 1);
    const business = isoWeekday(date) <= 5 && !closed.has(date) && !(rules.holidays === 'quebec' && quebecHolidays(Number(date.slice(0, 4))).has(date));
    if (!rules.businessDays || business) left--;
  }
  return instantOf(wall + (Date.parse(`${date}T00:00:00Z`) - Date.parse(`${start}T00:00:00Z`)));
}

/* ----------------------------------------------------------------- locks */

const CHILD_OFFERS_LOCK = sql`pg_catalog.hashtext('guichet.offer.child')`;

/** The child's offers lock, waiting for it; the caller holds the child's row already (see Concurrency above). */
export async function lockChildOffers(trx: Trx, childId: string): Promise<void> {
  await sql`SELECT pg_catalog.pg_advisory_xact_lock(${CHILD_OFFERS_LOCK}, pg_catalog.hashtext(${childId}))`.execute(trx);
}

/** The child's offers lock if nobody holds it: a referral or the expiry job never waits for a person's change. */
async function tryLockChildOffers(trx: Trx, childId: string): Promise<boolean> {
  const { rows } = await sql<{ ok: boolean }>`SELECT pg_catalog.pg_try_advisory_xact_lock(${CHILD_OFFERS_LOCK}, pg_catalog.hashtext(${childId})) AS ok`.execute(trx);
  return rows[0]?.ok === true;
}

/** The child's row, then its offers lock: what a person's change to its offers or registrations takes first. */
async function lockChild(trx: Trx, childId: string): Promise<void> {
  await trx.selectFrom('children').select('id').where('id', '=', childId).forNoKeyUpdate().execute();
  await lockChildOffers(trx, childId);
}

/* ---------------------------------------------------------- who is next */

export interface NextChild {
  applicationId: string;
  childId: string;
  familyId: string;
  reference: string;
  /** The declared priority that lifted the child (written to the offer, counted against the cap), or null. */
  byPriority: PriorityKind | null;
}

export interface NextChildResult {
  next: NextChild | null;
  /** Every file whose birth date was opened to find it, for the audit event. */
  opened: { childId: string; familyId: string }[];
}

const CANDIDATE_BATCH = 50;

/**
 * Who is next for a place at this facility in this age group: the first
 * child, in the tenant's order, with an active registration there, a live
 * file, no pending offer anywhere, and in the age group (from the clear
 * birth month; a file written before it has its birth date opened). The one place
 * where the referral chooses a child; the caller audits `opened`.
 */
export async function nextEligibleChild(trx: Trx, env: Envelope, tenantId: string, rules: TenantRules, facilityId: string, group: AgeGroup, now: Date): Promise<NextChildResult> {
  const opened: NextChildResult['opened'] = [];
  // The same order as the staff list and the parent's rank (src/records/ranks.ts): the tenant's rules, the facility's priorities and its cap.
  const order = await facilityOrdering(trx, { rules }, facilityId, now);
  const lifting = order.priorityOpen ? order.declared : [];
  const t = today(now);
  for (let offset = 0; ; offset += CANDIDATE_BATCH) {
    const rows = await trx
      .selectFrom('applications as a')
      .innerJoin('children as c', 'c.id', 'a.child_id')
      .select(['a.id as application_id', 'c.id', 'c.family_id', 'c.reference', sql<Buffer | null>`CASE WHEN c.birth_month IS NULL THEN c.birth_date_enc END`.as('birth_date_enc'), 'c.birth_month', 'c.desired_entry_date', 'a.priorities'])
      .where('a.facility_id', '=', facilityId)
      .where('a.status', '=', 'active')
      .where('c.deleted_at', 'is', null)
      .where('c.purged_at', 'is', null)
      // An unconfirmed file is out of every list until the parent confirms it.
      .where('c.inactive_since', 'is', null)
      .where((eb) => eb.not(eb.exists(eb.selectFrom('offers as o').select('o.id').whereRef('o.child_id', '=', 'c.id').where('o.status', '=', 'pending'))))
      .orderBy(rankOrderSql('a', 'c', order))
      .limit(CANDIDATE_BATCH)
      .offset(offset)
      .execute();
    for (const r of rows) {
      // The age group from the clear birth month (checked here: a filter on it in the query misleads the planner); a
      // file written before it has its birth date opened.
      if (r.birth_month) {
        if (ageGroupOfMonth(r.birth_month, r.desired_entry_date, t, rules.infantMaxMonths) !== group) continue;
      } else {
        const birth = required((await openChildren(env, tenantId, [r], ['birth_date'])).get(r.id)!.birth_date, 'birth date');
        opened.push({ childId: r.id, familyId: r.family_id });
        if (ageGroup(birth, r.desired_entry_date, now, rules.infantMaxMonths) !== group) continue;
      }
      // Someone changing this child's offers or registrations right now (another facility's declaration, the parent
      // withdrawing, an answer): the next one, without waiting.
      if (!(await tryLockChildOffers(trx, r.id))) continue;
      // A fresh statement sees what was committed since the list was read: a withdrawal, a deletion, a pending offer.
      const still = await trx
        .selectFrom('applications as a')
        .innerJoin('children as c', 'c.id', 'a.child_id')
        .select('a.id')
        .where('a.id', '=', r.application_id)
        .where('a.status', '=', 'active')
        .where('c.deleted_at', 'is', null)
        .where('c.purged_at', 'is', null)
        .where('c.inactive_since', 'is', null)
        .where((eb) => eb.not(eb.exists(eb.selectFrom('offers as o').select('o.id').whereRef('o.child_id', '=', 'c.id').where('o.status', '=', 'pending'))))
        .executeTakeFirst();
      if (!still) continue;
      const met = lifting.filter((k) => r.priorities.includes(k));
      return { next: { applicationId: r.application_id, childId: r.id, familyId: r.family_id, reference: r.reference, byPriority: met[0] ?? null }, opened };
    }
    if (rows.length < CANDIDATE_BATCH) return { next: null, opened };
  }
}

/* ------------------------------------------------------------ referral */

interface Who {
  ctx: Ctx;
  origin: AuditOrigin;
}

async function writeEvent(trx: Trx, who: Who, e: Omit<AuditEventInput, 'outcome' | keyof ReturnType<typeof originFields>> & { outcome?: AuditEventInput['outcome'] }) {
  if (who.ctx.actor) return audit(trx, who.ctx, e);
  return appendAudit(trx, who.ctx.tenant.id, { outcome: 'success', ...originFields(who.origin), ...e }, who.ctx.now);
}

async function facilityName(trx: Trx, facilityId: string): Promise<string> {
  return (await trx.selectFrom('facilities').select('name').where('id', '=', facilityId).executeTakeFirstOrThrow()).name;
}

/** Who a referral's own reads are recorded as (fillVacancies, an allocation round): Guichet, tied to the request. */
export function referralOrigin(requestId: string | null): AuditOrigin {
  return { actorAccountId: null, actorRoles: ['system:referral'], ip: null, userAgent: null, requestId };
}

/**
 * Offers the locked row's vacancies to the next eligible children, one each,
 * until none is left or nobody fits; each offer is e-mailed to the parent at
 * once (outbox, same transaction) in the account's language. Returns the
 * offers made.
 */
async function fillVacancies(trx: Trx, env: Envelope, who: Who, facilityId: string, group: AgeGroup): Promise<string[]> {
  const { ctx } = who;
  // Choosing the child, reading its parent's address to write to them, opening a birth date: Guichet's own work,
  // which nobody sees (the facility learns a reference). Whoever set it off — a declaration, another family's
  // refusal — read none of it: the family's « Qui a consulté » says Guichet, and a breach report on that person
  // does not list it. The request's id ties it to what set it off.
  const referral: Who = ctx.actor ? { ctx: { ...ctx, actor: null }, origin: referralOrigin(ctx.requestId) } : who;
  const place = await trx.selectFrom('facility_places').select(['vacancies']).where('facility_id', '=', facilityId).where('age_group', '=', group).forUpdate().executeTakeFirstOrThrow();
  let vacancies = place.vacancies;
  const made: string[] = [];
  const opened = new Map<string, string>();
  let name: string | null = null;
  while (vacancies > 0) {
    const { next, opened: o } = await nextEligibleChild(trx, env, ctx.tenant.id, ctx.tenant.rules, facilityId, group, ctx.now);
    for (const x of o) opened.set(x.childId, x.familyId);
    if (!next) break;
    const deadline = offerDeadline(ctx.now, ctx.tenant.rules.offers);
    const offer = await trx
      .insertInto('offers')
      .values({ id: randomUUID(), tenant_id: ctx.tenant.id, application_id: next.applicationId, child_id: next.childId, facility_id: facilityId, age_group: group, by_priority: next.byPriority, offered_at: ctx.now, deadline })
      .returning('id')
      .executeTakeFirstOrThrow();
    vacancies--;
    made.push(offer.id);
    name ??= await facilityName(trx, facilityId);
    const parent = await trx
      .selectFrom('families as f')
      .innerJoin('accounts as a', 'a.id', 'f.account_id')
      .select(['a.email', 'a.locale'])
      .where('f.id', '=', next.familyId)
      .executeTakeFirstOrThrow();
    const m = messages(parent.locale as Locale).offers;
    await enqueueMail(
      trx,
      ctx.tenant.id,
      { to: parent.email, locale: parent.locale as Locale, template: 'offer', subject: m.mailSubject, body: m.mailBody(next.reference, name, formatDateTime(parent.locale as Locale, deadline), `${ctx.baseUrl}/offers/${offer.id}`) },
      ctx.now,
    );
    await writeEvent(trx, referral, {
      action: 'waitlist.offer.create',
      targetType: 'offer',
      targetIds: [offer.id, next.childId, next.applicationId, facilityId],
      familyIds: [next.familyId],
      fields: ['reference', 'account_email', 'account_locale'],
      purpose: 'referral.offer',
      details: { ageGroup: group, deadline: deadline.toISOString() },
    });
  }
  if (opened.size) {
    // Finding the child opened birth dates: recorded with every file opened, the ones that did not fit included.
    await writeEvent(trx, referral, {
      action: 'waitlist.offer.create',
      targetType: 'child',
      targetIds: [...opened.keys()],
      familyIds: [...new Set(opened.values())],
      fields: ['birth_date'],
      purpose: 'referral.ageGroup',
      details: { facility: facilityId, ageGroup: group, opened: opened.size, offered: made.length },
    });
  }
  await trx.updateTable('facility_places').set({ vacancies, updated_at: ctx.now }).where('facility_id', '=', facilityId).where('age_group', '=', group).execute();
  return made;
}

/* ------------------------------------------------------ places, vacancies */

export interface PlacesView {
  ageGroup: AgeGroup;
  places: number;
  /** Open and not yet offered (nobody eligible, for now). */
  vacancies: number;
  /** Offered, waiting for the parent's answer. */
  pending: number;
  updatedAt: Date;
}

async function placeCounts(trx: Trx, facilityId: string): Promise<PlacesView[]> {
  const rows = await trx.selectFrom('facility_places').select(['age_group', 'places', 'vacancies', 'updated_at']).where('facility_id', '=', facilityId).execute();
  const pend = await trx.selectFrom('offers').select(['age_group', sql<string>`count(*)`.as('n')]).where('facility_id', '=', facilityId).where('status', '=', 'pending').groupBy('age_group').execute();
  const pending = new Map(pend.map((p) => [p.age_group, Number(p.n)]));
  return AGE_GROUPS.map((g) => {
    const r = rows.find((x) => x.age_group === g);
    return { ageGroup: g, places: r?.places ?? 0, vacancies: r?.vacancies ?? 0, pending: pending.get(g) ?? 0, updatedAt: r?.updated_at ?? new Date(0) };
  });
}

function checkFacility(ctx: Ctx, action: 'waitlist.places.read' | 'waitlist.vacancy.declare' | 'waitlist.referral.list' | 'waitlist.offer.confirmStart', auditAction: AuditAction, facilityId: string): void {
  if (!UUID.test(facilityId)) deny(ctx, auditAction, 'facility', facilityId, 'malformed_id');
  const d = decide(ctx.actor, action, { type: 'facility', facilityId }, ctx.now);
  if (!d.allowed) deny(ctx, auditAction, 'facility', facilityId, d.reason ?? 'denied', d);
}

/** A facility's places per age group: no personal data (counts only). */
export async function readPlaces(deps: Deps, ctx: Ctx, facilityId: string): Promise<PlacesView[]> {
  return run(deps, ctx, 'waitlist.places.read', async (trx) => {
    checkFacility(ctx, 'waitlist.places.read', 'waitlist.places.read', facilityId);
    return placeCounts(trx, facilityId);
  });
}

/**
 * Sets the vacancies open now per age group (0 withdraws the ones not yet
 * offered), then refers the next children at once, all in one transaction.
 * Vacancies and the offers waiting for an answer together never exceed the
 * places; a bad value for any group changes nothing.
 */
export async function declareVacancies(deps: Deps, ctx: Ctx, facilityId: string, values: Partial<Record<AgeGroupValue, number>>): Promise<{ offered: number; open: number }> {
  const action = 'waitlist.vacancy.declare';
  return run(deps, ctx, action, async (trx, env) => {
    checkFacility(ctx, action, action, facilityId);
    const groups = AGE_GROUPS.filter((g) => values[g] !== undefined);
    if (!groups.length || Object.keys(values).some((k) => !AGE_GROUPS.includes(k as AgeGroup))) throw new ValidationError({ ageGroup: 'ageGroupInvalid' });
    const errors: Record<string, 'vacanciesInvalid' | 'vacanciesAbovePlaces'> = {};
    const rows = await trx.selectFrom('facility_places').select(['age_group', 'places', 'vacancies']).where('facility_id', '=', facilityId).orderBy('age_group').forUpdate().execute();
    if (!rows.length) deny(ctx, action, 'facility', facilityId, 'not_found');
    const pend = await trx.selectFrom('offers').select(['age_group', sql<string>`count(*)`.as('n')]).where('facility_id', '=', facilityId).where('status', '=', 'pending').groupBy('age_group').execute();
    for (const g of groups) {
      const v = values[g]!;
      const row = rows.find((r) => r.age_group === g);
      const pending = Number(pend.find((p) => p.age_group === g)?.n ?? 0);
      if (!Number.isInteger(v) || v < 0) errors[g] = 'vacanciesInvalid';
      else if (!row || v + pending > row.places) errors[g] = 'vacanciesAbovePlaces';
    }
    if (Object.keys(errors).length) throw new ValidationError(errors);
    let offered = 0;
    let open = 0;
    for (const g of groups) {
      const row = rows.find((r) => r.age_group === g)!;
      const v = values[g]!;
      await trx.updateTable('facility_places').set({ vacancies: v, updated_at: ctx.now, updated_by: ctx.actor!.accountId }).where('facility_id', '=', facilityId).where('age_group', '=', g).execute();
      await audit(trx, ctx, { action, targetType: 'facility', targetIds: [facilityId], details: { ageGroup: g, vacancies: v, before: row.vacancies, places: row.places } });
      const made = await fillVacancies(trx, env, { ctx, origin: originOf(ctx) }, facilityId, g);
      offered += made.length;
      open += v - made.length;
    }
    return { offered, open };
  });
}

/* ------------------------------------------------- refusals and expiry */

/**
 * After a refusal or an expiry: the place goes back to the facility and to
 * the next child; the refused registration is withdrawn (the same place is
 * not offered to the same child again); beyond the tenant's refusals, the
 * rule says whether the child's other registrations go too.
 */
async function placeGoesOn(trx: Trx, env: Envelope, who: Who, o: { id: string; child_id: string; application_id: string; facility_id: string; age_group: AgeGroup }, counts: boolean): Promise<{ withdrawn: string[]; beyond: boolean }> {
  const rules = who.ctx.tenant.rules.offers;
  const withdrawn = (await trx.updateTable('applications').set({ status: 'withdrawn', updated_at: who.ctx.now }).where('id', '=', o.application_id).where('status', '=', 'active').returning('id').execute()).map((r) => r.id);
  let beyond = false;
  if (counts && rules.refusalsAllowed !== null) {
    const statuses: OfferStatus[] = rules.expiryCountsAsRefusal ? ['refused', 'expired'] : ['refused'];
    const n = Number((await trx.selectFrom('offers').select(sql<string>`count(*)`.as('n')).where('child_id', '=', o.child_id).where('status', 'in', statuses).executeTakeFirst())?.n ?? 0);
    beyond = n > rules.refusalsAllowed;
    if (beyond && rules.beyondRefusals === 'withdrawApplications') {
      const more = await trx.updateTable('applications').set({ status: 'withdrawn', updated_at: who.ctx.now }).where('child_id', '=', o.child_id).where('status', '=', 'active').returning('id').execute();
      withdrawn.push(...more.map((r) => r.id));
    }
  }
  await trx
    .updateTable('facility_places')
    .set({ vacancies: sql`LEAST(vacancies + 1, places)`, updated_at: who.ctx.now })
    .where('facility_id', '=', o.facility_id)
    .where('age_group', '=', o.age_group)
    .execute();
  await fillVacancies(trx, env, who, o.facility_id, o.age_group);
  return { withdrawn, beyond };
}

export type CancelReason = 'application_withdrawn' | 'file_deleted' | 'deletion_request' | 'file_inactive';

/**
 * The child's pending offers (only the one on `applicationId` when given)
 * are cancelled, inside the caller's transaction: the registration or the
 * file they answered to is gone. Each place goes back to its facility and on
 * to the next child at once, as after a refusal, without counting as one.
 * Returns the offers cancelled.
 */
export async function cancelPendingOffers(trx: Trx, env: Envelope, ctx: Ctx, childId: string, opts: { applicationId?: string; reason: CancelReason; system?: AuditOrigin }): Promise<string[]> {
  // The callers hold the child's row; a referral of this child under way finishes first, and its offer is cancelled here.
  await lockChildOffers(trx, childId);
  let q = trx
    .selectFrom('offers as o')
    .innerJoin('children as c', 'c.id', 'o.child_id')
    .select(['o.id', 'o.child_id', 'o.application_id', 'o.facility_id', 'o.age_group', 'c.family_id'])
    .where('o.child_id', '=', childId)
    .where('o.status', '=', 'pending');
  if (opts.applicationId) q = q.where('o.application_id', '=', opts.applicationId);
  const offers = await q.forUpdate().execute();
  const who: Who = { ctx, origin: opts.system && !ctx.actor ? opts.system : originOf(ctx) };
  for (const o of offers) {
    await trx.updateTable('offers').set({ status: 'cancelled', answered_at: ctx.now }).where('id', '=', o.id).execute();
    await writeEvent(trx, who, {
      action: 'waitlist.offer.cancel',
      targetType: 'offer',
      targetIds: [o.id, o.child_id, o.application_id, o.facility_id],
      familyIds: [o.family_id],
      fields: ['status'],
      purpose: 'referral.cancel',
      details: withSession(ctx, { reason: opts.reason }),
    });
    await trx
      .updateTable('facility_places')
      .set({ vacancies: sql`LEAST(vacancies + 1, places)`, updated_at: ctx.now })
      .where('facility_id', '=', o.facility_id)
      .where('age_group', '=', o.age_group)
      .execute();
    await fillVacancies(trx, env, who, o.facility_id, o.age_group);
  }
  return offers.map((o) => o.id);
}

const SYSTEM_EXPIRY: AuditOrigin = { actorAccountId: null, actorRoles: ['system:offer-expiry'], ip: null, userAgent: null, requestId: null };

/**
 * Expires the offers past their deadline, one transaction each: the row is
 * taken FOR UPDATE SKIP LOCKED and must still be pending, so several
 * instances running this at once each expire different offers, and running
 * it again changes nothing. Returns how many expired.
 */
export async function expireDueOffers(deps: Deps, ctx: Ctx, limit = 1000): Promise<number> {
  let n = 0;
  // Offers whose child someone is changing right now (an answer at the deadline, a withdrawal): left to the next pass.
  const busy: string[] = [];
  while (n < limit) {
    const done = await run(deps, ctx, 'waitlist.offer.expire', async (trx, env) => {
      let q = trx
        .selectFrom('offers')
        .select(['id', 'child_id', 'application_id', 'facility_id', 'age_group', 'deadline'])
        .where('status', '=', 'pending')
        .where('deadline', '<=', ctx.now);
      if (busy.length) q = q.where('id', 'not in', busy);
      const o = await q.orderBy('deadline').limit(1).forUpdate().skipLocked().executeTakeFirst();
      if (!o) return 'none' as const;
      // The child's row and offers lock without waiting: whoever holds them may be waiting for this offer's row.
      const child = await trx.selectFrom('children').select('id').where('id', '=', o.child_id).forNoKeyUpdate().skipLocked().executeTakeFirst();
      if (!child || !(await tryLockChildOffers(trx, o.child_id))) {
        busy.push(o.id);
        return 'busy' as const;
      }
      await trx.updateTable('offers').set({ status: 'expired', answered_at: ctx.now }).where('id', '=', o.id).where('status', '=', 'pending').execute();
      const fam = await trx.selectFrom('children').select('family_id').where('id', '=', o.child_id).executeTakeFirstOrThrow();
      const who = { ctx, origin: SYSTEM_EXPIRY };
      const r = await placeGoesOn(trx, env, who, o, ctx.tenant.rules.offers.expiryCountsAsRefusal);
      await writeEvent(trx, who, {
        action: 'waitlist.offer.expire',
        targetType: 'offer',
        targetIds: [o.id, o.child_id, ...r.withdrawn],
        familyIds: [fam.family_id],
        fields: ['status'],
        purpose: 'referral.expiry',
        details: { deadline: o.deadline.toISOString(), withdrawn: r.withdrawn.length, beyondRefusals: r.beyond },
      });
      return 'expired' as const;
    });
    if (done === 'none' || busy.length > limit) break;
    if (done === 'expired') n++;
  }
  return n;
}

/* ------------------------------------------------------- the parent side */

export interface ParentOfferView {
  id: string;
  childId: string;
  reference: string;
  facilityId: string;
  facilityName: string;
  municipality: string;
  ageGroup: AgeGroup;
  status: OfferStatus;
  offeredAt: Date;
  deadline: Date;
  answeredAt: Date | null;
  startDate: string | null;
}

function parentOffers(trx: Trx) {
  return trx
    .selectFrom('offers as o')
    .innerJoin('children as c', 'c.id', 'o.child_id')
    .innerJoin('families as f', 'f.id', 'c.family_id')
    .innerJoin('facilities as fa', 'fa.id', 'o.facility_id')
    .select(['o.id', 'o.child_id', 'c.reference', 'c.family_id', 'f.account_id as owner', 'o.facility_id', 'fa.name', 'fa.municipality', 'o.age_group', 'o.status', 'o.offered_at', 'o.deadline', 'o.answered_at', 'o.start_date', 'o.application_id'])
    // A deleted file's offers leave the family's pages with it, as its other pages do (restored, they come back).
    .where('c.deleted_at', 'is', null)
    .where('c.purged_at', 'is', null);
}

type ParentOfferRow = Awaited<ReturnType<ReturnType<typeof parentOffers>['executeTakeFirstOrThrow']>>;

function toParentView(r: ParentOfferRow): ParentOfferView {
  return {
    id: r.id,
    childId: r.child_id,
    reference: r.reference,
    facilityId: r.facility_id,
    facilityName: r.name,
    municipality: r.municipality,
    ageGroup: r.age_group,
    status: r.status,
    offeredAt: r.offered_at,
    deadline: r.deadline,
    answeredAt: r.answered_at,
    startDate: r.start_date,
  };
}

/** The signed-in parent's offers (one child's, or all), newest first: references and facilities, no name. */
export async function listParentOffers(deps: Deps, ctx: Ctx, childId?: string): Promise<ParentOfferView[]> {
  return run(deps, ctx, 'waitlist.offer.read', (trx) => parentOffersIn(trx, ctx, childId));
}

/** listParentOffers's work inside a gateway transaction (child-page.ts composes it). */
export async function parentOffersIn(trx: Trx, ctx: Ctx, childId?: string): Promise<ParentOfferView[]> {
  const action = 'waitlist.offer.read';
  if (!ctx.actor) deny(ctx, action, 'offer', 'list', 'not_signed_in', decide(null, action, { type: 'tenant' }, ctx.now));
  if (childId !== undefined && !UUID.test(childId)) deny(ctx, action, 'child', childId, 'malformed_id');
  let q = parentOffers(trx).where('f.account_id', '=', ctx.actor.accountId);
  if (childId) q = q.where('o.child_id', '=', childId);
  const rows = (await q.orderBy('o.offered_at', 'desc').limit(100).execute()).filter((r) => decide(ctx.actor, action, { type: 'family', ownerAccountId: r.owner }, ctx.now).allowed);
  if (rows.length) {
    await audit(trx, ctx, { action, targetType: 'offer', targetIds: rows.map((r) => r.id), familyIds: [...new Set(rows.map((r) => r.family_id))], fields: fieldsFor('parent.offers'), purpose: 'parent.offers' });
  }
  return rows.map(toParentView);
}

/**
 * Loads an offer for its family; anyone else's attempt is recorded (denied) and answered "not found". For an
 * answer (`lock`), the child's row and offers lock are taken once the offer is known to be the family's, and the
 * offer is read again as it is now: an expiry or a withdrawal that came first has its say.
 */
async function ownOffer(trx: Trx, ctx: Ctx, offerId: string, action: AuditAction & ('waitlist.offer.read' | 'waitlist.offer.accept' | 'waitlist.offer.refuse'), lock: boolean): Promise<ParentOfferRow> {
  if (!UUID.test(offerId)) deny(ctx, action, 'offer', offerId, 'malformed_id');
  const r = await parentOffers(trx).where('o.id', '=', offerId).executeTakeFirst();
  const rule = action === 'waitlist.offer.read' ? 'waitlist.offer.read' : 'waitlist.offer.answer';
  const d = decide(ctx.actor, rule, { type: 'family', ownerAccountId: r?.owner ?? '' }, ctx.now);
  if (!r || !d.allowed) deny(ctx, action, 'offer', offerId, r ? (d.reason ?? 'denied') : 'not_found', d.reason === 'no_rule_matches' ? undefined : d);
  if (!lock) return r;
  await lockChild(trx, r.child_id);
  const now = await parentOffers(trx).where('o.id', '=', offerId).executeTakeFirst();
  if (!now) deny(ctx, action, 'offer', offerId, 'not_found');
  return now;
}

/** One offer, for its parent: the page where they answer. */
export async function readOffer(deps: Deps, ctx: Ctx, offerId: string): Promise<ParentOfferView & { childFirstName: string }> {
  const action = 'waitlist.offer.read';
  return run(deps, ctx, action, async (trx, env) => {
    const r = await ownOffer(trx, ctx, offerId, action, false);
    const c = await trx.selectFrom('children').select(['id', 'family_id', 'first_name_enc']).where('id', '=', r.child_id).executeTakeFirstOrThrow();
    await audit(trx, ctx, { action, targetType: 'offer', targetIds: [r.id, r.child_id], familyIds: [r.family_id], fields: fieldsFor('parent.offer'), purpose: 'parent.offer' });
    const name = required((await openChildren(env, ctx.tenant.id, [c], ['first_name'])).get(c.id)!.first_name, 'first name');
    return { ...toParentView(r), childFirstName: name };
  });
}

/**
 * The parent accepts or refuses. Only a pending offer before its deadline;
 * otherwise nothing changes and the refusal says why. Accepting records the
 * placement (the registration is "placed") and handles the child's other
 * registrations by the tenant's rule; refusing hands the place to the next
 * child at once.
 */
export async function answerOffer(deps: Deps, ctx: Ctx, offerId: string, answer: 'accept' | 'refuse'): Promise<{ childId: string }> {
  const action = answer === 'accept' ? 'waitlist.offer.accept' : 'waitlist.offer.refuse';
  return run(deps, ctx, action, async (trx, env) => {
    const o = await ownOffer(trx, ctx, offerId, action, true);
    if (o.status !== 'pending') deny(ctx, action, 'offer', offerId, 'already_answered', undefined, new OfferRefused('badRequest', 'already_answered'));
    if (o.deadline <= ctx.now) deny(ctx, action, 'offer', offerId, 'deadline_passed', undefined, new OfferRefused('badRequest', 'deadline_passed'));
    const who = { ctx, origin: originOf(ctx) };
    if (answer === 'accept') {
      await trx.updateTable('offers').set({ status: 'accepted', answered_at: ctx.now }).where('id', '=', o.id).execute();
      await trx.updateTable('applications').set({ status: 'placed', updated_at: ctx.now }).where('id', '=', o.application_id).execute();
      const fac = await trx.selectFrom('facilities').select(['kind', 'subsidised']).where('id', '=', o.facility_id).executeTakeFirstOrThrow();
      // A CPE or subsidised garderie place: the child is now in subsidised care, and its other registrations rank as such.
      const nowSubsidised = (fac.kind === 'cpe' || fac.subsidised) && (await markInSubsidisedCare(trx, ctx, env, o.child_id));
      const others =
        ctx.tenant.rules.offers.otherApplicationsOnAcceptance === 'withdraw'
          ? (await trx.updateTable('applications').set({ status: 'withdrawn', updated_at: ctx.now }).where('child_id', '=', o.child_id).where('status', '=', 'active').returning('id').execute()).map((r) => r.id)
          : [];
      await audit(trx, ctx, {
        action,
        targetType: 'offer',
        targetIds: [o.id, o.child_id, o.application_id, o.facility_id, ...others],
        familyIds: [o.family_id],
        fields: ['status', ...(others.length ? ['applications'] : []), ...(nowSubsidised ? ['in_subsidised_care'] : [])],
        purpose: 'parent.offer.answer',
        details: { otherApplications: ctx.tenant.rules.offers.otherApplicationsOnAcceptance, withdrawn: others.length, inSubsidisedCare: nowSubsidised },
      });
    } else {
      await trx.updateTable('offers').set({ status: 'refused', answered_at: ctx.now }).where('id', '=', o.id).execute();
      await audit(trx, ctx, { action, targetType: 'offer', targetIds: [o.id, o.child_id, o.application_id, o.facility_id], familyIds: [o.family_id], fields: ['status'], purpose: 'parent.offer.answer' });
      const r = await placeGoesOn(trx, env, who, o, true);
      if (r.withdrawn.length) {
        await audit(trx, ctx, { action: 'waitlist.application.withdraw', targetType: 'application', targetIds: r.withdrawn, familyIds: [o.family_id], fields: ['status'], purpose: 'referral.refusal', details: { beyondRefusals: r.beyond } });
      }
    }
    return { childId: o.child_id };
  });
}

/* -------------------------------------------------- the facility's side */

export interface ReferralView {
  id: string;
  reference: string;
  ageGroup: AgeGroup;
  status: OfferStatus;
  offeredAt: Date;
  deadline: Date;
  answeredAt: Date | null;
  startDate: string | null;
  /** An accepted offer of a protected file: its identity opens one at a time, with a reason (src/detection/protected.ts). */
  protected: boolean;
  /** The file was deleted (by its family, or the retention rules): a bare reference, nothing to act on. */
  deleted: boolean;
  /** Only once the parent accepted: who the child is and how to reach the family. */
  identity: {
    firstName: string;
    lastName: string;
    birthDate: string;
    parentFirstName: string | null;
    parentLastName: string | null;
    phone: string | null;
    email: string;
  } | null;
}

/**
 * A facility's referrals, newest first. Before acceptance a referral is a
 * reference, an age group and dates; the child's identity and the parent's
 * contact are opened only for accepted offers, and the audit event names
 * exactly those files and fields. A protected file stays a reference even
 * accepted: its identity is opened only when asked for by its offer with a
 * reason (`open`), which raises the protected-file alert as any opening.
 */
export async function listReferrals(deps: Deps, ctx: Ctx, facilityId: string, open?: { offerId: string; reason: string }): Promise<ReferralView[]> {
  const action = 'waitlist.referral.list';
  return run(deps, ctx, action, async (trx, env) => {
    checkFacility(ctx, action, action, facilityId);
    const rows = await trx
      .selectFrom('offers as o')
      .innerJoin('children as c', 'c.id', 'o.child_id')
      .innerJoin('families as f', 'f.id', 'c.family_id')
      .innerJoin('accounts as a', 'a.id', 'f.account_id')
      .select(['o.id', 'o.child_id', 'c.reference', 'c.family_id', 'o.age_group', 'o.status', 'o.offered_at', 'o.deadline', 'o.answered_at', 'o.start_date', 'c.first_name_enc', 'c.last_name_enc', 'c.birth_date_enc', 'c.deleted_at', 'c.purged_at', 'a.email'])
      .where('o.facility_id', '=', facilityId)
      .orderBy('o.offered_at', 'desc')
      .limit(200)
      .execute();
    // A file its family deleted leaves the facility's pages at once, like every other list: its referral stays a
    // reference, its identity no longer opened (restored, it shows again).
    const accepted = rows.filter((r) => (r.status === 'accepted' || r.status === 'started') && !r.deleted_at && !r.purged_at);
    const isProtected = new Set(await protectedAmong(trx, accepted.map((r) => r.child_id)));
    const asked = open ? accepted.find((r) => r.id === open.offerId && isProtected.has(r.child_id)) : undefined;
    if (open && !asked) deny(ctx, action, 'offer', open.offerId, 'not_found');
    // Refused (and recorded) without a reason, before anything is read.
    const prot = asked && open ? await protectedAccess(trx, ctx, action, [asked.child_id], { reason: open.reason }) : { ids: [] as string[], reason: '' };
    const revealed = accepted.filter((r) => !isProtected.has(r.child_id) || r === asked);
    if (rows.length) {
      const event = await audit(trx, ctx, {
        action,
        targetType: 'facility',
        targetIds: [facilityId, ...revealed.map((r) => r.child_id)],
        familyIds: [...new Set(revealed.map((r) => r.family_id))],
        fields: revealed.length ? fieldsFor('facility.referrals.accepted') : fieldsFor('facility.referrals'),
        purpose: revealed.length ? 'facility.referrals.accepted' : 'facility.referrals',
        details: { referrals: rows.length, identities: revealed.length, ...(prot.ids.length ? { protectedFiles: prot.ids.length } : {}) },
      });
      await recordProtectedOpenings(trx, readContext(ctx), action, prot.ids, prot.reason, event.id);
    }
    // Opened by the child's row (the ciphertexts are bound to it), never the offer's.
    const kids = await openChildren(env, ctx.tenant.id, revealed.map((r) => ({ id: r.child_id, family_id: r.family_id, first_name_enc: r.first_name_enc, last_name_enc: r.last_name_enc, birth_date_enc: r.birth_date_enc })), ['first_name', 'last_name', 'birth_date']);
    const famIds = [...new Set(revealed.map((r) => r.family_id))];
    const fams = famIds.length ? await trx.selectFrom('families').selectAll().where('id', 'in', famIds).execute() : [];
    const cells = fams.flatMap((f) => FAMILY_FIELDS.filter((k) => k !== 'postal_code').map((k) => ({ rowId: f.id, familyId: f.id, column: k, blob: f[`${k}_enc`]! })).filter((c) => c.blob));
    const famOpen = await openCells(env, ctx.tenant.id, 'families', cells);
    return rows.map((r) => {
      const v = revealed.includes(r) ? kids.get(r.child_id) : undefined;
      const shown = v;
      return {
        id: r.id,
        reference: r.reference,
        ageGroup: r.age_group,
        status: r.status,
        offeredAt: r.offered_at,
        deadline: r.deadline,
        answeredAt: r.answered_at,
        startDate: r.start_date,
        protected: isProtected.has(r.child_id),
        deleted: !!(r.deleted_at || r.purged_at),
        identity: shown
          ? {
              firstName: required(v.first_name, 'first name'),
              lastName: required(v.last_name, 'last name'),
              birthDate: required(v.birth_date, 'birth date'),
              parentFirstName: famOpen.get(`${r.family_id}/parent_first_name`) ?? null,
              parentLastName: famOpen.get(`${r.family_id}/parent_last_name`) ?? null,
              phone: famOpen.get(`${r.family_id}/phone`) ?? null,
              email: r.email,
            }
          : null,
      };
    });
  });
}

/** The director confirms that care started, on a date: only for an accepted offer of their facility. */
export async function confirmStart(deps: Deps, ctx: Ctx, facilityId: string, offerId: string, startDate: string): Promise<void> {
  const action = 'waitlist.offer.confirmStart';
  await run(deps, ctx, action, async (trx) => {
    checkFacility(ctx, action, action, facilityId);
    if (!UUID.test(offerId)) deny(ctx, action, 'offer', offerId, 'malformed_id');
    // A file its family deleted is no longer the facility's to act on (restored, it is again).
    const o = await trx
      .selectFrom('offers as o')
      .innerJoin('children as c', 'c.id', 'o.child_id')
      .select(['o.id', 'o.status', 'o.child_id', 'o.offered_at', 'c.family_id'])
      .where('o.id', '=', offerId)
      .where('o.facility_id', '=', facilityId)
      .where('c.deleted_at', 'is', null)
      .where('c.purged_at', 'is', null)
      .forUpdate('o')
      .executeTakeFirst();
    if (!o) deny(ctx, action, 'offer', offerId, 'not_found');
    if (o.status !== 'accepted') deny(ctx, action, 'offer', offerId, 'not_accepted', undefined, new OfferRefused('badRequest', 'not_accepted'));
    // Care starts once the place is offered, and within two years of today: a date outside says a typing mistake.
    if (startDate < today(o.offered_at) || startDate > addDays(today(ctx.now), 730)) throw new ValidationError({ startDate: 'startDateOutOfRange' });
    await trx.updateTable('offers').set({ status: 'started', start_date: startDate, start_confirmed_at: ctx.now, start_confirmed_by: ctx.actor!.accountId }).where('id', '=', o.id).execute();
    await audit(trx, ctx, { action, targetType: 'offer', targetIds: [o.id, o.child_id, facilityId], familyIds: [o.family_id], fields: ['status', 'start_date'], purpose: 'facility.placement.start', details: { startDate } });
  });
}
