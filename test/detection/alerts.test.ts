/**
 * Alerts reach people: the security console (list, filter, acknowledge,
 * assign, notes, the audit events behind them), e-mail to every security
 * officer, and a signed webhook, checked against a real local HTTP receiver.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { verifyWebhook, webhookSecret, WebhookSender } from '../../src/detection/webhook.ts';
import * as records from '../../src/records/gateway.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { enrolTotp } from '../helpers/factors.ts';
import { actorOf, createAccount, grantRole } from '../records/people.ts';

interface Received {
  at: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

let database: TestDatabase;
let t: TestApp;
let receiver: Server;
let receiverUrl: string;
const received: Received[] = [];
let sender: WebhookSender;
const senderTenants = new Set<string>();

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ at: performance.now(), headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/guichet-alerts`;
  // This file's tenants only: on PostgreSQL the suite's files share a database, and a pass over hundreds of
  // tenants' deliveries, one transaction each, could outlast the second the alert is given.
  sender = new WebhookSender(t.deps, 100, 5000, (x) => senderTenants.has(x.id));
  sender.start();
});

afterAll(async () => {
  await sender?.stop();
  await new Promise<void>((resolve) => receiver?.close(() => resolve()));
  await t?.close();
  await database?.close();
});

describe('an alert, from the read that crossed the threshold to the people who act on it', () => {
  it('is in the console, in each officer’s mail and at the webhook receiver, signed, within a second', async () => {
    const tenant = await tenantFor(t);
    senderTenants.add(tenant.id);
    const facility = await createFacility(t, tenant, { name: 'CPE Les Mésanges' });
    const adminId = await createAdmin(t, tenant, 'admin@exemple.test');
    const helperId = await createAccount(t, tenant, 'aide@exemple.test');
    const officerIds: string[] = [];
    for (const email of ['securite1@exemple.test', 'securite2@exemple.test']) {
      const id = await createAccount(t, tenant, email);
      await grantRole(t, tenant, id, 'security_officer', helperId, adminId);
      await enrolTotp(t.deps, tenant, id, email);
      officerIds.push(id);
    }
    const parent = await actorOf(t, tenant, await createParent(t, tenant, 'parent@exemple.test'), 'parent@exemple.test');
    const t0 = today(new Date());
    const { id: child } = await records.createChildFile(t.deps, ctxFor(t, tenant, parent), { firstName: 'Zoé', lastName: 'Roy', birthDate: addMonths(t0, -9), nirec: null, desiredEntryDate: addMonths(t0, 2), daysOfCare: 0b11111, inSubsidisedCare: false });
    await records.addApplication(t.deps, ctxFor(t, tenant, parent), child, { facilityId: facility, siblingAttending: false, parentIsStaff: false });
    const intruderId = await createStaff(t, tenant, 'intrus@exemple.test', facility, adminId);
    const host = tenant.hosts[0]!;

    // The first officer points the tenant's alerts at the receiver.
    const officer = new Client(t.app, host);
    expect((await officer.signIn('securite1@exemple.test', PASSWORD)).status).toBe(303);
    await officer.get('/security/alerts/webhook');
    const bad = await officer.post('/security/alerts/webhook', { url: 'ftp://exemple.test/hook' });
    expect(bad.status).toBe(400);
    expect(textOf(bad.body)).toContain('Entrez une adresse https:// complète');
    expect((await officer.post('/security/alerts/webhook', { url: receiverUrl })).status).toBe(303);
    const settings = await officer.get('/security/alerts/webhook?saved=1');
    expect(textOf(settings.body)).toContain(webhookSecret(t.deps.keys, tenant.id));

    // The intruder reads until it is refused.
    const intruder = new Client(t.app, host);
    expect((await intruder.signIn('intrus@exemple.test', PASSWORD)).status).toBe(303);
    let served = 0;
    let refusedAt = 0;
    for (let i = 0; i < 30 && !refusedAt; i++) {
      const r = await intruder.get(`/staff/facilities/${facility}/candidates`);
      if (r.status === 200) served++;
      else refusedAt = performance.now();
    }
    expect(served).toBe(20);

    // The webhook, signed, within a second of the refusal.
    while (!received.length && performance.now() - refusedAt < 3000) await new Promise((r) => setTimeout(r, 20));
    expect(received).toHaveLength(1);
    const hook = received[0]!;
    expect(hook.at - refusedAt).toBeLessThan(1000);
    const sig = { timestamp: String(hook.headers['guichet-timestamp']), signature: String(hook.headers['guichet-signature']) };
    expect(verifyWebhook(webhookSecret(t.deps.keys, tenant.id), sig, hook.body, new Date())).toBe(true);
    expect(verifyWebhook(webhookSecret(t.deps.keys, tenant.id), sig, hook.body.replace('critical', 'low'), new Date())).toBe(false);
    expect(verifyWebhook(webhookSecret(t.deps.keys, tenant.id), sig, hook.body, new Date(Date.now() + 600_000))).toBe(false);
    expect(verifyWebhook('another-tenant-secret', sig, hook.body, new Date())).toBe(false);
    const payload = JSON.parse(hook.body) as Record<string, unknown>;
    expect(payload).toMatchObject({ type: 'security_alert', rule: 'files_read.5m', severity: 'critical', response: 'suspend', subjectAccountId: intruderId });
    const alertId = payload.id as string;

    // E-mail to each officer.
    const mail = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('mail_outbox').selectAll().where('template', '=', 'security_alert').orderBy('to_address').execute());
    expect(mail.map((m) => m.to_address)).toEqual(['securite1@exemple.test', 'securite2@exemple.test']);
    expect(mail[0]!.subject).toContain('Plus de 20 dossiers ouverts en 5 minutes');
    expect(mail[0]!.body_text).toContain(`/security/alerts/${alertId}`);

    // The console: the list, its filters.
    const list = await officer.get('/security/alerts');
    expect(list.status).toBe(200);
    const text = textOf(list.body);
    expect(text).toContain('1 alerte');
    expect(text).toContain('intrus@exemple.test');
    expect(text).toContain('Critique');
    expect(text).toContain('Compte suspendu et sessions fermées');
    expect(list.body).toContain(`href="/security/alerts/${alertId}"`);
    expect(textOf((await officer.get('/security/alerts?severity=low')).body)).toContain('Aucune alerte ne correspond.');
    expect(textOf((await officer.get('/security/alerts?status=open&severity=critical')).body)).toContain('1 alerte');
    expect(textOf((await officer.get('/security/alerts?mine=on')).body)).toContain('Aucune alerte ne correspond.');
    expect(textOf((await officer.get('/security/alerts?lang=en')).body)).toContain('Security alerts');
    await officer.get('/security/alerts?lang=fr');

    // One alert: its audit events (the refused read, marked as the cause, and the reads before it).
    const page = await officer.get(`/security/alerts/${alertId}`);
    expect(page.status).toBe(200);
    const ptext = textOf(page.body);
    expect(ptext).toContain('Cause de l’alerte');
    expect((ptext.match(/waitlist\.candidates\.list/g) ?? []).length).toBe(21);
    expect((ptext.match(/Refusé/g) ?? []).length).toBe(1);
    expect(ptext).toContain('Suspendu');

    // Acknowledge, assign to the second officer, annotate, close.
    expect((await officer.post(`/security/alerts/${alertId}/acknowledge`)).status).toBe(303);
    await officer.get(`/security/alerts/${alertId}`);
    expect((await officer.post(`/security/alerts/${alertId}/assign`, { assignee: officerIds[1]! })).status).toBe(303);
    await officer.get(`/security/alerts/${alertId}`);
    expect((await officer.post(`/security/alerts/${alertId}/assign`, { assignee: intruderId })).status).toBe(400);
    const empty = await officer.post(`/security/alerts/${alertId}/note`, { note: '   ' });
    expect(empty.status).toBe(400);
    expect(textOf(empty.body)).toContain('Écrivez une note');
    expect((await officer.post(`/security/alerts/${alertId}/note`, { note: 'Compte suspendu; la directrice joint l’employée. <script>alert(1)</script>' })).status).toBe(303);
    const after = await officer.get(`/security/alerts/${alertId}?done=note`);
    const atext = textOf(after.body);
    expect(atext).toContain('Prise en charge');
    expect(atext).toContain('securite2@exemple.test');
    expect(atext).toContain('la directrice joint l’employée');
    expect(after.body).not.toContain('<script>alert(1)</script>');
    expect((await officer.post(`/security/alerts/${alertId}/close`)).status).toBe(303);
    expect(textOf((await officer.get('/security/alerts?status=closed')).body)).toContain('1 alerte');
    const second = new Client(t.app, host);
    expect((await second.signIn('securite2@exemple.test', PASSWORD)).status).toBe(303);
    expect(textOf((await second.get('/security/alerts?mine=on')).body)).toContain('1 alerte');

    // Once the facts are established, one officer asks to reinstate the account and a second one approves: it signs in
    // and reads again, its counters from zero. The one who asked cannot approve, nor can the database be told otherwise.
    const closed = await officer.get(`/security/alerts/${alertId}`);
    expect(textOf(closed.body)).toContain('Demander le rétablissement du compte');
    expect((await officer.post(`/security/alerts/${alertId}/reinstate`)).status).toBe(303);
    const asked = textOf((await officer.get(`/security/alerts/${alertId}?done=reinstate`)).body);
    expect(asked).toContain('un autre agent de sécurité doit l’approuver');
    expect(asked).not.toContain('Approuver le rétablissement');
    expect((await new Client(t.app, host).signIn('intrus@exemple.test', PASSWORD)).status).not.toBe(303);
    const again = await officer.post(`/security/alerts/${alertId}/reinstate`);
    expect(again.status).toBe(400);
    expect(textOf(again.body)).toContain('attend déjà la décision d’un autre agent de sécurité');
    await officer.get(`/security/alerts/${alertId}`);
    const self = await officer.post(`/security/alerts/${alertId}/reinstateApprove`);
    expect(self.status).toBe(400);
    expect(textOf(self.body)).toContain('Un autre agent de sécurité que celui qui a fait la demande doit l’approuver');
    const request = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('account_reinstatements').selectAll().executeTakeFirstOrThrow());
    expect(request).toMatchObject({ account_id: intruderId, requested_by: officerIds[0], status: 'pending', alert_id: alertId });
    await expect(
      inTenant(database.db, tenant.id, (trx) => trx.updateTable('account_reinstatements').set({ status: 'applied', decided_by: officerIds[0]!, decided_at: new Date() }).where('id', '=', request.id).execute()),
    ).rejects.toThrow(/check constraint/);
    // Nor can the account be set back to active by a statement of its own.
    await expect(inTenant(database.db, tenant.id, (trx) => trx.updateTable('accounts').set({ status: 'active' }).where('id', '=', intruderId).execute())).rejects.toThrow(/reinstated only by two security officers/);
    const pending = textOf((await second.get(`/security/alerts/${alertId}`)).body);
    expect(pending).toContain('securite1@exemple.test a demandé le rétablissement de ce compte');
    expect((await second.post(`/security/alerts/${alertId}/reinstateApprove`)).status).toBe(303);
    expect(textOf((await second.get(`/security/alerts/${alertId}?done=reinstateApprove`)).body)).toContain('Le compte est rétabli');
    expect((await second.post(`/security/alerts/${alertId}/reinstateApprove`)).status).toBe(404);
    expect((await officer.post(`/security/alerts/${alertId}/reinstate`)).status).toBe(404);
    const back = new Client(t.app, host);
    expect((await back.signIn('intrus@exemple.test', PASSWORD)).status).toBe(303);
    expect((await back.get(`/staff/facilities/${facility}/candidates`)).status).toBe(200);

    // Everything the console did is in the log.
    const updates = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['details', 'outcome']).where('action', '=', 'detection.alert.update').where('outcome', '=', 'success').orderBy('seq').execute());
    expect(updates.map((u) => (u.details as { change: string }).change)).toEqual(['acknowledge', 'assign', 'note', 'close', 'reinstate', 'reinstateApprove']);
    const refusedSteps = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select('details').where('action', '=', 'detection.alert.update').where('outcome', '=', 'denied').orderBy('seq').execute());
    expect(refusedSteps.map((u) => u.details)).toContainEqual({ change: 'reinstateApprove', reason: 'same_officer' });

    // An alert about an officer: not theirs to take in charge, assign or close; the other officer's.
    const aboutMe = await inTenant(database.db, tenant.id, (trx) =>
      trx
        .insertInto('detection_alerts')
        .values({ tenant_id: tenant.id, rule_code: 'staff.off_hours', signal: 'staff.activity', severity: 'low', subject_account_id: officerIds[0]!, response: 'alert', lockdown_level: null, event_ids: [], details: '{}', created_at: t.deps.clock() })
        .returning('id')
        .executeTakeFirstOrThrow(),
    );
    await officer.get(`/security/alerts/${aboutMe.id}`);
    for (const step of ['acknowledge', 'close']) {
      const own = await officer.post(`/security/alerts/${aboutMe.id}/${step}`);
      expect(own.status, step).toBe(400);
      expect(textOf(own.body)).toContain('Cette alerte vous concerne');
    }
    expect((await officer.post(`/security/alerts/${aboutMe.id}/assign`, { assignee: officerIds[0]! })).status).toBe(400);
    expect(await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('detection_alerts').select(['status', 'assigned_to']).where('id', '=', aboutMe.id).executeTakeFirstOrThrow())).toEqual({ status: 'open', assigned_to: null });
    await second.get(`/security/alerts/${aboutMe.id}`);
    expect((await second.post(`/security/alerts/${aboutMe.id}/close`)).status).toBe(303);
    const ownRefusals = (await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['details', 'target_ids']).where('action', '=', 'detection.alert.update').where('outcome', '=', 'denied').orderBy('seq').execute())).filter((e) => e.target_ids.includes(aboutMe.id));
    expect(ownRefusals.map((u) => u.details)).toEqual([
      { change: 'acknowledge', reason: 'own_alert' },
      { change: 'close', reason: 'own_alert' },
      { change: 'assign', reason: 'own_alert' },
    ]);

    // Nobody but a security officer reaches the console.
    const parentClient = new Client(t.app, host);
    expect((await parentClient.signIn('parent@exemple.test', PASSWORD)).status).toBe(303);
    expect((await parentClient.get('/security/alerts')).status).toBe(403);
    expect((await parentClient.get(`/security/alerts/${alertId}`)).status).toBe(403);
    expect((await parentClient.get('/security/lockdown')).status).toBe(403);
    expect((await parentClient.get('/security/alerts/webhook')).status).toBe(403);
  });
});
