/**
 * The referral end to end, over HTTP where a person acts: a facility
 * declares a vacancy → the next eligible child is offered the place → the
 * e-mail is in the outbox → the parent accepts → the facility learns who the
 * child is → the director confirms the start. Then refusal and expiry (the
 * place goes on to the next child), bad input, another family's offer,
 * another tenant's rules, and two declarations at once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import * as records from '../../src/records/gateway.ts';
import { answerOffer, declareVacancies, offerDeadline } from '../../src/records/offers.ts';
import { parseRules } from '../../src/tenants/rules.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { runOfferExpiry } from '../../src/waitlist/offer-expiry.ts';
import { actorByEmail, createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
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
const uniq = () => `${Date.now().toString(36)}${(seq++).toString(36)}`;
const DAY = 86_400_000;

interface Kid {
  email: string;
  childId: string;
  reference: string;
  lastName: string;
}

/** A parent with one child registered with the facilities, through the gateway (as the forms do). */
async function family(tenant: Tenant, facilities: string[], opts: { birthMonthsAgo: number; entryInMonths: number; lastName?: string }): Promise<Kid> {
  const email = `parent.${uniq()}@exemple.test`;
  await createParent(t, tenant, email);
  const now = t.deps.clock();
  const ctx = ctxFor(t, tenant, await actorByEmail(t, tenant, email, now, 10, ['password']));
  const t0 = today(now);
  const lastName = opts.lastName ?? `Tremblay${String.fromCharCode(65 + (seq % 26))}`;
  const { id } = await records.createChildFile(t.deps, ctx, { firstName: 'Léa', lastName, birthDate: addMonths(t0, -opts.birthMonthsAgo), nirec: null, desiredEntryDate: addMonths(t0, opts.entryInMonths), daysOfCare: 31, inSubsidisedCare: false });
  for (const f of facilities) await records.addApplication(t.deps, ctx, id, { facilityId: f, siblingAttending: false, parentIsStaff: false });
  const reference = await inTenant(database.db, tenant.id, async (trx) => (await trx.selectFrom('children').select('reference').where('id', '=', id).executeTakeFirstOrThrow()).reference);
  return { email, childId: id, reference, lastName };
}

async function signedIn(tenant: Tenant, email: string): Promise<Client> {
  const c = new Client(t.app, tenant.hosts[0]!);
  expect((await c.signIn(email, PASSWORD)).status).toBe(303);
  return c;
}

async function grantDirector(tenant: Tenant, accountId: string, facilityId: string, grantedBy: string, approvedBy: string) {
  const now = t.deps.clock();
  await inTenant(database.db, tenant.id, (trx) =>
    trx
      .insertInto('memberships')
      .values({ tenant_id: tenant.id, account_id: accountId, role: 'facility_director', facility_id: facilityId, source: 'grant', granted_by: grantedBy, approved_by: approvedBy, created_at: new Date(now.getTime() - 2 * 3600_000), expires_at: new Date(now.getTime() + 4 * 3600_000) })
      .execute(),
  );
}

async function offersOf(tenant: Tenant) {
  return inTenant(database.db, tenant.id, (trx) => trx.selectFrom('offers').selectAll().orderBy('offered_at').orderBy('id').execute());
}

async function placesOf(tenant: Tenant, facilityId: string) {
  return inTenant(database.db, tenant.id, (trx) => trx.selectFrom('facility_places').select(['age_group', 'places', 'vacancies']).where('facility_id', '=', facilityId).orderBy('age_group').execute());
}

async function applicationStatus(tenant: Tenant, childId: string, facilityId: string) {
  return inTenant(database.db, tenant.id, async (trx) => (await trx.selectFrom('applications').select('status').where('child_id', '=', childId).where('facility_id', '=', facilityId).executeTakeFirstOrThrow()).status);
}

async function events(tenant: Tenant, action: string) {
  return inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['action', 'outcome', 'fields', 'target_ids', 'actor_account_id', 'details']).where('action', '=', action).orderBy('seq').execute());
}

describe('the deadline to answer', () => {
  const at = (iso: string, offers: Record<string, unknown> = {}) => offerDeadline(new Date(iso), parseRules({ offers }).offers).toISOString();
  it('keeps the time of day on Quebec\'s clocks across a change of hour, and counts no weekend nor holiday', () => {
    // Friday 6 March 2026, 23:30 EST: five business days on is Friday 13 March, 23:30 EDT (the clocks moved on the 8th).
    expect(at('2026-03-07T04:30:00Z')).toBe('2026-03-14T03:30:00.000Z');
    // Friday 30 October 2026, 12:00 EDT: Friday 6 November, 12:00 EST.
    expect(at('2026-10-30T16:00:00Z')).toBe('2026-11-06T17:00:00.000Z');
    // A day from Saturday 7 March 2026, 02:30 EST: Sunday's 02:30 does not exist (the clocks skip it), so 03:30 EDT.
    expect(at('2026-03-07T07:30:00Z', { deadlineDays: 1, businessDays: false })).toBe('2026-03-08T07:30:00.000Z');
    // Three calendar days from Saturday 7 March, 12:00 EST: Tuesday 10 March, 12:00 EDT.
    expect(at('2026-03-07T17:00:00Z', { deadlineDays: 3, businessDays: false })).toBe('2026-03-10T16:00:00.000Z');
    // Tuesday 22 December 2026, 10:00: Christmas (a Friday) does not count — Wednesday 30 December.
    expect(at('2026-12-22T15:00:00Z')).toBe('2026-12-30T15:00:00.000Z');
    expect(at('2026-12-22T15:00:00Z', { holidays: 'none' })).toBe('2026-12-29T15:00:00.000Z');
    expect(at('2026-12-22T15:00:00Z', { closedDays: ['2026-12-24'] })).toBe('2026-12-31T15:00:00.000Z');
    // Thursday 2 April 2026: Good Friday and Easter Monday do not count — Monday 13 April.
    expect(at('2026-04-02T14:00:00Z')).toBe('2026-04-13T14:00:00.000Z');
    // The Monday before 25 May, 24 June and Labour Day.
    expect(at('2026-05-15T14:00:00Z', { deadlineDays: 1 })).toBe('2026-05-19T14:00:00.000Z');
    expect(at('2026-06-23T14:00:00Z', { deadlineDays: 1 })).toBe('2026-06-25T14:00:00.000Z');
    expect(at('2026-09-04T14:00:00Z', { deadlineDays: 1 })).toBe('2026-09-08T14:00:00.000Z');
  });
});

describe('referral', () => {
  it('declare → offer → e-mail → accept → identity to the facility → start confirmed; another family is refused and recorded', async () => {
    const tenant = await tenantFor(t);
    const facility = await createFacility(t, tenant, { name: 'CPE Les Lucioles', places_total: 5, places_infant: 2 });
    const other = await createFacility(t, tenant, { name: 'CPE Les Hiboux' });
    // The trigger gave both facilities their places from the permit.
    expect(await placesOf(tenant, facility)).toEqual([
      { age_group: 'infant', places: 2, vacancies: 0 },
      { age_group: 'toddler', places: 3, vacancies: 0 },
    ]);
    const first = await family(tenant, [facility, other], { birthMonthsAgo: 24, entryInMonths: 1, lastName: 'Gagnon-Côté' });
    const second = await family(tenant, [facility], { birthMonthsAgo: 30, entryInMonths: 2 });
    // First in order by entry date, but an infant: not for a toddler place.
    const baby = await family(tenant, [facility], { birthMonthsAgo: 3, entryInMonths: 0 });

    const adminEmail = `admin.${uniq()}@exemple.test`;
    const adminId = await createAdmin(t, tenant, adminEmail);
    const staffEmail = `educ.${uniq()}@exemple.test`;
    const staffId = await createStaff(t, tenant, staffEmail, facility, adminId);
    const directorEmail = `direction.${uniq()}@exemple.test`;
    const directorId = await createStaff(t, tenant, directorEmail, facility);
    await grantDirector(tenant, directorId, facility, staffId, adminId);

    const staff = await signedIn(tenant, staffEmail);
    const places = await staff.get(`/staff/facilities/${facility}/places`);
    expect(places.status).toBe(200);
    expect(textOf(places.body)).toContain('Places au permis');

    const declared = await staff.post(`/staff/facilities/${facility}/vacancies`, { infant: '0', toddler: '1' });
    expect(declared.status).toBe(303);
    expect(textOf((await staff.get(String(declared.headers.location))).body)).toContain('Une offre faite');
    const [offer, ...none] = await offersOf(tenant);
    expect(none).toEqual([]);
    expect(offer).toMatchObject({ child_id: first.childId, facility_id: facility, age_group: 'toddler', status: 'pending' });
    // Quebec: 5 business days.
    expect(offer!.deadline.getTime()).toBe(offerDeadline(offer!.offered_at, parseRules({}).offers).getTime());
    expect(offer!.deadline.getTime() - offer!.offered_at.getTime()).toBeGreaterThanOrEqual(5 * DAY);
    expect((await placesOf(tenant, facility))[1]).toMatchObject({ vacancies: 0 });

    // The e-mail, in the account's language, with the link and no name.
    const mail = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('mail_outbox').selectAll().where('to_address', '=', first.email).where('template', '=', 'offer').execute());
    expect(mail).toHaveLength(1);
    expect(mail[0]!.subject).toBe('Une place vous est offerte');
    expect(mail[0]!.body_text).toContain(`/offers/${offer!.id}`);
    expect(mail[0]!.body_text).toContain(first.reference);
    expect(mail[0]!.body_text).not.toContain(first.lastName);
    // Every step in the audit log: the declaration, the offer. The age groups came from the clear birth month: no birth date was opened.
    expect((await events(tenant, 'waitlist.vacancy.declare')).map((e) => e.actor_account_id)).toContain(staffId);
    const created = await events(tenant, 'waitlist.offer.create');
    // Guichet's own work, not the staff member's read: they learn a reference, never the parent's address.
    expect(created.find((e) => e.target_ids.includes(offer!.id))).toMatchObject({ actor_account_id: null });
    expect(created.some((e) => e.fields.includes('birth_date'))).toBe(false);

    // Before acceptance the facility sees a reference, never a name.
    const before = await staff.get(`/staff/facilities/${facility}/referrals`);
    expect(before.status).toBe(200);
    expect(before.body).toContain(first.reference);
    expect(textOf(before.body)).not.toContain(first.lastName);

    // The parent sees the offer on the account page, on the child's page and on its own page.
    const parent = await signedIn(tenant, first.email);
    expect((await parent.get('/account')).body).toContain(`/offers/${offer!.id}`);
    expect((await parent.get(`/children/${first.childId}`)).body).toContain(`/offers/${offer!.id}`);
    const page = await parent.get(`/offers/${offer!.id}`);
    expect(page.status).toBe(200);
    expect(textOf(page.body)).toContain('CPE Les Lucioles');

    // Another family: not found, nothing changed, and the attempts recorded as denied.
    const intruder = await signedIn(tenant, second.email);
    expect((await intruder.get(`/offers/${offer!.id}`)).status).toBe(404);
    await intruder.get('/account');
    expect((await intruder.post(`/offers/${offer!.id}/accept`)).status).toBe(404);
    expect((await intruder.post(`/offers/${offer!.id}/refuse`)).status).toBe(404);
    expect((await offersOf(tenant))[0]!.status).toBe('pending');
    for (const a of ['waitlist.offer.read', 'waitlist.offer.accept', 'waitlist.offer.refuse']) {
      expect((await events(tenant, a)).filter((e) => e.outcome === 'denied' && e.target_ids.includes(offer!.id)), a).toHaveLength(1);
    }

    // Accepted: placement recorded, the other registration kept (Quebec).
    await parent.get(`/offers/${offer!.id}`);
    const accepted = await parent.post(`/offers/${offer!.id}/accept`);
    expect(accepted.status).toBe(303);
    expect((await offersOf(tenant))[0]!.status).toBe('accepted');
    expect(await applicationStatus(tenant, first.childId, facility)).toBe('placed');
    expect(await applicationStatus(tenant, first.childId, other)).toBe('active');
    // Twice: a clear refusal, nothing changed.
    await parent.get(`/offers/${offer!.id}`);
    const again = await parent.post(`/offers/${offer!.id}/refuse`);
    expect(again.status).toBe(409);
    expect(textOf(again.body)).toContain('Rien n’a été modifié');
    expect((await offersOf(tenant))[0]!.status).toBe('accepted');

    // Now the facility learns who the child is, through an audited read naming the fields.
    const after = await staff.get(`/staff/facilities/${facility}/referrals`);
    expect(textOf(after.body)).toContain(first.lastName);
    expect(after.body).toContain(first.email);
    const reads = await events(tenant, 'waitlist.referral.list');
    expect(reads.at(-1)!.fields).toEqual(expect.arrayContaining(['first_name', 'last_name', 'birth_date', 'account_email']));
    expect(reads.at(-1)!.target_ids).toContain(first.childId);

    // Staff who are not the director cannot confirm the start; the director can.
    const start = `/staff/facilities/${facility}/referrals/${offer!.id}/start`;
    expect((await staff.post(start, { [`startDate-${offer!.id}`]: today(t.deps.clock()) })).status).toBe(404);
    expect((await events(tenant, 'waitlist.offer.confirmStart')).filter((e) => e.outcome === 'denied')).toHaveLength(1);
    expect((await offersOf(tenant))[0]!.status).toBe('accepted');
    const director = await signedIn(tenant, directorEmail);
    const form = await director.get(`/staff/facilities/${facility}/referrals`);
    expect(form.body).toContain(start);
    const badDate = await director.post(start, { [`startDate-${offer!.id}`]: '2026-02-30' });
    expect(badDate.status).toBe(400);
    // A date before the offer, or years away: a typing mistake, said so, nothing recorded.
    for (const far of [addMonths(today(t.deps.clock()), -2), addMonths(today(t.deps.clock()), 30)]) {
      await director.get(`/staff/facilities/${facility}/referrals`);
      const out = await director.post(start, { [`startDate-${offer!.id}`]: far });
      expect(out.status, far).toBe(400);
      expect(textOf(out.body)).toContain('Le début de la garde suit l’offre de la place');
    }
    expect((await offersOf(tenant))[0]!.status).toBe('accepted');
    const startDate = addMonths(today(t.deps.clock()), 1);
    expect((await director.post(start, { [`startDate-${offer!.id}`]: startDate })).status).toBe(303);
    expect((await offersOf(tenant))[0]).toMatchObject({ status: 'started', start_date: startDate, start_confirmed_by: directorId });
    expect((await events(tenant, 'waitlist.offer.confirmStart')).filter((e) => e.outcome === 'success')).toHaveLength(1);

    // The parent deletes the file: it leaves the facility's pages at once, the referral staying a bare reference
    // (its identity and the parent's contact no longer opened, nor named in the facility's read).
    await parent.get(`/children/${first.childId}/delete`);
    expect((await parent.post(`/children/${first.childId}/delete`)).headers.location).toBe('/account?status=deleted');
    const gone = await staff.get(`/staff/facilities/${facility}/referrals`);
    expect(gone.body).toContain(first.reference);
    expect(textOf(gone.body)).not.toContain(first.lastName);
    expect(gone.body).not.toContain(first.email);
    expect((await events(tenant, 'waitlist.referral.list')).at(-1)!.target_ids).not.toContain(first.childId);
    expect(textOf(gone.body)).toContain('Dossier supprimé par la famille');
    // Nor does the parent's offer page open its first name any more.
    expect((await parent.get(`/offers/${offer!.id}`)).status).toBe(404);
    // Nor can the facility act on it any more: not found, and recorded as refused.
    expect((await director.post(start, { [`startDate-${offer!.id}`]: startDate })).status).toBe(404);
    expect((await events(tenant, 'waitlist.offer.confirmStart')).filter((e) => e.outcome === 'denied')).toHaveLength(2);

    // The infant was never offered the toddler place; an infant place goes to them.
    expect((await offersOf(tenant)).some((o) => o.child_id === baby.childId)).toBe(false);
    await staff.get(`/staff/facilities/${facility}/places`);
    expect((await staff.post(`/staff/facilities/${facility}/vacancies`, { infant: '1', toddler: '0' })).status).toBe(303);
    expect((await offersOf(tenant)).find((o) => o.child_id === baby.childId)).toMatchObject({ age_group: 'infant', status: 'pending' });
  });

  it('refusal and expiry hand the place to the next child; bad input changes nothing', async () => {
    const tenant = await tenantFor(t);
    const facility = await createFacility(t, tenant, { places_total: 3, places_infant: 0 });
    const kids = [];
    for (let i = 1; i <= 4; i++) kids.push(await family(tenant, [facility], { birthMonthsAgo: 24, entryInMonths: i }));
    const staffEmail = `educ.${uniq()}@exemple.test`;
    await createStaff(t, tenant, staffEmail, facility);
    const staff = await signedIn(tenant, staffEmail);
    await staff.get(`/staff/facilities/${facility}/places`);

    // Bad input: every case a 4xx page in French, nothing written.
    const before = { places: await placesOf(tenant, facility), offers: await offersOf(tenant) };
    for (const [body, status, says] of [
      [{ infant: '0', toddler: '-1' }, 400, 'Entrez un nombre entier'],
      [{ infant: '0', toddler: 'deux' }, 400, 'Entrez un nombre entier'],
      [{ infant: '0', toddler: '4' }, 400, 'ne peuvent pas dépasser'],
      [{ infant: '1', toddler: '1' }, 400, 'ne peuvent pas dépasser'],
      [{ toddler: '1' }, 400, 'Entrez un nombre entier'],
    ] as [Record<string, string>, number, string][]) {
      const r = await staff.post(`/staff/facilities/${facility}/vacancies`, body);
      expect(r.status, JSON.stringify(body)).toBe(status);
      expect(textOf(r.body), JSON.stringify(body)).toContain(says);
    }
    expect(await placesOf(tenant, facility)).toEqual(before.places);
    expect(await offersOf(tenant)).toEqual(before.offers);

    expect((await staff.post(`/staff/facilities/${facility}/vacancies`, { infant: '0', toddler: '1' })).status).toBe(303);
    let all = await offersOf(tenant);
    expect(all.map((o) => o.child_id)).toEqual([kids[0]!.childId]);

    // Refused: the place goes to the next child at once; the refused registration is withdrawn.
    const p1 = await signedIn(tenant, kids[0]!.email);
    await p1.get(`/offers/${all[0]!.id}`);
    expect((await p1.post(`/offers/${all[0]!.id}/refuse`)).status).toBe(303);
    all = await offersOf(tenant);
    expect(all.map((o) => [o.child_id, o.status])).toEqual([
      [kids[0]!.childId, 'refused'],
      [kids[1]!.childId, 'pending'],
    ]);
    expect(await applicationStatus(tenant, kids[0]!.childId, facility)).toBe('withdrawn');

    // Expired: the job hands it on; running it again (another instance) changes nothing.
    const now = new Date();
    t.setNow(new Date(now.getTime() + 10 * DAY));
    try {
      expect(await runOfferExpiry(t.deps)).toBeGreaterThanOrEqual(1);
      const once = await offersOf(tenant);
      // Its count is every tenant's: on PostgreSQL other files' tenants share the database, and their offers made
      // meanwhile are ten days old on this clock too. This tenant's offers must not change.
      await runOfferExpiry(t.deps);
      expect(await offersOf(tenant)).toEqual(once);
      expect(once.map((o) => [o.child_id, o.status])).toEqual([
        [kids[0]!.childId, 'refused'],
        [kids[1]!.childId, 'expired'],
        [kids[2]!.childId, 'pending'],
      ]);
      expect((await events(tenant, 'waitlist.offer.expire')).filter((e) => e.actor_account_id === null)).toHaveLength(1);
      // After the deadline the parent can no longer answer: a clear 410, nothing changed.
      const p2 = await signedIn(tenant, kids[1]!.email);
      await p2.get('/account');
      const late = await p2.post(`/offers/${once[1]!.id}/accept`);
      expect(late.status).toBe(409);
      expect(await applicationStatus(tenant, kids[1]!.childId, facility)).toBe('withdrawn');
      // A pending offer past its deadline the job has not reached yet: 410.
      t.setNow(new Date(now.getTime() + 20 * DAY));
      const p3 = await signedIn(tenant, kids[2]!.email);
      await p3.get('/account');
      const expiredAnswer = await p3.post(`/offers/${once[2]!.id}/accept`);
      expect(expiredAnswer.status).toBe(410);
      expect(textOf(expiredAnswer.body)).toContain('La date limite');
      expect((await offersOf(tenant))[2]!.status).toBe('pending');
    } finally {
      t.setNow(now);
    }
  });

  it('another tenant: 3 business days, 3 refusals then every registration withdrawn, other registrations withdrawn on acceptance', async () => {
    const rules = { offers: { deadlineDays: 3, businessDays: true, refusalsAllowed: 0, otherApplicationsOnAcceptance: 'withdraw' } };
    const tenant = await tenantFor(t, { rules });
    // Friday 10:00 in Montreal + 3 business days = Wednesday 10:00.
    expect(offerDeadline(new Date('2026-03-13T14:00:00Z'), parseRules(rules).offers).toISOString()).toBe('2026-03-18T14:00:00.000Z');
    const a = await createFacility(t, tenant, { places_total: 3, places_infant: 0 });
    const b = await createFacility(t, tenant, { places_total: 3, places_infant: 0 });
    const c = await createFacility(t, tenant, { places_total: 3, places_infant: 0 });
    const refuser = await family(tenant, [a, b], { birthMonthsAgo: 24, entryInMonths: 1 });
    const accepter = await family(tenant, [a, c], { birthMonthsAgo: 24, entryInMonths: 2 });
    const staffEmail = `educ.${uniq()}@exemple.test`;
    await createStaff(t, tenant, staffEmail, a);
    const now = t.deps.clock();
    const staffCtx = ctxFor(t, tenant, await actorByEmail(t, tenant, staffEmail, now, 10, ['totp']));
    expect(await declareVacancies(t.deps, staffCtx, a, { toddler: 1 })).toEqual({ offered: 1, open: 0 });
    const [o1] = await offersOf(tenant);
    await answerOffer(t.deps, ctxFor(t, tenant, await actorByEmail(t, tenant, refuser.email, now, 10, ['password'])), o1!.id, 'refuse');
    // Beyond the refusals allowed (0): every registration of the child is withdrawn.
    expect(await applicationStatus(tenant, refuser.childId, b)).toBe('withdrawn');
    const o2 = (await offersOf(tenant)).find((o) => o.status === 'pending')!;
    expect(o2.child_id).toBe(accepter.childId);
    await answerOffer(t.deps, ctxFor(t, tenant, await actorByEmail(t, tenant, accepter.email, now, 10, ['password'])), o2.id, 'accept');
    expect(await applicationStatus(tenant, accepter.childId, a)).toBe('placed');
    expect(await applicationStatus(tenant, accepter.childId, c)).toBe('withdrawn');
  });

  it('an answer and a withdrawal of the same registration at once follow one another: never both, never a deadlock', async () => {
    const tenant = await tenantFor(t);
    const facility = await createFacility(t, tenant, { places_total: 40, places_infant: 0 });
    const staffEmail = `educ.${uniq()}@exemple.test`;
    await createStaff(t, tenant, staffEmail, facility);
    const staff = await signedIn(tenant, staffEmail);
    await staff.get(`/staff/facilities/${facility}/places`);
    const outcomes: string[] = [];
    for (let round = 0; round < 8; round++) {
      const kid = await family(tenant, [facility], { birthMonthsAgo: 24, entryInMonths: 1 });
      expect((await staff.post(`/staff/facilities/${facility}/vacancies`, { infant: '0', toddler: '1' })).status).toBe(303);
      const offer = (await offersOf(tenant)).find((o) => o.child_id === kid.childId)!;
      expect(offer.status).toBe('pending');
      const ctx = () => ctxFor(t, tenant, actor);
      const actor = await actorByEmail(t, tenant, kid.email, t.deps.clock(), 10, ['password']);
      let rs: PromiseSettledResult<unknown>[];
      if (round % 2 === 0) {
        rs = await Promise.allSettled([answerOffer(t.deps, ctx(), offer.id, 'accept'), records.withdrawApplication(t.deps, ctx(), kid.childId, offer.application_id)]);
      } else {
        // The deadline has passed: the expiry job and the parent's withdrawal at once.
        await database.ownerDb().updateTable('offers').set({ offered_at: new Date(t.deps.clock().getTime() - 2 * DAY), deadline: new Date(t.deps.clock().getTime() - 1000) }).where('id', '=', offer.id).execute();
        rs = await Promise.allSettled([runOfferExpiry(t.deps), records.withdrawApplication(t.deps, ctx(), kid.childId, offer.application_id)]);
      }
      // The only refusal allowed: the offer was answered (cancelled) by the withdrawal that came first.
      for (const r of rs) if (r.status === 'rejected') expect(String((r.reason as { reason?: string }).reason ?? r.reason)).toBe('already_answered');
      const now = (await offersOf(tenant)).find((o) => o.id === offer.id)!;
      const app = await applicationStatus(tenant, kid.childId, facility);
      outcomes.push(`${now.status}/${app}`);
      expect(['accepted/placed', 'cancelled/withdrawn', 'expired/withdrawn']).toContain(`${now.status}/${app}`);
    }
    console.log(`answer or expiry against withdrawal, 8 rounds: ${outcomes.join(', ')}`);
  });

  it('places filled one after another count their pending offers against the priority cap', async () => {
    const tenant = await tenantFor(t);
    const facility = await createFacility(t, tenant, { places_total: 10, places_infant: 0 });
    await inTenant(database.db, tenant.id, (trx) => trx.insertInto('facility_priorities').values({ tenant_id: tenant.id, facility_id: facility, kind: 'specialNeeds', detail: null, declared_at: t.deps.clock() }).execute());
    // The longest wait has no priority; four children meet the facility's declared priority.
    await family(tenant, [facility], { birthMonthsAgo: 24, entryInMonths: 1 });
    for (let i = 2; i <= 5; i++) {
      const kid = await family(tenant, [], { birthMonthsAgo: 24, entryInMonths: i });
      const ctx = ctxFor(t, tenant, await actorByEmail(t, tenant, kid.email, t.deps.clock(), 10, ['password']));
      await records.addApplication(t.deps, ctx, kid.childId, { facilityId: facility, siblingAttending: false, parentIsStaff: false, priorities: ['specialNeeds'] });
    }
    const staffEmail = `educ.${uniq()}@exemple.test`;
    await createStaff(t, tenant, staffEmail, facility);
    const staff = await signedIn(tenant, staffEmail);
    await staff.get(`/staff/facilities/${facility}/places`);
    expect((await staff.post(`/staff/facilities/${facility}/vacancies`, { infant: '0', toddler: '4' })).status).toBe(303);
    const made = (await offersOf(tenant)).filter((o) => o.facility_id === facility);
    expect(made).toHaveLength(4);
    // The first place may go by priority (a facility with no admission counts as one); then no more than half.
    expect(made.filter((o) => o.by_priority === 'specialNeeds')).toHaveLength(2);
  });

  it('an edit keeps a desired entry date that has passed, and a placement\'s subsidised care; a new date in the past is refused', async () => {
    const tenant = await tenantFor(t);
    const facility = await createFacility(t, tenant, { places_total: 5, places_infant: 0 });
    const kid = await family(tenant, [facility], { birthMonthsAgo: 24, entryInMonths: 1 });
    const staffEmail = `educ.${uniq()}@exemple.test`;
    await createStaff(t, tenant, staffEmail, facility);
    const staff = await signedIn(tenant, staffEmail);
    await staff.get(`/staff/facilities/${facility}/places`);
    expect((await staff.post(`/staff/facilities/${facility}/vacancies`, { infant: '0', toddler: '1' })).status).toBe(303);
    const offer = (await offersOf(tenant)).find((o) => o.child_id === kid.childId)!;
    const parent = () => ctxFor(t, tenant, actor);
    let actor = await actorByEmail(t, tenant, kid.email, t.deps.clock(), 10, ['password']);
    await answerOffer(t.deps, parent(), offer.id, 'accept');
    const started = t.deps.clock();
    // Three months on: the desired entry date on file has passed.
    t.setNow(new Date(started.getTime() + 92 * DAY));
    try {
      actor = await actorByEmail(t, tenant, kid.email, t.deps.clock(), 10, ['password']);
      const file = await records.readChildFile(t.deps, parent(), kid.childId, 'parent.childFile.edit');
      expect(file.desiredEntryDate < today(t.deps.clock())).toBe(true);
      expect(file.inSubsidisedCare).toBe(true);
      const input = { firstName: 'Léa-Rose', lastName: kid.lastName, birthDate: file.birthDate, nirec: null, desiredEntryDate: file.desiredEntryDate, daysOfCare: file.daysOfCare, inSubsidisedCare: false };
      // The name corrected, the date on file kept: accepted; the box unticked does not undo the CPE place.
      await records.updateChildFile(t.deps, parent(), kid.childId, input);
      const after = await records.readChildFile(t.deps, parent(), kid.childId, 'parent.childFile.edit');
      expect(after).toMatchObject({ firstName: 'Léa-Rose', desiredEntryDate: file.desiredEntryDate, inSubsidisedCare: true });
      // Another date in the past: refused, nothing changed.
      await expect(records.updateChildFile(t.deps, parent(), kid.childId, { ...input, desiredEntryDate: addMonths(today(t.deps.clock()), -1) })).rejects.toMatchObject({ fields: { desiredEntryDate: 'entryBeforeToday' } });
      expect((await records.readChildFile(t.deps, parent(), kid.childId, 'parent.childFile.edit')).desiredEntryDate).toBe(file.desiredEntryDate);
    } finally {
      t.setNow(started);
    }
  });

  it('two declarations at once never offer the same child twice nor more places than declared', async () => {
    const tenant = await tenantFor(t);
    const h = await createFacility(t, tenant, { places_total: 3, places_infant: 0 });
    const k = await createFacility(t, tenant, { places_total: 3, places_infant: 0 });
    const kids = [];
    for (let i = 1; i <= 8; i++) kids.push(await family(tenant, [h, k], { birthMonthsAgo: 24, entryInMonths: i }));
    const e1 = `educ.h.${uniq()}@exemple.test`;
    const e2 = `educ.k.${uniq()}@exemple.test`;
    await createStaff(t, tenant, e1, h);
    await createStaff(t, tenant, e2, k);
    const s1 = await signedIn(tenant, e1);
    const s2 = await signedIn(tenant, e2);
    await s1.get(`/staff/facilities/${h}/places`);
    await s2.get(`/staff/facilities/${k}/places`);
    const started = Date.now();
    const rs = await Promise.all([s1.post(`/staff/facilities/${h}/vacancies`, { infant: '0', toddler: '3' }), s2.post(`/staff/facilities/${k}/vacancies`, { infant: '0', toddler: '3' })]);
    console.log(`two facilities declaring 3 vacancies each at once: ${Date.now() - started} ms`);
    expect(rs.map((r) => r.status)).toEqual([303, 303]);
    let all = await offersOf(tenant);
    expect(all).toHaveLength(6);
    expect(new Set(all.map((o) => o.child_id)).size).toBe(6);
    expect(all.filter((o) => o.facility_id === h)).toHaveLength(3);
    expect(all.filter((o) => o.facility_id === k)).toHaveLength(3);

    // The same facility twice at once: the second sees the first's offers and is refused, no place over.
    const other = await createFacility(t, tenant, { places_total: 3, places_infant: 0 });
    for (const kid of kids.slice(6)) {
      const ctx = ctxFor(t, tenant, await actorByEmail(t, tenant, kid.email, t.deps.clock(), 10, ['password']));
      await records.addApplication(t.deps, ctx, kid.childId, { facilityId: other, siblingAttending: false, parentIsStaff: false });
    }
    const e3 = `educ.o.${uniq()}@exemple.test`;
    const e4 = `educ.o2.${uniq()}@exemple.test`;
    await createStaff(t, tenant, e3, other);
    await createStaff(t, tenant, e4, other);
    const s3 = await signedIn(tenant, e3);
    const s4 = await signedIn(tenant, e4);
    await s3.get(`/staff/facilities/${other}/places`);
    await s4.get(`/staff/facilities/${other}/places`);
    const twice = await Promise.all([s3.post(`/staff/facilities/${other}/vacancies`, { infant: '0', toddler: '2' }), s4.post(`/staff/facilities/${other}/vacancies`, { infant: '0', toddler: '2' })]);
    expect(twice.map((r) => r.status).sort()).toEqual([303, 400]);
    all = await offersOf(tenant);
    expect(all.filter((o) => o.facility_id === other)).toHaveLength(2);
    expect(new Set(all.filter((o) => o.status === 'pending').map((o) => o.child_id)).size).toBe(all.filter((o) => o.status === 'pending').length);
  });
});
