/**
 * From an incident entry to the families: a security officer who
 * authenticated a moment ago sends a breach report's notices — one e-mail per
 * family, in its language, through the mail outbox and out over a real SMTP
 * server — and the register records the date. Sending again sends nothing
 * twice. Anyone else, or the same officer too long after signing in, is
 * refused and recorded. Then the entry's links: the tenant's alerts, chosen
 * from a list; audit events chosen by a range of sequence numbers, an actor
 * or a session; each shown with its summary and carried by the export.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { MailSender } from '../../src/mail/sender.ts';
import * as records from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { enrolTotp } from '../helpers/factors.ts';
import { decodedBody, Inbox } from '../helpers/inbox.ts';
import { actorOf, createAccount, grantRole } from '../records/people.ts';

let database: TestDatabase;
let t: TestApp;
let inbox: Inbox;
let sender: MailSender;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
  inbox = new Inbox();
  sender = new MailSender(t.deps, `smtp://127.0.0.1:${await inbox.start()}?ignoreTLS=true`);
});

afterAll(async () => {
  await sender?.stop();
  await inbox?.stop();
  await t?.close();
  await database?.close();
});

let seq = 0;

/** A Montreal wall-clock time for a datetime-local field. */
function montreal(d: Date): string {
  const p = Object.fromEntries(new Intl.DateTimeFormat('en-CA', { timeZone: 'America/Toronto', hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit' }).formatToParts(d).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}`;
}

async function world() {
  const n = `${Date.now().toString(36)}${(seq++).toString(36)}`;
  t.setNow(new Date());
  const tenant: Tenant = await tenantFor(t);
  const facility = await createFacility(t, tenant);
  const adminEmail = `admin.${n}@exemple.test`;
  const adminId = await createAdmin(t, tenant, adminEmail);
  const staffId = await createStaff(t, tenant, `educ.${n}@exemple.test`, facility);
  const admin2 = await createAccount(t, tenant, `admin2.${n}@exemple.test`);
  await grantRole(t, tenant, admin2, 'tenant_admin', staffId, adminId);
  const officerEmail = `securite.${n}@exemple.test`;
  const officerId = await createAccount(t, tenant, officerEmail);
  await grantRole(t, tenant, officerId, 'security_officer', admin2, adminId);
  await enrolTotp(t.deps, tenant, officerId, officerEmail);
  const d0 = today(t.deps.clock());
  const families: { email: string; childId: string; firstName: string }[] = [];
  for (const [i, firstName] of ['Félix', 'Oliver', 'Juliette'].entries()) {
    const email = `parent${i}.${n}@exemple.test`;
    const id = await createParent(t, tenant, email);
    if (i === 1) await inTenant(database.db, tenant.id, (trx) => trx.updateTable('accounts').set({ locale: 'en' }).where('id', '=', id).execute());
    const parent = await actorOf(t, tenant, id, email);
    const { id: childId } = await records.createChildFile(t.deps, ctxFor(t, tenant, parent), { firstName, lastName: 'Côté', birthDate: addMonths(d0, -7), nirec: `NO${n.toUpperCase()}${i}`.slice(0, 20), desiredEntryDate: addMonths(d0, 2), daysOfCare: 0b11111, inSubsidisedCare: false });
    families.push({ email, childId, firstName });
  }
  const officer = new Client(t.app, tenant.hosts[0]!);
  expect((await officer.signIn(officerEmail, PASSWORD)).status).toBe(303);
  const admin = new Client(t.app, tenant.hosts[0]!);
  expect((await admin.signIn(adminEmail, PASSWORD)).status).toBe(303);
  return { tenant, officer, officerId, admin, adminId, adminEmail, families };
}

const events = (tenant: Tenant, action: string) => inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').selectAll().where('action', '=', action).orderBy('seq').execute());

const INCIDENT = {
  title: 'Historiques consultés un samedi soir',
  dataConcerned: 'Prénoms, noms et dates de naissance d’enfants.',
  circumstances: 'Un compte d’administration a consulté des historiques hors des heures.',
  occurredFrom: '',
  occurredTo: '',
  discoveredOn: '2026-05-17',
  personsCount: '2',
  riskLevel: 'serious',
  riskAssessment: 'Renseignements sur des enfants.',
  commissionNotifiedOn: '',
  personsNotifiedOn: '',
  publicNotice: '',
  measures: 'Sessions révoquées.',
  auditEventIds: '',
  alertIds: '',
};

async function newIncident(officer: Client): Promise<string> {
  await officer.get('/security/incidents/new');
  const made = await officer.post('/security/incidents', INCIDENT);
  expect(made.status).toBe(303);
  return String(made.headers.location).split('/')[3]!.split('?')[0]!;
}

describe('sending the notices', () => {
  it('queues one e-mail per family in its language, delivered over SMTP; records the date; twice sends nothing twice', async () => {
    const w = await world();
    const start = t.deps.clock();
    const admin = await actorOf(t, w.tenant, w.adminId, w.adminEmail);
    // The intruder's account reads two families' histories; the third family is untouched.
    for (const f of w.families.slice(0, 2)) await records.readChildFileHistory(t.deps, ctxFor(t, w.tenant, admin), f.childId);
    const id = await newIncident(w.officer);
    const window = { kind: 'actor', value: w.adminEmail, from: montreal(new Date(start.getTime() - 5 * 60_000)), to: montreal(new Date(start.getTime() + 5 * 60_000)) };
    const report = await w.officer.post('/security/breach-report', { ...window, format: 'html' });
    expect(report.status).toBe(200);
    expect(textOf(report.body)).toContain('Envoyer les avis');
    expect(report.body).toContain(`<option value="${id}"`);

    await sender.tick([w.tenant.id]); // what the accounts' creation queued, out of the way
    const sent = await w.officer.post('/security/breach-report/notices', { ...window, incident: id });
    expect(sent.status).toBe(303);
    expect(sent.headers.location).toBe(`/security/incidents/${id}?queued=2&already=0`);
    const page = await w.officer.get(String(sent.headers.location));
    expect(textOf(page.body)).toContain('2 avis mis en file d’envoi');
    expect(textOf(page.body)).toContain('2 familles avisées par courriel');

    const before = inbox.received.length;
    expect(await sender.tick([w.tenant.id])).toBe(2);
    const got = inbox.received.slice(before);
    const fr = got.find((m) => m.to.includes(w.families[0]!.email))!;
    const en = got.find((m) => m.to.includes(w.families[1]!.email))!;
    expect(fr.raw).toMatch(/Content-Language: fr/);
    expect(decodedBody(fr.raw)).toContain('Dossier de Félix');
    expect(en.raw).toMatch(/Content-Language: en/);
    expect(decodedBody(en.raw)).toContain('Oliver');
    expect(got.some((m) => m.to.includes(w.families[2]!.email))).toBe(false);

    // The register has the date, and the report among its events.
    const entry = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('incidents').selectAll().where('id', '=', id).executeTakeFirstOrThrow());
    expect(entry.persons_notified_on).toBe(today(t.deps.clock()));
    const made = (await events(w.tenant, 'privacy.breachReport.create')).filter((e) => e.outcome === 'success');
    expect(entry.audit_event_ids).toContain(made.at(-1)!.id);
    const recorded = await events(w.tenant, 'privacy.breachNotices.send');
    expect(recorded).toHaveLength(1);
    expect(recorded[0]).toMatchObject({ outcome: 'success', actor_account_id: w.officerId, details: expect.objectContaining({ queued: 2, already: 0 }) });
    expect(recorded[0]!.family_ids).toHaveLength(2);

    // Again: nothing new queued, nothing sent, the date unchanged.
    t.setNow(new Date(t.deps.clock().getTime() + 60_000));
    const again = await w.officer.post('/security/breach-report/notices', { ...window, incident: id });
    expect(again.headers.location).toBe(`/security/incidents/${id}?queued=0&already=2`);
    expect(await sender.tick([w.tenant.id])).toBe(0);
    const outbox = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('mail_outbox').select('to_address').where('template', '=', 'breach_notice').execute());
    expect(outbox).toHaveLength(2);
  });

  it('an administrator is refused; the officer too long after signing in is sent to confirm; an unknown incident is not found; each recorded, nothing queued', async () => {
    const w = await world();
    const start = t.deps.clock();
    const admin = await actorOf(t, w.tenant, w.adminId, w.adminEmail);
    await records.readChildFileHistory(t.deps, ctxFor(t, w.tenant, admin), w.families[0]!.childId);
    const id = await newIncident(w.officer);
    const window = { kind: 'actor', value: w.adminEmail, from: montreal(new Date(start.getTime() - 5 * 60_000)), to: montreal(new Date(start.getTime() + 5 * 60_000)) };
    await w.admin.get('/');
    expect((await w.admin.post('/security/breach-report/notices', { ...window, incident: id })).status).toBe(403);
    const unknown = await w.officer.post('/security/breach-report/notices', { ...window, incident: randomUUID() });
    expect(unknown.status).toBe(404);
    t.setNow(new Date(t.deps.clock().getTime() + 10 * 60_000));
    const stale = await w.officer.post('/security/breach-report/notices', { ...window, incident: id });
    expect(stale.status).toBe(303);
    expect(String(stale.headers.location)).toMatch(/^\/reauth/);
    const recorded = await events(w.tenant, 'privacy.breachNotices.send');
    expect(recorded.map((e) => [e.outcome, (e.details as { reason?: string }).reason])).toEqual([
      ['denied', 'no_rule_matches'],
      ['failure', 'unknown_incident'],
      ['denied', 'step_up_required'],
    ]);
    const outbox = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('mail_outbox').select('id').where('template', '=', 'breach_notice').execute());
    expect(outbox).toHaveLength(0);
  });
});

describe('what an entry is linked to', () => {
  it('alerts chosen from the tenant’s, events by sequence range, actor or session: shown with their summaries, exported; bad selections refused', async () => {
    const w = await world();
    const other = await tenantFor(t);
    const admin = await actorOf(t, w.tenant, w.adminId, w.adminEmail);
    await records.readChildFileHistory(t.deps, ctxFor(t, w.tenant, admin), w.families[0]!.childId);
    await records.readChildFileHistory(t.deps, ctxFor(t, w.tenant, admin), w.families[1]!.childId);
    const now = t.deps.clock();
    const alert = await inTenant(database.db, w.tenant.id, (trx) =>
      trx.insertInto('detection_alerts').values({ tenant_id: w.tenant.id, rule_code: 'volume.daily', signal: 'volume', severity: 'high', subject_account_id: w.adminId, response: 'alert', created_at: now } as never).returning('id').executeTakeFirstOrThrow(),
    );
    const foreign = await inTenant(database.db, other.id, (trx) =>
      trx.insertInto('detection_alerts').values({ tenant_id: other.id, rule_code: 'volume.daily', signal: 'volume', severity: 'high', response: 'alert', created_at: now } as never).returning('id').executeTakeFirstOrThrow(),
    );
    const id = await newIncident(w.officer);
    const page = await w.officer.get(`/security/incidents/${id}`);
    expect(page.body).toContain(`value="${alert.id}"`);
    expect(page.body).not.toContain(foreign.id);

    // Alerts: the tenant's is linked; another tenant's is refused.
    const linked = await w.officer.post(`/security/incidents/${id}/alerts`, { alerts: alert.id });
    expect(linked.status).toBe(303);
    const bad = await w.officer.post(`/security/incidents/${id}/alerts`, { alerts: foreign.id });
    expect(bad.status).toBe(400);
    expect(textOf(bad.body)).toContain('n’est pas une alerte de ce programme');

    // Events: by actor (the two reads), then bad selections.
    const reads = await events(w.tenant, 'waitlist.childFile.history');
    const byActor = await w.officer.post(`/security/incidents/${id}/events`, { actor: w.adminEmail, seqFrom: String(reads[0]!.seq), seqTo: String(reads.at(-1)!.seq) });
    expect(byActor.headers.location).toBe(`/security/incidents/${id}?linked=2`);
    const reversed = await w.officer.post(`/security/incidents/${id}/events`, { seqFrom: '9', seqTo: '3' });
    expect(reversed.status).toBe(400);
    expect(textOf(reversed.body)).toContain('Le premier numéro doit précéder le dernier');
    const nobody = await w.officer.post(`/security/incidents/${id}/events`, { actor: 'personne@exemple.test' });
    expect(nobody.status).toBe(400);
    const empty = await w.officer.post(`/security/incidents/${id}/events`, {});
    expect(empty.status).toBe(400);
    const bySession = await w.officer.post(`/security/incidents/${id}/events`, { session: randomUUID() });
    expect(bySession.status).toBe(400);
    expect(textOf(bySession.body)).toContain('Aucun événement du journal ne correspond');
    // By session: the read done in that session, not the administrator's others; with another person named, nothing.
    const session = await inTenant(database.db, w.tenant.id, (trx) =>
      trx
        .insertInto('sessions')
        .values({ tenant_id: w.tenant.id, account_id: w.adminId, token_hash: Buffer.alloc(32, 7), created_at: now, last_seen_at: now, idle_timeout_seconds: 900, expires_at: new Date(now.getTime() + 3600_000) })
        .returning('id')
        .executeTakeFirstOrThrow(),
    );
    await records.readChildFileHistory(t.deps, ctxFor(t, w.tenant, { ...admin, sessionId: session.id }), w.families[2]!.childId);
    const inSession = (await events(w.tenant, 'waitlist.childFile.history')).at(-1)!;
    const notHis = await w.officer.post(`/security/incidents/${id}/events`, { session: session.id, actor: w.families[0]!.email });
    expect(notHis.status).toBe(400);
    const bySessionOk = await w.officer.post(`/security/incidents/${id}/events`, { session: session.id });
    expect(bySessionOk.headers.location).toBe(`/security/incidents/${id}?linked=1`);

    const shown = textOf((await w.officer.get(`/security/incidents/${id}`)).body);
    expect(shown).toContain('volume.daily');
    expect(shown).toContain(w.adminEmail);
    expect(shown).toContain('waitlist.childFile.history');
    expect(shown).toContain(String(reads[0]!.seq));

    const exported = await w.officer.get('/security/incidents/export.json');
    expect(exported.status).toBe(200);
    const doc = JSON.parse(exported.body);
    const entry = doc.incidents.find((i: { id: string }) => i.id === id);
    expect(entry.linkedAlertIds).toEqual([alert.id]);
    expect(entry.alerts).toEqual([expect.objectContaining({ id: alert.id, ruleCode: 'volume.daily', severity: 'high', subject: w.adminEmail })]);
    expect(entry.events.map((e: { id: string; action: string }) => [e.id, e.action])).toEqual([...reads, inSession].map((r) => [r.id, 'waitlist.childFile.history']));
    const csv = await w.officer.get('/security/incidents/export.csv');
    expect(csv.body.split('\r\n')[0]).toMatch(/,linkedAlerts,linkedEvents,noticesSent$/);
    expect(csv.body).toContain('volume.daily high open');

    const recorded = (await events(w.tenant, 'incident.link')).filter((e) => e.outcome === 'success');
    expect(recorded.map((e) => (e.details as { kind: string }).kind)).toEqual(['alerts', 'events', 'events']);
  });
});
