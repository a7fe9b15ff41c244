/**
 * Coordinated allocation: one deferred-acceptance round (Gale–Shapley,
 * children proposing). Pure: typed arrays in, typed arrays out, no database,
 * no clock, so that a stored run can be replayed bit for bit and a round over
 * 1,000,000 children with 10 choices each stays within a few seconds.
 *
 * Children propose to their choices in their order of preference. Each
 * facility and age group (a "slot") holds its best proposals up to its
 * vacancies, in the facility's order, and lets go of the worst held one when a
 * better one arrives. The result is the stable assignment that every child
 * likes best among stable ones: no child and facility prefer each other to
 * what they got, and no child gains by misreporting its preferences.
 *
 * Ties: none can occur. The order is total within a slot: its last term is
 * the child's position in reference order (references are unique in a
 * tenant) and a child applies at most once to a facility.
 *
 * Siblings: each child proposes alone. A sibling already attending a facility
 * counts through the order (categories 1 and 3 of the Quebec rules); siblings
 * who wait together are not kept together. Keeping them together is the
 * "couples" problem of matching: a stable assignment may then not exist, and
 * finding one is NP-hard, so a round could no longer promise stability nor
 * be fast. Families whose siblings land apart see it in the explanation, and
 * the next round's sibling category (one admitted) favours the other.
 */
import { createHash } from 'node:crypto';
import { endianness } from 'node:os';
import { gunzipSync, gzipSync } from 'node:zlib';

export const INFANT = 0;
export const TODDLER = 1;

/** Everything a round reads: ids are kept beside the arrays only to name things in outputs. */
export interface AllocationInputs {
  /** Child ids, in reference order: the index is the last term of the order. */
  childIds: string[];
  /** Desired entry date, as days since 1970-01-01. */
  childDesiredDay: Int32Array;
  /** INFANT or TODDLER at the start of care. */
  childAgeGroup: Uint8Array;
  /** Child c's applications are appFacility[choiceStart[c] .. choiceStart[c+1]), first choice first. */
  choiceStart: Int32Array;
  facilityIds: string[];
  appFacility: Int32Array;
  /** The order's category (Quebec: 1..5) of each application. */
  appCategory: Uint8Array;
  /** When the application was made (ms since epoch): registration time in the order. */
  appCreatedMs: Float64Array;
  /** Open places per slot: index facility * 2 + age group. */
  vacancies: Int32Array;
}

/**
 * A facility's order as three keys per application, compared in turn (lower
 * is ahead). This is the one place the order is defined for the allocation:
 * another ordering (facility priorities, a points order) only has to fill
 * these keys. Keys rather than a comparator callback keep the round's inner
 * loop free of calls.
 */
export interface OrderKeys {
  k1: Int32Array;
  k2: Float64Array;
  k3: Int32Array;
}

export type FacilityOrder = (inputs: AllocationInputs) => OrderKeys;

/** Quebec 2025 (src/waitlist/ranking.ts): category, then desired entry date, then registration, then reference. */
export const quebec2025Order: FacilityOrder = (x) => {
  const n = x.appFacility.length;
  const k1 = new Int32Array(n);
  const k2 = new Float64Array(n);
  const k3 = new Int32Array(n);
  for (let c = 0; c < x.childIds.length; c++) {
    for (let a = x.choiceStart[c]!; a < x.choiceStart[c + 1]!; a++) {
      // Category in the high bits, date in the low: dates up to 2149 fit in 16 bits.
      k1[a] = (x.appCategory[a]! << 16) | (x.childDesiredDay[c]! & 0xffff);
      k2[a] = x.appCreatedMs[a]!;
      k3[a] = c;
    }
  }
  return { k1, k2, k3 };
};

export const ORDERS: Record<string, FacilityOrder> = { 'quebec-2025': quebec2025Order };

export interface AllocationResult {
  /** The application each child got, or -1. */
  assigned: Int32Array;
  /** Per slot: how many admitted, and the worst admitted application (-1 when none). */
  admitted: Int32Array;
  lastAdmitted: Int32Array;
  /** Proposals made, for the record. */
  proposals: number;
}

export function appChildren(x: AllocationInputs): Int32Array {
  const out = new Int32Array(x.appFacility.length);
  for (let c = 0; c < x.childIds.length; c++) out.fill(c, x.choiceStart[c]!, x.choiceStart[c + 1]!);
  return out;
}

/**
 * One round. `onProgress` is called now and then with the share of children
 * settled at least once (0..1), for a progress bar.
 */
export function allocate(x: AllocationInputs, order: FacilityOrder = quebec2025Order, onProgress?: (done: number) => void): AllocationResult {
  const nChildren = x.childIds.length;
  const nSlots = x.vacancies.length;
  const { k1, k2, k3 } = order(x);
  const appChild = appChildren(x);

  // Each slot's held applications live in one shared array, as a binary
  // max-heap (worst at the top) of at most its vacancies.
  const heapStart = new Int32Array(nSlots + 1);
  for (let s = 0; s < nSlots; s++) heapStart[s + 1] = heapStart[s]! + Math.max(0, x.vacancies[s]!);
  const heap = new Int32Array(heapStart[nSlots]!);
  const size = new Int32Array(nSlots);
  const next = new Int32Array(nChildren);
  const assigned = new Int32Array(nChildren).fill(-1);

  /** a is behind b in the facility's order (a is worse). */
  const behind = (a: number, b: number): boolean => {
    const d1 = k1[a]! - k1[b]!;
    if (d1 !== 0) return d1 > 0;
    const d2 = k2[a]! - k2[b]!;
    if (d2 !== 0) return d2 > 0;
    return k3[a]! > k3[b]!;
  };

  let proposals = 0;
  const step = Math.max(1, Math.floor(nChildren / 100));
  for (let first = 0; first < nChildren; first++) {
    if (onProgress && first % step === 0) onProgress(first / nChildren);
    let c = first;
    // c proposes until held somewhere or out of choices; whoever it bumps proposes next.
    while (c >= 0) {
      const end = x.choiceStart[c + 1]!;
      let holder = -1;
      while (x.choiceStart[c]! + next[c]! < end) {
        const a = x.choiceStart[c]! + next[c]!++;
        proposals++;
        const s = x.appFacility[a]! * 2 + x.childAgeGroup[c]!;
        const base = heapStart[s]!;
        const cap = heapStart[s + 1]! - base;
        if (cap === 0) continue;
        const n = size[s]!;
        if (n < cap) {
          // sift up
          let i = n;
          while (i > 0) {
            const p = (i - 1) >> 1;
            const pa = heap[base + p]!;
            if (!behind(a, pa)) break;
            heap[base + i] = pa;
            i = p;
          }
          heap[base + i] = a;
          size[s] = n + 1;
          assigned[c] = a;
          break;
        }
        const worst = heap[base]!;
        if (!behind(worst, a)) continue;
        // replace the top, sift down
        let i = 0;
        for (;;) {
          const l = 2 * i + 1;
          if (l >= n) break;
          const r = l + 1;
          let m = l;
          if (r < n && behind(heap[base + r]!, heap[base + l]!)) m = r;
          if (!behind(heap[base + m]!, a)) break;
          heap[base + i] = heap[base + m]!;
          i = m;
        }
        heap[base + i] = a;
        assigned[c] = a;
        holder = appChild[worst]!;
        assigned[holder] = -1;
        break;
      }
      c = holder;
    }
  }
  onProgress?.(1);

  const lastAdmitted = new Int32Array(nSlots).fill(-1);
  for (let s = 0; s < nSlots; s++) if (size[s]! > 0) lastAdmitted[s] = heap[heapStart[s]!]!;
  return { assigned, admitted: size, lastAdmitted, proposals };
}

// ---------------------------------------------------------------------------
// Snapshot and hashes: what a stored run keeps to be replayed.

const MAGIC = Buffer.from('GUICHET-ALLOC-1\n', 'ascii');

function uuidBytes(ids: string[]): Buffer {
  const out = Buffer.alloc(ids.length * 16);
  ids.forEach((id, i) => out.write(id.replace(/-/g, ''), i * 16, 16, 'hex'));
  return out;
}

function uuidsOf(buf: Buffer, count: number): string[] {
  const out = new Array<string>(count);
  for (let i = 0; i < count; i++) {
    const h = buf.toString('hex', i * 16, i * 16 + 16);
    out[i] = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }
  return out;
}

/** Typed arrays as little-endian bytes, whatever the machine. */
function le(a: Int32Array | Float64Array | Uint8Array): Buffer {
  const b = Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  if (endianness() === 'LE' || a instanceof Uint8Array) return Buffer.from(b);
  const c = Buffer.from(b);
  if (a instanceof Int32Array) c.swap32();
  else c.swap64();
  return c;
}

function fromLe<T extends Int32Array | Float64Array>(ctor: new (b: ArrayBuffer) => T, bytes: Buffer): T {
  const c = Buffer.from(bytes);
  if (endianness() !== 'LE') {
    if (ctor === (Int32Array as unknown)) c.swap32();
    else c.swap64();
  }
  return new ctor(c.buffer.slice(c.byteOffset, c.byteOffset + c.byteLength));
}

/** The inputs as one canonical byte string (no names, no birth dates). */
export function encodeInputs(x: AllocationInputs): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt32LE(x.childIds.length, 0);
  header.writeUInt32LE(x.appFacility.length, 4);
  header.writeUInt32LE(x.facilityIds.length, 8);
  return Buffer.concat([
    MAGIC,
    header,
    uuidBytes(x.childIds),
    uuidBytes(x.facilityIds),
    le(x.childDesiredDay),
    le(x.choiceStart),
    le(x.appFacility),
    le(x.appCreatedMs),
    le(x.vacancies),
    le(x.childAgeGroup),
    le(x.appCategory),
  ]);
}

export class SnapshotError extends Error {}

export function decodeInputs(buf: Buffer): AllocationInputs {
  if (buf.length < MAGIC.length + 12 || !buf.subarray(0, MAGIC.length).equals(MAGIC)) throw new SnapshotError('allocation snapshot: not a Guichet allocation snapshot');
  let o = MAGIC.length;
  const nc = buf.readUInt32LE(o);
  const na = buf.readUInt32LE(o + 4);
  const nf = buf.readUInt32LE(o + 8);
  o += 12;
  const take = (n: number) => {
    if (o + n > buf.length) throw new SnapshotError('allocation snapshot: truncated');
    const s = buf.subarray(o, o + n);
    o += n;
    return s;
  };
  const childIds = uuidsOf(take(nc * 16), nc);
  const facilityIds = uuidsOf(take(nf * 16), nf);
  const x: AllocationInputs = {
    childIds,
    facilityIds,
    childDesiredDay: fromLe(Int32Array, take(nc * 4)),
    choiceStart: fromLe(Int32Array, take((nc + 1) * 4)),
    appFacility: fromLe(Int32Array, take(na * 4)),
    appCreatedMs: fromLe(Float64Array, take(na * 8)),
    vacancies: fromLe(Int32Array, take(nf * 2 * 4)),
    childAgeGroup: new Uint8Array(take(nc)),
    appCategory: new Uint8Array(take(na)),
  };
  if (o !== buf.length) throw new SnapshotError('allocation snapshot: trailing bytes');
  return x;
}

export function compressSnapshot(bytes: Buffer): Buffer {
  // Level 1: most of the gain for a fraction of the time on a 100 MB snapshot.
  return gzipSync(bytes, { level: 1 });
}

export function decompressSnapshot(bytes: Buffer): Buffer {
  return gunzipSync(bytes, { maxOutputLength: 2 ** 31 - 1 });
}

/** Parameters are part of the inputs: same data, other rules, another hash. */
export function canonicalParameters(p: Record<string, unknown>): string {
  return JSON.stringify(Object.fromEntries(Object.entries(p).sort(([a], [b]) => (a < b ? -1 : 1))));
}

export function inputsHash(snapshot: Buffer, parameters: Record<string, unknown>): Buffer {
  return createHash('sha256').update('guichet allocation inputs v1\n').update(canonicalParameters(parameters)).update('\n').update(snapshot).digest();
}

/** Bound to the inputs: the assignment by index means something only with them. */
export function outputsHash(inputs: Buffer, r: AllocationResult): Buffer {
  return createHash('sha256').update('guichet allocation outputs v1\n').update(inputs).update(le(r.assigned)).digest();
}

/** What the signature covers: one line per term, no room for ambiguity. */
export function signedText(runId: string, tenantId: string, parameters: Record<string, unknown>, inHash: Buffer, outHash: Buffer): string {
  return `guichet allocation run v1\nrun ${runId}\ntenant ${tenantId}\nparameters ${canonicalParameters(parameters)}\ninputs ${inHash.toString('hex')}\noutputs ${outHash.toString('hex')}\n`;
}

// ---------------------------------------------------------------------------
// Checking a result (tests and replay use it; cheap enough for a real run too).

/**
 * Stable and within capacity: every slot holds at most its vacancies, and no
 * child prefers a slot that would rather have it than one it holds (or that
 * has room). Returns the first breach found, or null.
 */
export function checkStable(x: AllocationInputs, r: AllocationResult, order: FacilityOrder = quebec2025Order): string | null {
  const { k1, k2, k3 } = order(x);
  const behind = (a: number, b: number) => (k1[a] !== k1[b] ? k1[a]! > k1[b]! : k2[a] !== k2[b] ? k2[a]! > k2[b]! : k3[a]! > k3[b]!);
  const nSlots = x.vacancies.length;
  const held = new Int32Array(nSlots);
  const worst = new Int32Array(nSlots).fill(-1);
  for (let c = 0; c < x.childIds.length; c++) {
    const a = r.assigned[c]!;
    if (a < 0) continue;
    if (a < x.choiceStart[c]! || a >= x.choiceStart[c + 1]!) return `child ${c} got an application that is not its own`;
    const s = x.appFacility[a]! * 2 + x.childAgeGroup[c]!;
    held[s]!++;
    if (worst[s]! < 0 || behind(a, worst[s]!)) worst[s] = a;
  }
  for (let s = 0; s < nSlots; s++) if (held[s]! > Math.max(0, x.vacancies[s]!)) return `slot ${s} holds ${held[s]} for ${x.vacancies[s]} places`;
  for (let c = 0; c < x.childIds.length; c++) {
    const got = r.assigned[c]!;
    const stop = got < 0 ? x.choiceStart[c + 1]! : got;
    for (let a = x.choiceStart[c]!; a < stop; a++) {
      const s = x.appFacility[a]! * 2 + x.childAgeGroup[c]!;
      if (held[s]! < Math.max(0, x.vacancies[s]!)) return `child ${c} wanted slot ${s}, which kept a place free`;
      if (behind(worst[s]!, a)) return `child ${c} and slot ${s} prefer each other`;
    }
  }
  return null;
}
