/**
 * The programme's statistics over a known data set, through HTTP as the
 * operator reads them: children waiting by region, age group and month of
 * desired entry, places and vacancies, time to a place; counts under five as
 * "<5" and the cell that would give one away masked, on the page and in the
 * CSV (UTF-8 with a BOM, semicolons); filters validated; the read recorded
 * without any family; parents and facility staff refused.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import * as records from '../../src/records/gateway.ts';
import { suppressPartition } from '../../src/records/statistics.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { enrolTotp } from '../helpers/factors.ts';
import { actorOf, createAccount, grantRole } from '../records/people.ts';

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

const DAY = 86_400_000;

describe('operator statistics', () => {
  it('shows the known figures, suppresses small counts on the page and in the CSV, and records the read', async () => {
    t.setNow(new Date());
    const now = t.deps.clock();
    const n = Date.now().toString(36);
    const tenant = await tenantFor(t);
    const host = tenant.hosts[0]!;
    const fa = await createFacility(t, tenant, { name: 'CPE Les Mésanges' });
    const fb = await createFacility(t, tenant, { name: 'Garderie du Plateau' });
    await inTenant(database.db, tenant.id, async (trx) => {
      await trx.updateTable('facilities').set({ region: '06 - Montréal' }).where('id', '=', fb).execute();
      await trx
        .insertInto('facility_places')
        .values([
          { tenant_id: tenant.id, facility_id: fa, age_group: 'infant', places: 10, vacancies: 2, updated_at: now },
          { tenant_id: tenant.id, facility_id: fa, age_group: 'toddler', places: 70, vacancies: 0, updated_at: now },
          { tenant_id: tenant.id, facility_id: fb, age_group: 'toddler', places: 40, vacancies: 3, updated_at: now },
        ])
        .onConflict((oc) => oc.columns(['facility_id', 'age_group']).doUpdateSet((eb) => ({ places: eb.ref('excluded.places'), vacancies: eb.ref('excluded.vacancies') })))
        .execute();
    });

    // Parents and their children: six infants at A (entry next month), two toddlers at B (next month),
    // one toddler at both (in three months); one withdrawn and one deleted file do not wait.
    const t0 = today(now);
    const m1 = addMonths(t0, 1);
    const m3 = addMonths(t0, 3);
    const ids: { child: string; app: string }[] = [];
    let k = 0;
    const file = async (birthMonths: number, entry: string, facilities: string[]) => {
      const email = `p${k++}.${n}@exemple.test`;
      const accountId = await createParent(t, tenant, email);
      const parent = await actorOf(t, tenant, accountId, email);
      const ctx = ctxFor(t, tenant, parent);
      const { id } = await records.createChildFile(t.deps, ctx, { firstName: 'Léa', lastName: 'Côté', birthDate: addMonths(t0, -birthMonths), nirec: null, desiredEntryDate: entry, daysOfCare: 0b11111, inSubsidisedCare: false });
      for (const f of facilities) await records.addApplication(t.deps, ctx, id, { facilityId: f, siblingAttending: false, parentIsStaff: false });
      return { id, ctx };
    };
    for (let i = 0; i < 6; i++) {
      const { id } = await file(6, m1, [fa]);
      const app = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('applications').select('id').where('child_id', '=', id).executeTakeFirstOrThrow());
      ids.push({ child: id, app: app.id });
    }
    const toddlersB: string[] = [];
    for (let i = 0; i < 2; i++) toddlersB.push((await file(30, m1, [fb])).id);
    await file(30, m3, [fa, fb]);
    const gone = await file(30, m1, [fa]);
    const goneApp = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('applications').select('id').where('child_id', '=', gone.id).executeTakeFirstOrThrow());
    await records.withdrawApplication(t.deps, gone.ctx, gone.id, goneApp.id);
    const deleted = await file(6, m1, [fa]);
    await records.deleteChildFile(t.deps, deleted.ctx, deleted.id);

    // Placements: the six infants at A, offered 10 to 60 days after waiting began (next month); one toddler at B.
    const start = new Date(`${m1}T12:00:00Z`).getTime();
    await inTenant(database.db, tenant.id, async (trx) => {
      for (const [i, x] of ids.entries()) {
        const at = new Date(start + (i + 1) * 10 * DAY);
        await trx.insertInto('offers').values({ tenant_id: tenant.id, application_id: x.app, child_id: x.child, facility_id: fa, age_group: 'infant', status: i % 2 ? 'started' : 'accepted', offered_at: at, deadline: new Date(at.getTime() + 3 * DAY), answered_at: at }).execute();
      }
      const b = await trx.selectFrom('applications').select('id').where('child_id', '=', toddlersB[0]!).executeTakeFirstOrThrow();
      const at = new Date(start + 5 * DAY);
      await trx.insertInto('offers').values({ tenant_id: tenant.id, application_id: b.id, child_id: toddlersB[0]!, facility_id: fb, age_group: 'toddler', status: 'accepted', offered_at: at, deadline: new Date(at.getTime() + 3 * DAY) }).execute();
      // A refused offer is no placement.
      const c = await trx.selectFrom('applications').select('id').where('child_id', '=', toddlersB[1]!).executeTakeFirstOrThrow();
      await trx.insertInto('offers').values({ tenant_id: tenant.id, application_id: c.id, child_id: toddlersB[1]!, facility_id: fb, age_group: 'toddler', status: 'refused', offered_at: at, deadline: new Date(at.getTime() + 3 * DAY) }).execute();
    });

    // The operator, signed in with a second factor; an administrator approved the role.
    const adminId = await createAdmin(t, tenant, `admin.${n}@exemple.test`);
    const requester = await createAccount(t, tenant, `demande.${n}@exemple.test`);
    const opEmail = `operation.${n}@exemple.test`;
    const operator = await createAccount(t, tenant, opEmail);
    await grantRole(t, tenant, operator, 'program_operator', requester, adminId);
    await enrolTotp(t.deps, tenant, operator, opEmail);
    const op = new Client(t.app, host);
    expect((await op.signIn(opEmail, PASSWORD)).status).toBe(303);

    const page = await op.get('/operator/statistics');
    expect(page.status).toBe(200);
    const text = textOf(page.body);
    console.log(`statistics page: ${page.body.length} bytes`);
    expect(text).toContain('Total : 9 enfants en attente');
    // by region: A 7 (six infants and the child at both), B 3 → "<5"
    expect(page.body).toMatch(/<th scope="row">16 - Montérégie<\/th><td class="num">7<\/td>/);
    expect(page.body).toMatch(/<th scope="row">06 - Montréal<\/th><td class="num">&lt;5<\/td>/);
    // by age group: infants 6, toddlers 3 → "<5", and the infants masked (the total would give the toddlers away)
    expect(page.body).toMatch(/Poupons \(0 à 17 mois\)<\/th><td class="num">masqué<\/td>/);
    expect(page.body).toMatch(/18 mois à 5 ans<\/th><td class="num">&lt;5<\/td>/);
    // by month of desired entry: 8 next month (masked), 1 in three months (<5)
    expect(page.body).toContain(`<th scope="row">${m1.slice(0, 7)}</th><td class="num">masqué</td>`);
    expect(page.body).toContain(`<th scope="row">${m3.slice(0, 7)}</th><td class="num">&lt;5</td>`);
    // places and vacancies
    expect(page.body).toMatch(/16 - Montérégie<\/th><td>Poupons \(0 à 17 mois\)<\/td><td class="num">1<\/td><td class="num">10<\/td><td class="num">2<\/td>/);
    // time to a place: six infants at A, median 35 days, mean 35; the one toddler at B is "<5" with no time shown
    expect(page.body).toMatch(/16 - Montérégie<\/th><td>Poupons \(0 à 17 mois\)<\/td><td class="num">6<\/td><td class="num">35<\/td><td class="num">35<\/td>/);
    expect(page.body).toMatch(/06 - Montréal<\/th><td>18 mois à 5 ans<\/td><td class="num">&lt;5<\/td><td class="num">non affiché<\/td>/);
    // charts without script, with their text alternatives
    expect(page.body).toContain('<svg role="img"');
    expect(page.body).not.toMatch(/<script(?![^>]*src="\/assets\/guichet\.js")/);
    // no small count of children leaks as a number (places and vacancies are facilities' figures, not children)
    const [waiting, rest] = page.body.split('id="h-places"');
    expect(waiting).not.toMatch(/<td class="num">[1-4]<\/td>/);
    expect(rest!.split('id="h-placement"')[1]).not.toMatch(/<td class="num">[1-4]<\/td><td/);

    // CSV: BOM, semicolons, the same suppression
    const csv = await op.get('/operator/statistics/waiting-by-age.csv');
    expect(csv.status).toBe(200);
    expect(String(csv.headers['content-type'])).toMatch(/^text\/csv; charset=utf-8/);
    expect(csv.body.charCodeAt(0)).toBe(0xfeff);
    expect(csv.body.slice(1).split('\r\n')).toEqual(['Groupe d’âge;Enfants', 'Poupons (0 à 17 mois);masqué', '18 mois à 5 ans;<5', '']);
    const regionCsv = await op.get('/operator/statistics/waiting-by-region.csv?lang=en');
    expect(regionCsv.body.slice(1).split('\r\n')).toEqual(['Region;Children', '06 - Montréal;<5', '16 - Montérégie;7', '']);
    await op.get('/?lang=fr');
    const placementCsv = await op.get('/operator/statistics/placement.csv');
    expect(placementCsv.body).toContain('16 - Montérégie;Poupons (0 à 17 mois);6;35;35');

    // filters: a region, a period
    const b = await op.get(`/operator/statistics?region=${encodeURIComponent('06 - Montréal')}`);
    expect(b.status).toBe(200);
    expect(textOf(b.body)).toContain('Total : <5 enfants en attente');
    const later = await op.get(`/operator/statistics?from=${m3.slice(0, 7)}&to=${m3.slice(0, 7)}`);
    expect(textOf(later.body)).toContain('Total : <5 enfants en attente');
    // bad filters: a clear 400 in the reader's language, nothing computed
    for (const q of ['from=2026-13', 'from=2026-09&to=2026-01', `region=${encodeURIComponent('99 - Nulle part')}`, 'region=%E2%80%AEx', 'extra=1']) {
      const r = await op.get(`/operator/statistics?${q}`);
      expect(r.status, q).toBe(400);
      expect(r.body).toContain('Erreur');
    }
    expect((await op.get('/operator/statistics?from=2026-13&lang=en')).body).toContain('Enter a month as 2026-09');
    expect((await op.get('/operator/statistics/waiting-by-age.csv?from=bad')).status).toBe(400);
    expect((await op.get('/operator/statistics/nothing.csv')).status).toBe(404);

    // the reads are in the log, with their filters and no family
    const events = await inTenant(database.db, tenant.id, (trx) =>
      trx.selectFrom('audit_events').select(['action', 'outcome', 'family_ids', 'target_ids', 'details', 'actor_account_id']).where('action', 'in', ['statistics.read', 'statistics.export']).orderBy('seq').execute(),
    );
    expect(events.length).toBeGreaterThanOrEqual(5);
    for (const e of events) {
      expect(e.family_ids).toEqual([]);
      expect(e.actor_account_id).toBe(operator);
    }
    expect(events.some((e) => e.action === 'statistics.export' && (e.details as Record<string, unknown>).table === 'waiting-by-age')).toBe(true);
    expect(events.some((e) => e.action === 'statistics.read' && (e.details as Record<string, unknown>).region === '06 - Montréal')).toBe(true);

    // parents and facility staff are refused, and so is a visitor
    const parentEmail = `parent.${n}@exemple.test`;
    await createParent(t, tenant, parentEmail);
    const parent = new Client(t.app, host);
    await parent.signIn(parentEmail, PASSWORD);
    expect((await parent.get('/operator/statistics')).status).toBe(403);
    expect((await parent.get('/operator/statistics/places.csv')).status).toBe(403);
    const staffEmail = `educ.${n}@exemple.test`;
    await createStaff(t, tenant, staffEmail, fa);
    const staff = new Client(t.app, host);
    await staff.signIn(staffEmail, PASSWORD);
    expect((await staff.get('/operator/statistics')).status).toBe(403);
    expect((await new Client(t.app, host).get('/operator/statistics')).status).toBe(303);
    const denied = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(sql<string>`count(*)`.as('n')).where('action', '=', 'statistics.read').where('outcome', '=', 'denied').executeTakeFirstOrThrow());
    expect(Number(denied.n)).toBe(2);
  });

  it('an application carries its facility’s region, kept equal by the database when the directory moves the facility', async () => {
    t.setNow(new Date());
    const now = t.deps.clock();
    const tenant = await tenantFor(t);
    const fac = await createFacility(t, tenant, { name: 'CPE Le Phare' });
    const email = `region.${Date.now().toString(36)}@exemple.test`;
    const accountId = await createParent(t, tenant, email);
    const ctx = ctxFor(t, tenant, await actorOf(t, tenant, accountId, email));
    const { id } = await records.createChildFile(t.deps, ctx, { firstName: 'Noé', lastName: 'Roy', birthDate: addMonths(today(now), -20), nirec: null, desiredEntryDate: addMonths(today(now), 2), daysOfCare: 0b11111, inSubsidisedCare: false });
    await records.addApplication(t.deps, ctx, id, { facilityId: fac, siblingAttending: false, parentIsStaff: false });
    const regionOf = () => inTenant(database.db, tenant.id, async (trx) => (await trx.selectFrom('applications').select('facility_region').where('child_id', '=', id).executeTakeFirstOrThrow()).facility_region);
    expect(await regionOf()).toBe('16 - Montérégie');
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('facilities').set({ region: '05 - Estrie' }).where('id', '=', fac).execute());
    expect(await regionOf()).toBe('05 - Estrie');
    // Written directly, the copy comes back to the facility's.
    await inTenant(database.db, tenant.id, (trx) => sql`UPDATE applications SET facility_region = '06 - Montréal' WHERE child_id = ${id}`.execute(trx));
    expect(await regionOf()).toBe('05 - Estrie');
  });

  it('masks a second cell only when one small cell could be worked out from the total', () => {
    const cells = (xs: number[]) => xs.map((n, i) => ({ key: i, n }));
    expect(suppressPartition(cells([6, 3]), 9).map((c) => c.count)).toEqual([{ masked: true }, { lt5: true }]);
    expect(suppressPartition(cells([20, 6, 3]), 29).map((c) => c.count)).toEqual([{ n: 20 }, { masked: true }, { lt5: true }]);
    expect(suppressPartition(cells([20, 2, 3]), 25).map((c) => c.count)).toEqual([{ n: 20 }, { lt5: true }, { lt5: true }]);
    expect(suppressPartition(cells([20, 0]), 20).map((c) => c.count)).toEqual([{ n: 20 }, { n: 0 }]);
  });
});
