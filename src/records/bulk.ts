/**
 * Bulk writes of synthetic families, for demonstrations and benchmarks.
 *
 * Personal-data tables are written only from src/records/. The regular paths
 * write one family at a time with an audit event each; seeding thousands of
 * families that way would take minutes and flood the audit log with events
 * about people who do not exist. This module is the one exception, and it
 * refuses anything that does not look synthetic, so it cannot become a quiet
 * side door for loading real people's data.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { envelopeFor } from '../crypto/envelope.ts';
import type { KeyProvider } from '../crypto/keys.ts';
import type { Trx } from '../db/connection.ts';
import { sealChild, sealFamily, sealSnapshot, type ChildCiphertexts } from './fields.ts';

export interface SyntheticApplication {
  facilityId: string;
  siblingAttending: boolean;
  parentIsStaff: boolean;
}

export interface SyntheticChild {
  /** Pseudonymous reference shown to facilities: ^[A-Z0-9-]{6,20}$, unique in the tenant. */
  reference: string;
  firstName: string;
  lastName: string;
  /** YYYY-MM-DD */
  birthDate: string;
  /** YYYY-MM-DD */
  desiredEntryDate: string;
  /** YYYY-MM-DD: when the family registered the child (and applied), on or before today. */
  registeredOn: string;
  /** Monday = 1, Tuesday = 2, Wednesday = 4, Thursday = 8, Friday = 16. */
  daysOfCare: number;
  inSubsidisedCare: boolean;
  /** In order of preference; each facility at most once. */
  applications: SyntheticApplication[];
}

export interface SyntheticFamily {
  /** Lower-case, on the reserved .test top-level domain. */
  email: string;
  locale: 'fr' | 'en';
  parentFirstName: string;
  parentLastName: string;
  phone: string;
  postalCode: string;
  children: SyntheticChild[];
}

export interface BulkInsertResult {
  accounts: number;
  families: number;
  children: number;
  applications: number;
}

/** At most this many rows per INSERT: 1,000 × 16 columns stays well under the 65,535-parameter limit. */
const MAX_ROWS = 1000;

const REFERENCE = /^[A-Z0-9-]{6,20}$/;
const DATE = /^\d{4}-\d{2}-\d{2}$/;
// RFC 2606 reserves .test: mail to it can never reach anyone.
const SYNTHETIC_EMAIL = /^[a-z0-9._+-]+@[a-z0-9.-]+\.test$/;
// NANP keeps 555-0100 to 555-0199 for fiction.
const SYNTHETIC_PHONE = /555-01\d\d$/;

/**
 * Checks everything before the first INSERT, so a bad generator fails with a
 * message naming the family rather than a constraint error halfway through.
 */
function validate(families: SyntheticFamily[]): void {
  const emails = new Set<string>();
  const references = new Set<string>();
  families.forEach((f, i) => {
    const where = `synthetic family #${i} (${f.email})`;
    if (!SYNTHETIC_EMAIL.test(f.email)) throw new Error(`${where}: e-mail must be lower-case on the reserved .test domain`);
    if (emails.has(f.email)) throw new Error(`${where}: e-mail appears twice`);
    emails.add(f.email);
    if (!SYNTHETIC_PHONE.test(f.phone)) throw new Error(`${where}: phone must be in the fictitious 555-01xx range`);
    if (f.children.length === 0) throw new Error(`${where}: a family needs at least one child`);
    for (const c of f.children) {
      if (!REFERENCE.test(c.reference)) throw new Error(`${where}: reference ${c.reference} does not match ${REFERENCE}`);
      if (references.has(c.reference)) throw new Error(`${where}: reference ${c.reference} appears twice`);
      references.add(c.reference);
      if (!DATE.test(c.birthDate) || !DATE.test(c.desiredEntryDate) || !DATE.test(c.registeredOn)) throw new Error(`${where}: dates must be YYYY-MM-DD`);
      if (!Number.isInteger(c.daysOfCare) || c.daysOfCare < 1 || c.daysOfCare > 31) throw new Error(`${where}: days of care must be a Mon..Fri bitmask 1..31`);
      const facilities = new Set(c.applications.map((a) => a.facilityId));
      if (facilities.size !== c.applications.length) throw new Error(`${where}: child ${c.reference} applies twice to one facility`);
    }
  });
}

/**
 * Seeding the same seed twice into a tenant would collide on e-mails (and,
 * far less likely, references). Say so plainly instead of surfacing a unique
 * violation from somewhere in the middle of the batch.
 */
async function assertNoClash(trx: Trx, tenantId: string, families: SyntheticFamily[]): Promise<void> {
  const emails = families.map((f) => f.email);
  const references = families.flatMap((f) => f.children.map((c) => c.reference));
  for (let i = 0; i < emails.length; i += MAX_ROWS) {
    const hit = await trx
      .selectFrom('accounts')
      .select('email')
      .where('tenant_id', '=', tenantId)
      .where('email', 'in', emails.slice(i, i + MAX_ROWS))
      .limit(1)
      .executeTakeFirst();
    if (hit) throw new Error(`synthetic families: the tenant already has an account ${hit.email}; seed with another seed`);
  }
  for (let i = 0; i < references.length; i += MAX_ROWS) {
    const hit = await trx
      .selectFrom('children')
      .select('reference')
      .where('tenant_id', '=', tenantId)
      .where('reference', 'in', references.slice(i, i + MAX_ROWS))
      .limit(1)
      .executeTakeFirst();
    if (hit) throw new Error(`synthetic families: the tenant already has a child with reference ${hit.reference}; seed with another seed`);
  }
}

/**
 * Many rows in one statement as one array per column (INSERT … SELECT FROM
 * unnest): a handful of parameters instead of one per cell, so neither the
 * query builder nor the server spends its time on a 16,000-placeholder
 * statement. Ten applications a child make this the bulk of a scale seed.
 */
async function insertColumns<R extends Record<string, unknown>>(trx: Trx, table: string, columns: readonly (readonly [keyof R & string, string])[], rows: R[]): Promise<void> {
  for (let i = 0; i < rows.length; i += COLUMN_ROWS) {
    const chunk = rows.slice(i, i + COLUMN_ROWS);
    const arrays = columns.map(([name, type]) => sql`${chunk.map((r) => r[name] ?? null)}::${sql.raw(type)}[]`);
    await sql`INSERT INTO ${sql.table(table)} (${sql.join(columns.map(([name]) => sql.ref(name)))}) SELECT * FROM unnest(${sql.join(arrays)})`.execute(trx);
  }
}

const COLUMN_ROWS = 10_000;

const APPLICATION_COLUMNS = [
  ['tenant_id', 'uuid'],
  ['child_id', 'uuid'],
  ['facility_id', 'uuid'],
  ['sibling_attending', 'boolean'],
  ['parent_is_staff', 'boolean'],
  ['status', 'text'],
  ['preference', 'smallint'],
  ['created_at', 'timestamptz'],
  ['updated_at', 'timestamptz'],
] as const;

async function insertChunked<T>(rows: T[], insert: (chunk: T[]) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < rows.length; i += MAX_ROWS) await insert(rows.slice(i, i + MAX_ROWS));
}

/**
 * Writes accounts (verified, no password: nobody can sign in as them until a
 * password is set through the normal path), families, children, the first
 * version of each child file and their applications, inside the caller's
 * tenant transaction. The caller writes the audit event, so it commits with
 * the rows or not at all.
 *
 * Personal fields are encrypted like every other write (src/crypto/envelope.ts):
 * a data key per family, made in the keyring before the rows are written (if
 * the transaction rolls back, those keys are orphans that open nothing).
 *
 * Identifiers are made here rather than returned by the database so that
 * parent and child rows can be linked without relying on the order of
 * RETURNING from a multi-row INSERT, which PostgreSQL does not promise — and
 * because each ciphertext is bound to its row id.
 */
export async function insertSyntheticFamilies(trx: Trx, tenantId: string, families: SyntheticFamily[], now: Date, keys: KeyProvider): Promise<BulkInsertResult> {
  validate(families);
  if (families.length === 0) return { accounts: 0, families: 0, children: 0, applications: 0 };
  await assertNoClash(trx, tenantId, families);

  const env = envelopeFor(keys);
  const familyIds = families.map(() => randomUUID());
  const familyKeys = await env.createFamilyKeys(tenantId, familyIds.map((familyId) => ({ familyId, version: 1 })));

  const accounts = [];
  const familyRows = [];
  const children = [];
  const versions = [];
  const applications = [];
  for (const [i, f] of families.entries()) {
    const accountId = randomUUID();
    const familyId = familyIds[i]!;
    const key = familyKeys.get(`${familyId}/1`)!;
    accounts.push({
      id: accountId,
      tenant_id: tenantId,
      email: f.email,
      email_verified_at: now,
      password_hash: null,
      locale: f.locale,
      created_at: now,
    });
    familyRows.push({
      id: familyId,
      tenant_id: tenantId,
      account_id: accountId,
      ...sealFamily(env, key, familyId, { parent_first_name: f.parentFirstName, parent_last_name: f.parentLastName, phone: f.phone, postal_code: f.postalCode }),
      key_version: 1,
      created_at: now,
      updated_at: now,
    });
    for (const c of f.children) {
      const childId = randomUUID();
      const versionId = randomUUID();
      // Noon, so the calendar day is the same in every Canadian time zone.
      const registeredAt = new Date(`${c.registeredOn}T17:00:00Z`);
      children.push({
        id: childId,
        tenant_id: tenantId,
        family_id: familyId,
        reference: c.reference,
        ...(sealChild(env, key, childId, { first_name: c.firstName, last_name: c.lastName, birth_date: c.birthDate, nirec: null }) as ChildCiphertexts),
        nirec_index: null,
        // The month only, in clear, for the allocation's age group (migration 0020 says why).
        birth_month: `${c.birthDate.slice(0, 7)}-01`,
        desired_entry_date: c.desiredEntryDate,
        days_of_care: c.daysOfCare,
        in_subsidised_care: c.inSubsidisedCare,
        created_at: registeredAt,
        updated_at: registeredAt,
        // Synthetic files count as confirmed when loaded: none falls inactive at the first confirmation pass.
        confirmed_at: now,
      });
      versions.push({
        id: versionId,
        tenant_id: tenantId,
        child_id: childId,
        family_id: familyId,
        version: 1,
        change: 'create' as const,
        changed_fields: [],
        actor_account_id: null,
        created_at: registeredAt,
        snapshot_enc: sealSnapshot(env, key, versionId, {
          reference: c.reference,
          firstName: c.firstName,
          lastName: c.lastName,
          birthDate: c.birthDate,
          nirec: null,
          desiredEntryDate: c.desiredEntryDate,
          daysOfCare: c.daysOfCare,
          inSubsidisedCare: c.inSubsidisedCare,
          deleted: false,
        }),
      });
      for (const [n, a] of c.applications.entries()) {
        applications.push({
          preference: n + 1,
          tenant_id: tenantId,
          child_id: childId,
          facility_id: a.facilityId,
          sibling_attending: a.siblingAttending,
          parent_is_staff: a.parentIsStaff,
          status: 'active' as const,
          created_at: registeredAt,
          updated_at: registeredAt,
        });
      }
    }
  }

  // Parents before children: the foreign keys are checked row by row.
  await insertChunked(accounts, (chunk) => trx.insertInto('accounts').values(chunk).execute());
  await insertChunked(familyRows, (chunk) => trx.insertInto('families').values(chunk).execute());
  await insertChunked(children, (chunk) => trx.insertInto('children').values(chunk).execute());
  await insertChunked(versions, (chunk) => trx.insertInto('child_file_versions').values(chunk).execute());
  await insertColumns(trx, 'applications', APPLICATION_COLUMNS, applications);

  return { accounts: accounts.length, families: familyRows.length, children: children.length, applications: applications.length };
}

/**
 * The facilities with the most active applications, busiest first. Counts
 * only: no person's data leaves. The demo registers its sample child there,
 * so that the staff view it shows is full.
 */
export async function busiestFacilities(trx: Trx, limit: number): Promise<string[]> {
  const rows = await trx
    .selectFrom('applications as a')
    .innerJoin('facilities as f', 'f.id', 'a.facility_id')
    .select(['f.id', sql<string>`count(*)`.as('n')])
    .where('a.status', '=', 'active')
    .groupBy('f.id')
    .orderBy(sql`count(*)`, 'desc')
    .orderBy('f.id')
    .limit(limit)
    .execute();
  return rows.map((r) => r.id);
}
