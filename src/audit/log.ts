import { createHash, randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { Trx } from '../db/connection.ts';
import { WRITE_HELD_UNTIL_NEXT } from '../db/held-begin.ts';
import type { DB } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import type { AuditEventInput } from './events.ts';
import { verifyTenant } from './verify.ts';

export const GENESIS_HASH = Buffer.alloc(32);

/** The stored form of an event. */
export interface SealedEvent {
  tenant_id: string;
  seq: string;
  id: string;
  occurred_at: Date;
  action: string;
  outcome: 'success' | 'denied' | 'failure';
  actor_account_id: string | null;
  actor_roles: string[];
  on_behalf_of: string | null;
  target_type: string | null;
  target_ids: string[];
  family_ids: string[];
  fields: string[];
  purpose: string | null;
  ip: string | null;
  user_agent: string | null;
  request_id: string | null;
  details: Record<string, unknown>;
}

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value && typeof value === 'object' && !(value instanceof Date)) {
    return Object.fromEntries(
      Object.keys(value as Record<string, unknown>)
        .sort()
        .map((k) => [k, canonical((value as Record<string, unknown>)[k])]),
    );
  }
  return value;
}

/**
 * The bytes the pre-0004 hash chain was computed over (prev_hash/hash of the
 * events written before the Merkle tree). The tree's leaves use the entry
 * built by store.ts instead; this stays for reading those old links.
 */
export function eventBytes(e: SealedEvent): Buffer {
  return Buffer.from(
    JSON.stringify([
      e.tenant_id,
      String(e.seq),
      e.id,
      e.occurred_at.toISOString(),
      e.action,
      e.outcome,
      e.actor_account_id,
      e.actor_roles,
      e.on_behalf_of,
      e.target_type,
      e.target_ids,
      e.family_ids,
      e.fields,
      e.purpose,
      e.ip,
      e.user_agent,
      e.request_id,
      canonical(e.details),
    ]),
    'utf8',
  );
}

/** A link of the pre-0004 hash chain. */
export function chainHash(prev: Buffer, e: SealedEvent): Buffer {
  return createHash('sha256').update(prev).update(eventBytes(e)).digest();
}

function toRow(tenantId: string, input: AuditEventInput, now: Date) {
  return {
    tenant_id: tenantId,
    id: randomUUID(),
    occurred_at: new Date(Math.floor(now.getTime())),
    action: input.action,
    outcome: input.outcome,
    actor_account_id: input.actorAccountId ?? null,
    actor_roles: [...(input.actorRoles ?? [])],
    on_behalf_of: input.onBehalfOf ?? null,
    target_type: input.targetType ?? null,
    target_ids: [...(input.targetIds ?? [])],
    family_ids: [...(input.familyIds ?? [])],
    fields: [...(input.fields ?? [])],
    purpose: input.purpose ?? null,
    ip: input.ip ?? null,
    user_agent: input.userAgent ? input.userAgent.slice(0, 512) : null,
    request_id: input.requestId ?? null,
    details: input.details ?? {},
  };
}

/**
 * Appends one event inside the caller's transaction, so that it commits with
 * the work it describes, or not at all. No lock is taken: the database stamps
 * the row with its transaction id and a number, and the sealer
 * (src/audit/sealer.ts) puts it into the tenant's Merkle tree once that
 * transaction has ended, in the order described in migration 0004. Concurrent
 * writers, of one tenant or many, never wait for one another here.
 */
export async function appendAudit(trx: Trx, tenantId: string, input: AuditEventInput, now: Date): Promise<SealedEvent> {
  const row = toRow(tenantId, input, now);
  if (input.outcome === 'denied' && input.requestId) noteRefusalRecorded(tenantId, input.requestId);
  const { seq } = await trx
    .insertInto('audit_events')
    .values({ ...row, details: JSON.stringify(row.details) })
    .returning('seq')
    .executeTakeFirstOrThrow();
  return { ...row, seq: String(seq) };
}

/**
 * appendAudit for a caller that needs nothing back but the event's id (which
 * Guichet makes): on PostgreSQL the INSERT waits for the transaction's next
 * statement or its COMMIT and goes in the same message (src/db/held-begin.ts),
 * one round trip fewer per audited read. It is still written in the caller's
 * transaction, before anything after it runs, and commits with it or not at all.
 */
export async function appendAuditHeld(trx: Trx, tenantId: string, input: AuditEventInput, now: Date): Promise<Omit<SealedEvent, 'seq'>> {
  return (await appendAuditManyHeld(trx, tenantId, [input], now))[0]!;
}

/** Several events held as appendAuditHeld holds one: one INSERT, in this order. */
export async function appendAuditManyHeld(trx: Trx, tenantId: string, inputs: readonly AuditEventInput[], now: Date): Promise<Omit<SealedEvent, 'seq'>[]> {
  if (!inputs.length) return [];
  const rows = inputs.map((i) => toRow(tenantId, i, now));
  for (const i of inputs) if (i.outcome === 'denied' && i.requestId) noteRefusalRecorded(tenantId, i.requestId);
  await trx
    .insertInto('audit_events')
    .values(rows.map((r) => ({ ...r, details: JSON.stringify(r.details) })))
    .modifyEnd(sql.raw(` ${WRITE_HELD_UNTIL_NEXT}`))
    .execute();
  return rows;
}

/** Several events in one statement (one round trip), in this order. */
export async function appendAuditMany(trx: Trx, tenantId: string, inputs: readonly AuditEventInput[], now: Date): Promise<SealedEvent[]> {
  if (!inputs.length) return [];
  const rows = inputs.map((i) => toRow(tenantId, i, now));
  for (const i of inputs) if (i.outcome === 'denied' && i.requestId) noteRefusalRecorded(tenantId, i.requestId);
  const stamped = await trx
    .insertInto('audit_events')
    .values(rows.map((r) => ({ ...r, details: JSON.stringify(r.details) })))
    .returning(['id', 'seq'])
    .execute();
  const seqOf = new Map(stamped.map((s) => [s.id, String(s.seq)]));
  return rows.map((r) => ({ ...r, seq: seqOf.get(r.id)! }));
}

/**
 * Requests (tenant and request id) whose refusal a service has already
 * recorded, so that the generic record of refused requests on objects
 * (src/web/refusals.ts) does not write a second one. Emptied as each
 * response leaves; bounded in case one never does.
 */
const refusalsRecorded = new Set<string>();

function noteRefusalRecorded(tenantId: string, requestId: string): void {
  if (refusalsRecorded.size > 10_000) refusalsRecorded.clear();
  refusalsRecorded.add(`${tenantId}|${requestId}`);
}

/** Whether a refusal was recorded for this request; forgets it. */
export function takeRefusalRecorded(tenantId: string, requestId: string): boolean {
  return refusalsRecorded.delete(`${tenantId}|${requestId}`);
}

/** For events that must survive the failure of the work they describe (denials). */
export async function appendAuditAlone(db: Kysely<DB>, tenantId: string, input: AuditEventInput, now: Date): Promise<void> {
  await inTenant(db, tenantId, (trx) => appendAudit(trx, tenantId, input, now), input.actorAccountId);
}

/**
 * The pre-0004 chain head. Appends no longer move it; a new tenant still gets
 * one so that its rows look like every other tenant's.
 */
export async function createChainHead(trx: Trx, tenantId: string): Promise<void> {
  await trx.insertInto('audit_heads').values({ tenant_id: tenantId, seq: 0, hash: GENESIS_HASH }).execute();
}

export interface VerifyResult {
  tenantId: string;
  ok: boolean;
  /** Events of the tenant, in the tree or waiting for the sealer. */
  events: number;
  /** The first thing that does not check: the event's seq (or the leaf index when no event is known), and why. */
  firstBad?: { seq: string; id: string | null; problem: string };
}

/**
 * Checks a tenant's log as far as the database alone can tell: every leaf of
 * the tree against the event it was sealed from, the order, the stored
 * subtrees, every signed head's root, and that no event was slipped in behind
 * the sealer. Signatures and the witness's copy need the key and the witness:
 * verifyTenant (verify.ts) with those is what `guichet audit verify` runs.
 */
export async function verifyChain(db: Kysely<DB>, tenantId: string, pageSize = 2000): Promise<VerifyResult> {
  const r = await verifyTenant(db, tenantId, { pageSize });
  const bad = r.firstBad;
  return {
    tenantId,
    ok: r.ok,
    events: r.events,
    ...(bad ? { firstBad: { seq: bad.eventSeq ?? String(bad.leafIndex ?? 0), id: bad.eventId, problem: bad.problem } } : {}),
  };
}
