import { createHash, randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Trx } from '../db/connection.ts';
import type { DB } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import type { AuditEventInput } from './events.ts';

export const GENESIS_HASH = Buffer.alloc(32);

/** The stored form of an event, as hashed. */
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
 * The bytes an event is hashed over: a JSON array in a fixed field order, with
 * object keys sorted (jsonb does not keep key order) and the time in ISO 8601
 * with milliseconds (what timestamptz gives back for a value written in ms).
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

export function chainHash(prev: Buffer, e: SealedEvent): Buffer {
  return createHash('sha256').update(prev).update(eventBytes(e)).digest();
}

/**
 * Appends one event to the tenant's chain inside the caller's transaction, so
 * the event commits with the work it describes, or not at all. The head row
 * is locked until commit: events of a tenant get consecutive sequence numbers
 * in commit order.
 */
export async function appendAudit(trx: Trx, tenantId: string, input: AuditEventInput, now: Date): Promise<SealedEvent> {
  const head = await trx
    .selectFrom('audit_heads')
    .select(['seq', 'hash'])
    .where('tenant_id', '=', tenantId)
    .forUpdate()
    .executeTakeFirst();
  if (!head) throw new Error(`audit: tenant ${tenantId} has no chain head`);
  const event: SealedEvent = {
    tenant_id: tenantId,
    seq: String(BigInt(head.seq) + 1n),
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
  const hash = chainHash(head.hash, event);
  await trx
    .insertInto('audit_events')
    .values({ ...event, details: JSON.stringify(event.details), prev_hash: head.hash, hash })
    .execute();
  await trx.updateTable('audit_heads').set({ seq: event.seq, hash }).where('tenant_id', '=', tenantId).execute();
  return event;
}

/** For events that must survive the failure of the work they describe (denials). */
export async function appendAuditAlone(db: Kysely<DB>, tenantId: string, input: AuditEventInput, now: Date): Promise<void> {
  await inTenant(db, tenantId, (trx) => appendAudit(trx, tenantId, input, now), input.actorAccountId);
}

export async function createChainHead(trx: Trx, tenantId: string): Promise<void> {
  await trx.insertInto('audit_heads').values({ tenant_id: tenantId, seq: 0, hash: GENESIS_HASH }).execute();
}

export interface VerifyResult {
  tenantId: string;
  ok: boolean;
  events: number;
  /** The first event (by sequence) that does not check, and why. */
  firstBad?: { seq: string; id: string | null; problem: string };
}

/**
 * Recomputes a tenant's chain from the first event. Any change, removal,
 * insertion or reordering breaks either the sequence, a prev_hash link or a
 * recomputed hash; removal at the end shows against the head.
 */
export async function verifyChain(db: Kysely<DB>, tenantId: string, pageSize = 2000): Promise<VerifyResult> {
  return inTenant(db, tenantId, async (trx) => {
    const head = await trx.selectFrom('audit_heads').select(['seq', 'hash']).where('tenant_id', '=', tenantId).executeTakeFirst();
    let prev: Buffer = GENESIS_HASH;
    let expected = 1n;
    let after = 0n;
    let count = 0;
    for (;;) {
      const rows = await trx
        .selectFrom('audit_events')
        .selectAll()
        .where('tenant_id', '=', tenantId)
        .where('seq', '>', String(after) as never)
        .orderBy('seq')
        .limit(pageSize)
        .execute();
      for (const r of rows) {
        const seq = BigInt(r.seq);
        const bad = (problem: string): VerifyResult => ({ tenantId, ok: false, events: count, firstBad: { seq: String(seq), id: r.id, problem } });
        if (seq !== expected) return { tenantId, ok: false, events: count, firstBad: { seq: String(expected), id: null, problem: `missing event (next found is ${seq})` } };
        if (!Buffer.from(r.prev_hash).equals(prev)) return bad('prev_hash does not link to the previous event');
        const recomputed = chainHash(prev, { ...r, seq: String(r.seq), details: r.details ?? {} });
        if (!recomputed.equals(Buffer.from(r.hash))) return bad('content does not match its hash');
        prev = recomputed;
        expected = seq + 1n;
        after = seq;
        count++;
      }
      if (rows.length < pageSize) break;
    }
    if (!head) return { tenantId, ok: count === 0, events: count, ...(count ? { firstBad: { seq: '0', id: null, problem: 'chain head missing' } } : {}) };
    if (BigInt(head.seq) !== expected - 1n) {
      // Events missing at the end: the first missing one is bad; events beyond the head: the first of those.
      const firstBadSeq = BigInt(head.seq) < expected - 1n ? BigInt(head.seq) + 1n : expected;
      return { tenantId, ok: false, events: count, firstBad: { seq: String(firstBadSeq), id: null, problem: `head is at ${head.seq} but events end at ${expected - 1n}` } };
    }
    if (!Buffer.from(head.hash).equals(prev)) {
      return { tenantId, ok: false, events: count, firstBad: { seq: String(head.seq), id: null, problem: 'head hash does not match the last event' } };
    }
    return { tenantId, ok: true, events: count };
  });
}
