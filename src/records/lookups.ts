import { sql } from 'kysely';
import type { Trx } from '../db/connection.ts';

/**
 * What other modules (detection, privacy, retention) may know of the
 * personal-data tables without opening any personal field: ids, pseudonymous
 * references, which family and account a file belongs to, deletion and purge
 * dates. They read it here, so that every query naming those tables lives
 * under src/records/ (test/records/structure.test.ts) next to the gateway.
 */

/** A child file not purged, with its family: for marking it protected. */
export function liveChildFamily(trx: Trx, childId: string) {
  return trx.selectFrom('children').select(['id', 'family_id']).where('id', '=', childId).where('purged_at', 'is', null).executeTakeFirst();
}

/** The references of these files (within these families, when given). */
export async function childReferences(trx: Trx, childIds: string[], familyIds?: string[]): Promise<Map<string, string>> {
  if (!childIds.length || (familyIds && !familyIds.length)) return new Map();
  let q = trx.selectFrom('children').select(['id', 'reference']).where('id', 'in', childIds);
  if (familyIds) q = q.where('family_id', 'in', familyIds);
  return new Map((await q.execute()).map((k) => [k.id, k.reference]));
}

export async function familyIdsOfAccount(trx: Trx, accountId: string): Promise<string[]> {
  return (await trx.selectFrom('families').select('id').where('account_id', '=', accountId).execute()).map((f) => f.id);
}

/** Every file of these families, purged ones included. */
export function childrenOfFamilies(trx: Trx, familyIds: string[]) {
  return trx.selectFrom('children').select(['id', 'family_id', 'reference']).where('family_id', 'in', familyIds).execute();
}

/**
 * The allocation rounds that read these files, by their events (migration 0047): a real run through its
 * results (a row a child it read) and the event on the run, a dry run through the rows it wrote of the files
 * it read. A sub-query of (tenant_id, seq), index look-ups by file, for a family's access list to join to the log.
 */
export function roundsThatRead(trx: Trx, childIds: readonly string[]) {
  const ids = sql<string>`ANY(${sql.val([...childIds])}::uuid[])`;
  const dry = trx.selectFrom('allocation_reads').select(['tenant_id', 'seq']).where('child_id', '=', ids);
  const real = trx
    .selectFrom('allocation_results as r')
    .innerJoin('allocation_runs as u', 'u.id', 'r.run_id')
    .select(['u.tenant_id', sql<string>`u.audit_seq`.as('seq')])
    .where('r.child_id', '=', ids)
    .where('u.audit_seq', 'is not', null);
  return dry.union(real);
}

/** Which of these files each of these rounds' events read. */
export async function filesReadByRounds(trx: Trx, seqs: readonly string[], childIds: readonly string[]): Promise<{ seq: string; childId: string }[]> {
  if (!seqs.length || !childIds.length) return [];
  const ids = sql<string>`ANY(${sql.val([...childIds])}::uuid[])`;
  const events = sql<string>`ANY(${sql.val([...seqs])}::bigint[])`;
  const rows = await trx
    .selectFrom('allocation_reads')
    .select(['seq', 'child_id'])
    .where('child_id', '=', ids)
    .where('seq', '=', events)
    .union(
      trx
        .selectFrom('allocation_results as r')
        .innerJoin('allocation_runs as u', 'u.id', 'r.run_id')
        .select([sql<string>`u.audit_seq`.as('seq'), 'r.child_id'])
        .where('r.child_id', '=', ids)
        .where('u.audit_seq', '=', events),
    )
    .execute();
  return rows.map((r) => ({ seq: String(r.seq), childId: r.child_id }));
}

/** Files deleted and not yet purged, oldest deletion first. */
export function filesAwaitingPurge(trx: Trx) {
  return trx.selectFrom('children').select(['id', 'reference', 'deleted_at']).where('deleted_at', 'is not', null).where('purged_at', 'is', null).orderBy('deleted_at').execute();
}

/** An account's files not purged (live and deleted), oldest deletion first. */
export function accountChildFiles(trx: Trx, accountId: string) {
  return trx
    .selectFrom('children as c')
    .innerJoin('families as f', 'f.id', 'c.family_id')
    .select(['c.id', 'c.family_id', 'c.reference', 'c.deleted_at'])
    .where('f.account_id', '=', accountId)
    .where('c.purged_at', 'is', null)
    .orderBy('c.deleted_at')
    .execute();
}

/**
 * Accounts with no role and no file left, with their last activity: created,
 * last use of a session, last purge of one of their files.
 */
export async function accountsWithoutLiveChild(trx: Trx): Promise<{ id: string; last: Date }[]> {
  // Every account of the tenant against every file: estimated costly enough for PostgreSQL to compile the plan
  // first (JIT), which took longer than running it (at 260,000 accounts: 750 ms with, 230 ms without).
  await sql`SET LOCAL jit = off`.execute(trx);
  const { rows } = await sql<{ id: string; last: Date }>`
    SELECT a.id,
           greatest(a.created_at,
                    (SELECT max(s.last_seen_at) FROM sessions s WHERE s.account_id = a.id),
                    (SELECT max(c.purged_at) FROM children c JOIN families f ON f.id = c.family_id WHERE f.account_id = a.id)) AS last
      FROM accounts a
     WHERE a.purged_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM memberships m WHERE m.account_id = a.id)
       AND NOT EXISTS (SELECT 1 FROM children c JOIN families f ON f.id = c.family_id WHERE f.account_id = a.id AND c.purged_at IS NULL)
     ORDER BY a.created_at`.execute(trx);
  return rows;
}
