/**
 * The signals beyond files read, and every grade of response as a rule's
 * data sets it: searches by NIREC and exports weighed on the read path (the
 * request that crosses is refused), exports and deletions read from the
 * audit stream (the response applied after the fact), a staff member's new
 * network, break-glass, and the lockdown grade (the tenant's level up by one,
 * never down, audited, e-mailed to the officers).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { DEFAULT_RULES, saveRule, type DetectionRule } from '../../src/detection/rules.ts';
import { DetectionStream, streamSignals, tenantBaseUrl } from '../../src/detection/stream.ts';
import { networkPrefix } from '../../src/identity/sessions.ts';
import { StepUpRequired } from '../../src/identity/stepup.ts';
import { exportIncidents } from '../../src/privacy/incidents.ts';
import * as records from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client } from '../helpers/client.ts';
import { enrolTotp } from '../helpers/factors.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { actorOf, createAccount, grantRole } from '../records/people.ts';

let database: TestDatabase;
let t: TestApp;
const ours = new Set<string>();
let reader: DetectionStream;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
  // Listening starts the sealer; the stream reader follows this file's tenants only.
  await t.app.listen({ port: 0, host: '127.0.0.1' });
  reader = new DetectionStream(t.deps, tenantBaseUrl(t.deps), 100, (id) => ours.has(id));
  reader.start();
});

afterAll(async () => {
  await reader?.stop();
  await t?.close();
  await database?.close();
});

let n = 0;

function signedIn(a: Actor, at: Date): Actor {
  return { ...a, mfa: true, auth: { methods: ['password', 'totp'], at, totp: true, passkeys: 0, vouchedPasskeys: 0, vouchedPasskey: false } };
}

async function world() {
  n++;
  t.setNow(new Date());
  const now = t.deps.clock();
  const tenant = await tenantFor(t);
  // Working hours every day, all day: off-hours alerts (stream.test.ts) stay out of these counts whenever the test runs.
  await inTenant(database.db, tenant.id, (trx) =>
    trx.insertInto('detection_working_hours').values({ tenant_id: tenant.id, time_zone: 'America/Toronto', days: [1, 2, 3, 4, 5, 6, 7], start_minute: 0, end_minute: 1440, updated_at: now, updated_by: null }).execute(),
  );
  ours.add(tenant.id);
  const adminId = await createAdmin(t, tenant, `admin.${n}@exemple.test`);
  const helperId = await createAccount(t, tenant, `aide.${n}@exemple.test`);
  const officerId = await createAccount(t, tenant, `securite.${n}@exemple.test`);
  await grantRole(t, tenant, officerId, 'security_officer', helperId, adminId);
  const operatorEmail = `operation.${n}@exemple.test`;
  const operatorId = await createAccount(t, tenant, operatorEmail);
  await grantRole(t, tenant, operatorId, 'program_operator', helperId, adminId);
  const parentEmail = `parent.${n}@exemple.test`;
  const parent = await actorOf(t, tenant, await createParent(t, tenant, parentEmail), parentEmail);
  const t0 = today(now);
  const files: string[] = [];
  for (const firstName of ['Noé', 'Léa', 'Zoé', 'Éli']) {
    files.push((await records.createChildFile(t.deps, ctxFor(t, tenant, parent), { firstName, lastName: 'Gagnon', birthDate: addMonths(t0, -6), nirec: null, desiredEntryDate: addMonths(t0, 4), daysOfCare: 0b11111, inSubsidisedCare: false })).id);
  }
  return {
    tenant,
    adminId,
    files,
    parent,
    parentEmail,
    officer: signedIn(await actorOf(t, tenant, officerId, `securite.${n}@exemple.test`), now),
    operator: signedIn(await actorOf(t, tenant, operatorId, operatorEmail), now),
    operatorEmail,
  };
}

type World = Awaited<ReturnType<typeof world>>;

const rule = (w: World, r: Partial<DetectionRule> & Pick<DetectionRule, 'code' | 'signal'>) =>
  saveRule(t.deps, ctxFor(t, w.tenant, w.officer), { threshold: 0, windowSeconds: 3600, response: 'alert', lockdownLevel: null, exceptDeclaredBatch: false, enabled: true, ...r });

const state = (tenant: Tenant) =>
  inTenant(database.db, tenant.id, async (trx) => ({
    alerts: await trx.selectFrom('detection_alerts').selectAll().orderBy('created_at').execute(),
    accounts: await trx.selectFrom('accounts').select(['id', 'status']).execute(),
    sessions: await trx.selectFrom('sessions').select(['account_id', 'revoked_at']).execute(),
    level: Number((await trx.selectFrom('tenants').select('lockdown_level').where('id', '=', tenant.id).executeTakeFirstOrThrow()).lockdown_level),
    changes: await trx.selectFrom('lockdown_changes').selectAll().orderBy('requested_at').execute(),
    mail: await trx.selectFrom('mail_outbox').select(['to_address', 'template', 'body_text']).where('template', '=', 'security_alert').execute(),
    raises: await trx.selectFrom('audit_events').select(['actor_roles', 'details']).where('action', '=', 'detection.lockdown.raise').orderBy('seq').execute(),
  }));

/** Waits for what the stream reader writes; generous, since a loaded machine delays the sealer and the reader (stream.test.ts prints the latency). */
async function waitFor<T>(what: string, probe: () => Promise<T | undefined | null | false>): Promise<T> {
  const start = performance.now();
  while (performance.now() - start < 60_000) {
    const v = await probe();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not within 60 s`);
}

/** Signs the account in over HTTP (so that it has a session to end), with its second factor. */
async function session(w: World, accountId: string, email: string, ip = '127.0.0.1'): Promise<Client> {
  await enrolTotp(t.deps, w.tenant, accountId, email).catch(() => {});
  const c = new Client(t.app, w.tenant.hosts[0]!, ip);
  expect((await c.signIn(email, PASSWORD)).status).toBe(303);
  return c;
}

describe('the signals the issue names, each a rule of its own', () => {
  it('the defaults cover exports and their size, searches by name, privilege, break-glass, deletions, a new device or network, off-hours activity', () => {
    const signals = new Set(DEFAULT_RULES.map((r) => r.signal));
    for (const s of ['files_read', 'name_search', 'export', 'export_rows', 'privilege', 'break_glass', 'deletion', 'new_device', 'new_network', 'off_hours'] as const) expect(signals.has(s)).toBe(true);
  });

  it('read from the stream: break-glass is a signal of its own, exports outside the gateway by their rows, an assisted-mode look-up a search, any act of staff off hours', () => {
    const e = (action: string, roles: string[], details: Record<string, unknown> = {}, at = new Date('2026-11-23T15:00:00Z')) => ({ id: 'x', action, outcome: 'success', actor_account_id: 'a', actor_roles: roles, occurred_at: at, details });
    expect(streamSignals(e('identity.breakGlass.start', ['tenant_admin']), true)).toEqual([{ signal: 'break_glass', weight: 1 }]);
    expect(streamSignals(e('identity.grant.approve', ['tenant_admin']), true)).toEqual([{ signal: 'privilege', weight: 1 }]);
    expect(streamSignals(e('privacy.breachReport.create', ['security_officer'], { files: 12 }), true)).toEqual([
      { signal: 'export', weight: 1 },
      { signal: 'export_rows', weight: 12 },
    ]);
    expect(streamSignals(e('audit.export', ['system:cli'], { events: 0 }), false)).toEqual([{ signal: 'export', weight: 1 }]);
    expect(streamSignals(e('assisted.code.request', ['facility_staff']), true)).toEqual([{ signal: 'name_search', weight: 1 }]);
    expect(streamSignals(e('records.family.purge', ['tenant_admin']), true)).toEqual([{ signal: 'deletion', weight: 1 }]);
    // Saturday: any act of a member of staff is off hours; a parent's is not.
    const saturday = new Date('2026-11-21T15:00:00Z');
    expect(streamSignals(e('detection.alert.update', ['security_officer'], {}, saturday), true)).toEqual([{ signal: 'off_hours', weight: 1 }]);
    expect(streamSignals(e('waitlist.childFile.update', ['parent'], {}, saturday), false)).toEqual([]);
    // The gateway weighs its own events: the stream does not count them twice.
    expect(streamSignals(e('privacy.export', ['parent'], { files: 3 }), false)).toEqual([]);
    expect(streamSignals(e('waitlist.childFile.lookupByNirec', ['program_operator']), true)).toEqual([]);
  });

  it('a network is an IPv4 /24 or an IPv6 /48', () => {
    expect(networkPrefix('192.0.2.77')).toBe('192.0.2.0/24');
    expect(networkPrefix('::ffff:198.51.100.9')).toBe('198.51.100.0/24');
    expect(networkPrefix('2001:db8:abcd:12::1')).toBe('2001:db8:abcd::/48');
    expect(networkPrefix('2001:db8::')).toBe('2001:db8:0::/48');
    expect(networkPrefix('not an address')).toBeNull();
    expect(networkPrefix(null)).toBeNull();
  });
});

describe('on the read path: the request that crosses is refused', () => {
  it('searches by NIREC: past the threshold the look-up asks for a new authentication, found or not', async () => {
    const w = await world();
    await rule(w, { code: 'name_search.5m', signal: 'name_search', threshold: 3, windowSeconds: 300, response: 'stepup' });
    const look = (a: Actor) => records.lookupChildFileByNirec(t.deps, ctxFor(t, w.tenant, a), 'ABCD1234EF');
    for (let i = 0; i < 3; i++) expect(await look(w.operator)).toEqual([]);
    await expect(look(w.operator)).rejects.toBeInstanceOf(StepUpRequired);
    const s = await state(w.tenant);
    expect(s.alerts.map((a) => [a.rule_code, a.response, a.subject_account_id])).toEqual([['name_search.5m', 'stepup', w.operator.accountId]]);
    // Re-authenticated, the searches go on.
    const later = new Date(t.deps.clock().getTime() + 1000);
    t.setNow(later);
    expect(await look(signedIn(w.operator, later))).toEqual([]);
  });

  it('exports, by count and by the files they hold: an alert-only size rule lets the export through; a count rule set to suspend refuses the next one, suspends the account and ends its sessions', async () => {
    const w = await world();
    const c = await session(w, w.parent.accountId, w.parentEmail);
    await rule(w, { code: 'export_rows.1h', signal: 'export_rows', threshold: 6, response: 'alert' });
    await rule(w, { code: 'export.1h', signal: 'export', threshold: 2, response: 'suspend' });
    const exp = () => records.readFamilyExport(t.deps, ctxFor(t, w.tenant, w.parent));
    expect((await exp()).children).toHaveLength(4);
    // 8 files exported in the hour: the size rule alerts, the export is served.
    expect((await exp()).children).toHaveLength(4);
    await expect(exp()).rejects.toMatchObject({ kind: 'forbidden' });
    const s = await state(w.tenant);
    expect(s.alerts.map((a) => [a.rule_code, a.response]).sort()).toEqual([
      ['export.1h', 'suspend'],
      ['export_rows.1h', 'alert'],
    ]);
    expect(s.accounts.find((a) => a.id === w.parent.accountId)?.status).toBe('suspended');
    const own = s.sessions.filter((x) => x.account_id === w.parent.accountId);
    expect(own.length).toBeGreaterThan(0);
    expect(own.every((x) => x.revoked_at !== null)).toBe(true);
    expect((await c.get('/account/sessions')).status).not.toBe(200);
  });

  it('the lockdown grade: the account suspended and the tenant raised by one level each time, never lowered, audited and e-mailed to the officers', async () => {
    const w = await world();
    const other = await world();
    await rule(w, { code: 'files_read.5m', signal: 'files_read', threshold: 2, windowSeconds: 300, response: 'lockdown' });
    const read = (a: Actor) => records.readChildFileHistory(t.deps, ctxFor(t, w.tenant, a), w.files[0]!);
    await read(w.operator);
    await read(w.operator);
    await expect(read(w.operator)).rejects.toMatchObject({ kind: 'forbidden' });
    let s = await state(w.tenant);
    expect(s.level).toBe(1);
    expect(s.accounts.find((a) => a.id === w.operator.accountId)?.status).toBe('suspended');
    expect(s.alerts.map((a) => [a.rule_code, a.response, a.severity, a.lockdown_level])).toEqual([['files_read.5m', 'lockdown', 'critical', 1]]);
    expect(s.changes.map((c) => [c.from_level, c.to_level, c.requested_by, c.reason])).toEqual([[0, 1, null, 'detection:files_read.5m']]);
    expect(s.raises.map((e) => [e.actor_roles, (e.details as Record<string, unknown>).to])).toEqual([[['system:detection'], 1]]);
    expect(s.mail.map((m) => m.to_address)).toEqual([w.officer.email]);
    expect(s.mail[0]!.body_text).toContain('verrouillage du programme élevé d’un niveau');
    expect(s.mail[0]!.body_text).toMatch(/Niveau de verrouillage du programme\s*: 1/);
    // A second operator crossing the same rule (re-authenticated after level 1): one level more.
    const id2 = await createAccount(t, w.tenant, `operation2.${n}@exemple.test`);
    await grantRole(t, w.tenant, id2, 'program_operator', w.officer.accountId, w.adminId);
    const later = new Date(t.deps.clock().getTime() + 2000);
    t.setNow(later);
    const op2 = signedIn(await actorOf(t, w.tenant, id2, `operation2.${n}@exemple.test`), later);
    await read(op2);
    await read(op2);
    await expect(read(op2)).rejects.toMatchObject({ kind: 'forbidden' });
    s = await state(w.tenant);
    expect(s.level).toBe(2);
    expect(s.changes.map((c) => [c.from_level, c.to_level])).toEqual([
      [0, 1],
      [1, 2],
    ]);
    // A rule that names a level below the current one does not lower it.
    const again = new Date(later.getTime() + 2000);
    t.setNow(again);
    const id3 = await createAccount(t, w.tenant, `operation3.${n}@exemple.test`);
    await grantRole(t, w.tenant, id3, 'program_operator', w.officer.accountId, w.adminId);
    await rule(w, { code: 'files_read.5m', signal: 'files_read', threshold: 1, windowSeconds: 300, response: 'end_sessions', lockdownLevel: 1 });
    const op3 = signedIn(await actorOf(t, w.tenant, id3, `operation3.${n}@exemple.test`), again);
    await read(op3);
    await expect(read(op3)).rejects.toMatchObject({ kind: 'forbidden' });
    s = await state(w.tenant);
    expect(s.level).toBe(2);
    expect(s.changes).toHaveLength(2);
    expect(s.accounts.find((a) => a.id === id3)?.status).toBe('active');
    // Another tenant is not touched.
    expect((await state(other.tenant)).level).toBe(0);
  });
});

describe('from the audit stream: the response applied once the event is read', () => {
  it('a burst of deletions by staff, with the rule set to suspend: the account is suspended and its sessions ended', async () => {
    const w = await world();
    await session(w, w.operator.accountId, w.operatorEmail);
    await rule(w, { code: 'deletion.burst', signal: 'deletion', threshold: 2, windowSeconds: 600, response: 'suspend' });
    for (const f of w.files.slice(0, 3)) await records.deleteChildFile(t.deps, ctxFor(t, w.tenant, w.operator), f);
    const alert = await waitFor('the deletion.burst alert', async () => (await state(w.tenant)).alerts.find((a) => a.rule_code === 'deletion.burst'));
    expect(alert).toMatchObject({ response: 'suspend', severity: 'critical', subject_account_id: w.operator.accountId });
    const s = await state(w.tenant);
    expect(s.accounts.find((a) => a.id === w.operator.accountId)?.status).toBe('suspended');
    const own = s.sessions.filter((x) => x.account_id === w.operator.accountId);
    expect(own.length).toBeGreaterThan(0);
    expect(own.every((x) => x.revoked_at !== null)).toBe(true);
    // The next request meets the suspension.
    await expect(records.readChildFileHistory(t.deps, ctxFor(t, w.tenant, w.operator), w.files[3]!)).rejects.toMatchObject({ kind: 'forbidden' });
  });

  it('one officer weakening detection is an alert to every officer, and the rule that says so cannot be switched off', async () => {
    const w = await world();
    await rule(w, { code: 'files_read.5m', signal: 'files_read', threshold: 1_000_000, windowSeconds: 300, response: 'alert', enabled: false });
    const alert = await waitFor('the safeguard.change alert', async () => (await state(w.tenant)).alerts.find((a) => a.rule_code === 'safeguard.change'));
    expect(alert).toMatchObject({ signal: 'safeguard', severity: 'high', subject_account_id: w.officer.accountId });
    expect(alert.details).toMatchObject({ action: 'detection.rules.update' });
    await waitFor('the alert by e-mail', async () => (await state(w.tenant)).mail.some((m) => m.body_text.includes(`/security/alerts/${alert.id}`)));
    for (const change of [{ enabled: false }, { threshold: 5 }, { windowSeconds: 86_400 }, { exceptDeclaredBatch: true }]) {
      await expect(rule(w, { code: 'safeguard.change', signal: 'safeguard', windowSeconds: 1, ...change })).rejects.toMatchObject({ kind: 'badRequest' });
    }
    expect(streamSignals({ id: 'x', action: 'oidc.client.secret.rotate', outcome: 'success', actor_account_id: 'a', actor_roles: ['tenant_admin'], occurred_at: new Date('2026-11-23T15:00:00Z'), details: {} }, true)).toEqual([{ signal: 'safeguard', weight: 1 }]);
  });

  it('an export made outside the records gateway (the incident register) counts as an export; set to end sessions, it ends them', async () => {
    const w = await world();
    await session(w, w.officer.accountId, w.officer.email);
    await rule(w, { code: 'export.1h', signal: 'export', threshold: 1, response: 'end_sessions' });
    const ctx = () => ctxFor(t, w.tenant, signedIn(w.officer, t.deps.clock()));
    await exportIncidents(t.deps, ctx(), 'csv');
    await exportIncidents(t.deps, ctx(), 'json');
    const alert = await waitFor('the export.1h alert', async () => (await state(w.tenant)).alerts.find((a) => a.rule_code === 'export.1h'));
    expect(alert).toMatchObject({ response: 'end_sessions', severity: 'high', subject_account_id: w.officer.accountId });
    const s = await state(w.tenant);
    expect(s.sessions.filter((x) => x.account_id === w.officer.accountId).every((x) => x.revoked_at !== null)).toBe(true);
    expect(s.accounts.find((a) => a.id === w.officer.accountId)?.status).toBe('active');
  });

  it('a staff member signing in from a new network is an alert; another address in the same network is not', async () => {
    const w = await world();
    const facility = await createFacility(t, w.tenant);
    const email = `educ.${n}@exemple.test`;
    await createStaff(t, w.tenant, email, facility, w.adminId);
    expect((await new Client(t.app, w.tenant.hosts[0]!, '192.0.2.10').signIn(email, PASSWORD)).status).toBe(303);
    t.setNow(new Date(Date.now() + 31_000));
    expect((await new Client(t.app, w.tenant.hosts[0]!, '198.51.100.20').signIn(email, PASSWORD)).status).toBe(303);
    const alert = await waitFor('the new_network.staff alert', async () => (await state(w.tenant)).alerts.find((a) => a.rule_code === 'new_network.staff'));
    const ev = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('audit_events').select(['action', 'details']).where('id', '=', alert.event_ids[0]!).executeTakeFirstOrThrow());
    expect(ev).toMatchObject({ action: 'identity.network.new', details: { network: '198.51.100.0/24' } });
    // The same network again (another address in it) is not new.
    t.setNow(new Date(Date.now() + 62_000));
    expect((await new Client(t.app, w.tenant.hosts[0]!, '198.51.100.99').signIn(email, PASSWORD)).status).toBe(303);

    await new Promise((r) => setTimeout(r, 800));
    expect((await state(w.tenant)).alerts.filter((a) => a.rule_code === 'new_network.staff')).toHaveLength(1);
  });

  it('a sign-in with a password alone notes its network too: a new one is recorded, the same network again is not', async () => {
    const w = await world();
    const email = `parent.reseau.${n}@exemple.test`;
    const accountId = await createParent(t, w.tenant, email);
    const networkEvents = () => inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('audit_events').select(['details']).where('action', '=', 'identity.network.new').where('actor_account_id', '=', accountId).execute());
    expect((await new Client(t.app, w.tenant.hosts[0]!, '192.0.2.44').signIn(email, PASSWORD)).status).toBe(303);
    expect(await networkEvents()).toHaveLength(0);
    expect((await new Client(t.app, w.tenant.hosts[0]!, '203.0.113.7').signIn(email, PASSWORD)).status).toBe(303);
    expect(await networkEvents()).toEqual([{ details: { network: '203.0.113.0/24' } }]);
    expect((await new Client(t.app, w.tenant.hosts[0]!, '203.0.113.200').signIn(email, PASSWORD)).status).toBe(303);
    expect(await networkEvents()).toHaveLength(1);
    const known = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('known_networks').select('prefix').where('account_id', '=', accountId).orderBy('prefix').execute());
    expect(known.map((k) => k.prefix)).toEqual(['192.0.2.0/24', '203.0.113.0/24']);
  });
});
