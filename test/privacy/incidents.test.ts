/**
 * The security console's side of privacy and incidents, through the real pages: the
 * incident register (the regulation's fields, linked audit events, errors
 * that keep what was typed, amendments recorded, never a deletion, exports)
 * and the breach report for a security officer who authenticated in the
 * last five minutes — everyone else refused, and the attempt recorded.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { montrealInstant } from '../../src/privacy/security-routes.tsx';
import * as records from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
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

let seq = 0;

async function world() {
  const n = `${Date.now().toString(36)}${(seq++).toString(36)}`;
  t.setNow(new Date());
  const tenant: Tenant = await tenantFor(t);
  const facility = await createFacility(t, tenant);
  const adminEmail = `admin.${n}@exemple.test`;
  const adminId = await createAdmin(t, tenant, adminEmail);
  const staffEmail = `educ.${n}@exemple.test`;
  const staffId = await createStaff(t, tenant, staffEmail, facility);
  const admin2 = await createAccount(t, tenant, `admin2.${n}@exemple.test`);
  await grantRole(t, tenant, admin2, 'tenant_admin', staffId, adminId);
  const officerEmail = `securite.${n}@exemple.test`;
  const officerId = await createAccount(t, tenant, officerEmail);
  await grantRole(t, tenant, officerId, 'security_officer', admin2, adminId);
  await enrolTotp(t.deps, tenant, officerId, officerEmail);
  const parentEmail = `parent.${n}@exemple.test`;
  const parent = await actorOf(t, tenant, await createParent(t, tenant, parentEmail), parentEmail);
  const d0 = today(t.deps.clock());
  const { id: childId } = await records.createChildFile(t.deps, ctxFor(t, tenant, parent), { firstName: 'Félix', lastName: 'Côté', birthDate: addMonths(d0, -7), nirec: `IN${n.toUpperCase()}`.slice(0, 20), desiredEntryDate: addMonths(d0, 2), daysOfCare: 0b11111, inSubsidisedCare: false });
  const officer = new Client(t.app, tenant.hosts[0]!);
  expect((await officer.signIn(officerEmail, PASSWORD)).status).toBe(303);
  const admin = new Client(t.app, tenant.hosts[0]!);
  expect((await admin.signIn(adminEmail, PASSWORD)).status).toBe(303);
  return { tenant, facility, officer, officerId, admin, adminId, adminEmail, staffId, parent, parentEmail, childId };
}

const events = (tenant: Tenant, action: string) => inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').selectAll().where('action', '=', action).orderBy('seq').execute());

const VALID = {
  title: 'Compte d’administration utilisé hors des heures',
  dataConcerned: 'Noms, dates de naissance et NIREC masqués de dossiers d’enfants.',
  circumstances: 'Un compte d’administration a consulté des historiques de dossiers un samedi soir.',
  occurredFrom: '2026-05-15',
  occurredTo: '2026-05-15',
  discoveredOn: '2026-05-17',
  personsCount: '3',
  riskLevel: 'serious',
  riskAssessment: 'Renseignements sensibles sur des enfants; usage malveillant probable.',
  commissionNotifiedOn: '',
  personsNotifiedOn: '',
  publicNotice: '',
  measures: 'Sessions révoquées, compte suspendu.',
  auditEventIds: '',
  alertIds: '',
};

/** A Montreal wall-clock time for a datetime-local field. */
function montreal(d: Date): string {
  const p = Object.fromEntries(new Intl.DateTimeFormat('en-CA', { timeZone: 'America/Toronto', hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit' }).formatToParts(d).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}`;
}

describe('the incident register', () => {
  it('records an incident with the regulation’s fields, keeps what was typed on an error, records each amendment, exports, and never deletes', async () => {
    const w = await world();
    let page = await w.officer.get('/security/incidents');
    expect(page.status).toBe(200);
    expect(textOf(page.body)).toContain('Aucun incident inscrit.');
    await w.officer.get('/security/incidents/new');
    // Errors: a missing title, a bad count, an end before the start, an event of nobody's.
    const bad = await w.officer.post('/security/incidents', { ...VALID, title: '', personsCount: 'trois', occurredTo: '2026-05-01', auditEventIds: '00000000-0000-4000-8000-000000000000' });
    expect(bad.status).toBe(400);
    expect(bad.body).toMatch(/<title>Erreur\u202f: /);
    const text = textOf(bad.body);
    for (const m of ['Donnez un titre à l’incident', 'Entrez un nombre entier, ou laissez vide', 'La fin de l’incident doit suivre son début']) expect(text).toContain(m);
    expect(bad.body).toContain('Sessions révoquées, compte suspendu.');
    const unknownEvent = await w.officer.post('/security/incidents', { ...VALID, auditEventIds: '00000000-0000-4000-8000-000000000000' });
    expect(unknownEvent.status).toBe(400);
    expect(textOf(unknownEvent.body)).toContain('n’est pas un événement du journal de ce programme');
    // A valid entry, linked to a real event of the log.
    const [read] = await events(w.tenant, 'waitlist.childFile.create');
    const ok = await w.officer.post('/security/incidents', { ...VALID, auditEventIds: read!.id, alertIds: 'alerte-42' });
    expect(ok.status).toBe(303);
    const where = String(ok.headers.location);
    expect(where).toMatch(/^\/security\/incidents\/[0-9a-f-]{36}\?saved=1$/);
    page = await w.officer.get(where);
    expect(page.body).toContain('<h1>Incident no 1</h1>');
    expect(textOf(page.body)).toContain('L’inscription a été enregistrée.');
    expect(textOf(page.body)).toContain('Conservé jusqu’au 17 mai 2031.');
    // An amendment: the notices are sent.
    const id = where.split('/')[3]!.split('?')[0]!;
    await w.officer.post(`/security/incidents/${id}`, { ...VALID, auditEventIds: read!.id, commissionNotifiedOn: '2026-05-18', personsNotifiedOn: '2026-05-19' });
    const row = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('incidents').selectAll().where('id', '=', id).executeTakeFirstOrThrow());
    expect(row).toMatchObject({ number: 1, persons_count: 3, risk_level: 'serious', commission_notified_on: '2026-05-18', persons_notified_on: '2026-05-19', retain_until: '2031-05-17', audit_event_ids: [read!.id], alert_ids: null });
    const created = await events(w.tenant, 'incident.create');
    expect(created).toHaveLength(1);
    expect(created[0]!.target_ids).toEqual([id, read!.id]);
    const updated = await events(w.tenant, 'incident.update');
    expect(updated.map((e) => (e.details as { changed: string }).changed)).toEqual(['commission_notified_on persons_notified_on alert_ids']);
    // The list, in English too.
    const en = await w.officer.get('/security/incidents?lang=en');
    expect(textOf(en.body)).toContain('Serious risk');
    expect(textOf(en.body)).toContain('Compte d’administration utilisé hors des heures');
    // Exports.
    const csv = await w.officer.get('/security/incidents/export.csv');
    expect(csv.status).toBe(200);
    expect(csv.body).toContain('Compte d’administration utilisé hors des heures');
    expect(csv.body.split('\r\n')[0]).toContain('\ufeffnumber,title,dataConcerned,circumstances');
    const json = JSON.parse((await w.officer.get('/security/incidents/export.json')).body);
    expect(json.incidents).toHaveLength(1);
    expect(json.incidents[0]).toMatchObject({ number: 1, personsCount: 3, commissionNotifiedOn: '2026-05-18' });
    expect((await events(w.tenant, 'incident.export')).map((e) => (e.details as { format: string }).format)).toEqual(['csv', 'json']);
    // Amended, never rewritten: the risk lowered and the text changed, the earlier version is kept and shown; a link
    // stays linked, a notice date stays written; the history itself cannot be changed.
    const lowered = await w.officer.post(`/security/incidents/${id}`, { ...VALID, auditEventIds: read!.id, commissionNotifiedOn: '2026-05-18', personsNotifiedOn: '2026-05-19', riskLevel: 'not_serious', circumstances: 'Fausse alerte.' });
    expect(lowered.status).toBe(303);
    const history = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('incident_versions').selectAll().where('incident_id', '=', id).orderBy('version').execute());
    expect(history.map((v) => [v.version, (v.content as { risk_level: string }).risk_level, (v.content as { commission_notified_on: string | null }).commission_notified_on])).toEqual([
      [1, 'serious', null],
      [2, 'serious', '2026-05-18'],
    ]);
    page = await w.officer.get(`/security/incidents/${id}?lang=fr`);
    expect(textOf(page.body)).toContain('Versions antérieures de l’inscription (2)');
    expect(textOf(page.body)).toContain(VALID.circumstances);
    const unlinked = await w.officer.post(`/security/incidents/${id}`, { ...VALID, auditEventIds: '', commissionNotifiedOn: '2026-05-18', personsNotifiedOn: '2026-05-19' });
    expect(unlinked.status).toBe(400);
    expect(textOf(unlinked.body)).toContain('Un événement lié reste lié');
    const cleared = await w.officer.post(`/security/incidents/${id}`, { ...VALID, auditEventIds: read!.id, commissionNotifiedOn: '', personsNotifiedOn: '2026-05-19' });
    expect(cleared.status).toBe(400);
    expect(textOf(cleared.body)).toContain('Une date d’avis inscrite reste inscrite');
    await expect(inTenant(database.db, w.tenant.id, (trx) => trx.updateTable('incidents').set({ audit_event_ids: [] }).where('id', '=', id).execute())).rejects.toThrow(/never removed/);
    await expect(inTenant(database.db, w.tenant.id, (trx) => trx.updateTable('incidents').set({ persons_notified_on: null }).where('id', '=', id).execute())).rejects.toThrow(/not cleared/);
    await expect(inTenant(database.db, w.tenant.id, (trx) => trx.updateTable('incident_versions').set({ content: '{}' } as never).where('incident_id', '=', id).execute())).rejects.toThrow(/permission denied|append-only/);
    await expect(inTenant(database.db, w.tenant.id, (trx) => trx.deleteFrom('incident_versions').where('incident_id', '=', id).execute())).rejects.toThrow(/permission denied|append-only/);
    // The register keeps every entry, and its retention only grows.
    await expect(inTenant(database.db, w.tenant.id, (trx) => trx.deleteFrom('incidents').where('id', '=', id).execute())).rejects.toThrow(/permission denied|register keeps/);
    await expect(inTenant(database.db, w.tenant.id, (trx) => trx.updateTable('incidents').set({ retain_until: '2027-01-01' }).where('id', '=', id).execute())).rejects.toThrow(/only move later|check/);
  });

  it('is the security officer’s: an administrator and a parent are refused, and the attempts recorded', async () => {
    const w = await world();
    expect((await w.admin.get('/security/incidents')).status).toBe(403);
    expect((await w.admin.get('/security/incidents/export.csv')).status).toBe(403);
    await w.admin.get('/account');
    expect((await w.admin.post('/security/incidents', VALID)).status).toBe(403);
    const denied = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('audit_events').selectAll().where('action', 'like', 'incident.%').where('outcome', '=', 'denied').execute());
    expect(denied.map((e) => e.action).sort()).toEqual(['incident.create', 'incident.export', 'incident.list']);
    expect(denied.every((e) => e.actor_account_id === w.adminId)).toBe(true);
    expect(await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('incidents').selectAll().execute())).toEqual([]);
  });
});

describe('tenants', () => {
  it('one programme’s register is invisible to another’s officer and to its database rows', async () => {
    const a = await world();
    const b = await world();
    await a.officer.get('/security/incidents/new');
    const made = await a.officer.post('/security/incidents', VALID);
    const id = String(made.headers.location).split('/')[3]!.split('?')[0]!;
    expect((await b.officer.get(`/security/incidents/${id}`)).status).toBe(404);
    await b.officer.get('/security/incidents/new');
    expect((await b.officer.post(`/security/incidents/${id}`, VALID)).status).toBe(404);
    expect(await inTenant(database.db, b.tenant.id, (trx) => trx.selectFrom('incidents').selectAll().execute())).toEqual([]);
    // A link to another programme's audit event is refused like an unknown one.
    const [foreign] = await events(a.tenant, 'waitlist.childFile.create');
    const linked = await b.officer.post('/security/incidents', { ...VALID, auditEventIds: foreign!.id });
    expect(linked.status).toBe(400);
    expect(textOf(linked.body)).toContain('n’est pas un événement du journal de ce programme');
  });
});

describe('the breach report in the console', () => {
  it('a security officer signed in a moment ago gets the report, the notices and the summary, or a download; bad input is an error on the form', async () => {
    const w = await world();
    const start = t.deps.clock();
    const admin = await actorOf(t, w.tenant, w.adminId, w.adminEmail);
    await records.readChildFileHistory(t.deps, ctxFor(t, w.tenant, admin), w.childId);
    const from = montreal(new Date(start.getTime() - 5 * 60_000));
    const to = montreal(new Date(start.getTime() + 5 * 60_000));
    expect(montrealInstant(from)!.getTime()).toBe(Math.floor((start.getTime() - 5 * 60_000) / 60_000) * 60_000);
    const form = await w.officer.get('/security/breach-report');
    expect(form.status).toBe(200);
    const r = await w.officer.post('/security/breach-report', { kind: 'actor', value: w.adminEmail, from, to, format: 'html' });
    expect(r.status).toBe(200);
    const text = textOf(r.body);
    const ref = (await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('children').select('reference').where('id', '=', w.childId).executeTakeFirstOrThrow())).reference;
    expect(text).toContain(ref);
    expect(text).toContain('1 familles, 1 dossiers');
    expect(text).toContain(w.parentEmail);
    expect(text).toContain('Avis d’incident de confidentialité');
    expect(text).toContain('Dossier de Félix');
    expect(text).toContain('Résumé d’un incident de confidentialité');
    // From the report to the register: its event and its count, filled in.
    const made = (await events(w.tenant, 'privacy.breachReport.create')).at(-1)!;
    expect(r.body).toContain(`href="/security/incidents/new?event=${made.id}&amp;persons=1"`);
    const prefilled = await w.officer.get(`/security/incidents/new?event=${made.id}&persons=1`);
    expect(prefilled.body).toContain(`>${made.id}</textarea>`);
    expect(prefilled.body).toMatch(/id="f-personsCount"[^>]*value="1"|value="1"[^>]*id="f-personsCount"/);
    const csv = await w.officer.post('/security/breach-report', { kind: 'actor', value: w.adminEmail, from, to, format: 'csv' });
    expect(csv.status).toBe(200);
    expect(String(csv.headers['content-disposition'])).toMatch(/attachment; filename="breach-report-/);
    expect(csv.body.trim().split('\r\n')).toHaveLength(2);
    // Bad input: the form again, with the error, and nothing produced.
    const reversed = await w.officer.post('/security/breach-report', { kind: 'actor', value: w.adminEmail, from: to, to: from, format: 'html' });
    expect(reversed.status).toBe(400);
    expect(textOf(reversed.body)).toContain('Le début de la période doit précéder sa fin');
    const nobody = await w.officer.post('/security/breach-report', { kind: 'actor', value: 'personne@exemple.test', from, to, format: 'html' });
    expect(nobody.status).toBe(400);
    expect(textOf(nobody.body)).toContain('Aucun compte de ce programme');
    const badIp = await w.officer.post('/security/breach-report', { kind: 'ip', value: 'pas une adresse', from, to, format: 'html' });
    expect(textOf(badIp.body)).toContain('Entrez une adresse IPv4 ou IPv6');
    // Six minutes later: re-authenticate first; the attempt is recorded.
    t.setNow(new Date(start.getTime() + 6 * 60_000));
    const late = await w.officer.post('/security/breach-report', { kind: 'actor', value: w.adminEmail, from, to, format: 'html' });
    expect(late.status).toBe(303);
    expect(String(late.headers.location)).toMatch(/^\/reauth/);
    // Not an officer: refused.
    expect((await w.admin.get('/security/breach-report')).status).toBe(403);
    await w.admin.get('/account');
    expect((await w.admin.post('/security/breach-report', { kind: 'actor', value: w.adminEmail, from, to })).status).toBe(403);
    const logged = await events(w.tenant, 'privacy.breachReport.create');
    expect(logged.map((e) => [e.outcome, (e.details as { reason?: string }).reason ?? null])).toEqual([
      ['success', null],
      ['success', null],
      ['failure', 'window_order'],
      ['failure', 'unknown_actor'],
      ['failure', 'bad_ip'],
      ['denied', 'step_up_required'],
      ['denied', 'forbidden'],
    ]);
  });
});
