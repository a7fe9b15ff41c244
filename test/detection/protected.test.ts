/**
 * Protected files: marked by a programme operator; opening one needs a
 * stated reason, raises an alert at once, and is listed in the security
 * officers' daily review.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { markProtected, protectedReview, unmarkProtected } from '../../src/detection/protected.ts';
import * as records from '../../src/records/gateway.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createParent, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
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

describe('a protected file', () => {
  it('opens only with a reason, raises an alert with the read, and is in the day’s review', async () => {
    t.setNow(new Date());
    const tenant = await tenantFor(t);
    const adminId = await createAdmin(t, tenant, 'admin@exemple.test');
    const helperId = await createAccount(t, tenant, 'aide@exemple.test');
    const officerId = await createAccount(t, tenant, 'securite@exemple.test');
    await grantRole(t, tenant, officerId, 'security_officer', helperId, adminId);
    await enrolTotp(t.deps, tenant, officerId, 'securite@exemple.test');
    const operatorId = await createAccount(t, tenant, 'operation@exemple.test');
    await grantRole(t, tenant, operatorId, 'program_operator', helperId, adminId);
    const operator = await actorOf(t, tenant, operatorId, 'operation@exemple.test');
    const parent = await actorOf(t, tenant, await createParent(t, tenant, 'ministre@exemple.test'), 'ministre@exemple.test');
    const t0 = today(t.deps.clock());
    const base = { lastName: 'Lévesque', birthDate: addMonths(t0, -7), desiredEntryDate: addMonths(t0, 5), daysOfCare: 0b11111, inSubsidisedCare: false };
    const { id: vip } = await records.createChildFile(t.deps, ctxFor(t, tenant, parent), { ...base, firstName: 'Rosalie', nirec: 'LEVR12345678' });
    const { id: plain } = await records.createChildFile(t.deps, ctxFor(t, tenant, parent), { ...base, firstName: 'Félix', nirec: 'LEVF12345678' });

    // Only an operator or administrator marks, with a reason.
    await expect(markProtected(t.deps, ctxFor(t, tenant, parent), vip, 'moi')).rejects.toMatchObject({ kind: 'forbidden' });
    await expect(markProtected(t.deps, ctxFor(t, tenant, operator), vip, '  ')).rejects.toMatchObject({ kind: 'badRequest' });
    await markProtected(t.deps, ctxFor(t, tenant, operator), vip, 'Enfant d’une personnalité publique');

    // Without a reason: refused, recorded, no alert.
    await expect(records.readChildFileHistory(t.deps, ctxFor(t, tenant, operator), vip)).rejects.toMatchObject({ kind: 'reasonRequired' });
    await expect(records.lookupChildFileByNirec(t.deps, ctxFor(t, tenant, operator), 'LEVR12345678')).rejects.toMatchObject({ kind: 'reasonRequired' });
    const alertsBefore = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('detection_alerts').selectAll().execute());
    expect(alertsBefore).toHaveLength(0);
    const denied = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['action', 'details']).where('outcome', '=', 'denied').where('action', 'like', 'waitlist.%').orderBy('seq').execute());
    expect(denied.map((e) => [e.action, (e.details as { reason: string }).reason])).toEqual([
      ['waitlist.childFile.history', 'protected_reason_required'],
      ['waitlist.childFile.lookupByNirec', 'protected_reason_required'],
    ]);

    // An ordinary file needs none; the family opens its own protected file as always.
    await records.readChildFileHistory(t.deps, ctxFor(t, tenant, operator), plain);
    await records.readChildFile(t.deps, ctxFor(t, tenant, parent), vip, 'parent.childFile.view');

    // With a reason: served, and the alert exists as soon as the read does.
    const versions = await records.readChildFileHistory(t.deps, ctxFor(t, tenant, operator), vip, { reason: 'Plainte reçue au bureau coordonnateur, dossier 2026-114' });
    expect(versions[0]!.firstName).toBe('Rosalie');
    const alerts = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('detection_alerts').selectAll().execute());
    expect(alerts.map((a) => [a.rule_code, a.severity, a.response, a.subject_account_id])).toEqual([['protected_file.open', 'high', 'alert', operatorId]]);
    expect(alerts[0]!.details).toEqual({ files: 1 });
    const cause = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['action', 'outcome', 'details']).where('id', '=', alerts[0]!.event_ids[0]!).executeTakeFirstOrThrow());
    expect(cause).toMatchObject({ action: 'waitlist.childFile.history', outcome: 'success' });
    // The reason is on the opening, where the purge can erase it; the log, kept forever, only counts the files.
    expect(cause.details).toMatchObject({ protectedFiles: 1 });
    expect(JSON.stringify(cause.details)).not.toContain('Plainte reçue');
    const opening = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('protected_file_openings').select(['child_id', 'reason', 'alert_id']).where('audit_event_id', '=', alerts[0]!.event_ids[0]!).execute());
    expect(opening).toEqual([{ child_id: vip, reason: 'Plainte reçue au bureau coordonnateur, dossier 2026-114', alert_id: alerts[0]!.id }]);
    const mail = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('mail_outbox').select(['to_address', 'subject']).where('template', '=', 'security_alert').execute());
    expect(mail).toEqual([{ to_address: 'securite@exemple.test', subject: expect.stringContaining('Ouverture d’un dossier protégé') }]);
    const found = await records.lookupChildFileByNirec(t.deps, ctxFor(t, tenant, operator), 'LEVR12345678', { reason: 'Vérification d’un doublon signalé' });
    expect(found.map((f) => f.id)).toEqual([vip]);

    // The daily review, for security officers only.
    await expect(protectedReview(t.deps, ctxFor(t, tenant, operator), t0)).rejects.toMatchObject({ kind: 'forbidden' });
    const officer = new Client(t.app, tenant.hosts[0]!);
    expect((await officer.signIn('securite@exemple.test', PASSWORD)).status).toBe(303);
    const review = await officer.get('/security/protected');
    expect(review.status).toBe(200);
    const text = textOf(review.body);
    const reference = (await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('children').select('reference').where('id', '=', vip).executeTakeFirstOrThrow())).reference;
    expect(text.split(reference).length - 1).toBeGreaterThanOrEqual(2);
    expect(text).toContain('Plainte reçue au bureau coordonnateur, dossier 2026-114');
    expect(text).toContain('Vérification d’un doublon signalé');
    expect(text).toContain('operation@exemple.test');
    expect(text).not.toContain('Rosalie');
    expect(textOf((await officer.get(`/security/protected?day=${addMonths(t0, -1)}`)).body)).toContain('Aucun dossier protégé n’a été ouvert ce jour-là.');
    expect((await officer.get('/security/protected?day=2026-02-30x')).status).toBe(400);

    // Unmarked, it opens without a reason again.
    await unmarkProtected(t.deps, ctxFor(t, tenant, operator), vip);
    await records.readChildFileHistory(t.deps, ctxFor(t, tenant, operator), vip);
    const events = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select('action').where('action', 'in', ['records.childFile.protect', 'records.childFile.unprotect', 'detection.protected.review']).orderBy('seq').execute());
    expect(events.map((e) => e.action)).toEqual(['records.childFile.protect', 'records.childFile.protect', 'detection.protected.review', 'detection.protected.review', 'detection.protected.review', 'records.childFile.unprotect']);
  });
});
