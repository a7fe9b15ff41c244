/**
 * The ordering engine without a database: the tenant rules parse with
 * Quebec's defaults, both orders (categories, points) and the cap on
 * priorities, and the demo's second programme's rules.
 */
import { describe, expect, it } from 'vitest';
import { SECOND_TENANT_RULES } from '../../src/demo/setup.ts';
import { parseRules } from '../../src/tenants/rules.ts';
import { category, pointsOf, priorityCapOpen, monthsWaited, type OrderingContext } from '../../src/waitlist/ranking.ts';

describe('tenant rules', () => {
  it('an empty rules object is Quebec 2025, and the first form of the ordering still reads', () => {
    const q = parseRules({});
    expect(q.ordering).toEqual({ kind: 'categories' });
    expect(q.prebirthRegistration).toBe(false);
    expect(q.priorities).toMatchObject({ maxKinds: 6, capShare: 0.5, windowMonths: 12 });
    expect(q.priorities.kinds).toHaveLength(6);
    expect(q.confirmation).toMatchObject({ enabled: true, everyMonths: 6, graceDays: 30, reactivationKeepsSeniority: false });
    expect(q.identitiesBeforeReferral).toEqual({ subsidised: 'nobody', nonSubsidised: 'nobody' });
    expect(parseRules({ ordering: 'quebec-2025' }).ordering).toEqual({ kind: 'categories' });
    expect(() => parseRules({ priorities: { maxKinds: 7 } })).toThrow();
    expect(() => parseRules({ priorities: { kinds: ['astrology'] } })).toThrow();
  });

  it('the second programme: points with its weights, pre-birth registration, and its offers rules', () => {
    const r = parseRules(JSON.parse(JSON.stringify(SECOND_TENANT_RULES)));
    expect(r.prebirthRegistration).toBe(true);
    expect(r.ordering).toEqual({ kind: 'points', weights: { siblingAttending: 40, parentIsStaff: 10, notInSubsidisedCare: 20, eachPriority: 25, perMonthWaited: 2 } });
    expect(r.offers).toMatchObject({ deadlineDays: 3, businessDays: true, refusalsAllowed: 3 });
    expect(r.priorities.maxKinds).toBe(3);
    // Points with no weights given take the documented defaults.
    expect(parseRules({ ordering: { kind: 'points' } }).ordering).toMatchObject({ weights: { siblingAttending: 30, parentIsStaff: 20, notInSubsidisedCare: 10, eachPriority: 15, perMonthWaited: 1 } });
  });
});

describe('orders', () => {
  const today = '2026-11-23';
  const points: OrderingContext = { ordering: parseRules({ ordering: { kind: 'points' } }).ordering, declared: ['specialNeeds', 'studentAt'], priorityOpen: true, today };

  it('Quebec categories: staff with sibling, staff, sibling, not in subsidised care, the rest', () => {
    const c = (parentIsStaff: boolean, siblingAttending: boolean, inSubsidisedCare: boolean) => category({ parentIsStaff, siblingAttending, inSubsidisedCare });
    expect([c(true, true, true), c(true, false, false), c(false, true, true), c(false, false, false), c(false, false, true)]).toEqual([1, 2, 3, 4, 5]);
  });

  it('points: each part with its weight, months waited counted in full months from the seniority date, priorities only under the cap', () => {
    expect(monthsWaited('2025-11-23', today)).toBe(12);
    expect(monthsWaited('2025-11-24', today)).toBe(11);
    expect(monthsWaited('2027-01-01', today)).toBe(0);
    const p = pointsOf({ parentIsStaff: true, siblingAttending: true, inSubsidisedCare: false, prioritiesMet: 2, seniorityDate: '2026-05-23' }, points)!;
    expect(p).toEqual({ siblingAttending: 30, parentIsStaff: 20, notInSubsidisedCare: 10, priorities: 30, monthsWaited: 6, total: 96 });
    const capped = pointsOf({ parentIsStaff: false, siblingAttending: false, inSubsidisedCare: true, prioritiesMet: 2, seniorityDate: '2026-11-23' }, { ...points, priorityOpen: false })!;
    expect(capped.total).toBe(0);
    expect(pointsOf({ parentIsStaff: true, siblingAttending: true, inSubsidisedCare: false, prioritiesMet: 0, seniorityDate: today }, { ...points, ordering: { kind: 'categories' } })).toBeNull();
  });

  it('the cap: a priority lifts only while admissions by priority are below the cap share of all admissions', () => {
    expect(priorityCapOpen(0, 0, 0.5)).toBe(true); // no admission yet: the first may come by priority
    expect(priorityCapOpen(1, 1, 0.5)).toBe(false);
    expect(priorityCapOpen(1, 2, 0.5)).toBe(false); // exactly at half: not below
    expect(priorityCapOpen(1, 3, 0.5)).toBe(true);
    expect(priorityCapOpen(5, 10, 0.5)).toBe(false);
    expect(priorityCapOpen(4, 10, 0.5)).toBe(true);
    expect(priorityCapOpen(3, 10, 0.3)).toBe(false);
    expect(priorityCapOpen(0, 10, 0)).toBe(false); // a cap of nothing: priorities never lift
    // Over a long run of alternating admissions the share stays at or under the cap.
    let total = 0;
    let by = 0;
    for (let i = 0; i < 1000; i++) {
      if (priorityCapOpen(by, total, 0.5)) by++;
      total++;
      expect(by / total).toBeLessThanOrEqual(total === 1 ? 1 : 0.5 + 1 / total);
    }
    expect(by).toBe(500);
  });
});
