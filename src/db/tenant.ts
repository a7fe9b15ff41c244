import { sql, type Kysely } from 'kysely';
import type { DB } from './schema.ts';
import type { Trx } from './connection.ts';
import { HELD_UNTIL_NEXT } from './held-begin.ts';

/**
 * The only way the application touches tenant-owned rows: a transaction that
 * drops to the guichet_app role and sets the tenant for row-level security.
 * Both settings are transaction-local and vanish at commit or rollback, so a
 * pooled connection never carries one request's tenant into the next.
 *
 * Under the policies PostgreSQL uses an index only through leakproof
 * operators (pg_proc.proleakproof): equality and ranges on uuids, texts,
 * numbers and dates are; array overlap or containment, jsonb's ->>, LIKE and
 * regular expressions are not, and a condition built on them reads every row
 * of the tenant, however it is indexed (measured as the owner, it looks fine).
 * Look such rows up by a plain column (a generated one if need be: migration
 * 0038) or rows of their own kept by the database (migration 0039). A
 * SECURITY DEFINER function does not escape it: the policies are forced on
 * the tables' owner too, unless that owner is a superuser.
 *
 * A policy names the tenant as (SELECT app_tenant()), computed once a
 * statement: app_tenant() alone is inlined as current_setting(...), which a
 * sequential scan's filter computes for every row (migration 0041).
 */
export async function inTenant<T>(
  db: Kysely<DB>,
  tenantId: string,
  fn: (trx: Trx) => Promise<T>,
  actorAccountId?: string | null,
): Promise<T> {
  return db.transaction().execute(async (trx) => {
    await enterTenant(trx, tenantId, actorAccountId);
    return fn(trx);
  });
}

/** Switches an open transaction to guichet_app and the tenant (for work that began as the owner). */
export async function enterTenant(trx: Trx, tenantId: string, actorAccountId?: string | null): Promise<void> {
  const actor = actorAccountId ?? '';
  if (UUID.test(tenantId) && (actor === '' || UUID.test(actor))) {
    // Literals, not parameters: a statement without parameters whose answer nobody reads can wait and travel with
    // the transaction's BEGIN and its first statement, in one round trip (src/db/held-begin.ts). Only a UUID's
    // characters get here, so quoting is all they need.
    await sql
      .raw(
        `${HELD_UNTIL_NEXT} SELECT pg_catalog.set_config('role', 'guichet_app', true), ` +
          `pg_catalog.set_config('app.tenant_id', '${tenantId}', true), pg_catalog.set_config('app.actor_id', '${actor}', true)`,
      )
      .execute(trx);
    return;
  }
  await sql`SELECT set_config('role', 'guichet_app', true),
                   set_config('app.tenant_id', ${tenantId}, true),
                   set_config('app.actor_id', ${actor}, true)`.execute(trx);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
