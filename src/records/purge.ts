/**
 * The end of a deleted file: once the tenant's retention window
 * (rules.deletedFileRetentionDays) has passed since a child file was deleted,
 * its data is destroyed by destroying the key that encrypts it
 * (crypto-shredding). The key lives only in the keyring, never in the data
 * database or its backups (src/crypto/README.md), so every copy of the
 * family's ciphertexts, wherever it lies, becomes unreadable.
 *
 * Keys are per family. When every file of the family is gone, the family's
 * key is destroyed. When a family still has other files, it is *re-keyed*
 * first: a new version of its key, the surviving rows (family, other
 * children, their history) re-encrypted under it, the purged file's rows
 * emptied, and then the old version destroyed — so the purged child's
 * ciphertexts in backups are unreadable too. (The cost, written down in the
 * README: a backup older than a re-key cannot read the family's other files
 * either; the live database can.)
 *
 * Order, for a crash at any point: the data transaction commits first and
 * records which key versions are to be destroyed (families.key_destroy_pending);
 * the keyring destroys them; the mark is cleared. A later run finishes what a
 * crash left. The live rows are emptied too (no ciphertext, no blind index).
 *
 * Some free text typed about the family is not under its key: the note an
 * agent wrote while assisting the parent, why a file was marked protected,
 * the reason given to open it. The same transaction empties it
 * (eraseFreeText, below, says why emptying rather than encrypting).
 */
import type { Kysely, Selectable } from 'kysely';
import { appendAudit } from '../audit/log.ts';
import type { AuditOrigin } from '../audit/events.ts';
import { envelopeFor, type Envelope, type FamilyKey } from '../crypto/envelope.ts';
import type { KeyProvider } from '../crypto/keys.ts';
import type { Trx } from '../db/connection.ts';
import type { ChildrenTable, DB, FamiliesTable } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import type { Tenant } from '../tenants/service.ts';
import { originFields } from '../tenants/service.ts';
import { CHILD_FIELDS, FAMILY_FIELDS, openCells, sealChild, sealFamily, sealSnapshot, type ChildSnapshot, type ChildValues, type FamilyValues } from './fields.ts';

export interface PurgeResult {
  /** Families whose key was destroyed: nothing of them can be read any more. */
  familiesPurged: number;
  /** Child files purged (in those families and in re-keyed ones). */
  filesPurged: number;
  /** Families re-keyed because they keep other files. */
  familiesRekeyed: number;
  /** Key versions destroyed in the keyring (this run, including ones a crash had left). */
  keysDestroyed: number;
}

const DAY = 86_400_000;

export async function purgeExpired(db: Kysely<DB>, keys: KeyProvider, tenant: Tenant, origin: AuditOrigin, now: Date): Promise<PurgeResult> {
  const env = envelopeFor(keys);
  const result: PurgeResult = { familiesPurged: 0, filesPurged: 0, familiesRekeyed: 0, keysDestroyed: 0 };
  result.keysDestroyed += await finishKeyDestruction(db, env, tenant.id, now);
  const cutoff = new Date(now.getTime() - tenant.rules.deletedFileRetentionDays * DAY);
  const families = await inTenant(db, tenant.id, async (trx) =>
    (
      await trx
        .selectFrom('children')
        .select('family_id')
        .distinct()
        .where('deleted_at', '<', cutoff)
        .where('purged_at', 'is', null)
        .execute()
    ).map((r) => r.family_id),
  );
  for (const familyId of families) {
    const r = await purgeFamily(db, env, tenant, familyId, cutoff, origin, now);
    result.filesPurged += r.files;
    if (r.kind === 'family') result.familiesPurged++;
    if (r.kind === 'rekey') result.familiesRekeyed++;
  }
  result.keysDestroyed += await finishKeyDestruction(db, env, tenant.id, now);
  return result;
}

/** Destroys in the keyring the key versions that committed purges marked, then clears the marks. */
async function finishKeyDestruction(db: Kysely<DB>, env: Envelope, tenantId: string, now: Date): Promise<number> {
  const pending = await inTenant(db, tenantId, (trx) => trx.selectFrom('families').select(['id', 'key_destroy_pending']).where('key_destroy_pending', 'is not', null).execute());
  let n = 0;
  for (const p of pending) {
    n += await env.destroyFamilyKeys(tenantId, p.id, p.key_destroy_pending!, now);
    await inTenant(db, tenantId, (trx) => trx.updateTable('families').set({ key_destroy_pending: null }).where('id', '=', p.id).where('key_destroy_pending', '=', p.key_destroy_pending).execute());
  }
  return n;
}

async function purgeFamily(db: Kysely<DB>, env: Envelope, tenant: Tenant, familyId: string, cutoff: Date, origin: AuditOrigin, now: Date): Promise<{ kind: 'family' | 'rekey' | 'none'; files: number }> {
  const tenantId = tenant.id;
  // Which kind of purge, and — for a re-key — the new key, made in the keyring before the data transaction.
  const plan = await inTenant(db, tenantId, async (trx) => {
    const fam = await trx.selectFrom('families').select(['key_version', 'purged_at']).where('id', '=', familyId).executeTakeFirst();
    const kids = await trx.selectFrom('children').select(['id', 'deleted_at']).where('family_id', '=', familyId).where('purged_at', 'is', null).execute();
    return { fam, kids };
  });
  if (!plan.fam || plan.fam.purged_at) return { kind: 'none', files: 0 };
  const expired = plan.kids.filter((k) => k.deleted_at && k.deleted_at < cutoff).map((k) => k.id);
  if (!expired.length) return { kind: 'none', files: 0 };
  const survivors = plan.kids.length - expired.length;
  const oldVersion = plan.fam.key_version;
  const newKey = survivors ? (await env.createFamilyKeys(tenantId, [{ familyId, version: oldVersion + 1 }])).get(`${familyId}/${oldVersion + 1}`)! : null;

  const done = await inTenant(db, tenantId, async (trx) => {
    const fam = await trx.selectFrom('families').selectAll().where('id', '=', familyId).forUpdate().executeTakeFirst();
    // Changed since the plan (another purge ran): leave it to the next run.
    if (!fam || fam.purged_at || fam.key_version !== oldVersion) return null;
    const kids = await trx.selectFrom('children').selectAll().where('family_id', '=', familyId).where('purged_at', 'is', null).forNoKeyUpdate().execute();
    const gone = kids.filter((k) => k.deleted_at && k.deleted_at < cutoff);
    const keep = kids.filter((k) => !(k.deleted_at && k.deleted_at < cutoff));
    if (!gone.length) return null;
    if ((keep.length > 0) !== !!newKey) return null;
    const goneIds = gone.map((k) => k.id);
    await emptyChildren(trx, goneIds, now);
    const erased = await eraseFreeText(trx, goneIds, fam.account_id);
    if (newKey) {
      await rekey(trx, env, tenantId, fam, keep, newKey);
      await trx.updateTable('families').set({ key_version: newKey.version, key_destroy_pending: oldVersion }).where('id', '=', familyId).execute();
    } else {
      await trx
        .updateTable('families')
        .set({ parent_first_name_enc: null, parent_last_name_enc: null, phone_enc: null, postal_code_enc: null, purged_at: now, key_destroy_pending: oldVersion })
        .where('id', '=', familyId)
        .execute();
    }
    await appendAudit(
      trx,
      tenantId,
      {
        action: newKey ? 'records.childFile.purge' : 'records.family.purge',
        outcome: 'success',
        ...originFields(origin),
        targetType: 'child',
        targetIds: goneIds,
        familyIds: [familyId],
        details: { files: goneIds.length, retentionDays: tenant.rules.deletedFileRetentionDays, keyVersionDestroyed: oldVersion, ...(newKey ? { rekeyedTo: newKey.version } : {}), ...erased },
      },
      now,
    );
    return { kind: newKey ? ('rekey' as const) : ('family' as const), files: goneIds.length };
  });
  return done ?? { kind: 'none', files: 0 };
}

/** A purged file keeps its row (ids, reference, dates) and nothing personal: no ciphertext, no index, no history content. */
async function emptyChildren(trx: Trx, childIds: string[], now: Date): Promise<void> {
  if (!childIds.length) return;
  await trx
    .updateTable('children')
    .set({ first_name_enc: null, last_name_enc: null, birth_date_enc: null, nirec_enc: null, nirec_index: null, purged_at: now })
    .where('id', 'in', childIds)
    .execute();
  await trx.updateTable('child_file_versions').set({ snapshot_enc: null, purged_at: now }).where('child_id', 'in', childIds).where('purged_at', 'is', null).execute();
  // An open restore request stays as it was: it can no longer be approved (the file is not restorable).
}

/**
 * The free text people typed about the family that lies in clear beside its
 * ciphertexts, emptied with the files: why each purged file was marked
 * protected and every reason given to open it (the openings stay: who, when,
 * which file, the alert — what the security officers need; the review says
 * the reason was erased with the file), and the notes agents wrote while
 * assisting the parent. A note belongs to the parent, not to one file, and
 * says what the family asked for (any of its children, by name perhaps), so
 * any purge in the family takes all of the parent's notes; nothing reads
 * them once written.
 *
 * Emptied rather than encrypted under the family's key. A note is written
 * against the parent's account, before the family may have any file or key;
 * the officers' review would have to unwrap a family key for every opening
 * it lists (a read of personal data in its own right); and the re-key above
 * would have to carry each text over. The price (src/crypto/README.md): a
 * data backup taken before the purge keeps these texts, encrypted at rest
 * but not shredded, until it is discarded.
 *
 * The alert an opening raised keeps no copy of its reason
 * (src/detection/protected.ts): there is one place to empty.
 */
export async function eraseFreeText(trx: Trx, childIds: readonly string[], parentAccountId: string | null): Promise<{ reasonsErased: number; notesErased: number }> {
  let reasonsErased = 0;
  if (childIds.length) {
    const marks = await trx.updateTable('protected_files').set({ reason: null }).where('child_id', 'in', [...childIds]).where('reason', 'is not', null).returning('id').execute();
    const openings = await trx.updateTable('protected_file_openings').set({ reason: null }).where('child_id', 'in', [...childIds]).where('reason', 'is not', null).returning('id').execute();
    reasonsErased = marks.length + openings.length;
  }
  const notesErased = parentAccountId ? await eraseAssistedNotes(trx, parentAccountId) : 0;
  return { reasonsErased, notesErased };
}

/** Empties the notes agents wrote while assisting this parent (at a purge in their family, or when their account is closed). */
export async function eraseAssistedNotes(trx: Trx, parentAccountId: string): Promise<number> {
  const rows = await trx.updateTable('assisted_sessions').set({ note: '' }).where('parent_account_id', '=', parentAccountId).where('note', '<>', '').returning('id').execute();
  return rows.length;
}

/** Re-encrypts what the family keeps under its new key. */
async function rekey(trx: Trx, env: Envelope, tenantId: string, fam: Selectable<FamiliesTable>, keep: Selectable<ChildrenTable>[], newKey: FamilyKey): Promise<void> {
  const familyId = fam.id;
  // The family's own fields.
  const famCells = FAMILY_FIELDS.map((f) => ({ rowId: familyId, familyId, column: f, blob: fam[`${f}_enc`]! }));
  const famOpen = await openCells(env, tenantId, 'families', famCells);
  const famValues = Object.fromEntries(FAMILY_FIELDS.map((f) => [f, famOpen.get(`${familyId}/${f}`) ?? null])) as FamilyValues;
  await trx.updateTable('families').set(sealFamily(env, newKey, familyId, famValues)).where('id', '=', familyId).execute();
  // The children it keeps, and their history.
  for (const k of keep) {
    const id = k.id;
    const cells = CHILD_FIELDS.map((f) => ({ rowId: id, familyId, column: f, blob: k[`${f}_enc`]! }));
    const opened = await openCells(env, tenantId, 'children', cells);
    const values = Object.fromEntries(CHILD_FIELDS.map((f) => [f, opened.get(`${id}/${f}`) ?? null])) as ChildValues;
    await trx.updateTable('children').set(sealChild(env, newKey, id, values)).where('id', '=', id).execute();
    const versions = await trx.selectFrom('child_file_versions').select(['id', 'snapshot_enc']).where('child_id', '=', id).where('purged_at', 'is', null).execute();
    const snaps = await openCells(
      env,
      tenantId,
      'child_file_versions',
      versions.map((v) => ({ rowId: v.id, familyId, column: 'snapshot', blob: v.snapshot_enc! })),
    );
    for (const v of versions) {
      const s = JSON.parse(snaps.get(`${v.id}/snapshot`) ?? '{}') as ChildSnapshot;
      await trx.updateTable('child_file_versions').set({ snapshot_enc: sealSnapshot(env, newKey, v.id, s) }).where('id', '=', v.id).execute();
    }
  }
}
