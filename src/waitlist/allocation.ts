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
 * The facility's order is the one its candidate list shows
 * (src/waitlist/ranking.ts rankOrderSql), under the tenant's rules:
 *  categories: lifted by a declared priority (while the facility is under its
 *    cap) first, then category, then seniority, registration, reference;
 *  points: most points first (a met declared priority adds its weight while
 *    under the cap), then seniority, registration, reference.
 * Where a facility stands against its cap is taken once, when the round's
 * inputs are read: the admissions the round itself makes count from the next
 * round on, as an offer made by the facility's own referral would.
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
  /**
   * What the points order and the priorities read, per application: FLAG_*
   * bits, and how many of the facility's declared priorities the child meets.
   * Absent (a run stored before they were read): zeros, which the categories
   * order without priorities does not need.
   */
  appFlags?: Uint8Array;
  appPrioritiesMet?: Uint8Array;
  /** Per facility: 1 while its declared priorities lift children (it has some and is under its cap). */
  facilityPriorityOpen?: Uint8Array;
}

export const FLAG_SIBLING = 1;
export const FLAG_STAFF = 2;
export const FLAG_SUBSIDISED = 4;

/**
 * A facility's order as three keys per application, compared in turn (lower
 * is ahead). This is the one place the order is defined for the allocation:
 * another ordering (facility priorities, a points order) only has to fill
 * these keys. Keys rather than a comparator callback keep the round's inner
 * loop free of calls.
 */
export interface OrderKeys {
  /** Whole numbers within ±2^53: exact in a double. */
  k1: Float64Array;
  k2: Float64Array;
  k3: Int32Array;
}

export type FacilityOrder = (inputs: AllocationInputs) => OrderKeys;

const DAY_MS = 86_400_000;

/** Whether the application is lifted by a declared priority of a facility under its cap. */
export function lifted(x: AllocationInputs, a: number): boolean {
  return !!x.facilityPriorityOpen?.[x.appFacility[a]!] && (x.appPrioritiesMet?.[a] ?? 0) > 0;
}

/**
 * Categories (Quebec 2025): lifted first, then category, then seniority
 * date, then registration, then reference. Without priorities (runs stored
 * before they were read) it is the plain category order.
 */
export const categoriesOrder: FacilityOrder = (x) => {
  const n = x.appFacility.length;
  const k1 = new Float64Array(n);
  const k2 = new Float64Array(n);
  const k3 = new Int32Array(n);
  for (let c = 0; c < x.childIds.length; c++) {
    for (let a = x.choiceStart[c]!; a < x.choiceStart[c + 1]!; a++) {
      // Lift and category in the high part, date in the low: dates up to 2149 fit in 16 bits.
      k1[a] = ((lifted(x, a) ? 0 : 8) + x.appCategory[a]!) * 65536 + (x.childDesiredDay[c]! & 0xffff);
      k2[a] = x.appCreatedMs[a]!;
      k3[a] = c;
    }
  }
  return { k1, k2, k3 };
};

/** The first form's name: the categories order. */
export const quebec2025Order = categoriesOrder;

export interface PointsWeights {
  siblingAttending: number;
  parentIsStaff: number;
  notInSubsidisedCare: number;
  eachPriority: number;
  perMonthWaited: number;
}

/** Full months from day `from` to day `to` (days since 1970), as monthsWaited in src/waitlist/ranking.ts counts them. */
export function monthsWaitedDays(from: number, to: number): number {
  if (to <= from) return 0;
  const a = new Date(from * DAY_MS);
  const b = new Date(to * DAY_MS);
  let m = (b.getUTCFullYear() - a.getUTCFullYear()) * 12 + (b.getUTCMonth() - a.getUTCMonth());
  if (b.getUTCDate() < a.getUTCDate()) m -= 1;
  return Math.max(0, m);
}

/** The points of application a, its child having waited `months` full months: the same sum as pointsSql / pointsOf. */
export function pointsOfApp(x: AllocationInputs, w: PointsWeights, months: number, a: number): number {
  const f = x.appFlags?.[a] ?? 0;
  return (
    (f & FLAG_SIBLING ? w.siblingAttending : 0) +
    (f & FLAG_STAFF ? w.parentIsStaff : 0) +
    (f & FLAG_SUBSIDISED ? 0 : w.notInSubsidisedCare) +
    (x.facilityPriorityOpen?.[x.appFacility[a]!] ? (x.appPrioritiesMet?.[a] ?? 0) * w.eachPriority : 0) +
    months * w.perMonthWaited
  );
}

export function dayOfIso(iso: string): number {
  return Math.floor(Date.parse(`${iso}T00:00:00Z`) / DAY_MS);
}

/** Points: most points first, then seniority date, then registration, then reference. */
export function pointsOrder(w: PointsWeights, today: string): FacilityOrder {
  const todayDay = dayOfIso(today);
  return (x) => {
    const n = x.appFacility.length;
    const k1 = new Float64Array(n);
    const k2 = new Float64Array(n);
    const k3 = new Int32Array(n);
    for (let c = 0; c < x.childIds.length; c++) {
      const months = monthsWaitedDays(x.childDesiredDay[c]!, todayDay);
      for (let a = x.choiceStart[c]!; a < x.choiceStart[c + 1]!; a++) {
        // Fewer points is behind: the negated points in the high part, the date in the low.
        k1[a] = -pointsOfApp(x, w, months, a) * 65536 + (x.childDesiredDay[c]! & 0xffff);
        k2[a] = x.appCreatedMs[a]!;
        k3[a] = c;
      }
    }
    return { k1, k2, k3 };
  };
}

/**
 * The order a run's parameters name: 'categories' (and 'quebec-2025', the
 * name runs were stored under before priorities were read), or 'points' with
 * its weights and the day months are counted to. null: unknown here.
 */
export function orderFor(params: { order: string; today: string; weights?: PointsWeights }): FacilityOrder | null {
  if (params.order === 'categories' || params.order === 'quebec-2025') return categoriesOrder;
  if (params.order === 'points' && params.weights) return pointsOrder(params.weights, params.today);
  return null;
}

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
export function allocate(x: AllocationInputs, order: FacilityOrder = categoriesOrder, onProgress?: (done: number) => void): AllocationResult {
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

const MAGIC_V1 = Buffer.from('GUICHET-ALLOC-1\n', 'ascii');
/** Version 2 adds the applications' flags and priorities met, and the facilities' priority state. */
const MAGIC = Buffer.from('GUICHET-ALLOC-2\n', 'ascii');

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
    le(x.appFlags ?? new Uint8Array(x.appFacility.length)),
    le(x.appPrioritiesMet ?? new Uint8Array(x.appFacility.length)),
    le(x.facilityPriorityOpen ?? new Uint8Array(x.facilityIds.length)),
  ]);
}

export class SnapshotError extends Error {}

export function decodeInputs(buf: Buffer): AllocationInputs {
  const head = buf.subarray(0, MAGIC.length);
  const v2 = head.equals(MAGIC);
  if (buf.length < MAGIC.length + 12 || !(v2 || head.equals(MAGIC_V1))) throw new SnapshotError('allocation snapshot: not a Guichet allocation snapshot');
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
  if (v2) {
    x.appFlags = new Uint8Array(take(na));
    x.appPrioritiesMet = new Uint8Array(take(na));
    x.facilityPriorityOpen = new Uint8Array(take(nf));
  }
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
  // Keys sorted at every depth: the stored parameters come back from jsonb, which keeps its own key order (the points weights).
  const sorted = (v: unknown): unknown =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, x]) => [k, sorted(x)])) : v;
  return JSON.stringify(sorted(p));
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
export function checkStable(x: AllocationInputs, r: AllocationResult, order: FacilityOrder = categoriesOrder): string | null {
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
