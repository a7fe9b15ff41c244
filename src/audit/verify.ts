/**
 * Verification of a tenant's audit log from the database: everything is
 * recomputed, nothing stored is taken on trust except as something to compare
 * against.
 *
 * In leaf order, for each leaf: the event it was sealed from still exists,
 * its entry still hashes to the leaf, it comes after the previous leaf's event
 * in the sealing order, and the recomputed tree matches every stored subtree
 * hash, every signed head (root, checkpoint, signature by the tenant's key)
 * and every head the witness holds, at their sizes. Then: no event is missing
 * from the tree behind the sealed point, no head or witness record claims
 * more leaves than there are. The first problem in leaf order is reported,
 * naming the leaf and its event.
 *
 * It all runs in one REPEATABLE READ transaction: a sealer working meanwhile
 * (another instance) cannot make the picture inconsistent. On PostgreSQL a
 * second transaction on the same snapshot (pg_export_snapshot) renders every
 * other page: rendering the entries is most of the work, and one server
 * process does it on one core.
 *
 * The leaves are read a page at a time with their events' leaf hashes computed
 * by the database (hashedPage), and a page whose every leaf checks is taken as
 * it is. From the first page that does not, the leaves and the events are read
 * row by row, entries hashed here, as far as the first problem, which the rows
 * name and explain.
 */
import { sql, type Kysely } from 'kysely';
import type { DB } from '../db/schema.ts';
import { enterTenant } from '../db/tenant.ts';
import { CompactRange, leafHash } from './merkle.ts';
import { hasConcurrentTransactions, type Trx } from '../db/connection.ts';
import {
  countEvents,
  countPending,
  eventById,
  eventsInOrder,
  hashedPage,
  headsAfter,
  latestHead,
  leafOfEvent,
  leafRange,
  NODE_STRIDE,
  nodesCompletedIn,
  preferIndexOrder,
  type HashedPage,
  type Head,
  type OrderedEvent,
} from './store.ts';
import { openCheckpoint, originFor, type VerifierKey } from './verify-bundle.ts';
import type { WitnessRecord } from './witness.ts';

export interface BadLeaf {
  /** The first leaf that does not check (or where a missing event belongs); null when no leaf is to blame. */
  leafIndex: number | null;
  eventSeq: string | null;
  eventId: string | null;
  problem: string;
}

export interface TenantVerifyReport {
  tenantId: string;
  ok: boolean;
  /** Events of the tenant in the database. */
  events: number;
  treeSize: number;
  /** Events committed but not yet in the tree. */
  pending: number;
  heads: number;
  latestHead: { size: number; root: string; signedAt: string } | null;
  /** Signatures were checked against the tenant's key (not when no key was given). */
  signaturesChecked: boolean;
  witness: { records: number; latestSize: number | null } | null;
  firstBad?: BadLeaf;
}

export interface VerifyOptions {
  /** The tenant's public key: heads must carry a valid signature by it. Without it, signatures are not checked. */
  key?: VerifierKey | null;
  /** The witness's records for this tenant (witnessRecordsFor). */
  witness?: readonly WitnessRecord[] | null;
  pageSize?: number;
  /** Transactions rendering pages at once, on the same snapshot: 2 by default on PostgreSQL; PGlite has one session. */
  readers?: number;
}

interface Check {
  size: number;
  head?: Head;
  witness?: WitnessRecord;
}

/**
 * A stream of rows read a page at a time from `first` on, the next page asked
 * for as soon as one arrives: the database works on it while this process hashes.
 */
function pages<R, C>(first: C, fetch: (cursor: C) => Promise<R[]>, advance: (rows: R[], cursor: C) => C) {
  let buf: R[] = [];
  let i = 0;
  let ahead: Promise<R[]> | null = null;
  let aheadCursor: C;
  let done = false;
  const start = (c: C) => {
    aheadCursor = c;
    ahead = fetch(c);
    ahead.catch(() => {});
  };
  const peek = async (): Promise<R | undefined> => {
    if (i < buf.length) return buf[i];
    if (done) return undefined;
    if (!ahead) start(first);
    const cursor = aheadCursor;
    buf = await ahead!;
    i = 0;
    if (!buf.length) {
      done = true;
      ahead = null;
      return undefined;
    }
    start(advance(buf, cursor));
    return buf[i];
  };
  return {
    peek,
    async next(): Promise<R | undefined> {
      const r = await peek();
      if (r !== undefined) i++;
      return r;
    },
    async drain(): Promise<void> {
      await ahead;
    },
  };
}

type Page = HashedPage & { nodes: Map<string, Buffer> };

/**
 * Pages of leaves with their events hashed by the database (hashedPage), and
 * the stored subtree hashes they complete; page k covers leaves [k·size,
 * (k+1)·size). Page k is read by reader k mod n, each a transaction on the same
 * snapshot, a few pages ahead of the one asked for.
 */
function hashedPages(readers: readonly Trx[], tenantId: string, size: number) {
  const asked = new Map<number, Promise<Page>>();
  let upTo = 0;
  return {
    get(k: number): Promise<Page> {
      while (upTo <= k + readers.length) {
        const j = upTo++;
        const trx = readers[j % readers.length]!;
        const p = Promise.all([hashedPage(trx, tenantId, j * size, size), nodesCompletedIn(trx, tenantId, j * size, (j + 1) * size)]).then(([page, nodes]) => ({ ...page, nodes }));
        p.catch(() => {});
        asked.set(j, p);
      }
      const p = asked.get(k)!;
      asked.delete(k);
      return p;
    },
    async drain(): Promise<void> {
      await Promise.allSettled(asked.values());
    },
  };
}

/** Signed comparison of the int8 at a and at b. */
function cmpInt8(buf: Buffer, a: number, b: number): number {
  return buf.readInt32BE(a) - buf.readInt32BE(b) || buf.readUInt32BE(a + 4) - buf.readUInt32BE(b + 4);
}

/**
 * Page k checks throughout, with nothing for the row by row reading to say:
 * its leaves are k·size onwards without a gap, each the leaf of the event at
 * its position in sealing order and hashing as that event does now (compared
 * by the database: leavesMatch), its events in strictly increasing sealing
 * order, and its first event the one after the previous page's last leaf's
 * (nothing inserted between two pages).
 */
function pageChecks(p: Page, k: number, size: number, prev: Page | null): boolean {
  const m = p.leafCount;
  const n = p.eventCount;
  if (!p.leavesMatch || n < m || p.leafHashes.length !== 32 * m || p.eventKeys.length !== 16 * n || p.firstEventId.length !== 16) return false;
  if (k > 0) {
    if (!prev || prev.leafCount !== size || prev.eventCount !== size + 1) return false;
    if (!prev.eventIdAfterLeaves.equals(p.firstEventId) || prev.eventKeys.compare(p.eventKeys, 0, 16, 16 * size) !== 0) return false;
  }
  for (let j = 1; j < n; j++) {
    const c = cmpInt8(p.eventKeys, 16 * j - 16, 16 * j) || cmpInt8(p.eventKeys, 16 * j - 8, 16 * j + 8);
    if (c >= 0) return false;
  }
  return true;
}

/**
 * `count` more transactions that see exactly what `trx` sees (its exported
 * snapshot), as the tenant, to render pages on other server processes while
 * `trx` renders its own: rendering entries is most of verification's cost.
 */
async function snapshotReaders(db: Kysely<DB>, trx: Trx, tenantId: string, count: number): Promise<{ readers: Trx[]; close: () => Promise<void> }> {
  if (count <= 0) return { readers: [], close: async () => {} };
  const { rows } = await sql<{ s: string }>`SELECT pg_catalog.pg_export_snapshot() AS s`.execute(trx);
  const snapshot = rows[0]!.s;
  if (!/^[0-9A-Fa-f-]+$/.test(snapshot)) throw new Error(`unexpected snapshot identifier ${JSON.stringify(snapshot)}`);
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  const ended: Promise<unknown>[] = [];
  const opened: Promise<Trx>[] = [];
  for (let i = 0; i < count; i++) {
    opened.push(
      new Promise<Trx>((resolve, reject) => {
        ended.push(
          db
            .transaction()
            .setIsolationLevel('repeatable read')
            .execute(async (h) => {
              // First, before any statement takes a snapshot of its own.
              await sql`SET TRANSACTION SNAPSHOT ${sql.lit(snapshot)}`.execute(h);
              await enterTenant(h, tenantId);
              await preferIndexOrder(h);
              resolve(h);
              await released;
            })
            .catch(reject),
        );
      }),
    );
  }
  const close = async () => {
    release();
    await Promise.allSettled(ended);
  };
  try {
    return { readers: await Promise.all(opened), close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Why the event of leaf `index` is not the event that sorts there. */
async function diagnose(trx: Trx, tenantId: string, index: number, leafEvent: string, here: OrderedEvent | undefined): Promise<BadLeaf> {
  const own = await eventById(trx, tenantId, leafEvent);
  if (!own) return { leafIndex: index, eventSeq: null, eventId: leafEvent, problem: `event ${leafEvent} is missing from audit_events (removed)` };
  if (!here) return { leafIndex: index, eventSeq: own.seq, eventId: leafEvent, problem: 'the event of this leaf sorts after every event of the tenant (reordered)' };
  const where = await leafOfEvent(trx, tenantId, here.id);
  if (!where) {
    return { leafIndex: index, eventSeq: here.seq, eventId: here.id, problem: 'the event is in audit_events but not in the tree, although it sorts among sealed events (inserted)' };
  }
  return {
    leafIndex: index,
    eventSeq: own.seq,
    eventId: leafEvent,
    problem: `leaves ${Math.min(index, where.index)} and ${Math.max(index, where.index)} are out of order: the event of leaf ${where.index} sorts here (reordered)`,
  };
}

/** Leaves a page by default: fewer, larger statements, each still a few MB at most in this process. */
export const VERIFY_PAGE_SIZE = 10_000;

export async function verifyTenant(db: Kysely<DB>, tenantId: string, opts: VerifyOptions = {}): Promise<TenantVerifyReport> {
  const pageSize = opts.pageSize ?? VERIFY_PAGE_SIZE;
  const key = opts.key ?? null;
  const origin = originFor(tenantId);
  return db
    .transaction()
    .setIsolationLevel('repeatable read')
    .execute(async (trx) => {
      await enterTenant(trx, tenantId);
      await preferIndexOrder(trx);
      const latest = await latestHead(trx, tenantId);
      const events = await countEvents(trx, tenantId);
      const pending = await countPending(trx, tenantId, latest ? { ticket: latest.lastTicket, seq: latest.lastSeq } : null);
      const witnessRecords = [...(opts.witness ?? [])].sort((a, b) => a.tree_size - b.tree_size);

      let heads = 0;
      let bad: BadLeaf | undefined;
      const fail = (b: BadLeaf) => {
        if (!bad || (b.leafIndex ?? Infinity) < (bad.leafIndex ?? Infinity)) bad = b;
      };

      // Witness records: each must be a checkpoint of this log signed by the tenant's key.
      const witnessChecks: Check[] = [];
      for (const w of witnessRecords) {
        if (w.origin !== origin) continue;
        if (key) {
          try {
            const cp = openCheckpoint(w.checkpoint, key);
            if (cp.size !== w.tree_size || cp.root.toString('base64') !== w.root_hash) throw new Error('the record differs from its checkpoint');
          } catch (err) {
            fail({ leafIndex: null, eventSeq: null, eventId: null, problem: `the witness's record of size ${w.tree_size} is not a valid signed head: ${(err as Error).message}` });
            continue;
          }
        }
        witnessChecks.push({ size: w.tree_size, witness: w });
      }

      const frontier = new CompactRange();
      let lastGood = 0; // every leaf below this is vouched for by a head that checked
      let witnessGood = 0; // …and by a witness record that agreed
      let wi = 0;
      let stopped = false;

      const headStream = pages(
        0,
        (after: number) => headsAfter(trx, tenantId, after, 1000),
        (rows) => rows[rows.length - 1]!.treeSize,
      );

      const checkAt = async (n: number, lastRow: { ticket: string | null; seq: string | null } | null) => {
        const root = frontier.root();
        for (let h = await headStream.peek(); h && h.treeSize === n; h = await headStream.peek()) {
          await headStream.next();
          heads++;
          const range = `leaves ${lastGood}..${n - 1}`;
          if (key) {
            try {
              const cp = openCheckpoint(h.checkpoint, key);
              if (cp.origin !== origin || cp.size !== h.treeSize || !cp.root.equals(h.rootHash) || cp.time.getTime() !== h.signedAt.getTime()) {
                throw new Error('its columns differ from its signed checkpoint');
              }
            } catch (err) {
              fail({ leafIndex: lastGood, eventSeq: null, eventId: null, problem: `the signed head of size ${n} (covering ${range}) does not check: ${(err as Error).message}` });
              stopped = true;
              return;
            }
          }
          if (!root.equals(h.rootHash)) {
            fail({ leafIndex: lastGood, eventSeq: null, eventId: null, problem: `the signed head of size ${n} does not match the tree recomputed from ${range} (head replaced?)` });
            stopped = true;
            return;
          }
          if (lastRow && (lastRow.ticket !== h.lastTicket || lastRow.seq !== h.lastSeq)) {
            fail({ leafIndex: n - 1, eventSeq: lastRow.seq, eventId: null, problem: `the head of size ${n} records a different last event than leaf ${n - 1}` });
            stopped = true;
            return;
          }
          lastGood = n;
        }
        while (wi < witnessChecks.length && witnessChecks[wi]!.size <= n) {
          const w = witnessChecks[wi++]!;
          if (w.size < n) continue; // a size with no leaf stream position (0): nothing to compare
          if (Buffer.from(w.witness!.root_hash, 'base64').toString('hex') !== root.toString('hex')) {
            // The witness only vouches for the root: the rewrite lies somewhere below its size, after what a checked head covers.
            const from = Math.min(lastGood, witnessGood);
            fail({ leafIndex: from, eventSeq: null, eventId: null, problem: `the witness's head of size ${n} disagrees with the tree recomputed from the database: history rewritten within leaves ${from}..${n - 1}` });
            stopped = true;
            return;
          }
          witnessGood = n;
        }
      };

      /** The next tree size at which a head or a witness record is to be checked. */
      const dueAt = async () => Math.min((await headStream.peek())?.treeSize ?? Infinity, witnessChecks[wi]?.size ?? Infinity);
      let nextCheck = await dueAt();

      let next = 0;
      let stored = new Map<string, Buffer>();
      let storedUpTo = 0;

      let nodeProblem: string | null = null;
      const checkNode = (level: number, index: number, hash: Buffer) => {
        if (level % NODE_STRIDE !== 0 || nodeProblem) return;
        const s = stored.get(`${level}:${index}`);
        if (!s) nodeProblem = `the stored hash of leaves ${index * 2 ** level}..${(index + 1) * 2 ** level - 1} is missing`;
        else if (!s.equals(hash)) nodeProblem = `the stored hash of leaves ${index * 2 ** level}..${(index + 1) * 2 ** level - 1} differs from the recomputed one`;
      };
      /** Appends leaf `next` to the recomputed tree and checks the stored subtree hashes it completes; false when one does not check. */
      const append = (h: Buffer): boolean => {
        frontier.append(h, checkNode);
        if (nodeProblem) {
          fail({ leafIndex: lastGood, eventSeq: null, eventId: null, problem: nodeProblem });
          stopped = true;
          return false;
        }
        return true;
      };

      // First pass, page by page: the database renders and hashes each event's entry and sends the page as a few
      // byte strings. A page that checks throughout is taken as is; at the first that does not, the rows are read
      // one by one from that page on (below), which names the leaf and says what is wrong with it.
      let leavesEnded = false;
      let lastKey: { ticket: string; seq: string } | null = null;
      let leafPage = 0;
      // More readers pay off only over several pages, and only where the database can serve them at once.
      const readerCount = opts.readers ?? (hasConcurrentTransactions(db) && (latest?.treeSize ?? 0) > pageSize ? 2 : 1);
      const readers = await snapshotReaders(db, trx, tenantId, readerCount - 1);
      const hashed = hashedPages([trx, ...readers.readers], tenantId, pageSize);
      try {
        for (let prev: Page | null = null; ; leafPage++) {
          const page = await hashed.get(leafPage);
          if (!page.leafCount) {
            leavesEnded = true;
            break;
          }
          if (next !== leafPage * pageSize || !pageChecks(page, leafPage, pageSize, prev)) break;
          stored = page.nodes;
          storedUpTo = next + pageSize;
          for (let j = 0; j < page.leafCount; j++) {
            if (!append(page.leafHashes.subarray(32 * j, 32 * j + 32))) break;
            next++;
            if (next >= nextCheck) {
              await checkAt(next, { ticket: String(page.eventKeys.readBigInt64BE(16 * j)), seq: String(page.eventKeys.readBigInt64BE(16 * j + 8)) });
              if (stopped) break;
              nextCheck = await dueAt();
            }
          }
          if (stopped) break;
          const j = page.leafCount - 1;
          lastKey = { ticket: String(page.eventKeys.readBigInt64BE(16 * j)), seq: String(page.eventKeys.readBigInt64BE(16 * j + 8)) };
          prev = page;
        }
      } finally {
        // Let the queries read ahead finish before the transactions end.
        await hashed.drain();
        await readers.close();
      }

      if (!stopped && !leavesEnded) {
        // Two streams, each read in its own order and merged: the leaves by index, and the tenant's events in
        // sealing order (ticket, seq), each a cheap index scan. In an intact log the i-th event is the event of
        // leaf i; where they part, a few point reads say why.
        const leafStream = pages(
          leafPage * pageSize,
          (from: number) => leafRange(trx, tenantId, from, from + pageSize),
          (_rows, from) => from + pageSize,
        );
        const eventStream = pages(
          lastKey,
          (after: { ticket: string; seq: string } | null) => eventsInOrder(trx, tenantId, after, pageSize),
          (rows) => (rows.length ? { ticket: rows[rows.length - 1]!.ticket, seq: rows[rows.length - 1]!.seq } : null),
        );
        for (;;) {
          const leaf = await leafStream.next();
          if (!leaf) break;
          if (leaf.index !== next) {
            fail({ leafIndex: next, eventSeq: null, eventId: null, problem: `leaf ${next} is missing from the tree (the leaves jump to ${leaf.index})` });
            stopped = true;
            break;
          }
          const ev = await eventStream.next();
          if (!ev || ev.id !== leaf.eventId) {
            fail(await diagnose(trx, tenantId, next, leaf.eventId, ev));
            stopped = true;
            break;
          }
          const h = leafHash(ev.entry);
          if (!h.equals(leaf.leafHash)) {
            fail({ leafIndex: next, eventSeq: ev.seq, eventId: ev.id, problem: 'the event does not match the leaf it was sealed as (changed)' });
            stopped = true;
            break;
          }
          if (next >= storedUpTo) {
            stored = await nodesCompletedIn(trx, tenantId, next, next + pageSize);
            storedUpTo = next + pageSize;
          }
          if (!append(h)) break;
          next++;
          // Most leaves close no head and no witness record: no need to stop for them.
          if (next >= nextCheck) {
            await checkAt(next, { ticket: ev.ticket, seq: ev.seq });
            if (stopped) break;
            nextCheck = await dueAt();
          }
        }
        await Promise.allSettled([leafStream.drain(), eventStream.drain()]);
      }
      const treeSize = next;

      if (!stopped) {
        const h = await headStream.next();
        if (h) {
          heads++;
          fail({ leafIndex: treeSize, eventSeq: null, eventId: null, problem: `a signed head covers ${h.treeSize} leaves but the tree has only ${treeSize}: leaves ${treeSize}..${h.treeSize - 1} were removed` });
        }
        const w = witnessChecks.length ? witnessChecks[witnessChecks.length - 1] : undefined;
        if (w && w.size > treeSize) fail({ leafIndex: treeSize, eventSeq: null, eventId: null, problem: `the witness holds a head of size ${w.size} but the database's tree has only ${treeSize} leaves: leaves ${treeSize}..${w.size - 1} were removed` });
        if (latest && treeSize > latest.treeSize) {
          fail({ leafIndex: latest.treeSize, eventSeq: null, eventId: null, problem: `leaves ${latest.treeSize}..${treeSize - 1} are not covered by any signed head` });
        }
      }
      await headStream.drain().catch(() => {});
      return {
        tenantId,
        ok: !bad,
        events,
        treeSize,
        pending,
        heads,
        latestHead: latest ? { size: latest.treeSize, root: latest.rootHash.toString('base64'), signedAt: latest.signedAt.toISOString() } : null,
        signaturesChecked: !!key,
        witness: opts.witness ? { records: witnessChecks.length, latestSize: witnessChecks.length ? witnessChecks[witnessChecks.length - 1]!.size : null } : null,
        ...(bad ? { firstBad: bad } : {}),
      };
    });
}
