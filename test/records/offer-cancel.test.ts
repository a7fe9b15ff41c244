/**
 * What happens to an offer when what it answered to goes away, and what an
 * acceptance changes on the child: withdrawing the registration, deleting the
 * file, or a family's deletion request cancels the child's pending offer in
 * the same transaction and refers the next child at once; accepting a place
 * at a CPE marks the child as in subsidised care, so its other registrations
 * rank without the "not in subsidised care" criterion (Quebec category 4,
 * the points order's weight).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import * as records from '../../src/records/gateway.ts';
import { answerOffer, declareVacancies } from '../../src/records/offers.ts';
import { readChildRanks } from '../../src/records/ranks.ts';
import { SECOND_TENANT_RULES } from '../../src/demo/setup.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { actorByEmail, createAdmin, createFacility, createParent, createStaff, ctxFor, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
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
const uniq = () => `${Date.now().toString(36)}${(seq++).toString(36)}`;

interface Kid {
  email: string;
  childId: string;
}

async function parentCtx(tenant: Tenant, email: string) {
  return ctxFor(t, tenant, await actorByEmail(t, tenant, email, t.deps.clock(), 10, ['password']));
}

/** A toddler registered with the facilities, waiting since `waitedMonths`. */
async function kid(tenant: Tenant, facilities: string[], waitedMonths: number): Promise<Kid> {
  const email = `parent.${uniq()}@exemple.test`;
  await createParent(t, tenant, email);
  const ctx = await parentCtx(tenant, email);
  const t0 = today(t.deps.clock());
  const { id } = await records.createChildFile(t.deps, ctx, { firstName: 'Noé', lastName: `Côté${seq}`, birthDate: addMonths(t0, -30), nirec: null, desiredEntryDate: addMonths(t0, -waitedMonths), daysOfCare: 31, inSubsidisedCare: false });
  for (const f of facilities) await records.addApplication(t.deps, ctx, id, { facilityId: f, siblingAttending: false, parentIsStaff: false });
  return { email, childId: id };
}

async function setup(rules: Record<string, unknown> = {}) {
  const tenant = await tenantFor(t, { rules });
  const facility = await createFacility(t, tenant, { kind: 'cpe', places_total: 10, places_infant: 2 });
  const other = await createFacility(t, tenant, { kind: 'garderie', subsidised: false });
  const adminId = await createAdmin(t, tenant, `admin.${uniq()}@exemple.test`);
  const staffEmail = `educ.${uniq()}@exemple.test`;
  await createStaff(t, tenant, staffEmail, facility, adminId);
  const staff = ctxFor(t, tenant, await actorByEmail(t, tenant, staffEmail, t.deps.clock(), 10, ['password', 'totp']));
  const first = await kid(tenant, [facility, other], 12);
  const second = await kid(tenant, [facility], 6);
  return { tenant, facility, other, staff, first, second };
}

async function offers(tenant: Tenant, facility: string) {
  return inTenant(database.db, tenant.id, (trx) => trx.selectFrom('offers').select(['id', 'child_id', 'status']).where('facility_id', '=', facility).orderBy('offered_at').orderBy('id').execute());
}

async function toddlerVacancies(tenant: Tenant, facility: string) {
  return inTenant(database.db, tenant.id, async (trx) => (await trx.selectFrom('facility_places').select('vacancies').where('facility_id', '=', facility).where('age_group', '=', 'toddler').executeTakeFirstOrThrow()).vacancies);
}

async function cancelEvents(tenant: Tenant) {
  return inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['target_ids', 'details', 'purpose']).where('action', '=', 'waitlist.offer.cancel').orderBy('seq').execute());
}

describe('a pending offer whose registration or file goes away', () => {
  it('withdrawing the registration cancels the offer and refers the next child in the same transaction', async () => {
    const s = await setup();
    await declareVacancies(t.deps, s.staff, s.facility, { toddler: 1 });
    const [offer] = await offers(s.tenant, s.facility);
    expect(offer).toMatchObject({ child_id: s.first.childId, status: 'pending' });

    const ctx = await parentCtx(s.tenant, s.first.email);
    const app = await inTenant(database.db, s.tenant.id, async (trx) => (await trx.selectFrom('applications').select('id').where('child_id', '=', s.first.childId).where('facility_id', '=', s.facility).executeTakeFirstOrThrow()).id);
    await records.withdrawApplication(t.deps, ctx, s.first.childId, app);

    const after = await offers(s.tenant, s.facility);
    expect(after.map((o) => [o.child_id, o.status])).toEqual([
      [s.first.childId, 'cancelled'],
      [s.second.childId, 'pending'],
    ]);
    expect(await toddlerVacancies(s.tenant, s.facility)).toBe(0);
    const [e] = await cancelEvents(s.tenant);
    expect(e!.target_ids).toContain(offer!.id);
    expect(e!.details).toMatchObject({ reason: 'application_withdrawn' });
    // The child's other registration stays, and no offer is waiting on it.
    expect(await inTenant(database.db, s.tenant.id, (trx) => trx.selectFrom('applications').select('status').where('child_id', '=', s.first.childId).where('facility_id', '=', s.other).executeTakeFirstOrThrow())).toEqual({ status: 'active' });
  });

  it('deleting the file, and a family deletion request, cancel the offer and refer the next child', async () => {
    const s = await setup();
    const third = await kid(s.tenant, [s.facility], 1);
    await declareVacancies(t.deps, s.staff, s.facility, { toddler: 1 });
    expect((await offers(s.tenant, s.facility))[0]).toMatchObject({ child_id: s.first.childId, status: 'pending' });

    await records.deleteChildFile(t.deps, await parentCtx(s.tenant, s.first.email), s.first.childId);
    expect((await offers(s.tenant, s.facility)).map((o) => [o.child_id, o.status])).toEqual([
      [s.first.childId, 'cancelled'],
      [s.second.childId, 'pending'],
    ]);

    await records.retireChildFiles(t.deps, await parentCtx(s.tenant, s.second.email), [s.second.childId], 'parent_request');
    expect((await offers(s.tenant, s.facility)).map((o) => [o.child_id, o.status])).toEqual([
      [s.first.childId, 'cancelled'],
      [s.second.childId, 'cancelled'],
      [third.childId, 'pending'],
    ]);
    expect((await cancelEvents(s.tenant)).map((e) => (e.details as { reason: string }).reason)).toEqual(['file_deleted', 'deletion_request']);
  });
});

describe('accepting a place', () => {
  it('at a CPE: the child is now in subsidised care, and its other registration ranks so (Quebec category 5, not 4)', async () => {
    const s = await setup();
    const ctx = await parentCtx(s.tenant, s.first.email);
    expect((await readChildRanks(t.deps, ctx, s.first.childId)).ranks.map((r) => r.category)).toEqual([4, 4]);
    await declareVacancies(t.deps, s.staff, s.facility, { toddler: 1 });
    const [offer] = await offers(s.tenant, s.facility);
    await answerOffer(t.deps, await parentCtx(s.tenant, s.first.email), offer!.id, 'accept');

    const child = await inTenant(database.db, s.tenant.id, (trx) => trx.selectFrom('children').select('in_subsidised_care').where('id', '=', s.first.childId).executeTakeFirstOrThrow());
    expect(child.in_subsidised_care).toBe(true);
    const ranks = (await readChildRanks(t.deps, await parentCtx(s.tenant, s.first.email), s.first.childId)).ranks;
    expect(ranks.map((r) => [r.facilityId, r.category])).toEqual([[s.other, 5]]);
    // The file's history has the change, as an edit would.
    const versions = await inTenant(database.db, s.tenant.id, (trx) => trx.selectFrom('child_file_versions').select('changed_fields').where('child_id', '=', s.first.childId).orderBy('version').execute());
    expect(versions.at(-1)!.changed_fields).toEqual(['in_subsidised_care']);
  });

  it('under the points order: the notInSubsidisedCare weight stops applying', async () => {
    const s = await setup(SECOND_TENANT_RULES as unknown as Record<string, unknown>);
    const before = (await readChildRanks(t.deps, await parentCtx(s.tenant, s.first.email), s.first.childId)).ranks.find((r) => r.facilityId === s.other)!;
    expect(before.points!.notInSubsidisedCare).toBe(20);
    await declareVacancies(t.deps, s.staff, s.facility, { toddler: 1 });
    const [offer] = await offers(s.tenant, s.facility);
    await answerOffer(t.deps, await parentCtx(s.tenant, s.first.email), offer!.id, 'accept');
    const after = (await readChildRanks(t.deps, await parentCtx(s.tenant, s.first.email), s.first.childId)).ranks.find((r) => r.facilityId === s.other)!;
    expect(after.points!.notInSubsidisedCare).toBe(0);
    expect(after.points!.total).toBe(before.points!.total - 20);
  });
});
