/**
 * Lockdown per tenant: levels 1 to 4, raised by one security officer and
 * lowered by two, and another tenant never affected.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { decideLockdownLower, raiseLockdown, requestLockdownLower } from '../../src/detection/lockdown.ts';
import { StepUpRequired } from '../../src/identity/stepup.ts';
import * as records from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, recordMessages, type TestDatabase } from '../helpers/db.ts';
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

let n = 0;

function signedIn(a: Actor, at: Date): Actor {
  return { ...a, mfa: true, auth: { methods: ['password', 'totp'], at, totp: true, passkeys: 0, vouchedPasskeys: 0, vouchedPasskey: false } };
}

function childForm() {
  const t0 = today(new Date());
  const nirec = String(Math.floor(Math.random() * 1e10)).padStart(10, '1');
  return { firstName: 'Éloïse', lastName: 'Gagnon-Côté', birthDate: addMonths(t0, -8), nirec, desiredEntryDate: addMonths(t0, 3), day_mon: 'on', day_wed: 'on' };
}

/** A tenant with a facility, two security officers, a member of staff, a parent with a registered child. */
async function world() {
  n++;
  const now = new Date();
  t.setNow(now);
  const tenant = await tenantFor(t);
  const facility = await createFacility(t, tenant, { name: 'CPE Les Hirondelles' });
  const adminId = await createAdmin(t, tenant, `admin.${n}@exemple.test`);
  const helperId = await createAccount(t, tenant, `aide.${n}@exemple.test`);
  const officers: Actor[] = [];
  const officerEmails: string[] = [];
  for (const k of [1, 2]) {
    const email = `securite${k}.${n}@exemple.test`;
    const id = await createAccount(t, tenant, email);
    await grantRole(t, tenant, id, 'security_officer', helperId, adminId);
    await enrolTotp(t.deps, tenant, id, email);
    officers.push(signedIn(await actorOf(t, tenant, id, email), now));
    officerEmails.push(email);
  }
  const staffEmail = `educ.${n}@exemple.test`;
  await createStaff(t, tenant, staffEmail, facility, adminId);
  const parentEmail = `parent.${n}@exemple.test`;
  const parent = await actorOf(t, tenant, await createParent(t, tenant, parentEmail), parentEmail);
  const t0 = today(now);
  const { id: child } = await records.createChildFile(t.deps, ctxFor(t, tenant, parent), { firstName: 'Noé', lastName: 'Gagnon', birthDate: addMonths(t0, -6), nirec: null, desiredEntryDate: addMonths(t0, 4), daysOfCare: 0b11111, inSubsidisedCare: false });
  await records.addApplication(t.deps, ctxFor(t, tenant, parent), child, { facilityId: facility, siblingAttending: false, parentIsStaff: false });
  return { tenant, facility, officers, officerEmails, staffEmail, parent, parentEmail, child };
}

const level = (tenant: Tenant) => inTenant(database.db, tenant.id, (trx) => trx.selectFrom('tenants').select('lockdown_level').where('id', '=', tenant.id).executeTakeFirstOrThrow()).then((r) => Number(r.lockdown_level));

/** A tenant's whole journey over HTTP: a parent registers a child with a facility, staff see the candidate, the directory answers. */
async function journey(w: Awaited<ReturnType<typeof world>>): Promise<void> {
  const host = w.tenant.hosts[0]!;
  const parent = new Client(t.app, host);
  expect((await parent.signIn(w.parentEmail, PASSWORD)).status).toBe(303);
  expect((await parent.get('/account')).status).toBe(200);
  expect((await parent.get(`/children/${w.child}`)).status).toBe(200);
  await parent.get('/children/new');
  const created = await parent.post('/children/new', childForm());
  expect(created.status, textOf(created.body).slice(0, 600)).toBe(303);
  const childId = /\/children\/([0-9a-f-]{36})/.exec(String(created.headers.location))![1]!;
  await parent.get(`/directory/${w.facility}`);
  expect((await parent.post('/applications', { childId, facilityId: w.facility })).status).toBe(303);
  const staff = new Client(t.app, host);
  expect((await staff.signIn(w.staffEmail, PASSWORD)).status).toBe(303);
  const list = await staff.get(`/staff/facilities/${w.facility}/candidates`);
  expect(list.status).toBe(200);
  expect((textOf(list.body).match(/E-[0-9A-Z]{8}/g) ?? []).length).toBe(2);
  expect((await new Client(t.app, host).get('/directory')).status).toBe(200);
}

describe('raising and lowering a tenant’s lockdown', () => {
  it('one officer raises at once; lowering waits for a second, different officer', async () => {
    const w = await world();
    const [a, b] = w.officers as [Actor, Actor];
    await raiseLockdown(t.deps, ctxFor(t, w.tenant, a), 2, 'Lecture massive suspecte');
    expect(await level(w.tenant)).toBe(2);
    await expect(raiseLockdown(t.deps, ctxFor(t, w.tenant, a), 1, 'plus bas')).rejects.toMatchObject({ kind: 'badRequest' });
    const id = await requestLockdownLower(t.deps, ctxFor(t, w.tenant, a), 0, 'Compte suspendu, accès vérifiés');
    expect(await level(w.tenant)).toBe(2);
    // The one who asked cannot approve.
    await expect(decideLockdownLower(t.deps, ctxFor(t, w.tenant, a), id, 'approve')).rejects.toMatchObject({ kind: 'forbidden' });
    expect(await level(w.tenant)).toBe(2);
    // Neither can the database be made to record it.
    await expect(
      inTenant(database.db, w.tenant.id, (trx) => trx.updateTable('lockdown_changes').set({ status: 'applied', decided_by: a.accountId, decided_at: new Date() }).where('id', '=', id).execute()),
    ).rejects.toThrow();
    await decideLockdownLower(t.deps, ctxFor(t, w.tenant, b), id, 'approve');
    expect(await level(w.tenant)).toBe(0);
    // Decided is final.
    await expect(decideLockdownLower(t.deps, ctxFor(t, w.tenant, b), id, 'approve')).rejects.toMatchObject({ kind: 'notFound' });
    const events = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('audit_events').select(['action', 'outcome']).where('action', 'like', 'detection.lockdown.%').orderBy('seq').execute());
    expect(events.map((e) => `${e.action}:${e.outcome}`)).toEqual([
      'detection.lockdown.raise:success',
      'detection.lockdown.lower.request:success',
      'detection.lockdown.lower.approve:denied',
      'detection.lockdown.lower.approve:success',
      'detection.lockdown.lower.approve:denied',
    ]);
  });

  it('only a security officer, freshly authenticated, changes the level', async () => {
    const w = await world();
    const staff = signedIn(await actorOf(t, w.tenant, (await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('accounts').select('id').where('email', '=', w.staffEmail).executeTakeFirstOrThrow())).id, w.staffEmail), new Date());
    await expect(raiseLockdown(t.deps, ctxFor(t, w.tenant, staff), 4, 'non')).rejects.toMatchObject({ kind: 'forbidden' });
    await expect(raiseLockdown(t.deps, ctxFor(t, w.tenant, w.parent), 4, 'non')).rejects.toMatchObject({ kind: 'forbidden' });
    const stale = signedIn(w.officers[0]!, new Date(Date.now() - 3600_000));
    await expect(raiseLockdown(t.deps, ctxFor(t, w.tenant, stale), 4, 'raison')).rejects.toBeInstanceOf(StepUpRequired);
    await expect(raiseLockdown(t.deps, ctxFor(t, w.tenant, w.officers[0]!), 4, '')).rejects.toMatchObject({ kind: 'badRequest' });
    expect(await level(w.tenant)).toBe(0);
  });
});

describe('what each level closes, in one tenant only', () => {
  it('level 3 closes personal data in one tenant while another tenant’s whole journey passes; the locked tenant’s public pages still answer', async () => {
    const locked = await world();
    const other = await world();
    // An officer raises the level through the console.
    const officer = new Client(t.app, locked.tenant.hosts[0]!);
    expect((await officer.signIn(locked.officerEmails[0]!, PASSWORD)).status).toBe(303);
    const page = await officer.get('/security/lockdown');
    expect(page.status).toBe(200);
    expect(textOf(page.body)).toContain('Niveau de verrouillage');
    const bad = await officer.post('/security/lockdown/raise', { level: '3', reason: '' });
    expect(bad.status).toBe(400);
    expect(textOf(bad.body)).toContain('Expliquez la raison');
    // A confirmation page names the consequence first; nothing changes until it is confirmed.
    const confirm = await officer.post('/security/lockdown/raise', { level: '3', reason: 'Fuite soupçonnée' });
    expect(confirm.status).toBe(200);
    expect(textOf(confirm.body)).toContain('Élever le verrouillage au niveau 3 ?');
    expect(textOf(confirm.body)).toContain('Le niveau passera de 0 à 3 dès maintenant');
    expect(await level(locked.tenant)).toBe(0);
    expect((await officer.post('/security/lockdown/raise', { level: '3', reason: 'Fuite soupçonnée', confirm: 'yes' })).status).toBe(303);
    expect(await level(locked.tenant)).toBe(3);

    await journey(other);

    const host = locked.tenant.hosts[0]!;
    const parent = new Client(t.app, host);
    expect((await parent.signIn(locked.parentEmail, PASSWORD)).status).toBe(303);
    const file = await parent.get(`/children/${locked.child}`);
    expect(file.status).toBe(503);
    expect(textOf(file.body)).toContain('l’accès aux dossiers personnels est suspendu');
    expect((await parent.get('/account')).status).toBe(503);
    expect((await parent.get(`/directory/${locked.facility}`)).status).toBe(200);
    const staff = new Client(t.app, host);
    expect((await staff.signIn(locked.staffEmail, PASSWORD)).status).toBe(303);
    expect((await staff.get(`/staff/facilities/${locked.facility}/candidates`)).status).toBe(503);
    const anonymous = new Client(t.app, host);
    expect((await anonymous.get('/')).status).toBe(200);
    expect((await anonymous.get('/directory')).status).toBe(200);
    expect((await anonymous.get(`/directory/${locked.facility}`)).status).toBe(200);
    expect(await level(other.tenant)).toBe(0);
  });

  it('the guard travels with the statement it guards, and refuses before that statement runs (the read refused, the refusal audited)', async () => {
    const w = await world();
    // Its own connections (on PostgreSQL): the guard's PREPARE is then among the messages recorded.
    const own = await createTestDatabase();
    const deps = { ...t.deps, db: own };
    const read = () => records.readChildFile(deps, ctxFor(t, w.tenant, w.parent), w.child, 'parent.childFile.view');
    const sent: string[] = [];
    const stopRecording = recordMessages(sent);
    try {
      expect((await read()).id).toBe(w.child);
      await inTenant(database.db, w.tenant.id, (trx) => trx.updateTable('tenants').set({ lockdown_level: 3, lockdown_changed_at: new Date() }).where('id', '=', w.tenant.id).execute());
      await expect(read()).rejects.toMatchObject({ kind: 'closed' });
    } finally {
      stopRecording();
      await own.close();
    }
    if (database.kind === 'postgres') {
      // One message: BEGIN, the tenant's settings, the guard and the child's read — never the guard in a round trip of
      // its own (once a connection has prepared it, the guard is sent as EXECUTE of that statement).
      const name = /prepare (guichet_\d+) as select records_guard\(/i.exec(sent.find((m) => /prepare \S+ as select records_guard\(/i.test(m)) ?? '')?.[1];
      expect(name).toBeDefined();
      const guard = `execute ${name}(`;
      const guarded = sent.filter((m) => m.includes(guard));
      expect(guarded).toHaveLength(2);
      for (const m of guarded) expect(m.startsWith('begin; ') && /; (execute guichet_\d+|select)/i.test(m.slice(m.indexOf(guard)))).toBe(true);
    }
    const refused = await inTenant(database.db, w.tenant.id, (trx) =>
      trx.selectFrom('audit_events').select(['outcome', 'details']).where('action', '=', 'waitlist.childFile.read').where('actor_account_id', '=', w.parent.accountId).orderBy('occurred_at', 'desc').orderBy('seq', 'desc').execute(),
    );
    expect(refused[0]).toMatchObject({ outcome: 'denied', details: expect.objectContaining({ reason: 'lockdown_closed' }) });
    expect(refused.filter((e) => e.outcome === 'success')).toHaveLength(1);
  });

  it('level 2: staff read, but do not change; parents are not affected', async () => {
    const w = await world();
    await raiseLockdown(t.deps, ctxFor(t, w.tenant, w.officers[0]!), 2, 'Surveillance');
    const staff = new Client(t.app, w.tenant.hosts[0]!);
    expect((await staff.signIn(w.staffEmail, PASSWORD)).status).toBe(303);
    expect((await staff.get(`/staff/facilities/${w.facility}/candidates`)).status).toBe(200);
    // A member of staff's own family is refused changes (the file a staff account would write is its own).
    const parent = new Client(t.app, w.tenant.hosts[0]!);
    expect((await parent.signIn(w.parentEmail, PASSWORD)).status).toBe(303);
    await parent.get('/children/new');
    expect((await parent.post('/children/new', childForm())).status).toBe(303);
    await staff.get('/children/new');
    const write = await staff.post('/children/new', childForm());
    expect(write.status).toBe(403);
    expect(textOf(write.body)).toContain('Consultation seulement');
  });

  it('level 1: staff re-authenticate once after the raise, then work; parents are not asked', async () => {
    const w = await world();
    const staff = new Client(t.app, w.tenant.hosts[0]!);
    expect((await staff.signIn(w.staffEmail, PASSWORD)).status).toBe(303);
    t.setNow(new Date(Date.now() + 1000));
    await raiseLockdown(t.deps, ctxFor(t, w.tenant, signedIn(w.officers[0]!, t.deps.clock())), 1, 'Hameçonnage en cours');
    const r = await staff.get(`/staff/facilities/${w.facility}/candidates`);
    expect(r.status).toBe(303);
    expect(String(r.headers.location)).toMatch(/^\/reauth\?return=/);
    const parent = new Client(t.app, w.tenant.hosts[0]!);
    expect((await parent.signIn(w.parentEmail, PASSWORD)).status).toBe(303);
    expect((await parent.get(`/children/${w.child}`)).status).toBe(200);
    // After signing in again (a fresh authentication, after the raise), the staff member works.
    t.setNow(new Date(t.deps.clock().getTime() + 1000));
    const again = new Client(t.app, w.tenant.hosts[0]!);
    expect((await again.signIn(w.staffEmail, PASSWORD)).status).toBe(303);
    expect((await again.get(`/staff/facilities/${w.facility}/candidates`)).status).toBe(200);
  });

  it('level 4: the maintenance page, except signing in and the security console where officers lower it', async () => {
    const w = await world();
    const other = await world();
    await raiseLockdown(t.deps, ctxFor(t, w.tenant, w.officers[0]!), 4, 'Intrusion confirmée');
    const host = w.tenant.hosts[0]!;
    const anonymous = new Client(t.app, host);
    const home = await anonymous.get('/');
    expect(home.status).toBe(503);
    expect(textOf(home.body)).toContain('Service en maintenance');
    expect((await anonymous.get('/directory')).status).toBe(503);
    expect((await anonymous.get('/signin')).status).toBe(200);
    expect((await new Client(t.app, other.tenant.hosts[0]!).get('/')).status).toBe(200);
    const a = new Client(t.app, host);
    expect((await a.signIn(w.officerEmails[0]!, PASSWORD)).status).toBe(303);
    await a.get('/security/lockdown');
    expect((await a.post('/security/lockdown/lower', { level: '0', reason: 'Rétabli' })).status).toBe(303);
    const b = new Client(t.app, host);
    expect((await b.signIn(w.officerEmails[1]!, PASSWORD)).status).toBe(303);
    const page = await b.get('/security/lockdown');
    const id = /\/security\/lockdown\/changes\/([0-9a-f-]{36})\/approve/.exec(page.body)![1]!;
    expect((await b.post(`/security/lockdown/changes/${id}/approve`)).status).toBe(303);
    expect(await level(w.tenant)).toBe(0);
    expect((await anonymous.get('/')).status).toBe(200);
  });
});
