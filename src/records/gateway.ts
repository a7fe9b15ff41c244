import { randomInt } from 'node:crypto';
import { sql } from 'kysely';
import type { Action } from '../access/actions.ts';
import { decide, sqlFilter, type Decision } from '../access/decide.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import type { AuditAction, AuditEventInput } from '../audit/events.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError, ValidationError } from '../errors.ts';
import { originFields } from '../tenants/service.ts';
import { maskNirec, type ChildInput } from '../waitlist/child-file.ts';
import { ageGroup, categorySql, rankOrderSql, type AgeGroup, type Category } from '../waitlist/ranking.ts';
import { fieldsFor, type Purpose } from './views.ts';

/**
 * The records gateway: the one path by which personal data (families,
 * children, applications) is read or written. Each call
 *   1. decides the action with access.decide, from the row's owner;
 *   2. writes the audit event in the same transaction, before the data leaves;
 *   3. returns only the fields the declared purpose allows (views.ts).
 * A refused or impossible request is recorded too, in a transaction of its
 * own (the work's transaction is rolled back), and answered as "not found"
 * so that it does not reveal whether the record exists.
 */

export interface ApplicationView {
  id: string;
  facilityId: string;
  facilityName: string;
  municipality: string;
  status: 'active' | 'withdrawn' | 'placed';
  appliedAt: Date;
}

export interface ChildSummary {
  id: string;
  reference: string;
  firstName: string;
  lastName: string;
  birthDate: string;
  desiredEntryDate: string;
  applicationsCount: number;
}

export interface ChildFileView {
  id: string;
  reference: string;
  firstName: string;
  lastName: string;
  birthDate: string;
  nirecMasked: string | null;
  desiredEntryDate: string;
  daysOfCare: number;
  inSubsidisedCare: boolean;
  applications: ApplicationView[];
}

export interface CandidateView {
  rank: number;
  reference: string;
  ageGroup: AgeGroup;
  desiredEntryDate: string;
  category: Category;
  appliedAt: Date;
}

class Denied extends Error {
  constructor(
    readonly event: AuditEventInput,
    readonly error: AppError,
  ) {
    super('denied');
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function deny(ctx: Ctx, action: AuditAction, targetType: string, targetId: string, reason: string, decision?: Decision): never {
  const error =
    decision?.reason === 'not_signed_in'
      ? new AppError('signInRequired')
      : decision?.reason === 'email_not_verified'
        ? new AppError('emailNotVerified')
        : new AppError('notFound');
  throw new Denied(
    {
      action,
      outcome: 'denied',
      ...originFields(originOf(ctx)),
      targetType,
      // an id from the request is untrusted: keep it bounded, and printable (PostgreSQL refuses NUL in text)
      targetIds: [targetId.slice(0, 64).replace(/[\u0000-\u001f\u007f-\u009f]/g, '\ufffd')],
      details: { reason },
    },
    error,
  );
}

async function run<T>(deps: Deps, ctx: Ctx, fn: (trx: Trx) => Promise<T>): Promise<T> {
  try {
    return await inTenant(deps.db.db, ctx.tenant.id, fn, ctx.actor?.accountId);
  } catch (err) {
    if (err instanceof Denied) {
      await appendAuditAlone(deps.db.db, ctx.tenant.id, err.event, ctx.now);
      throw err.error;
    }
    throw err;
  }
}

function audit(trx: Trx, ctx: Ctx, e: Omit<AuditEventInput, 'outcome'> & { outcome?: AuditEventInput['outcome'] }) {
  return appendAudit(trx, ctx.tenant.id, { outcome: 'success', ...originFields(originOf(ctx)), ...e }, ctx.now);
}

function check(ctx: Ctx, action: Action & AuditAction, ownerAccountId: string, targetType: string, targetId: string): void {
  const d = decide(ctx.actor, action, { type: 'family', ownerAccountId }, ctx.now);
  if (!d.allowed) deny(ctx, action, targetType, targetId, d.reason ?? 'denied', d);
}

/** Loads a child with its owner, or records the attempt and answers "not found". */
async function childWithOwner(trx: Trx, ctx: Ctx, childId: string, action: Action & AuditAction) {
  if (!UUID.test(childId)) deny(ctx, action, 'child', childId, 'malformed_id');
  const row = await trx
    .selectFrom('children as c')
    .innerJoin('families as f', 'f.id', 'c.family_id')
    .selectAll('c')
    .select(['f.account_id as owner_account_id'])
    .where('c.id', '=', childId)
    .where('c.deleted_at', 'is', null)
    .executeTakeFirst();
  if (!row) {
    const d = decide(ctx.actor, action, { type: 'family', ownerAccountId: '' }, ctx.now);
    deny(ctx, action, 'child', childId, 'not_found', d.reason === 'no_rule_matches' ? undefined : d);
  }
  check(ctx, action, row.owner_account_id, 'child', childId);
  return row;
}

async function applicationsOf(trx: Trx, childId: string): Promise<ApplicationView[]> {
  const rows = await trx
    .selectFrom('applications as a')
    .innerJoin('facilities as f', 'f.id', 'a.facility_id')
    .select(['a.id', 'a.facility_id', 'a.status', 'a.created_at', 'f.name', 'f.municipality'])
    .where('a.child_id', '=', childId)
    .orderBy('a.created_at')
    .execute();
  return rows.map((r) => ({ id: r.id, facilityId: r.facility_id, facilityName: r.name, municipality: r.municipality, status: r.status, appliedAt: r.created_at }));
}

const REF_ALPHABET = '23456789ABCDEFGHJKMNPQRSTVWXYZ';

export function newReference(): string {
  let s = 'E-';
  for (let i = 0; i < 8; i++) s += REF_ALPHABET[randomInt(REF_ALPHABET.length)];
  return s;
}

async function ensureFamily(trx: Trx, ctx: Ctx, accountId: string): Promise<string> {
  const found = await trx.selectFrom('families').select('id').where('account_id', '=', accountId).executeTakeFirst();
  if (found) return found.id;
  const r = await trx
    .insertInto('families')
    .values({ tenant_id: ctx.tenant.id, account_id: accountId, created_at: ctx.now, updated_at: ctx.now })
    .returning('id')
    .executeTakeFirstOrThrow();
  return r.id;
}

async function assertNoDuplicateNirec(trx: Trx, nirec: string | null, exceptChildId?: string) {
  if (!nirec) return;
  let q = trx.selectFrom('children').select('id').where('nirec', '=', nirec).where('deleted_at', 'is', null);
  if (exceptChildId) q = q.where('id', '<>', exceptChildId);
  if (await q.executeTakeFirst()) throw new ValidationError({ nirec: 'nirecDuplicate' });
}

const CHILD_INPUT_FIELDS = ['first_name', 'last_name', 'birth_date', 'nirec', 'desired_entry_date', 'days_of_care', 'in_subsidised_care'];

export async function createChildFile(deps: Deps, ctx: Ctx, input: ChildInput): Promise<{ id: string }> {
  return run(deps, ctx, async (trx) => {
    const d = decide(ctx.actor, 'waitlist.childFile.create', { type: 'tenant' }, ctx.now);
    if (!d.allowed || !ctx.actor) deny(ctx, 'waitlist.childFile.create', 'child', 'new', d.reason ?? 'denied', d);
    const familyId = await ensureFamily(trx, ctx, ctx.actor.accountId);
    await assertNoDuplicateNirec(trx, input.nirec);
    // The reference is random; on the rare collision, draw again.
    for (let attempt = 0; ; attempt++) {
      const reference = newReference();
      const clash = await trx.selectFrom('children').select('id').where('reference', '=', reference).executeTakeFirst();
      if (clash && attempt < 5) continue;
      const row = await trx
        .insertInto('children')
        .values({
          tenant_id: ctx.tenant.id,
          family_id: familyId,
          reference,
          first_name: input.firstName,
          last_name: input.lastName,
          birth_date: input.birthDate,
          nirec: input.nirec,
          desired_entry_date: input.desiredEntryDate,
          days_of_care: input.daysOfCare,
          in_subsidised_care: input.inSubsidisedCare,
          created_at: ctx.now,
          updated_at: ctx.now,
        })
        .returning('id')
        .executeTakeFirstOrThrow();
      await audit(trx, ctx, { action: 'waitlist.childFile.create', targetType: 'child', targetIds: [row.id], familyIds: [familyId], fields: CHILD_INPUT_FIELDS, purpose: 'parent.childFile.create' });
      return { id: row.id };
    }
  });
}

/** What a parent sees to choose which child to register: the reference and the first name (views.ts). */
export interface ChildChoice {
  id: string;
  reference: string;
  firstName: string;
}

export async function listChildren(deps: Deps, ctx: Ctx, purpose: 'parent.children.list'): Promise<ChildSummary[]>;
export async function listChildren(deps: Deps, ctx: Ctx, purpose: 'parent.children.choose'): Promise<ChildChoice[]>;
export async function listChildren(deps: Deps, ctx: Ctx, purpose: 'parent.children.list' | 'parent.children.choose'): Promise<ChildSummary[] | ChildChoice[]> {
  return run(deps, ctx, async (trx) => {
    if (!ctx.actor) deny(ctx, 'waitlist.childFile.list', 'family', 'self', 'not_signed_in', decide(null, 'waitlist.childFile.list', { type: 'tenant' }, ctx.now));
    const rows = await trx
      .selectFrom('children as c')
      .innerJoin('families as f', 'f.id', 'c.family_id')
      .select((eb) => [
        'c.id',
        'c.reference',
        'c.first_name',
        'c.last_name',
        'c.birth_date',
        'c.desired_entry_date',
        'c.family_id',
        eb
          .selectFrom('applications as a')
          .select(sql<string>`count(*)`.as('n'))
          .whereRef('a.child_id', '=', 'c.id')
          .where('a.status', '=', 'active')
          .as('applications_count'),
      ])
      .where(sqlFilter(ctx.actor, 'waitlist.childFile.list', { familyOwner: sql.ref('f.account_id') }, ctx.now))
      .where('c.deleted_at', 'is', null)
      .orderBy('c.created_at')
      .execute();
    if (rows.length) {
      await audit(trx, ctx, {
        action: 'waitlist.childFile.list',
        targetType: 'child',
        targetIds: rows.map((r) => r.id),
        familyIds: [...new Set(rows.map((r) => r.family_id))],
        fields: fieldsFor(purpose),
        purpose,
      });
    }
    // Only the purpose's fields leave (the audit event lists exactly these).
    if (purpose === 'parent.children.choose') return rows.map((r) => ({ id: r.id, reference: r.reference, firstName: r.first_name }));
    return rows.map((r) => ({
      id: r.id,
      reference: r.reference,
      firstName: r.first_name,
      lastName: r.last_name,
      birthDate: r.birth_date,
      desiredEntryDate: r.desired_entry_date,
      applicationsCount: Number(r.applications_count ?? 0),
    }));
  });
}

export async function readChildFile(deps: Deps, ctx: Ctx, childId: string, purpose: 'parent.childFile.view' | 'parent.childFile.edit'): Promise<ChildFileView> {
  return run(deps, ctx, async (trx) => {
    const c = await childWithOwner(trx, ctx, childId, 'waitlist.childFile.read');
    const applications = purpose === 'parent.childFile.view' ? await applicationsOf(trx, c.id) : [];
    await audit(trx, ctx, { action: 'waitlist.childFile.read', targetType: 'child', targetIds: [c.id], familyIds: [c.family_id], fields: fieldsFor(purpose), purpose });
    return {
      id: c.id,
      reference: c.reference,
      firstName: c.first_name,
      lastName: c.last_name,
      birthDate: c.birth_date,
      nirecMasked: maskNirec(c.nirec),
      desiredEntryDate: c.desired_entry_date,
      daysOfCare: c.days_of_care,
      inSubsidisedCare: c.in_subsidised_care,
      applications,
    };
  });
}

export async function updateChildFile(deps: Deps, ctx: Ctx, childId: string, input: ChildInput): Promise<void> {
  await run(deps, ctx, async (trx) => {
    const c = await childWithOwner(trx, ctx, childId, 'waitlist.childFile.update');
    await assertNoDuplicateNirec(trx, input.nirec, c.id);
    const next = {
      first_name: input.firstName,
      last_name: input.lastName,
      birth_date: input.birthDate,
      nirec: input.nirec ?? c.nirec,
      desired_entry_date: input.desiredEntryDate,
      days_of_care: input.daysOfCare,
      in_subsidised_care: input.inSubsidisedCare,
    };
    const changed = (Object.keys(next) as (keyof typeof next)[]).filter((k) => next[k] !== c[k]);
    if (!changed.length) return;
    await trx
      .updateTable('children')
      .set({ ...next, updated_at: ctx.now })
      .where('id', '=', c.id)
      .execute();
    await audit(trx, ctx, { action: 'waitlist.childFile.update', targetType: 'child', targetIds: [c.id], familyIds: [c.family_id], fields: changed, purpose: 'parent.childFile.edit' });
  });
}

export interface ApplicationInput {
  facilityId: string;
  siblingAttending: boolean;
  parentIsStaff: boolean;
}

export async function addApplication(deps: Deps, ctx: Ctx, childId: string, input: ApplicationInput): Promise<void> {
  await run(deps, ctx, async (trx) => {
    const c = await childWithOwner(trx, ctx, childId, 'waitlist.application.create');
    const facility = UUID.test(input.facilityId)
      ? await trx.selectFrom('facilities').select('id').where('id', '=', input.facilityId).executeTakeFirst()
      : undefined;
    if (!facility) throw new ValidationError({ facilityId: 'facilityUnknown' });
    const existing = await trx.selectFrom('applications').select(['id', 'status']).where('child_id', '=', c.id).where('facility_id', '=', facility.id).executeTakeFirst();
    if (existing && existing.status !== 'withdrawn') throw new ValidationError({ facilityId: 'alreadyApplied' });
    let id: string;
    if (existing) {
      await trx
        .updateTable('applications')
        .set({ status: 'active', sibling_attending: input.siblingAttending, parent_is_staff: input.parentIsStaff, created_at: ctx.now, updated_at: ctx.now })
        .where('id', '=', existing.id)
        .execute();
      id = existing.id;
    } else {
      id = (
        await trx
          .insertInto('applications')
          .values({ tenant_id: ctx.tenant.id, child_id: c.id, facility_id: facility.id, sibling_attending: input.siblingAttending, parent_is_staff: input.parentIsStaff, status: 'active', created_at: ctx.now, updated_at: ctx.now })
          .returning('id')
          .executeTakeFirstOrThrow()
      ).id;
    }
    await audit(trx, ctx, { action: 'waitlist.application.create', targetType: 'application', targetIds: [id, c.id, facility.id], familyIds: [c.family_id], fields: ['facility_id', 'sibling_attending', 'parent_is_staff'], purpose: 'parent.application.create' });
  });
}

export async function withdrawApplication(deps: Deps, ctx: Ctx, childId: string, applicationId: string): Promise<void> {
  await run(deps, ctx, async (trx) => {
    const c = await childWithOwner(trx, ctx, childId, 'waitlist.application.withdraw');
    const app = UUID.test(applicationId)
      ? await trx.selectFrom('applications').select(['id', 'status']).where('id', '=', applicationId).where('child_id', '=', c.id).executeTakeFirst()
      : undefined;
    if (!app) deny(ctx, 'waitlist.application.withdraw', 'application', applicationId, 'not_found');
    if (app.status !== 'active') return;
    await trx.updateTable('applications').set({ status: 'withdrawn', updated_at: ctx.now }).where('id', '=', app.id).execute();
    await audit(trx, ctx, { action: 'waitlist.application.withdraw', targetType: 'application', targetIds: [app.id, c.id], familyIds: [c.family_id], fields: ['status'], purpose: 'parent.application.withdraw' });
  });
}

export interface CandidatePage {
  total: number;
  rows: CandidateView[];
}

/**
 * A facility's candidates in admission order, without identities: no name,
 * no birth date, no NIREC leaves this function for this purpose.
 */
export async function listCandidates(deps: Deps, ctx: Ctx, facilityId: string, page: number, pageSize = 50): Promise<CandidatePage> {
  const purpose: Purpose = 'facility.candidates';
  return run(deps, ctx, async (trx) => {
    if (!UUID.test(facilityId)) deny(ctx, 'waitlist.candidates.list', 'facility', facilityId, 'malformed_id');
    const d = decide(ctx.actor, 'waitlist.candidates.list', { type: 'facility', facilityId }, ctx.now);
    if (!d.allowed) deny(ctx, 'waitlist.candidates.list', 'facility', facilityId, d.reason ?? 'denied', d);
    const base = trx
      .selectFrom('applications as a')
      .innerJoin('children as c', 'c.id', 'a.child_id')
      .where('a.facility_id', '=', facilityId)
      .where('a.status', '=', 'active')
      .where('c.deleted_at', 'is', null)
      .where(sqlFilter(ctx.actor, 'waitlist.candidates.list', { facilityId: sql.ref('a.facility_id') }, ctx.now));
    const totalRow = await base.select(sql<string>`count(*)`.as('n')).executeTakeFirst();
    const total = Number(totalRow?.n ?? 0);
    const rows = await base
      .select([
        'c.id as child_id',
        'c.family_id',
        'c.reference',
        'c.birth_date',
        'c.desired_entry_date',
        'a.created_at',
        categorySql('a', 'c').as('category'),
        sql<string>`row_number() OVER (ORDER BY ${rankOrderSql('a', 'c')})`.as('rank'),
      ])
      .orderBy(rankOrderSql('a', 'c'))
      .limit(pageSize)
      .offset((page - 1) * pageSize)
      .execute();
    if (rows.length) {
      await audit(trx, ctx, {
        action: 'waitlist.candidates.list',
        targetType: 'facility',
        targetIds: [facilityId, ...rows.map((r) => r.child_id)],
        familyIds: [...new Set(rows.map((r) => r.family_id))],
        fields: fieldsFor(purpose),
        purpose,
        details: { page, count: rows.length },
      });
    }
    return {
      total,
      rows: rows.map((r) => ({
        rank: Number(r.rank),
        reference: r.reference,
        ageGroup: ageGroup(r.birth_date, r.desired_entry_date, ctx.now, ctx.tenant.rules.infantMaxMonths),
        desiredEntryDate: r.desired_entry_date,
        category: Number(r.category) as Category,
        appliedAt: r.created_at,
      })),
    };
  });
}
