/**
 * Minimisation, against the written table (src/records/views.ts): for each
 * purpose, what the gateway hands over carries no field outside the table,
 * the page built from it shows none of the rest, and the audit event lists
 * exactly the table's fields.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { inTenant } from '../../src/db/tenant.ts';
import * as records from '../../src/records/gateway.ts';
import { PURPOSE_FIELDS, type Purpose } from '../../src/records/views.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { formatDate } from '../../src/web/i18n/index.ts';
import { createFacility, createParent, createStaff, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
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
  return { tenant, facilityName, facility, parentEmail, parentActor, parent, staffActor, staff, childId, child };
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

/** What each purpose is checked by: the gateway call, and the page that declares the purpose. */
const CASES: Record<Purpose, (f: Fixture) => Promise<void>> = {
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
};

describe('what each purpose receives', () => {
  it('every purpose of the table has its check here', () => {
    expect(Object.keys(CASES).sort()).toEqual(Object.keys(PURPOSE_FIELDS).sort());
  });

  for (const purpose of Object.keys(PURPOSE_FIELDS) as Purpose[]) {
    it(`${purpose}: the gateway and the page hand over nothing outside [${PURPOSE_FIELDS[purpose].join(', ')}], and the audit event lists exactly that`, async () => {
      const f = await fixture();
      const before = await eventCount(f.tenant, purpose);
      await CASES[purpose](f);
      // one event for the gateway call and one for the page, each naming exactly the table's fields
      expect(await eventCount(f.tenant, purpose)).toBe(before + 2);
      const events = await inTenant(database.db, f.tenant.id, (trx) =>
        trx.selectFrom('audit_events').select(['fields', 'outcome', 'actor_account_id', 'target_ids']).where('purpose', '=', purpose).orderBy('seq', 'desc').limit(2).execute(),
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
