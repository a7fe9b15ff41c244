/**
 * The programme's console for child files, through HTTP as a browser would
 * use it: finding a file by NIREC (a POST: the NIREC in no address, in no
 * audit event), its history, asking for a deleted file back, and a second
 * administrator deciding with a fresh authentication. Operators and
 * administrators get in; facility staff, other families and signed-out
 * visitors do not; bad input is a clear 4xx in the reader's language and
 * changes nothing; every read is in the audit log. And the family's side:
 * a deleted file, until when it can come back, and a request for it.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { inTenant } from '../../src/db/tenant.ts';
import * as records from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { formatDate } from '../../src/web/i18n/index.ts';
import { createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { enrolTotp, freshTotpCode, totpSecretFor } from '../helpers/factors.ts';
import { actorOf, createAccount, grantRole } from './people.ts';

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
let seq = 0;

interface World {
  tenant: Tenant;
  nirec: string;
  childId: string;
  reference: string;
  parent: Actor;
  clients: { parent: Client; otherParent: Client; staff: Client; operator: Client; admin1: Client; admin2: Client; anonymous: Client };
  emails: Record<'parent' | 'operator' | 'admin1' | 'admin2', string>;
  ids: Record<'operator' | 'admin1' | 'admin2', string>;
}

async function world(): Promise<World> {
  const n = `${Date.now().toString(36)}${(seq++).toString(36)}`;
  t.setNow(new Date());
  const tenant = await tenantFor(t);
  const host = tenant.hosts[0]!;
  const facility = await createFacility(t, tenant, { name: 'CPE Les Hirondelles' });
  const emails = { parent: `parent.${n}@exemple.test`, otherParent: `voisin.${n}@exemple.test`, staff: `educ.${n}@exemple.test`, operator: `operation.${n}@exemple.test`, admin1: `admin1.${n}@exemple.test`, admin2: `admin2.${n}@exemple.test` };
  const parentId = await createParent(t, tenant, emails.parent);
  await createParent(t, tenant, emails.otherParent);
  const staffId = await createStaff(t, tenant, emails.staff, facility);
  const admin1 = await createAdmin(t, tenant, emails.admin1);
  const admin2 = await createAccount(t, tenant, emails.admin2);
  await grantRole(t, tenant, admin2, 'tenant_admin', staffId, admin1);
  await enrolTotp(t.deps, tenant, admin2, emails.admin2);
  const operator = await createAccount(t, tenant, emails.operator);
  await grantRole(t, tenant, operator, 'program_operator', staffId, admin1);
  await enrolTotp(t.deps, tenant, operator, emails.operator);
  const parent = await actorOf(t, tenant, parentId, emails.parent);
  // Letters and digits that turn up nowhere by chance.
  const nirec = `QKZW${n.slice(-6).toUpperCase().replace(/[^A-Z0-9]/g, 'X')}`.padEnd(10, '7');
  const t0 = today(t.deps.clock());
  const { id: childId } = await records.createChildFile(t.deps, ctxFor(t, tenant, parent), { firstName: 'Maëlle', lastName: 'Tremblay-Ouellet', birthDate: addMonths(t0, -9), nirec, desiredEntryDate: addMonths(t0, 2), daysOfCare: 0b10101, inSubsidisedCare: false });
  await records.addApplication(t.deps, ctxFor(t, tenant, parent), childId, { facilityId: facility, siblingAttending: false, parentIsStaff: false });
  const reference = (await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('children').select('reference').where('id', '=', childId).executeTakeFirstOrThrow())).reference;
  const clients = {} as World['clients'];
  for (const who of ['parent', 'otherParent', 'staff', 'operator', 'admin1', 'admin2'] as const) {
    clients[who] = new Client(t.app, host);
    expect((await clients[who].signIn(emails[who], PASSWORD)).status).toBe(303);
  }
  clients.anonymous = new Client(t.app, host);
  await clients.anonymous.get('/');
  return { tenant, nirec, childId, reference, parent, clients, emails, ids: { operator, admin1, admin2 } };
}

async function events(tenant: Tenant, action: string, outcome?: 'success' | 'denied' | 'failure') {
  return inTenant(database.db, tenant.id, (trx) => {
    let q = trx.selectFrom('audit_events').selectAll().where('action', '=', action);
    if (outcome) q = q.where('outcome', '=', outcome);
    return q.orderBy('seq').execute();
  });
}

async function allEvents(tenant: Tenant) {
  return inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').selectAll().orderBy('seq').execute());
}

const rawChild = (w: World) => inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('children').select(['deleted_at', 'deleted_by']).where('id', '=', w.childId).executeTakeFirstOrThrow());
const requests = (w: World) => inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('child_file_restore_requests').selectAll().orderBy('requested_at').execute());

/** A page with a form, for its CSRF token: the sign-out button, or for a signed-out visitor the sign-in form. */
const home = (who: string) => (who === 'anonymous' ? '/signin' : '/');

/** A refusal: a 4xx, and for a signed-out visitor the sign-in page. */
function refused(status: number, location: unknown) {
  return status === 401 || status === 403 || status === 404 || (status === 303 && String(location).startsWith('/signin'));
}

describe('finding a file by NIREC', () => {
  it('operators and administrators search by POST; the result shows the file, masked; the NIREC is in no address and no audit event', async () => {
    const w = await world();
    for (const who of ['operator', 'admin1'] as const) {
      const c = w.clients[who];
      const form = await c.get('/admin/files');
      expect(form.status).toBe(200);
      expect(form.body).toContain('<form method="post" action="/admin/files"');
      expect(textOf(form.body)).toContain('Retrouver un dossier par NIREC');
      const before = (await events(w.tenant, 'waitlist.childFile.lookupByNirec', 'success')).length;
      // typed as people type it: spaces, hyphen, lower case
      const r = await c.post('/admin/files', { nirec: `${w.nirec.slice(0, 4).toLowerCase()} ${w.nirec.slice(4, 8)}-${w.nirec.slice(8)}` });
      expect(r.status).toBe(200);
      const text = textOf(r.body);
      expect(text).toContain('Un dossier correspond à ce NIREC.');
      expect(text).toContain(w.reference);
      expect(text).toContain('Maëlle Tremblay-Ouellet');
      expect(text).toContain(`•••••••${w.nirec.slice(-3)}`);
      expect(text).toContain('Actif');
      expect(r.body).toContain(`href="/admin/files/${w.childId}/history"`);
      expect(r.body).not.toContain(w.nirec);
      expect(r.body).not.toContain(w.nirec.slice(0, 4).toLowerCase());
      expect((await events(w.tenant, 'waitlist.childFile.lookupByNirec', 'success')).length).toBe(before + 1);
    }
    // In English too.
    const en = await w.clients.operator.post('/admin/files?lang=en', { nirec: w.nirec });
    expect(textOf(en.body)).toContain('One file matches this NIREC.');
    expect(en.body).toContain('<html lang="en">');
    const trail = JSON.stringify(await allEvents(w.tenant));
    expect(trail).not.toContain(w.nirec);
    expect(trail.toLowerCase()).not.toContain(w.nirec.slice(0, 4).toLowerCase() + ' ');
  });

  it('a NIREC that finds nothing says so, and is recorded too; a malformed one is a 400 that keeps what was typed', async () => {
    const w = await world();
    const c = w.clients.operator;
    await c.get('/admin/files');
    const none = await c.post('/admin/files', { nirec: 'ZZZZ999999' });
    expect(none.status).toBe(200);
    expect(textOf(none.body)).toContain('Aucun dossier ne correspond à ce NIREC.');
    expect((await events(w.tenant, 'waitlist.childFile.lookupByNirec', 'success')).at(-1)!.details).toMatchObject({ matches: 0 });
    for (const bad of ['', '12', 'x'.repeat(300), 'ABCD\u0000123456']) {
      const r = await c.post('/admin/files', { nirec: bad });
      expect(r.status).toBe(400);
      expect(r.body).toContain('<title>Erreur\u202f: Retrouver un dossier par NIREC');
      expect(textOf(r.body)).toContain('Le NIREC n’a pas le bon format');
    }
    const en = await c.post('/admin/files?lang=en', { nirec: '12' });
    expect(en.status).toBe(400);
    expect(en.body).toMatch(/<input id="f-nirec" name="nirec" type="text" value="12"/);
    expect(en.body).toContain('<title>Error: Find a file by NIREC');
  });

  it('facility staff, parents and signed-out visitors are refused, and their attempts are recorded', async () => {
    const w = await world();
    for (const who of ['staff', 'parent', 'otherParent', 'anonymous'] as const) {
      const c = w.clients[who];
      const page = await c.get('/admin/files');
      expect(refused(page.status, page.headers.location), `${who} GET`).toBe(true);
      await c.get(home(who));
      const r = await c.post('/admin/files', { nirec: w.nirec });
      expect(refused(r.status, r.headers.location), `${who} POST`).toBe(true);
      expect(r.body).not.toContain(w.reference);
      expect(r.body).not.toContain('Tremblay-Ouellet');
    }
    expect(await events(w.tenant, 'waitlist.childFile.lookupByNirec', 'success')).toHaveLength(0);
    expect(await events(w.tenant, 'waitlist.childFile.lookupByNirec', 'denied')).toHaveLength(4);
  });
});

describe('the history of a file', () => {
  it('every version, who and what changed, each version’s content with the NIREC masked; the reading is audited', async () => {
    const w = await world();
    await records.updateChildFile(t.deps, ctxFor(t, w.tenant, w.parent), w.childId, { firstName: 'Maëlle-Rose', lastName: 'Tremblay-Ouellet', birthDate: addMonths(today(t.deps.clock()), -9), nirec: null, desiredEntryDate: addMonths(today(t.deps.clock()), 2), daysOfCare: 0b10101, inSubsidisedCare: true });
    await records.deleteChildFile(t.deps, ctxFor(t, w.tenant, await actorOf(t, w.tenant, w.ids.operator, w.emails.operator)), w.childId);
    for (const who of ['operator', 'admin1'] as const) {
      const before = (await events(w.tenant, 'waitlist.childFile.history', 'success')).length;
      const r = await w.clients[who].get(`/admin/files/${w.childId}/history`);
      expect(r.status).toBe(200);
      const text = textOf(r.body);
      expect(text).toContain(`Historique du dossier ${w.reference}`);
      expect(text).toMatch(/Création .*Modification .*Suppression/);
      expect(text).toContain('La famille');
      expect(text).toContain(w.emails.operator);
      expect(text).toContain('Prénom, Déjà en place à contribution réduite');
      expect(text).toContain('Maëlle-Rose');
      expect(text).toContain(`•••••••${w.nirec.slice(-3)}`);
      expect(r.body).not.toContain(w.nirec);
      // deleted: since when, until when it can come back, and the button to ask
      expect(text).toContain(formatDate('fr', new Date(t.deps.clock().getTime() + 30 * DAY)));
      expect(r.body).toContain(`action="/admin/files/${w.childId}/restore-request"`);
      const trail = await events(w.tenant, 'waitlist.childFile.history', 'success');
      expect(trail.length).toBe(before + 1);
      expect(trail.at(-1)).toMatchObject({ target_ids: [w.childId], purpose: 'operator.childFile.history' });
    }
    const en = await w.clients.admin1.get(`/admin/files/${w.childId}/history?lang=en`);
    expect(textOf(en.body)).toContain(`History of file ${w.reference}`);
    expect(textOf(en.body)).toContain('The family');
  });

  it('facility staff, other families and signed-out visitors are refused; a malformed or unknown id is a 404; every attempt is recorded', async () => {
    const w = await world();
    for (const who of ['staff', 'parent', 'otherParent', 'anonymous'] as const) {
      const r = await w.clients[who].get(`/admin/files/${w.childId}/history`);
      expect(refused(r.status, r.headers.location), who).toBe(true);
      expect(r.body).not.toContain('Tremblay-Ouellet');
    }
    for (const id of ['pas-un-identifiant', "1' OR '1'='1", '00000000-0000-4000-8000-000000000000']) {
      const r = await w.clients.operator.get(`/admin/files/${encodeURIComponent(id)}/history`);
      expect(r.status).toBe(404);
    }
    expect(await events(w.tenant, 'waitlist.childFile.history', 'success')).toHaveLength(0);
    expect((await events(w.tenant, 'waitlist.childFile.history', 'denied')).length).toBe(7);
  });
});

describe('restoring a deleted file: one asks, a second administrator decides', () => {
  it('the operator asks from the console; the list and the review page are the administrators’; a second administrator approves after a fresh authentication', async () => {
    const w = await world();
    await records.deleteChildFile(t.deps, ctxFor(t, w.tenant, w.parent), w.childId);
    const op = w.clients.operator;
    await op.get(`/admin/files/${w.childId}/history`);
    let r = await op.post(`/admin/files/${w.childId}/restore-request`);
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe(`/admin/files/${w.childId}/history?requested=1`);
    expect(textOf((await op.get(r.headers.location as string)).body)).toContain('La demande de rétablissement est enregistrée.');
    const [req] = await requests(w);
    expect(req).toMatchObject({ child_id: w.childId, requested_by: w.ids.operator, decided_at: null });
    // Asking again keeps the one request.
    await op.post(`/admin/files/${w.childId}/restore-request`);
    expect(await requests(w)).toHaveLength(1);

    // The list and the review page: administrators only.
    for (const who of ['operator', 'staff', 'parent', 'otherParent', 'anonymous'] as const) {
      for (const url of ['/admin/restores', `/admin/restores/${req!.id}`]) {
        const page = await w.clients[who].get(url);
        expect(refused(page.status, page.headers.location), `${who} ${url}`).toBe(true);
        expect(page.body).not.toContain(w.reference);
      }
      await w.clients[who].get(home(who));
      const post = await w.clients[who].post(`/admin/restores/${req!.id}/approve`);
      expect(refused(post.status, post.headers.location), `${who} approve`).toBe(true);
    }
    expect((await rawChild(w)).deleted_at).not.toBeNull();
    const listedBefore = (await events(w.tenant, 'waitlist.childFile.restore.list', 'success')).length;
    const list = await w.clients.admin1.get('/admin/restores');
    expect(list.status).toBe(200);
    expect(textOf(list.body)).toContain(w.reference);
    expect(textOf(list.body)).toContain(w.emails.operator);
    expect(textOf(list.body)).not.toContain('Tremblay-Ouellet');
    const review = await w.clients.admin1.get(`/admin/restores/${req!.id}`);
    expect(review.status).toBe(200);
    expect(review.body).toContain(`<h1>Rétablir le dossier ${w.reference}\u202f?</h1>`);
    expect(review.body).toContain(`action="/admin/restores/${req!.id}/approve"`);
    expect((await events(w.tenant, 'waitlist.childFile.restore.list', 'success')).length).toBe(listedBefore + 2);

    // admin2 signed in more than five minutes ago: approving asks for a fresh authentication, and changes nothing until then.
    t.setNow(new Date(t.deps.clock().getTime() + 6 * 60_000));
    const a2 = w.clients.admin2;
    await a2.get(`/admin/restores/${req!.id}`);
    r = await a2.post(`/admin/restores/${req!.id}/approve`);
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe(`/reauth?return=${encodeURIComponent(`/admin/restores/${req!.id}`)}`);
    expect((await rawChild(w)).deleted_at).not.toBeNull();
    expect((await requests(w))[0]!.decided_at).toBeNull();
    await a2.get(r.headers.location as string);
    r = await a2.post('/reauth', { return: `/admin/restores/${req!.id}`, password: PASSWORD, code: await freshTotpCode(totpSecretFor(w.tenant.hosts[0]!, w.emails.admin2)!, t.deps.clock) });
    expect(r.headers.location).toBe(`/admin/restores/${req!.id}`);
    await a2.get(`/admin/restores/${req!.id}`);
    r = await a2.post(`/admin/restores/${req!.id}/approve`);
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe('/admin/restores?done=approved');
    expect(textOf((await a2.get('/admin/restores?done=approved')).body)).toContain('Le dossier est rétabli.');
    expect((await rawChild(w)).deleted_at).toBeNull();
    expect((await requests(w))[0]).toMatchObject({ decided_by: w.ids.admin2, decision: 'approved' });
    const [approved] = await events(w.tenant, 'waitlist.childFile.restore.approve', 'success');
    expect(approved).toMatchObject({ actor_account_id: w.ids.admin2, target_ids: [req!.id, w.childId] });

    // Decided: a second decision is a clear 409, in either language, and changes nothing.
    await w.clients.admin1.get('/admin/restores');
    r = await w.clients.admin1.post(`/admin/restores/${req!.id}/reject`);
    expect(r.status).toBe(409);
    expect(textOf(r.body)).toContain('Cette demande a déjà été décidée.');
    expect(textOf(r.body)).toContain('Rien n’a été modifié.');
    r = await w.clients.admin1.post(`/admin/restores/${req!.id}/reject?lang=en`);
    expect(r.status).toBe(409);
    expect(textOf(r.body)).toContain('This request has already been decided.');
    expect((await w.clients.admin1.get(`/admin/restores/${req!.id}`)).status).toBe(409);
    expect((await requests(w))[0]).toMatchObject({ decided_by: w.ids.admin2, decision: 'approved' });
    expect((await rawChild(w)).deleted_at).toBeNull();
  });

  it('the administrator who asked cannot decide (403, said in words); a malformed id is a 400; past the retention window, 410; none changes anything', async () => {
    const w = await world();
    await records.deleteChildFile(t.deps, ctxFor(t, w.tenant, w.parent), w.childId);
    const a1 = w.clients.admin1;
    await a1.get(`/admin/files/${w.childId}/history`);
    expect((await a1.post(`/admin/files/${w.childId}/restore-request`)).status).toBe(303);
    const [req] = await requests(w);
    const review = await a1.get(`/admin/restores/${req!.id}`);
    expect(textOf(review.body)).toContain('Vous avez fait cette demande');
    expect(review.body).not.toContain(`action="/admin/restores/${req!.id}/approve"`);
    let r = await a1.post(`/admin/restores/${req!.id}/approve`);
    expect(r.status).toBe(403);
    expect(textOf(r.body)).toContain('une autre personne de l’administration doit l’approuver');
    r = await a1.post(`/admin/restores/${req!.id}/approve?lang=en`);
    expect(textOf(r.body)).toContain('another person in the administration must approve it');
    await a1.get('/admin/restores?lang=fr');
    for (const bad of ['pas-un-identifiant', "1' OR '1'='1"]) {
      r = await a1.post(`/admin/restores/${encodeURIComponent(bad)}/approve`);
      expect(r.status).toBe(400);
      expect(textOf(r.body)).toContain('Cet identifiant n’est pas valide.');
      expect((await a1.get(`/admin/restores/${encodeURIComponent(bad)}`)).status).toBe(400);
    }
    expect((await a1.post('/admin/restores/00000000-0000-4000-8000-000000000000/approve')).status).toBe(404);
    expect((await requests(w))[0]!.decided_at).toBeNull();
    expect((await rawChild(w)).deleted_at).not.toBeNull();
    const denied = await events(w.tenant, 'waitlist.childFile.restore.approve', 'denied');
    expect(denied.map((e) => (e.details as { reason: string }).reason)).toEqual(['same_person', 'same_person', 'malformed_id', 'malformed_id', 'not_found']);

    // 31 days on: the window has passed; the first administrator (no expiry) signs in again.
    t.setNow(new Date(t.deps.clock().getTime() + 31 * DAY));
    const later = new Client(t.app, w.tenant.hosts[0]!);
    expect((await later.signIn(w.emails.admin1, PASSWORD)).status).toBe(303);
    // A second request by the operator is impossible now; the open one cannot be approved by someone else either.
    const admin1Again = await actorOf(t, w.tenant, w.ids.admin1, w.emails.admin1);
    await expect(records.decideChildFileRestore(t.deps, ctxFor(t, w.tenant, { ...admin1Again, accountId: w.ids.admin2 }), req!.id, 'approve')).rejects.toMatchObject({ reason: 'retention_expired' });
    await later.get(`/admin/files/${w.childId}/history`);
    r = await later.post(`/admin/files/${w.childId}/restore-request`);
    expect(r.status).toBe(410);
    expect(textOf(r.body)).toContain('Le délai de rétablissement de ce dossier est dépassé');
    expect(await requests(w)).toHaveLength(1);
    expect((await rawChild(w)).deleted_at).not.toBeNull();
  });

  it('restoring over a file registered again meanwhile is a 409 that says why', async () => {
    const w = await world();
    await records.deleteChildFile(t.deps, ctxFor(t, w.tenant, w.parent), w.childId);
    const t0 = today(t.deps.clock());
    await records.createChildFile(t.deps, ctxFor(t, w.tenant, w.parent), { firstName: 'Maëlle', lastName: 'Tremblay-Ouellet', birthDate: addMonths(t0, -9), nirec: w.nirec, desiredEntryDate: addMonths(t0, 2), daysOfCare: 1, inSubsidisedCare: false });
    await w.clients.operator.get('/admin/files');
    await w.clients.operator.post(`/admin/files/${w.childId}/restore-request`);
    const [req] = await requests(w);
    await w.clients.admin1.get(`/admin/restores/${req!.id}`);
    const r = await w.clients.admin1.post(`/admin/restores/${req!.id}/approve`);
    expect(r.status).toBe(409);
    expect(textOf(r.body)).toContain('Un autre dossier actif existe pour le même NIREC');
    expect((await rawChild(w)).deleted_at).not.toBeNull();
    expect((await requests(w))[0]!.decided_at).toBeNull();
  });
});

describe('the family after deleting a file', () => {
  it('sees it deleted and until when it can come back, asks for it; other families and signed-out visitors cannot', async () => {
    const w = await world();
    await records.deleteChildFile(t.deps, ctxFor(t, w.tenant, w.parent), w.childId);
    const c = w.clients.parent;
    const account = await c.get('/account');
    const section = account.body.split('id="deleted-files"')[1]!;
    expect(textOf(section)).toContain('Dossiers supprimés');
    expect(textOf(section)).toContain('Maëlle Tremblay-Ouellet');
    expect(textOf(section)).toContain(formatDate('fr', new Date(t.deps.clock().getTime() + 30 * DAY)));
    expect(section).toContain(`action="/children/${w.childId}/restore-request"`);
    const listed = (await events(w.tenant, 'waitlist.childFile.list', 'success')).filter((e) => e.purpose === 'parent.children.deleted');
    expect(listed.at(-1)).toMatchObject({ target_ids: [w.childId], actor_account_id: w.parent.accountId });
    expect(textOf((await c.get('/account?lang=en')).body)).toContain('Deleted files');
    await c.get('/account?lang=fr');

    for (const who of ['otherParent', 'staff', 'anonymous'] as const) {
      await w.clients[who].get(home(who));
      const r = await w.clients[who].post(`/children/${w.childId}/restore-request`);
      expect(refused(r.status, r.headers.location), who).toBe(true);
      expect(textOf((await w.clients[who].get('/account')).body)).not.toContain('Tremblay-Ouellet');
    }
    expect(await requests(w)).toHaveLength(0);
    expect((await events(w.tenant, 'waitlist.childFile.restore.request', 'denied')).length).toBe(3);

    await c.get('/account');
    const r = await c.post(`/children/${w.childId}/restore-request`);
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe('/account?status=restoreRequested');
    const after = await c.get('/account?status=restoreRequested');
    expect(textOf(after.body)).toContain('Votre demande de rétablissement est envoyée.');
    expect(textOf(after.body.split('id="deleted-files"')[1]!)).toContain('Demande envoyée');
    expect((await requests(w))[0]).toMatchObject({ requested_by: w.parent.accountId });
    // The administrators see the family asked, without its e-mail.
    const list = textOf((await w.clients.admin1.get('/admin/restores')).body);
    expect(list).toContain('La famille');
    expect(list).not.toContain(w.emails.parent);
    // A malformed id: refused, nothing asked.
    expect((await c.post('/children/pas-un-identifiant/restore-request')).status).toBe(404);
    expect(await requests(w)).toHaveLength(1);
    const trail = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('audit_events').select('action').where(sql<boolean>`${w.childId} = ANY(target_ids)`).where('action', '=', 'waitlist.childFile.restore.request').where('outcome', '=', 'success').execute());
    expect(trail).toHaveLength(1);
  });
});
