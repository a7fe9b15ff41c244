/**
 * The breach impact report, as a drill: an administrator's account reads a
 * known set of files (a history here, a NIREC look-up there, one deletion)
 * inside a window, other people work meanwhile, the same account reads
 * another file before the window. The report must list exactly the drill's
 * files and the fields each access released — none missing, none extra —
 * and notices that name those fields in each family's language. Then the
 * same by session and by address, from a staff member's real signed-in
 * session; then bad input, refusals and the CLI.
 */
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { StepUpRequired } from '../../src/identity/stepup.ts';
import { addressForms, breachReportCsv, BreachReportError, createBreachReport, type BreachInput, type BreachReport } from '../../src/privacy/breach.ts';
import { breachReportCommand } from '../../src/privacy/cli.ts';
import * as records from '../../src/records/gateway.ts';
import { PURPOSE_FIELDS } from '../../src/records/views.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client } from '../helpers/client.ts';
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

const MIN = 60_000;
const CLI = { actorAccountId: null, actorRoles: ['system:cli'], ip: null, userAgent: 'guichet breach-report (test)', requestId: null };
let seq = 0;

interface Family {
  parent: Actor;
  email: string;
  childId: string;
  firstName: string;
  nirec: string;
}

interface Drill {
  tenant: Tenant;
  facility: string;
  families: Family[];
  admin: Actor;
  adminEmail: string;
  officer: Actor;
  staffId: string;
  staffEmail: string;
  from: Date;
  to: Date;
}

/** A security officer signed in with a second factor a moment ago. */
function freshly(a: Actor, at: Date): Actor {
  return { ...a, auth: { methods: ['password', 'totp'], at, totp: true, passkeys: 0, vouchedPasskeys: 0, vouchedPasskey: false } };
}

async function drill(): Promise<Drill> {
  const n = `${Date.now().toString(36)}${(seq++).toString(36)}`;
  const t0 = new Date(Date.now() - 3 * 3600_000);
  t.setNow(t0);
  const tenant = await tenantFor(t);
  const facility = await createFacility(t, tenant, { name: 'CPE Les Lucioles' });
  const names = ['Éloïse', 'Mathis', 'Léa', 'Noah', 'Zoé'];
  const families: Family[] = [];
  for (const [i, firstName] of names.entries()) {
    const email = `parent${i}.${n}@exemple.test`;
    const id = await createParent(t, tenant, email);
    if (i === 1) await inTenant(database.db, tenant.id, (trx) => trx.updateTable('accounts').set({ locale: 'en' }).where('id', '=', id).execute());
    const parent = await actorOf(t, tenant, id, email);
    const nirec = `BR${n.toUpperCase().replace(/[^0-9A-Z]/g, '')}${i}`.slice(0, 20);
    const d0 = today(t0);
    const { id: childId } = await records.createChildFile(t.deps, ctxFor(t, tenant, parent), {
      firstName,
      lastName: 'Tremblay',
      birthDate: addMonths(d0, -10),
      nirec,
      desiredEntryDate: addMonths(d0, 2),
      daysOfCare: 0b11111,
      inSubsidisedCare: false,
    });
    await records.addApplication(t.deps, ctxFor(t, tenant, parent), childId, { facilityId: facility, siblingAttending: false, parentIsStaff: false });
    families.push({ parent, email, childId, firstName, nirec });
  }
  const adminEmail = `admin.${n}@exemple.test`;
  const adminId = await createAdmin(t, tenant, adminEmail);
  const staffEmail = `educ.${n}@exemple.test`;
  const staffId = await createStaff(t, tenant, staffEmail, facility);
  const admin2Id = await createAccount(t, tenant, `admin2.${n}@exemple.test`);
  await grantRole(t, tenant, admin2Id, 'tenant_admin', staffId, adminId);
  const officerEmail = `securite.${n}@exemple.test`;
  const officerId = await createAccount(t, tenant, officerEmail);
  await grantRole(t, tenant, officerId, 'security_officer', admin2Id, adminId);
  const admin = await actorOf(t, tenant, adminId, adminEmail);
  const officer = await actorOf(t, tenant, officerId, officerEmail);
  return { tenant, facility, families, admin, adminEmail, officer, staffId, staffEmail, from: new Date(t0.getTime() + 30 * MIN), to: new Date(t0.getTime() + 90 * MIN) };
}

const at = (d: Drill, minutes: number) => t.setNow(new Date(d.from.getTime() + minutes * MIN));

async function events(tenant: Tenant, action: string) {
  return inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').selectAll().where('action', '=', action).orderBy('seq').execute());
}

/** file id → fields, as the report has them. */
function filesOf(r: BreachReport): Record<string, string[]> {
  return Object.fromEntries(r.persons.flatMap((p) => p.files.map((f) => [f.childId, f.fields])));
}

describe('the report for a drill', () => {
  it('lists exactly the files the actor reached in the window, with exactly the fields each access released, and notices naming them', async () => {
    const d = await drill();
    const [a, b, c, e] = [d.families[0]!, d.families[1]!, d.families[2]!, d.families[4]!];
    // Before the window: the same account reads another family's history (must not appear).
    t.setNow(new Date(d.from.getTime() - 5 * MIN));
    await records.readChildFileHistory(t.deps, ctxFor(t, d.tenant, d.admin), e.childId);
    // Meanwhile the parents read their own files: not the actor's doing.
    at(d, 0);
    for (const f of d.families) await records.readChildFile(t.deps, ctxFor(t, d.tenant, f.parent), f.childId, 'parent.childFile.view');
    // In the window: a history, a NIREC look-up, a deletion, and one refused attempt.
    at(d, 1);
    await records.readChildFileHistory(t.deps, ctxFor(t, d.tenant, d.admin), a.childId);
    at(d, 2);
    expect(await records.lookupChildFileByNirec(t.deps, ctxFor(t, d.tenant, d.admin), b.nirec)).toHaveLength(1);
    at(d, 3);
    await records.deleteChildFile(t.deps, ctxFor(t, d.tenant, d.admin), c.childId);
    at(d, 4);
    await expect(records.readChildFileHistory(t.deps, ctxFor(t, d.tenant, d.admin), 'not-a-file')).rejects.toMatchObject({ kind: 'notFound' });
    // After the window: another read by the actor (must not appear).
    t.setNow(new Date(d.to.getTime() + MIN));
    await records.readChildFileHistory(t.deps, ctxFor(t, d.tenant, d.admin), d.families[3]!.childId);

    t.setNow(new Date(d.to.getTime() + 10 * MIN));
    const input: BreachInput = { selector: { kind: 'actor', value: d.adminEmail }, from: d.from.toISOString(), to: d.to.toISOString() };
    const r = await createBreachReport(t.deps, { kind: 'cli', tenant: d.tenant, origin: CLI, now: t.deps.clock() }, input);

    expect(filesOf(r)).toEqual({
      [a.childId]: [...PURPOSE_FIELDS['operator.childFile.history']].sort(),
      [b.childId]: [...PURPOSE_FIELDS['operator.childFile.lookup']].sort(),
      [c.childId]: ['deleted_at'],
    });
    expect(r.persons.map((p) => p.email).sort()).toEqual([a.email, b.email, c.email].sort());
    expect(r.persons.every((p) => p.familyAccesses.length === 0)).toBe(true);
    const kinds = Object.fromEntries(r.persons.flatMap((p) => p.files.map((f) => [f.childId, f.kinds])));
    expect(kinds).toEqual({ [a.childId]: ['read'], [b.childId]: ['read'], [c.childId]: ['deleted'] });
    for (const p of r.persons) for (const f of p.files) for (const x of f.accesses) expect(x.fieldsFrom).toBe('event');
    expect(r.totals).toEqual({ families: 3, files: 3, read: 2, exported: 0, changed: 0, deleted: 1 });
    expect(r.events).toBe(4);
    expect(r.refused).toBe(1);
    expect(r.unsealed).toBe(0);
    expect(r.verification.treeSize).toBeGreaterThan(0);

    // One notice per family, in French then in English whatever the account's language, naming the file and each field released.
    expect(r.notices.map((n) => n.to).sort()).toEqual([a.email, b.email, c.email].sort());
    const noticeA = r.notices.find((n) => n.to === a.email)!;
    expect(noticeA.locale).toBe('fr');
    expect(noticeA.subject).toContain('Avis d’incident de confidentialité');
    expect(noticeA.body).toContain(`Dossier de ${a.firstName} (référence`);
    for (const label of ['date de naissance', 'NIREC masqué (trois derniers caractères)', 'date d’entrée souhaitée', 'jours de garde souhaités', 'nature de la modification']) expect(noticeA.body).toContain(label);
    expect(noticeA.body).toContain('consulté');
    expect(noticeA.body).not.toContain(b.firstName);
    const noticeB = r.notices.find((n) => n.to === b.email)!;
    expect(noticeB.locale).toBe('en');
    expect(noticeB.subject).toContain('Notice of a confidentiality incident');
    expect(noticeB.body).toContain(`${b.firstName}’s file (reference`);
    for (const n of [noticeA, noticeB]) {
      expect(n.subject.indexOf('Avis d’incident')).toBe(0);
      expect(n.body.indexOf('English version')).toBeGreaterThan(n.body.indexOf('Bonjour'));
    }
    expect(noticeA.body).toContain(`${a.firstName}’s file (reference`);
    expect(noticeB.body).toContain(`Dossier de ${b.firstName} (référence`);
    for (const label of ['date of birth', 'masked NIREC (last three characters)', 'deletion date', 'file status']) expect(noticeB.body).toContain(label);
    expect(noticeB.body).not.toContain('days of care wanted'); // the look-up does not release them
    const noticeC = r.notices.find((n) => n.to === c.email)!;
    expect(noticeC.body).toContain('supprimé');
    expect(noticeC.body).toContain('date de suppression');
    expect(noticeC.body).not.toMatch(/date de naissance|NIREC/);
    // No notice carries a NIREC, in any form.
    expect(JSON.stringify(r)).not.toContain(b.nirec);

    // The Commission's summary, in both languages, with the counts.
    expect(r.commission.fr).toContain('Commission d’accès à l’information du Québec');
    expect(r.commission.fr).toContain('Personnes concernées (familles)\u202f: 3');
    expect(r.commission.fr).toContain('supprimés\u202f: 1');
    expect(r.commission.en).toContain('Persons concerned (families): 3');

    // The CSV: one line per access, no more.
    const csv = breachReportCsv(r).trim().split('\r\n');
    expect(csv).toHaveLength(1 + 3);

    // The report is in the log, and so is its read of the families' first names.
    const made = await events(d.tenant, 'privacy.breachReport.create');
    expect(made.at(-1)).toMatchObject({ outcome: 'success', actor_roles: ['system:cli'] });
    expect([...made.at(-1)!.family_ids].sort()).toEqual(r.persons.map((p) => p.familyId).sort());
    const read = await events(d.tenant, 'privacy.breach.recipients');
    expect(read.at(-1)).toMatchObject({ outcome: 'success', purpose: 'security.breach.notice', fields: ['account_email', 'account_locale', 'reference', 'first_name'] });
  });

  it('by session and by address: what one signed-in session did, from its own events', async () => {
    const d = await drill();
    at(d, 5);
    const staff = new Client(t.app, d.tenant.hosts[0]!, '203.0.113.77');
    expect((await staff.signIn(d.staffEmail, PASSWORD)).status).toBe(303);
    expect((await staff.get(`/staff/facilities/${d.facility}/candidates`)).status).toBe(200);
    const session = await inTenant(database.db, d.tenant.id, (trx) => trx.selectFrom('sessions').select('id').where('account_id', '=', d.staffId).orderBy('created_at', 'desc').executeTakeFirstOrThrow());
    t.setNow(new Date(d.to.getTime() + 10 * MIN));
    const base = { kind: 'cli' as const, tenant: d.tenant, origin: CLI, now: t.deps.clock() };
    const everyone = d.families.map((f) => f.childId).sort();
    const fields = [...PURPOSE_FIELDS['facility.candidates']].sort();
    for (const selector of [
      { kind: 'session' as const, value: session.id },
      { kind: 'ip' as const, value: '203.0.113.77' },
    ]) {
      const r = await createBreachReport(t.deps, base, { selector, from: d.from.toISOString(), to: d.to.toISOString() });
      expect(Object.keys(filesOf(r)).sort()).toEqual(everyone);
      for (const f of Object.values(filesOf(r))) expect(f).toEqual(fields);
      expect(r.notices).toHaveLength(5);
      expect(r.notices.find((n) => n.to === d.families[0]!.email)!.body).toContain('groupe d’âge');
    }
    // Another session of nobody: refused as unknown.
    await expect(createBreachReport(t.deps, base, { selector: { kind: 'session', value: '00000000-0000-4000-8000-000000000000' }, from: d.from.toISOString(), to: d.to.toISOString() })).rejects.toMatchObject({ code: 'unknown_session' });
  });

  it('the console path: a security officer with a fresh authentication gets the same report', async () => {
    const d = await drill();
    at(d, 1);
    await records.readChildFileHistory(t.deps, ctxFor(t, d.tenant, d.admin), d.families[3]!.childId);
    t.setNow(new Date(d.to.getTime() + 10 * MIN));
    const officer = freshly(d.officer, t.deps.clock());
    const r = await createBreachReport(t.deps, { kind: 'web', ctx: ctxFor(t, d.tenant, officer) }, { selector: { kind: 'actor', value: d.admin.accountId }, from: d.from.toISOString(), to: d.to.toISOString() });
    expect(Object.keys(filesOf(r))).toEqual([d.families[3]!.childId]);
    const made = await events(d.tenant, 'privacy.breachReport.create');
    expect(made.at(-1)).toMatchObject({ outcome: 'success', actor_account_id: d.officer.accountId });
  });
});

describe('an address, whatever form it was typed in', () => {
  it('matches the forms the server writes', () => {
    expect(addressForms('203.0.113.77')).toEqual(['203.0.113.77', '::ffff:203.0.113.77']);
    expect(addressForms('::FFFF:203.0.113.77')).toEqual(['203.0.113.77', '::ffff:203.0.113.77']);
    expect(addressForms('2001:0DB8:0000:0000:0000:0000:0000:0001')).toContain('2001:db8::1');
    expect(addressForms('2001:db8::1')).toEqual(['2001:db8::1']);
  });
});

describe('bad input and refusals: a clear error, nothing produced, the attempt logged', () => {
  it('from after to, an unknown actor, a bad address, no selector, a malformed date', async () => {
    const d = await drill();
    t.setNow(new Date(d.to.getTime() + 10 * MIN));
    const who = { kind: 'cli' as const, tenant: d.tenant, origin: CLI, now: t.deps.clock() };
    const cases: [BreachInput, string][] = [
      [{ selector: { kind: 'actor', value: d.adminEmail }, from: d.to.toISOString(), to: d.from.toISOString() }, 'window_order'],
      [{ selector: { kind: 'actor', value: d.adminEmail }, from: d.from.toISOString(), to: d.from.toISOString() }, 'window_order'],
      [{ selector: { kind: 'actor', value: 'nobody@exemple.test' }, from: d.from.toISOString(), to: d.to.toISOString() }, 'unknown_actor'],
      [{ selector: { kind: 'actor', value: '00000000-0000-4000-8000-000000000000' }, from: d.from.toISOString(), to: d.to.toISOString() }, 'unknown_actor'],
      [{ selector: { kind: 'ip', value: '999.1.1.1' }, from: d.from.toISOString(), to: d.to.toISOString() }, 'bad_ip'],
      [{ selector: { kind: 'actor', value: d.adminEmail }, from: '15/05/2026', to: d.to.toISOString() }, 'window_invalid'],
      [{ selector: undefined as never, from: d.from.toISOString(), to: d.to.toISOString() }, 'selector_missing'],
    ];
    for (const [input, code] of cases) {
      const err = await createBreachReport(t.deps, who, input).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BreachReportError);
      expect((err as BreachReportError).code).toBe(code);
      expect((err as Error).message.length).toBeGreaterThan(10);
    }
    const logged = await events(d.tenant, 'privacy.breachReport.create');
    expect(logged.map((e) => [e.outcome, (e.details as { reason?: string }).reason])).toEqual(cases.map(([, code]) => ['failure', code]));
    // What was typed is not in the log, which nothing can erase: the kind of selector and the window only.
    const kept = JSON.stringify(logged.map((e) => e.details));
    for (const typed of [d.adminEmail, 'nobody@exemple.test', '999.1.1.1', '15/05/2026']) expect(kept).not.toContain(typed);
    expect(logged[2]!.details).toMatchObject({ selector: 'actor', from: d.from.toISOString(), to: d.to.toISOString() });
    expect(logged[5]!.details).toMatchObject({ from: 'invalid' });
    // Nothing was produced: no read of any family for notices.
    expect(await events(d.tenant, 'privacy.breach.recipients')).toEqual([]);
  });

  it('without the security officer role, or without a fresh authentication: refused and logged', async () => {
    const d = await drill();
    t.setNow(new Date(d.to.getTime() + 10 * MIN));
    const now = t.deps.clock();
    const input: BreachInput = { selector: { kind: 'actor', value: d.adminEmail }, from: d.from.toISOString(), to: d.to.toISOString() };
    for (const who of [freshly(d.admin, now), freshly(d.families[0]!.parent, now)]) {
      await expect(createBreachReport(t.deps, { kind: 'web', ctx: ctxFor(t, d.tenant, who) }, input)).rejects.toMatchObject({ code: 'forbidden' });
    }
    await expect(createBreachReport(t.deps, { kind: 'web', ctx: ctxFor(t, d.tenant, null) }, input)).rejects.toMatchObject({ code: 'forbidden' });
    // An officer whose last authentication is six minutes old.
    await expect(createBreachReport(t.deps, { kind: 'web', ctx: ctxFor(t, d.tenant, freshly(d.officer, new Date(now.getTime() - 6 * MIN))) }, input)).rejects.toBeInstanceOf(StepUpRequired);
    const logged = await events(d.tenant, 'privacy.breachReport.create');
    expect(logged.map((e) => [e.outcome, (e.details as { reason?: string }).reason, e.actor_account_id])).toEqual([
      ['denied', 'forbidden', d.admin.accountId],
      ['denied', 'forbidden', d.families[0]!.parent.accountId],
      ['denied', 'forbidden', null],
      ['denied', 'step_up_required', d.officer.accountId],
    ]);
    expect(await events(d.tenant, 'privacy.breach.recipients')).toEqual([]);
  });
});

describe('a rewritten log', () => {
  it('an intruder who erased the fields of their reads gets no report out of it: verification fails first, nothing is produced, the attempt is logged', async () => {
    const d = await drill();
    at(d, 1);
    await records.readChildFileHistory(t.deps, ctxFor(t, d.tenant, d.admin), d.families[0]!.childId);
    t.setNow(new Date(d.to.getTime() + 10 * MIN));
    const who = { kind: 'cli' as const, tenant: d.tenant, origin: CLI, now: t.deps.clock() };
    const input: BreachInput = { selector: { kind: 'actor', value: d.adminEmail }, from: d.from.toISOString(), to: d.to.toISOString() };
    // Sealed into a signed head by a first report.
    expect(Object.keys(filesOf(await createBreachReport(t.deps, who, input)))).toEqual([d.families[0]!.childId]);
    const [read] = await events(d.tenant, 'waitlist.childFile.history');
    await database.ownerDb().transaction().execute(async (trx) => {
      await sql`ALTER TABLE audit_events DISABLE TRIGGER USER`.execute(trx);
      await sql`UPDATE audit_events SET fields = '{}', family_ids = '{}' WHERE id = ${read!.id}`.execute(trx);
      await sql`ALTER TABLE audit_events ENABLE TRIGGER USER`.execute(trx);
    });
    const err = await createBreachReport(t.deps, who, input).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BreachReportError);
    expect((err as BreachReportError).code).toBe('log_unverified');
    expect((err as Error).message).toMatch(/does not verify against its signed heads/);
    const logged = await events(d.tenant, 'privacy.breachReport.create');
    expect(logged.at(-1)).toMatchObject({ outcome: 'failure', details: expect.objectContaining({ reason: 'log_unverified' }) });
    expect(await events(d.tenant, 'privacy.breach.recipients')).toHaveLength(1);
  });
});

describe('guichet breach-report', () => {
  async function run(d: Drill, args: string[]) {
    let out = '';
    let err = '';
    class Usage extends Error {}
    try {
      const code = await breachReportCommand(args, {
        config: t.deps.config,
        withDatabase: (fn) => fn(database.db, database.kind),
        tenant: async () => d.tenant,
        origin: () => CLI,
        usage: (m) => new Usage(m),
        out: (s) => (out += s),
        err: (s) => (err += s),
        keys: t.deps.keys,
      });
      return { code, out, err };
    } catch (e) {
      if (e instanceof Usage) return { code: 2, out, err: e.message };
      throw e;
    }
  }

  it('writes JSON or CSV, and the notices and summary to a directory; refuses bad arguments with exit 2', async () => {
    const d = await drill();
    at(d, 1);
    await records.readChildFileHistory(t.deps, ctxFor(t, d.tenant, d.admin), d.families[2]!.childId);
    t.setNow(new Date(d.to.getTime() + 10 * MIN));
    const window = ['--from', d.from.toISOString(), '--to', d.to.toISOString()];
    const dir = mkdtempSync(join(tmpdir(), 'guichet-breach-'));
    const json = await run(d, ['--tenant', d.tenant.slug, '--actor', d.adminEmail, ...window, '--notices', dir]);
    expect(json.code).toBe(0);
    const report = JSON.parse(json.out) as BreachReport;
    expect(Object.keys(filesOf(report))).toEqual([d.families[2]!.childId]);
    expect(json.err).toMatch(/1 families, 1 files/);
    expect(readdirSync(dir).sort()).toEqual(['commission-en.txt', 'commission-fr.txt', `notice-${report.persons[0]!.familyId}-fr.txt`]);
    expect(readFileSync(join(dir, `notice-${report.persons[0]!.familyId}-fr.txt`), 'utf8')).toContain(`To: ${d.families[2]!.email}`);
    const csv = await run(d, ['--tenant', d.tenant.slug, '--actor', d.adminEmail, ...window, '--format', 'csv']);
    expect(csv.code).toBe(0);
    expect(csv.out.split('\r\n')[0]).toBe('family_id,account_email,locale,child_id,reference,occurred_at,action,kind,purpose,fields,fields_from,event_id,leaf_index');
    expect(csv.out.trim().split('\r\n')).toHaveLength(2);

    const bad = await run(d, ['--tenant', d.tenant.slug, '--actor', d.adminEmail, '--from', d.to.toISOString(), '--to', d.from.toISOString()]);
    expect(bad).toMatchObject({ code: 2, out: '' });
    expect(bad.err).toMatch(/--from .* must be before --to/);
    const unknown = await run(d, ['--tenant', d.tenant.slug, '--actor', 'personne@exemple.test', ...window]);
    expect(unknown).toMatchObject({ code: 2, out: '' });
    expect(unknown.err).toMatch(/no account "personne@exemple.test"/);
    expect((await run(d, ['--tenant', d.tenant.slug, '--actor', 'x', '--ip', '1.2.3.4', ...window])).err).toMatch(/not --actor and --ip/);
    expect((await run(d, ['--tenant', d.tenant.slug, '--actor', 'x', ...window, '--format', 'xml'])).err).toMatch(/--format: json or csv/);
    expect((await run(d, ['--tenant', d.tenant.slug, '--bogus'])).err).toMatch(/Unknown option/);
  });
});
