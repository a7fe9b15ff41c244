/**
 * The coordinated allocation follows each tenant's own order: on the Quebec
 * rules (categories, lifted by a facility's declared priority while under its
 * cap) and on the demo's municipal rules (points with their weights), the
 * round orders a facility's applications exactly as its candidate list does,
 * its offers go to the head of that list (by_priority written as the referral
 * writes it), the explanation gives the order's own reason, and the stored
 * run replays to the same outputs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { envelopeFor } from '../../src/crypto/envelope.ts';
import { SECOND_TENANT_RULES } from '../../src/demo/setup.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { LAST_ADMITTED_MIN_GROUP, loadInputs, readAllocationExplanation, replayAllocation, runAllocation, type AllocationParameters } from '../../src/records/allocation.ts';
import * as records from '../../src/records/gateway.ts';
import { offerDeadline } from '../../src/records/offers.ts';
import { rankFacilityIn } from '../../src/records/ranks.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { orderFor } from '../../src/waitlist/allocation.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { actorByEmail, createFacility, createParent, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';

let database: TestDatabase;
let t: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
});

afterAll(async () => {
  await t?.close();
  await database?.close();
});

let seq = 0;
const ORIGIN = { actorAccountId: null, actorRoles: ['system:test'], ip: null, userAgent: null, requestId: null };

interface Kid {
  childId: string;
  email: string;
}

/** One family: a toddler waiting since `waitedMonths` (its desired entry date), with the facility's terms given. */
async function kid(tenant: Tenant, facility: string, o: { waitedMonths: number; sibling?: boolean; staff?: boolean; subsidised?: boolean; priorities?: string[] }): Promise<Kid> {
  const email = `parent.${Date.now().toString(36)}${seq++}@exemple.test`;
  await createParent(t, tenant, email);
  const now = t.deps.clock();
  const ctx = ctxFor(t, tenant, await actorByEmail(t, tenant, email, now, 10, ['password']));
  const t0 = today(now);
  const { id } = await records.createChildFile(t.deps, ctx, {
    firstName: 'Léo',
    lastName: `Roy${seq}`,
    birthDate: addMonths(t0, -30),
    nirec: null,
    desiredEntryDate: addMonths(t0, -o.waitedMonths),
    daysOfCare: 31,
    inSubsidisedCare: o.subsidised ?? false,
  });
  await records.addApplication(t.deps, ctx, id, { facilityId: facility, siblingAttending: o.sibling ?? false, parentIsStaff: o.staff ?? false, priorities: o.priorities ?? [] });
  return { childId: id, email };
}

/** The facility's toddler candidates, as its staff list orders them. */
async function candidateList(tenant: Tenant, facility: string): Promise<string[]> {
  const env = envelopeFor(t.deps.keys);
  const list = await inTenant(database.db, tenant.id, (trx) => rankFacilityIn(trx, env, tenant, facility, 'toddler', t.deps.clock()));
  return list.map((r) => r.childId);
}

/** The same applications in the round's order (its order keys over the loaded inputs). */
async function roundOrder(tenant: Tenant, facility: string): Promise<string[]> {
  const o = tenant.rules.ordering;
  const params: AllocationParameters = { order: o.kind, ...(o.kind === 'points' ? { weights: o.weights } : {}), today: today(t.deps.clock()), infantMaxMonths: tenant.rules.infantMaxMonths, deadlineDays: 5 };
  const { inputs } = await inTenant(database.db, tenant.id, (trx) => loadInputs(trx, tenant, t.deps.keys, params));
  const { k1, k2, k3 } = orderFor(params)!(inputs);
  const f = inputs.facilityIds.indexOf(facility);
  const apps: { a: number; c: number }[] = [];
  for (let c = 0; c < inputs.childIds.length; c++) for (let a = inputs.choiceStart[c]!; a < inputs.choiceStart[c + 1]!; a++) if (inputs.appFacility[a] === f) apps.push({ a, c });
  apps.sort(({ a }, { a: b }) => (k1[a] !== k1[b] ? k1[a]! - k1[b]! : k2[a] !== k2[b] ? k2[a]! - k2[b]! : k3[a]! - k3[b]!));
  return apps.map(({ c }) => inputs.childIds[c]!);
}

async function scenario(rules: Record<string, unknown>) {
  const tenant = await tenantFor(t, { rules: { ...rules, coordinatedAllocation: true } });
  const facility = await createFacility(t, tenant, { name: `CPE Ordre ${seq}`, places_total: 20, places_infant: 4 });
  await inTenant(database.db, tenant.id, (trx) => trx.insertInto('facility_priorities').values({ tenant_id: tenant.id, facility_id: facility, kind: 'specialNeeds', detail: null, declared_at: t.deps.clock() }).execute());
  const kids = {
    // Category 5 under Quebec's rules, but meets the declared priority: lifted to the head while the facility is under its cap.
    priority: await kid(tenant, facility, { waitedMonths: 1, subsidised: true, priorities: ['specialNeeds'] }),
    staffSibling: await kid(tenant, facility, { waitedMonths: 0, staff: true, sibling: true }),
    staff: await kid(tenant, facility, { waitedMonths: 14, staff: true }),
    sibling: await kid(tenant, facility, { waitedMonths: 2, sibling: true, subsidised: true }),
    longWait: await kid(tenant, facility, { waitedMonths: 30, subsidised: true }),
    notSubsidised: await kid(tenant, facility, { waitedMonths: 3 }),
    subsidised: await kid(tenant, facility, { waitedMonths: 4, subsidised: true }),
    staffOnly: await kid(tenant, facility, { waitedMonths: 5, staff: true, subsidised: true }),
  };
  return { tenant, facility, kids };
}

async function roundAndReplay(tenant: Tenant, facility: string, list: string[], vacancies: number) {
  await inTenant(t.database.ownerDb(), tenant.id, (trx) => trx.updateTable('facility_places').set({ vacancies }).where('facility_id', '=', facility).where('age_group', '=', 'toddler').execute());
  const now = t.deps.clock();
  const s = await runAllocation(database.db, t.deps.keys, tenant, { dryRun: false, today: today(now), deadlineDays: 5, now, origin: ORIGIN, baseUrl: 'https://guichet.example.org' });
  expect(s.placed).toBe(vacancies);
  const offers = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('offers').select(['id', 'child_id', 'by_priority', 'deadline']).where('allocation_run_id', '=', s.runId).execute());
  expect(new Set(offers.map((o) => o.child_id))).toEqual(new Set(list.slice(0, vacancies)));
  // Each family is e-mailed at once, with the link to its offer; the deadline is counted the tenant's way.
  const mail = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('mail_outbox').select(['body_text', 'subject']).where('template', '=', 'offer').execute());
  for (const o of offers) {
    expect(o.deadline.getTime()).toBe(offerDeadline(now, { ...tenant.rules.offers, deadlineDays: 5 }).getTime());
    expect(mail.filter((m) => m.body_text.includes(`https://guichet.example.org/offers/${o.id}`))).toHaveLength(1);
  }
  const told = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['target_ids', 'actor_account_id', 'actor_roles']).where('action', '=', 'waitlist.offer.create').execute());
  for (const o of offers) expect(told.find((e) => e.target_ids[0] === o.id)).toMatchObject({ actor_account_id: null, actor_roles: ['system:referral'] });
  const replay = await replayAllocation(database.db, t.deps.keys, tenant.id, s.runId, ORIGIN, now);
  expect(replay.problem).toBeNull();
  expect(replay.replayedOutputsHash).toBe(s.outputsHash);
  return { runId: s.runId, offers };
}

async function explanationOf(tenant: Tenant, k: Kid) {
  const ctx = ctxFor(t, tenant, await actorByEmail(t, tenant, k.email, t.deps.clock(), 10, ['password']));
  return (await readAllocationExplanation(t.deps, ctx, k.childId))!;
}

/** The family's explanation page as its parent gets it, as text. */
async function explanationPage(tenant: Tenant, k: Kid, lang: 'fr' | 'en' = 'fr'): Promise<string> {
  const client = new Client(t.app, tenant.hosts[0]!);
  expect((await client.signIn(k.email, PASSWORD)).status).toBe(303);
  const res = await client.get(`/children/${k.childId}/allocation${lang === 'en' ? '?lang=en' : ''}`);
  expect(res.status).toBe(200);
  return textOf(res.body);
}

describe('the allocation round beside a facility\'s own declaration', () => {
  it('a declaration under way when the round starts is waited for, and the round offers what it left open', async () => {
    const { tenant, facility, kids } = await scenario({});
    await inTenant(t.database.ownerDb(), tenant.id, (trx) => trx.updateTable('facility_places').set({ vacancies: 2 }).where('facility_id', '=', facility).where('age_group', '=', 'toddler').execute());
    // A transaction holding the facility's places (as a declaration does) withdraws one of the two open places.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let locked!: () => void;
    const isLocked = new Promise<void>((r) => (locked = r));
    const declaration = inTenant(database.db, tenant.id, async (trx) => {
      await trx.selectFrom('facility_places').select('vacancies').where('facility_id', '=', facility).forUpdate().execute();
      await trx.updateTable('facility_places').set({ vacancies: 1 }).where('facility_id', '=', facility).where('age_group', '=', 'toddler').execute();
      locked();
      await held;
    });
    await isLocked;
    const now = t.deps.clock();
    const round = runAllocation(database.db, t.deps.keys, tenant, { dryRun: false, today: today(now), deadlineDays: 5, now, origin: ORIGIN });
    await new Promise((r) => setTimeout(r, 200));
    release();
    await declaration;
    const s = await round;
    // One place offered, not two: the round read the places once the declaration had committed.
    expect(s.placed).toBe(1);
    const left = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('facility_places').select('vacancies').where('facility_id', '=', facility).where('age_group', '=', 'toddler').executeTakeFirstOrThrow());
    expect(left.vacancies).toBe(0);
    expect(Object.keys(kids).length).toBeGreaterThan(1);
  });
});

describe('the allocation round follows the tenant order', () => {
  it('Quebec categories: a declared priority under the cap lifts, then categories and seniority, as the candidate list', async () => {
    const { tenant, facility, kids } = await scenario({});
    const list = await candidateList(tenant, facility);
    expect(list).toHaveLength(8);
    const k = kids;
    expect(list).toEqual([k.priority, k.staffSibling, k.staff, k.staffOnly, k.sibling, k.notSubsidised, k.longWait, k.subsidised].map((x) => x.childId));
    expect(await roundOrder(tenant, facility)).toEqual(list);

    const { offers } = await roundAndReplay(tenant, facility, list, 3);
    // The admission by priority counts against the facility's cap, as a referral's would.
    expect(offers.find((o) => o.child_id === kids.priority.childId)?.by_priority).toBe('specialNeeds');
    expect(offers.filter((o) => o.child_id !== kids.priority.childId).every((o) => o.by_priority === null)).toBe(true);

    // The last place went to a staff member's child (category 2): the sibling (category 3) is told that a
    // category went ahead, but with three admitted, not which: that would come close to naming the child.
    const e = await explanationOf(tenant, kids.sibling);
    expect(e.choices[0]).toMatchObject({ outcome: 'ahead', why: 'category', points: null, category: 3, lastCategory: null, lastDesiredEntryDate: null, lastPoints: null, lastWithheld: true });
    const page = await explanationPage(tenant, kids.sibling);
    // (The page's narrow no-break spaces read as spaces in its text.)
    expect(page).toContain('La dernière candidature admise dans ce groupe d’âge était d’une catégorie prioritaire devant la vôtre (« 3 — fratrie admise »).');
    expect(page).toContain('Le détail de la dernière candidature admise n’est pas affiché : ce service a admis moins de 5 enfants dans ce groupe d’âge');
    expect(page).not.toContain('enfant du personnel');
    const en = await explanationPage(tenant, kids.sibling, 'en');
    expect(en).toContain('was in a category with priority over yours (“3 — sibling admitted”). The details of the last application admitted are not shown: this service admitted fewer than 5 children');
    expect(en).not.toContain('child of a staff member');
  });

  it('municipal points: weights, months waited and the priority weight, as the candidate list', async () => {
    const { tenant, facility, kids } = await scenario(SECOND_TENANT_RULES as unknown as Record<string, unknown>);
    expect(tenant.rules.ordering.kind).toBe('points');
    const list = await candidateList(tenant, facility);
    expect(list).toHaveLength(8);
    // Points: staff with sibling 40 + 10 + 20 = 70; waited 30 months 2 × 30 = 60; staff, 14 months 10 + 20 + 28 = 58;
    // sibling 40 + 4 = 44; the declared priority 25 + 2 = 27; not subsidised 20 + 6 = 26; staff 10 + 10 = 20; the rest 8.
    const k = kids;
    expect(list).toEqual([k.staffSibling, k.longWait, k.staff, k.sibling, k.priority, k.notSubsidised, k.staffOnly, k.subsidised].map((x) => x.childId));
    expect(await roundOrder(tenant, facility)).toEqual(list);

    // Five admitted, the threshold: the last admitted's points are shown (the declared priority's 27).
    expect(LAST_ADMITTED_MIN_GROUP).toBe(5);
    await roundAndReplay(tenant, facility, list, 5);
    const e = await explanationOf(tenant, kids.notSubsidised);
    expect(e.choices[0]).toMatchObject({ outcome: 'ahead', why: 'points', points: 26, lastPoints: 27, lastWithheld: false });
    expect(e.choices[0]!.lastCategory).not.toBeNull();
    expect(e.choices[0]!.lastDesiredEntryDate).not.toBeNull();
    const page = await explanationPage(tenant, kids.notSubsidised);
    expect(page).toContain('La dernière candidature admise avait plus de points (27) que la vôtre (26).');
    expect(page).not.toContain('n’est pas affiché');
  });

  it('municipal points, four admitted: the decisive term and the family\'s own points, not the last admitted\'s', async () => {
    const { tenant, facility, kids } = await scenario(SECOND_TENANT_RULES as unknown as Record<string, unknown>);
    const list = await candidateList(tenant, facility);
    await roundAndReplay(tenant, facility, list, 4);
    const e = await explanationOf(tenant, kids.priority);
    expect(e.choices[0]).toMatchObject({ outcome: 'ahead', why: 'points', points: 27, lastPoints: null, lastCategory: null, lastDesiredEntryDate: null, lastWithheld: true });
    const page = await explanationPage(tenant, kids.priority);
    expect(page).toContain('La dernière candidature admise avait plus de points que la vôtre (27). Le détail de la dernière candidature admise n’est pas affiché');
    expect(page).not.toContain('(44)');
  });
});
