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
 * (another instance) cannot make the picture inconsistent.
 */
import type { Kysely } from 'kysely';
import type { DB } from '../db/schema.ts';
import { enterTenant } from '../db/tenant.ts';
import { CompactRange, leafHash } from './merkle.ts';
import {
  countEvents,
  countEventsUpTo,
  countPending,
  eventsMissingFromTree,
  headsAfter,
  latestHead,
  leavesWithEntries,
  NODE_STRIDE,
  nodesCompletedIn,
  type Head,
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
}

interface Check {
  size: number;
  head?: Head;
  witness?: WitnessRecord;
}

/** Compares non-negative decimal strings without leading zeros (xid8 and bigint as the database prints them). */
function cmpDecimal(a: string, b: string): number {
  return a.length !== b.length ? a.length - b.length : a < b ? -1 : a > b ? 1 : 0;
}

function keyLess(a: { xid: string; seq: string }, b: { xid: string; seq: string }): boolean {
  const c = cmpDecimal(a.xid, b.xid);
  return c !== 0 ? c < 0 : cmpDecimal(a.seq, b.seq) < 0;
}

export async function verifyTenant(db: Kysely<DB>, tenantId: string, opts: VerifyOptions = {}): Promise<TenantVerifyReport> {
  const pageSize = opts.pageSize ?? 5000;
  const key = opts.key ?? null;
  const origin = originFor(tenantId);
  return db
    .transaction()
    .setIsolationLevel('repeatable read')
    .execute(async (trx) => {
      await enterTenant(trx, tenantId);
      const latest = await latestHead(trx, tenantId);
      const events = await countEvents(trx, tenantId);
      const pending = await countPending(trx, tenantId, latest ? { xid: latest.lastXid, seq: latest.lastSeq } : null);
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
      let prevKey: { xid: string; seq: string } | null = null;
      let prevRow: { seq: string | null; eventId: string } | null = null;
      let lastGood = 0; // every leaf below this is vouched for by a head that checked
      let witnessGood = 0; // …and by a witness record that agreed
      let headCursor = 0;
      let headPage: Head[] = [];
      let wi = 0;
      let stopped = false;

      let headsExhausted = false;
      const nextHead = async (): Promise<Head | undefined> => {
        if (!headPage.length && !headsExhausted) {
          headPage = await headsAfter(trx, tenantId, headCursor, 1000);
          headsExhausted = headPage.length === 0;
        }
        return headPage[0];
      };

      const checkAt = async (n: number, lastRow: { xid: string | null; seq: string | null } | null) => {
        const root = frontier.root();
        for (let h = await nextHead(); h && h.treeSize === n; h = await nextHead()) {
          headPage.shift();
          headCursor = h.treeSize;
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
          if (lastRow && (lastRow.xid !== h.lastXid || lastRow.seq !== h.lastSeq)) {
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

      let next = 0;
      let page = leavesWithEntries(trx, tenantId, 0, pageSize);
      page.catch(() => {});
      while (!stopped) {
        const rows = await page;
        if (!rows.length) break;
        const end = next + pageSize;
        const stored = await nodesCompletedIn(trx, tenantId, next, end);
        // Ask for the next page now: the database works on it while we hash this one.
        page = leavesWithEntries(trx, tenantId, end, end + pageSize);
        page.catch(() => {});
        let lastRow: { xid: string | null; seq: string | null } | null = null;
        for (const r of rows) {
          const at = (problem: string): BadLeaf => ({ leafIndex: next, eventSeq: r.seq, eventId: r.eventId, problem });
          if (r.index !== next) {
            fail({ leafIndex: next, eventSeq: null, eventId: null, problem: `leaf ${next} is missing from the tree (the leaves jump to ${r.index})` });
            stopped = true;
            break;
          }
          if (r.entry === null) {
            fail(at(`event ${r.eventId} is missing from audit_events (removed)`));
            stopped = true;
            break;
          }
          const h = leafHash(r.entry);
          if (!h.equals(r.leafHash)) {
            fail(at('the event does not match the leaf it was sealed as (changed)'));
            stopped = true;
            break;
          }
          const k = { xid: r.xid!, seq: r.seq! };
          if (prevKey && prevRow && !keyLess(prevKey, k)) {
            // Of the two, the earlier leaf is the first one out of place whenever one event was moved ahead.
            fail({ leafIndex: next - 1, eventSeq: prevRow.seq, eventId: prevRow.eventId, problem: `leaves ${next - 1} and ${next} are out of order: the events sort the other way round (reordered)` });
            stopped = true;
            break;
          }
          prevKey = k;
          prevRow = r;
          let nodeProblem: string | null = null;
          frontier.append(h, (level, index, hash) => {
            if (level % NODE_STRIDE !== 0 || nodeProblem) return;
            const s = stored.get(`${level}:${index}`);
            if (!s) nodeProblem = `the stored hash of leaves ${index * 2 ** level}..${(index + 1) * 2 ** level - 1} is missing`;
            else if (!s.equals(hash)) nodeProblem = `the stored hash of leaves ${index * 2 ** level}..${(index + 1) * 2 ** level - 1} differs from the recomputed one`;
          });
          if (nodeProblem) {
            fail({ leafIndex: lastGood, eventSeq: null, eventId: null, problem: nodeProblem });
            stopped = true;
            break;
          }
          next++;
          lastRow = { xid: r.xid, seq: r.seq };
          await checkAt(next, lastRow);
          if (stopped) break;
        }
        if (rows.length < pageSize && !stopped) {
          // The last page: make sure no stray leaf sits past it.
          const rest = await page;
          if (rest.length) {
            fail({ leafIndex: next, eventSeq: null, eventId: null, problem: `leaf ${next} is missing from the tree (the leaves jump to ${rest[0]!.index})` });
            stopped = true;
          }
          break;
        }
      }
      // Let the prefetched query finish before the transaction ends.
      await page.catch(() => []);
      const treeSize = next;

      if (!stopped) {
        for (let h = await nextHead(); h; h = await nextHead()) {
          headPage.shift();
          headCursor = h.treeSize;
          heads++;
          fail({ leafIndex: treeSize, eventSeq: null, eventId: null, problem: `a signed head covers ${h.treeSize} leaves but the tree has only ${treeSize}: leaves ${treeSize}..${h.treeSize - 1} were removed` });
          break;
        }
        const w = witnessChecks.length ? witnessChecks[witnessChecks.length - 1] : undefined;
        if (w && w.size > treeSize) fail({ leafIndex: treeSize, eventSeq: null, eventId: null, problem: `the witness holds a head of size ${w.size} but the database's tree has only ${treeSize} leaves: leaves ${treeSize}..${w.size - 1} were removed` });
        if (latest && treeSize > latest.treeSize) {
          fail({ leafIndex: latest.treeSize, eventSeq: null, eventId: null, problem: `leaves ${latest.treeSize}..${treeSize - 1} are not covered by any signed head` });
        }
      }
      if (latest) {
        const cursor = { xid: latest.lastXid, seq: latest.lastSeq };
        if ((await countEventsUpTo(trx, tenantId, cursor)) !== latest.treeSize) {
          for (const m of await eventsMissingFromTree(trx, tenantId, cursor, 1)) {
            fail({ leafIndex: m.position, eventSeq: m.seq, eventId: m.id, problem: 'the event is in audit_events but not in the tree, although it sorts among sealed events (inserted)' });
          }
        }
      }

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
