/**
 * Tenant rules on the waitlist, through the application and its database:
 * two programmes side by side (Quebec 2025 and the demo's second programme,
 * with the points order and registration before birth) ranking the same
 * files differently; a director declaring the facility's priorities (too
 * many: a clear 4xx, nothing changed; someone else: not found, recorded as
 * denied); a parent stating them, lifting the child while the facility is
 * under its cap and no longer once it is reached; the parent's rank and why
 * on the child's page; and the periodic confirmation — reminders by e-mail
 * in the account's language, inactivity out of every ranking, confirmation
 * by the parent (someone else's file: refused, recorded, nothing changed)
 * bringing the file back with or without its seniority as the rules say.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { SECOND_TENANT_RULES } from '../../src/demo/setup.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { runTenantConfirmation } from '../../src/records/confirmation.ts';
import * as records from '../../src/records/gateway.ts';
import { listRankedApplications, readChildRanks } from '../../src/records/ranks.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addDays, addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createFacility, createParent, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, randomSlug, testDbKind, type TestDatabase } from '../helpers/db.ts';
import { enrolTotp } from '../helpers/factors.ts';
import { actorOf } from '../records/people.ts';

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

const NOW = new Date('2026-11-23T15:00:00Z');
const T0 = today(NOW);

async function director(tenant: Tenant, facilityId: string, email: string): Promise<Actor> {
  const id = await createParent(t, tenant, email);
  // A director's role is privileged: granted by one administrator, approved by another.
  const granter = await createParent(t, tenant, `octroi.${email}`);
  const approver = await createAdmin(t, tenant, `approbation.${email}`, { secondFactor: false });
  await inTenant(database.db, tenant.id, (trx) =>
    trx.insertInto('memberships').values({ tenant_id: tenant.id, account_id: id, role: 'facility_director', facility_id: facilityId, source: 'grant', granted_by: granter, approved_by: approver, created_at: new Date(NOW.getTime() - 2 * 3600_000), expires_at: new Date(NOW.getTime() + 8 * 3600_000) }).execute(),
  );
  await enrolTotp(t.deps, tenant, id, email);
  return { ...(await actorOf(t, tenant, id, email)), mfa: true } as Actor;
}

interface Programme {
  tenant: Tenant;
  host: string;
  facility: string;
  parents: Record<'x' | 'y' | 'z', Actor>;
  children: Record<'x' | 'y' | 'z', string>;
  staff: Actor;
}

/**
 * The same three files in a programme: X has a sibling at the facility and is
 * already in subsidised care, wanting a place in two months; Y is in no
 * subsidised care and has waited twelve months; Z's parent is on the staff,
 * not in subsidised care, waiting twelve months too.
 */
async function programme(rules: Record<string, unknown>): Promise<Programme> {
  t.setNow(NOW);
  const slug = randomSlug('r-');
  const tenant = await tenantFor(t, { slug, rules, hosts: [`${slug}.localhost`] });
  const facility = await createFacility(t, tenant, { name: 'CPE Les Mésanges' });
  const staff = await director(tenant, facility, `direction.${slug}@exemple.test`);
  const parents = {} as Programme['parents'];
  const children = {} as Programme['children'];
  const files = {
    x: { at: NOW, entry: addMonths(T0, 2), sibling: true, staff: false, subsidised: true },
    y: { at: new Date(NOW.getTime() - 365 * 86_400_000), entry: null, sibling: false, staff: false, subsidised: false },
    z: { at: new Date(NOW.getTime() - 365 * 86_400_000), entry: null, sibling: false, staff: true, subsidised: false },
  } as const;
  for (const k of ['x', 'y', 'z'] as const) {
    const f = files[k];
    t.setNow(f.at);
    const email = `parent.${k}.${slug}@exemple.test`;
    const id = await createParent(t, tenant, email);
    parents[k] = await actorOf(t, tenant, id, email);
    const ctx = ctxFor(t, tenant, parents[k]);
    const d = today(f.at);
    const { id: childId } = await records.createChildFile(t.deps, ctx, { firstName: `Enfant ${k}`, lastName: 'Test', birthDate: addMonths(T0, -30), nirec: null, desiredEntryDate: f.entry ?? d, daysOfCare: 31, inSubsidisedCare: f.subsidised });
    await records.addApplication(t.deps, ctx, childId, { facilityId: facility, siblingAttending: f.sibling, parentIsStaff: f.staff });
    children[k] = childId;
  }
  t.setNow(NOW);
  // Files created a year ago would be due for confirmation: they were confirmed last week.
  await inTenant(database.db, tenant.id, (trx) => trx.updateTable('children').set({ confirmed_at: new Date(NOW.getTime() - 7 * 86_400_000) }).where('id', 'in', Object.values(children)).execute());
  return { tenant, host: `${slug}.localhost`, facility, parents, children, staff };
}

const SYSTEM = { actorAccountId: null, actorRoles: ['system:test'], ip: null, userAgent: 'vitest', requestId: null };

/** The order as the referral reads it: the server's own work, no actor. */
async function order(p: Programme): Promise<string[]> {
  const rows = await listRankedApplications(t.deps, ctxFor(t, p.tenant, null), p.facility, 'toddler', { system: SYSTEM });
  const name = Object.fromEntries(Object.entries(p.children).map(([k, v]) => [v, k]));
  return rows.map((r) => name[r.childId] ?? '?');
}

async function acceptedOffer(p: Programme, byPriority: string | null): Promise<void> {
  // An admission from an earlier referral: another child, its offer accepted.
  const slug = randomSlug('o-');
  const email = `admis.${slug}@exemple.test`;
  const parent = await actorOf(t, p.tenant, await createParent(t, p.tenant, email), email);
  const ctx = ctxFor(t, p.tenant, parent);
  const { id } = await records.createChildFile(t.deps, ctx, { firstName: 'Admis', lastName: 'Test', birthDate: addMonths(T0, -30), nirec: null, desiredEntryDate: T0, daysOfCare: 31, inSubsidisedCare: false });
  await records.addApplication(t.deps, ctx, id, { facilityId: p.facility, siblingAttending: false, parentIsStaff: false });
  await inTenant(database.db, p.tenant.id, async (trx) => {
    const app = await trx.selectFrom('applications').select('id').where('child_id', '=', id).executeTakeFirstOrThrow();
    await trx.updateTable('applications').set({ status: 'placed' }).where('id', '=', app.id).execute();
    await trx
      .insertInto('offers')
      .values({ tenant_id: p.tenant.id, application_id: app.id, child_id: id, facility_id: p.facility, age_group: 'toddler', status: 'accepted', by_priority: byPriority, offered_at: new Date(NOW.getTime() - 30 * 86_400_000), deadline: new Date(NOW.getTime() - 27 * 86_400_000), answered_at: new Date(NOW.getTime() - 28 * 86_400_000) })
      .execute();
  });
}

async function auditCount(tenant: Tenant, action: string, outcome: string): Promise<number> {
  const r = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select((eb) => eb.fn.countAll<string>().as('n')).where('action', '=', action).where('outcome', '=', outcome as 'denied').executeTakeFirstOrThrow());
  return Number(r.n);
}

describe('two programmes side by side', () => {
  let quebec: Programme;
  let municipal: Programme;
  beforeAll(async () => {
    quebec = await programme({});
    municipal = await programme(JSON.parse(JSON.stringify(SECOND_TENANT_RULES)) as Record<string, unknown>);
  });

  it('the same files rank by categories in one and by points in the other, and registration before birth is allowed only in the second', async () => {
    // Quebec: Z (category 2, staff), X (3, sibling), Y (4, not in subsidised care).
    expect(await order(quebec)).toEqual(['z', 'x', 'y']);
    // Points: Z 10 + 20 + 12 × 2 = 54, Y 20 + 24 = 44, X 40.
    expect(await order(municipal)).toEqual(['z', 'y', 'x']);
    const ranks = await listRankedApplications(t.deps, ctxFor(t, municipal.tenant, municipal.staff), municipal.facility, 'toddler');
    expect(ranks.map((r) => r.points?.total)).toEqual([54, 44, 40]);
    expect(ranks[1]!.points).toEqual({ siblingAttending: 0, parentIsStaff: 0, notInSubsidisedCare: 20, priorities: 0, monthsWaited: 24, total: 44 });
    // The infant group holds none of them.
    expect(await listRankedApplications(t.deps, ctxFor(t, quebec.tenant, quebec.staff), quebec.facility, 'infant')).toEqual([]);

    const unborn = { firstName: 'Bébé', lastName: 'Attendu', birthDate: addMonths(T0, 3), nirec: '', desiredEntryDate: addMonths(T0, 12), day_mon: 'on' };
    for (const [p, expected] of [[quebec, 400], [municipal, 303]] as const) {
      const c = new Client(t.app, p.host);
      expect((await c.signIn(p.parents.x.email, PASSWORD)).status).toBe(303);
      await c.get('/children/new');
      const r = await c.post('/children/new', unborn);
      expect(r.status, p.host).toBe(expected);
      if (expected === 400) expect(textOf(r.body)).toContain('La date de naissance');
    }
  });

  it('the parent sees the rank and why, live, on the child page, in both languages', async () => {
    const c = new Client(t.app, quebec.host);
    await c.signIn(quebec.parents.y.email, PASSWORD);
    const page = textOf((await c.get(`/children/${quebec.children.y}`)).body);
    expect(page).toContain('Rang sur les listes');
    expect(page).toContain('3e sur 3');
    expect(page).toContain('Catégorie 4');
    expect(page).toContain(`ancienneté depuis le`);
    const m = new Client(t.app, municipal.host);
    await m.signIn(municipal.parents.y.email, PASSWORD);
    const fr = textOf((await m.get(`/children/${municipal.children.y}`)).body);
    expect(fr).toContain('2e sur 3');
    expect(fr).toContain('44 points (pas encore en place subventionnée 20, mois d’attente 24)');
    const en = textOf((await m.get(`/children/${municipal.children.y}?lang=en`)).body);
    expect(en).toContain('2 of 3');
    expect(en).toContain('44 points (not yet in a subsidised place 20, months waited 24)');
    await m.get(`/children/${municipal.children.y}?lang=fr`);
    const r = await readChildRanks(t.deps, ctxFor(t, municipal.tenant, municipal.parents.y), municipal.children.y);
    expect(r.ranks).toEqual([expect.objectContaining({ rank: 2, total: 3, ordering: 'points', prioritiesMet: [] })]);
    // Each look is a read of the file, recorded with its purpose.
    const events = await inTenant(database.db, municipal.tenant.id, (trx) => trx.selectFrom('audit_events').select(['purpose', 'target_ids']).where('purpose', '=', 'parent.childFile.rank').execute());
    expect(events.length).toBeGreaterThanOrEqual(2);
    expect(events.every((e) => (e.target_ids as string[]).length === 1 && (e.target_ids as string[])[0] === municipal.children.y)).toBe(true);
  });

  it('a director declares priorities; too many or a missing detail is a clear 4xx with nothing changed; others get not found and a denied event', async () => {
    const p = municipal;
    const url = `/staff/facilities/${p.facility}/priorities`;
    const d = new Client(t.app, p.host);
    expect((await d.signIn(p.staff.email, PASSWORD)).status).toBe(303);
    const page = await d.get(url);
    expect(page.status).toBe(200);
    expect(textOf(page.body)).toContain('au plus 3 types');
    // The programme allows three kinds, and not the employer kind at all.
    let r = await d.post(url, { form: 'priorities', kind_specialNeeds: 'on', kind_socioEconomic: 'on', kind_residentOf: 'on', detail_residentOf: 'Longueuil', kind_employeeOf: 'on', detail_employeeOf: 'Hôpital' });
    expect(r.status).toBe(400);
    expect(textOf(r.body)).toContain('Ce type de priorité n’est pas permis');
    r = await d.post(url, { form: 'priorities', kind_residentOf: 'on', detail_residentOf: '   ' });
    expect(r.status).toBe(400);
    expect(textOf(r.body)).toContain('Précisez l’établissement');
    const none = await inTenant(database.db, p.tenant.id, (trx) => trx.selectFrom('facility_priorities').selectAll().where('facility_id', '=', p.facility).execute());
    expect(none).toEqual([]);
    r = await d.post(url, { form: 'priorities', kind_specialNeeds: 'on', kind_residentOf: 'on', detail_residentOf: 'Longueuil' });
    expect(r.status).toBe(303);
    const saved = await inTenant(database.db, p.tenant.id, (trx) => trx.selectFrom('facility_priorities').select(['kind', 'detail']).where('facility_id', '=', p.facility).orderBy('kind').execute());
    expect(saved).toEqual([{ kind: 'residentOf', detail: 'Longueuil' }, { kind: 'specialNeeds', detail: null }]);

    // Four kinds in a programme that allows three: refused whole.
    const q = quebec;
    const qd = new Client(t.app, q.host);
    await qd.signIn(q.staff.email, PASSWORD);
    const qurl = `/staff/facilities/${q.facility}/priorities`;
    await qd.get(qurl);
    const strict = await programmeWithMax(q, 2);
    r = await qd.post(qurl, { form: 'priorities', kind_specialNeeds: 'on', kind_socioEconomic: 'on', kind_indigenous: 'on' });
    expect(r.status).toBe(400);
    expect(textOf(r.body)).toContain('Trop de priorités');
    await strict.restore();

    // A parent of the programme is not the director: not found, and the attempt is recorded.
    const before = await auditCount(p.tenant, 'waitlist.facility.priorities.update', 'denied');
    const parent = new Client(t.app, p.host);
    await parent.signIn(p.parents.x.email, PASSWORD);
    await parent.get('/account');
    r = await parent.post(url, { form: 'priorities', kind_socioEconomic: 'on' });
    expect(r.status).toBe(404);
    expect(await auditCount(p.tenant, 'waitlist.facility.priorities.update', 'denied')).toBe(before + 1);
    expect((await inTenant(database.db, p.tenant.id, (trx) => trx.selectFrom('facility_priorities').select('kind').where('facility_id', '=', p.facility).execute())).length).toBe(2);
  });

  it('a stated priority lifts the child while the facility is under its cap, and no longer once the cap is reached', async () => {
    const p = quebec;
    const d = new Client(t.app, p.host);
    await d.signIn(p.staff.email, PASSWORD);
    await d.get(`/staff/facilities/${p.facility}/priorities`);
    expect((await d.post(`/staff/facilities/${p.facility}/priorities`, { form: 'priorities', kind_specialNeeds: 'on', kind_employeeOf: 'on', detail_employeeOf: 'Hôpital Pierre-Boucher' })).status).toBe(303);
    // Y's parent withdraws and applies again, stating special needs (through the facility page's form).
    const c = new Client(t.app, p.host);
    await c.signIn(p.parents.y.email, PASSWORD);
    const facilityPage = await c.get(`/directory/${p.facility}`);
    expect(textOf(facilityPage.body)).toContain('Parent employé d’un employeur — Hôpital Pierre-Boucher');
    const app = await inTenant(database.db, p.tenant.id, (trx) => trx.selectFrom('applications').select('id').where('child_id', '=', p.children.y).executeTakeFirstOrThrow());
    await c.post(`/children/${p.children.y}/applications/${app.id}/withdraw`);
    await c.get(`/directory/${p.facility}`);
    // A priority the facility did not declare: refused, nothing changed.
    let r = await c.post('/applications', { childId: p.children.y, facilityId: p.facility, priority_indigenous: 'on' });
    expect(r.status).toBe(400);
    expect(textOf(r.body)).toContain('Ce service n’a pas déclaré cette priorité');
    r = await c.post('/applications', { childId: p.children.y, facilityId: p.facility, priority_specialNeeds: 'on' });
    expect(r.status).toBe(303);
    // No admission yet: the priority lifts Y above everyone.
    expect(await order(p)).toEqual(['y', 'z', 'x']);
    const ranked = await listRankedApplications(t.deps, ctxFor(t, p.tenant, p.staff), p.facility, 'toddler');
    expect(ranked[0]).toMatchObject({ prioritiesMet: ['specialNeeds'], byPriority: 'specialNeeds' });
    expect(textOf((await c.get(`/children/${p.children.y}`)).body)).toContain('1er sur 3');
    // One admission, by priority: 1 of 1 is not below half. Y goes back to category 4.
    await acceptedOffer(p, 'specialNeeds');
    expect(await order(p)).toEqual(['z', 'x', 'y']);
    expect(textOf((await c.get(`/children/${p.children.y}`)).body)).toContain('plafond des priorités atteint');
    // Two more admissions in the order: 1 of 3 is below half, and the priority lifts again.
    await acceptedOffer(p, null);
    expect(await order(p)).toEqual(['z', 'x', 'y']);
    await acceptedOffer(p, null);
    expect(await order(p)).toEqual(['y', 'z', 'x']);
    // The staff's candidate list follows the same order.
    const list = await records.listCandidates(t.deps, ctxFor(t, p.tenant, p.staff), p.facility, 1);
    expect(list.rows.map((row) => row.reference)).toEqual(ranked.filter(() => true).map((row) => row.reference).slice(0, list.rows.length));
  });
});

/** Narrows a programme's rules for one assertion (the directory re-reads tenants on every request in tests). */
async function programmeWithMax(p: Programme, maxKinds: number): Promise<{ restore(): Promise<void> }> {
  const owner = database.ownerDb();
  const row = await owner.selectFrom('tenants').select('rules').where('id', '=', p.tenant.id).executeTakeFirstOrThrow();
  const rules = (typeof row.rules === 'string' ? JSON.parse(row.rules) : row.rules) as Record<string, unknown>;
  await owner.updateTable('tenants').set({ rules: JSON.stringify({ ...rules, priorities: { maxKinds } }) }).where('id', '=', p.tenant.id).execute();
  return { restore: async () => void (await owner.updateTable('tenants').set({ rules: JSON.stringify(rules) }).where('id', '=', p.tenant.id).execute()) };
}

describe('periodic confirmation', () => {
  it('reminds by e-mail in the account’s language, makes the file inactive after the grace period, and brings it back when the parent confirms', async () => {
    const quebec = await programme({});
    const municipal = await programme(JSON.parse(JSON.stringify(SECOND_TENANT_RULES)) as Record<string, unknown>);
    // Y's parent reads English.
    await inTenant(database.db, quebec.tenant.id, (trx) => trx.updateTable('accounts').set({ locale: 'en' }).where('id', '=', quebec.parents.y.accountId).execute());
    const confirmedOn = addDays(T0, -7);
    const due = addMonths(confirmedOn, 6);
    const mails = async (p: Programme, email: string) =>
      inTenant(database.db, p.tenant.id, (trx) => trx.selectFrom('mail_outbox').select(['template', 'subject', 'body_text', 'locale']).where('to_address', '=', email).orderBy('created_at').execute());
    const at = (d: string) => new Date(`${d}T15:00:00Z`);

    // Not yet: nothing sent.
    expect(await runTenantConfirmation(t.deps, quebec.tenant, at(addDays(due, -31)))).toMatchObject({ reminded: 0, inactivated: 0 });
    // Thirty days before: one reminder each, once.
    expect(await runTenantConfirmation(t.deps, quebec.tenant, at(addDays(due, -30)), 'https://guichet.test')).toMatchObject({ reminded: 3, inactivated: 0 });
    expect(await runTenantConfirmation(t.deps, quebec.tenant, at(addDays(due, -29)))).toMatchObject({ reminded: 0 });
    const en = await mails(quebec, quebec.parents.y.email);
    expect(en).toEqual([expect.objectContaining({ template: 'file_confirmation', locale: 'en' })]);
    expect(en[0]!.subject).toMatch(/^Confirm file E-/);
    expect(en[0]!.body_text).toContain(`https://guichet.test/children/${quebec.children.y}`);
    const fr = await mails(quebec, quebec.parents.x.email);
    expect(fr[0]).toMatchObject({ template: 'file_confirmation', locale: 'fr' });
    expect(fr[0]!.subject).toMatch(/^Confirmez le dossier E-/);
    // The reminders read each parent's address and the file's reference, and the log says so.
    const reminded = await inTenant(database.db, quebec.tenant.id, (trx) => trx.selectFrom('audit_events').select(['fields', 'family_ids']).where('action', '=', 'waitlist.confirmation.remind').execute());
    expect(reminded.at(-1)!.fields).toEqual(['reference', 'account_email', 'reminded_at']);
    // X confirms on the page (asked now): no more reminder for X; seven days before, the others get the second.
    t.setNow(at(addDays(due, -20)));
    const x = new Client(t.app, quebec.host);
    await x.signIn(quebec.parents.x.email, PASSWORD);
    const xPage = textOf((await x.get(`/children/${quebec.children.x}`)).body);
    expect(xPage).toContain('Confirmez que vous souhaitez toujours une place');
    expect((await x.post(`/children/${quebec.children.x}/confirm`)).headers.location).toBe(`/children/${quebec.children.x}?status=confirmed`);
    expect(await runTenantConfirmation(t.deps, quebec.tenant, at(addDays(due, -7)))).toMatchObject({ reminded: 2 });

    // Z was offered a place meanwhile and has not answered.
    const zOffer = await inTenant(database.db, quebec.tenant.id, async (trx) => {
      const app = await trx.selectFrom('applications').select(['id', 'facility_id']).where('child_id', '=', quebec.children.z).executeTakeFirstOrThrow();
      return (
        await trx
          .insertInto('offers')
          .values({ tenant_id: quebec.tenant.id, application_id: app.id, child_id: quebec.children.z, facility_id: app.facility_id, age_group: 'toddler', status: 'pending', offered_at: at(addDays(due, 25)), deadline: at(addDays(due, 60)) })
          .returning('id')
          .executeTakeFirstOrThrow()
      ).id;
    });
    // Past the grace period: Y and Z inactive, out of the ranking, told by mail; Z's offer goes back to the facility.
    const after = at(addDays(due, 30));
    expect(await runTenantConfirmation(t.deps, quebec.tenant, after)).toMatchObject({ inactivated: 2 });
    const zNow = await inTenant(database.db, quebec.tenant.id, (trx) => trx.selectFrom('offers').select('status').where('id', '=', zOffer).executeTakeFirstOrThrow());
    expect(zNow.status).toBe('cancelled');
    t.setNow(after);
    expect(await order(quebec)).toEqual(['x']);
    expect((await mails(quebec, quebec.parents.z.email)).map((m) => m.template)).toEqual(['file_confirmation', 'file_confirmation', 'file_inactive']);

    // Someone else confirming Z's file: not found, recorded as denied, Z still inactive.
    const deniedBefore = await auditCount(quebec.tenant, 'waitlist.childFile.confirm', 'denied');
    const x2 = new Client(t.app, quebec.host);
    await x2.signIn(quebec.parents.x.email, PASSWORD);
    await x2.get(`/children/${quebec.children.x}`);
    const r = await x2.post(`/children/${quebec.children.z}/confirm`);
    expect(r.status).toBe(404);
    expect(await auditCount(quebec.tenant, 'waitlist.childFile.confirm', 'denied')).toBe(deniedBefore + 1);
    const zRow = async (p: Programme) => inTenant(database.db, p.tenant.id, (trx) => trx.selectFrom('children').select(['inactive_since', 'seniority_from', 'desired_entry_date']).where('id', '=', p.children.z).executeTakeFirstOrThrow());
    expect((await zRow(quebec)).inactive_since).not.toBeNull();

    // Z's parent sees it, confirms: back in the ranking, but (Quebec's default) with seniority from today: last now.
    const z = new Client(t.app, quebec.host);
    await z.signIn(quebec.parents.z.email, PASSWORD);
    const zPage = textOf((await z.get(`/children/${quebec.children.z}`)).body);
    expect(zPage).toContain('Ce dossier est inactif depuis le');
    expect(zPage).toContain('Non classé (dossier inactif)');
    expect(zPage).toContain('Votre ancienneté comptera à partir d’aujourd’hui');
    expect((await z.post(`/children/${quebec.children.z}/confirm`)).headers.location).toBe(`/children/${quebec.children.z}?status=reactivated`);
    expect((await zRow(quebec)).seniority_from).toBe(today(after));
    expect(await order(quebec)).toEqual(['z', 'x']); // still category 2, first; its seniority date now today
    const zr = await readChildRanks(t.deps, ctxFor(t, quebec.tenant, quebec.parents.z), quebec.children.z);
    expect(zr.ranks[0]).toMatchObject({ rank: 1, seniorityDate: today(after) });

    // The second programme keeps seniority on reactivation.
    await inTenant(database.db, municipal.tenant.id, (trx) => trx.updateTable('children').set({ inactive_since: after }).where('id', '=', municipal.children.z).execute());
    const mz = new Client(t.app, municipal.host);
    await mz.signIn(municipal.parents.z.email, PASSWORD);
    await mz.get(`/children/${municipal.children.z}`);
    expect((await mz.post(`/children/${municipal.children.z}/confirm`)).status).toBe(303);
    expect((await zRow(municipal)).seniority_from).toBeNull();
    t.setNow(NOW);
  });
});

describe('figures', () => {
  it('ordering a facility of 1,000 applications: the tenant-rules ranking, the parent’s rank, beside the staff page of 50 (baseline)', async () => {
    const p = await programme(JSON.parse(JSON.stringify(SECOND_TENANT_RULES)) as Record<string, unknown>);
    const N = 1000;
    const families = Array.from({ length: N }, (_, i) => ({
      email: `famille.${i}.${p.host}@exemple.test`,
      locale: 'fr' as const,
      parentFirstName: 'Parent',
      parentLastName: 'Test',
      phone: '450-555-0100',
      postalCode: 'J4K 1A1',
      children: [
        {
          reference: `B-${p.tenant.id.slice(0, 4).toUpperCase()}${String(i).padStart(6, '0')}`,
          firstName: 'Enfant',
          lastName: `Numéro ${i}`,
          birthDate: addMonths(T0, -(20 + (i % 30))),
          desiredEntryDate: addMonths(T0, -(i % 24)),
          registeredOn: addMonths(T0, -(i % 24) - 1),
          daysOfCare: 31,
          inSubsidisedCare: i % 3 === 0,
          applications: [{ facilityId: p.facility, siblingAttending: i % 7 === 0, parentIsStaff: i % 11 === 0 }],
        },
      ],
    }));
    const { insertSyntheticFamilies } = await import('../../src/records/bulk.ts');
    await inTenant(database.db, p.tenant.id, (trx) => insertSyntheticFamilies(trx, p.tenant.id, families, NOW, t.deps.keys));
    const time = async (fn: () => Promise<unknown>) => {
      await fn();
      const s = performance.now();
      for (let i = 0; i < 3; i++) await fn();
      return (performance.now() - s) / 3;
    };
    const staff = ctxFor(t, p.tenant, p.staff);
    const baseline = await time(() => records.listCandidates(t.deps, staff, p.facility, 1));
    const ranking = await time(() => listRankedApplications(t.deps, staff, p.facility, 'toddler'));
    const rank = await time(() => readChildRanks(t.deps, ctxFor(t, p.tenant, p.parents.y), p.children.y));
    const rows = await listRankedApplications(t.deps, staff, p.facility, null);
    expect(rows).toHaveLength(N + 3);
    // Points never increase down the list.
    expect(rows.every((r, i) => i === 0 || r.points!.total <= rows[i - 1]!.points!.total)).toBe(true);
    // A parent's rank (ordered in SQL from the terms copied onto the application) is the child's place in the
    // staff's list (ordered from the children's rows), for children taken all along the list.
    const toddlers = await listRankedApplications(t.deps, staff, p.facility, 'toddler');
    for (const r of toddlers.filter((_, i) => i % 97 === 0 || i === toddlers.length - 1)) {
      const owner = await inTenant(database.db, p.tenant.id, (trx) =>
        trx.selectFrom('families').innerJoin('accounts', 'accounts.id', 'families.account_id').select(['accounts.id', 'accounts.email']).where('families.id', '=', r.familyId).executeTakeFirstOrThrow(),
      );
      const mine = await readChildRanks(t.deps, ctxFor(t, p.tenant, await actorOf(t, p.tenant, owner.id, owner.email)), r.childId);
      expect(mine.ranks.map((x) => [x.rank, x.total]), r.reference).toEqual([[r.rank, toddlers.length]]);
    }
    console.log(
      [
        `ranking ${N + 3} applications at one facility (${testDbKind()}):`,
        `  staff page of 50 (baseline)          ${baseline.toFixed(1)} ms`,
        `  listRankedApplications, toddlers     ${ranking.toFixed(1)} ms  (×${(ranking / baseline).toFixed(1)})`,
        `  readChildRanks (one facility)        ${rank.toFixed(1)} ms  (×${(rank / baseline).toFixed(1)})`,
      ].join('\n'),
    );
  }, 300_000);
});
