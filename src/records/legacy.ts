/**
 * Rows written before migration 0006 hold their personal fields in clear, in
 * the legacy_* columns. The first time a process touches a tenant, this
 * encrypts them (a family key each, the NIREC's blind index, a first version
 * of each file's history) and empties the clear columns, in small batches
 * that other processes skip (FOR UPDATE SKIP LOCKED). The check costs one
 * indexed query per tenant and process once nothing is left.
 */
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import { appendAudit } from '../audit/log.ts';
import { envelopeFor } from '../crypto/envelope.ts';
import type { KeyProvider } from '../crypto/keys.ts';
import type { DB } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import { sealChild, sealFamily, sealSnapshot } from './fields.ts';

const BATCH = 200;
const done = new WeakMap<KeyProvider, Map<string, Promise<void>>>();

/** Encrypts whatever the tenant still holds in clear, once per process (concurrent callers share the work). */
export function ensureTenantEncrypted(db: Kysely<DB>, keys: KeyProvider, tenantId: string, now: Date): Promise<void> {
  let m = done.get(keys);
  if (!m) done.set(keys, (m = new Map()));
  let p = m.get(tenantId);
  if (!p) {
    p = encryptLegacyRows(db, keys, tenantId, now).then(
      () => undefined,
      (err: unknown) => {
        m!.delete(tenantId);
        throw err;
      },
    );
    m.set(tenantId, p);
  }
  return p;
}

export async function encryptLegacyRows(db: Kysely<DB>, keys: KeyProvider, tenantId: string, now: Date): Promise<{ families: number; children: number }> {
  const env = envelopeFor(keys);
  let families = 0;
  let children = 0;
  for (;;) {
    const n = await inTenant(db, tenantId, async (trx) => {
      const rows = await trx
        .selectFrom('families')
        .select(['id', 'key_version', 'legacy_parent_first_name', 'legacy_parent_last_name', 'legacy_phone', 'legacy_postal_code'])
        .where('parent_first_name_enc', 'is', null)
        .where('purged_at', 'is', null)
        .limit(BATCH)
        .forUpdate()
        .skipLocked()
        .execute();
      if (!rows.length) return 0;
      const fks = await env.createFamilyKeys(tenantId, rows.map((r) => ({ familyId: r.id, version: r.key_version })));
      for (const r of rows) {
        const key = fks.get(`${r.id}/${r.key_version}`)!;
        await trx
          .updateTable('families')
          .set({
            ...sealFamily(env, key, r.id, { parent_first_name: r.legacy_parent_first_name, parent_last_name: r.legacy_parent_last_name, phone: r.legacy_phone, postal_code: r.legacy_postal_code }),
            legacy_parent_first_name: null,
            legacy_parent_last_name: null,
            legacy_phone: null,
            legacy_postal_code: null,
          })
          .where('id', '=', r.id)
          .execute();
      }
      return rows.length;
    });
    families += n;
    if (n < BATCH) break;
  }
  for (;;) {
    const n = await inTenant(db, tenantId, async (trx) => {
      const rows = await trx
        .selectFrom('children as c')
        .innerJoin('families as f', 'f.id', 'c.family_id')
        .select(['c.id', 'c.family_id', 'c.reference', 'c.legacy_first_name', 'c.legacy_last_name', 'c.legacy_birth_date', 'c.legacy_nirec', 'c.desired_entry_date', 'c.days_of_care', 'c.in_subsidised_care', 'c.deleted_at', 'f.key_version'])
        .where('c.first_name_enc', 'is', null)
        .where('c.purged_at', 'is', null)
        .limit(BATCH)
        .forUpdate()
        .skipLocked()
        .execute();
      if (!rows.length) return 0;
      const fks = await env.familyKeys(tenantId, rows.map((r) => ({ familyId: r.family_id, version: r.key_version })));
      for (const r of rows) {
        const key = fks.get(`${r.family_id}/${r.key_version}`)!;
        const values = { first_name: r.legacy_first_name ?? '', last_name: r.legacy_last_name ?? '', birth_date: r.legacy_birth_date ?? '', nirec: r.legacy_nirec };
        await trx
          .updateTable('children')
          .set({
            ...sealChild(env, key, r.id, values),
            nirec_index: r.legacy_nirec ? await env.blindIndex(tenantId, 'nirec', r.legacy_nirec) : null,
            legacy_first_name: null,
            legacy_last_name: null,
            legacy_birth_date: null,
            legacy_nirec: null,
          })
          .where('id', '=', r.id)
          .execute();
        const versionId = randomUUID();
        const prior = await trx.selectFrom('child_file_versions').select('id').where('child_id', '=', r.id).executeTakeFirst();
        if (!prior) {
          await trx
            .insertInto('child_file_versions')
            .values({
              id: versionId,
              tenant_id: tenantId,
              child_id: r.id,
              family_id: r.family_id,
              version: 1,
              change: 'legacy',
              changed_fields: [],
              actor_account_id: null,
              created_at: now,
              snapshot_enc: sealSnapshot(env, key, versionId, {
                reference: r.reference,
                firstName: values.first_name,
                lastName: values.last_name,
                birthDate: values.birth_date,
                nirec: values.nirec,
                desiredEntryDate: r.desired_entry_date,
                daysOfCare: r.days_of_care,
                inSubsidisedCare: r.in_subsidised_care,
                deleted: !!r.deleted_at,
              }),
            })
            .execute();
        }
      }
      return rows.length;
    });
    children += n;
    if (n < BATCH) break;
  }
  if (families || children) {
    await inTenant(db, tenantId, (trx) =>
      appendAudit(trx, tenantId, { action: 'records.legacy.encrypt', outcome: 'success', actorRoles: ['system:records'], targetType: 'family', details: { families, children } }, now),
    );
  }
  return { families, children };
}
