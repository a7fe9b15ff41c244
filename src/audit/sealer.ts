/**
 * The sealer: takes each tenant's new events into its Merkle tree and
 * publishes a signed tree head, at most about a second after the events
 * committed, then hands the head to the witnesses.
 *
 * Why it is safe with concurrent writers and several instances:
 * - order and completeness come from the database (migration 0004): each
 *   appending transaction takes a ticket, events are taken in (ticket, seq)
 *   order, only below the tenant's cutoff (no appender of the tenant still
 *   running holds a smaller ticket), after the last one sealed. Nothing can
 *   later appear before that point, so the tree only ever grows at its end,
 *   without gaps. Other tenants' transactions, and transactions that write no
 *   audit event, never hold a tenant back;
 * - one seal per tenant at a time: a transaction-level advisory lock, tried,
 *   not waited for, so a second instance simply skips the tenant that tick;
 * - a seal (leaves, subtree hashes, head) is one transaction: a crash leaves
 *   either all of it or none, and the next pass starts again from the last
 *   committed head;
 * - the sealer never extends a tree whose latest head does not carry a valid
 *   signature by this tenant's key over the stored tree: it would otherwise
 *   lend its signature to someone else's rewrite.
 */
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { KeyProvider } from '../crypto/keys.ts';
import type { DB } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import { leafHash } from './merkle.ts';
import { SignerCache } from './signing.ts';
import {
  compactEdge,
  consistencyProofAt,
  insertHead,
  insertLeaves,
  insertNodes,
  latestHead,
  NODE_STRIDE,
  pendingEvents,
  preferIndexOrder,
  sealCutoff,
  trySealLock,
  type Head,
} from './store.ts';
import { openCheckpoint } from './verify-bundle.ts';
import { QuietWatch } from '../jobs/quiet.ts';
import { FileWitness, HttpWitness, readWitnessFile, witnessRecord, type WitnessConfig } from './witness.ts';

export class SealRefusedError extends Error {}

export interface SealResult {
  tenantId: string;
  /** Events added to the tree by this pass. */
  sealed: number;
  /** The head signed by this pass, if any. */
  head: Head | null;
  /** Another instance holds the tenant's sealing lock. */
  busy: boolean;
  /** More events were waiting than one pass takes. */
  more: boolean;
}

export interface SealerOptions {
  /** How often the loop looks for new events. */
  intervalMs?: number;
  /** Events per seal; a bigger backlog is sealed in several passes, back to back. */
  batchMax?: number;
  witness?: WitnessConfig;
  clock?: () => Date;
  /** Called after each seal commits (metrics, benchmarks). */
  onSeal?: (tenantId: string, head: Head) => void;
  /**
   * Which tenants this sealer seals (default: all). Sealing is safe from any
   * number of instances, so this only divides the work (GUICHET_SEALER_TENANTS)
   * or keeps test runs sharing one database out of each other's tenants.
   */
  tenantFilter?: (tenant: { id: string; slug: string }) => boolean;
  /**
   * Skip the pass over every tenant while no audit event has been appended
   * since the last pass that had nothing to seal (default; src/jobs/quiet.ts).
   * Off, every tick looks at every tenant: the idle benchmark's baseline.
   */
  watchWork?: boolean;
}

/** What the sealer of this process knows about a tenant, for the security console. */
export interface SealerStatus {
  running: boolean;
  lastSealAt: string | null;
  lastError: string | null;
  witnessFile: string | null;
  witnessFileError: string | null;
  witnessUrl: string | null;
}

/** The instances running in this process, by database: the console reads their status. */
const running = new Map<Kysely<DB>, Sealer>();

export function runningSealer(db: Kysely<DB>): Sealer | undefined {
  return running.get(db);
}

export class Sealer {
  private readonly signers: SignerCache;
  private readonly intervalMs: number;
  private readonly batchMax: number;
  private readonly clock: () => Date;
  private readonly fileWitness: FileWitness | null;
  readonly httpWitness: HttpWitness | null;
  private timer: NodeJS.Timeout | null = null;
  private pass: Promise<void> | null = null;
  private stopped = true;
  private tenants: { ids: string[]; at: number } = { ids: [], at: 0 };
  private lastSealAt: Date | null = null;
  private lastError: string | null = null;
  private lastWitnessRetry = 0;
  private witnessFileError: string | null = null;
  /** The right edge after our last seal, per tenant: saves reading it back when no other instance sealed since. */
  private readonly edges = new Map<string, { size: number; root: string; edge: Awaited<ReturnType<typeof compactEdge>> }>();
  /** Appends are signalled by the ticket every appending transaction takes, under a lock held until it ends (migration 0004). */
  readonly watch: QuietWatch;

  constructor(
    private readonly db: Kysely<DB>,
    keys: KeyProvider,
    private readonly log: Logger,
    private readonly opts: SealerOptions = {},
  ) {
    this.signers = new SignerCache(keys);
    // A head at most ~0.3 s (plus the pass itself) after a commit, and at most ~3 heads a second per busy tenant.
    this.intervalMs = opts.intervalMs ?? 300;
    this.batchMax = opts.batchMax ?? 20_000;
    this.clock = opts.clock ?? (() => new Date());
    this.watch = new QuietWatch(db, 'audit', opts.watchWork ?? true);
    this.fileWitness = opts.witness?.file ? new FileWitness(opts.witness.file) : null;
    this.httpWitness = opts.witness?.url
      ? new HttpWitness(
          opts.witness.url,
          (tenantId, from, to) => inTenant(this.db, tenantId, (trx) => consistencyProofAt(trx, tenantId, from, to)),
          (tenantId, message, alarm) =>
            alarm ? this.log.error({ tenantId, witness: opts.witness?.url }, `audit witness: ${message}`) : this.log.warn({ tenantId, witness: opts.witness?.url }, `audit witness: ${message}`),
        )
      : null;
  }

  signer(tenantId: string) {
    return this.signers.for(tenantId);
  }

  status(): SealerStatus {
    return {
      running: !this.stopped,
      lastSealAt: this.lastSealAt?.toISOString() ?? null,
      lastError: this.lastError,
      witnessFile: this.opts.witness?.file ?? null,
      witnessFileError: this.witnessFileError,
      witnessUrl: this.opts.witness?.url ?? null,
    };
  }

  /**
   * Starts the loop. First hands every tenant's latest head to the witnesses
   * (a crash between a seal's commit and its witnessing would otherwise leave
   * the witness one head behind until the next seal).
   */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    running.set(this.db, this);
    this.pass = this.catchUpWitnesses()
      .catch((err) => this.log.error({ err }, 'audit witness catch-up failed'))
      .then(() => this.loop());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (running.get(this.db) === this) running.delete(this.db);
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.pass;
    await this.httpWitness?.settle();
  }

  private async loop(): Promise<void> {
    if (this.stopped) return;
    const started = Date.now();
    let again = false;
    try {
      this.lastError = null;
      const done = await this.watch.begin();
      if (done) {
        const results = await this.sealAll();
        again = results.some((r) => r.more);
        // Quiet: nothing sealed, nothing left, no tenant held by another instance's seal, no tenant failed.
        done({ quiet: this.lastError === null && results.every((r) => r.sealed === 0 && !r.busy && !r.more) });
      }
      // A witness that was down gets the heads it missed, every few seconds, until it answers.
      if (this.httpWitness?.retry.size && Date.now() - this.lastWitnessRetry > 5000) {
        this.lastWitnessRetry = Date.now();
        const due = [...this.httpWitness.retry];
        this.httpWitness.retry.clear();
        for (const [t, h] of due) this.httpWitness.submit(t, h);
      }
    } catch (err) {
      this.lastError = (err as Error).message;
      this.log.error({ err }, 'audit sealer pass failed');
    }
    if (this.stopped) return;
    const wait = again ? 0 : Math.max(0, this.intervalMs - (Date.now() - started));
    this.timer = setTimeout(() => {
      this.pass = this.loop();
    }, wait);
  }

  private async tenantIds(): Promise<string[]> {
    if (Date.now() - this.tenants.at > 10_000) {
      const rows = await this.db.selectFrom('tenants').select(['id', 'slug']).orderBy('created_at').execute();
      const keep = this.opts.tenantFilter ?? (() => true);
      this.tenants = { ids: rows.filter((r) => keep(r)).map((r) => r.id), at: Date.now() };
    }
    return this.tenants.ids;
  }

  /** One pass over every tenant (the loop's work; also what `guichet audit verify` runs first). */
  async sealAll(): Promise<SealResult[]> {
    // Outside the loop (the CLI), the tenant list is read afresh every time.
    if (this.stopped) this.tenants.at = 0;
    const out: SealResult[] = [];
    const errors: Error[] = [];
    for (const id of await this.tenantIds()) {
      try {
        out.push(await this.sealTenant(id));
      } catch (err) {
        // One tenant's trouble (a refused seal, say) must not stop the others'.
        errors.push(err as Error);
        this.log.error({ err, tenantId: id }, 'audit seal failed');
      }
    }
    if (errors.length) this.lastError = errors.map((e) => e.message).join('; ');
    return out;
  }

  /** Seals one tenant's waiting events, if any, and hands the new head to the witnesses. */
  async sealTenant(tenantId: string): Promise<SealResult> {
    const signer = this.signers.for(tenantId);
    const result = await inTenant(this.db, tenantId, async (trx): Promise<SealResult> => {
      const none = (busy: boolean): SealResult => ({ tenantId, sealed: 0, head: null, busy, more: false });
      if (!(await trySealLock(trx, tenantId))) return none(true);
      await preferIndexOrder(trx);
      const head = await latestHead(trx, tenantId);
      const cutoff = await sealCutoff(trx, tenantId);
      if (cutoff === null) return none(false);
      const events = await pendingEvents(trx, tenantId, head ? { ticket: head.lastTicket, seq: head.lastSeq } : null, cutoff, this.batchMax);
      if (!events.length) return none(false);

      const size0 = head?.treeSize ?? 0;
      if (head) {
        let cp;
        try {
          cp = openCheckpoint(head.checkpoint, signer.verifier);
        } catch (err) {
          throw new SealRefusedError(`tenant ${tenantId}: the latest head (size ${size0}) is not validly signed by this tenant's key, refusing to extend it: ${(err as Error).message}`);
        }
        if (cp.size !== size0 || !cp.root.equals(head.rootHash)) throw new SealRefusedError(`tenant ${tenantId}: the latest head's columns differ from its signed checkpoint`);
      }
      const cached = this.edges.get(tenantId);
      const edge = cached && cached.size === size0 && head && cached.root === head.rootHash.toString('hex') ? cached.edge : await compactEdge(trx, tenantId, size0);
      if (head && !edge.root().equals(head.rootHash)) {
        throw new SealRefusedError(`tenant ${tenantId}: the stored tree does not match its latest signed head (size ${size0}); refusing to extend it`);
      }
      const leaves: { index: number; eventId: string; hash: Buffer }[] = [];
      const nodes: { level: number; index: number; hash: Buffer }[] = [];
      for (const e of events) {
        const h = leafHash(e.entry);
        leaves.push({ index: size0 + leaves.length, eventId: e.id, hash: h });
        edge.append(h, (level, index, hash) => {
          if (level % NODE_STRIDE === 0) nodes.push({ level, index, hash });
        });
      }
      await insertLeaves(trx, tenantId, leaves);
      await insertNodes(trx, tenantId, nodes);
      const size = size0 + events.length;
      const root = edge.root();
      const now = this.clock();
      // Heads' times never go backwards, even across instances whose clocks differ a little.
      const signedAt = head && head.signedAt > now ? head.signedAt : now;
      const last = events[events.length - 1]!;
      const newHead: Head = { treeSize: size, rootHash: root, signedAt, keyId: signer.keyIdHex, checkpoint: signer.sign(size, root, signedAt), lastTicket: last.ticket, lastSeq: last.seq };
      await insertHead(trx, tenantId, newHead);
      this.edges.set(tenantId, { size, root: root.toString('hex'), edge });
      return { tenantId, sealed: events.length, head: newHead, busy: false, more: events.length === this.batchMax };
    }).catch((err) => {
      // The edge was advanced in memory for a transaction that did not commit.
      this.edges.delete(tenantId);
      throw err;
    });
    if (result.head) {
      this.lastSealAt = this.clock();
      this.opts.onSeal?.(tenantId, result.head);
      await this.witness(tenantId, result.head);
    }
    return result;
  }

  private async witness(tenantId: string, head: Head): Promise<void> {
    if (this.fileWitness) {
      try {
        await this.fileWitness.append([witnessRecord(head.checkpoint, this.clock())]);
        this.witnessFileError = null;
      } catch (err) {
        this.witnessFileError = (err as Error).message;
        this.log.error({ err, file: this.fileWitness.path }, 'audit witness file: append failed');
      }
    }
    this.httpWitness?.submit(tenantId, { size: head.treeSize, checkpoint: head.checkpoint });
  }

  private async catchUpWitnesses(): Promise<void> {
    if (!this.fileWitness && !this.httpWitness) return;
    const held = this.fileWitness ? await readWitnessFile(this.fileWitness.path, { tailBytes: 1 << 20 }) : null;
    for (const tenantId of await this.tenantIds()) {
      const head = await inTenant(this.db, tenantId, (trx) => latestHead(trx, tenantId));
      if (!head) continue;
      const signer = this.signers.for(tenantId);
      const records = held?.byOrigin.get(signer.origin) ?? [];
      const fileSize = records.length ? Math.max(...records.map((r) => r.tree_size)) : -1;
      if (this.fileWitness && fileSize < head.treeSize) await this.fileWitness.append([witnessRecord(head.checkpoint, this.clock())]);
      this.httpWitness?.submit(tenantId, { size: head.treeSize, checkpoint: head.checkpoint });
    }
  }
}
