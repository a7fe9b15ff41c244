/**
 * Rows written before migration 0006 hold their personal fields in clear, in
 * the legacy_* columns. The first time a process touches a tenant, this
 * encrypts them (a family key each, the NIREC's blind index, a first version
 * of each file's history) and empties the clear columns, in small batches
 * that other processes skip (FOR UPDATE SKIP LOCKED). Files written before
 * migration 0019 have no clear birth month, which age groups, ranks and the
 * allocation read instead of the birth date: the same first use opens each
 * such birth date once and stores its month. Every batch is an audit event in
 * its own transaction naming the families whose fields it read, so no later
 * computation opens those birth dates unrecorded. The check costs three
 * indexed queries per tenant and process once nothing is left.
 */
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import { appendAudit } from '../audit/log.ts';
import { envelopeFor } from '../crypto/envelope.ts';
import type { KeyProvider } from '../crypto/keys.ts';
import type { DB } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import { birthMonth, openChildren, sealChild, sealFamily, sealSnapshot } from './fields.ts';

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

/** What one batch read, on the record in the batch's own transaction. */
function batchEvent(trx: Parameters<typeof appendAudit>[0], tenantId: string, now: Date, e: { action: 'records.legacy.encrypt' | 'records.legacy.birthMonth'; targetType: 'family' | 'child'; targetIds: string[]; familyIds: string[]; fields: string[]; details: Record<string, number> }) {
  return appendAudit(trx, tenantId, { ...e, familyIds: [...new Set(e.familyIds)], outcome: 'success', actorRoles: ['system:records'], purpose: 'system.records' }, now);
}

export async function encryptLegacyRows(db: Kysely<DB>, keys: KeyProvider, tenantId: string, now: Date): Promise<{ families: number; children: number; birthMonths: number }> {
  const env = envelopeFor(keys);
  let families = 0;
  let children = 0;
  let birthMonths = 0;
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
      const ids = rows.map((r) => r.id);
      await batchEvent(trx, tenantId, now, { action: 'records.legacy.encrypt', targetType: 'family', targetIds: ids, familyIds: ids, fields: ['parent_first_name', 'parent_last_name', 'phone', 'postal_code'], details: { families: rows.length } });
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
            birth_month: birthMonth(r.legacy_birth_date),
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
      await batchEvent(trx, tenantId, now, { action: 'records.legacy.encrypt', targetType: 'child', targetIds: rows.map((r) => r.id), familyIds: rows.map((r) => r.family_id), fields: ['first_name', 'last_name', 'birth_date', 'nirec'], details: { children: rows.length } });
      return rows.length;
    });
    children += n;
    if (n < BATCH) break;
  }
  // Encrypted files without a clear birth month: their birth dates opened once, here, on the record. In id order,
  // once through: a date that gives no month (an empty legacy one) or does not open stays as it was, and the
  // computations open it as before rather than the tenant's every read failing here.
  for (let after = '00000000-0000-0000-0000-000000000000'; ; ) {
    const n = await inTenant(db, tenantId, async (trx) => {
      const rows = await trx
        .selectFrom('children')
        .select(['id', 'family_id', 'birth_date_enc'])
        .where('tenant_id', '=', tenantId)
        .where('birth_month', 'is', null)
        .where('birth_date_enc', 'is not', null)
        .where('purged_at', 'is', null)
        .where('id', '>', after)
        .orderBy('id')
        .limit(BATCH)
        .forUpdate()
        .skipLocked()
        .execute();
      if (!rows.length) return 0;
      after = rows[rows.length - 1]!.id;
      let opened: Map<string, { birth_date?: string | null }>;
      try {
        opened = await openChildren(env, tenantId, rows, ['birth_date']);
      } catch {
        opened = new Map();
        for (const r of rows) {
          const one = await openChildren(env, tenantId, [r], ['birth_date']).catch(() => null);
          if (one) opened.set(r.id, one.get(r.id)!);
        }
      }
      const read = rows.filter((r) => opened.has(r.id));
      for (const r of read) {
        const month = birthMonth(opened.get(r.id)!.birth_date ?? null);
        if (month) await trx.updateTable('children').set({ birth_month: month }).where('id', '=', r.id).execute();
      }
      if (read.length) {
        await batchEvent(trx, tenantId, now, { action: 'records.legacy.birthMonth', targetType: 'child', targetIds: read.map((r) => r.id), familyIds: read.map((r) => r.family_id), fields: ['birth_date'], details: { children: read.length } });
      }
      birthMonths += read.length;
      return rows.length;
    });
    if (n < BATCH) break;
  }
  return { families, children, birthMonths };
}
