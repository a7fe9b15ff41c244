/**
 * What the retention job and page decide without opening a birth date must be
 * what they would decide with every birth date open: the same files due, by
 * the same rules, the same counts and the same soonest files listed. Checked
 * against every birth date opened, over files at every edge of a month (the
 * 28th to the 31st, leap days, activity on a month's last days) and under
 * several tenants' rules.
 */
import { describe, expect, it } from 'vitest';
import { dueBounds, dueDate, dueForRun, filesToOpenForPreview, filesToOpenForRun, scheduleLists } from '../../src/privacy/retention.ts';
import type { RetentionCandidate } from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths } from '../../src/waitlist/dates.ts';

/** A small deterministic generator (mulberry32): the same files on every run. */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const DAY = 86_400_000;
const iso = (ms: number) => new Date(ms).toISOString().slice(0, 10);

function files(seed: number, n: number, today: string) {
  const r = rng(seed);
  const t0 = Date.parse(`${today}T00:00:00Z`);
  const out: { c: RetentionCandidate; birthDate: string }[] = [];
  for (let i = 0; i < n; i++) {
    // Births over the last eight years, a quarter of them on a month's last days; activity over the last five.
    let birth = iso(t0 - Math.floor(r() * 8 * 365) * DAY);
    if (r() < 0.25) {
      // One of the month's last four days (28 to 31, or 26 to 29 in February).
      const nextMonth = Date.parse(`${addMonths(`${birth.slice(0, 8)}01`, 1)}T00:00:00Z`);
      birth = iso(nextMonth - Math.floor(r() * 4 + 1) * DAY);
    }
    let activity = t0 - Math.floor(r() * 5 * 365) * DAY;
    if (r() < 0.1) activity = Date.parse(`${addMonths(`${iso(activity).slice(0, 8)}01`, 1)}T12:00:00Z`) - DAY; // a month's last day
    const c: RetentionCandidate = {
      childId: `c${i}`,
      familyId: `f${i % (n / 2)}`,
      reference: `R-${String(Math.floor(r() * 1e6)).padStart(6, '0')}-${i}`,
      birthMonth: r() < 0.01 ? null : `${birth.slice(0, 8)}01`,
      lastActivity: new Date(activity + Math.floor(r() * 20) * 3_600_000),
    };
    out.push({ c, birthDate: birth });
  }
  return out;
}

const RULES = [
  { schoolAgeYears: 5, afterSchoolAgeMonths: 12, inactiveFileMonths: 36 },
  { schoolAgeYears: 6, afterSchoolAgeMonths: 0, inactiveFileMonths: 24 },
  { schoolAgeYears: 5, afterSchoolAgeMonths: 1, inactiveFileMonths: 1 },
];
const DAYS = ['2027-02-28', '2028-02-29', '2026-11-25', '2027-03-31', '2027-01-01'];

describe('retention decided from the clear columns', () => {
  it('bounds every due date, and names its rule only when the month settles it', () => {
    for (const rules of RULES) {
      const tenant = { rules: { retention: rules } } as unknown as Tenant;
      for (const { c, birthDate } of files(1, 3000, '2027-02-28')) {
        const b = dueBounds(tenant, c);
        if (!c.birthMonth) {
          expect(b).toBeNull();
          continue;
        }
        const d = dueDate(tenant, { birthDate, lastActivity: c.lastActivity });
        expect(b!.lo <= d.on && d.on <= b!.hi, `${birthDate} ${c.lastActivity.toISOString()}: ${d.on} outside ${b!.lo}..${b!.hi}`).toBe(true);
        if (b!.reason) expect(b!.reason).toBe(d.reason);
      }
    }
  });

  it('the run deletes the same files, by the same rules, as with every birth date open; the page shows the same', () => {
    let opened = 0;
    let total = 0;
    for (const [k, rules] of RULES.entries()) {
      const tenant = { rules: { retention: rules } } as unknown as Tenant;
      for (const [j, today] of DAYS.entries()) {
        const horizon = iso(Date.parse(`${today}T00:00:00Z`) + 90 * DAY);
        const all = files(100 * k + j, 4000, today);
        const candidates = all.map((x) => x.c);
        const every = new Map(all.map((x) => [x.c.childId, x.birthDate]));
        const pick = (ids: Iterable<string>) => new Map([...ids].map((id) => [id, every.get(id)!]));

        const run = filesToOpenForRun(tenant, candidates, today);
        expect(dueForRun(tenant, candidates, pick(run), today).sort((a, b) => a.childId.localeCompare(b.childId))).toEqual(dueForRun(tenant, candidates, every, today).sort((a, b) => a.childId.localeCompare(b.childId)));
        for (const shown of [100, 7, 1]) {
          const page = filesToOpenForPreview(tenant, candidates, today, horizon, shown);
          expect(scheduleLists(tenant, candidates, pick(page), today, horizon, shown)).toEqual(scheduleLists(tenant, candidates, every, today, horizon, shown));
          if (shown === 100) {
            opened += page.length + run.length;
            total += 2 * candidates.length;
          }
        }
      }
    }
    // What it is for: most birth dates stay closed.
    console.log(`retention bounds: ${opened} of ${total} birth dates opened (${((100 * opened) / total).toFixed(1)} %)`);
    expect(opened / total).toBeLessThan(0.5);
  });
});
