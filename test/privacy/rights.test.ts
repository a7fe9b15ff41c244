/**
 * A parent's rights, through the real pages: « Qui a consulté le dossier »
 * shows each read and change of the family's files as soon as it happens —
 * when, which organisation, which role, what for, which fields, on whose
 * behalf — from the audit log, and nothing of other families; the export is
 * one ZIP with the whole as JSON and CSV, behind a recent authentication,
 * and recorded.
 */
import { inflateRawSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { crc32 } from '../../src/privacy/zip.ts';
import { runAllocation } from '../../src/records/allocation.ts';
import * as records from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
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

let seq = 0;

interface World {
  tenant: Tenant;
  facilityName: string;
  parent: Actor;
  parentEmail: string;
  otherEmail: string;
  client: Client;
  childId: string;
  reference: string;
  otherChildId: string;
  otherReference: string;
  staff: Actor;
  operator: Actor;
  nirec: string;
  facility: string;
}

async function world(): Promise<World> {
  const n = `${Date.now().toString(36)}${(seq++).toString(36)}`;
  t.setNow(new Date());
  const tenant = await tenantFor(t);
  const facilityName = 'CPE Les Hirondelles';
  const facility = await createFacility(t, tenant, { name: facilityName });
  const parentEmail = `parent.${n}@exemple.test`;
  const parent = await actorOf(t, tenant, await createParent(t, tenant, parentEmail), parentEmail);
  const otherEmail = `autre.${n}@exemple.test`;
  const other = await actorOf(t, tenant, await createParent(t, tenant, otherEmail), otherEmail);
  const d0 = today(t.deps.clock());
  const nirec = `RT${n.toUpperCase()}`.slice(0, 20);
  const make = async (who: Actor, firstName: string, nir: string) => {
    const { id } = await records.createChildFile(t.deps, ctxFor(t, tenant, who), { firstName, lastName: 'Bouchard', birthDate: addMonths(d0, -9), nirec: nir, desiredEntryDate: addMonths(d0, 3), daysOfCare: 0b10101, inSubsidisedCare: false });
    await records.addApplication(t.deps, ctxFor(t, tenant, who), id, { facilityId: facility, siblingAttending: false, parentIsStaff: false });
    return id;
  };
  const childId = await make(parent, 'Rosalie', nirec);
  const otherChildId = await make(other, 'Anouk', `${nirec}X`.slice(0, 20));
  const refs = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('children').select(['id', 'reference']).where('id', 'in', [childId, otherChildId]).execute());
  const adminId = await createAdmin(t, tenant, `admin.${n}@exemple.test`);
  const staffEmail = `educ.${n}@exemple.test`;
  const staffId = await createStaff(t, tenant, staffEmail, facility);
  const opEmail = `agent.${n}@exemple.test`;
  const opId = await createAccount(t, tenant, opEmail);
  const admin2 = await createAccount(t, tenant, `admin2.${n}@exemple.test`);
  await grantRole(t, tenant, admin2, 'tenant_admin', staffId, adminId);
  await grantRole(t, tenant, opId, 'program_operator', admin2, adminId);
  const client = new Client(t.app, tenant.hosts[0]!);
  expect((await client.signIn(parentEmail, PASSWORD)).status).toBe(303);
  return {
    tenant,
    facilityName,
    facility,
    parent,
    parentEmail,
    otherEmail,
    client,
    childId,
    reference: refs.find((r) => r.id === childId)!.reference,
    otherChildId,
    otherReference: refs.find((r) => r.id === otherChildId)!.reference,
    staff: await actorOf(t, tenant, staffId, staffEmail),
    operator: await actorOf(t, tenant, opId, opEmail),
    nirec,
  };
}

/** The files of a ZIP, read from its central directory; each CRC checked. */
function unzip(buf: Buffer): Map<string, Buffer> {
  const end = buf.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  const count = buf.readUInt16LE(end + 10);
  let p = buf.readUInt32LE(end + 16);
  const out = new Map<string, Buffer>();
  for (let i = 0; i < count; i++) {
    expect(buf.readUInt32LE(p)).toBe(0x02014b50);
    const crc = buf.readUInt32LE(p + 16);
    const size = buf.readUInt32LE(p + 20);
    const nameLen = buf.readUInt16LE(p + 28);
    const local = buf.readUInt32LE(p + 42);
    const name = buf.subarray(p + 46, p + 46 + nameLen).toString('utf8');
    const lNameLen = buf.readUInt16LE(local + 26);
    const lExtra = buf.readUInt16LE(local + 28);
    const data = inflateRawSync(buf.subarray(local + 30 + lNameLen + lExtra, local + 30 + lNameLen + lExtra + size));
    expect(crc32(data)).toBe(crc);
    out.set(name, data);
    p += 46 + nameLen;
  }
  return out;
}

describe('« Qui a consulté le dossier »', () => {
  it('shows each read by others as soon as it happens: when, which organisation, which role, what for, which fields; nothing of other families', async () => {
    const w = await world();
    let page = await w.client.get('/account/privacy/access');
    expect(page.status).toBe(200);
    expect(textOf(page.body)).toContain('Personne d’autre que vous n’a consulté le dossier.');
    // The facility's staff list their candidates; the programme looks the child up by NIREC.
    await records.listCandidates(t.deps, ctxFor(t, w.tenant, w.staff), w.facility, 1);
    await records.lookupChildFileByNirec(t.deps, ctxFor(t, w.tenant, w.operator), w.nirec);
    page = await w.client.get('/account/privacy/access');
    const text = textOf(page.body);
    expect(page.body).toContain('<h1>Qui a consulté le dossier</h1>');
    expect(text).toContain('2 consultations ou modifications');
    expect(text).toContain(`${w.facilityName} — personnel du service de garde`);
    expect(text).toContain('Consultation — liste d’attente du service de garde (sans identité)');
    expect(text).toContain('groupe d’âge');
    expect(text).toContain('Consultation — recherche par NIREC par le programme');
    expect(text).toContain('agent du programme');
    expect(text).toContain(w.reference);
    // The staff list named the other family's child too: not shown here.
    expect(text).not.toContain(w.otherReference);
    expect(text).not.toContain(w.staff.email);
    expect(text).not.toContain(w.operator.accountId);
    // The parent's own actions, on request.
    const own = await w.client.get('/account/privacy/access?own=1');
    expect(textOf(own.body)).toContain('Vous');
    expect(textOf(own.body)).toContain('Modification — inscription à un service de garde');
    // In English.
    const en = await w.client.get('/account/privacy/access?lang=en');
    expect(en.body).toContain('<h1>Who consulted this file</h1>');
    expect(textOf(en.body)).toContain(`${w.facilityName} — childcare service staff`);
    expect(textOf(en.body)).toContain('Consultation — NIREC search by the programme');
    // Each look at the list is recorded, with the family.
    const reads = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('audit_events').selectAll().where('action', '=', 'privacy.accessLog.read').execute());
    expect(reads.length).toBe(4);
    expect(reads.every((r) => r.actor_account_id === w.parent.accountId && r.family_ids.length === 1 && r.purpose === 'parent.accessLog.view')).toBe(true);
    // The other parent sees their own child's read by staff, not ours.
    const account = await w.client.get('/account');
    expect(account.body).toContain('href="/account/privacy/access"');
  });

  it('shows each allocation round that read one of the family\'s files, dry runs too, with that file only; not to a family whose file no round read', async () => {
    const w = await world();
    // A second file of the family, not waiting (no application): no round reads it.
    const d0 = today(t.deps.clock());
    const { id: idle } = await records.createChildFile(t.deps, ctxFor(t, w.tenant, w.parent), { firstName: 'Mathis', lastName: 'Bouchard', birthDate: addMonths(d0, -20), nirec: null, desiredEntryDate: addMonths(d0, 2), daysOfCare: 31, inSubsidisedCare: false });
    const idleRef = (await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('children').select('reference').where('id', '=', idle).executeTakeFirstOrThrow())).reference;
    // A third family, whose only file waits nowhere.
    const thirdEmail = `troisieme.${Date.now().toString(36)}${seq++}@exemple.test`;
    const third = await actorOf(t, w.tenant, await createParent(t, w.tenant, thirdEmail), thirdEmail);
    await records.createChildFile(t.deps, ctxFor(t, w.tenant, third), { firstName: 'Jade', lastName: 'Lavoie', birthDate: addMonths(d0, -12), nirec: null, desiredEntryDate: addMonths(d0, 2), daysOfCare: 31, inSubsidisedCare: false });

    // Staff read first, then a dry run, then a round, a minute apart: the list is newest first.
    await records.listCandidates(t.deps, ctxFor(t, w.tenant, w.staff), w.facility, 1);
    const tenant = { id: w.tenant.id, rules: { ...w.tenant.rules, coordinatedAllocation: true } };
    const origin = { actorAccountId: null, actorRoles: ['system:cli'], ip: null, userAgent: 'guichet allocate', requestId: null };
    for (const dryRun of [true, false]) {
      t.setNow(new Date(t.deps.clock().getTime() + 60_000));
      const now = t.deps.clock();
      const s = await runAllocation(database.db, t.deps.keys, tenant, { dryRun, today: today(now), deadlineDays: 7, now, origin });
      expect(s.children).toBe(2);
    }

    const page = await w.client.get('/account/privacy/access');
    const text = textOf(page.body);
    expect(text).toContain('3 consultations ou modifications');
    const rows = [...page.body.matchAll(/<tr>([\s\S]*?)<\/tr>/g)].map((m) => textOf(m[1]!)).slice(1);
    expect(rows).toHaveLength(3);
    expect(rows[0]).toContain('Consultation — ronde de répartition coordonnée des places (offres aux familles)');
    expect(rows[1]).toContain('Consultation — essai de la répartition coordonnée, sans offre ni résultat conservé');
    expect(rows[2]).toContain('Consultation — liste d’attente du service de garde (sans identité)');
    for (const row of rows.slice(0, 2)) {
      expect(row).toMatch(/Le programme .* — commande sur le serveur/);
      expect(row).toContain('date d’entrée souhaitée, mois de naissance, fréquentation d’un service subventionné, inscriptions auprès des services de garde');
      expect(row).toContain(w.reference);
      // The family's file the round did not read, and the other family's that it did: neither is named.
      expect(row).not.toContain(idleRef);
      expect(row).not.toContain(w.otherReference);
    }
    const en = textOf((await w.client.get('/account/privacy/access?lang=en')).body);
    expect(en).toContain('Consultation — trial of the coordinated allocation, no offer made and no result kept');
    expect(en).toContain('month of birth');

    // The other family read by the same rounds sees them, with its own file only.
    const other = new Client(t.app, w.tenant.hosts[0]!);
    expect((await other.signIn(w.otherEmail, PASSWORD)).status).toBe(303);
    const theirs = textOf((await other.get('/account/privacy/access')).body);
    expect(theirs).toContain('ronde de répartition coordonnée');
    expect(theirs).toContain('essai de la répartition coordonnée');
    expect(theirs).toContain(w.otherReference);
    expect(theirs).not.toContain(w.reference);
    // A family no round read: no round in its list.
    const none = new Client(t.app, w.tenant.hosts[0]!);
    expect((await none.signIn(thirdEmail, PASSWORD)).status).toBe(303);
    const thirdText = textOf((await none.get('/account/privacy/access?own=1')).body);
    expect(thirdText).toContain('Vous');
    expect(thirdText).not.toContain('répartition coordonnée');

    // The export's access list has them too.
    const raw = await t.app.inject({ method: 'GET', url: '/account/privacy/export', headers: { host: w.tenant.hosts[0]!, cookie: [...w.client.cookies].map(([k, v]) => `${k}=${v}`).join('; ') } });
    expect(raw.statusCode).toBe(200);
    const files = unzip(raw.rawPayload);
    const doc = JSON.parse(files.get('guichet-export.json')!.toString('utf8'));
    const rounds = doc.accessLog.filter((e: { action: string }) => e.action === 'allocation.run');
    expect(rounds.map((e: { purpose: string }) => e.purpose)).toEqual(['allocation.round', 'allocation.round.dryRun']);
    for (const e of rounds) expect(e).toMatchObject({ accessor: 'programme', roles: ['system:cli'], files: [w.reference], kind: 'read' });
    expect(files.get('access-log.csv')!.toString('utf8')).toContain('allocation.round.dryRun');
  });

  it('signed out: sent to sign in, nothing shown', async () => {
    const w = await world();
    const anon = new Client(t.app, w.tenant.hosts[0]!);
    for (const url of ['/account/privacy', '/account/privacy/access', '/account/privacy/export']) {
      const r = await anon.get(url);
      expect(r.status).toBe(303);
      expect(String(r.headers.location)).toMatch(/^\/signin/);
    }
  });
});

describe('the export', () => {
  it('is one ZIP: the whole as JSON and as CSV, the NIREC masked, recorded; behind a recent authentication', async () => {
    const w = await world();
    await records.listCandidates(t.deps, ctxFor(t, w.tenant, w.staff), w.facility, 1);
    const res = await w.client.get('/account/privacy/export');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('application/zip');
    expect(String(res.headers['content-disposition'])).toMatch(/^attachment; filename="guichet-.*\.zip"$/);
    const raw = await t.app.inject({ method: 'GET', url: '/account/privacy/export', headers: { host: w.tenant.hosts[0]!, cookie: [...w.client.cookies].map(([k, v]) => `${k}=${v}`).join('; ') } });
    const files = unzip(raw.rawPayload);
    expect([...files.keys()].sort()).toEqual(['LISEZMOI-README.txt', 'access-log.csv', 'account.csv', 'allocations.csv', 'applications.csv', 'assisted-sessions.csv', 'children.csv', 'guichet-export.json', 'history.csv', 'offers.csv']);
    const doc = JSON.parse(files.get('guichet-export.json')!.toString('utf8'));
    expect(doc.format).toBe('guichet.family-export.v1');
    // What the family declared with each registration, the file's confirmation, and what each version said.
    expect(doc.children[0].applications[0]).toMatchObject({ siblingAttending: expect.any(Boolean), parentIsStaff: expect.any(Boolean), priorities: expect.any(Array) });
    expect(doc.children[0].confirmation).toEqual(expect.objectContaining({ inactiveSince: null }));
    expect(doc.children[0].history[0].content).toMatchObject({ firstName: 'Rosalie', lastName: 'Bouchard', nirecMasked: expect.stringMatching(/^•+/) });
    expect(doc.assistedSessions).toEqual([]);
    expect(files.get('applications.csv')!.toString('utf8')).toContain('sibling_attending,parent_is_staff,priorities');
    expect(doc.account.email).toBe(w.parentEmail);
    expect(doc.children).toHaveLength(1);
    expect(doc.children[0]).toMatchObject({ id: w.childId, reference: w.reference, firstName: 'Rosalie', lastName: 'Bouchard', nirecMasked: expect.stringMatching(/^•+/) });
    expect(doc.children[0].applications).toEqual([expect.objectContaining({ facilityName: w.facilityName, status: 'active' })]);
    expect(doc.children[0].history.map((h: { change: string }) => h.change)).toEqual(['create']);
    expect(doc.accessLog.some((e: { accessor: string; purpose: string }) => e.accessor === 'staff' && e.purpose === 'facility.candidates')).toBe(true);
    const all = [...files.values()].map((b) => b.toString('utf8')).join('\n');
    expect(all).not.toContain(w.nirec);
    expect(all).not.toContain('Anouk');
    const children = files.get('children.csv')!.toString('utf8');
    expect(children.startsWith('\ufeffchild_id,reference,first_name')).toBe(true);
    expect(children).toContain('Rosalie,Bouchard');
    expect(files.get('access-log.csv')!.toString('utf8')).toContain('facility.candidates');
    expect(files.get('LISEZMOI-README.txt')!.toString('utf8')).toContain('Vos données dans Guichet');
    // Recorded, with the family and the fields.
    const ev = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('audit_events').selectAll().where('action', '=', 'privacy.export').execute());
    expect(ev).toHaveLength(2);
    expect(ev[0]).toMatchObject({ outcome: 'success', actor_account_id: w.parent.accountId, purpose: 'parent.family.export', target_ids: [w.childId] });
    expect(ev[0]!.fields).toContain('birth_date');
    // Ten minutes later the export asks to confirm who you are first.
    t.setNow(new Date(t.deps.clock().getTime() + 10 * 60_000));
    const later = await w.client.get('/account/privacy/export');
    expect(later.status).toBe(303);
    expect(String(later.headers.location)).toMatch(/^\/reauth\?return=%2Faccount%2Fprivacy%2Fexport/);
  });

  it('holds the offers made to the family and the allocation rounds that included its child, in JSON and CSV; the read is recorded with them', async () => {
    const w = await world();
    const now = t.deps.clock();
    const { offerId, runId } = await inTenant(database.db, w.tenant.id, async (trx) => {
      const app = await trx.selectFrom('applications').select('id').where('child_id', '=', w.childId).executeTakeFirstOrThrow();
      const offer = await trx
        .insertInto('offers')
        .values({ tenant_id: w.tenant.id, application_id: app.id, child_id: w.childId, facility_id: w.facility, age_group: 'infant', status: 'refused', offered_at: new Date(now.getTime() - 86_400_000), deadline: new Date(now.getTime() + 86_400_000), answered_at: now })
        .returning('id')
        .executeTakeFirstOrThrow();
      const runId = crypto.randomUUID();
      const dummy = (n: number) => Buffer.alloc(n, 1);
      await trx
        .insertInto('allocation_runs')
        .values({ id: runId, tenant_id: w.tenant.id, started_at: now, finished_at: now, dry_run: false, parameters: JSON.stringify({}), children: 1, applications: 1, placed: 1, inputs_hash: dummy(32), outputs_hash: dummy(32), inputs_snapshot: dummy(4), signature: dummy(64), public_key: dummy(32) } as never)
        .execute();
      await trx
        .insertInto('allocation_results')
        .values({ run_id: runId, tenant_id: w.tenant.id, child_id: w.childId, age_group: 'infant', category_by_choice: [3], facility_by_choice: [w.facility], desired_entry_date: '2027-01-04', placed_choice: 1 } as never)
        .execute();
      return { offerId: offer.id, runId };
    });
    const raw = await t.app.inject({ method: 'GET', url: '/account/privacy/export', headers: { host: w.tenant.hosts[0]!, cookie: [...w.client.cookies].map(([k, v]) => `${k}=${v}`).join('; ') } });
    expect(raw.statusCode).toBe(200);
    const files = unzip(raw.rawPayload);
    const doc = JSON.parse(files.get('guichet-export.json')!.toString('utf8'));
    expect(doc.children[0].offers).toEqual([expect.objectContaining({ id: offerId, facilityName: w.facilityName, status: 'refused', ageGroup: 'infant', source: 'referral' })]);
    expect(doc.children[0].allocations).toEqual([expect.objectContaining({ runId, placedChoice: 1, choices: [{ facilityId: w.facility, facilityName: w.facilityName, category: 3 }] })]);
    const offers = files.get('offers.csv')!.toString('utf8').split('\r\n');
    expect(offers[0]).toBe('\ufeffchild_id,reference,offer_id,facility_id,facility_name,municipality,age_group,status,source,offered_at,deadline,answered_at,start_date');
    expect(offers[1]).toContain(`${w.childId},${w.reference},${offerId},${w.facility},${w.facilityName}`);
    expect(offers[1]).toContain(',infant,refused,referral,');
    const rounds = files.get('allocations.csv')!.toString('utf8').split('\r\n');
    expect(rounds[1]).toContain(`${runId},`);
    expect(rounds[1]).toMatch(/,1,.*,3,true$/);
    // Recorded through the gateway: the offer among the targets, the fields named.
    const ev = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('audit_events').selectAll().where('action', '=', 'privacy.export').where('outcome', '=', 'success').execute());
    expect(ev).toHaveLength(1);
    expect(ev[0]!.target_ids).toEqual([w.childId, offerId]);
    expect(ev[0]!.fields).toEqual(expect.arrayContaining(['offers', 'allocation_results']));
  });
});
