/**
 * Retention as data per tenant: files past school age (plus the tenant's
 * grace) or without activity for the tenant's months are deleted by the
 * job, then purged a window later; the operator sees what comes next; each
 * deletion, purge and run is in the log; two runs never overlap; a parent's
 * deletion request withdraws everything at once and shows the dates.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { dueDate, nextRunAt, retentionHour, retentionPreview, runRetention } from '../../src/privacy/retention.ts';
import * as records from '../../src/records/gateway.ts';
import { seedDemo } from '../../src/demo/seed.ts';
import { RETENTION_ROWS_SHOWN } from '../../src/privacy/routes.tsx';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createFacility, createParent, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { actorOf } from '../records/people.ts';

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

const DAY = 86_400_000;
const JOB = { actorAccountId: null, actorRoles: ['system:retention'], ip: null, userAgent: 'vitest', requestId: null };
let seq = 0;

async function file(tenant: Tenant, facility: string, parent: Actor, firstName: string, birthDate: string) {
  const d0 = today(t.deps.clock());
  const { id } = await records.createChildFile(t.deps, ctxFor(t, tenant, parent), { firstName, lastName: 'Pelletier', birthDate, nirec: null, desiredEntryDate: addMonths(d0, 1), daysOfCare: 0b11111, inSubsidisedCare: false });
  await records.addApplication(t.deps, ctxFor(t, tenant, parent), id, { facilityId: facility, siblingAttending: false, parentIsStaff: false });
  return id;
}

async function world() {
  const n = `${Date.now().toString(36)}${(seq++).toString(36)}`;
  const now = new Date();
  const tenant = await tenantFor(t, { rules: { deletedFileRetentionDays: 30, retention: { schoolAgeYears: 5, afterSchoolAgeMonths: 12, inactiveFileMonths: 36 } } });
  const facility = await createFacility(t, tenant);
  const parents: Actor[] = [];
  for (let i = 0; i < 4; i++) {
    const email = `parent${i}.${n}@exemple.test`;
    parents.push(await actorOf(t, tenant, await createParent(t, tenant, email), email));
  }
  const d0 = today(now);
  // Four years ago: a file nobody has touched since.
  t.setNow(new Date(now.getTime() - 4 * 365 * DAY));
  const idle = await file(tenant, facility, parents[2]!, 'Inès', addMonths(today(t.deps.clock()), -3));
  t.setNow(now);
  const old = await file(tenant, facility, parents[0]!, 'Arthur', addMonths(d0, -12 * 7));
  const young = await file(tenant, facility, parents[1]!, 'Béatrice', addMonths(d0, -10));
  const soon = await file(tenant, facility, parents[3]!, 'Charles', addMonths(d0, -(12 * 6 - 1)));
  const adminEmail = `admin.${n}@exemple.test`;
  const adminId = await createAdmin(t, tenant, adminEmail);
  return { tenant, facility, parents, now, old, young, idle, soon, adminEmail, admin: await actorOf(t, tenant, adminId, adminEmail) };
}

const child = (tenant: Tenant, id: string) => inTenant(database.db, tenant.id, (trx) => trx.selectFrom('children').selectAll().where('id', '=', id).executeTakeFirstOrThrow());
const events = (tenant: Tenant, action: string) => inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').selectAll().where('action', '=', action).orderBy('seq').execute());
const ref = async (tenant: Tenant, id: string) => (await child(tenant, id)).reference;

describe('the retention job', () => {
  it('the operator sees what comes next; the run deletes what is due, a window later purges it; each step in the log', async () => {
    const w = await world();
    const preview = await retentionPreview(t.deps, ctxFor(t, w.tenant, w.admin));
    expect(preview.dueNow.first.map((f) => [f.childId, f.reason]).sort()).toEqual([[w.old, 'school_age'], [w.idle, 'inactive']].sort());
    expect(preview.dueNow.count).toBe(2);
    expect(preview.upcoming).toEqual({ count: 1, first: [expect.objectContaining({ childId: w.soon, reason: 'school_age' })] });
    expect(preview.awaitingPurge).toEqual([]);
    // Reading birth dates to compute it is recorded, with the families.
    const schedReads = await events(w.tenant, 'retention.preview');
    expect(schedReads.at(-1)).toMatchObject({ purpose: 'retention.schedule', fields: ['birth_date'], actor_account_id: w.admin.accountId });
    // Only the birth dates the page needs were opened: the two files whose school-age date it shows. Not the
    // 10-month-old's (its month cannot make it due), nor the idle file's: its date and rule come from its last
    // activity, in clear.
    expect([...schedReads.at(-1)!.target_ids].sort()).toEqual([w.old, w.soon].sort());
    expect(schedReads.at(-1)!.family_ids).toHaveLength(2);
    // The page, for the administrator.
    const c = new Client(t.app, w.tenant.hosts[0]!);
    expect((await c.signIn(w.adminEmail, PASSWORD)).status).toBe(303);
    const page = await c.get('/retention');
    expect(page.status).toBe(200);
    const text = textOf(page.body);
    expect(text).toContain('Un dossier est supprimé 12 mois après que l’enfant a atteint 5 ans');
    expect(text).toContain(await ref(w.tenant, w.old));
    expect(text).toContain('âge scolaire atteint');
    expect(text).toContain('aucune activité');
    expect(text).toContain('La tâche n’a pas encore été exécutée.');
    // A parent may not see it.
    const p = new Client(t.app, w.tenant.hosts[0]!);
    expect((await p.signIn(w.parents[0]!.email, PASSWORD)).status).toBe(303);
    expect((await p.get('/retention')).status).toBe(403);

    // The run.
    const [r] = (await runRetention(t.deps, JOB, w.now, w.tenant))!;
    expect(r).toMatchObject({ deleted: 2, purge: { filesPurged: 0 } });
    for (const id of [w.old, w.idle]) expect((await child(w.tenant, id)).deleted_at).not.toBeNull();
    for (const id of [w.young, w.soon]) expect((await child(w.tenant, id)).deleted_at).toBeNull();
    const apps = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('applications').select(['child_id', 'status']).execute());
    expect(apps.filter((a) => a.status === 'withdrawn').map((a) => a.child_id).sort()).toEqual([w.old, w.idle].sort());
    const deletions = await events(w.tenant, 'waitlist.childFile.delete');
    expect(deletions.map((e) => [e.target_ids[0], (e.details as { reason: string }).reason, e.actor_roles]).sort()).toEqual(
      [
        [w.old, 'retention_school_age', ['system:retention']],
        [w.idle, 'retention_inactive', ['system:retention']],
      ].sort(),
    );
    // One event for the run, its summary: it opened no birth date, the two files being due whatever their day of
    // birth (the old one's month is long past school age), by a rule their months settle.
    const runs = await events(w.tenant, 'retention.run');
    expect(runs.map((e) => [e.target_type, e.outcome, e.purpose])).toEqual([['tenant', 'success', null]]);
    expect(runs[0]!.details).toMatchObject({ deleted: 2, filesPurged: 0 });
    // The family sees it in « Qui a consulté le dossier »: Guichet's retention job deleted the file.
    const seen = textOf((await p.get('/account/privacy/access')).body);
    expect(seen).toContain('Guichet (traitement automatique) — tâche de conservation');
    expect(seen).toContain('Suppression — destruction prévue par les règles de conservation');
    const after = await retentionPreview(t.deps, ctxFor(t, w.tenant, w.admin));
    expect(after.dueNow).toEqual({ count: 0, first: [] });
    expect(after.awaitingPurge.map((f) => [f.childId, f.purgeOn.getTime() - f.deletedAt.getTime()]).sort()).toEqual([[w.old, 30 * DAY], [w.idle, 30 * DAY]].sort());
    expect(after.lastRun).not.toBeNull();

    // A window later, the purge destroys them.
    const later = new Date(w.now.getTime() + 31 * DAY);
    t.setNow(later);
    const [r2] = (await runRetention(t.deps, JOB, later, w.tenant))!;
    expect(r2!.purge).toMatchObject({ filesPurged: 2, familiesPurged: 2 });
    for (const id of [w.old, w.idle]) expect((await child(w.tenant, id)).purged_at).not.toBeNull();
    expect((await events(w.tenant, 'records.family.purge')).map((e) => e.target_ids[0]).sort()).toEqual([w.old, w.idle].sort());
  });

  it('never runs twice at once', async () => {
    const w = await world();
    const [a, b] = await Promise.all([runRetention(t.deps, JOB, w.now, w.tenant), runRetention(t.deps, JOB, w.now, w.tenant)]);
    expect([a, b].filter((x) => x === null)).toHaveLength(1);
    if (database.kind === 'postgres') {
      // Another instance holds the lock: this one skips.
      await database.db.connection().execute(async (conn) => {
        await sql`SELECT pg_advisory_lock(hashtext('guichet.retention'))`.execute(conn);
        try {
          expect(await runRetention(t.deps, JOB, w.now, w.tenant)).toBeNull();
        } finally {
          await sql`SELECT pg_advisory_unlock(hashtext('guichet.retention'))`.execute(conn);
        }
      });
    }
  });

  it('rules are the tenant’s own; the timer fires at the configured Montreal hour', () => {
    const tenant = { rules: { retention: { schoolAgeYears: 5, afterSchoolAgeMonths: 12, inactiveFileMonths: 36 }, deletedFileRetentionDays: 30 } } as unknown as Tenant;
    expect(dueDate(tenant, { birthDate: '2020-03-15', lastActivity: new Date('2025-01-01T12:00:00Z') })).toEqual({ on: '2026-03-15', reason: 'school_age' });
    expect(dueDate(tenant, { birthDate: '2024-03-15', lastActivity: new Date('2025-01-01T12:00:00Z') })).toEqual({ on: '2028-01-01', reason: 'inactive' });
    // 03:00 in Montreal is 08:00 UTC in winter, 07:00 UTC in summer.
    expect(nextRunAt(new Date('2026-01-10T12:00:00Z'), 3).toISOString()).toBe('2026-01-11T08:00:00.000Z');
    expect(nextRunAt(new Date('2026-07-10T06:59:00Z'), 3).toISOString()).toBe('2026-07-10T07:00:00.000Z');
    expect(retentionHour({})).toBe(3);
    expect(retentionHour({ GUICHET_RETENTION_HOUR: '22' })).toBe(22);
    expect(retentionHour({ GUICHET_RETENTION_HOUR: 'off' })).toBeNull();
    expect(() => retentionHour({ GUICHET_RETENTION_HOUR: '25' })).toThrow(/GUICHET_RETENTION_HOUR/);
  });
});

describe('which files the job opens', () => {
  it('only those whose birth month leaves the date or the rule open, and none missed at the edges of a month', async () => {
    // The run of 28 February 2027 (a Sunday, 10:00 in Montreal): 36 months without activity reach back to 28
    // February 2024, but a file last active on the leap day is due too (29 February + 36 months is 28 February).
    const real = new Date();
    const runAt = new Date('2027-02-28T15:00:00Z');
    try {
      const tenant = await tenantFor(t, { rules: { deletedFileRetentionDays: 30, retention: { schoolAgeYears: 5, afterSchoolAgeMonths: 12, inactiveFileMonths: 36 } } });
      const facility = await createFacility(t, tenant);
      const email = `bords.${Date.now().toString(36)}@exemple.test`;
      const parent = await actorOf(t, tenant, await createParent(t, tenant, email), email);
      const at = async (iso: string, firstName: string, birthDate: string) => {
        t.setNow(new Date(iso));
        return file(tenant, facility, parent, firstName, birthDate);
      };
      const leapDay = await at('2024-02-29T12:00:00Z', 'Bissextile', '2023-12-01');
      const dayAfter = await at('2024-03-01T12:00:00Z', 'Lendemain', '2023-12-01');
      // School age (6 years) on 20 January 2027, inactive since 10 January: due by inactivity, which only the
      // birth date can tell — January's first day would make it school age first.
      const january = await at('2024-01-10T12:00:00Z', 'Janvier', '2021-01-20');
      const schoolToday = await at('2027-02-01T12:00:00Z', 'Rentrée', '2021-02-28');
      const schoolTomorrow = await at('2027-02-01T12:00:00Z', 'Demain', '2021-03-01');
      // The preview's horizon is 29 May 2027: the first is due on it, the second the day after.
      const lastDay = await at('2027-02-01T12:00:00Z', 'Mai', '2021-05-29');
      const dayPast = await at('2027-02-01T12:00:00Z', 'Maitard', '2021-05-30');
      const noMonth = await at('2027-02-01T12:00:00Z', 'Sansmois', '2021-01-10');
      const young = await at('2027-02-01T12:00:00Z', 'Jeune', '2026-05-10');
      // A file written before birth months were kept in clear.
      await database.ownerDb().updateTable('children').set({ birth_month: null }).where('id', '=', noMonth).execute();
      t.setNow(runAt);
      const adminEmail = `admin.bords.${Date.now().toString(36)}@exemple.test`;
      const admin = await actorOf(t, tenant, await createAdmin(t, tenant, adminEmail), adminEmail);

      const preview = await retentionPreview(t.deps, ctxFor(t, tenant, admin));
      const listed = (l: { first: { childId: string; deleteOn: string; reason: string }[] }) => l.first.map((f) => [f.childId, f.deleteOn, f.reason]);
      expect(preview.dueNow.count).toBe(4);
      const asSet = (rows: unknown[][]) => new Set(rows.map((x) => JSON.stringify(x)));
      expect(asSet(listed(preview.dueNow))).toEqual(
        asSet([
          [january, '2027-01-10', 'inactive'],
          [noMonth, '2027-01-10', 'school_age'],
          [leapDay, '2027-02-28', 'inactive'],
          [schoolToday, '2027-02-28', 'school_age'],
        ]),
      );
      expect(preview.upcoming.count).toBe(3);
      expect(asSet(listed(preview.upcoming))).toEqual(
        asSet([
          [dayAfter, '2027-03-01', 'inactive'],
          [schoolTomorrow, '2027-03-01', 'school_age'],
          [lastDay, '2027-05-29', 'school_age'],
        ]),
      );
      for (const l of [preview.dueNow, preview.upcoming]) expect(l.first.map((f) => f.deleteOn)).toEqual(l.first.map((f) => f.deleteOn).sort());
      // Opened for the page: the files it lists by their school-age date, the two whose month straddles the
      // horizon, the one whose rule its month leaves open, the one without a month. Not the two whose date is
      // their last activity's, nor the young child's.
      const shown = (await events(tenant, 'retention.preview')).at(-1)!;
      expect([...shown.target_ids].sort()).toEqual([schoolToday, schoolTomorrow, lastDay, dayPast, january, noMonth].sort());
      expect(shown.details).toMatchObject({ files: 6, candidates: 8 });

      const [r] = (await runRetention(t.deps, JOB, runAt, tenant))!;
      expect(r!.deleted).toBe(4);
      for (const id of [leapDay, schoolToday, january, noMonth]) expect((await child(tenant, id)).deleted_at).not.toBeNull();
      for (const id of [dayAfter, schoolTomorrow, lastDay, dayPast, young]) expect((await child(tenant, id)).deleted_at).toBeNull();
      const reasons = (await events(tenant, 'waitlist.childFile.delete')).map((e) => [e.target_ids[0], (e.details as { reason: string }).reason]);
      expect(reasons.sort()).toEqual(
        [
          [leapDay, 'retention_inactive'],
          [schoolToday, 'retention_school_age'],
          [january, 'retention_inactive'],
          [noMonth, 'retention_school_age'],
        ].sort(),
      );
      // Opened by the run: only the file whose rule its month leaves open, and the one without a month. The
      // others are due whatever their day of birth, by a rule their month settles, or not due whatever it is.
      const read = (await events(tenant, 'retention.run')).find((e) => e.target_type === 'child')!;
      expect([...read.target_ids].sort()).toEqual([january, noMonth].sort());
    } finally {
      t.setNow(real);
    }
  });
});

describe('the retention page at scale', () => {
  it('gives the number of files and the soonest hundred, not a table of them all', async () => {
    const tenant = await tenantFor(t, { rules: { deletedFileRetentionDays: 30, retention: { schoolAgeYears: 5, afterSchoolAgeMonths: 12, inactiveFileMonths: 36 } } });
    await createFacility(t, tenant);
    // Families registered four years ago and never seen since: every file is due for inactivity.
    const origin = { actorAccountId: null, actorRoles: ['system:seed'], ip: null, userAgent: 'vitest', requestId: null };
    const seeded = await seedDemo(database.db, tenant.id, { families: 110, seed: 'conservation', now: new Date(Date.now() - 4 * 365 * DAY), origin, keys: t.deps.keys });
    expect(seeded.children).toBeGreaterThan(RETENTION_ROWS_SHOWN);
    const adminEmail = `admin.echelle.${Date.now().toString(36)}@exemple.test`;
    await createAdmin(t, tenant, adminEmail);
    const c = new Client(t.app, tenant.hosts[0]!);
    expect((await c.signIn(adminEmail, PASSWORD)).status).toBe(303);
    const page = await c.get('/retention');
    expect(page.status).toBe(200);
    expect(textOf(page.body)).toContain(`${seeded.children} dossiers ; les 100 premiers, par date`);
    const due = /<h2>Supprimés à la prochaine exécution<\/h2>[\s\S]*?<\/table>/.exec(page.body)![0];
    expect(due.match(/<tr>/g)).toHaveLength(RETENTION_ROWS_SHOWN + 1);
  });
});

describe('accounts without a file', () => {
  it('a parent’s account with no child file for the tenant’s months is closed by the run; staff and parents with files are not', async () => {
    const w = await world();
    const email = `sansdossier.${Date.now()}@exemple.test`;
    const lonely = await createParent(t, w.tenant, email);
    const recent = await createParent(t, w.tenant, `recent.${Date.now()}@exemple.test`);
    // Signed up 25 months ago (the tenant keeps 24), never came back.
    await database.ownerDb().updateTable('accounts').set({ created_at: new Date(w.now.getTime() - 25 * 31 * DAY) }).where('id', 'in', [lonely, w.admin.accountId]).execute();
    const c = new Client(t.app, w.tenant.hosts[0]!);
    expect((await c.signIn(w.adminEmail, PASSWORD)).status).toBe(303);
    const page = await c.get('/retention');
    expect(textOf(page.body)).toContain('Un compte est fermé à la prochaine exécution');
    const [r] = (await runRetention(t.deps, JOB, w.now, w.tenant))!;
    expect(r!.accountsClosed).toBe(1);
    const rows = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('accounts').select(['id', 'email', 'status', 'password_hash', 'purged_at']).execute());
    const closed = rows.find((a) => a.id === lonely)!;
    expect(closed).toMatchObject({ email: `purged-${lonely}@purged.invalid`, status: 'suspended', password_hash: null });
    expect(closed.purged_at).not.toBeNull();
    for (const id of [recent, w.admin.accountId, ...w.parents.map((p) => p.accountId)]) expect(rows.find((a) => a.id === id)!.purged_at).toBeNull();
    expect((await events(w.tenant, 'records.account.purge')).map((e) => e.target_ids)).toEqual([[lonely]]);
    // The address no longer signs in.
    const gone = new Client(t.app, w.tenant.hosts[0]!);
    const r2 = await gone.signIn(email, PASSWORD);
    expect(String(r2.headers.location ?? '')).not.toBe('/account');
  });

  it('the outbox keeps a sent message’s body 30 days; closing an account erases its address and what was written to it', async () => {
    const w = await world();
    const email = `courriels.${Date.now()}@exemple.test`;
    const lonely = await createParent(t, w.tenant, email);
    await database.ownerDb().updateTable('accounts').set({ created_at: new Date(w.now.getTime() - 25 * 31 * DAY) }).where('id', '=', lonely).execute();
    const put = (to: string, body: string, sentDaysAgo: number | null, attempts = 1, lastError: string | null = null) =>
      inTenant(database.db, w.tenant.id, (trx) =>
        trx
          .insertInto('mail_outbox')
          .values({ tenant_id: w.tenant.id, to_address: to, locale: 'fr', template: 'breach_notice', subject: 'Avis', body_text: body, created_at: new Date(w.now.getTime() - 40 * DAY), sent_at: sentDaysAgo === null ? null : new Date(w.now.getTime() - sentDaysAgo * DAY), attempts, last_error: lastError })
          .returning('id')
          .executeTakeFirstOrThrow(),
      );
    const other = w.parents[0]!.email;
    const old = await put(other, 'Le dossier de Béatrice…', 31);
    const recent = await put(other, 'Le dossier d’Arthur…', 29);
    const givenUp = await put(other, 'Le dossier de Charles…', null, 10, `550 5.1.1 <${other}>: Recipient address rejected`);
    const waiting = await put(other, 'Le dossier d’Inès…', null, 3);
    const toLonely = await put(email, 'Votre lien…', 1, 1, `451 4.7.1 <${email}>: try again later`);
    const [r] = (await runRetention(t.deps, JOB, w.now, w.tenant))!;
    expect(r!.mailBodiesEmptied).toBe(2);
    const rows = new Map((await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('mail_outbox').select(['id', 'to_address', 'body_text', 'subject', 'last_error']).execute())).map((m) => [m.id, m]));
    expect(rows.get(old.id)).toMatchObject({ to_address: other, body_text: '', subject: 'Avis' });
    expect(rows.get(givenUp.id)!.body_text).toBe('');
    // The server's error quoted the address: it goes with the body.
    expect(rows.get(givenUp.id)!.last_error).toBeNull();
    expect(rows.get(recent.id)!.body_text).toBe('Le dossier d’Arthur…');
    expect(rows.get(waiting.id)!.body_text).toBe('Le dossier d’Inès…');
    // The closed account's address and body are gone from the outbox, the row stays.
    expect(rows.get(toLonely.id)).toMatchObject({ to_address: '', body_text: '', subject: 'Avis', last_error: null });
    expect([...rows.values()].some((m) => m.to_address === email)).toBe(false);
    expect((await events(w.tenant, 'retention.run')).at(-1)!.details).toMatchObject({ mailBodiesEmptied: 2 });
  });
});

describe('a parent’s deletion request', () => {
  it('withdraws every registration and deletes every file now, and shows the dates of destruction', async () => {
    const w = await world();
    const parent = w.parents[1]!;
    const second = await file(w.tenant, w.facility, parent, 'Delphine', addMonths(today(w.now), -20));
    const c = new Client(t.app, w.tenant.hosts[0]!);
    expect((await c.signIn(parent.email, PASSWORD)).status).toBe(303);
    const hub = await c.get('/account/privacy');
    expect(hub.body).toContain('href="/account/privacy/delete"');
    // Six minutes after signing in: the page and the request ask who you are first, and nothing is deleted.
    const signedInAt = t.deps.clock();
    t.setNow(new Date(signedInAt.getTime() + 6 * 60_000));
    const stale = await c.get('/account/privacy/delete');
    expect(stale.status).toBe(303);
    expect(stale.headers.location).toBe(`/reauth?return=${encodeURIComponent('/account/privacy/delete')}`);
    const refused = await c.post('/account/privacy/delete', {});
    expect(refused.status).toBe(303);
    expect(refused.headers.location).toContain('/reauth');
    expect((await child(w.tenant, w.young)).deleted_at).toBeNull();
    expect((await events(w.tenant, 'privacy.deletion.request')).map((e) => [e.outcome, (e.details as { reason?: string }).reason])).toEqual([['denied', 'step_up_required']]);
    t.setNow(signedInAt);
    const confirm = await c.get('/account/privacy/delete');
    expect(confirm.status).toBe(200);
    expect(textOf(confirm.body)).toContain('2 dossiers seront supprimés.');
    const done = await c.post('/account/privacy/delete', {});
    expect(done.status).toBe(200);
    const text = textOf(done.body);
    expect(text).toContain('Votre demande a été enregistrée');
    const purgeOn = new Intl.DateTimeFormat('fr-CA', { day: 'numeric', month: 'long', year: 'numeric', timeZone: 'America/Toronto' }).format(new Date(t.deps.clock().getTime() + 30 * DAY));
    expect(text).toContain(purgeOn);
    for (const id of [w.young, second]) {
      expect((await child(w.tenant, id)).deleted_at).not.toBeNull();
      expect(text).toContain(await ref(w.tenant, id));
    }
    const apps = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('applications').select('status').where('child_id', 'in', [w.young, second]).execute());
    expect(apps.every((a) => a.status === 'withdrawn')).toBe(true);
    // Other families untouched.
    expect((await child(w.tenant, w.soon)).deleted_at).toBeNull();
    const req = (await events(w.tenant, 'privacy.deletion.request')).filter((e) => e.outcome === 'success');
    expect(req).toHaveLength(1);
    expect(req[0]).toMatchObject({ outcome: 'success', actor_account_id: parent.accountId });
    expect([...req[0]!.target_ids].sort()).toEqual([w.young, second].sort());
    // The hub shows the dates from now on, in English too.
    const en = await c.get('/account/privacy?lang=en');
    expect(textOf(en.body)).toContain('Destruction dates');
  });
});
