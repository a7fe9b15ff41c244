/**
 * Witnesses: who else holds the signed heads. Rewriting the log means
 * re-signing heads, and a head a witness already holds cannot be taken back,
 * so a rewrite disagrees with the witness's copy.
 *
 * - The file witness appends every head, as one JSON line, to a file meant to
 *   live outside the database's reach (another disk, a write-once bucket
 *   synced from it, a log shipper): GUICHET_WITNESS_FILE, by default
 *   $GUICHET_DATA_DIR/audit-witness.jsonl. `guichet audit verify` and the
 *   security console read it back.
 * - The HTTP witness (GUICHET_WITNESS_URL) speaks c2sp.org/tlog-witness:
 *   POST add-checkpoint with the witness's last size and a consistency proof
 *   from it, so the witness itself refuses a rewritten log, and answers with
 *   its cosignature.
 */
import { open, readFile, stat, mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { ConfigError } from '../config/config.ts';
import { originFor, parseCheckpointText } from './verify-bundle.ts';

export interface WitnessConfig {
  file: string | null;
  url: string | null;
}

/** The CLI and `guichet serve` report it like any other configuration error (exit 2, the variable named). */
export class WitnessConfigError extends ConfigError {}

/** Reads the witness settings from the environment; an invalid value names its variable. */
export function witnessConfig(env: NodeJS.ProcessEnv, dataDir: string): WitnessConfig {
  const fileVar = env.GUICHET_WITNESS_FILE;
  const file = fileVar === 'off' ? null : resolve(fileVar || join(dataDir, 'audit-witness.jsonl'));
  let url: string | null = null;
  if (env.GUICHET_WITNESS_URL) {
    let u: URL;
    try {
      u = new URL(env.GUICHET_WITNESS_URL);
    } catch {
      throw new WitnessConfigError('GUICHET_WITNESS_URL', 'not a URL');
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new WitnessConfigError('GUICHET_WITNESS_URL', 'must be an http:// or https:// URL');
    url = u.toString();
  }
  return { file, url };
}

/** One line of the witness file. */
export interface WitnessRecord {
  origin: string;
  tree_size: number;
  root_hash: string;
  time: string;
  checkpoint: string;
  witnessed_at: string;
}

export function witnessRecord(checkpoint: string, at: Date): WitnessRecord {
  const text = checkpoint.slice(0, checkpoint.lastIndexOf('\n\n') + 1);
  const cp = parseCheckpointText(text);
  return { origin: cp.origin, tree_size: cp.size, root_hash: cp.root.toString('base64'), time: cp.time.toISOString(), checkpoint, witnessed_at: at.toISOString() };
}

/**
 * Appends records, each a line, and waits until they are on disk: a head is
 * only worth something to an auditor once it is out of the database's hands.
 * Appends are serialised so that concurrent seals never interleave lines.
 */
export class FileWitness {
  private queue: Promise<void> = Promise.resolve();
  constructor(readonly path: string) {}

  append(records: readonly WitnessRecord[]): Promise<void> {
    if (!records.length) return this.queue;
    const text = records.map((r) => `${JSON.stringify(r)}\n`).join('');
    const run = this.queue.then(async () => {
      await mkdir(dirname(this.path), { recursive: true });
      const fh = await open(this.path, 'a', 0o640);
      try {
        await fh.write(text);
        await fh.datasync();
      } finally {
        await fh.close();
      }
    });
    this.queue = run.catch(() => {});
    return run;
  }
}

export interface WitnessFileContents {
  /** Records per origin, in file order. */
  byOrigin: Map<string, WitnessRecord[]>;
  /** Lines that are not records (a damaged or forged file), with their line numbers. */
  malformed: number[];
}

/** Reads the witness file; a missing file reads as empty. `tailBytes` reads only the end (the latest records). */
export async function readWitnessFile(path: string, opts: { tailBytes?: number } = {}): Promise<WitnessFileContents> {
  const byOrigin = new Map<string, WitnessRecord[]>();
  const malformed: number[] = [];
  let text: string;
  try {
    if (opts.tailBytes) {
      const { size } = await stat(path);
      const start = Math.max(0, size - opts.tailBytes);
      const fh = await open(path, 'r');
      try {
        const buf = Buffer.alloc(size - start);
        await fh.read(buf, 0, buf.length, start);
        text = buf.toString('utf8');
        // A partial first line is not a record.
        if (start > 0) text = text.slice(text.indexOf('\n') + 1);
      } finally {
        await fh.close();
      }
    } else {
      text = await readFile(path, 'utf8');
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { byOrigin, malformed };
    throw err;
  }
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    if (!line) return;
    try {
      const r = JSON.parse(line) as WitnessRecord;
      if (typeof r.origin !== 'string' || !Number.isSafeInteger(r.tree_size) || typeof r.root_hash !== 'string' || typeof r.checkpoint !== 'string') throw new Error('shape');
      const list = byOrigin.get(r.origin) ?? [];
      list.push(r);
      byOrigin.set(r.origin, list);
    } catch {
      malformed.push(i + 1);
    }
  });
  return { byOrigin, malformed };
}

export function witnessRecordsFor(contents: WitnessFileContents, tenantId: string): WitnessRecord[] {
  return contents.byOrigin.get(originFor(tenantId)) ?? [];
}

export type HttpWitnessState =
  | { state: 'idle' }
  | { state: 'ok'; size: number; at: string; cosignature: string }
  | { state: 'error'; at: string; message: string; size: number | null };

/**
 * The tlog-witness client for one witness URL. The witness's last size per
 * log is learnt from its 409 answers; the consistency proof from there is
 * computed by `proof`. At most one request per log is in flight; a newer head
 * replaces one still waiting.
 */
export class HttpWitness {
  private readonly known = new Map<string, number>();
  private readonly waiting = new Map<string, { size: number; checkpoint: string }>();
  private readonly busy = new Set<string>();
  readonly states = new Map<string, HttpWitnessState>();
  /** Heads to offer again with the next seal (transient failures). */
  readonly retry = new Map<string, { size: number; checkpoint: string }>();
  private running: Promise<void>[] = [];

  constructor(
    readonly url: string,
    private readonly proof: (tenantId: string, from: number, to: number) => Promise<Buffer[]>,
    private readonly onProblem: (tenantId: string, message: string, alarm: boolean) => void,
    private readonly timeoutMs = 5000,
  ) {}

  submit(tenantId: string, head: { size: number; checkpoint: string }): void {
    const w = this.waiting.get(tenantId);
    if (!w || w.size < head.size) this.waiting.set(tenantId, head);
    if (!this.busy.has(tenantId)) {
      const p = this.pump(tenantId).finally(() => {
        this.running = this.running.filter((x) => x !== p);
      });
      this.running.push(p);
    }
  }

  /** Waits for the requests in flight (shutdown, tests). */
  async settle(): Promise<void> {
    while (this.running.length) await Promise.allSettled(this.running);
  }

  private async pump(tenantId: string): Promise<void> {
    this.busy.add(tenantId);
    try {
      for (;;) {
        const head = this.waiting.get(tenantId);
        if (!head) return;
        this.waiting.delete(tenantId);
        await this.send(tenantId, head);
      }
    } finally {
      this.busy.delete(tenantId);
    }
  }

  private async send(tenantId: string, head: { size: number; checkpoint: string }): Promise<void> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const old = Math.min(this.known.get(tenantId) ?? 0, head.size);
      let res: Response;
      try {
        const proof = old > 0 && old < head.size ? await this.proof(tenantId, old, head.size) : [];
        const body = `old ${old}\n${proof.map((p) => `${p.toString('base64')}\n`).join('')}\n${head.checkpoint}`;
        res = await fetch(this.url, { method: 'POST', body, headers: { 'content-type': 'text/plain; charset=utf-8' }, signal: AbortSignal.timeout(this.timeoutMs) });
      } catch (err) {
        return this.fail(tenantId, head, `unreachable: ${(err as Error).message}`, false);
      }
      const text = await res.text().catch(() => '');
      if (res.status === 200) {
        this.known.set(tenantId, head.size);
        this.states.set(tenantId, { state: 'ok', size: head.size, at: new Date().toISOString(), cosignature: text.slice(0, 4096) });
        return;
      }
      if (res.status === 409 && /^text\/x\.tlog\.size/.test(res.headers.get('content-type') ?? '')) {
        const size = /^(\d{1,16})\n?$/.test(text) ? Number(text.trim()) : NaN;
        if (!Number.isSafeInteger(size)) return this.fail(tenantId, head, 'answered 409 without a valid size', false);
        if (size > head.size) {
          // The witness holds a bigger tree than ours: our log lost leaves, or someone else signs for it.
          this.known.set(tenantId, size);
          return this.fail(tenantId, head, `holds a head of size ${size}, larger than ours (${head.size}): the log was rolled back or forked`, true);
        }
        this.known.set(tenantId, size);
        continue;
      }
      const alarm = res.status === 409 || res.status === 422 || res.status === 403;
      const why =
        res.status === 422
          ? 'refused the consistency proof: our tree is not an extension of what it holds'
          : res.status === 409
            ? 'holds a different head of the same size'
            : res.status === 403
              ? 'does not accept our signature (unknown key?)'
              : res.status === 404
                ? 'does not know this log'
                : `answered HTTP ${res.status}`;
      return this.fail(tenantId, head, why, alarm);
    }
    return this.fail(tenantId, head, 'kept answering 409', false);
  }

  private fail(tenantId: string, head: { size: number; checkpoint: string }, message: string, alarm: boolean): void {
    this.states.set(tenantId, { state: 'error', at: new Date().toISOString(), message, size: this.known.get(tenantId) ?? null });
    this.onProblem(tenantId, message, alarm);
    // Retried with the next head; keep this one if nothing newer comes.
    if (!this.waiting.has(tenantId) && !alarm) this.retry.set(tenantId, head);
  }
}
