/**
 * What the database holds for a child, decrypted with the application's keys:
 * for tests that check what was written, now that personal fields are stored
 * encrypted (migration 0006) and the NIREC only as a blind index.
 */
import type { Kysely } from 'kysely';
import { envelopeFor } from '../../src/crypto/envelope.ts';
import type { KeyProvider } from '../../src/crypto/keys.ts';
import type { DB } from '../../src/db/schema.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { openChild, type ChildValues } from '../../src/records/fields.ts';

export async function storedChild(db: Kysely<DB>, keys: KeyProvider, tenantId: string, childId: string): Promise<ChildValues> {
  const row = await inTenant(db, tenantId, (trx) => trx.selectFrom('children').selectAll().where('id', '=', childId).executeTakeFirstOrThrow());
  return (await openChild(envelopeFor(keys), tenantId, row, ['first_name', 'last_name', 'birth_date', 'nirec'])) as ChildValues;
}

/** The ids of the tenant's children whose NIREC is this one (through its blind index). */
export async function childrenWithNirec(db: Kysely<DB>, keys: KeyProvider, tenantId: string, nirec: string): Promise<string[]> {
  const index = await envelopeFor(keys).blindIndex(tenantId, 'nirec', nirec);
  return (await inTenant(db, tenantId, (trx) => trx.selectFrom('children').select('id').where('nirec_index', '=', index).execute())).map((r) => r.id);
}
