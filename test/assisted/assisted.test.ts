/**
 * Assisted mode end to end, through HTTP: a facility staff member asks a
 * parent's consent (a code by e-mail), the parent reads it back, the agent
 * acts for the family (create, edit, apply, withdraw) with a banner, every
 * event carries on_behalf_of and the agent as actor, the parent is e-mailed
 * and reads "done for you by" in the access log; then the refusals: a wrong,
 * expired or reused code, another family's file, another agent's consent,
 * an ended or expired session, too many code requests, non-agents.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { decide, sqlFilter } from '../../src/access/decide.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { actorByEmail, createFacility, createParent, createStaff, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { buildFamilyExport } from '../../src/privacy/export.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { sql } from 'kysely';

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

function childForm(over: Record<string, string> = {}): Record<string, string> {
  const t0 = today(t.deps.clock());
  return { firstName: 'Éloïse', lastName: 'Gagnon-Côté', birthDate: addMonths(t0, -8), nirec: '4444 5555 66', desiredEntryDate: addMonths(t0, 3), day_mon: 'on', day_wed: 'on', ...over };
}

describe('assisted mode', () => {
  it('an agent acts for a consenting parent, and only for that family; the parent sees it; bad codes and abuse are refused', async () => {
    let now = new Date();
    t.setNow(now);
    // Time passes in steps the agent's session survives (staff sessions end after 15 idle minutes).
    const advance = async (ms: number) => {
      for (let left = ms; left > 0; left -= 10 * MIN) {
        now = new Date(now.getTime() + Math.min(left, 10 * MIN));
        t.setNow(now);
        await agent.get('/assist');
      }
    };
    const n = Date.now().toString(36);
    const tenant = await tenantFor(t);
    const host = tenant.hosts[0]!;
    const facility = await createFacility(t, tenant, { name: 'CPE Les Hirondelles' });
    const facility2 = await createFacility(t, tenant, { name: 'Garderie Les Hiboux', kind: 'garderie' });
    const emails = { parent: `parent.${n}@exemple.test`, other: `voisin.${n}@exemple.test`, staff: `educ.${n}@exemple.test`, staff2: `educ2.${n}@exemple.test` };
    const parentId = await createParent(t, tenant, emails.parent);
    await createParent(t, tenant, emails.other);
    const staffId = await createStaff(t, tenant, emails.staff, facility);
    await createStaff(t, tenant, emails.staff2, facility2);

    // The other family has a file the agent must never reach.
    const other = new Client(t.app, host);
    expect((await other.signIn(emails.other, PASSWORD)).status).toBe(303);
    await other.get('/children/new');
    const otherChild = /\/children\/([0-9a-f-]{36})/.exec(String((await other.post('/children/new', childForm({ firstName: 'Zoé', nirec: '1111 2222 33' }))).headers.location))![1]!;

    const mailTo = async (to: string) =>
      inTenant(database.db, tenant.id, (trx) => trx.selectFrom('mail_outbox').select(['subject', 'body_text', 'template']).where('to_address', '=', to).orderBy('created_at', 'desc').execute());
    const codeIn = async () => /: (\d{6})\b/.exec((await mailTo(emails.parent)).find((m) => m.template === 'assisted_code')!.body_text)![1]!;

    const agent = new Client(t.app, host);
    expect((await agent.signIn(emails.staff, PASSWORD)).status).toBe(303);
    const start = await agent.get('/assist');
    expect(start.status).toBe(200);
    expect(textOf(start.body)).toContain('Aider un parent');

    // Bad input: a clear 400, nothing asked
    expect((await agent.post('/assist', { email: 'pas-une-adresse', channel: 'phone' })).status).toBe(400);
    expect((await agent.post('/assist', { email: emails.parent, channel: 'fax' })).status).toBe(400);
    const unknown = await agent.post('/assist', { email: `personne.${n}@exemple.test`, channel: 'phone' });
    expect(unknown.status).toBe(400);
    expect(textOf(unknown.body)).toContain('Aucun compte actif et confirmé n’a cette adresse courriel');
    expect((await agent.post('/assist', { email: emails.staff, channel: 'phone' })).status).toBe(400);
    expect((await mailTo(emails.parent)).length).toBe(0);

    // The consent: a code e-mailed to the parent
    const asked = await agent.post('/assist', { email: emails.parent, channel: 'phone', note: 'Appel pour inscrire sa fille' });
    expect(asked.status).toBe(303);
    const consentId = /\/assist\/([0-9a-f-]{36})$/.exec(String(asked.headers.location))![1]!;
    const codePage = await agent.get(`/assist/${consentId}`);
    expect(codePage.status).toBe(200);
    expect(textOf(codePage.body)).toContain(emails.parent);
    const code = await codeIn();
    const stored = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('assisted_sessions').selectAll().where('id', '=', consentId).executeTakeFirstOrThrow());
    expect(stored.code_hash.toString('hex')).not.toContain(Buffer.from(code).toString('hex'));

    // Another agent cannot use this consent, even with the right code
    const agent2 = new Client(t.app, host);
    await agent2.signIn(emails.staff2, PASSWORD);
    await agent2.get('/assist');
    expect((await agent2.post(`/assist/${consentId}`, { code })).status).toBe(404);

    // A wrong code: 400, nothing started
    const wrong = await agent.post(`/assist/${consentId}`, { code: code === '000000' ? '111111' : '000000' });
    expect(wrong.status).toBe(400);
    expect(textOf(wrong.body)).toContain('Ce code n’est pas le bon');
    expect((await agent.get('/account')).body).not.toContain('assist-banner');

    // The right code starts the session; the parent is told
    const ok = await agent.post(`/assist/${consentId}`, { code });
    expect(ok.status).toBe(303);
    expect(ok.headers.location).toBe('/account?status=assisted');
    const notice = (await mailTo(emails.parent)).find((m) => m.template === 'assisted_notice')!;
    expect(notice.body_text).toContain(emails.staff);
    expect(notice.body_text).toContain('CPE Les Hirondelles');
    expect(notice.body_text).toContain('/account/privacy/access');

    // A reused code is refused
    const reused = await agent.post(`/assist/${consentId}`, { code });
    expect(reused.status).toBe(400);
    expect(textOf(reused.body)).toContain('Ce code ne peut plus servir');

    // Acting for the parent: the banner, the parent's (empty) file list, then create, edit, apply, withdraw
    const account = await agent.get('/account?status=assisted');
    expect(account.status).toBe(200);
    expect(account.body).toContain('assist-banner');
    expect(textOf(account.body)).toContain(`Vous agissez pour ${emails.parent}`);
    expect(textOf(account.body)).not.toContain('Zoé');
    await agent.get('/children/new');
    const created = await agent.post('/children/new', childForm());
    expect(created.status).toBe(303);
    const childId = /\/children\/([0-9a-f-]{36})/.exec(String(created.headers.location))![1]!;
    const owner = await inTenant(database.db, tenant.id, (trx) =>
      trx.selectFrom('children as c').innerJoin('families as f', 'f.id', 'c.family_id').select(['f.account_id', 'c.birth_month']).where('c.id', '=', childId).executeTakeFirstOrThrow(),
    );
    expect(owner.account_id).toBe(parentId);
    expect(owner.birth_month).toBe(`${addMonths(today(now), -8).slice(0, 7)}-01`);
    await agent.get(`/children/${childId}/edit`);
    expect((await agent.post(`/children/${childId}/edit`, childForm({ firstName: 'Éloïse-Marie', nirec: '' }))).status).toBe(303);
    await agent.get(`/directory/${facility}`);
    expect((await agent.post('/applications', { childId, facilityId: facility })).status).toBe(303);
    const appId = (await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('applications').select('id').where('child_id', '=', childId).executeTakeFirstOrThrow())).id;
    expect((await agent.post(`/children/${childId}/applications/${appId}/withdraw`, {})).status).toBe(303);
    expect(textOf((await agent.get(`/children/${childId}`)).body)).toContain('Éloïse-Marie');

    // Never another family: their file is "not found", their id in an application too
    expect((await agent.get(`/children/${otherChild}`)).status).toBe(404);
    expect((await agent.get(`/children/${otherChild}/edit`)).status).toBe(404);
    await agent.get(`/directory/${facility}`);
    expect((await agent.post('/applications', { childId: otherChild, facilityId: facility })).status).toBeGreaterThanOrEqual(400);
    // Nor the parent's own rights: the export and the deletion request stay the parent's
    expect((await agent.get('/account/privacy/export')).status).toBeGreaterThanOrEqual(400);

    // The audit: the agent as actor, the parent in on_behalf_of, for every change and read of the session
    const events = await inTenant(database.db, tenant.id, (trx) =>
      trx.selectFrom('audit_events').select(['action', 'outcome', 'actor_account_id', 'on_behalf_of']).where('actor_account_id', '=', staffId).orderBy('seq').execute(),
    );
    const during = events.filter((e) => ['waitlist.childFile.create', 'waitlist.childFile.update', 'waitlist.application.create', 'waitlist.application.withdraw', 'waitlist.childFile.read', 'waitlist.childFile.list', 'assisted.session.start'].includes(e.action) && e.outcome === 'success');
    expect(new Set(during.map((e) => e.action))).toEqual(new Set(['assisted.session.start', 'waitlist.childFile.list', 'waitlist.childFile.create', 'waitlist.childFile.read', 'waitlist.childFile.update', 'waitlist.application.create', 'waitlist.application.withdraw']));
    for (const e of during) expect(e.on_behalf_of, e.action).toBe(parentId);
    // What the family asked for stays out of the log, which no erasure reaches.
    const logged = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(sql<string>`details::text`.as('d')).where('action', 'like', 'assisted.%').execute());
    expect(logged.length).toBeGreaterThan(0);
    for (const e of logged) expect(e.d).not.toContain('inscrire sa fille');
    // the refused attempt on the other family is recorded too, as done for this parent
    expect(events.some((e) => e.action === 'waitlist.childFile.read' && e.outcome === 'denied' && e.on_behalf_of === parentId)).toBe(true);

    // The parent's access log names the agent and the facility
    const parent = new Client(t.app, host);
    expect((await parent.signIn(emails.parent, PASSWORD)).status).toBe(303);
    const log = textOf((await parent.get('/account/privacy/access')).body);
    expect(log).toContain(`Fait pour vous par ${emails.staff}, CPE Les Hirondelles`);
    const logEn = textOf((await parent.get('/account/privacy/access?lang=en')).body);
    expect(logEn).toContain(`Done for you by ${emails.staff}, CPE Les Hirondelles`);

    // The agent ends it: the family is out of reach at once
    expect((await agent.post('/assist/end', {})).status).toBe(303);
    expect((await agent.get(`/children/${childId}`)).status).toBe(404);
    expect((await agent.get('/account')).body).not.toContain('assist-banner');
    const end = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['on_behalf_of']).where('action', '=', 'assisted.session.end').executeTakeFirstOrThrow());
    expect(end.on_behalf_of).toBe(parentId);

    // An expired code: 400, nothing started
    await advance(20 * MIN);
    await agent.get('/assist');
    const second = await agent.post('/assist', { email: emails.parent, channel: 'in_person' });
    expect(second.status).toBe(303);
    const secondId = /\/assist\/([0-9a-f-]{36})$/.exec(String(second.headers.location))![1]!;
    const secondCode = await codeIn();
    await advance(16 * MIN);
    await agent.get(`/assist/${secondId}`);
    const expired = await agent.post(`/assist/${secondId}`, { code: secondCode });
    expect(expired.status).toBe(400);
    expect(textOf(expired.body)).toContain('Ce code a expiré');

    // A session that runs out of time closes by itself
    const third = await agent.post('/assist', { email: emails.parent, channel: 'in_person' });
    const thirdId = /\/assist\/([0-9a-f-]{36})$/.exec(String(third.headers.location))![1]!;
    await agent.get(`/assist/${thirdId}`);
    expect((await agent.post(`/assist/${thirdId}`, { code: await codeIn() })).status).toBe(303);
    expect((await agent.get(`/children/${childId}`)).status).toBe(200);
    await advance(31 * MIN);
    expect((await agent.get(`/children/${childId}`)).status).toBe(404);

    // Five wrong codes close the consent
    const fourth = await agent.post('/assist', { email: emails.parent, channel: 'phone' });
    expect(fourth.status).toBe(303);
    const fourthId = /\/assist\/([0-9a-f-]{36})$/.exec(String(fourth.headers.location))![1]!;
    const good = await codeIn();
    const bad = good === '999999' ? '999998' : '999999';
    await agent.get(`/assist/${fourthId}`);
    for (let i = 0; i < 5; i++) expect((await agent.post(`/assist/${fourthId}`, { code: bad })).status).toBe(400);
    expect((await agent.post(`/assist/${fourthId}`, { code: good })).status).toBe(400);
    expect((await agent.get(`/children/${childId}`)).status).toBe(404);

    // Too many code requests: three per parent in the window, then five per agent
    await advance(16 * MIN);
    for (let i = 0; i < 3; i++) expect((await agent.post('/assist', { email: emails.other, channel: 'phone' })).status, `request ${i}`).toBe(303);
    expect((await agent.post('/assist', { email: emails.other, channel: 'phone' })).status).toBe(429);
    await createParent(t, tenant, `troisieme.${n}@exemple.test`);
    for (let i = 0; i < 2; i++) expect((await agent.post('/assist', { email: `troisieme.${n}@exemple.test`, channel: 'phone' })).status).toBe(303);
    const tooMany = await agent.post('/assist', { email: `troisieme.${n}@exemple.test`, channel: 'phone' });
    expect(tooMany.status).toBe(429);
    expect(tooMany.body).toContain('Trop de tentatives');

    // Not an agent: a parent, a visitor
    await parent.signIn(emails.parent, PASSWORD);
    // The family's export holds each time it was helped: how, when, by what kind of agent, and the note written.
    const exported = await buildFamilyExport(t.deps, ctxFor(t, tenant, await actorByEmail(t, tenant, emails.parent, t.deps.clock(), 10, ['password'])));
    expect(exported.document.assistedSessions.map((s) => [s.channel, s.note])).toEqual([
      ['phone', 'Appel pour inscrire sa fille'],
      ['in_person', ''],
    ]);
    expect(exported.document.assistedSessions[0]).toMatchObject({ agentRole: 'facility_staff', agentOrganisation: expect.any(String) });
    expect((await parent.get('/assist')).status).toBe(403);
    await parent.get('/account');
    expect((await parent.post('/assist', { email: emails.other, channel: 'phone' })).status).toBe(403);
    expect((await new Client(t.app, host).get('/assist')).status).toBe(303);
  });

  it('wrong codes sent in parallel are each counted: five tries in all, then not even the right code', async () => {
    t.setNow(new Date());
    const n = `${Date.now().toString(36)}p`;
    const tenant = await tenantFor(t);
    const host = tenant.hosts[0]!;
    const facility = await createFacility(t, tenant, { name: 'CPE Les Mésanges' });
    const parent = `parent.${n}@exemple.test`;
    const staff = `educ.${n}@exemple.test`;
    await createParent(t, tenant, parent);
    await createStaff(t, tenant, staff, facility);
    const agent = new Client(t.app, host);
    expect((await agent.signIn(staff, PASSWORD)).status).toBe(303);
    await agent.get('/assist');
    const asked = await agent.post('/assist', { email: parent, channel: 'phone' });
    const consentId = /\/assist\/([0-9a-f-]{36})$/.exec(String(asked.headers.location))![1]!;
    await agent.get(`/assist/${consentId}`);
    const mail = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('mail_outbox').select('body_text').where('to_address', '=', parent).where('template', '=', 'assisted_code').executeTakeFirstOrThrow());
    const code = /: (\d{6})\b/.exec(mail.body_text)![1]!;
    const wrong = Array.from({ length: 20 }, (_, i) => String((Number(code) + 1 + i) % 1_000_000).padStart(6, '0'));
    const answers = await Promise.all(wrong.map((c) => agent.post(`/assist/${consentId}`, { code: c })));
    expect(answers.every((a) => a.status === 400)).toBe(true);
    const row = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('assisted_sessions').select(['code_attempts', 'started_at', 'end_reason']).where('id', '=', consentId).executeTakeFirstOrThrow());
    expect(row.code_attempts).toBe(5);
    expect(row.end_reason).toBe('code_failed');
    const compared = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select('details').where('action', '=', 'assisted.session.start').where('outcome', '=', 'denied').execute());
    expect(compared.filter((e) => ['code_wrong', 'code_wrong_last'].includes((e.details as { reason: string }).reason))).toHaveLength(5);
    expect((await agent.post(`/assist/${consentId}`, { code })).status).toBe(400);
    expect((await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('assisted_sessions').select('started_at').where('id', '=', consentId).executeTakeFirstOrThrow())).started_at).toBeNull();
  });

  it('decide() and sqlFilter(): an assisting agent reaches the consented family only, with the family actions only', () => {
    const NOW = new Date('2026-03-15T14:00:00Z');
    const PARENT = '10000000-0000-4000-8000-000000000001';
    const OTHER = '20000000-0000-4000-8000-000000000002';
    const agent: Actor = {
      accountId: '40000000-0000-4000-8000-000000000004',
      tenantId: 'f0000000-0000-4000-8000-0000000000ff',
      sessionId: null,
      email: 'agent@exemple.test',
      emailVerified: true,
      locale: 'fr',
      memberships: [{ id: 'm1', role: 'facility_staff', facilityId: 'a0000000-0000-4000-8000-00000000000a', expiresAt: null }],
      mfa: true,
      assisting: { id: 's1', accountId: PARENT, email: 'parent@exemple.test', until: new Date(NOW.getTime() + 10 * MIN) },
    };
    const fam = (ownerAccountId: string) => ({ type: 'family' as const, ownerAccountId });
    for (const a of ['waitlist.childFile.read', 'waitlist.childFile.update', 'waitlist.application.create', 'waitlist.application.withdraw', 'waitlist.childFile.list'] as const) {
      expect(decide(agent, a, fam(PARENT), NOW).allowed, a).toBe(true);
      expect(decide(agent, a, fam(OTHER), NOW).allowed, a).toBe(false);
      expect(decide(agent, a, fam(agent.accountId), NOW).allowed, `${a} for the agent's own family while assisting`).toBe(false);
    }
    for (const a of ['privacy.export', 'privacy.deletion.request', 'privacy.accessLog.read', 'waitlist.childFile.delete', 'family.profile.update', 'waitlist.offer.answer'] as const) {
      expect(decide(agent, a, fam(PARENT), NOW).allowed, a).toBe(false);
    }
    // ended by time, by losing the role, or without a second factor
    expect(decide(agent, 'waitlist.childFile.read', fam(PARENT), new Date(NOW.getTime() + 10 * MIN)).allowed).toBe(false);
    expect(decide({ ...agent, memberships: [] }, 'waitlist.childFile.read', fam(PARENT), NOW).allowed).toBe(false);
    expect(decide({ ...agent, mfa: false }, 'waitlist.childFile.read', fam(PARENT), NOW).allowed).toBe(false);
    // the list filter names the consented family alone
    const compiled = (x: ReturnType<typeof sqlFilter>) => (x as unknown as { toOperationNode(): unknown }).toOperationNode();
    const f = JSON.stringify(compiled(sqlFilter(agent, 'waitlist.childFile.list', { familyOwner: sql.ref('f.account_id') }, NOW)));
    expect(f).toContain(PARENT);
    expect(f).not.toContain(agent.accountId);
  });
});
