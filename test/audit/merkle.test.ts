/**
 * RFC 9162 Merkle trees: the published test vectors of the certificate
 * transparency reference implementation (transparency-dev/merkle,
 * testonly/constants.go and proof/verify_test.go), then properties over every
 * tree up to 64 leaves: every proof verifies, and any change to it fails.
 */
import { describe, expect, it } from 'vitest';
import {
  CompactRange,
  consistencyPlan,
  consistencyProof,
  EMPTY_ROOT,
  foldPerfect,
  inclusionPlan,
  inclusionProof,
  leafHash,
  nodeHash,
  perfectNodes,
  rangeHash,
  rootFromInclusionProof,
  rootHash,
  splitPoint,
  verifyConsistency,
  verifyInclusion,
} from '../../src/audit/merkle.ts';

const hx = (s: string) => Buffer.from(s, 'hex');

// testonly.LeafInputs()
const LEAF_INPUTS = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'].map(hx);

// testonly.RootHashes(): the root of the tree of the first n leaves, n = 0..8.
const ROOTS = [
  'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
].map(hx);

// testonly.NodeHashes(): [level][index] for every perfect subtree of the 8-leaf tree.
const NODES = [
  [
    '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
    '96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7',
    '0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7',
    '07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7',
    'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
    '4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658',
    'b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f',
    '46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1',
  ],
  [
    'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
    '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
    '0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a',
    'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0',
  ],
  ['d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7', '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4'],
  ['5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328'],
].map((l) => l.map(hx));

// proof/verify_test.go: inclusionProofs (leaf numbers there are 1-based; here 0-based indices).
const INCLUSION = [
  { index: 0, size: 8, proof: ['96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7', '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4'] },
  { index: 5, size: 8, proof: ['bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b', 'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0', 'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7'] },
  { index: 2, size: 3, proof: ['fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125'] },
  { index: 1, size: 5, proof: ['6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d', '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', 'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b'] },
].map((v) => ({ ...v, proof: v.proof.map(hx) }));

// proof/verify_test.go: consistencyProofs.
const CONSISTENCY = [
  { size1: 1, size2: 1, proof: [] as string[] },
  { size1: 1, size2: 8, proof: ['96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7', '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4'] },
  { size1: 6, size2: 8, proof: ['0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a', 'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0', 'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7'] },
  { size1: 2, size2: 5, proof: ['5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', 'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b'] },
  { size1: 6, size2: 7, proof: ['0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a', 'b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f', 'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7'] },
].map((v) => ({ ...v, proof: v.proof.map(hx) }));

const SOME_HASH = hx('abacaba000000000000000000000000000000000000000000060061e00123456');

const leaves = LEAF_INPUTS.map((d) => leafHash(d));

/** Deterministic pseudo-random leaves, so that a failure can be replayed. */
function testLeaves(n: number): Buffer[] {
  return Array.from({ length: n }, (_, i) => leafHash(`leaf ${i}`));
}

function flipped(proof: readonly Buffer[], i: number, bit: number): Buffer[] {
  const copy = proof.map((p) => Buffer.from(p));
  copy[i]![bit >> 3]! ^= 1 << (bit & 7);
  return copy;
}

describe('RFC 9162 hashing: the CT reference test tree', () => {
  it('hashes leaves with 0x00 and nodes with 0x01', () => {
    expect(leafHash(Buffer.alloc(0))).toEqual(hx('6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d'));
    expect(leafHash('')).toEqual(leafHash(Buffer.alloc(0)));
    expect(leafHash('é')).toEqual(leafHash(Buffer.from('é', 'utf8')));
    expect(nodeHash(leaves[0]!, leaves[1]!)).toEqual(NODES[1]![0]);
    expect(EMPTY_ROOT).toEqual(ROOTS[0]);
  });

  it('gives the published root for every size from 0 to 8 (the non-power-of-two split included)', () => {
    for (let n = 0; n <= 8; n++) expect(rootHash(leaves.slice(0, n)).toString('hex'), `size ${n}`).toBe(ROOTS[n]!.toString('hex'));
  });

  it('a compact range reports every perfect subtree as it completes, as published', () => {
    const seen: Buffer[][] = [[...leaves], [], [], []];
    const c = new CompactRange();
    for (const h of leaves) c.append(h, (level, index, hash) => (seen[level]![index] = hash));
    expect(seen).toEqual(NODES);
    // Restarted from its edge, it carries on to the same roots.
    const half = new CompactRange();
    for (const h of leaves.slice(0, 5)) half.append(h);
    const resumed = new CompactRange(5, half.edge());
    for (const h of leaves.slice(5)) resumed.append(h);
    expect(resumed.root()).toEqual(ROOTS[8]);
    expect(() => new CompactRange(5, [])).toThrow(/has 2 hashes/);
  });

  it('builds and verifies the published inclusion proofs', () => {
    for (const v of INCLUSION) {
      const tree = leaves.slice(0, v.size);
      expect(inclusionProof(v.index, tree), `${v.index}/${v.size}`).toEqual(v.proof);
      expect(verifyInclusion(v.index, v.size, leaves[v.index]!, v.proof, ROOTS[v.size]!)).toBe(true);
      expect(rootFromInclusionProof(v.index, v.size, leaves[v.index]!, v.proof)).toEqual(ROOTS[v.size]);
    }
  });

  it('refuses the corrupted inclusion proofs of the reference tests', () => {
    for (const { index, size, proof } of INCLUSION) {
      const root = ROOTS[size]!;
      const leaf = leaves[index]!;
      const probes: Array<[string, number, number, Buffer, Buffer[], Buffer]> = [
        ['index - 1', index - 1, size, leaf, proof, root],
        ['index + 1', index + 1, size, leaf, proof, root],
        ['index ^ 2', index ^ 2, size, leaf, proof, root],
        ['size * 2', index, size * 2, leaf, proof, root],
        ['size / 2', index, Math.floor(size / 2), leaf, proof, root],
        ['wrong leaf', index, size, Buffer.from('WrongLeaf'), proof, root],
        ['empty root', index, size, leaf, proof, EMPTY_ROOT],
        ['random root', index, size, leaf, proof, SOME_HASH],
        ['trailing garbage', index, size, leaf, [...proof, Buffer.alloc(0)], root],
        ['trailing root', index, size, leaf, [...proof, root], root],
        ['preceding garbage', index, size, leaf, [Buffer.alloc(0), ...proof], root],
        ['preceding root', index, size, leaf, [root, ...proof], root],
        ['removed component', index, size, leaf, proof.slice(0, -1), root],
        ...proof.map((_, i) => [`modified proof[${i}] bit 3`, index, size, leaf, flipped(proof, i, 3), root] as [string, number, number, Buffer, Buffer[], Buffer]),
      ];
      if (proof.length > 1) probes.push(['inserted component', index, size, leaf, [proof[0]!, SOME_HASH, ...proof.slice(1)], root]);
      for (const [desc, i, n, l, p, r] of probes) expect(verifyInclusion(i, n, l, p, r), `${index}/${size}: ${desc}`).toBe(false);
    }
  });

  it('refuses inclusion in trees that cannot hold the leaf', () => {
    for (const [i, n] of [[0, 0], [0, 1], [1, 0], [2, 1]] as const) {
      expect(verifyInclusion(i, n, SOME_HASH, [], Buffer.alloc(0))).toBe(false);
      expect(verifyInclusion(i, n, Buffer.alloc(0), [], EMPTY_ROOT)).toBe(false);
      expect(verifyInclusion(i, n, SOME_HASH, [], EMPTY_ROOT)).toBe(false);
    }
    // A one-leaf tree: the root is the leaf, the proof is empty.
    const h = leafHash('data');
    expect(verifyInclusion(0, 1, h, [], h)).toBe(true);
    expect(verifyInclusion(0, 1, Buffer.alloc(0), [], h)).toBe(false);
    expect(verifyInclusion(0, 1, h, [], Buffer.alloc(0))).toBe(false);
  });

  it('builds and verifies the published consistency proofs', () => {
    for (const v of CONSISTENCY) {
      expect(consistencyProof(v.size1, leaves.slice(0, v.size2)), `${v.size1}→${v.size2}`).toEqual(v.proof);
      expect(verifyConsistency(v.size1, v.size2, v.proof, ROOTS[v.size1]!, ROOTS[v.size2]!)).toBe(true);
    }
  });

  it('refuses the corrupted consistency proofs of the reference tests', () => {
    for (const { size1, size2, proof } of CONSISTENCY.filter((v) => v.proof.length)) {
      const [root1, root2] = [ROOTS[size1]!, ROOTS[size2]!];
      const probes: Array<[string, number, number, Buffer[], Buffer, Buffer]> = [
        ['size1 - 1', size1 - 1, size2, proof, root1, root2],
        ['size1 + 1', size1 + 1, size2, proof, root1, root2],
        ['size1 ^ 2', size1 ^ 2, size2, proof, root1, root2],
        ['size2 * 2', size1, size2 * 2, proof, root1, root2],
        ['size2 / 2', size1, Math.floor(size2 / 2), proof, root1, root2],
        ['wrong root1', size1, size2, proof, Buffer.from('WrongRoot'), root2],
        ['wrong root2', size1, size2, proof, root1, Buffer.from('WrongRoot')],
        ['swapped roots', size1, size2, proof, root2, root1],
        ['empty proof', size1, size2, [], root1, root2],
        ['trailing garbage', size1, size2, [...proof, Buffer.alloc(0)], root1, root2],
        ['trailing root1', size1, size2, [...proof, root1], root1, root2],
        ['trailing root2', size1, size2, [...proof, root2], root1, root2],
        ['preceding garbage', size1, size2, [Buffer.alloc(0), ...proof], root1, root2],
        ['preceding root1', size1, size2, [root1, ...proof], root1, root2],
        ['preceding root2', size1, size2, [root2, ...proof], root1, root2],
        ['preceding proof[0]', size1, size2, [proof[0]!, ...proof], root1, root2],
        ['truncated proof', size1, size2, proof.slice(0, -1), root1, root2],
        ...proof.map((_, i) => [`modified proof[${i}] bit 4`, size1, size2, flipped(proof, i, 4), root1, root2] as [string, number, number, Buffer[], Buffer, Buffer]),
      ];
      for (const [desc, s1, s2, p, r1, r2] of probes) expect(verifyConsistency(s1, s2, p, r1, r2), `${size1}→${size2}: ${desc}`).toBe(false);
    }
  });

  it('settles the edge cases of consistency as RFC 6962 monitors do', () => {
    const [r1, r2] = [Buffer.alloc(32, 1), Buffer.alloc(32, 2)];
    expect(verifyConsistency(0, 0, [], r1, r2)).toBe(false);
    expect(verifyConsistency(1, 1, [], r1, r2)).toBe(false);
    expect(verifyConsistency(0, 0, [], r1, r1)).toBe(true);
    expect(verifyConsistency(0, 1, [], r1, r2)).toBe(true);
    expect(verifyConsistency(1, 1, [], r2, r2)).toBe(true);
    expect(verifyConsistency(1, 0, [], r1, r2)).toBe(false);
    expect(verifyConsistency(2, 1, [], r1, r2)).toBe(false);
    expect(verifyConsistency(1, 2, [], r1, r2)).toBe(false);
    expect(verifyConsistency(0, 1, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT)).toBe(false);
    expect(verifyConsistency(1, 1, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT)).toBe(false);
    expect(consistencyPlan(0, 5)).toEqual([]);
    expect(consistencyPlan(5, 5)).toEqual([]);
    expect(() => consistencyPlan(6, 5)).toThrow(/cannot precede/);
    expect(() => inclusionPlan(5, 5)).toThrow(/not in a tree/);
  });
});

describe('RFC 9162 proofs: properties over every tree up to 64 leaves', () => {
  const all = testLeaves(64);
  const roots = Array.from({ length: 65 }, (_, n) => rootHash(all.slice(0, n)));

  it('the compact range, the recursive definition and the range decomposition agree on every root', () => {
    const mth = (d: Buffer[]): Buffer => {
      if (d.length === 1) return d[0]!;
      const k = splitPoint(d.length);
      return nodeHash(mth(d.slice(0, k)), mth(d.slice(k)));
    };
    for (let n = 1; n <= 64; n++) {
      expect(roots[n], `size ${n}`).toEqual(mth(all.slice(0, n)));
      expect(rangeHash(all, [0, n])).toEqual(roots[n]);
    }
  });

  it('every inclusion proof verifies, and a flipped bit, another index or another size fails', () => {
    let checked = 0;
    for (let n = 1; n <= 64; n++) {
      const tree = all.slice(0, n);
      for (let m = 0; m < n; m++) {
        const proof = inclusionProof(m, tree);
        expect(verifyInclusion(m, n, tree[m]!, proof, roots[n]!), `${m}/${n}`).toBe(true);
        for (let i = 0; i < proof.length; i++) {
          expect(verifyInclusion(m, n, tree[m]!, flipped(proof, i, (m * 7 + i * 13) % 256), roots[n]!), `${m}/${n} flipped proof[${i}]`).toBe(false);
        }
        const leafFlip = Buffer.from(tree[m]!);
        leafFlip[(m + n) % 32]! ^= 0x80;
        expect(verifyInclusion(m, n, leafFlip, proof, roots[n]!)).toBe(false);
        if (n > 1) expect(verifyInclusion((m + 1) % n, n, tree[m]!, proof, roots[n]!), `${m}/${n} other index`).toBe(false);
        expect(verifyInclusion(m, n + 1, tree[m]!, proof, roots[n + 1] ?? roots[n]!), `${m}/${n} other size`).toBe(false);
        checked++;
      }
    }
    expect(checked).toBe((64 * 65) / 2);
  });

  it('every consistency proof verifies, and a flipped bit, another size or another root fails', () => {
    let checked = 0;
    for (let n = 1; n <= 64; n++) {
      const tree = all.slice(0, n);
      for (let m = 1; m <= n; m++) {
        const proof = consistencyProof(m, tree);
        expect(verifyConsistency(m, n, proof, roots[m]!, roots[n]!), `${m}→${n}`).toBe(true);
        for (let i = 0; i < proof.length; i++) {
          expect(verifyConsistency(m, n, flipped(proof, i, (m * 11 + i * 5) % 256), roots[m]!, roots[n]!), `${m}→${n} flipped proof[${i}]`).toBe(false);
        }
        if (m < n) {
          expect(verifyConsistency(m, n, proof, roots[m - 1] ?? EMPTY_ROOT, roots[n]!), `${m}→${n} other first root`).toBe(false);
          expect(verifyConsistency(m, n, proof, roots[m]!, roots[n - 1]!), `${m}→${n} other second root`).toBe(false);
          if (m > 1) expect(verifyConsistency(m - 1, n, proof, roots[m - 1]!, roots[n]!), `${m}→${n} other first size`).toBe(false);
        }
        checked++;
      }
    }
    expect(checked).toBe((64 * 65) / 2);
  });

  it('proofs assembled from perfect subtrees (as the store does) equal proofs from the leaves', () => {
    const memo = new Map<string, Buffer>();
    const perfect = ({ level, index }: { level: number; index: number }) => {
      const k = `${level}:${index}`;
      if (!memo.has(k)) memo.set(k, rangeHash(all, [index * 2 ** level, (index + 1) * 2 ** level]));
      return memo.get(k)!;
    };
    for (let n = 1; n <= 64; n++) {
      for (let m = 0; m < n; m++) {
        const fromNodes = inclusionPlan(m, n).map((r) => foldPerfect(perfectNodes(r).map(perfect)));
        expect(fromNodes).toEqual(inclusionProof(m, all.slice(0, n)));
        const c = consistencyPlan(m + 1, n).map((r) => foldPerfect(perfectNodes(r).map(perfect)));
        expect(c).toEqual(consistencyProof(m + 1, all.slice(0, n)));
      }
    }
    expect(() => perfectNodes([3, 7])).toThrow(/not a subtree/);
  });

  it('bounds the proof length by the tree height', () => {
    expect(inclusionPlan(123_456, 1_000_000).length).toBe(20);
    expect(consistencyPlan(999_999, 1_000_000).length).toBeLessThanOrEqual(2 * 20);
    expect(perfectNodes([0, 1_000_000]).length).toBe(7); // 1,000,000 has 7 bits set
  });
});
