/**
 * The SQL of the audit tree: every function runs inside a tenant transaction
 * (inTenant), so row-level security confines it to that tenant as well.
 */
import { sql, type RawBuilder } from 'kysely';
import type { Trx } from '../db/connection.ts';
import { CompactRange, consistencyPlan, foldPerfect, inclusionPlan, nodeHash, perfectNodes, type PerfectNode, type Range } from './merkle.ts';

/** Interior hashes are stored for perfect subtrees at levels that are multiples of this. */
export const NODE_STRIDE = 4;

export class TreeStoreError extends Error {}

/**
 * The entry of an event: the bytes its leaf hashes (SHA-256(0x00 ‖ entry)),
 * built by the database from the stored columns, so that the sealer, the
 * verifier and the export all read the very same bytes, and verification
 * streams one value per event instead of decoding eighteen. Every function
 * and type is schema-qualified: one shadowing a built-in on the search path
 * cannot change what is hashed. The fields are ENTRY_FIELDS of
 * verify-bundle.ts, in that order, in the event's format (entry_format,
 * migration 0051):
 *
 * - 1, `guichet.audit/v1`: a JSON array, UTF-8, the time as UTC text to the
 *   microsecond whatever the session's time zone;
 * - 2, `guichet.audit/v2`: PostgreSQL's binary record format (record_send)
 *   of the same fields, each cast to its type so that the type OIDs in the
 *   bytes never depend on a column's declaration. Texts are sent in the
 *   connection's encoding: UTF-8 on every connection Guichet opens (the
 *   driver's and PGlite's default), as format 1 is.
 *
 * PostgreSQL 15 and PGlite (17) build both identically (tested).
 */
export function entrySql(alias: string): RawBuilder<Buffer> {
  const e = (c: string) => `${alias}.${c}`;
  const v1 = [
    e('tenant_id'),
    `${e('seq')}::pg_catalog.text`,
    e('id'),
    `pg_catalog.to_char(pg_catalog.timezone('UTC', ${e('occurred_at')}), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`,
    e('action'),
    e('outcome'),
    e('actor_account_id'),
    e('actor_roles'),
    e('on_behalf_of'),
    e('target_type'),
    e('target_ids'),
    e('family_ids'),
    e('fields'),
    e('purpose'),
    e('ip'),
    e('user_agent'),
    e('request_id'),
    e('details'),
  ].join(', ');
  const v2 = [
    `${e('tenant_id')}::pg_catalog.uuid`,
    `${e('seq')}::pg_catalog.int8`,
    `${e('id')}::pg_catalog.uuid`,
    `${e('occurred_at')}::pg_catalog.timestamptz`,
    `${e('action')}::pg_catalog.text`,
    `${e('outcome')}::pg_catalog.text`,
    `${e('actor_account_id')}::pg_catalog.uuid`,
    `${e('actor_roles')}::pg_catalog.text[]`,
    `${e('on_behalf_of')}::pg_catalog.uuid`,
    `${e('target_type')}::pg_catalog.text`,
    `${e('target_ids')}::pg_catalog.text[]`,
    `${e('family_ids')}::pg_catalog.uuid[]`,
    `${e('fields')}::pg_catalog.text[]`,
    `${e('purpose')}::pg_catalog.text`,
    `${e('ip')}::pg_catalog.text`,
    `${e('user_agent')}::pg_catalog.text`,
    `${e('request_id')}::pg_catalog.text`,
    `${e('details')}::pg_catalog.jsonb`,
  ].join(', ');
  return sql<Buffer>`(CASE WHEN ${sql.raw(e('entry_format'))} = 1
    THEN pg_catalog.convert_to(pg_catalog.json_build_array('guichet.audit/v1', ${sql.raw(v1)})::pg_catalog.text, 'UTF8')
    ELSE pg_catalog.record_send(ROW('guichet.audit/v2'::pg_catalog.text, ${sql.raw(v2)})) END)`;
}

/** An entry as the driver hands it over (a Buffer from pg, a Uint8Array from PGlite). */
function entryBytes(v: Uint8Array): Buffer {
  return Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

export interface Head {
  treeSize: number;
  rootHash: Buffer;
  signedAt: Date;
  keyId: string;
  checkpoint: string;
  lastTicket: string;
  lastSeq: string;
}

type HeadRowDb = { tree_size: string; root_hash: Buffer; signed_at: Date; key_id: string; checkpoint: string; last_ticket: string; last_seq: string };

function toHead(r: HeadRowDb): Head {
  return {
    treeSize: safeNumber(r.tree_size),
    rootHash: Buffer.from(r.root_hash),
    signedAt: new Date(r.signed_at),
    keyId: r.key_id,
    checkpoint: r.checkpoint,
    lastTicket: String(r.last_ticket),
    lastSeq: String(r.last_seq),
  };
}

function safeNumber(v: string | number | bigint): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new TreeStoreError(`value ${String(v)} is out of range`);
  return n;
}

// Read as text (bigints may exceed JavaScript numbers); the table is aliased h so that ORDER BY h.tree_size sorts numbers, not these texts.
const headColumns = sql.raw(`h.tree_size::text AS tree_size, h.root_hash, h.signed_at, h.key_id, h.checkpoint, h.last_ticket::text AS last_ticket, h.last_seq::text AS last_seq`);

export async function latestHead(trx: Trx, tenantId: string): Promise<Head | null> {
  const { rows } = await sql<HeadRowDb>`SELECT ${headColumns} FROM audit_tree_heads h WHERE h.tenant_id = ${tenantId} ORDER BY h.tree_size DESC LIMIT 1`.execute(trx);
  return rows[0] ? toHead(rows[0]) : null;
}

/** Heads in tree-size order, a page at a time. */
export async function headsAfter(trx: Trx, tenantId: string, afterSize: number, limit: number): Promise<Head[]> {
  const { rows } = await sql<HeadRowDb>`SELECT ${headColumns} FROM audit_tree_heads h
    WHERE h.tenant_id = ${tenantId} AND h.tree_size > ${afterSize} ORDER BY h.tree_size LIMIT ${limit}`.execute(trx);
  return rows.map(toHead);
}

/** Heads signed in [from, to), in tree-size order. */
export async function headsSignedBetween(trx: Trx, tenantId: string, from: Date, to: Date): Promise<Head[]> {
  const { rows } = await sql<HeadRowDb>`SELECT ${headColumns} FROM audit_tree_heads h
    WHERE h.tenant_id = ${tenantId} AND h.signed_at >= ${from} AND h.signed_at < ${to} ORDER BY h.tree_size`.execute(trx);
  return rows.map(toHead);
}

/** The last head signed before `at`, if any. */
export async function headBefore(trx: Trx, tenantId: string, at: Date): Promise<Head | null> {
  const { rows } = await sql<HeadRowDb>`SELECT ${headColumns} FROM audit_tree_heads h
    WHERE h.tenant_id = ${tenantId} AND h.signed_at < ${at} ORDER BY h.tree_size DESC LIMIT 1`.execute(trx);
  return rows[0] ? toHead(rows[0]) : null;
}

export async function countHeads(trx: Trx, tenantId: string): Promise<number> {
  const { rows } = await sql<{ n: string }>`SELECT count(*)::text AS n FROM audit_tree_heads WHERE tenant_id = ${tenantId}`.execute(trx);
  return Number(rows[0]?.n ?? 0);
}

export async function insertHead(trx: Trx, tenantId: string, h: Head): Promise<void> {
  await sql`INSERT INTO audit_tree_heads (tenant_id, tree_size, root_hash, signed_at, key_id, checkpoint, last_ticket, last_seq)
    VALUES (${tenantId}, ${h.treeSize}, ${h.rootHash}, ${h.signedAt}, ${h.keyId}, ${h.checkpoint}, ${h.lastTicket}::bigint, ${h.lastSeq}::bigint)`.execute(trx);
}

/**
 * Takes the tenant's sealing lock for this transaction, or says it is held:
 * with several instances, one seals a tenant at a time, and the others skip
 * it rather than wait.
 */
export async function trySealLock(trx: Trx, tenantId: string): Promise<boolean> {
  const { rows } = await sql<{ ok: boolean }>`SELECT pg_try_advisory_xact_lock(hashtextextended(${`guichet.audit.seal:${tenantId}`}, 0)) AS ok`.execute(trx);
  return !!rows[0]?.ok;
}

/**
 * Makes this transaction's queries walk the audit indexes in order rather than
 * sort. The statistics of audit_events lag behind a burst of appends, and a
 * planner that believes a tenant has a few hundred events sorts all of them
 * for every page it is asked for, which turns one pass over a million events
 * into a thousand. Only discouraged, not forbidden: a query that must sort
 * still does.
 */
export async function preferIndexOrder(trx: Trx): Promise<void> {
  await sql`SELECT set_config('enable_sort', 'off', true), set_config('enable_bitmapscan', 'off', true)`.execute(trx);
}

/** The advisory lock classes of migration 0004 (two-key form): a tenant's appenders, and their tickets. */
const APPEND_LOCK = sql.raw(`hashtext('guichet.audit.append')`);
const TICKET_LOCK = sql.raw(`hashtext('guichet.audit.ticket')`);
const TICKET_MOD = 2n ** 31n;

/**
 * The sealing cutoff of a tenant: every event with a smaller ticket has been
 * committed or rolled back, and every event yet to come has a ticket at least
 * this. Null while an appender of the tenant is between taking its append
 * lock and publishing its ticket (microseconds): the caller tries again later.
 *
 * The order of the two reads is what makes it sound (migration 0004): first
 * the highest ticket handed out, then the tenant's appenders. An appender not
 * among them takes its ticket after that read, so above the high mark; one
 * among them has published its ticket, or is the null case.
 */
export async function sealCutoff(trx: Trx, tenantId: string): Promise<string | null> {
  const { rows: hw } = await sql<{ hw: string }>`SELECT (CASE WHEN is_called THEN last_value ELSE last_value - 1 END)::text AS hw FROM audit_ticket_seq`.execute(trx);
  const high = BigInt(hw[0]!.hw);
  const { rows } = await sql<{ low: string | null }>`
    SELECT t.objid::text AS low
    FROM pg_catalog.pg_locks a
    LEFT JOIN pg_catalog.pg_locks t ON t.virtualtransaction = a.virtualtransaction AND t.locktype = 'advisory'
      AND t.classid = ${TICKET_LOCK}::oid AND t.objsubid = 2 AND t.granted
    WHERE a.locktype = 'advisory' AND a.granted AND a.objsubid = 2
      AND a.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
      AND a.classid = ${APPEND_LOCK}::oid AND a.objid = hashtext(${tenantId})::oid`.execute(trx);
  let cutoff = high + 1n;
  for (const r of rows) {
    if (r.low === null) return null;
    // The lock carries the ticket modulo 2^31; the ticket is the one at or below the high mark with that remainder.
    const ticket = high - ((high - BigInt(r.low)) % TICKET_MOD + TICKET_MOD) % TICKET_MOD;
    if (ticket < cutoff) cutoff = ticket;
  }
  return String(cutoff);
}

export interface PendingEvent {
  id: string;
  ticket: string;
  seq: string;
  entry: Buffer;
}

/**
 * The next events to seal, in (ticket, seq) order: after the last one sealed
 * and below the cutoff. The cutoff is read by earlier statements; this one
 * runs on a newer snapshot (READ COMMITTED), which sees every transaction
 * that ended before the cutoff was read.
 *
 * The keys are chosen first and the entries built for those only: when the
 * statistics lag behind a burst of appends, the planner may sort the whole
 * backlog rather than walk audit_events_sealing, and sorting narrow keys is
 * cheap where building every entry first is not.
 */
export async function pendingEvents(trx: Trx, tenantId: string, after: { ticket: string; seq: string } | null, cutoff: string, limit: number): Promise<PendingEvent[]> {
  const afterCond = after ? sql`AND (k.ticket, k.seq) > (${after.ticket}::bigint, ${after.seq}::bigint)` : sql``;
  const { rows } = await sql<PendingEvent>`SELECT e.id, e.ticket::text AS ticket, e.seq::text AS seq, ${entrySql('e')} AS entry
    FROM (SELECT k.id, k.ticket AS kx, k.seq AS ks FROM audit_events k
          WHERE k.tenant_id = ${tenantId} ${afterCond} AND k.ticket < ${cutoff}::bigint
          ORDER BY k.ticket, k.seq LIMIT ${limit}) w
    JOIN audit_events e ON e.id = w.id
    ORDER BY w.kx, w.ks`.execute(trx);
  return rows.map((r) => ({ ...r, entry: entryBytes(r.entry) }));
}

/** Events not in the tree yet (the sealer's backlog). */
export async function countPending(trx: Trx, tenantId: string, after: { ticket: string; seq: string } | null): Promise<number> {
  const afterCond = after ? sql`AND (ticket, seq) > (${after.ticket}::bigint, ${after.seq}::bigint)` : sql``;
  const { rows } = await sql<{ n: string }>`SELECT count(*)::text AS n FROM audit_events WHERE tenant_id = ${tenantId} ${afterCond}`.execute(trx);
  return Number(rows[0]?.n ?? 0);
}

export async function countEvents(trx: Trx, tenantId: string): Promise<number> {
  const { rows } = await sql<{ n: string }>`SELECT count(*)::text AS n FROM audit_events WHERE tenant_id = ${tenantId}`.execute(trx);
  return Number(rows[0]?.n ?? 0);
}

const INSERT_CHUNK = 1000;

export async function insertLeaves(trx: Trx, tenantId: string, leaves: readonly { index: number; eventId: string; hash: Buffer }[]): Promise<void> {
  for (let i = 0; i < leaves.length; i += INSERT_CHUNK) {
    const chunk = leaves.slice(i, i + INSERT_CHUNK);
    // unnest keeps it one statement with four parameters whatever the chunk size.
    await sql`INSERT INTO audit_leaves (tenant_id, leaf_index, event_id, leaf_hash)
      SELECT ${tenantId}, i, e, h FROM unnest(${chunk.map((l) => String(l.index))}::bigint[], ${chunk.map((l) => l.eventId)}::uuid[], ${chunk.map((l) => l.hash)}::bytea[]) AS t(i, e, h)`.execute(trx);
  }
}

export async function insertNodes(trx: Trx, tenantId: string, nodes: readonly { level: number; index: number; hash: Buffer }[]): Promise<void> {
  for (let i = 0; i < nodes.length; i += INSERT_CHUNK) {
    const chunk = nodes.slice(i, i + INSERT_CHUNK);
    await sql`INSERT INTO audit_tree_nodes (tenant_id, level, node_index, hash)
      SELECT ${tenantId}, l, i, h FROM unnest(${chunk.map((n) => n.level)}::smallint[], ${chunk.map((n) => String(n.index))}::bigint[], ${chunk.map((n) => n.hash)}::bytea[]) AS t(l, i, h)`.execute(trx);
  }
}

/**
 * Hashes of perfect subtrees, read from the stored leaves and nodes: a subtree
 * at level L is folded from the 2^(L mod 4) stored hashes beneath it at the
 * nearest stored level (the leaves for L < 4).
 */
export async function perfectHashes(trx: Trx, tenantId: string, wanted: readonly PerfectNode[]): Promise<Buffer[]> {
  const leafIdx = new Set<number>();
  const nodeKeys = new Map<string, { level: number; index: number }>();
  const plans = wanted.map(({ level, index }) => {
    const base = level - (level % NODE_STRIDE);
    const span = 2 ** (level - base);
    const first = index * span;
    for (let i = first; i < first + span; i++) {
      if (base === 0) leafIdx.add(i);
      else nodeKeys.set(`${base}:${i}`, { level: base, index: i });
    }
    return { base, first, span };
  });
  const leafHashes = new Map<number, Buffer>();
  const nodeHashes = new Map<string, Buffer>();
  const leafList = [...leafIdx];
  for (let i = 0; i < leafList.length; i += 5000) {
    const chunk = leafList.slice(i, i + 5000).map(String);
    const { rows } = await sql<{ i: string; h: Buffer }>`SELECT leaf_index::text AS i, leaf_hash AS h FROM audit_leaves
      WHERE tenant_id = ${tenantId} AND leaf_index = ANY(${chunk}::bigint[])`.execute(trx);
    for (const r of rows) leafHashes.set(Number(r.i), Buffer.from(r.h));
  }
  const nodeList = [...nodeKeys.values()];
  for (let i = 0; i < nodeList.length; i += 5000) {
    const chunk = nodeList.slice(i, i + 5000);
    const { rows } = await sql<{ l: number; i: string; h: Buffer }>`SELECT n.level AS l, n.node_index::text AS i, n.hash AS h
      FROM audit_tree_nodes n JOIN unnest(${chunk.map((k) => k.level)}::smallint[], ${chunk.map((k) => String(k.index))}::bigint[]) AS w(l, i)
        ON n.level = w.l AND n.node_index = w.i
      WHERE n.tenant_id = ${tenantId}`.execute(trx);
    for (const r of rows) nodeHashes.set(`${r.l}:${r.i}`, Buffer.from(r.h));
  }
  return plans.map(({ base, first, span }) => {
    let layer: Buffer[] = [];
    for (let i = first; i < first + span; i++) {
      const h = base === 0 ? leafHashes.get(i) : nodeHashes.get(`${base}:${i}`);
      if (!h) throw new TreeStoreError(base === 0 ? `leaf ${i} is missing from the tree` : `stored subtree ${base}/${i} is missing from the tree`);
      layer.push(h);
    }
    while (layer.length > 1) {
      const next: Buffer[] = [];
      for (let i = 0; i < layer.length; i += 2) next.push(nodeHash(layer[i]!, layer[i + 1]!));
      layer = next;
    }
    return layer[0]!;
  });
}

/** MTH of each range (each a subtree, as proof plans name them), in one pass over the store. */
export async function rangeHashes(trx: Trx, tenantId: string, ranges: readonly Range[]): Promise<Buffer[]> {
  const parts = ranges.map((r) => perfectNodes(r));
  const flat = await perfectHashes(trx, tenantId, parts.flat());
  let k = 0;
  return parts.map((p) => foldPerfect(p.map(() => flat[k++]!)));
}

/** The right edge of the tree of `size` leaves, to append to. */
export async function compactEdge(trx: Trx, tenantId: string, size: number): Promise<CompactRange> {
  if (size === 0) return new CompactRange();
  return new CompactRange(size, await perfectHashes(trx, tenantId, perfectNodes([0, size])));
}

export async function rootAt(trx: Trx, tenantId: string, size: number): Promise<Buffer> {
  return (await compactEdge(trx, tenantId, size)).root();
}

export async function inclusionProofAt(trx: Trx, tenantId: string, index: number, size: number): Promise<Buffer[]> {
  return rangeHashes(trx, tenantId, inclusionPlan(index, size));
}

export async function consistencyProofAt(trx: Trx, tenantId: string, size1: number, size2: number): Promise<Buffer[]> {
  return rangeHashes(trx, tenantId, consistencyPlan(size1, size2));
}

/** Inclusion proofs of many leaves in one tree, with the store read once for all of them. */
export async function inclusionProofsAt(trx: Trx, tenantId: string, indices: readonly number[], size: number): Promise<Buffer[][]> {
  const plans = indices.map((i) => inclusionPlan(i, size));
  // Proofs of neighbouring leaves share most of their ranges: fetch each once.
  const unique = new Map<string, Range>();
  for (const p of plans) for (const r of p) unique.set(`${r[0]}:${r[1]}`, r);
  const list = [...unique.values()];
  const hashes = new Map<string, Buffer>();
  for (let i = 0; i < list.length; i += 2000) {
    const chunk = list.slice(i, i + 2000);
    const hs = await rangeHashes(trx, tenantId, chunk);
    chunk.forEach((r, j) => hashes.set(`${r[0]}:${r[1]}`, hs[j]!));
  }
  return plans.map((p) => p.map((r) => hashes.get(`${r[0]}:${r[1]}`)!));
}

export async function leafOfEvent(trx: Trx, tenantId: string, eventId: string): Promise<{ index: number; hash: Buffer } | null> {
  const { rows } = await sql<{ i: string; h: Buffer }>`SELECT leaf_index::text AS i, leaf_hash AS h FROM audit_leaves WHERE tenant_id = ${tenantId} AND event_id = ${eventId}`.execute(trx);
  return rows[0] ? { index: Number(rows[0].i), hash: Buffer.from(rows[0].h) } : null;
}

export interface LeafRow {
  index: number;
  eventId: string;
  leafHash: Buffer;
  /** Null when the event the leaf was sealed from is gone. */
  entry: Buffer | null;
  ticket: string | null;
  seq: string | null;
}

/** Leaves [from, to) with their events' entries, as the database holds them now, a row each. */
export async function leavesWithEntries(trx: Trx, tenantId: string, from: number, to: number): Promise<LeafRow[]> {
  const { rows } = await sql<{ i: string; ev: string; lh: Buffer; entry: Buffer | null; ticket: string | null; seq: string | null }>`
    SELECT l.leaf_index::text AS i, l.event_id AS ev, l.leaf_hash AS lh,
           CASE WHEN e.id IS NULL THEN NULL ELSE ${entrySql('e')} END AS entry,
           e.ticket::text AS ticket, e.seq::text AS seq
    FROM audit_leaves l LEFT JOIN audit_events e ON e.id = l.event_id AND e.tenant_id = l.tenant_id
    WHERE l.tenant_id = ${tenantId} AND l.leaf_index >= ${from} AND l.leaf_index < ${to}
    ORDER BY l.leaf_index`.execute(trx);
  return rows.map((r) => ({ index: Number(r.i), eventId: r.ev, leafHash: Buffer.from(r.lh), entry: r.entry ? entryBytes(r.entry) : null, ticket: r.ticket, seq: r.seq }));
}

/** Leaves [from, to): index, event and hash, without the events (verification reads those in their own order). */
export async function leafRange(trx: Trx, tenantId: string, from: number, to: number): Promise<{ index: number; eventId: string; leafHash: Buffer }[]> {
  const { rows } = await sql<{ i: string; ev: string; lh: Buffer }>`SELECT leaf_index::text AS i, event_id AS ev, leaf_hash AS lh FROM audit_leaves
    WHERE tenant_id = ${tenantId} AND leaf_index >= ${from} AND leaf_index < ${to} ORDER BY leaf_index`.execute(trx);
  return rows.map((r) => ({ index: Number(r.i), eventId: r.ev, leafHash: Buffer.from(r.lh) }));
}

export interface OrderedEvent {
  id: string;
  ticket: string;
  seq: string;
  entry: Buffer;
}

/** The tenant's events in sealing order, after `after`, with their entries: an index scan on audit_events_sealing. */
export async function eventsInOrder(trx: Trx, tenantId: string, after: { ticket: string; seq: string } | null, limit: number): Promise<OrderedEvent[]> {
  const afterCond = after ? sql`AND (e.ticket, e.seq) > (${after.ticket}::bigint, ${after.seq}::bigint)` : sql``;
  const { rows } = await sql<OrderedEvent>`SELECT e.id, e.ticket::text AS ticket, e.seq::text AS seq, ${entrySql('e')} AS entry
    FROM audit_events e WHERE e.tenant_id = ${tenantId} ${afterCond} ORDER BY e.ticket, e.seq LIMIT ${limit}`.execute(trx);
  return rows.map((r) => ({ ...r, entry: entryBytes(r.entry) }));
}

export interface HashedPage {
  /** Leaves in [from, from + size). */
  leafCount: number;
  /**
   * The database compared, in one pass: the leaves are from, from + 1… in the
   * order read; each has a 32-byte hash; the first leafCount events in sealing
   * order are the leaves' events, in leaf order, and the leaf hash of each
   * event's entry as it is now (rendered and hashed by the database) is its
   * leaf's stored hash.
   */
  leavesMatch: boolean;
  /** The leaves' stored hashes, concatenated, in the order read; 32 bytes each when leavesMatch. */
  leafHashes: Buffer;
  /** Up to size + 1 events in sealing order from the page's first. */
  eventCount: number;
  /** int8 ticket, int8 seq of each event, in the order read (the reader checks that it is the sealing order). */
  eventKeys: Buffer;
  /** The first event's id (16 bytes), and the id of the event after the page's last leaf's (empty when there is none). */
  firstEventId: Buffer;
  eventIdAfterLeaves: Buffer;
}

/**
 * A page for verification in one row: the leaves [from, from + size), and
 * size + 1 events in sealing order from the event of leaf `from` on (from the
 * tenant's first event when `from` is 0), each with the leaf hash of its
 * entry, which the database renders (entrySql) and hashes itself: the entry is
 * the very text the sealer hashed, so hashing it here trusts nothing the
 * columns do not say. The comparisons between leaves and events are made
 * there too, over the byte strings of the two sides (ids and hashes end to
 * end): only what this process needs crosses the wire — the leaf hashes for
 * the tree, the events' sealing keys, whose order this process checks, and
 * the ids that join the page to the next. Rows cost more than bytes in the
 * driver: each column comes as one value, its values end to end, in base64.
 *
 * The aggregates of one subquery read its rows in one same order, but SQL does
 * not promise it is the subquery's: the leaves' positions are compared in the
 * order the aggregates see (a window over the same stream), and the reader
 * checks the events' keys in the order they came (an ORDER BY inside the
 * aggregates would sort every page again).
 */
export async function hashedPage(trx: Trx, tenantId: string, from: number, size: number): Promise<HashedPage> {
  // The leaf's event id first, then the event by that id: two point reads, whatever the planner makes of a join
  // under LIMIT. LIMIT 1: with a key dropped and rows doubled, any one will do; the reader checks where the page starts.
  const start = from === 0
    ? sql``
    : sql`AND (e.ticket, e.seq) >= (SELECT s.ticket, s.seq FROM audit_events s WHERE s.tenant_id = ${tenantId}
                                      AND s.id = (SELECT sl.event_id FROM audit_leaves sl WHERE sl.tenant_id = ${tenantId} AND sl.leaf_index = ${from} LIMIT 1)
                                    LIMIT 1)`;
  const { rows } = await sql<{ ln: number; lok: boolean; lh: string; en: number; ek: string; e0: string; em: string }>`
    SELECT l.n AS ln,
           (l.in_place AND l.whole AND pg_catalog.octet_length(v.i) >= 16 * l.n
            AND l.e OPERATOR(pg_catalog.=) pg_catalog.substring(v.i, 1, 16 * l.n)
            AND l.h OPERATOR(pg_catalog.=) pg_catalog.substring(v.h, 1, 32 * l.n)) AS lok,
           pg_catalog.encode(l.h, 'base64') AS lh,
           v.n AS en, pg_catalog.encode(v.k, 'base64') AS ek,
           pg_catalog.encode(pg_catalog.substring(v.i, 1, 16), 'base64') AS e0,
           pg_catalog.encode(pg_catalog.substring(v.i, 16 * l.n + 1, 16), 'base64') AS em
    FROM (SELECT pg_catalog.count(*)::int AS n,
                 COALESCE(pg_catalog.bool_and(x.in_place), true) AS in_place,
                 COALESCE(pg_catalog.bool_and(pg_catalog.octet_length(x.leaf_hash) = 32), true) AS whole,
                 COALESCE(pg_catalog.string_agg(pg_catalog.uuid_send(x.event_id), ''::bytea), ''::bytea) AS e,
                 COALESCE(pg_catalog.string_agg(x.leaf_hash, ''::bytea), ''::bytea) AS h
          FROM (SELECT y.event_id, y.leaf_hash, y.leaf_index = ${from} - 1 + pg_catalog.row_number() OVER () AS in_place
                FROM (SELECT leaf_index, event_id, leaf_hash FROM audit_leaves
                      WHERE tenant_id = ${tenantId} AND leaf_index >= ${from} AND leaf_index < ${from + size} ORDER BY leaf_index) y) x) l,
         (SELECT pg_catalog.count(*)::int AS n,
                 COALESCE(pg_catalog.string_agg(pg_catalog.uuid_send(w.id), ''::bytea), ''::bytea) AS i,
                 COALESCE(pg_catalog.string_agg(pg_catalog.int8send(w.ticket) || pg_catalog.int8send(w.seq), ''::bytea), ''::bytea) AS k,
                 COALESCE(pg_catalog.string_agg(w.h, ''::bytea), ''::bytea) AS h
          FROM (SELECT e.id, e.ticket, e.seq, pg_catalog.sha256('\\x00'::bytea || ${entrySql('e')}) AS h
                FROM audit_events e WHERE e.tenant_id = ${tenantId} ${start}
                ORDER BY e.ticket, e.seq LIMIT ${size + 1}) w) v`.execute(trx);
  const r = rows[0]!;
  const buf = (b64: string) => Buffer.from(b64, 'base64');
  return {
    leafCount: Number(r.ln),
    leavesMatch: r.lok,
    leafHashes: buf(r.lh),
    eventCount: Number(r.en),
    eventKeys: buf(r.ek),
    firstEventId: buf(r.e0),
    eventIdAfterLeaves: buf(r.em),
  };
}

export async function eventById(trx: Trx, tenantId: string, id: string): Promise<{ ticket: string; seq: string } | null> {
  const { rows } = await sql<{ ticket: string; seq: string }>`SELECT ticket::text AS ticket, seq::text AS seq FROM audit_events WHERE tenant_id = ${tenantId} AND id = ${id}`.execute(trx);
  return rows[0] ?? null;
}

/** Stored subtree hashes completed by leaves [from, to): the nodes whose last leaf falls in that range. */
export async function nodesCompletedIn(trx: Trx, tenantId: string, from: number, to: number): Promise<Map<string, Buffer>> {
  const levels: number[] = [];
  const los: string[] = [];
  const his: string[] = [];
  for (let level = NODE_STRIDE; 2 ** level <= to; level += NODE_STRIDE) {
    const span = 2 ** level;
    const lo = Math.ceil((from + 1) / span) - 1;
    const hi = Math.floor(to / span) - 1;
    if (hi >= lo) {
      levels.push(level);
      los.push(String(lo));
      his.push(String(hi));
    }
  }
  const out = new Map<string, Buffer>();
  if (!levels.length) return out;
  // One index range per level (an OR of ranges would scan every stored node of the tenant for each page).
  const { rows } = await sql<{ l: number; i: string; h: Buffer }>`SELECT n.level AS l, n.node_index::text AS i, n.hash AS h
    FROM unnest(${levels}::smallint[], ${los}::bigint[], ${his}::bigint[]) AS w(l, lo, hi)
    JOIN audit_tree_nodes n ON n.level = w.l AND n.node_index BETWEEN w.lo AND w.hi
    WHERE n.tenant_id = ${tenantId}`.execute(trx);
  for (const r of rows) out.set(`${r.l}:${r.i}`, Buffer.from(r.h));
  return out;
}

export async function countLeaves(trx: Trx, tenantId: string): Promise<number> {
  const { rows } = await sql<{ n: string }>`SELECT count(*)::text AS n FROM audit_leaves WHERE tenant_id = ${tenantId}`.execute(trx);
  return Number(rows[0]?.n ?? 0);
}

/** Leaves whose events occurred in [from, to), with their entries. */
export async function leavesOccurredBetween(trx: Trx, tenantId: string, from: Date, to: Date, maxIndex: number): Promise<{ index: number; entry: Buffer }[]> {
  const { rows } = await sql<{ i: string; entry: Buffer }>`
    SELECT l.leaf_index::text AS i, ${entrySql('e')} AS entry
    FROM audit_events e JOIN audit_leaves l ON l.event_id = e.id AND l.tenant_id = e.tenant_id
    WHERE e.tenant_id = ${tenantId} AND e.occurred_at >= ${from} AND e.occurred_at < ${to} AND l.leaf_index < ${maxIndex}
    ORDER BY l.leaf_index`.execute(trx);
  return rows.map((r) => ({ index: Number(r.i), entry: entryBytes(r.entry) }));
}
