/**
 * Merkle tree hashing, proofs and proof verification exactly as RFC 9162
 * §2.1 (the same tree as RFC 6962): pure functions over SHA-256, no I/O.
 *
 * Proof construction is split in two: a *plan* (which ranges D[a:b] of the
 * tree a proof is made of, straight from the RFC's recursive definitions) and
 * the hashes of those ranges. A range is always a left-aligned subtree, so it
 * decomposes into a few perfect subtrees (`perfectNodes`): a store that keeps
 * the hashes of perfect subtrees answers any proof with a handful of reads,
 * and the in-memory prover below answers it from the leaves. The verifiers are
 * written separately, from the RFC's verification algorithms (§2.1.3.2 and
 * §2.1.4.2), so that prover and verifier check each other in the tests.
 *
 * Sizes and indices are JavaScript numbers: exact up to 2^53 leaves.
 *
 * This module must import nothing but node:crypto: the standalone bundle
 * verifier (verify-bundle.ts) is built on it.
 */
import { createHash, hash as oneShot } from 'node:crypto';

export const HASH_SIZE = 32;

/** MTH({}) = SHA-256 of the empty string. */
export const EMPTY_ROOT: Buffer = createHash('sha256').digest();

// 0x00 ‖ entry, copied into one reused buffer: a one-shot hash of it is about
// twice as fast as a streaming hash fed the prefix and the entry apart.
let leafScratch = Buffer.alloc(1024);

/** SHA-256(0x00 ‖ entry): the hash of a leaf whose data is `entry` (a string is hashed as UTF-8). */
export function leafHash(entry: Uint8Array | string): Buffer {
  if (typeof entry === 'string') return oneShot('sha256', `\u0000${entry}`, 'buffer');
  if (entry.length + 1 > leafScratch.length) leafScratch = Buffer.alloc(2 * (entry.length + 1));
  leafScratch[0] = 0x00;
  leafScratch.set(entry, 1);
  return oneShot('sha256', leafScratch.subarray(0, entry.length + 1), 'buffer');
}

// One scratch buffer for node hashing: 0x01 ‖ left ‖ right, reused because
// node hashes are the hot loop of tree building and verification.
const nodeScratch = Buffer.alloc(1 + 2 * HASH_SIZE);
nodeScratch[0] = 0x01;

/** SHA-256(0x01 ‖ left ‖ right): the hash of an interior node. */
export function nodeHash(left: Uint8Array, right: Uint8Array): Buffer {
  if (left.length !== HASH_SIZE || right.length !== HASH_SIZE) throw new RangeError('nodeHash: hashes must be 32 bytes');
  nodeScratch.set(left, 1);
  nodeScratch.set(right, 1 + HASH_SIZE);
  return oneShot('sha256', nodeScratch, 'buffer');
}

function assertSize(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${what} must be a whole number from 0 to 2^53`);
}

/** The largest power of two strictly less than n (n ≥ 2): the RFC's split point k. */
export function splitPoint(n: number): number {
  if (n < 2) throw new RangeError('splitPoint: n must be at least 2');
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** A range D[start:end) of leaves; its hash is MTH(D[start:end)). */
export type Range = readonly [start: number, end: number];

/** A perfect subtree: 2^level leaves starting at index · 2^level. */
export interface PerfectNode {
  readonly level: number;
  readonly index: number;
}

/**
 * The perfect subtrees whose hashes, folded from the right, give MTH(D[a:b]),
 * for a range that is a subtree of the tree (every range a proof plan names
 * is one). Largest first: by the RFC's split rule, MTH(D[a:b]) =
 * HASH(0x01 ‖ MTH(D[a:a+k]) ‖ MTH(D[a+k:b])) with k the largest power of two
 * below b − a, and D[a:a+k] is perfect.
 */
export function perfectNodes(range: Range): PerfectNode[] {
  let [a, b] = range;
  if (!(b > a)) throw new RangeError('perfectNodes: empty range');
  const out: PerfectNode[] = [];
  while (a < b) {
    let size = 1;
    let level = 0;
    while (size * 2 <= b - a) {
      size *= 2;
      level++;
    }
    if (a % size !== 0) throw new RangeError(`perfectNodes: [${range[0]}, ${range[1]}) is not a subtree`);
    out.push({ level, index: a / size });
    a += size;
  }
  return out;
}

/** Folds the hashes of perfectNodes(range), in that order, into MTH of the range. */
export function foldPerfect(hashes: readonly Buffer[]): Buffer {
  if (!hashes.length) throw new RangeError('foldPerfect: no hashes');
  let acc = hashes[hashes.length - 1]!;
  for (let i = hashes.length - 2; i >= 0; i--) acc = nodeHash(hashes[i]!, acc);
  return acc;
}

/**
 * PATH(m, D[n]) of RFC 9162 §2.1.3.1, as the ranges whose hashes make the
 * inclusion proof, leaf to root.
 */
export function inclusionPlan(index: number, size: number): Range[] {
  assertSize(index, 'leaf index');
  assertSize(size, 'tree size');
  if (index >= size) throw new RangeError(`leaf index ${index} is not in a tree of size ${size}`);
  const path: Range[] = [];
  const walk = (m: number, a: number, b: number): void => {
    if (b - a <= 1) return;
    const k = splitPoint(b - a);
    if (m < k) {
      walk(m, a, a + k);
      path.push([a + k, b]);
    } else {
      walk(m - k, a + k, b);
      path.push([a, a + k]);
    }
  };
  walk(index, 0, size);
  return path;
}

/**
 * PROOF(m, D[n]) = SUBPROOF(m, D[n], true) of RFC 9162 §2.1.4.1, as ranges.
 * Empty when m = 0 or m = n (nothing to prove).
 */
export function consistencyPlan(size1: number, size2: number): Range[] {
  assertSize(size1, 'first tree size');
  assertSize(size2, 'second tree size');
  if (size1 > size2) throw new RangeError(`a tree of size ${size1} cannot precede one of size ${size2}`);
  if (size1 === 0 || size1 === size2) return [];
  const proof: Range[] = [];
  const sub = (m: number, a: number, b: number, known: boolean): void => {
    if (m === b - a) {
      if (!known) proof.push([a, b]);
      return;
    }
    const k = splitPoint(b - a);
    if (m <= k) {
      sub(m, a, a + k, known);
      proof.push([a + k, b]);
    } else {
      sub(m - k, a + k, b, false);
      proof.push([a, a + k]);
    }
  };
  sub(size1, 0, size2, true);
  return proof;
}

/** MTH(D[a:b]) computed from all the leaf hashes (in-memory; tests, small trees, bundles). */
export function rangeHash(leafHashes: readonly Buffer[], range: Range): Buffer {
  const [a, b] = range;
  if (b > leafHashes.length || a < 0 || !(b > a)) throw new RangeError(`rangeHash: [${a}, ${b}) outside ${leafHashes.length} leaves`);
  const perfect = perfectNodes(range).map(({ level, index }) => {
    let layer = leafHashes.slice(index * 2 ** level, (index + 1) * 2 ** level);
    while (layer.length > 1) {
      const next: Buffer[] = [];
      for (let i = 0; i < layer.length; i += 2) next.push(nodeHash(layer[i]!, layer[i + 1]!));
      layer = next;
    }
    return layer[0]!;
  });
  return foldPerfect(perfect);
}

/** MTH(D[n]) of RFC 9162 §2.1.1. */
export function rootHash(leafHashes: readonly Buffer[]): Buffer {
  if (!leafHashes.length) return EMPTY_ROOT;
  const c = new CompactRange();
  for (const h of leafHashes) c.append(h);
  return c.root();
}

/** The inclusion proof of leaf `index` in the tree of all `leafHashes`. */
export function inclusionProof(index: number, leafHashes: readonly Buffer[]): Buffer[] {
  return inclusionPlan(index, leafHashes.length).map((r) => rangeHash(leafHashes, r));
}

/** The consistency proof from the first `size1` leaves to the tree of all `leafHashes`. */
export function consistencyProof(size1: number, leafHashes: readonly Buffer[]): Buffer[] {
  return consistencyPlan(size1, leafHashes.length).map((r) => rangeHash(leafHashes, r));
}

function isHash(x: unknown): x is Uint8Array {
  return x instanceof Uint8Array && x.length === HASH_SIZE;
}

/**
 * RFC 9162 §2.1.3.2: the root an inclusion proof leads to, or null when the
 * proof has the wrong length for the index and size.
 */
export function rootFromInclusionProof(index: number, size: number, leaf: Uint8Array, proof: readonly Uint8Array[]): Buffer | null {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(size) || index < 0 || index >= size) return null;
  if (!isHash(leaf) || !proof.every(isHash)) return null;
  let fn = index;
  let sn = size - 1;
  let r: Buffer = Buffer.from(leaf);
  for (const p of proof) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : null;
}

/** RFC 9162 §2.1.3.2: does `proof` show leaf `index` with hash `leaf` in the tree of `size` leaves with `root`? */
export function verifyInclusion(index: number, size: number, leaf: Uint8Array, proof: readonly Uint8Array[], root: Uint8Array): boolean {
  if (!isHash(root)) return false;
  const r = rootFromInclusionProof(index, size, leaf, proof);
  return !!r && r.equals(root);
}

/**
 * RFC 9162 §2.1.4.2: does `proof` show that the tree of `size1` leaves with
 * `root1` is a prefix of the tree of `size2` leaves with `root2`? The cases
 * the RFC's algorithm leaves out are settled as RFC 6962 monitors do: the
 * empty tree precedes every tree (empty proof), equal sizes need equal roots
 * (empty proof), and a tree never shrinks.
 */
export function verifyConsistency(size1: number, size2: number, proof: readonly Uint8Array[], root1: Uint8Array, root2: Uint8Array): boolean {
  if (!Number.isSafeInteger(size1) || !Number.isSafeInteger(size2) || size1 < 0 || size1 > size2) return false;
  if (!isHash(root1) || !isHash(root2) || !proof.every(isHash)) return false;
  if (size1 === size2) return proof.length === 0 && Buffer.from(root1).equals(root2);
  if (size1 === 0) return proof.length === 0;
  // 1. An empty path fails.
  if (proof.length === 0) return false;
  // 2. If first is an exact power of 2, prepend first_hash.
  const path = isPowerOfTwo(size1) ? [root1, ...proof] : [...proof];
  // 3. fn = first − 1, sn = second − 1.
  let fn = size1 - 1;
  let sn = size2 - 1;
  // 4. If LSB(fn) is set, shift both right until it is not.
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  // 5. fr = sr = the first value of the path.
  let fr: Buffer = Buffer.from(path[0]!);
  let sr: Buffer = Buffer.from(path[0]!);
  // 6. For each subsequent value c:
  for (let i = 1; i < path.length; i++) {
    const c = path[i]!;
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  // 7. fr = first_hash, sr = second_hash, and sn = 0.
  return sn === 0 && fr.equals(root1) && sr.equals(root2);
}

function isPowerOfTwo(n: number): boolean {
  if (n < 1) return false;
  while (n % 2 === 0) n /= 2;
  return n === 1;
}

/**
 * The right edge of a tree built leaf by leaf (a "compact range" over
 * [0, size)): one perfect-subtree hash per set bit of the size, largest
 * first. Appending a leaf merges equal-sized subtrees; every merge completes
 * one perfect subtree, reported to `onNode` so that a store can keep it.
 */
export class CompactRange {
  private readonly hashes: Buffer[];
  private n: number;

  /** An empty range, or the right edge of a tree of `size` leaves (its perfect subtrees, largest first). */
  constructor(size = 0, hashes: readonly Buffer[] = []) {
    assertSize(size, 'tree size');
    const expected = size ? perfectNodes([0, size]).length : 0;
    if (hashes.length !== expected) throw new RangeError(`a compact range of size ${size} has ${expected} hashes, not ${hashes.length}`);
    this.hashes = hashes.map((h) => Buffer.from(h));
    this.n = size;
  }

  get size(): number {
    return this.n;
  }

  /** The perfect subtrees of the right edge, largest first (what the constructor takes). */
  edge(): Buffer[] {
    return this.hashes.map((h) => Buffer.from(h));
  }

  append(leaf: Buffer, onNode?: (level: number, index: number, hash: Buffer) => void): void {
    if (leaf.length !== HASH_SIZE) throw new RangeError('append: a leaf hash is 32 bytes');
    let h = leaf;
    let level = 0;
    let index = this.n;
    // Each trailing 1 bit of the old size is a subtree of the same size to merge with.
    let bits = this.n;
    while (bits % 2 === 1) {
      h = nodeHash(this.hashes.pop()!, h);
      level++;
      index = Math.floor(index / 2);
      bits = Math.floor(bits / 2);
      onNode?.(level, index, h);
    }
    this.hashes.push(h);
    this.n++;
  }

  /** MTH of the leaves so far. */
  root(): Buffer {
    if (!this.hashes.length) return EMPTY_ROOT;
    return foldPerfect(this.hashes);
  }
}
