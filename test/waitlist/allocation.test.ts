/**
 * The allocation round, on its own: random markets checked for stability and
 * capacity, determinism, the snapshot's round trip, and a hand-made market
 * whose answer is known.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createRng } from '../../src/demo/seed.ts';
import {
  allocate,
  checkStable,
  compressSnapshot,
  decodeInputs,
  decompressSnapshot,
  encodeInputs,
  inputsHash,
  orderFor,
  outputsHash,
  type AllocationInputs,
} from '../../src/waitlist/allocation.ts';

/** A random market: `children` children with up to `choices` choices among `facilities` facilities. */
export function randomMarket(seed: string, children: number, facilities: number, choices: number): AllocationInputs {
  const rng = createRng(seed);
  const int = (n: number) => Math.floor(rng() * n);
  const choiceStart = new Int32Array(children + 1);
  const appFacility: number[] = [];
  const appCategory: number[] = [];
  const appCreated: number[] = [];
  const desired = new Int32Array(children);
  const age = new Uint8Array(children);
  for (let c = 0; c < children; c++) {
    desired[c] = 20_000 + int(400);
    age[c] = int(3) === 0 ? 0 : 1;
    const k = 1 + int(choices);
    const taken = new Set<number>();
    while (taken.size < Math.min(k, facilities)) taken.add(int(facilities));
    for (const f of taken) {
      appFacility.push(f);
      appCategory.push(1 + int(5));
      appCreated.push(1.7e12 + int(1e9));
    }
    choiceStart[c + 1] = appFacility.length;
  }
  const vacancies = new Int32Array(facilities * 2);
  for (let s = 0; s < vacancies.length; s++) vacancies[s] = int(4);
  return {
    childIds: Array.from({ length: children }, () => randomUUID()),
    facilityIds: Array.from({ length: facilities }, () => randomUUID()),
    childDesiredDay: desired,
    childAgeGroup: age,
    choiceStart,
    appFacility: Int32Array.from(appFacility),
    appCategory: Uint8Array.from(appCategory),
    appCreatedMs: Float64Array.from(appCreated),
    vacancies,
  };
}

describe('allocation round', () => {
  it('is stable, within capacity and deterministic on random markets, and survives its snapshot', () => {
    for (const [seed, children, facilities, choices] of [
      ['a', 50, 5, 3],
      ['b', 2000, 40, 10],
      ['c', 5000, 300, 10],
      ['d', 300, 2, 2],
    ] as const) {
      const x = randomMarket(seed, children, facilities, choices);
      const r = allocate(x);
      expect(checkStable(x, r), `market ${seed}`).toBeNull();
      expect(r.assigned.some((a) => a >= 0)).toBe(true);
      const again = allocate(x);
      expect(Buffer.from(again.assigned.buffer).equals(Buffer.from(r.assigned.buffer))).toBe(true);

      const bytes = encodeInputs(x);
      const back = decodeInputs(decompressSnapshot(compressSnapshot(bytes)));
      expect(encodeInputs(back).equals(bytes)).toBe(true);
      const replay = allocate(back);
      expect(outputsHash(bytes, replay).equals(outputsHash(bytes, r))).toBe(true);
      // The hash moves with any change of input or parameter.
      const params = { order: 'quebec-2025', today: '2026-01-01' };
      const h = inputsHash(bytes, params);
      expect(inputsHash(bytes, { ...params, today: '2026-01-02' }).equals(h)).toBe(false);
      back.vacancies[0] = back.vacancies[0]! + 1;
      expect(inputsHash(encodeInputs(back), params).equals(h)).toBe(false);
    }
  });

  it('gives the known answer on a small market, and the checker catches a blocking pair', () => {
    // Two facilities with one toddler place each. Child 0 (category 5) and
    // child 1 (category 4) both want facility 0 first; child 2 (category 3)
    // wants only facility 1.
    const x: AllocationInputs = {
      childIds: [randomUUID(), randomUUID(), randomUUID()],
      facilityIds: [randomUUID(), randomUUID()],
      childDesiredDay: Int32Array.from([20_000, 20_000, 20_000]),
      childAgeGroup: Uint8Array.from([1, 1, 1]),
      choiceStart: Int32Array.from([0, 2, 4, 5]),
      appFacility: Int32Array.from([0, 1, 0, 1, 1]),
      appCategory: Uint8Array.from([5, 5, 4, 4, 3]),
      appCreatedMs: Float64Array.from([1, 1, 2, 2, 3]),
      vacancies: Int32Array.from([0, 1, 0, 1]),
    };
    const r = allocate(x);
    // child 1 beats child 0 at facility 0; child 2 beats child 0 at facility 1.
    expect([...r.assigned]).toEqual([-1, 2, 4]);
    expect(checkStable(x, r)).toBeNull();
    // Moving child 2 out and leaving the place free is not stable.
    expect(checkStable(x, { ...r, assigned: Int32Array.from([-1, 2, -1]) })).toMatch(/kept a place free/);
    // Giving facility 0's place to the worse child is not stable.
    expect(checkStable(x, { ...r, assigned: Int32Array.from([0, 3, -1]) })).toMatch(/prefer each other|kept a place free/);
  });

  it('under the points order and declared priorities: stable, deterministic, and the snapshot keeps what the order reads', () => {
    const x = randomMarket('points', 3000, 60, 8);
    const rng = createRng('points-flags');
    x.appFlags = Uint8Array.from(x.appFacility, () => Math.floor(rng() * 8));
    x.appPrioritiesMet = Uint8Array.from(x.appFacility, () => (rng() < 0.2 ? 1 + Math.floor(rng() * 2) : 0));
    x.facilityPriorityOpen = Uint8Array.from(x.facilityIds, () => (rng() < 0.5 ? 1 : 0));
    const params = { order: 'points', today: '2026-11-23', weights: { siblingAttending: 40, parentIsStaff: 10, notInSubsidisedCare: 20, eachPriority: 25, perMonthWaited: 2 } };
    const points = orderFor(params)!;
    const categories = orderFor({ order: 'categories', today: '2026-11-23' })!;
    const r = allocate(x, points);
    expect(checkStable(x, r, points)).toBeNull();
    // Another order, another stable assignment: the round really reads the order it is given.
    expect(checkStable(x, r, categories)).not.toBeNull();
    const bytes = encodeInputs(x);
    const back = decodeInputs(bytes);
    expect(Buffer.from(allocate(back, points).assigned.buffer).equals(Buffer.from(r.assigned.buffer))).toBe(true);
    // The weights are signed with the run: other weights, another inputs hash.
    expect(inputsHash(bytes, params).equals(inputsHash(bytes, { ...params, weights: { ...params.weights, eachPriority: 26 } }))).toBe(false);
    // Key order does not matter (jsonb gives the parameters back in its own).
    expect(inputsHash(bytes, params).equals(inputsHash(bytes, { ...params, weights: { perMonthWaited: 2, eachPriority: 25, notInSubsidisedCare: 20, parentIsStaff: 10, siblingAttending: 40 } }))).toBe(true);
  });

  it('runs a large market, printing its time beside a plain sort', () => {
    const x = randomMarket('big', 100_000, 3000, 10);
    const t0 = performance.now();
    const r = allocate(x);
    const t1 = performance.now();
    Float64Array.from(x.appCreatedMs).sort();
    const t2 = performance.now();
    expect(checkStable(x, r)).toBeNull();
    console.info(`allocation of 100,000 children, ${x.appFacility.length} applications: ${(t1 - t0).toFixed(0)} ms (plain sort of the applications' times: ${(t2 - t1).toFixed(0)} ms)`);
  });
});
