/**
 * Minimisation, against the written table (src/records/views.ts): for each
 * purpose, what the gateway hands over carries no field outside the table,
 * the page built from it shows none of the rest, and the audit event lists
 * exactly the table's fields. Then every role against every call of the
 * gateway, compared with the same table; and facility staff, who read every
 * page and every answer they can reach, never receive a NIREC or a phone
 * number.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { inTenant } from '../../src/db/tenant.ts';
import * as records from '../../src/records/gateway.ts';
import { listRankedApplications, readChildRanks } from '../../src/records/ranks.ts';
import { PURPOSE_FIELDS, type Purpose } from '../../src/records/views.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { formatDate } from '../../src/web/i18n/index.ts';
import { AppError } from '../../src/errors.ts';
import { insertSyntheticFamilies, type SyntheticFamily } from '../../src/records/bulk.ts';
import { createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { actorOf, createAccount, grantRole } from './people.ts';
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

/* ------------------------------------------------------------------ fixture */

let seq = 0;

interface Fixture {
  tenant: Tenant;
  facilityName: string;
  facility: string;
  parentEmail: string;
  parentActor: Actor;
  parent: Client;
  staffActor: Actor;
  staff: Client;
  adminActor: Actor;
  operatorActor: Actor;
  childId: string;
  child: { firstName: string; lastName: string; birthDate: string; desiredEntryDate: string; nirecTyped: string; nirec: string; reference: string };
}

/** A fresh tenant: a parent whose child applies to a facility, and a member of that facility's staff. */
async function fixture(): Promise<Fixture> {
  const n = `${Date.now().toString(36)}${(seq++).toString(36)}`;
  const tenant = await tenantFor(t);
  const host = tenant.hosts[0]!;
  const facilityName = 'CPE Les Mésanges';
  const facility = await createFacility(t, tenant, { name: facilityName });
  const parentEmail = `famille.${n}@exemple.test`;
  const parentId = await createParent(t, tenant, parentEmail);
  const staffEmail = `educ.${n}@exemple.test`;
  const staffId = await createStaff(t, tenant, staffEmail, facility);
  const t0 = today(new Date());
  // Values chosen so that none can turn up by chance: dates apart from today and from each other,
  // names and a NIREC with letters (a uuid is lower-case hex).
  const child = {
    firstName: 'Anouk',
    lastName: 'Vaillancourt-Bérubé',
    birthDate: addMonths(t0, -7),
    desiredEntryDate: addMonths(t0, 4),
    nirecTyped: 'QZXW 7K4J-T9',
    nirec: 'QZXW7K4JT9',
    reference: '',
  };
  const parentActor: Actor = { accountId: parentId, tenantId: tenant.id, sessionId: null, email: parentEmail, emailVerified: true, locale: 'fr', memberships: [] };
  const ctx = ctxFor(t, tenant, parentActor);
  const { id: childId } = await records.createChildFile(t.deps, ctx, {
    firstName: child.firstName,
    lastName: child.lastName,
    birthDate: child.birthDate,
    nirec: child.nirec,
    desiredEntryDate: child.desiredEntryDate,
    daysOfCare: 0b10101,
    inSubsidisedCare: false,
  });
  await records.addApplication(t.deps, ctx, childId, { facilityId: facility, siblingAttending: true, parentIsStaff: false });
  child.reference = (await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('children').select('reference').where('id', '=', childId).executeTakeFirstOrThrow())).reference;
  const memberships = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('memberships').select(['id', 'role', 'facility_id', 'expires_at']).where('account_id', '=', staffId).execute());
  const staffActor: Actor = {
    accountId: staffId,
    tenantId: tenant.id,
    sessionId: null,
    email: staffEmail,
    emailVerified: true,
    locale: 'fr',
    memberships: memberships.map((m) => ({ id: m.id, role: m.role, facilityId: m.facility_id, expiresAt: m.expires_at })),
    mfa: true,
  };
  const parent = new Client(t.app, host);
  expect((await parent.signIn(parentEmail, PASSWORD)).status).toBe(303);
  const staff = new Client(t.app, host);
  expect((await staff.signIn(staffEmail, PASSWORD)).status).toBe(303);
  // The programme: its first administrator, and an operator that administrator approved.
  const adminEmail = `admin.${n}@exemple.test`;
  const adminId = await createAdmin(t, tenant, adminEmail);
  const operatorEmail = `operation.${n}@exemple.test`;
  const operatorId = await createAccount(t, tenant, operatorEmail);
  await grantRole(t, tenant, operatorId, 'program_operator', staffId, adminId);
  const adminActor = await actorOf(t, tenant, adminId, adminEmail);
  const operatorActor = await actorOf(t, tenant, operatorId, operatorEmail);
  return { tenant, facilityName, facility, parentEmail, parentActor, parent, staffActor, staff, adminActor, operatorActor, childId, child };
}

async function lastEvent(tenant: Tenant, purpose: Purpose) {
  return inTenant(database.db, tenant.id, (trx) =>
    trx.selectFrom('audit_events').selectAll().where('purpose', '=', purpose).orderBy('seq', 'desc').limit(1).executeTakeFirstOrThrow(),
  );
}

async function eventCount(tenant: Tenant, purpose: Purpose): Promise<number> {
  return inTenant(database.db, tenant.id, async (trx) => (await trx.selectFrom('audit_events').select('id').where('purpose', '=', purpose).execute()).length);
}

/* ------------------------------------------------------------- the checks */

const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** Carries no data: what a purpose does not cover may be left as an empty shell, never filled. */
const empty = (v: unknown) => v === undefined || v === null || v === '' || (Array.isArray(v) && v.length === 0);

/**
 * Keys of a record handed to a parent screen that fall outside the purpose's
 * table and still carry data. `id`, the record's own opaque key, is how the
 * page links to it and is not personal data.
 */
function outside(record: Record<string, unknown>, purpose: Purpose): string[] {
  const allowed = new Set<string>(PURPOSE_FIELDS[purpose]);
  return Object.entries(record)
    .filter(([k, v]) => k !== 'id' && !allowed.has(snake(k)) && !empty(v))
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`);
}

/** Every form in which a date is written on a page. */
function dateForms(iso: string): string[] {
  return [iso, formatDate('fr', iso), formatDate('en', iso)];
}

function nirecForms(f: Fixture): string[] {
  const masked = `${'•'.repeat(f.child.nirec.length - 3)}${f.child.nirec.slice(-3)}`;
  return [f.child.nirec, f.child.nirecTyped, masked, `•${f.child.nirec.slice(-3)}`];
}

function absent(html: string, what: Record<string, string[]>): string[] {
  const text = textOf(html);
  return Object.entries(what).flatMap(([label, forms]) => forms.filter((s) => html.includes(s) || text.includes(s)).map((s) => `${label}: “${s}”`));
}

/**
 * What each purpose is checked by: the gateway call, and the page that
 * declares the purpose — or, for purposes no page declares yet (the
 * operators' look-ups), the gateway call by each role that has it. Each check
 * returns how many calls it made (two unless it says otherwise).
 */
const CASES: Record<Purpose, (f: Fixture) => Promise<void | number>> = {
  'parent.children.list': async (f) => {
    const rows = await records.listChildren(t.deps, ctxFor(t, f.tenant, f.parentActor), 'parent.children.list');
    expect(rows).toHaveLength(1);
    expect(outside(rows[0] as unknown as Record<string, unknown>, 'parent.children.list')).toEqual([]);
    expect(rows[0]).toMatchObject({ reference: f.child.reference, firstName: f.child.firstName, lastName: f.child.lastName, birthDate: f.child.birthDate, applicationsCount: 1 });
    const page = await f.parent.get('/account');
    expect(page.status).toBe(200);
    expect(textOf(page.body)).toContain(f.child.lastName);
    expect(absent(page.body, { NIREC: nirecForms(f), 'applications (only their number)': [f.facilityName], 'days of care': ['Lundi', 'Mercredi'] })).toEqual([]);
  },
  'parent.children.choose': async (f) => {
    const rows = await records.listChildren(t.deps, ctxFor(t, f.tenant, f.parentActor), 'parent.children.choose');
    expect(rows).toHaveLength(1);
    expect(outside(rows[0] as unknown as Record<string, unknown>, 'parent.children.choose')).toEqual([]);
    expect(rows[0]).toMatchObject({ reference: f.child.reference, firstName: f.child.firstName });
    const page = await f.parent.get(`/directory/${f.facility}`);
    expect(page.status).toBe(200);
    expect(textOf(page.body)).toContain(`${f.child.firstName} (${f.child.reference})`);
    expect(absent(page.body, { 'last name': [f.child.lastName], 'birth date': dateForms(f.child.birthDate), 'entry date': dateForms(f.child.desiredEntryDate), NIREC: nirecForms(f) })).toEqual([]);
  },
  'parent.childFile.view': async (f) => {
    const file = await records.readChildFile(t.deps, ctxFor(t, f.tenant, f.parentActor), f.childId, 'parent.childFile.view');
    expect(outside(file as unknown as Record<string, unknown>, 'parent.childFile.view')).toEqual([]);
    expect(file.nirecMasked).toBe(nirecForms(f)[2]);
    expect(file.applications).toHaveLength(1);
    const page = await f.parent.get(`/children/${f.childId}`);
    expect(page.status).toBe(200);
    expect(textOf(page.body)).toContain(nirecForms(f)[2]!);
    expect(absent(page.body, { 'NIREC in clear': [f.child.nirec, f.child.nirecTyped] })).toEqual([]);
  },
  'parent.childFile.edit': async (f) => {
    const file = await records.readChildFile(t.deps, ctxFor(t, f.tenant, f.parentActor), f.childId, 'parent.childFile.edit');
    expect(outside(file as unknown as Record<string, unknown>, 'parent.childFile.edit')).toEqual([]);
    const page = await f.parent.get(`/children/${f.childId}/edit`);
    expect(page.status).toBe(200);
    expect(absent(page.body, { 'NIREC in clear': [f.child.nirec, f.child.nirecTyped], applications: [f.facilityName] })).toEqual([]);
  },
  'facility.candidates': async (f) => {
    const result = await records.listCandidates(t.deps, ctxFor(t, f.tenant, f.staffActor), f.facility, 1);
    expect(result.rows).toHaveLength(1);
    for (const row of result.rows) expect(Object.keys(row).sort()).toEqual(['ageGroup', 'appliedAt', 'category', 'desiredEntryDate', 'rank', 'reference']);
    expect(Object.keys(result.rows[0]!).map(snake).sort()).toEqual([...PURPOSE_FIELDS['facility.candidates']].sort());
    expect(result.rows[0]).toMatchObject({ rank: 1, reference: f.child.reference, ageGroup: 'infant', category: 3, desiredEntryDate: f.child.desiredEntryDate });
    const page = await f.staff.get(`/staff/facilities/${f.facility}/candidates`);
    expect(page.status).toBe(200);
    expect(textOf(page.body)).toContain(f.child.reference);
    expect(
      absent(page.body, {
        'first name': [f.child.firstName],
        'last name': [f.child.lastName, 'Vaillancourt', 'Bérubé'],
        'birth date': dateForms(f.child.birthDate),
        NIREC: nirecForms(f),
        "parent's e-mail": [f.parentEmail, f.parentEmail.split('@')[0]!],
        'child id': [f.childId],
      }),
    ).toEqual([]);
  },
  'parent.childFile.delete': async (f) => {
    const file = await records.readChildFileForDeletion(t.deps, ctxFor(t, f.tenant, f.parentActor), f.childId);
    expect(outside(file as unknown as Record<string, unknown>, 'parent.childFile.delete')).toEqual([]);
    expect(file).toMatchObject({ reference: f.child.reference, firstName: f.child.firstName, lastName: f.child.lastName, applicationsCount: 1 });
    const page = await f.parent.get(`/children/${f.childId}/delete`);
    expect(page.status).toBe(200);
    expect(textOf(page.body)).toContain(f.child.lastName);
    expect(absent(page.body, { NIREC: nirecForms(f), 'birth date': dateForms(f.child.birthDate), 'entry date': dateForms(f.child.desiredEntryDate), applications: [f.facilityName] })).toEqual([]);
  },
  'operator.childFile.lookup': async (f) => {
    for (const actor of [f.operatorActor, f.adminActor]) {
      const matches = await records.lookupChildFileByNirec(t.deps, ctxFor(t, f.tenant, actor), f.child.nirecTyped);
      expect(matches).toHaveLength(1);
      expect(outside(matches[0] as unknown as Record<string, unknown>, 'operator.childFile.lookup')).toEqual([]);
      expect(matches[0]).toMatchObject({ reference: f.child.reference, lastName: f.child.lastName, nirecMasked: nirecForms(f)[2], status: 'active' });
      expect(absent(JSON.stringify(matches), { 'NIREC in clear': [f.child.nirec, f.child.nirecTyped] })).toEqual([]);
    }
    // The NIREC looked up is not in the audit log, in any form.
    const events = await inTenant(database.db, f.tenant.id, (trx) => trx.selectFrom('audit_events').selectAll().where('purpose', '=', 'operator.childFile.lookup').execute());
    expect(absent(JSON.stringify(events), { NIREC: [f.child.nirec, f.child.nirecTyped] })).toEqual([]);
    return 2;
  },
  'operator.childFile.history': async (f) => {
    for (const actor of [f.operatorActor, f.adminActor]) {
      const versions = await records.readChildFileHistory(t.deps, ctxFor(t, f.tenant, actor), f.childId);
      expect(versions.map((v) => v.change)).toEqual(['create']);
      for (const v of versions) expect(outside(v as unknown as Record<string, unknown>, 'operator.childFile.history')).toEqual([]);
      expect(absent(JSON.stringify(versions), { 'NIREC in clear': [f.child.nirec, f.child.nirecTyped] })).toEqual([]);
    }
    return 2;
  },
  'parent.children.deleted': async (f) => {
    await records.deleteChildFile(t.deps, ctxFor(t, f.tenant, f.parentActor), f.childId);
    const rows = await records.listDeletedChildren(t.deps, ctxFor(t, f.tenant, f.parentActor));
    expect(rows).toHaveLength(1);
    expect(outside(rows[0] as unknown as Record<string, unknown>, 'parent.children.deleted')).toEqual([]);
    expect(rows[0]).toMatchObject({ reference: f.child.reference, firstName: f.child.firstName, lastName: f.child.lastName, restoreRequested: false });
    const page = await f.parent.get('/account');
    expect(page.status).toBe(200);
    expect(textOf(page.body)).toContain(f.child.lastName);
    expect(absent(page.body, { NIREC: nirecForms(f), 'birth date': dateForms(f.child.birthDate), applications: [f.facilityName] })).toEqual([]);
  },
  'parent.childFile.rank': async (f) => {
    const { ranks } = await readChildRanks(t.deps, ctxFor(t, f.tenant, f.parentActor), f.childId);
    expect(ranks).toHaveLength(1);
    expect(outside(ranks[0] as unknown as Record<string, unknown>, 'parent.childFile.rank')).toEqual([]);
    expect(ranks[0]).toMatchObject({ rank: 1, total: 1, category: 3, facilityName: f.facilityName });
    const page = await f.parent.get(`/children/${f.childId}`);
    expect(textOf(page.body)).toContain('1er sur 1');
  },
  'system.ranking': async (f) => {
    const system = { actorAccountId: null, actorRoles: ['system:referral'], ip: null, userAgent: null, requestId: null };
    for (const [actor, opts] of [[f.staffActor, {}], [null, { system }]] as const) {
      const rows = await listRankedApplications(t.deps, ctxFor(t, f.tenant, actor), f.facility, 'infant', opts);
      expect(rows).toHaveLength(1);
      expect(outside(rows[0] as unknown as Record<string, unknown>, 'system.ranking')).toEqual([]);
      expect(rows[0]).toMatchObject({ reference: f.child.reference, rank: 1, category: 3 });
      expect(absent(JSON.stringify(rows), { name: [f.child.firstName, f.child.lastName], NIREC: nirecForms(f), 'birth date': dateForms(f.child.birthDate) })).toEqual([]);
    }
    return 2;
  },
  'admin.childFile.restoreRequests': async (f) => {
    await records.deleteChildFile(t.deps, ctxFor(t, f.tenant, f.parentActor), f.childId);
    const { requestId } = await records.requestChildFileRestore(t.deps, ctxFor(t, f.tenant, f.operatorActor), f.childId);
    const rows = await records.listRestoreRequests(t.deps, ctxFor(t, f.tenant, f.adminActor));
    expect(rows).toHaveLength(1);
    const one = await records.readRestoreRequest(t.deps, ctxFor(t, f.tenant, f.adminActor), requestId);
    for (const r of [rows[0]!, one]) {
      expect(outside(r as unknown as Record<string, unknown>, 'admin.childFile.restoreRequests')).toEqual([]);
      expect(r).toMatchObject({ reference: f.child.reference, requestedByWho: { kind: 'agent', email: f.operatorActor.email } });
      expect(absent(JSON.stringify(r), { name: [f.child.firstName, f.child.lastName], NIREC: nirecForms(f), 'birth date': dateForms(f.child.birthDate) })).toEqual([]);
    }
    return 2;
  },
};

describe('what each purpose receives', () => {
  it('every purpose of the table has its check here', () => {
    expect(Object.keys(CASES).sort()).toEqual(Object.keys(PURPOSE_FIELDS).sort());
  });

  for (const purpose of Object.keys(PURPOSE_FIELDS) as Purpose[]) {
    it(`${purpose}: the gateway and the page hand over nothing outside [${PURPOSE_FIELDS[purpose].join(', ')}], and the audit event lists exactly that`, async () => {
      const f = await fixture();
      const before = await eventCount(f.tenant, purpose);
      const calls = (await CASES[purpose](f)) ?? 2;
      // one event for each gateway call (the page's included), each naming exactly the table's fields
      expect(await eventCount(f.tenant, purpose)).toBe(before + calls);
      const events = await inTenant(database.db, f.tenant.id, (trx) =>
        trx.selectFrom('audit_events').select(['fields', 'outcome', 'actor_account_id', 'target_ids']).where('purpose', '=', purpose).orderBy('seq', 'desc').limit(calls).execute(),
      );
      for (const e of events) {
        expect(e.outcome).toBe('success');
        expect(e.fields).toEqual([...PURPOSE_FIELDS[purpose]]);
        expect(e.target_ids).toContain(f.childId);
      }
      expect((await lastEvent(f.tenant, purpose)).fields).toEqual([...PURPOSE_FIELDS[purpose]]);
    });
  }
});

describe('the staff view across facilities', () => {
  it('staff of another facility get nothing, and the refusal is logged without fields', async () => {
    const f = await fixture();
    const other = await createFacility(t, f.tenant, { name: 'Garderie Autre' });
    const otherStaffId = await createStaff(t, f.tenant, `autre.${Date.now()}@exemple.test`, other);
    const ms = await inTenant(database.db, f.tenant.id, (trx) => trx.selectFrom('memberships').select(['id', 'role', 'facility_id', 'expires_at']).where('account_id', '=', otherStaffId).execute());
    const actor: Actor = { ...f.staffActor, accountId: otherStaffId, memberships: ms.map((m) => ({ id: m.id, role: m.role, facilityId: m.facility_id, expiresAt: m.expires_at })) };
    await expect(records.listCandidates(t.deps, ctxFor(t, f.tenant, actor), f.facility, 1)).rejects.toMatchObject({ kind: 'notFound' });
    const denied = await inTenant(database.db, f.tenant.id, (trx) =>
      trx.selectFrom('audit_events').selectAll().where('action', '=', 'waitlist.candidates.list').where('outcome', '=', 'denied').orderBy('seq', 'desc').executeTakeFirstOrThrow(),
    );
    expect(denied.actor_account_id).toBe(otherStaffId);
    expect(denied.fields).toEqual([]);
    expect(denied.family_ids).toEqual([]);
  });
});

/* ------------------------------------------------- every role, every call */

type Role = 'anonymous' | 'parent' | 'otherParent' | 'facilityStaff' | 'facilityDirector' | 'otherFacilityStaff' | 'programOperator' | 'tenantAdmin' | 'securityOfficer';

/**
 * The written expectation: which purposes hand each role the fixture child's
 * data. Any other call either is refused or answers without that child (an
 * empty list of the caller's own); and whatever a call answers, every record
 * carries only its purpose's fields from views.ts.
 */
const ROLE_PURPOSES: Record<Role, readonly Purpose[]> = {
  anonymous: [],
  parent: ['parent.children.list', 'parent.children.choose', 'parent.childFile.view', 'parent.childFile.edit', 'parent.childFile.delete'],
  otherParent: [],
  facilityStaff: ['facility.candidates', 'system.ranking'],
  facilityDirector: ['facility.candidates', 'system.ranking'],
  otherFacilityStaff: [],
  programOperator: ['operator.childFile.lookup', 'operator.childFile.history'],
  tenantAdmin: ['operator.childFile.lookup', 'operator.childFile.history'],
  securityOfficer: [],
};

/** Every read of the gateway, by purpose, as a role would call it; the records it answers. */
const CALLS: Record<Purpose, (f: Fixture, actor: Actor | null) => Promise<Record<string, unknown>[]>> = {
  'parent.children.list': async (f, a) => (await records.listChildren(t.deps, ctxFor(t, f.tenant, a), 'parent.children.list')) as unknown as Record<string, unknown>[],
  'parent.children.choose': async (f, a) => (await records.listChildren(t.deps, ctxFor(t, f.tenant, a), 'parent.children.choose')) as unknown as Record<string, unknown>[],
  'parent.childFile.view': async (f, a) => [(await records.readChildFile(t.deps, ctxFor(t, f.tenant, a), f.childId, 'parent.childFile.view')) as unknown as Record<string, unknown>],
  'parent.childFile.edit': async (f, a) => [(await records.readChildFile(t.deps, ctxFor(t, f.tenant, a), f.childId, 'parent.childFile.edit')) as unknown as Record<string, unknown>],
  'parent.childFile.delete': async (f, a) => [(await records.readChildFileForDeletion(t.deps, ctxFor(t, f.tenant, a), f.childId)) as unknown as Record<string, unknown>],
  'facility.candidates': async (f, a) => (await records.listCandidates(t.deps, ctxFor(t, f.tenant, a), f.facility, 1)).rows as unknown as Record<string, unknown>[],
  'operator.childFile.lookup': async (f, a) => (await records.lookupChildFileByNirec(t.deps, ctxFor(t, f.tenant, a), f.child.nirec)) as unknown as Record<string, unknown>[],
  'operator.childFile.history': async (f, a) => (await records.readChildFileHistory(t.deps, ctxFor(t, f.tenant, a), f.childId)) as unknown as Record<string, unknown>[],
  // The fixture's file is live: these answer nothing of it to anyone (their own checks above delete it first).
  'parent.children.deleted': async (f, a) => (await records.listDeletedChildren(t.deps, ctxFor(t, f.tenant, a))) as unknown as Record<string, unknown>[],
  'admin.childFile.restoreRequests': async (f, a) => (await records.listRestoreRequests(t.deps, ctxFor(t, f.tenant, a))) as unknown as Record<string, unknown>[],
  // The rank names no child: the parent receives the rank of their own file by its id, not its reference or name.
  'parent.childFile.rank': async (f, a) => (await readChildRanks(t.deps, ctxFor(t, f.tenant, a), f.childId)).ranks as unknown as Record<string, unknown>[],
  'system.ranking': async (f, a) => (await listRankedApplications(t.deps, ctxFor(t, f.tenant, a), f.facility, null)) as unknown as Record<string, unknown>[],
};

describe('every role against every call of the gateway, compared with the table', () => {
  it('the call list covers every purpose of the table', () => {
    expect(Object.keys(CALLS).sort()).toEqual(Object.keys(PURPOSE_FIELDS).sort());
  });

  it('each role receives the child only through its purposes, and only their fields', async () => {
    const f = await fixture();
    const n = `${Date.now().toString(36)}r`;
    const adminId = f.adminActor.accountId;
    const otherFacility = await createFacility(t, f.tenant, { name: 'Garderie Voisine' });
    const otherParentEmail = `autre.parent.${n}@exemple.test`;
    const otherParentId = await createParent(t, f.tenant, otherParentEmail);
    const directorEmail = `direction.${n}@exemple.test`;
    const directorId = await createAccount(t, f.tenant, directorEmail);
    await inTenant(database.db, f.tenant.id, (trx) =>
      trx
        .insertInto('memberships')
        .values({ tenant_id: f.tenant.id, account_id: directorId, role: 'facility_director', facility_id: f.facility, source: 'grant', granted_by: f.staffActor.accountId, approved_by: adminId, created_at: t.deps.clock(), expires_at: new Date(Date.now() + 3600_000) })
        .execute(),
    );
    const otherStaffEmail = `educ.voisine.${n}@exemple.test`;
    const otherStaffId = await createStaff(t, f.tenant, otherStaffEmail, otherFacility);
    const officerEmail = `securite.${n}@exemple.test`;
    const officerId = await createAccount(t, f.tenant, officerEmail);
    await grantRole(t, f.tenant, officerId, 'security_officer', f.staffActor.accountId, adminId);
    const actors: Record<Role, Actor | null> = {
      anonymous: null,
      parent: f.parentActor,
      otherParent: await actorOf(t, f.tenant, otherParentId, otherParentEmail),
      facilityStaff: f.staffActor,
      facilityDirector: await actorOf(t, f.tenant, directorId, directorEmail),
      otherFacilityStaff: await actorOf(t, f.tenant, otherStaffId, otherStaffEmail),
      programOperator: f.operatorActor,
      tenantAdmin: f.adminActor,
      securityOfficer: await actorOf(t, f.tenant, officerId, officerEmail),
    };
    const wrong: string[] = [];
    const grid: string[] = [];
    for (const role of Object.keys(actors) as Role[]) {
      const row: string[] = [];
      for (const purpose of Object.keys(CALLS) as Purpose[]) {
        let answer: Record<string, unknown>[] | null = null;
        try {
          answer = await CALLS[purpose](f, actors[role]);
        } catch (err) {
          if (!(err instanceof AppError)) throw err;
        }
        const gotChild = !!answer && (JSON.stringify(answer).includes(f.child.reference) || JSON.stringify(answer).includes(f.child.lastName));
        const expected = ROLE_PURPOSES[role].includes(purpose);
        row.push(gotChild ? 'Y' : answer ? '0' : '-');
        if (gotChild !== expected) wrong.push(`${role} × ${purpose}: ${gotChild ? 'received the child' : 'did not receive the child'}`);
        for (const rec of answer ?? []) {
          const extra = purpose === 'facility.candidates' ? Object.keys(rec).map(snake).filter((k) => !(PURPOSE_FIELDS[purpose] as readonly string[]).includes(k)) : outside(rec, purpose);
          if (extra.length) wrong.push(`${role} × ${purpose}: fields outside the table: ${extra.join(', ')}`);
        }
      }
      grid.push(`${role.padEnd(20)} ${row.join(' ')}`);
    }
    // Y: the child's data, 0: an answer without it, -: refused
    console.info(`roles × [${Object.keys(CALLS).join(', ')}]\n${grid.join('\n')}`);
    expect(wrong).toEqual([]);
  });
});

/* --------------------------------------- staff never see NIRECs or phones */

/** Families with telephone numbers (seeded, as the demo does), applying to the facility. */
function phoneFamilies(facility: string, n: string): SyntheticFamily[] {
  return Array.from({ length: 12 }, (_, i) => ({
    email: `famille.tel.${n}.${i}@exemple.test`,
    locale: 'fr' as const,
    parentFirstName: 'Nathalie',
    parentLastName: 'Gendron',
    phone: `450-555-01${String(10 + i).padStart(2, '0')}`,
    postalCode: 'J4K 2B2',
    children: [
      {
        reference: `E-TEL${n.slice(-3).toUpperCase().replace(/[^A-Z0-9]/g, 'X')}${String(i).padStart(2, '0')}`,
        firstName: 'Loïc',
        lastName: 'Gendron',
        birthDate: addMonths(today(new Date()), -14),
        desiredEntryDate: addMonths(today(new Date()), 3),
        registeredOn: today(new Date()),
        daysOfCare: 31,
        inSubsidisedCare: false,
        applications: [{ facilityId: facility, siblingAttending: false, parentIsStaff: false }],
      },
    ],
  }));
}

/** A telephone number in every way a page could print it. */
function phoneForms(phone: string): string[] {
  const digits = phone.replace(/\D/g, '');
  return [phone, digits, `(${digits.slice(0, 3)}) ${digits.slice(3, 6)}-${digits.slice(6)}`, digits.slice(3), `${digits.slice(3, 6)}-${digits.slice(6)}`];
}

/** Follows every same-site link from the start pages, as the client; returns each page read. */
async function crawl(client: Client, start: string[], extra: string[], limit = 250): Promise<Map<string, { status: number; body: string }>> {
  const seen = new Map<string, { status: number; body: string }>();
  const queue = [...start, ...extra];
  while (queue.length && seen.size < limit) {
    const url = queue.shift()!;
    if (seen.has(url) || /^\/(signout|assets\/)/.test(url)) continue;
    const r = await client.get(url);
    seen.set(url, { status: r.status, body: r.body });
    for (const m of r.body.matchAll(/href="(\/[^"#]*)"/g)) {
      const link = m[1]!.replace(/&amp;/g, '&');
      if (!seen.has(link)) queue.push(link);
    }
  }
  return seen;
}

describe('facility staff never receive a NIREC or a telephone number', () => {
  it('in any page they can reach, nor in any answer of the gateway they can call', async () => {
    const f = await fixture();
    const n = `${Date.now().toString(36)}`;
    // More children with NIRECs, and families with telephone numbers, all on the staff's list.
    const nirecs = [f.child.nirec];
    for (const [i, nirec] of ['KX7Q2M9WZ4', 'RT5YH3PL8B'].entries()) {
      const email = `nirec.${n}.${i}@exemple.test`;
      const id = await createParent(t, f.tenant, email);
      const actor: Actor = { ...f.parentActor, accountId: id, email };
      const { id: childId } = await records.createChildFile(t.deps, ctxFor(t, f.tenant, actor), { firstName: 'Zélie', lastName: 'Bouchard', birthDate: addMonths(today(new Date()), -20), nirec, desiredEntryDate: addMonths(today(new Date()), 2), daysOfCare: 31, inSubsidisedCare: true });
      await records.addApplication(t.deps, ctxFor(t, f.tenant, actor), childId, { facilityId: f.facility, siblingAttending: false, parentIsStaff: i === 0 });
      nirecs.push(nirec);
    }
    const families = phoneFamilies(f.facility, n);
    await inTenant(database.db, f.tenant.id, (trx) => insertSyntheticFamilies(trx, f.tenant.id, families, new Date(), t.deps.keys));
    const forbidden: Record<string, string[]> = {
      NIREC: nirecs.flatMap((x) => [x, `${x.slice(0, 4)} ${x.slice(4, 7)}-${x.slice(7)}`, `${'•'.repeat(x.length - 3)}${x.slice(-3)}`]),
      'telephone number': families.flatMap((fam) => phoneForms(fam.phone)),
      'parent name': ['Nathalie'],
    };

    // The director of the facility as well as its staff.
    const n2 = `${n}d`;
    const directorEmail = `direction.${n2}@exemple.test`;
    const directorId = await createAccount(t, f.tenant, directorEmail);
    await inTenant(database.db, f.tenant.id, (trx) =>
      trx
        .insertInto('memberships')
        .values({ tenant_id: f.tenant.id, account_id: directorId, role: 'facility_director', facility_id: f.facility, source: 'grant', granted_by: f.staffActor.accountId, approved_by: f.adminActor.accountId, created_at: t.deps.clock(), expires_at: new Date(Date.now() + 3600_000) })
        .execute(),
    );
    const director = new Client(t.app, f.tenant.hosts[0]!);
    expect((await director.signIn(directorEmail, PASSWORD)).status).toBe(303);
    const directorActor = await actorOf(t, f.tenant, directorId, directorEmail);

    const childIds = await inTenant(database.db, f.tenant.id, async (trx) => (await trx.selectFrom('children').select('id').execute()).map((r) => r.id));
    // Straight at every child's pages too, not only where links lead.
    const direct = childIds.flatMap((id) => [`/children/${id}`, `/children/${id}/edit`, `/children/${id}/delete`]);
    let pages = 0;
    for (const [who, client, actor] of [['facility staff', f.staff, f.staffActor], ['facility director', director, directorActor]] as const) {
      const read = await crawl(client, ['/', '/staff', '/account', `/staff/facilities/${f.facility}/candidates`, '/?lang=en'], direct);
      // (A director, a privileged role, may first be sent to set up a second factor: whatever page they get is read all the same.)
      const cand = read.get(`/staff/facilities/${f.facility}/candidates`)!;
      if (who === 'facility staff') expect(cand.status === 200 && textOf(cand.body).includes(f.child.reference), `${who} reads the candidates: ${cand.status}`).toBe(true);
      for (const [url, page] of read) {
        const found = absent(page.body, forbidden);
        expect(found, `${who}: ${url}`).toEqual([]);
      }
      pages += read.size;
      // And every answer of the gateway: all their candidate pages, and each read they may try.
      const ctx = ctxFor(t, f.tenant, actor);
      for (let p = 1; ; p++) {
        const r = await records.listCandidates(t.deps, ctx, f.facility, p, 5);
        expect(absent(JSON.stringify(r), forbidden), `${who}: candidates page ${p}`).toEqual([]);
        if (r.rows.length < 5) break;
      }
      for (const call of Object.values(CALLS)) {
        const answer = await call(f, actor).catch((err: unknown) => {
          if (err instanceof AppError) return null;
          throw err;
        });
        expect(absent(JSON.stringify(answer), forbidden), who).toEqual([]);
      }
    }
    console.info(`staff and director read ${pages} pages; none held a NIREC or a telephone number`);
  }, 60_000);
});
