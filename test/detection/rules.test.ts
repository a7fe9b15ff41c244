/**
 * Detection rules as data, at the service level: what counts, the graded
 * responses, a tenant's own rules, declared batches. The HTTP proof with an
 * intruder is intruder.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { declareBatch, saveRule, DEFAULT_RULES, listRules, MAX_WINDOW_SECONDS } from '../../src/detection/rules.ts';
import { saveWorkingHours, workingHoursOf } from '../../src/detection/hours.ts';
import { counters } from '../../src/counters/counters.ts';
import { purgeHits } from '../../src/detection/counters.ts';
import { AppError } from '../../src/errors.ts';
import { StepUpRequired } from '../../src/identity/stepup.ts';
import * as records from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createParent, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { enrolTotp } from '../helpers/factors.ts';
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

let n = 0;

/** A signed-in actor as a session would carry it: second factor, authenticated at `at`. */
function signedIn(a: Actor, at: Date): Actor {
  return { ...a, mfa: true, auth: { methods: ['password', 'totp'], at, totp: true, passkeys: 0, vouchedPasskeys: 0, vouchedPasskey: false } };
}

async function world() {
  n++;
  const now = new Date();
  t.setNow(now);
  const tenant = await tenantFor(t);
  const adminId = await createAdmin(t, tenant, `admin.${n}@exemple.test`);
  const helperId = await createAccount(t, tenant, `aide.${n}@exemple.test`);
  const officerId = await createAccount(t, tenant, `securite.${n}@exemple.test`);
  await grantRole(t, tenant, officerId, 'security_officer', helperId, adminId);
  const operators: Actor[] = [];
  for (const k of [1, 2]) {
    const id = await createAccount(t, tenant, `operation${k}.${n}@exemple.test`);
    await grantRole(t, tenant, id, 'program_operator', helperId, adminId);
    operators.push(signedIn(await actorOf(t, tenant, id, `operation${k}.${n}@exemple.test`), now));
  }
  const parentEmail = `parent.${n}@exemple.test`;
  const parent = await actorOf(t, tenant, await createParent(t, tenant, parentEmail), parentEmail);
  const t0 = today(now);
  const { id: child } = await records.createChildFile(t.deps, ctxFor(t, tenant, parent), { firstName: 'Noé', lastName: 'Gagnon', birthDate: addMonths(t0, -6), nirec: null, desiredEntryDate: addMonths(t0, 4), daysOfCare: 0b11111, inSubsidisedCare: false });
  return {
    tenant,
    child,
    parent,
    officer: signedIn(await actorOf(t, tenant, officerId, `securite.${n}@exemple.test`), now),
    operator: operators[0]!,
    operator2: operators[1]!,
  };
}

const readAs = (tenant: Tenant, actor: Actor, child: string) => records.readChildFileHistory(t.deps, ctxFor(t, tenant, actor), child);

async function readsUntilRefused(tenant: Tenant, actor: Actor, child: string, max = 40): Promise<{ served: number; error: unknown }> {
  for (let i = 0; i < max; i++) {
    try {
      await readAs(tenant, actor, child);
    } catch (err) {
      return { served: i, error: err };
    }
  }
  return { served: max, error: null };
}

const rows = (tenant: Tenant) =>
  inTenant(database.db, tenant.id, async (trx) => ({
    alerts: await trx.selectFrom('detection_alerts').selectAll().orderBy('created_at').execute(),
    accounts: await trx.selectFrom('accounts').select(['id', 'status']).execute(),
    tenant: await trx.selectFrom('tenants').select(['lockdown_level', 'lockdown_changed_at']).where('id', '=', tenant.id).executeTakeFirstOrThrow(),
    changes: await trx.selectFrom('lockdown_changes').selectAll().execute(),
    hits: await trx.selectFrom('detection_hits').selectAll().execute(),
  }));

describe('files read by staff, counted in shared windows', () => {
  it('an operator opening files is refused at the 21st within five minutes, and suspended; the parent opening her own is not counted', async () => {
    const w = await world();
    for (let i = 0; i < 30; i++) await records.readChildFile(t.deps, ctxFor(t, w.tenant, w.parent), w.child, 'parent.childFile.view');
    const r = await readsUntilRefused(w.tenant, w.operator, w.child);
    expect(r.served).toBe(20);
    expect(r.error).toBeInstanceOf(AppError);
    expect((r.error as AppError).kind).toBe('forbidden');
    const after = await rows(w.tenant);
    expect(after.accounts.find((a) => a.id === w.operator.accountId)?.status).toBe('suspended');
    expect(after.alerts).toHaveLength(1);
    // The served reads, and they alone, are what the windows hold.
    const windows = await inTenant(database.db, w.tenant.id, (trx) => counters().windowTotals(trx, w.tenant.id, w.operator.accountId, 'files_read', [300], t.deps.clock()));
    expect(windows).toEqual([20]);
    if (counters().kind === 'postgres') {
      expect(after.hits.every((h) => h.account_id === w.operator.accountId)).toBe(true);
      expect(after.hits.reduce((s, h) => s + h.weight, 0)).toBe(20);
      // Counts older than the longest window are purged; the others stay.
      const old = new Date(t.deps.clock().getTime() - (MAX_WINDOW_SECONDS + 60) * 1000);
      await inTenant(database.db, w.tenant.id, (trx) => trx.insertInto('detection_hits').values({ tenant_id: w.tenant.id, account_id: w.operator.accountId, signal: 'files_read', weight: 1, at: old }).execute());
      expect(await inTenant(database.db, w.tenant.id, (trx) => purgeHits(trx, t.deps.clock()))).toBe(1);
      expect((await rows(w.tenant)).hits).toHaveLength(20);
    } else {
      expect(after.hits).toHaveLength(0);
    }
    // Once suspended, nothing opens, even an actor resolved before the suspension.
    await expect(readAs(w.tenant, w.operator, w.child)).rejects.toMatchObject({ kind: 'forbidden' });
    const refusals = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('audit_events').select(['details']).where('action', '=', 'waitlist.childFile.history').where('outcome', '=', 'denied').orderBy('seq').execute());
    expect(refusals.map((e) => (e.details as { reason: string }).reason)).toEqual(['detection', 'account_suspended']);
  });

  it('the defaults are the issue’s: 20 in 5 minutes, 50 an hour, 200 a day outside a declared batch; each suspends', async () => {
    expect(DEFAULT_RULES.filter((r) => r.signal === 'files_read').every((r) => r.response === 'suspend')).toBe(true);
    expect(DEFAULT_RULES.filter((r) => r.signal === 'files_read').map((r) => [r.code, r.threshold, r.windowSeconds, r.exceptDeclaredBatch])).toEqual([
      ['files_read.5m', 20, 300, false],
      ['files_read.1h', 50, 3600, false],
      ['files_read.1d', 200, 86400, true],
    ]);
  });
});

describe('rules as data, per tenant', () => {
  it('a tenant’s stricter rule with a step-up response: refused until the person re-authenticates, then the reads go on; another tenant keeps the defaults', async () => {
    const w = await world();
    const other = await world();
    await saveRule(t.deps, ctxFor(t, w.tenant, w.officer), { code: 'files_read.5m', signal: 'files_read', threshold: 3, windowSeconds: 300, response: 'stepup', lockdownLevel: null, exceptDeclaredBatch: false, enabled: true });
    const listed = await listRules(t.deps, ctxFor(t, w.tenant, w.officer));
    expect(listed.find((r) => r.code === 'files_read.5m')).toMatchObject({ threshold: 3, response: 'stepup', custom: true });
    const r = await readsUntilRefused(w.tenant, w.operator, w.child);
    expect(r.served).toBe(3);
    expect(r.error).toBeInstanceOf(StepUpRequired);
    // Still refused while the session has not re-authenticated.
    await expect(readAs(w.tenant, w.operator, w.child)).rejects.toBeInstanceOf(StepUpRequired);
    const after = await rows(w.tenant);
    expect(after.accounts.find((a) => a.id === w.operator.accountId)?.status).toBe('active');
    expect(after.alerts.map((a) => [a.rule_code, a.response, a.severity])).toEqual([['files_read.5m', 'stepup', 'high']]);
    // Re-authenticated a moment later: the reads go on, with no new alert.
    const later = new Date(t.deps.clock().getTime() + 1000);
    t.setNow(later);
    const fresh = signedIn(w.operator, later);
    for (let i = 0; i < 3; i++) await readAs(w.tenant, fresh, w.child);
    expect((await rows(w.tenant)).alerts).toHaveLength(1);
    // The other tenant's operator is held to the defaults.
    t.setNow(new Date(later.getTime() + 1000));
    const o = await readsUntilRefused(other.tenant, other.operator, other.child, 25);
    expect(o.served).toBe(20);
  });

  it('an alert-only rule lets the read through and writes the alert with it', async () => {
    const w = await world();
    await saveRule(t.deps, ctxFor(t, w.tenant, w.officer), { code: 'files_read.watch', signal: 'files_read', threshold: 2, windowSeconds: 600, response: 'alert', lockdownLevel: null, exceptDeclaredBatch: false, enabled: true });
    for (let i = 0; i < 5; i++) await readAs(w.tenant, w.operator, w.child);
    const after = await rows(w.tenant);
    expect(after.alerts.map((a) => [a.rule_code, a.response, a.severity, a.subject_account_id])).toEqual([['files_read.watch', 'alert', 'low', w.operator.accountId]]);
    const ev = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('audit_events').select(['id', 'outcome', 'action']).where('id', '=', after.alerts[0]!.event_ids[0]!).executeTakeFirstOrThrow());
    expect(ev).toMatchObject({ action: 'waitlist.childFile.history', outcome: 'success' });
    expect(after.accounts.find((a) => a.id === w.operator.accountId)?.status).toBe('active');
  });

  it('a rule may raise the tenant’s lockdown level, as detection and not as a person', async () => {
    const w = await world();
    await saveRule(t.deps, ctxFor(t, w.tenant, w.officer), { code: 'files_read.lock', signal: 'files_read', threshold: 1, windowSeconds: 60, response: 'end_sessions', lockdownLevel: 2, exceptDeclaredBatch: false, enabled: true });
    const r = await readsUntilRefused(w.tenant, w.operator, w.child);
    expect(r.served).toBe(1);
    const after = await rows(w.tenant);
    expect(after.tenant.lockdown_level).toBe(2);
    expect(after.changes.map((c) => [c.from_level, c.to_level, c.requested_by, c.status, c.reason])).toEqual([[0, 2, null, 'applied', 'detection:files_read.lock']]);
    expect(after.alerts.map((a) => [a.severity, a.lockdown_level])).toEqual([['critical', 2]]);
  });

  it('a declared batch lifts the daily rule for one account only; the shorter windows still hold', async () => {
    const w = await world();
    await saveRule(t.deps, ctxFor(t, w.tenant, w.officer), { code: 'files_read.1d', signal: 'files_read', threshold: 4, windowSeconds: 86400, response: 'suspend', lockdownLevel: null, exceptDeclaredBatch: true, enabled: true });
    await declareBatch(t.deps, ctxFor(t, w.tenant, w.officer), { accountId: w.operator.accountId, reason: 'Révision annuelle des dossiers inactifs', hours: 2 });
    const withBatch = await readsUntilRefused(w.tenant, w.operator, w.child, 30);
    expect(withBatch.served).toBe(20);
    const without = await readsUntilRefused(w.tenant, w.operator2, w.child, 30);
    expect(without.served).toBe(4);
  });

  it('only a security officer, freshly authenticated, changes rules or declares batches; a bad rule changes nothing', async () => {
    const w = await world();
    const rule = { code: 'files_read.5m', signal: 'files_read', threshold: 1000, windowSeconds: 300, response: 'alert', lockdownLevel: null, exceptDeclaredBatch: false, enabled: true } as const;
    await expect(saveRule(t.deps, ctxFor(t, w.tenant, w.operator), rule)).rejects.toMatchObject({ kind: 'forbidden' });
    await expect(declareBatch(t.deps, ctxFor(t, w.tenant, w.operator), { accountId: w.operator.accountId, reason: 'moi-même', hours: 24 })).rejects.toMatchObject({ kind: 'forbidden' });
    // Not for oneself either, officer or not: in the service and in the database.
    await expect(declareBatch(t.deps, ctxFor(t, w.tenant, w.officer), { accountId: w.officer.accountId, reason: 'Révision de mes propres dossiers', hours: 2 })).rejects.toMatchObject({ kind: 'forbidden' });
    await expect(
      inTenant(database.db, w.tenant.id, (trx) =>
        trx.insertInto('detection_batches').values({ tenant_id: w.tenant.id, account_id: w.officer.accountId, reason: 'x', starts_at: t.deps.clock(), ends_at: new Date(t.deps.clock().getTime() + 3600_000), declared_by: w.officer.accountId, created_at: t.deps.clock() }).execute(),
      ),
    ).rejects.toThrow(/detection_batches_not_self/);
    expect(await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('detection_batches').select('id').execute())).toHaveLength(0);
    const stale = signedIn(w.officer, new Date(t.deps.clock().getTime() - 3600_000));
    await expect(saveRule(t.deps, ctxFor(t, w.tenant, stale), rule)).rejects.toBeInstanceOf(StepUpRequired);
    await expect(saveRule(t.deps, ctxFor(t, w.tenant, w.officer), { ...rule, threshold: -1 })).rejects.toMatchObject({ kind: 'badRequest' });
    await expect(saveRule(t.deps, ctxFor(t, w.tenant, w.officer), { ...rule, response: 'erase' as never })).rejects.toMatchObject({ kind: 'badRequest' });
    const stored = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('detection_rules').selectAll().execute());
    expect(stored).toHaveLength(0);
  });

  it('a security officer reads and changes the tenant’s rules on the console', async () => {
    const w = await world();
    await enrolTotp(t.deps, w.tenant, w.officer.accountId, w.officer.email);
    const c = new Client(t.app, w.tenant.hosts[0]!);
    expect((await c.signIn(w.officer.email, PASSWORD)).status).toBe(303);
    const page = await c.get('/security/rules');
    expect(page.status).toBe(200);
    expect(textOf(page.body)).toContain('Plus de 20 dossiers ouverts en 5 minutes');
    expect(textOf(page.body)).toContain('Activité du personnel en dehors des heures de travail');
    const bad = await c.post('/security/rules', { code: 'files_read.5m', threshold: 'dix', windowSeconds: '300', response: 'suspend', lockdownLevel: '', enabled: 'on' });
    expect(bad.status).toBe(400);
    expect(textOf(bad.body)).toContain('Il y a un problème');
    await c.get('/security/rules');
    expect((await c.post('/security/rules', { code: 'files_read.5m', threshold: '10', windowSeconds: '300', response: 'stepup', lockdownLevel: '', enabled: 'on' })).status).toBe(303);
    expect(textOf((await c.get('/security/rules?saved=1')).body)).toContain('La règle est enregistrée.');
    const rules = await listRules(t.deps, ctxFor(t, w.tenant, w.officer));
    expect(rules.find((r) => r.code === 'files_read.5m')).toMatchObject({ threshold: 10, response: 'stepup', custom: true, enabled: true });
    expect((await readsUntilRefused(w.tenant, w.operator, w.child)).served).toBe(10);

    // Working hours: an end before the start is refused in the reader's language, nothing saved; then saved and audited.
    const badHours = { day1: 'on', day2: 'on', start: '18:00', end: '08:00', timeZone: 'America/Toronto' };
    const fr = await c.post('/security/rules/hours', badHours);
    expect(fr.status).toBe(400);
    expect(textOf(fr.body)).toContain('La fin des heures de travail doit suivre leur début');
    await c.get('/security/rules?lang=en');
    const en = await c.post('/security/rules/hours', { ...badHours, end: '25:00' });
    expect(en.status).toBe(400);
    expect(textOf(en.body)).toContain('Enter a time such as 08:30');
    const tz = await c.post('/security/rules/hours', { ...badHours, end: '20:00', timeZone: 'Mars/Olympus' });
    expect(tz.status).toBe(400);
    expect(textOf(tz.body)).toContain('Enter a time zone, for example America/Toronto');
    const none = await c.post('/security/rules/hours', { start: '08:00', end: '20:00', timeZone: 'America/Toronto' });
    expect(none.status).toBe(400);
    expect(textOf(none.body)).toContain('Tick at least one day');
    expect(await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('detection_working_hours').selectAll().execute())).toHaveLength(0);
    const ok = await c.post('/security/rules/hours', { day2: 'on', day3: 'on', day6: 'on', start: '06:30', end: '22:00', timeZone: 'America/Vancouver' });
    expect(ok.status).toBe(303);
    expect(textOf((await c.get('/security/rules?saved=hours')).body)).toContain('Working hours are saved.');
    expect(await workingHoursOf(t.deps, ctxFor(t, w.tenant, w.officer))).toEqual({ timeZone: 'America/Vancouver', days: [2, 3, 6], startMinute: 390, endMinute: 1320 });
    const audited = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('audit_events').select(['outcome', 'actor_account_id', 'details']).where('action', '=', 'detection.hours.update').orderBy('seq').execute());
    expect(audited).toEqual([{ outcome: 'success', actor_account_id: w.officer.accountId, details: { timeZone: 'America/Vancouver', days: '2,3,6', startMinute: 390, endMinute: 1320 } }]);
  });

  it('only a security officer, freshly authenticated, declares working hours', async () => {
    const w = await world();
    const hours = { timeZone: 'America/Toronto', days: [1, 2, 3, 4, 5], startMinute: 480, endMinute: 1020 };
    await expect(saveWorkingHours(t.deps, ctxFor(t, w.tenant, w.operator), hours)).rejects.toMatchObject({ kind: 'forbidden' });
    await expect(workingHoursOf(t.deps, ctxFor(t, w.tenant, w.operator))).rejects.toMatchObject({ kind: 'forbidden' });
    await expect(saveWorkingHours(t.deps, ctxFor(t, w.tenant, signedIn(w.officer, new Date(t.deps.clock().getTime() - 3600_000))), hours)).rejects.toBeInstanceOf(StepUpRequired);
    await expect(saveWorkingHours(t.deps, ctxFor(t, w.tenant, w.officer), { ...hours, days: [0] })).rejects.toMatchObject({ kind: 'badRequest' });
    expect(await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('detection_working_hours').selectAll().execute())).toHaveLength(0);
    const denied = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('audit_events').select(['outcome']).where('action', '=', 'detection.hours.update').execute());
    expect(denied).toEqual([{ outcome: 'denied' }]);
    await saveWorkingHours(t.deps, ctxFor(t, w.tenant, w.officer), hours);
    expect(await workingHoursOf(t.deps, ctxFor(t, w.tenant, w.officer))).toEqual(hours);
  });
});
