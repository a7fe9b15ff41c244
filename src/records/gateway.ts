import { randomInt, randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { Action } from '../access/actions.ts';
import { decide, familyAccountOf, sqlFilter, type Decision } from '../access/decide.ts';
import { appendAudit, appendAuditAlone, appendAuditHeld } from '../audit/log.ts';
import type { AuditAction, AuditEventInput, AuditOrigin } from '../audit/events.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import { envelopeFor, type Envelope, type FamilyKey } from '../crypto/envelope.ts';
import { CiphertextError, DataKeyDestroyedError, DataKeyMissingError, KeyError, KeyringError, MasterKeyMismatchError } from '../crypto/errors.ts';
import type { Trx } from '../db/connection.ts';
import type { ChildrenTable } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import { guardRecords, refusalOf } from '../detection/lockdown.ts';
import { accessReason, protectedAmong, recordProtectedOpenings } from '../detection/protected.ts';
import { Contained, contain, onRecordEvent, type ReadContext } from '../detection/response.ts';
import { AppError, ValidationError, type ErrorKind } from '../errors.ts';
import { requireRecentAuth } from '../identity/stepup.ts';
import { originFields } from '../tenants/service.ts';
import { maskNirec, normaliseNirec, type ChildInput } from '../waitlist/child-file.ts';
import { ageGroup, ageGroupOfMonth, categorySql, rankOrderSql, type AgeGroup, type Category } from '../waitlist/ranking.ts';
import { addMonths, today } from '../waitlist/dates.ts';
import { birthMonth, FAMILY_FIELDS, openCells, openChild, openChildren, openSnapshots, required, sealChild, sealFamily, sealSnapshot, type ChildSnapshot, type ChildValues } from './fields.ts';
import { isRecentAuth } from '../identity/stepup.ts';
import { ensureTenantEncrypted } from './legacy.ts';
import { declaredPriorities, eligibleRankTermsSql, facilityOrdering } from './ordering.ts';
import { fieldsFor, type Purpose } from './views.ts';
import { cancelPendingOffers, lockChildOffers } from './offers.ts';

/**
 * The records gateway: the one path by which personal data (families,
 * children, applications, their history) is read or written. Each call
 *   1. decides the action with access.decide, from the row's owner;
 *   2. writes the audit event in the same transaction, before the data leaves;
 *   3. decrypts only the fields the declared purpose allows (views.ts), with
 *      the family's data key, and returns only those.
 * A refused or impossible request is recorded too, in a transaction of its
 * own (the work's transaction is rolled back), and answered as "not found"
 * so that it does not reveal whether the record exists. A read that meets a
 * destroyed key (a purged family, in a database restored from a backup) is
 * recorded as a failure and answered "not found"; any other key or
 * ciphertext problem is recorded and raised with a message naming the row,
 * the column and what is wrong.
 *
 * Detection (src/detection) sits on both ends of each call: before any data
 * is touched, the tenant's lockdown level and the actor's standing are read
 * in the same transaction (a level raised on another instance applies here at
 * once); and every event written is evaluated as it is written, so a read
 * that crosses a refusing rule is rolled back, not served, and its refusal,
 * the alert and the containment are committed on their own (contain()).
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

/** What the deletion confirmation page names: whose file, and how many registrations go with it. */
export interface ChildFileDeletionView {
  id: string;
  reference: string;
  firstName: string;
  lastName: string;
  applicationsCount: number;
}

export interface CandidateView {
  rank: number;
  reference: string;
  ageGroup: AgeGroup;
  desiredEntryDate: string;
  category: Category;
  appliedAt: Date;
}

/** A file found by its NIREC, for an authorised agent. */
export interface NirecMatch {
  id: string;
  reference: string;
  firstName: string;
  lastName: string;
  birthDate: string;
  nirecMasked: string | null;
  desiredEntryDate: string;
  status: 'active' | 'deleted';
  deletedAt: Date | null;
}

export interface ChildFileVersionView {
  version: number;
  change: 'create' | 'update' | 'delete' | 'restore' | 'legacy';
  changedFields: string[];
  changedAt: Date;
  changedBy: string | null;
  reference: string;
  /** Who, as an agent reads it: the family itself, a member of staff by e-mail, or the system (no account). */
  changedByWho: Who;
  firstName: string;
  lastName: string;
  birthDate: string;
  nirecMasked: string | null;
  desiredEntryDate: string;
  daysOfCare: number;
  inSubsidisedCare: boolean;
}

/** Who acted, without naming a parent: the family, a member of staff (their work address), or nobody (the system). */
export type Who = { kind: 'family' } | { kind: 'agent'; email: string } | { kind: 'system' };

/** A deleted file as its family sees it: until when it can come back, and whether they asked. */
export interface DeletedChildView {
  id: string;
  reference: string;
  firstName: string;
  lastName: string;
  deletedAt: Date;
  restoreUntil: Date;
  restoreRequested: boolean;
}

/** An open restore request, for the administrators who decide it: the reference, no identity. */
export interface RestoreRequestView {
  id: string;
  childId: string;
  reference: string;
  requestedBy: string;
  requestedByWho: Who;
  requestedAt: Date;
  deletedAt: Date;
  restoreUntil: Date;
}

/**
 * Why a restore was refused, for a message that names it; the kind keeps the
 * answer's status (the caller who may not know more still reads "not found").
 */
export type RestoreRefusalReason = 'malformed_id' | 'same_person' | 'already_decided' | 'retention_expired';

export class RestoreRefused extends AppError {
  constructor(
    kind: ErrorKind,
    readonly reason: RestoreRefusalReason,
  ) {
    super(kind);
  }
}

class Denied extends Error {
  constructor(
    readonly event: AuditEventInput,
    readonly error: AppError,
  ) {
    super('denied');
  }
}

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function boundedId(id: string): string {
  // an id from the request is untrusted: keep it bounded, and printable (PostgreSQL refuses NUL in text)
  return id.slice(0, 64).replace(/[\u0000-\u001f\u007f-\u009f]/g, '\ufffd');
}

export function deny(ctx: Ctx, action: AuditAction, targetType: string, targetId: string, reason: string, decision?: Decision, error?: AppError): never {
  const e =
    error ??
    (decision?.reason === 'not_signed_in'
      ? new AppError('signInRequired')
      : decision?.reason === 'email_not_verified'
        ? new AppError('emailNotVerified')
        : decision?.reason === 'cooling_off'
          ? new AppError('coolingOff')
          : new AppError('notFound'));
  throw new Denied(
    {
      action,
      outcome: 'denied',
      ...originFields(originOf(ctx)),
      targetType,
      targetIds: [boundedId(targetId)],
      details: withSession(ctx, { reason }),
    },
    e,
  );
}

/** Which crypto failure it was, for the audit event; null for any other error. */
function cryptoFailure(err: unknown): string | null {
  if (err instanceof DataKeyDestroyedError) return err.code;
  if (err instanceof DataKeyMissingError) return err.code;
  if (err instanceof CiphertextError) return err.code;
  if (err instanceof KeyringError) return 'keyring_unavailable';
  if (err instanceof MasterKeyMismatchError) return 'master_key_mismatch';
  if (err instanceof KeyError) return 'key_error';
  return null;
}

/**
 * The work of one call, in one tenant transaction. `action` names it in the
 * audit trail if decryption fails.
 */
export async function run<T>(deps: Deps, ctx: Ctx, action: AuditAction, fn: (trx: Trx, env: Envelope) => Promise<T>): Promise<T> {
  const env = envelopeFor(deps.keys);
  await ensureTenantEncrypted(deps.db.db, deps.keys, ctx.tenant.id, ctx.now);
  for (let attempt = 0; ; attempt++) {
    try {
      return await inTenant(
        deps.db.db,
        ctx.tenant.id,
        async (trx) => {
          // Held back: it goes to the database with fn's first statement and refuses by raising before that runs.
          await guardRecords(trx, ctx, action);
          return fn(trx, env);
        },
        ctx.actor?.accountId,
      );
    } catch (caught) {
      let err = caught;
      // The guard's refusal, raised by fn's first statement (or by COMMIT, carrying the held guard and audit event).
      const refusal = refusalOf(err);
      if (refusal) {
        try {
          deny(ctx, action, 'tenant', ctx.tenant.id, refusal.reason, undefined, refusal.error);
        } catch (denied) {
          err = denied;
        }
      }
      if (err instanceof Contained) throw await contain(deps, readContext(ctx), err);
      if (err instanceof Denied) {
        await appendAuditAlone(deps.db.db, ctx.tenant.id, err.event, ctx.now);
        throw err.error;
      }
      // A family re-keyed by a purge between our read and our key look-up: read it again, once.
      if (err instanceof DataKeyDestroyedError && attempt === 0) continue;
      const reason = cryptoFailure(err);
      if (reason) {
        await appendAuditAlone(
          deps.db.db,
          ctx.tenant.id,
          { action, outcome: 'failure', ...originFields(originOf(ctx)), targetType: 'family', ...(err instanceof DataKeyDestroyedError ? { familyIds: [err.familyId] } : {}), details: { reason } },
          ctx.now,
        );
        deps.log.error({ err: { name: (err as Error).name, message: (err as Error).message }, action }, 'records: personal data could not be decrypted');
        if (err instanceof DataKeyDestroyedError) throw new AppError('notFound');
      }
      throw err;
    }
  }
}

/**
 * The session an event came from, in its details: a breach report can then
 * select exactly what one stolen session did (src/privacy/breach.ts). The
 * session id is the row's id, not its token.
 */
export function withSession(ctx: Ctx, details: AuditEventInput['details']): AuditEventInput['details'] {
  const session = ctx.actor?.sessionId;
  return session ? { ...(details ?? {}), session } : details;
}

export function readContext(ctx: Ctx): ReadContext {
  return { tenantId: ctx.tenant.id, actor: ctx.actor, origin: originOf(ctx), now: ctx.now, baseUrl: ctx.baseUrl };
}

/** Writes the event, then lets detection weigh it before the data leaves (it may throw Contained). */
export async function audit(trx: Trx, ctx: Ctx, e: Omit<AuditEventInput, 'outcome'> & { outcome?: AuditEventInput['outcome'] }) {
  const input: AuditEventInput = { outcome: 'success', ...originFields(originOf(ctx)), ...e, details: withSession(ctx, e.details) };
  const written = await appendAuditHeld(trx, ctx.tenant.id, input, ctx.now);
  await onRecordEvent(trx, readContext(ctx), input, written.id);
  return written;
}

export function check(ctx: Ctx, action: Action & AuditAction, ownerAccountId: string, targetType: string, targetId: string): void {
  const d = decide(ctx.actor, action, { type: 'family', ownerAccountId }, ctx.now);
  if (!d.allowed) deny(ctx, action, targetType, targetId, d.reason ?? 'denied', d);
}

/**
 * Every column of a child's row, named: a `c.*` would keep the statement from
 * being prepared (src/db/held-begin.ts). The type check below fails when a
 * column is added to the table and not here.
 */
const CHILD_COLUMNS = (
  [
    'id', 'tenant_id', 'family_id', 'reference', 'first_name_enc', 'last_name_enc', 'birth_date_enc', 'nirec_enc', 'nirec_index',
    'desired_entry_date', 'days_of_care', 'in_subsidised_care', 'created_at', 'updated_at', 'deleted_at', 'deleted_by', 'purged_at',
    'legacy_first_name', 'legacy_last_name', 'legacy_birth_date', 'legacy_nirec', 'birth_month', 'confirmed_at', 'reminded_at',
    'inactive_since', 'seniority_from',
  ] as const satisfies readonly (keyof ChildrenTable)[]
).map((c) => `c.${c}` as const);
type MissingChildColumn = Exclude<keyof ChildrenTable, (typeof CHILD_COLUMNS)[number] extends `c.${infer K}` ? K : never>;
const everyChildColumn: [MissingChildColumn] extends [never] ? true : MissingChildColumn = true;
void everyChildColumn;

/**
 * Loads a live child with its owner, or records the attempt and answers "not
 * found". Writes lock the child and its family (a purge re-keying the family
 * waits for them, and they for it).
 */
export async function childWithOwner(trx: Trx, ctx: Ctx, childId: string, action: Action & AuditAction, opts: { lock?: boolean; deleted?: boolean } = {}) {
  if (!UUID.test(childId)) deny(ctx, action, 'child', childId, 'malformed_id');
  let q = trx
    .selectFrom('children as c')
    .innerJoin('families as f', 'f.id', 'c.family_id')
    .select(CHILD_COLUMNS)
    .select(['f.account_id as owner_account_id', 'f.key_version'])
    .where('c.id', '=', childId)
    .where('c.purged_at', 'is', null)
    .where('c.deleted_at', opts.deleted ? 'is not' : 'is', null);
  // NO KEY UPDATE: a referral's new offer checks its foreign key to the child without waiting (see offers.ts, Concurrency).
  if (opts.lock) q = q.forNoKeyUpdate('c');
  const row = await q.executeTakeFirst();
  if (!row) {
    const d = decide(ctx.actor, action, { type: 'family', ownerAccountId: '' }, ctx.now);
    deny(ctx, action, 'child', childId, 'not_found', d.reason === 'no_rule_matches' ? undefined : d);
  }
  check(ctx, action, row.owner_account_id, 'child', childId);
  return row;
}

export type ChildRow = Awaited<ReturnType<typeof childWithOwner>>;

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

/** The family of an account, with its data key; created (key first, then row) on the first child file. */
async function ensureFamily(trx: Trx, ctx: Ctx, env: Envelope, accountId: string): Promise<{ id: string; key: FamilyKey }> {
  const found = await trx.selectFrom('families').select(['id', 'key_version']).where('account_id', '=', accountId).where('purged_at', 'is', null).forUpdate().executeTakeFirst();
  if (found) return { id: found.id, key: await env.familyKey(ctx.tenant.id, found.id, found.key_version) };
  const id = randomUUID();
  // The key goes into the keyring before any data is encrypted with it; if this transaction rolls back, it is an orphan that opens nothing.
  const key = (await env.createFamilyKeys(ctx.tenant.id, [{ familyId: id, version: 1 }])).get(`${id}/1`)!;
  await trx
    .insertInto('families')
    .values({
      id,
      tenant_id: ctx.tenant.id,
      account_id: accountId,
      ...sealFamily(env, key, id, { parent_first_name: null, parent_last_name: null, phone: null, postal_code: null }),
      key_version: 1,
      created_at: ctx.now,
      updated_at: ctx.now,
    })
    .execute();
  return { id, key };
}

/** The NIREC's blind index in this tenant, or null. */
async function nirecIndex(env: Envelope, tenantId: string, nirec: string | null): Promise<Buffer | null> {
  return nirec ? env.blindIndex(tenantId, 'nirec', nirec) : null;
}

async function assertNoDuplicateNirec(trx: Trx, index: Buffer | null, exceptChildId?: string) {
  if (!index) return;
  let q = trx.selectFrom('children').select('id').where('nirec_index', '=', index).where('deleted_at', 'is', null);
  if (exceptChildId) q = q.where('id', '<>', exceptChildId);
  if (await q.executeTakeFirst()) throw new ValidationError({ nirec: 'nirecDuplicate' });
}

/** The unique index catches what the check above cannot: two registrations of one child at the same moment. */
function duplicateNirec(err: unknown): boolean {
  return (err as { code?: string }).code === '23505' && (err as { constraint?: string }).constraint === 'children_nirec_live';
}

async function nextVersion(trx: Trx, childId: string): Promise<number> {
  const r = await trx.selectFrom('child_file_versions').select(sql<number>`coalesce(max(version), 0) + 1`.as('n')).where('child_id', '=', childId).executeTakeFirst();
  return Number(r?.n ?? 1);
}

/** Appends a version of the file to its history, encrypted like the file. */
async function recordVersion(trx: Trx, ctx: Ctx, env: Envelope, key: FamilyKey, childId: string, change: ChildFileVersionView['change'], changedFields: readonly string[], snapshot: ChildSnapshot): Promise<void> {
  const id = randomUUID();
  await trx
    .insertInto('child_file_versions')
    .values({
      id,
      tenant_id: ctx.tenant.id,
      child_id: childId,
      family_id: key.familyId,
      version: await nextVersion(trx, childId),
      change,
      changed_fields: [...changedFields],
      actor_account_id: ctx.actor?.accountId ?? null,
      created_at: ctx.now,
      snapshot_enc: sealSnapshot(env, key, id, snapshot),
    })
    .execute();
}

function snapshotOf(c: ChildRow, v: ChildValues, deleted: boolean): ChildSnapshot {
  return {
    reference: c.reference,
    firstName: required(v.first_name, 'first name'),
    lastName: required(v.last_name, 'last name'),
    birthDate: required(v.birth_date, 'birth date'),
    nirec: v.nirec,
    desiredEntryDate: c.desired_entry_date,
    daysOfCare: c.days_of_care,
    inSubsidisedCare: c.in_subsidised_care,
    deleted,
  };
}

/**
 * A placement at a CPE or a subsidised garderie: the child is now "already in
 * subsidised care" (domain.md), so category 4 of the Quebec order and the
 * points order's notInSubsidisedCare no longer apply to its other
 * registrations. A new version of the file records the change, as an edit
 * by the parent would. Returns whether the file changed.
 */
export async function markInSubsidisedCare(trx: Trx, ctx: Ctx, env: Envelope, childId: string): Promise<boolean> {
  const c = await trx
    .selectFrom('children as c')
    .innerJoin('families as f', 'f.id', 'c.family_id')
    .select(CHILD_COLUMNS)
    .select(['f.account_id as owner_account_id', 'f.key_version'])
    .where('c.id', '=', childId)
    .forNoKeyUpdate()
    .executeTakeFirstOrThrow();
  if (c.in_subsidised_care) return false;
  const key = await env.familyKey(ctx.tenant.id, c.family_id, c.key_version);
  const v = (await openChild(env, ctx.tenant.id, c, ['first_name', 'last_name', 'birth_date', 'nirec'])) as ChildValues;
  await trx.updateTable('children').set({ in_subsidised_care: true, updated_at: ctx.now }).where('id', '=', c.id).execute();
  await recordVersion(trx, ctx, env, key, c.id, 'update', ['in_subsidised_care'], snapshotOf({ ...c, in_subsidised_care: true } as unknown as ChildRow, v, false));
  return true;
}

const CHILD_INPUT_FIELDS = ['first_name', 'last_name', 'birth_date', 'nirec', 'desired_entry_date', 'days_of_care', 'in_subsidised_care'];

export async function createChildFile(deps: Deps, ctx: Ctx, input: ChildInput): Promise<{ id: string }> {
  try {
    return await run(deps, ctx, 'waitlist.childFile.create', async (trx, env) => {
      // An assisted session creates the file in the consented family, decided against that family.
      const owner = ctx.actor ? familyAccountOf(ctx.actor, ctx.now) : null;
      const d = decide(ctx.actor, 'waitlist.childFile.create', ctx.actor?.assisting ? { type: 'family', ownerAccountId: owner ?? '' } : { type: 'tenant' }, ctx.now);
      if (!d.allowed || !ctx.actor || !owner) deny(ctx, 'waitlist.childFile.create', 'child', 'new', d.reason ?? 'denied', d);
      const family = await ensureFamily(trx, ctx, env, owner);
      const index = await nirecIndex(env, ctx.tenant.id, input.nirec);
      await assertNoDuplicateNirec(trx, index);
      const id = randomUUID();
      // The reference is random; on the rare collision, draw again.
      for (let attempt = 0; ; attempt++) {
        const reference = newReference();
        const clash = await trx.selectFrom('children').select('id').where('reference', '=', reference).executeTakeFirst();
        if (clash && attempt < 5) continue;
        const values: ChildValues = { first_name: input.firstName, last_name: input.lastName, birth_date: input.birthDate, nirec: input.nirec };
        await trx
          .insertInto('children')
          .values({
            id,
            tenant_id: ctx.tenant.id,
            family_id: family.id,
            reference,
            ...(sealChild(env, family.key, id, values) as Required<ReturnType<typeof sealChild>>),
            nirec_index: index,
            birth_month: birthMonth(input.birthDate),
            desired_entry_date: input.desiredEntryDate,
            days_of_care: input.daysOfCare,
            in_subsidised_care: input.inSubsidisedCare,
            created_at: ctx.now,
            updated_at: ctx.now,
            confirmed_at: ctx.now,
          })
          .execute();
        await recordVersion(trx, ctx, env, family.key, id, 'create', CHILD_INPUT_FIELDS, {
          reference,
          firstName: input.firstName,
          lastName: input.lastName,
          birthDate: input.birthDate,
          nirec: input.nirec,
          desiredEntryDate: input.desiredEntryDate,
          daysOfCare: input.daysOfCare,
          inSubsidisedCare: input.inSubsidisedCare,
          deleted: false,
        });
        await audit(trx, ctx, { action: 'waitlist.childFile.create', targetType: 'child', targetIds: [id], familyIds: [family.id], fields: CHILD_INPUT_FIELDS, purpose: 'parent.childFile.create' });
        return { id };
      }
    });
  } catch (err) {
    if (duplicateNirec(err)) throw new ValidationError({ nirec: 'nirecDuplicate' });
    throw err;
  }
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
  return run(deps, ctx, 'waitlist.childFile.list', async (trx, env) => {
    if (!ctx.actor) deny(ctx, 'waitlist.childFile.list', 'family', 'self', 'not_signed_in', decide(null, 'waitlist.childFile.list', { type: 'tenant' }, ctx.now));
    const rows = await trx
      .selectFrom('children as c')
      .innerJoin('families as f', 'f.id', 'c.family_id')
      .select((eb) => [
        'c.id',
        'c.reference',
        'c.first_name_enc',
        'c.last_name_enc',
        'c.birth_date_enc',
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
    // Only the purpose's fields are decrypted, and only they leave (the audit event lists exactly these).
    if (purpose === 'parent.children.choose') {
      const opened = await openChildren(env, ctx.tenant.id, rows, ['first_name']);
      return rows.map((r) => ({ id: r.id, reference: r.reference, firstName: required(opened.get(r.id)!.first_name, 'first name') }));
    }
    const opened = await openChildren(env, ctx.tenant.id, rows, ['first_name', 'last_name', 'birth_date']);
    return rows.map((r) => {
      const v = opened.get(r.id)!;
      return {
        id: r.id,
        reference: r.reference,
        firstName: required(v.first_name, 'first name'),
        lastName: required(v.last_name, 'last name'),
        birthDate: required(v.birth_date, 'birth date'),
        desiredEntryDate: r.desired_entry_date,
        applicationsCount: Number(r.applications_count ?? 0),
      };
    });
  });
}

export async function readChildFile(deps: Deps, ctx: Ctx, childId: string, purpose: 'parent.childFile.view' | 'parent.childFile.edit'): Promise<ChildFileView> {
  return run(deps, ctx, 'waitlist.childFile.read', async (trx, env) => (await childFileIn(trx, env, ctx, childId, purpose)).view);
}

/** readChildFile's work inside a gateway transaction (child-page.ts composes it); also returns the row it loaded. */
export async function childFileIn(trx: Trx, env: Envelope, ctx: Ctx, childId: string, purpose: 'parent.childFile.view' | 'parent.childFile.edit'): Promise<{ view: ChildFileView; row: ChildRow }> {
  const c = await childWithOwner(trx, ctx, childId, 'waitlist.childFile.read');
  const applications = purpose === 'parent.childFile.view' ? await applicationsOf(trx, c.id) : [];
  const v = await openChild(env, ctx.tenant.id, c, ['first_name', 'last_name', 'birth_date', 'nirec']);
  await audit(trx, ctx, { action: 'waitlist.childFile.read', targetType: 'child', targetIds: [c.id], familyIds: [c.family_id], fields: fieldsFor(purpose), purpose });
  return {
    row: c,
    view: {
      id: c.id,
      reference: c.reference,
      firstName: required(v.first_name, 'first name'),
      lastName: required(v.last_name, 'last name'),
      birthDate: required(v.birth_date, 'birth date'),
      nirecMasked: maskNirec(v.nirec ?? null),
      desiredEntryDate: c.desired_entry_date,
      daysOfCare: c.days_of_care,
      inSubsidisedCare: c.in_subsidised_care,
      applications,
    },
  };
}

export async function updateChildFile(deps: Deps, ctx: Ctx, childId: string, input: ChildInput): Promise<void> {
  try {
    await run(deps, ctx, 'waitlist.childFile.update', async (trx, env) => {
      const c = await childWithOwner(trx, ctx, childId, 'waitlist.childFile.update', { lock: true });
      // The date on file may have passed (the family has waited since, and its seniority counts from it): kept, it
      // stays; only a new date must be today or later.
      if (input.desiredEntryDate !== c.desired_entry_date && input.desiredEntryDate < today(ctx.now)) throw new ValidationError({ desiredEntryDate: 'entryBeforeToday' });
      // A place accepted at a CPE or a subsidised garderie marked the child as in subsidised care (markInSubsidisedCare):
      // the family's form does not take that back, or the child would rank again as if it had none.
      const placedSubsidised =
        c.in_subsidised_care && !input.inSubsidisedCare
          ? await trx
              .selectFrom('offers as o')
              .innerJoin('facilities as f', 'f.id', 'o.facility_id')
              .select('o.id')
              .where('o.child_id', '=', c.id)
              .where('o.status', 'in', ['accepted', 'started'])
              .where((eb) => eb.or([eb('f.kind', '=', 'cpe'), eb('f.subsidised', '=', true)]))
              .executeTakeFirst()
          : undefined;
      const key = await env.familyKey(ctx.tenant.id, c.family_id, c.key_version);
      const cur = (await openChild(env, ctx.tenant.id, c, ['first_name', 'last_name', 'birth_date', 'nirec'])) as ChildValues;
      const nextSecret: ChildValues = { first_name: input.firstName, last_name: input.lastName, birth_date: input.birthDate, nirec: input.nirec ?? cur.nirec };
      const nextClear = { desired_entry_date: input.desiredEntryDate, days_of_care: input.daysOfCare, in_subsidised_care: input.inSubsidisedCare || !!placedSubsidised };
      const changedSecret = (Object.keys(nextSecret) as (keyof ChildValues)[]).filter((k) => nextSecret[k] !== cur[k]);
      const changedClear = (Object.keys(nextClear) as (keyof typeof nextClear)[]).filter((k) => nextClear[k] !== c[k]);
      const changed = [...changedSecret, ...changedClear];
      if (!changed.length) return;
      const index = changedSecret.includes('nirec') ? await nirecIndex(env, ctx.tenant.id, nextSecret.nirec) : undefined;
      if (index !== undefined) await assertNoDuplicateNirec(trx, index, c.id);
      const sealed = sealChild(env, key, c.id, Object.fromEntries(changedSecret.map((k) => [k, nextSecret[k]])) as Partial<ChildValues>);
      await trx
        .updateTable('children')
        .set({ ...sealed, ...(index !== undefined ? { nirec_index: index } : {}), ...nextClear, birth_month: birthMonth(nextSecret.birth_date), updated_at: ctx.now })
        .where('id', '=', c.id)
        .execute();
      await recordVersion(trx, ctx, env, key, c.id, 'update', changed, snapshotOf({ ...c, ...nextClear }, nextSecret, false));
      await audit(trx, ctx, { action: 'waitlist.childFile.update', targetType: 'child', targetIds: [c.id], familyIds: [c.family_id], fields: changed, purpose: 'parent.childFile.edit' });
    });
  } catch (err) {
    if (duplicateNirec(err)) throw new ValidationError({ nirec: 'nirecDuplicate' });
    throw err;
  }
}

export interface ApplicationInput {
  facilityId: string;
  siblingAttending: boolean;
  parentIsStaff: boolean;
  /** The facility's declared priorities the parent says the child meets (kinds); checked against its declaration now, verified at referral. */
  priorities?: readonly string[];
}

export async function addApplication(deps: Deps, ctx: Ctx, childId: string, input: ApplicationInput): Promise<void> {
  await run(deps, ctx, 'waitlist.application.create', async (trx) => {
    const c = await childWithOwner(trx, ctx, childId, 'waitlist.application.create');
    const facility = UUID.test(input.facilityId)
      ? await trx.selectFrom('facilities').select('id').where('id', '=', input.facilityId).executeTakeFirst()
      : undefined;
    if (!facility) throw new ValidationError({ facilityId: 'facilityUnknown' });
    const existing = await trx.selectFrom('applications').select(['id', 'status']).where('child_id', '=', c.id).where('facility_id', '=', facility.id).executeTakeFirst();
    if (existing && existing.status !== 'withdrawn') throw new ValidationError({ facilityId: 'alreadyApplied' });
    const declared = new Set((await declaredPriorities(trx, ctx.tenant, facility.id)).map((p) => p.kind as string));
    const priorities = [...new Set(input.priorities ?? [])];
    if (priorities.some((k) => !declared.has(k))) throw new ValidationError({ priorities: 'priorityNotDeclared' });
    let id: string;
    if (existing) {
      await trx
        .updateTable('applications')
        .set({ status: 'active', sibling_attending: input.siblingAttending, parent_is_staff: input.parentIsStaff, priorities, created_at: ctx.now, updated_at: ctx.now })
        .where('id', '=', existing.id)
        .execute();
      id = existing.id;
    } else {
      id = (
        await trx
          .insertInto('applications')
          .values({ tenant_id: ctx.tenant.id, child_id: c.id, facility_id: facility.id, sibling_attending: input.siblingAttending, parent_is_staff: input.parentIsStaff, priorities, status: 'active', created_at: ctx.now, updated_at: ctx.now })
          .returning('id')
          .executeTakeFirstOrThrow()
      ).id;
    }
    await audit(trx, ctx, { action: 'waitlist.application.create', targetType: 'application', targetIds: [id, c.id, facility.id], familyIds: [c.family_id], fields: ['facility_id', 'sibling_attending', 'parent_is_staff', ...(priorities.length ? ['priorities'] : [])], purpose: 'parent.application.create' });
  });
}

export async function withdrawApplication(deps: Deps, ctx: Ctx, childId: string, applicationId: string): Promise<void> {
  await run(deps, ctx, 'waitlist.application.withdraw', async (trx, env) => {
    const c = await childWithOwner(trx, ctx, childId, 'waitlist.application.withdraw', { lock: true });
    // An answer to this registration's offer under way finishes first (offers.ts, Concurrency): a placed registration stays placed.
    await lockChildOffers(trx, c.id);
    const app = UUID.test(applicationId)
      ? await trx.selectFrom('applications').select(['id', 'status']).where('id', '=', applicationId).where('child_id', '=', c.id).executeTakeFirst()
      : undefined;
    if (!app) deny(ctx, 'waitlist.application.withdraw', 'application', applicationId, 'not_found');
    if (app.status !== 'active') return;
    await trx.updateTable('applications').set({ status: 'withdrawn', updated_at: ctx.now }).where('id', '=', app.id).where('status', '=', 'active').execute();
    await audit(trx, ctx, { action: 'waitlist.application.withdraw', targetType: 'application', targetIds: [app.id, c.id], familyIds: [c.family_id], fields: ['status'], purpose: 'parent.application.withdraw' });
    // An offer waiting on this registration has no one to answer it now: the place goes to the next child, in this transaction.
    await cancelPendingOffers(trx, env, ctx, c.id, { applicationId: app.id, reason: 'application_withdrawn' });
  });
}

export interface CandidatePage {
  total: number;
  rows: CandidateView[];
}

/**
 * A facility's candidates in admission order, without identities: no name,
 * no birth date, no NIREC leaves this function for this purpose. The order is
 * computed in SQL on clear columns (category inputs, desired entry date,
 * reference); the age group comes from the clear birth month (a file written
 * before it has its birth date opened).
 */
export async function listCandidates(deps: Deps, ctx: Ctx, facilityId: string, page: number, pageSize = 50): Promise<CandidatePage> {
  const purpose: Purpose = 'facility.candidates';
  return run(deps, ctx, 'waitlist.candidates.list', async (trx, env) => {
    if (!UUID.test(facilityId)) deny(ctx, 'waitlist.candidates.list', 'facility', facilityId, 'malformed_id');
    const d = decide(ctx.actor, 'waitlist.candidates.list', { type: 'facility', facilityId }, ctx.now);
    if (!d.allowed) deny(ctx, 'waitlist.candidates.list', 'facility', facilityId, d.reason ?? 'denied', d);
    // The tenant's order, with the facility's declared priorities and where it stands against their cap.
    const order = await facilityOrdering(trx, ctx.tenant, facilityId, ctx.now);
    // Ordered and counted from the application's copies of its child's terms (migration 0024): one index-only
    // scan of the facility's eligible applications; the children's rows are read for the page's fifty alone.
    const x = eligibleRankTermsSql(facilityId, sqlFilter(ctx.actor, 'waitlist.candidates.list', { facilityId: sql.ref('a.facility_id') }, ctx.now));
    const ranked = await sql<{ id: string; created_at: Date; category: number; rank: string; total: string }>`
      SELECT r.id, r.created_at, r.category, r.rank, r.total FROM (
        SELECT x.id, x.created_at, ${categorySql('x', 'x')} AS category,
               row_number() OVER (ORDER BY ${rankOrderSql('x', 'x', order)}) AS rank,
               count(*) OVER () AS total
          FROM (${x}) x) r
      ORDER BY r.rank LIMIT ${pageSize} OFFSET ${(page - 1) * pageSize}`.execute(trx);
    // Beyond the last page the window has no row to carry the count.
    const total = ranked.rows.length
      ? Number(ranked.rows[0]!.total)
      : Number((await sql<{ n: string }>`SELECT count(*) AS n FROM (${x}) x`.execute(trx)).rows[0]?.n ?? 0);
    const byApp = new Map(
      ranked.rows.length
        ? (
            await trx
              .selectFrom('applications as a')
              .innerJoin('children as c', 'c.id', 'a.child_id')
              .where('a.id', 'in', ranked.rows.map((r) => r.id))
              .select([
                'a.id as application_id',
                'c.id',
                'c.family_id',
                'c.reference',
                sql<Buffer | null>`CASE WHEN c.birth_month IS NULL THEN c.birth_date_enc END`.as('birth_date_enc'),
                'c.birth_month',
                'c.desired_entry_date',
              ])
              .execute()
          ).map((c) => [c.application_id, c] as const)
        : [],
    );
    // A file deleted between the two reads leaves its rank unused on this page rather than fail it.
    const rows = ranked.rows.flatMap((r) => {
      const c = byApp.get(r.id);
      return c ? [{ ...c, created_at: r.created_at, category: r.category, rank: r.rank }] : [];
    });
    // The age group from the clear birth month; only a file written before it has its birth date opened, which the
    // event then names among its fields (the date itself goes no further than the age group).
    const unknown = rows.filter((r) => !r.birth_month);
    if (rows.length) {
      await audit(trx, ctx, {
        action: 'waitlist.candidates.list',
        targetType: 'facility',
        targetIds: [facilityId, ...rows.map((r) => r.id)],
        familyIds: [...new Set(rows.map((r) => r.family_id))],
        fields: unknown.length ? [...fieldsFor(purpose), 'birth_date'] : fieldsFor(purpose),
        purpose,
      details: { page, count: rows.length },
      });
    }
    const births = unknown.length ? await openChildren(env, ctx.tenant.id, unknown, ['birth_date']) : new Map<string, { birth_date?: string | null }>();
    const t = today(ctx.now);
    return {
      total,
      rows: rows.map((r) => ({
        rank: Number(r.rank),
        reference: r.reference,
        ageGroup: r.birth_month
          ? ageGroupOfMonth(r.birth_month, r.desired_entry_date, t, ctx.tenant.rules.infantMaxMonths)
          : ageGroup(required(births.get(r.id)!.birth_date, 'birth date'), r.desired_entry_date, ctx.now, ctx.tenant.rules.infantMaxMonths),
        desiredEntryDate: r.desired_entry_date,
        category: Number(r.category) as Category,
        appliedAt: r.created_at,
      })),
    };
  });
}

/* ---------------------------------------------------- deletion and restore */

/** For the confirmation page: whose file, and how many active registrations go with it. */
export async function readChildFileForDeletion(deps: Deps, ctx: Ctx, childId: string): Promise<ChildFileDeletionView> {
  const purpose: Purpose = 'parent.childFile.delete';
  return run(deps, ctx, 'waitlist.childFile.read', async (trx, env) => {
    // The confirmation page is the parent's: reading the name on it is a read of the file.
    const c = await childWithOwner(trx, ctx, childId, 'waitlist.childFile.read');
    const n = await trx.selectFrom('applications').select(sql<string>`count(*)`.as('n')).where('child_id', '=', c.id).where('status', '=', 'active').executeTakeFirst();
    const v = await openChild(env, ctx.tenant.id, c, ['first_name', 'last_name']);
    await audit(trx, ctx, { action: 'waitlist.childFile.read', targetType: 'child', targetIds: [c.id], familyIds: [c.family_id], fields: fieldsFor(purpose), purpose });
    return { id: c.id, reference: c.reference, firstName: required(v.first_name, 'first name'), lastName: required(v.last_name, 'last name'), applicationsCount: Number(n?.n ?? 0) };
  });
}

/**
 * Deletes a child file softly: it leaves every list and every page at once,
 * its data stays encrypted as it was, and it can be restored — by a second
 * person — until the tenant's retention window ends; then the purge
 * destroys it for good (purge.ts). The parent, or a programme operator or
 * administrator, may delete.
 */
export async function deleteChildFile(deps: Deps, ctx: Ctx, childId: string): Promise<{ purgeAfter: Date }> {
  return run(deps, ctx, 'waitlist.childFile.delete', async (trx, env) => {
    const c = await childWithOwner(trx, ctx, childId, 'waitlist.childFile.delete', { lock: true });
    const key = await env.familyKey(ctx.tenant.id, c.family_id, c.key_version);
    const v = (await openChild(env, ctx.tenant.id, c, ['first_name', 'last_name', 'birth_date', 'nirec'])) as ChildValues;
    // updated_at is left alone: the file's content does not change, and a restore gives it back identical.
    await trx.updateTable('children').set({ deleted_at: ctx.now, deleted_by: ctx.actor!.accountId }).where('id', '=', c.id).execute();
    await recordVersion(trx, ctx, env, key, c.id, 'delete', ['deleted_at'], snapshotOf(c, v, true));
    const purgeAfter = new Date(ctx.now.getTime() + ctx.tenant.rules.deletedFileRetentionDays * 86_400_000);
    await audit(trx, ctx, {
      action: 'waitlist.childFile.delete',
      targetType: 'child',
      targetIds: [c.id],
      familyIds: [c.family_id],
      fields: ['deleted_at'],
      purpose: 'parent.childFile.delete',
      details: { retentionDays: ctx.tenant.rules.deletedFileRetentionDays, purgeAfter: purgeAfter.toISOString() },
    });
    // The file left every list: an offer it held goes to the next child.
    await cancelPendingOffers(trx, env, ctx, c.id, { reason: 'file_deleted' });
    return { purgeAfter };
  });
}

/**
 * Asks for a deleted file to be restored. A second person decides
 * (decideChildFileRestore): one request open at a time per file.
 */
export async function requestChildFileRestore(deps: Deps, ctx: Ctx, childId: string): Promise<{ requestId: string }> {
  return run(deps, ctx, 'waitlist.childFile.restore.request', async (trx) => {
    const c = await childWithOwner(trx, ctx, childId, 'waitlist.childFile.restore.request', { deleted: true, lock: true });
    const cutoff = new Date(ctx.now.getTime() - ctx.tenant.rules.deletedFileRetentionDays * 86_400_000);
    if (c.deleted_at! <= cutoff) deny(ctx, 'waitlist.childFile.restore.request', 'child', childId, 'retention_expired', undefined, new RestoreRefused('notFound', 'retention_expired'));
    const open = await trx.selectFrom('child_file_restore_requests').select('id').where('child_id', '=', c.id).where('decided_at', 'is', null).executeTakeFirst();
    if (open) return { requestId: open.id };
    const r = await trx
      .insertInto('child_file_restore_requests')
      .values({ tenant_id: ctx.tenant.id, child_id: c.id, requested_by: ctx.actor!.accountId, requested_at: ctx.now })
      .returning('id')
      .executeTakeFirstOrThrow();
    await audit(trx, ctx, { action: 'waitlist.childFile.restore.request', targetType: 'child', targetIds: [r.id, c.id], familyIds: [c.family_id], details: { deletedAt: c.deleted_at!.toISOString() } });
    return { requestId: r.id };
  });
}

/**
 * A current administrator, who is not the person who asked, approves (the
 * file comes back exactly as it was: the same ciphertexts, the same
 * registrations) or rejects a restore request. The database checks the
 * same rules (migration 0006).
 */
export async function decideChildFileRestore(deps: Deps, ctx: Ctx, requestId: string, decision: 'approve' | 'reject'): Promise<void> {
  const action = 'waitlist.childFile.restore.approve';
  try {
    await run(deps, ctx, action, async (trx, env) => {
      if (!UUID.test(requestId)) deny(ctx, action, 'restore_request', requestId, 'malformed_id', undefined, new RestoreRefused('notFound', 'malformed_id'));
      const d = decide(ctx.actor, action, { type: 'tenant' }, ctx.now);
      if (!d.allowed || !ctx.actor) deny(ctx, action, 'restore_request', requestId, d.reason ?? 'denied', d);
      const req = await trx.selectFrom('child_file_restore_requests').selectAll().where('id', '=', requestId).forUpdate().executeTakeFirst();
      if (!req) deny(ctx, action, 'restore_request', requestId, 'not_found');
      if (req.decided_at) deny(ctx, action, 'restore_request', requestId, 'already_decided', undefined, new RestoreRefused('notFound', 'already_decided'));
      if (req.requested_by === ctx.actor.accountId) deny(ctx, action, 'restore_request', requestId, 'same_person', undefined, new RestoreRefused('forbidden', 'same_person'));
      const c = await trx
        .selectFrom('children as c')
        .innerJoin('families as f', 'f.id', 'c.family_id')
        .select(CHILD_COLUMNS)
        .select(['f.account_id as owner_account_id', 'f.key_version'])
        .where('c.id', '=', req.child_id)
        .forUpdate()
        .executeTakeFirst();
      // Past the window the file is the purge's, even if the purge has not run yet.
      const cutoff = new Date(ctx.now.getTime() - ctx.tenant.rules.deletedFileRetentionDays * 86_400_000);
      if (!c || !c.deleted_at || c.purged_at || c.deleted_at <= cutoff) deny(ctx, action, 'restore_request', requestId, 'not_restorable', undefined, new RestoreRefused('notFound', 'retention_expired'));
      // Approving brings personal data back onto every list: the approver authenticates afresh (rejecting changes nothing).
      if (decision === 'approve') requireRecentAuth(ctx, undefined, { returnTo: `/admin/restores/${req.id}` });
      await trx.updateTable('child_file_restore_requests').set({ decided_by: ctx.actor.accountId, decided_at: ctx.now, decision: decision === 'approve' ? 'approved' : 'rejected' }).where('id', '=', req.id).execute();
      if (decision === 'approve') {
        await assertNoDuplicateNirec(trx, c.nirec_index);
        const key = await env.familyKey(ctx.tenant.id, c.family_id, c.key_version);
        const v = (await openChild(env, ctx.tenant.id, c, ['first_name', 'last_name', 'birth_date', 'nirec'])) as ChildValues;
        await trx.updateTable('children').set({ deleted_at: null, deleted_by: null }).where('id', '=', c.id).execute();
        await recordVersion(trx, ctx, env, key, c.id, 'restore', ['deleted_at'], snapshotOf(c, v, false));
      }
      await audit(trx, ctx, {
        action,
        targetType: 'child',
        targetIds: [req.id, c.id],
        familyIds: [c.family_id],
        details: { decision: decision === 'approve' ? 'approved' : 'rejected', requestedBy: req.requested_by },
      });
    });
  } catch (err) {
    if (duplicateNirec(err)) throw new ValidationError({ nirec: 'nirecDuplicate' });
    throw err;
  }
}

/** Labels the account ids that acted on files: the family's own account, or a member of staff by e-mail. */
async function whoActed(trx: Trx, pairs: { accountId: string | null; ownerAccountId: string }[]): Promise<Who[]> {
  const agents = [...new Set(pairs.filter((p) => p.accountId && p.accountId !== p.ownerAccountId).map((p) => p.accountId!))];
  const emails = new Map<string, string>();
  if (agents.length) for (const a of await trx.selectFrom('accounts').select(['id', 'email']).where('id', 'in', agents).execute()) emails.set(a.id, a.email);
  return pairs.map((p) => (!p.accountId ? { kind: 'system' } : p.accountId === p.ownerAccountId ? { kind: 'family' } : { kind: 'agent', email: emails.get(p.accountId) ?? '—' }));
}

async function openRestoreRequests(deps: Deps, ctx: Ctx, requestId: string | null): Promise<RestoreRequestView[]> {
  const action = 'waitlist.childFile.restore.approve';
  const purpose: Purpose = 'admin.childFile.restoreRequests';
  return run(deps, ctx, action, async (trx) => {
    const target = requestId ?? 'list';
    if (requestId !== null && !UUID.test(requestId)) deny(ctx, 'waitlist.childFile.restore.list', 'restore_request', target, 'malformed_id', undefined, new RestoreRefused('notFound', 'malformed_id'));
    const d = decide(ctx.actor, action, { type: 'tenant' }, ctx.now);
    if (!d.allowed) deny(ctx, 'waitlist.childFile.restore.list', 'restore_request', target, d.reason ?? 'denied', d);
    let q = trx
      .selectFrom('child_file_restore_requests as r')
      .innerJoin('children as c', 'c.id', 'r.child_id')
      .innerJoin('families as f', 'f.id', 'c.family_id')
      .select(['r.id', 'r.child_id', 'c.reference', 'c.family_id', 'f.account_id as owner', 'r.requested_by', 'r.requested_at', 'r.decided_at', 'c.deleted_at'])
      .where('c.purged_at', 'is', null)
      .orderBy('r.requested_at');
    q = requestId === null ? q.where('r.decided_at', 'is', null) : q.where('r.id', '=', requestId);
    const rows = await q.execute();
    if (requestId !== null && !rows.length) deny(ctx, 'waitlist.childFile.restore.list', 'restore_request', target, 'not_found');
    if (requestId !== null && rows[0]!.decided_at) deny(ctx, 'waitlist.childFile.restore.list', 'restore_request', target, 'already_decided', undefined, new RestoreRefused('notFound', 'already_decided'));
    if (rows.length) {
      await audit(trx, ctx, {
        action: 'waitlist.childFile.restore.list',
        targetType: 'restore_request',
        targetIds: rows.flatMap((r) => [r.id, r.child_id]),
        familyIds: [...new Set(rows.map((r) => r.family_id))],
        fields: fieldsFor(purpose),
        purpose,
        details: { count: rows.length },
      });
    }
    const who = await whoActed(trx, rows.map((r) => ({ accountId: r.requested_by, ownerAccountId: r.owner })));
    const days = ctx.tenant.rules.deletedFileRetentionDays;
    return rows.map((r, i) => ({
      id: r.id,
      childId: r.child_id,
      reference: r.reference,
      requestedBy: r.requested_by,
      requestedByWho: who[i]!,
      requestedAt: r.requested_at,
      deletedAt: r.deleted_at!,
      restoreUntil: new Date(r.deleted_at!.getTime() + days * 86_400_000),
    }));
  });
}

/** Open restore requests, for the administrators who decide them: references only, no identity. Audited. */
export async function listRestoreRequests(deps: Deps, ctx: Ctx): Promise<RestoreRequestView[]> {
  return openRestoreRequests(deps, ctx, null);
}

/** One open restore request, for the page where a second administrator decides it. Audited. */
export async function readRestoreRequest(deps: Deps, ctx: Ctx, requestId: string): Promise<RestoreRequestView> {
  return (await openRestoreRequests(deps, ctx, requestId))[0]!;
}

/**
 * The family's deleted files that can still come back: until when, and
 * whether a restore was asked for. Names only, as on the account page.
 */
export async function listDeletedChildren(deps: Deps, ctx: Ctx): Promise<DeletedChildView[]> {
  const purpose: Purpose = 'parent.children.deleted';
  return run(deps, ctx, 'waitlist.childFile.list', async (trx, env) => {
    if (!ctx.actor) deny(ctx, 'waitlist.childFile.list', 'family', 'self', 'not_signed_in', decide(null, 'waitlist.childFile.list', { type: 'tenant' }, ctx.now));
    const days = ctx.tenant.rules.deletedFileRetentionDays;
    const cutoff = new Date(ctx.now.getTime() - days * 86_400_000);
    const rows = await trx
      .selectFrom('children as c')
      .innerJoin('families as f', 'f.id', 'c.family_id')
      .select((eb) => [
        'c.id',
        'c.reference',
        'c.first_name_enc',
        'c.last_name_enc',
        'c.family_id',
        'c.deleted_at',
        eb.exists(eb.selectFrom('child_file_restore_requests as r').select('r.id').whereRef('r.child_id', '=', 'c.id').where('r.decided_at', 'is', null)).as('requested'),
      ])
      .where(sqlFilter(ctx.actor, 'waitlist.childFile.list', { familyOwner: sql.ref('f.account_id') }, ctx.now))
      .where('c.deleted_at', 'is not', null)
      .where('c.deleted_at', '>', cutoff)
      .where('c.purged_at', 'is', null)
      .orderBy('c.deleted_at', 'desc')
      .execute();
    if (rows.length) {
      await audit(trx, ctx, { action: 'waitlist.childFile.list', targetType: 'child', targetIds: rows.map((r) => r.id), familyIds: [...new Set(rows.map((r) => r.family_id))], fields: fieldsFor(purpose), purpose });
    }
    const opened = await openChildren(env, ctx.tenant.id, rows, ['first_name', 'last_name']);
    return rows.map((r) => ({
      id: r.id,
      reference: r.reference,
      firstName: required(opened.get(r.id)!.first_name, 'first name'),
      lastName: required(opened.get(r.id)!.last_name, 'last name'),
      deletedAt: r.deleted_at!,
      restoreUntil: new Date(r.deleted_at!.getTime() + days * 86_400_000),
      restoreRequested: !!r.requested,
    }));
  });
}

/* -------------------------------------------------------- agents' look-ups */

/**
 * Finds the files of a child by NIREC, for an authorised agent (programme
 * operator, administrator): the NIREC is normalised, turned into its blind
 * index, and looked up — it is never stored nor written to the audit log.
 * Deleted files that can still be restored are found too. Every look-up is
 * an audit event, a fruitless one included.
 */
/** How a file was asked for: the reason stated, which a protected file needs (src/detection/protected.ts). */
export interface AccessReason {
  reason?: string | undefined;
}

/**
 * Refuses a protected file opened without a reason; returns the protected
 * ones and the reason to record. The reason goes to the openings
 * (recordProtectedOpenings), never into the read's audit event: it is text
 * typed about a child, and the log keeps forever what no purge can reach.
 */
export async function protectedAccess(trx: Trx, ctx: Ctx, action: AuditAction, childIds: readonly string[], access: AccessReason): Promise<{ ids: string[]; reason: string }> {
  const ids = await protectedAmong(trx, childIds);
  if (!ids.length) return { ids, reason: '' };
  const reason = accessReason(access.reason);
  if (!reason) deny(ctx, action, 'child', ids[0]!, 'protected_reason_required', undefined, new AppError('reasonRequired'));
  return { ids, reason };
}

export async function lookupChildFileByNirec(deps: Deps, ctx: Ctx, rawNirec: string, access: AccessReason = {}): Promise<NirecMatch[]> {
  const action = 'waitlist.childFile.lookupByNirec';
  const purpose: Purpose = 'operator.childFile.lookup';
  return run(deps, ctx, action, async (trx, env) => {
    const d = decide(ctx.actor, action, { type: 'tenant' }, ctx.now);
    if (!d.allowed) deny(ctx, action, 'child', 'nirec', d.reason ?? 'denied', d);
    const nirec = typeof rawNirec === 'string' ? normaliseNirec(rawNirec) : '';
    if (!nirec || nirec.length > 64 || /[\u0000-\u001f\u007f-\u009f]/.test(rawNirec) || !new RegExp(ctx.tenant.rules.nirecPattern).test(nirec)) {
      throw new ValidationError({ nirec: 'nirecInvalid' });
    }
    const index = await env.blindIndex(ctx.tenant.id, 'nirec', nirec);
    const rows = await trx
      .selectFrom('children')
      .selectAll()
      .where('nirec_index', '=', index)
      .where('purged_at', 'is', null)
      .orderBy('created_at')
      .execute();
    const prot = await protectedAccess(trx, ctx, action, rows.map((r) => r.id), access);
    const event = await audit(trx, ctx, {
      action,
      targetType: 'child',
      targetIds: rows.map((r) => r.id),
      familyIds: [...new Set(rows.map((r) => r.family_id))],
      fields: rows.length ? fieldsFor(purpose) : [],
      purpose,
      details: { matches: rows.length, ...(prot.ids.length ? { protectedFiles: prot.ids.length } : {}) },
    });
    await recordProtectedOpenings(trx, readContext(ctx), action, prot.ids, prot.reason, event.id);
    const opened = await openChildren(env, ctx.tenant.id, rows, ['first_name', 'last_name', 'birth_date', 'nirec']);
    return rows.map((r) => {
      const v = opened.get(r.id)!;
      return {
        id: r.id,
        reference: r.reference,
        firstName: required(v.first_name, 'first name'),
        lastName: required(v.last_name, 'last name'),
        birthDate: required(v.birth_date, 'birth date'),
        nirecMasked: maskNirec(v.nirec ?? null),
        desiredEntryDate: r.desired_entry_date,
        status: r.deleted_at ? ('deleted' as const) : ('active' as const),
        deletedAt: r.deleted_at,
      };
    });
  });
}

/** The history of a child file (live or deleted, until purged), for an authorised agent. */
export async function readChildFileHistory(deps: Deps, ctx: Ctx, childId: string, access: AccessReason = {}): Promise<ChildFileVersionView[]> {
  const action = 'waitlist.childFile.history';
  const purpose: Purpose = 'operator.childFile.history';
  return run(deps, ctx, action, async (trx, env) => {
    if (!UUID.test(childId)) deny(ctx, action, 'child', childId, 'malformed_id');
    const d = decide(ctx.actor, action, { type: 'tenant' }, ctx.now);
    if (!d.allowed) deny(ctx, action, 'child', childId, d.reason ?? 'denied', d);
    const rows = await trx
      .selectFrom('child_file_versions')
      .selectAll()
      .where('child_id', '=', childId)
      .where('purged_at', 'is', null)
      .orderBy('version')
      .execute();
    if (!rows.length) deny(ctx, action, 'child', childId, 'not_found');
    const prot = await protectedAccess(trx, ctx, action, [childId], access);
    const event = await audit(trx, ctx, { action, targetType: 'child', targetIds: [childId], familyIds: [rows[0]!.family_id], fields: fieldsFor(purpose), purpose, details: { versions: rows.length, ...(prot.ids.length ? { protectedFiles: prot.ids.length } : {}) } });
    await recordProtectedOpenings(trx, readContext(ctx), action, prot.ids, prot.reason, event.id);
    const snaps = await openSnapshots(env, ctx.tenant.id, rows.map((r) => ({ id: r.id, family_id: r.family_id, snapshot_enc: r.snapshot_enc! })));
    const owner = await trx.selectFrom('families').select('account_id').where('id', '=', rows[0]!.family_id).executeTakeFirstOrThrow();
    const who = await whoActed(trx, rows.map((r) => ({ accountId: r.actor_account_id, ownerAccountId: owner.account_id })));
    return rows.map((r, i) => {
      const s = snaps.get(r.id)!;
      return {
        changedByWho: who[i]!,
        reference: s.reference,
        version: r.version,
        change: r.change,
        changedFields: r.changed_fields,
        changedAt: r.created_at,
        changedBy: r.actor_account_id,
        firstName: s.firstName,
        lastName: s.lastName,
        birthDate: s.birthDate,
        nirecMasked: maskNirec(s.nirec),
        desiredEntryDate: s.desiredEntryDate,
        daysOfCare: s.daysOfCare,
        inSubsidisedCare: s.inSubsidisedCare,
      };
    });
  });
}

/* ---------------------------------------------------------- breach notices */

/** Whom a breach notice is for: the parent's address and language, and each named file by reference and first name. */
export interface NoticeRecipient {
  familyId: string;
  accountId: string;
  email: string;
  locale: 'fr' | 'en';
  /** The files the notice names; firstName is null once a file is purged (nothing left to read). */
  children: { id: string; reference: string; firstName: string | null }[];
}

/** The fields a breach notice opens (src/privacy/purposes.ts lists the privacy purposes). */
export const BREACH_NOTICE_FIELDS = ['account_email', 'account_locale', 'reference', 'first_name'] as const;

/**
 * Addresses the notices of a breach report. Opening first names to write them
 * is a read of those files like any other, recorded before anything leaves.
 * Who may: a security officer who authenticated in the last five minutes
 * (the console), or — `system` set, no actor — the operator running
 * `guichet breach-report` on the server, with the same trust as every other
 * server command.
 */
export async function readBreachNoticeRecipients(deps: Deps, ctx: Ctx, familyIds: readonly string[], childIds: readonly string[], system?: AuditOrigin): Promise<NoticeRecipient[]> {
  const action = 'privacy.breach.recipients';
  return run(deps, ctx, action, async (trx, env) => {
    if (ctx.actor) {
      const d = decide(ctx.actor, 'privacy.breachReport.create', { type: 'tenant' }, ctx.now);
      if (!d.allowed) deny(ctx, action, 'family', 'breach', d.reason ?? 'denied', d, new AppError('forbidden'));
      if (!isRecentAuth(ctx.actor, ctx.now)) deny(ctx, action, 'family', 'breach', 'step_up_required', undefined, new AppError('forbidden'));
    } else if (!system || !system.actorRoles.some((r) => r.startsWith('system:'))) {
      deny(ctx, action, 'family', 'breach', 'not_signed_in', undefined, new AppError('signInRequired'));
    }
    const fams = familyIds.filter((f) => UUID.test(f));
    if (!fams.length) return [];
    const owners = await trx
      .selectFrom('families as f')
      .innerJoin('accounts as a', 'a.id', 'f.account_id')
      .select(['f.id', 'f.account_id', 'a.email', 'a.locale'])
      .where('f.id', 'in', fams)
      .execute();
    const wanted = new Set(childIds);
    const kids = (await trx.selectFrom('children').selectAll().where('family_id', 'in', fams).orderBy('created_at').execute()).filter((k) => wanted.has(k.id));
    const readable = kids.filter((k) => !k.purged_at && k.first_name_enc);
    const origin = system && !ctx.actor ? system : originOf(ctx);
    await appendAudit(
      trx,
      ctx.tenant.id,
      {
        action,
        outcome: 'success',
        ...originFields(origin),
        targetType: 'family',
        targetIds: kids.map((k) => k.id),
        familyIds: owners.map((o) => o.id),
        fields: [...BREACH_NOTICE_FIELDS],
        purpose: 'security.breach.notice',
        details: withSession(ctx, { families: owners.length, files: kids.length }),
      },
      ctx.now,
    );
    const names = await openChildren(env, ctx.tenant.id, readable, ['first_name']);
    return owners.map((o) => ({
      familyId: o.id,
      accountId: o.account_id,
      email: o.email,
      locale: o.locale,
      children: kids.filter((k) => k.family_id === o.id).map((k) => ({ id: k.id, reference: k.reference, firstName: names.get(k.id)?.first_name ?? null })),
    }));
  });
}

/* ------------------------------------------------- the family's own export */

export interface FamilyExport {
  account: { email: string; locale: 'fr' | 'en'; createdAt: Date };
  family: { id: string; parentFirstName: string | null; parentLastName: string | null; phone: string | null; postalCode: string | null } | null;
  /** Each file as its parent sees it, with its dates and the outline of its versions. */
  children: (ChildFileView & {
    createdAt: Date;
    deletedAt: Date | null;
    history: FamilyExportVersion[];
    offers: FamilyExportOffer[];
    allocations: FamilyExportAllocation[];
    /** What each registration says beyond its facility (applicationsOf): what the parent declared with it. */
    applicationDetails: { id: string; siblingAttending: boolean; parentIsStaff: boolean; priorities: string[] }[];
    /** The periodic confirmation of the file (src/records/confirmation.ts). */
    confirmation: { confirmedAt: Date | null; remindedAt: Date | null; inactiveSince: Date | null; seniorityFrom: string | null };
  })[];
  /** Times an agent helped the parent (assisted mode): who, how, when, and the note they wrote. */
  assistedSessions: { requestedAt: Date; startedAt: Date | null; endedAt: Date | null; channel: string; agentRole: string; agentOrganisation: string | null; note: string }[];
}

/** One version of a file, as it read then (the NIREC masked). */
export interface FamilyExportVersion {
  version: number;
  change: ChildFileVersionView['change'];
  changedFields: string[];
  changedAt: Date;
  changedBy: 'you' | 'someone_else' | null;
  content: { firstName: string; lastName: string; birthDate: string; nirecMasked: string | null; desiredEntryDate: string; daysOfCare: number; inSubsidisedCare: boolean } | null;
}

/** A place offered to the child: where, when, what became of it. */
export interface FamilyExportOffer {
  id: string;
  facilityId: string;
  facilityName: string;
  municipality: string;
  ageGroup: string;
  status: string;
  source: string;
  offeredAt: Date;
  deadline: Date;
  answeredAt: Date | null;
  startDate: string | null;
}

/** The child's outcome in each allocation round that included it (dry runs are not outcomes). */
export interface FamilyExportAllocation {
  runId: string;
  runAt: Date;
  ageGroup: string;
  desiredEntryDate: string;
  choices: { facilityId: string; facilityName: string; category: number }[];
  placedChoice: number | null;
}

/** One child file of a family's export, without its dates, registrations and history (which the export document writes its own way). */
export type FamilyExportChildCore = Omit<FamilyExport['children'][number], 'createdAt' | 'deletedAt' | 'applications' | 'history' | 'offers' | 'allocations' | 'applicationDetails' | 'confirmation'>;

/** The fields the export opens (src/privacy/purposes.ts, 'parent.family.export'), but for the access log, which is read from the audit log. */
export const FAMILY_EXPORT_FIELDS = [
  'account_email',
  'account_locale',
  'account_created_at',
  'parent_first_name',
  'parent_last_name',
  'phone',
  'postal_code',
  'reference',
  'first_name',
  'last_name',
  'birth_date',
  'nirec_masked',
  'desired_entry_date',
  'days_of_care',
  'in_subsidised_care',
  'applications',
  'offers',
  'allocation_results',
  'history',
  'sibling_attending',
  'parent_is_staff',
  'priorities',
  'confirmation',
  'assisted_sessions',
  'access_log',
] as const;

/**
 * Everything Guichet holds on the signed-in parent's family, for them to take
 * away (Law 25, since September 2024: a structured, commonly used format).
 * Files deleted but not yet purged are included: they are still held. The
 * NIREC stays masked, as on every page. `familyIds` lets the caller record
 * the access log with the same event (it reads the audit log itself).
 */
export async function readFamilyExport(deps: Deps, ctx: Ctx): Promise<FamilyExport & { familyIds: string[] }> {
  const action = 'privacy.export';
  return run(deps, ctx, action, async (trx, env) => {
    if (!ctx.actor) deny(ctx, action, 'family', 'self', 'not_signed_in', decide(null, action, { type: 'tenant' }, ctx.now));
    check(ctx, action, ctx.actor.accountId, 'family', 'self');
    const account = await trx.selectFrom('accounts').select(['email', 'locale', 'created_at']).where('id', '=', ctx.actor.accountId).executeTakeFirstOrThrow();
    const fam = await trx.selectFrom('families').selectAll().where('account_id', '=', ctx.actor.accountId).where('purged_at', 'is', null).executeTakeFirst();
    const kids = fam ? await trx.selectFrom('children').selectAll().where('family_id', '=', fam.id).where('purged_at', 'is', null).orderBy('created_at').execute() : [];
    const versions = kids.length
      ? await trx.selectFrom('child_file_versions').select(['id', 'child_id', 'family_id', 'version', 'change', 'changed_fields', 'created_at', 'actor_account_id', 'snapshot_enc']).where('child_id', 'in', kids.map((k) => k.id)).where('purged_at', 'is', null).orderBy('child_id').orderBy('version').execute()
      : [];
    const apps = new Map<string, ApplicationView[]>();
    for (const k of kids) apps.set(k.id, await applicationsOf(trx, k.id));
    const kidIds = kids.map((k) => k.id);
    const appDetails = kidIds.length ? await trx.selectFrom('applications').select(['id', 'child_id', 'sibling_attending', 'parent_is_staff', 'priorities']).where('child_id', 'in', kidIds).orderBy('created_at').execute() : [];
    const assisted = await trx
      .selectFrom('assisted_sessions as s')
      .leftJoin('facilities as fa', 'fa.id', 's.agent_facility_id')
      .select(['s.requested_at', 's.started_at', 's.ended_at', 's.expires_at', 's.channel', 's.agent_role', 'fa.name as facility', 's.note'])
      .where('s.parent_account_id', '=', ctx.actor.accountId)
      .where('s.started_at', 'is not', null)
      .orderBy('s.requested_at')
      .execute();
    const offers = kidIds.length
      ? await trx
          .selectFrom('offers as o')
          .innerJoin('facilities as fa', 'fa.id', 'o.facility_id')
          .select(['o.id', 'o.child_id', 'o.facility_id', 'fa.name', 'fa.municipality', 'o.age_group', 'o.status', 'o.source', 'o.offered_at', 'o.deadline', 'o.answered_at', 'o.start_date'])
          .where('o.child_id', 'in', kidIds)
          .orderBy('o.offered_at')
          .execute()
      : [];
    const rounds = kidIds.length
      ? await trx
          .selectFrom('allocation_results as r')
          .innerJoin('allocation_runs as u', 'u.id', 'r.run_id')
          .select(['r.run_id', 'r.child_id', 'u.started_at', 'r.age_group', 'r.desired_entry_date', 'r.category_by_choice', 'r.facility_by_choice', 'r.placed_choice'])
          .where('r.child_id', 'in', kidIds)
          .where('u.dry_run', '=', false)
          .orderBy('u.started_at')
          .execute()
      : [];
    const roundFacilityIds = [...new Set(rounds.flatMap((r) => r.facility_by_choice))];
    const roundFacilities = new Map(
      (roundFacilityIds.length ? await trx.selectFrom('facilities').select(['id', 'name']).where('id', 'in', roundFacilityIds).execute() : []).map((f) => [f.id, f.name]),
    );
    await audit(trx, ctx, {
      action,
      targetType: 'family',
      targetIds: [...kidIds, ...offers.map((o) => o.id)],
      familyIds: fam ? [fam.id] : [],
      fields: [...FAMILY_EXPORT_FIELDS],
      purpose: 'parent.family.export',
      details: { files: kids.length, offers: offers.length, allocation_results: rounds.length },
    });
    let family: FamilyExport['family'] = null;
    if (fam) {
      const cells = FAMILY_FIELDS.map((f) => ({ rowId: fam.id, familyId: fam.id, column: f, blob: fam[`${f}_enc`]! })).filter((c) => c.blob);
      const open = await openCells(env, ctx.tenant.id, 'families', cells);
      const v = (f: string) => open.get(`${fam.id}/${f}`) ?? null;
      family = { id: fam.id, parentFirstName: v('parent_first_name'), parentLastName: v('parent_last_name'), phone: v('phone'), postalCode: v('postal_code') };
    }
    const opened = await openChildren(env, ctx.tenant.id, kids, ['first_name', 'last_name', 'birth_date', 'nirec']);
    const snaps = await openSnapshots(env, ctx.tenant.id, versions.filter((r) => r.snapshot_enc).map((r) => ({ id: r.id, family_id: r.family_id, snapshot_enc: r.snapshot_enc! })));
    const programme = ctx.locale === 'fr' ? ctx.tenant.nameFr : ctx.tenant.nameEn;
    return {
      familyIds: fam ? [fam.id] : [],
      assistedSessions: assisted.map((s) => ({
        requestedAt: s.requested_at,
        startedAt: s.started_at,
        endedAt: s.ended_at ?? s.expires_at,
        channel: s.channel,
        agentRole: s.agent_role,
        agentOrganisation: s.facility ?? (s.agent_role === 'program_operator' ? programme : null),
        note: s.note,
      })),
      account: { email: account.email, locale: account.locale, createdAt: account.created_at },
      family,
      children: kids.map((k) => {
        const v = opened.get(k.id)!;
        return {
          id: k.id,
          reference: k.reference,
          firstName: required(v.first_name, 'first name'),
          lastName: required(v.last_name, 'last name'),
          birthDate: required(v.birth_date, 'birth date'),
          nirecMasked: maskNirec(v.nirec ?? null),
          desiredEntryDate: k.desired_entry_date,
          daysOfCare: k.days_of_care,
          inSubsidisedCare: k.in_subsidised_care,
          createdAt: k.created_at,
          deletedAt: k.deleted_at,
          applications: apps.get(k.id) ?? [],
          offers: offers
            .filter((o) => o.child_id === k.id)
            .map((o) => ({ id: o.id, facilityId: o.facility_id, facilityName: o.name, municipality: o.municipality, ageGroup: o.age_group, status: o.status, source: o.source, offeredAt: o.offered_at, deadline: o.deadline, answeredAt: o.answered_at, startDate: o.start_date })),
          allocations: rounds
            .filter((r) => r.child_id === k.id)
            .map((r) => ({
              runId: r.run_id,
              runAt: new Date(r.started_at),
              ageGroup: r.age_group,
              desiredEntryDate: r.desired_entry_date,
              choices: r.facility_by_choice.map((fid, i) => ({ facilityId: fid, facilityName: roundFacilities.get(fid) ?? '—', category: Number(r.category_by_choice[i]) })),
              placedChoice: r.placed_choice === null ? null : Number(r.placed_choice),
            })),
          history: versions
            .filter((r) => r.child_id === k.id)
            .map((r) => {
              const s = snaps.get(r.id);
              return {
                version: r.version,
                change: r.change,
                changedFields: r.changed_fields,
                changedAt: r.created_at,
                changedBy: r.actor_account_id === null ? null : r.actor_account_id === ctx.actor!.accountId ? ('you' as const) : ('someone_else' as const),
                content: s ? { firstName: s.firstName, lastName: s.lastName, birthDate: s.birthDate, nirecMasked: maskNirec(s.nirec), desiredEntryDate: s.desiredEntryDate, daysOfCare: s.daysOfCare, inSubsidisedCare: s.inSubsidisedCare } : null,
              };
            }),
          applicationDetails: appDetails.filter((a) => a.child_id === k.id).map((a) => ({ id: a.id, siblingAttending: a.sibling_attending, parentIsStaff: a.parent_is_staff, priorities: [...a.priorities] })),
          confirmation: { confirmedAt: k.confirmed_at, remindedAt: k.reminded_at, inactiveSince: k.inactive_since, seniorityFrom: k.seniority_from },
        };
      }),
    };
  });
}

/* --------------------------------------------------------------- retention */

/** What is in clear about a live file the retention rules could make due: its birth month and its last activity. */
export interface RetentionCandidate {
  childId: string;
  familyId: string;
  reference: string;
  /** The first day of the birth month (null on a file that has none in clear). */
  birthMonth: string | null;
  lastActivity: Date;
}

export interface RetentionFiles {
  candidates: RetentionCandidate[];
  /** The birth dates opened: those `choose` asked for. */
  birthDates: Map<string, string>;
}

/**
 * The live files that the retention rules could make due by `dueBy`, with
 * what is in clear about them, and the birth dates of those `choose` picks
 * from them. Opening a birth date is a read like any other, recorded with
 * the files and families it touched (purpose 'retention.schedule'): by the
 * retention job (no actor: the server's own work) or by a programme operator
 * looking at what comes next (retention.preview). Files merely listed are not
 * opened and not named: their reference, birth month and last activity are
 * what every ranking reads in clear.
 *
 * The candidates are chosen by what is in clear: the birth month (its first
 * day, so the school-age date it gives is never later than the birth date's)
 * and the last activity. Opening every live file instead cost, at 300,000
 * files, 21 s and an audit event of 12 MB naming every family — which then
 * weighed on each parent's « qui a consulté » page; opening every candidate,
 * 4–9 s when tens of thousands were due at once. The caller opens only those
 * whose date or rule the month leaves open (src/privacy/retention.ts).
 */
export async function readRetentionFiles(
  deps: Deps,
  ctx: Ctx,
  action: 'retention.preview' | 'retention.run',
  dueBy: string,
  choose: (candidates: readonly RetentionCandidate[]) => Iterable<string>,
  system?: AuditOrigin,
): Promise<RetentionFiles> {
  return run(deps, ctx, action, async (trx, env) => {
    if (ctx.actor) {
      const d = decide(ctx.actor, 'retention.preview', { type: 'tenant' }, ctx.now);
      if (!d.allowed) deny(ctx, action, 'tenant', 'retention', d.reason ?? 'denied', d, new AppError('forbidden'));
    } else if (!system || !system.actorRoles.some((r) => r.startsWith('system:'))) {
      deny(ctx, action, 'tenant', 'retention', 'not_signed_in', undefined, new AppError('signInRequired'));
    }
    const r = ctx.tenant.rules.retention;
    // School age: birth month + the rule's months ≤ dueBy exactly when the birth month ≤ dueBy − those months.
    const schoolBy = addMonths(dueBy, -(12 * r.schoolAgeYears + r.afterSchoolAgeMonths));
    // Inactivity: a month added to the last active day can land up to three days early (31 January → 28
    // February), so the files last active up to four days after dueBy − the rule's months may be due.
    const idleSince = new Date(Date.parse(`${addMonths(dueBy, -r.inactiveFileMonths)}T00:00:00Z`) + 4 * 86_400_000);
    // The files the clear columns of the row could make due, read by one scan; then each one's latest application,
    // once, both for its last activity and to drop those an application keeps active. (A correlated NOT EXISTS
    // beside the select list's max() read the applications twice a file, and led the planner to walk the
    // tenant's index over every file: 1.0–1.5 s against 0.5 s at 300,000 files.) The estimates of such a scan
    // are high enough to have PostgreSQL compile it first (JIT), which costs more than it saves here.
    await sql`SET LOCAL jit = off`.execute(trx);
    const rows = await trx
      .selectFrom((eb) =>
        eb
          .selectFrom('children')
          .select(['id', 'family_id', 'reference', 'birth_month', 'birth_date_enc', 'updated_at', 'created_at'])
          .where('deleted_at', 'is', null)
          .where('purged_at', 'is', null)
          .where((w) => w.or([w('birth_month', 'is', null), w('birth_month', '<=', schoolBy), w('updated_at', '<', idleSince)]))
          // A fence: the latest application is looked up only for the rows this scan keeps.
          .offset(0)
          .as('c'),
      )
      .innerJoinLateral(
        (eb) => eb.selectFrom('applications as a').select(sql<Date | null>`max(a.updated_at)`.as('last_application')).whereRef('a.child_id', '=', 'c.id').as('la'),
        (join) => join.onTrue(),
      )
      .select(['c.id', 'c.family_id', 'c.reference', 'c.birth_month', 'c.birth_date_enc', 'c.updated_at', 'la.last_application'])
      .where((w) => w.or([w('c.birth_month', 'is', null), w('c.birth_month', '<=', schoolBy), w('la.last_application', 'is', null), w('la.last_application', '<', idleSince)]))
      .orderBy('c.created_at')
      .execute();
    const candidates: RetentionCandidate[] = rows.map((r) => {
      const la = r.last_application ? new Date(r.last_application as unknown as string) : null;
      return {
        childId: r.id,
        familyId: r.family_id,
        reference: r.reference,
        birthMonth: r.birth_month,
        lastActivity: la && la > r.updated_at ? la : r.updated_at,
      };
    });
    const wanted = new Set(choose(candidates));
    const open = rows.filter((r) => wanted.has(r.id));
    if (!open.length) return { candidates, birthDates: new Map() };
    await appendAudit(
      trx,
      ctx.tenant.id,
      {
        action,
        outcome: 'success',
        ...originFields(system && !ctx.actor ? system : originOf(ctx)),
        targetType: 'child',
        targetIds: open.map((r) => r.id),
        familyIds: [...new Set(open.map((r) => r.family_id))],
        fields: ['birth_date'],
        purpose: 'retention.schedule',
        details: withSession(ctx, { files: open.length, candidates: rows.length }),
      },
      ctx.now,
    );
    const births = await openChildren(env, ctx.tenant.id, open, ['birth_date']);
    return { candidates, birthDates: new Map(open.map((r) => [r.id, required(births.get(r.id)!.birth_date, 'birth date')])) };
  });
}

/**
 * Deletes files softly for a reason that is not a person's request: the
 * retention rules (the server's work), or a parent's request to delete the
 * family's data. Registrations are withdrawn; each file gets a version and
 * an audit event naming the rule, and is purged deletedFileRetentionDays
 * later like any deleted file.
 */
export async function retireChildFiles(deps: Deps, ctx: Ctx, childIds: readonly string[], reason: string, system?: AuditOrigin): Promise<number> {
  const action = 'waitlist.childFile.delete';
  let n = 0;
  for (const childId of childIds) {
    if (!UUID.test(childId)) continue;
    const done = await run(deps, ctx, action, async (trx, env) => {
      const c = await trx
        .selectFrom('children as c')
        .innerJoin('families as f', 'f.id', 'c.family_id')
        .select(CHILD_COLUMNS)
        .select(['f.account_id as owner_account_id', 'f.key_version'])
        .where('c.id', '=', childId)
        .where('c.deleted_at', 'is', null)
        .where('c.purged_at', 'is', null)
        .forNoKeyUpdate()
        .executeTakeFirst();
      if (!c) return false;
      await lockChildOffers(trx, c.id);
      if (ctx.actor) check(ctx, 'privacy.deletion.request', c.owner_account_id, 'child', childId);
      else if (!system || !system.actorRoles.some((r) => r.startsWith('system:'))) deny(ctx, action, 'child', childId, 'not_signed_in', undefined, new AppError('signInRequired'));
      const key = await env.familyKey(ctx.tenant.id, c.family_id, c.key_version);
      const v = (await openChild(env, ctx.tenant.id, c, ['first_name', 'last_name', 'birth_date', 'nirec'])) as ChildValues;
      const withdrawn = await trx.updateTable('applications').set({ status: 'withdrawn', updated_at: ctx.now }).where('child_id', '=', c.id).where('status', '=', 'active').returning('id').execute();
      await trx.updateTable('children').set({ deleted_at: ctx.now, deleted_by: ctx.actor?.accountId ?? null }).where('id', '=', c.id).execute();
      await recordVersion(trx, ctx, env, key, c.id, 'delete', ['deleted_at'], snapshotOf(c, v, true));
      const purgeAfter = new Date(ctx.now.getTime() + ctx.tenant.rules.deletedFileRetentionDays * 86_400_000);
      await appendAudit(
        trx,
        ctx.tenant.id,
        {
          action,
          outcome: 'success',
          ...originFields(system && !ctx.actor ? system : originOf(ctx)),
          targetType: 'child',
          targetIds: [c.id, ...withdrawn.map((a) => a.id)],
          familyIds: [c.family_id],
          fields: withdrawn.length ? ['deleted_at', 'applications'] : ['deleted_at'],
          purpose: reason === 'parent_request' ? 'parent.family.deletion' : 'retention.purge',
          details: withSession(ctx, { reason, withdrawn: withdrawn.length, retentionDays: ctx.tenant.rules.deletedFileRetentionDays, purgeAfter: purgeAfter.toISOString() }),
        },
        ctx.now,
      );
      await cancelPendingOffers(trx, env, ctx, c.id, { reason: reason === 'parent_request' ? 'deletion_request' : 'file_deleted', system });
      return true;
    });
    if (done) n++;
  }
  return n;
}
