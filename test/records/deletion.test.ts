/**
 * Soft deletion, restoring under dual control, history, and the purge.
 *  - A parent deletes a file through the confirmation page: it leaves every
 *    list at once; both steps of delete-then-restore are audit events; the
 *    restored file is identical (same ciphertexts, same registrations, same
 *    rank).
 *  - Restoring needs two people: whoever asks cannot approve, the database
 *    refuses it too, and only a current administrator approves.
 *  - Every change is a version in the history, encrypted, that nobody rewrites.
 *  - After the retention window the purge destroys the family's key, or
 *    re-keys a family that keeps other files; a crash half-way is finished
 *    by the next run. The free text typed about the family in clear (an
 *    assisting agent's notes, the reasons of a protected file) goes with it.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { envelopeFor } from '../../src/crypto/envelope.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { markProtected } from '../../src/detection/protected.ts';
import { runTenantRetention } from '../../src/privacy/retention.ts';
import { AppError, ValidationError } from '../../src/errors.ts';
import * as records from '../../src/records/gateway.ts';
import { purgeExpired } from '../../src/records/purge.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { formatDate } from '../../src/web/i18n/index.ts';
import { createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { enrolTotp, freshTotpCode, totpSecretFor } from '../helpers/factors.ts';
import { actorOf, createAccount, grantRole } from './people.ts';
import { storedChild } from './stored.ts';

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
const ORIGIN = { actorAccountId: null, actorRoles: ['system:test'], ip: null, userAgent: 'vitest', requestId: null };
let seq = 0;

interface World {
  tenant: Tenant;
  facility: string;
  parent: Actor;
  parentClient: Client;
  staff: Actor;
  admin1: Actor;
  admin2: Actor;
  operator: Actor;
}

async function world(): Promise<World> {
  const n = `${Date.now().toString(36)}${(seq++).toString(36)}`;
  t.setNow(new Date());
  const tenant = await tenantFor(t);
  const facility = await createFacility(t, tenant, { name: 'CPE Les Bourgeons' });
  const parentEmail = `parent.${n}@exemple.test`;
  const parentId = await createParent(t, tenant, parentEmail);
  const staffEmail = `educ.${n}@exemple.test`;
  const staffId = await createStaff(t, tenant, staffEmail, facility);
  const admin1Email = `admin1.${n}@exemple.test`;
  const admin1Id = await createAdmin(t, tenant, admin1Email);
  const admin2Email = `admin2.${n}@exemple.test`;
  const admin2Id = await createAccount(t, tenant, admin2Email);
  await grantRole(t, tenant, admin2Id, 'tenant_admin', staffId, admin1Id);
  const operatorEmail = `operation.${n}@exemple.test`;
  const operatorId = await createAccount(t, tenant, operatorEmail);
  await grantRole(t, tenant, operatorId, 'program_operator', admin2Id, admin1Id);
  const parentClient = new Client(t.app, tenant.hosts[0]!);
  expect((await parentClient.signIn(parentEmail, PASSWORD)).status).toBe(303);
  return {
    tenant,
    facility,
    parent: await actorOf(t, tenant, parentId, parentEmail),
    parentClient,
    staff: await actorOf(t, tenant, staffId, staffEmail),
    admin1: await actorOf(t, tenant, admin1Id, admin1Email),
    admin2: await actorOf(t, tenant, admin2Id, admin2Email),
    operator: await actorOf(t, tenant, operatorId, operatorEmail),
  };
}

async function newChild(w: World, parent: Actor, over: Partial<{ firstName: string; nirec: string | null }> = {}): Promise<string> {
  const t0 = today(t.deps.clock());
  const { id } = await records.createChildFile(t.deps, ctxFor(t, w.tenant, parent), {
    firstName: over.firstName ?? 'Jeanne',
    lastName: 'Lapointe-Cyr',
    birthDate: addMonths(t0, -8),
    nirec: over.nirec === undefined ? `LP${Date.now().toString().slice(-8)}${seq++}` : over.nirec,
    desiredEntryDate: addMonths(t0, 2),
    daysOfCare: 0b11011,
    inSubsidisedCare: false,
  });
  await records.addApplication(t.deps, ctxFor(t, w.tenant, parent), id, { facilityId: w.facility, siblingAttending: false, parentIsStaff: false });
  return id;
}

async function events(tenant: Tenant, action: string) {
  return inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').selectAll().where('action', '=', action).orderBy('occurred_at').orderBy('seq').execute());
}

/** Every row of every table (as the owner, past row-level security) whose text holds the needle: "table: count". */
async function rowsHolding(needle: string): Promise<string[]> {
  const owner = database.ownerDb();
  const { rows: tables } = await sql<{ name: string }>`
    SELECT c.relname AS name FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
     WHERE ns.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1`.execute(owner);
  const out: string[] = [];
  for (const { name } of tables) {
    const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql.table(name)} x WHERE x::text LIKE ${`%${needle}%`}`.execute(owner);
    if (rows[0]!.n) out.push(`${name}: ${rows[0]!.n}`);
  }
  return out;
}

/** The agent asks each parent's consent, with a note (the consent is the row that keeps it). */
async function assistWithNotes(w: World, notes: [email: string, note: string][]): Promise<void> {
  const agent = new Client(t.app, w.tenant.hosts[0]!);
  expect((await agent.signIn(w.staff.email, PASSWORD)).status).toBe(303);
  for (const [email, note] of notes) {
    await agent.get('/assist');
    expect((await agent.post('/assist', { email, channel: 'phone', note })).status).toBe(303);
  }
}

const rawChild = (tenant: Tenant, id: string) => inTenant(database.db, tenant.id, (trx) => trx.selectFrom('children').selectAll().where('id', '=', id).executeTakeFirstOrThrow());

describe('deleting a file, and restoring it with a second person', () => {
  it('the parent deletes from a confirmation page that names the consequences; the file leaves every list at once', async () => {
    const w = await world();
    const id = await newChild(w, w.parent);
    const c = w.parentClient;
    const file = await c.get(`/children/${id}`);
    expect(file.body).toContain(`href="/children/${id}/delete"`);
    const confirm = await c.get(`/children/${id}/delete`);
    expect(confirm.status).toBe(200);
    const text = textOf(confirm.body);
    expect(confirm.body).toContain('<h1>Supprimer le dossier de Jeanne Lapointe-Cyr\u202f?</h1>');
    expect(text).toContain('Pendant 30 jours');
    expect(text).toContain('détruits pour de bon');
    expect(text).toContain('pas même dans les copies de sauvegarde');
    expect(text).toContain('Une seconde personne de l’administration approuve chaque rétablissement');
    const en = await c.get(`/children/${id}/delete?lang=en`);
    expect(textOf(en.body)).toContain('Delete Jeanne Lapointe-Cyr’s file?');
    await c.get(`/children/${id}/delete?lang=fr`);
    // Without the form's token: refused, nothing deleted.
    expect((await c.post(`/children/${id}/delete`, {}, { csrf: null })).status).toBe(403);
    expect((await rawChild(w.tenant, id)).deleted_at).toBeNull();
    const done = await c.post(`/children/${id}/delete`);
    expect(done.status).toBe(303);
    expect(done.headers.location).toBe('/account?status=deleted');
    const account = await c.get('/account?status=deleted');
    expect(textOf(account.body)).toContain('Le dossier a été supprimé. Le programme peut le rétablir à votre demande pendant 30 jours.');
    // Off the list of children; in the deleted files, with the last day it can come back.
    const [listed, deletedSection] = account.body.split('id="deleted-files"');
    expect(textOf(listed!)).not.toContain('Lapointe-Cyr');
    expect(textOf(deletedSection!)).toContain('Jeanne Lapointe-Cyr');
    expect(textOf(deletedSection!)).toContain(formatDate('fr', new Date(t.deps.clock().getTime() + 30 * DAY)));
    expect((await c.get(`/children/${id}`)).status).toBe(404);
    expect((await c.get(`/children/${id}/delete`)).status).toBe(404);
    const candidates = await records.listCandidates(t.deps, ctxFor(t, w.tenant, w.staff), w.facility, 1);
    expect(candidates.total).toBe(0);
    const [e] = await events(w.tenant, 'waitlist.childFile.delete');
    expect(e).toMatchObject({ outcome: 'success', actor_account_id: w.parent.accountId, target_ids: [id] });
    expect(e!.details).toMatchObject({ retentionDays: 30 });
    // A second deletion finds nothing, and is recorded as such.
    await expect(records.deleteChildFile(t.deps, ctxFor(t, w.tenant, w.parent), id)).rejects.toMatchObject({ kind: 'notFound' });
  });

  it('deleting asks for a fresh authentication when the last one is older than five minutes, for parents and staff alike', async () => {
    const w = await world();
    const id = await newChild(w, w.parent);
    const c = w.parentClient;
    const reauth = `/reauth?return=${encodeURIComponent(`/children/${id}/delete`)}`;
    t.setNow(new Date(t.deps.clock().getTime() + 6 * 60_000));
    // The confirmation page, then the form sent from it: both go to re-authentication first, and back.
    let r = await c.get(`/children/${id}/delete`);
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe(reauth);
    await c.get(`/children/${id}`);
    r = await c.post(`/children/${id}/delete`);
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe(reauth);
    expect((await rawChild(w.tenant, id)).deleted_at).toBeNull();
    expect(await events(w.tenant, 'waitlist.childFile.delete')).toHaveLength(0);
    await c.get(reauth);
    r = await c.post('/reauth', { return: `/children/${id}/delete`, password: 'pas le bon mot de passe' });
    expect(r.status).toBe(401);
    r = await c.post('/reauth', { return: `/children/${id}/delete`, password: PASSWORD });
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe(`/children/${id}/delete`);
    expect((await c.get(`/children/${id}/delete`)).status).toBe(200);
    expect((await c.post(`/children/${id}/delete`)).headers.location).toBe('/account?status=deleted');
    expect((await rawChild(w.tenant, id)).deleted_by).toBe(w.parent.accountId);

    // A programme operator deleting (staff, with an authenticator app): the same, with the app's code.
    const other = await newChild(w, w.parent);
    await enrolTotp(t.deps, w.tenant, w.operator.accountId, w.operator.email);
    const op = new Client(t.app, w.tenant.hosts[0]!);
    expect((await op.signIn(w.operator.email, PASSWORD)).status).toBe(303);
    t.setNow(new Date(t.deps.clock().getTime() + 6 * 60_000));
    await op.get('/admin/files');
    r = await op.post(`/children/${other}/delete`);
    expect(r.headers.location).toBe(`/reauth?return=${encodeURIComponent(`/children/${other}/delete`)}`);
    expect((await rawChild(w.tenant, other)).deleted_at).toBeNull();
    await op.get(r.headers.location as string);
    // The password alone does not do for an account with a second factor.
    expect((await op.post('/reauth', { return: `/children/${other}/delete`, password: PASSWORD })).status).toBe(400);
    r = await op.post('/reauth', { return: `/children/${other}/delete`, password: PASSWORD, code: await freshTotpCode(totpSecretFor(w.tenant.hosts[0]!, w.operator.email)!, t.deps.clock) });
    expect(r.status).toBe(303);
    await op.get('/admin/files');
    expect((await op.post(`/children/${other}/delete`)).status).toBe(303);
    expect((await rawChild(w.tenant, other)).deleted_by).toBe(w.operator.accountId);
  });

  it('another family, a facility, a security officer cannot delete; an operator can', async () => {
    const w = await world();
    const id = await newChild(w, w.parent);
    const otherEmail = `autre.${Date.now()}@exemple.test`;
    const other = await actorOf(t, w.tenant, await createParent(t, w.tenant, otherEmail), otherEmail);
    for (const actor of [other, w.staff, null]) {
      await expect(records.deleteChildFile(t.deps, ctxFor(t, w.tenant, actor), id)).rejects.toBeInstanceOf(AppError);
    }
    expect((await rawChild(w.tenant, id)).deleted_at).toBeNull();
    expect((await events(w.tenant, 'waitlist.childFile.delete')).filter((e) => e.outcome === 'denied')).toHaveLength(3);
    await records.deleteChildFile(t.deps, ctxFor(t, w.tenant, w.operator), id);
    expect((await rawChild(w.tenant, id)).deleted_by).toBe(w.operator.accountId);
  });

  it('deleting then restoring gives the identical file: the same ciphertexts, registrations and rank; both steps are audit events', async () => {
    const w = await world();
    const first = await newChild(w, w.parent, { firstName: 'Aube' });
    const secondEmail = `second.${Date.now()}@exemple.test`;
    const second = await actorOf(t, w.tenant, await createParent(t, w.tenant, secondEmail), secondEmail);
    await newChild(w, second, { firstName: 'Basile' });
    const beforeFile = await records.readChildFile(t.deps, ctxFor(t, w.tenant, w.parent), first, 'parent.childFile.view');
    const beforeRow = await rawChild(w.tenant, first);
    const beforeRank = (await records.listCandidates(t.deps, ctxFor(t, w.tenant, w.staff), w.facility, 1)).rows;

    await records.deleteChildFile(t.deps, ctxFor(t, w.tenant, w.parent), first);
    const { requestId } = await records.requestChildFileRestore(t.deps, ctxFor(t, w.tenant, w.admin1), first);
    // Asking again gives the same open request.
    expect((await records.requestChildFileRestore(t.deps, ctxFor(t, w.tenant, w.operator), first)).requestId).toBe(requestId);
    expect((await records.listRestoreRequests(t.deps, ctxFor(t, w.tenant, w.admin2))).map((r) => r.childId)).toEqual([first]);
    // The one who asked cannot approve; nor can an operator or the parent.
    await expect(records.decideChildFileRestore(t.deps, ctxFor(t, w.tenant, w.admin1), requestId, 'approve')).rejects.toMatchObject({ kind: 'forbidden' });
    for (const actor of [w.operator, w.parent, w.staff]) {
      await expect(records.decideChildFileRestore(t.deps, ctxFor(t, w.tenant, actor), requestId, 'approve')).rejects.toBeInstanceOf(AppError);
    }
    expect((await rawChild(w.tenant, first)).deleted_at).not.toBeNull();
    await records.decideChildFileRestore(t.deps, ctxFor(t, w.tenant, w.admin2), requestId, 'approve');

    const afterFile = await records.readChildFile(t.deps, ctxFor(t, w.tenant, w.parent), first, 'parent.childFile.view');
    expect(afterFile).toEqual(beforeFile);
    const afterRow = await rawChild(w.tenant, first);
    expect(afterRow).toEqual(beforeRow);
    expect((await records.listCandidates(t.deps, ctxFor(t, w.tenant, w.staff), w.facility, 1)).rows).toEqual(beforeRank);
    // A decided request is final.
    await expect(records.decideChildFileRestore(t.deps, ctxFor(t, w.tenant, w.admin2), requestId, 'reject')).rejects.toMatchObject({ kind: 'notFound' });

    const trail = await inTenant(database.db, w.tenant.id, (trx) =>
      trx.selectFrom('audit_events').select(['action', 'outcome', 'actor_account_id', 'details']).where(sql<boolean>`${first} = ANY(target_ids)`).where('action', 'like', 'waitlist.childFile.%').orderBy('occurred_at').orderBy('seq').execute(),
    );
    const steps = trail.filter((e) => e.outcome === 'success' && /delete|restore\.(request|approve)/.test(e.action)).map((e) => [e.action, e.actor_account_id]);
    expect(steps).toEqual([
      ['waitlist.childFile.delete', w.parent.accountId],
      ['waitlist.childFile.restore.request', w.admin1.accountId],
      ['waitlist.childFile.restore.approve', w.admin2.accountId],
    ]);
    const refused = (await events(w.tenant, 'waitlist.childFile.restore.approve')).filter((e) => e.outcome === 'denied' && e.target_ids.includes(requestId));
    expect(refused.map((e) => [e.actor_account_id, e.details])).toContainEqual([w.admin1.accountId, expect.objectContaining({ reason: 'same_person' })]);
  });

  it('the database refuses a self-approved restore and one by someone who is not an administrator, whatever the code does', async () => {
    const w = await world();
    const id = await newChild(w, w.parent);
    await records.deleteChildFile(t.deps, ctxFor(t, w.tenant, w.parent), id);
    const { requestId } = await records.requestChildFileRestore(t.deps, ctxFor(t, w.tenant, w.admin1), id);
    const decideAs = (who: string) =>
      inTenant(database.db, w.tenant.id, (trx) => trx.updateTable('child_file_restore_requests').set({ decided_by: who, decided_at: new Date(), decision: 'approved' }).where('id', '=', requestId).execute());
    await expect(decideAs(w.admin1.accountId)).rejects.toThrow(/check constraint|violates/);
    await expect(decideAs(w.operator.accountId)).rejects.toThrow(/the approver holds no current administrator role/);
    await expect(
      inTenant(database.db, w.tenant.id, (trx) =>
        trx.insertInto('child_file_restore_requests').values({ tenant_id: w.tenant.id, child_id: id, requested_by: w.admin1.accountId, requested_at: new Date(), decided_by: w.admin2.accountId, decided_at: new Date(), decision: 'approved' }).execute(),
      ),
    ).rejects.toThrow(/decided by a second person, not filed decided/);
  });

  it('after the retention window, a restore can no longer be asked for', async () => {
    const w = await world();
    const id = await newChild(w, w.parent);
    await records.deleteChildFile(t.deps, ctxFor(t, w.tenant, w.parent), id);
    t.setNow(new Date(Date.now() + 31 * DAY));
    await expect(records.requestChildFileRestore(t.deps, ctxFor(t, w.tenant, w.admin1), id)).rejects.toMatchObject({ kind: 'notFound' });
    const [denied] = (await events(w.tenant, 'waitlist.childFile.restore.request')).filter((e) => e.outcome === 'denied');
    expect(denied!.details).toMatchObject({ reason: 'retention_expired' });
  });

  it('restoring a file whose child was registered again meanwhile is refused: one live file per NIREC', async () => {
    const w = await world();
    const id = await newChild(w, w.parent, { nirec: 'DUPL1234567' });
    await records.deleteChildFile(t.deps, ctxFor(t, w.tenant, w.parent), id);
    // The same child registered again, the NIREC typed differently.
    await records.createChildFile(t.deps, ctxFor(t, w.tenant, w.parent), { firstName: 'Jeanne', lastName: 'Lapointe-Cyr', birthDate: addMonths(today(new Date()), -8), nirec: 'DUPL1234567', desiredEntryDate: addMonths(today(new Date()), 2), daysOfCare: 1, inSubsidisedCare: false });
    const { requestId } = await records.requestChildFileRestore(t.deps, ctxFor(t, w.tenant, w.operator), id);
    const err = await records.decideChildFileRestore(t.deps, ctxFor(t, w.tenant, w.admin1), requestId, 'approve').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).fields).toEqual({ nirec: 'nirecDuplicate' });
    expect((await rawChild(w.tenant, id)).deleted_at).not.toBeNull();
  });
});

describe('history', () => {
  it('keeps every change as an encrypted version, and nobody rewrites it', async () => {
    const w = await world();
    const id = await newChild(w, w.parent, { nirec: 'HIST0000001' });
    const ctx = ctxFor(t, w.tenant, w.parent);
    const input = (over: object) => ({ firstName: 'Jeanne', lastName: 'Lapointe-Cyr', birthDate: addMonths(today(new Date()), -8), nirec: null, desiredEntryDate: addMonths(today(new Date()), 2), daysOfCare: 0b11011, inSubsidisedCare: false, ...over });
    await records.updateChildFile(t.deps, ctx, id, input({ firstName: 'Jeanne-Aube' }));
    await records.updateChildFile(t.deps, ctx, id, input({ firstName: 'Jeanne-Aube' })); // no change: no version
    await records.updateChildFile(t.deps, ctx, id, input({ firstName: 'Jeanne-Aube', nirec: 'HIST0000002', inSubsidisedCare: true }));
    await records.deleteChildFile(t.deps, ctx, id);
    const { requestId } = await records.requestChildFileRestore(t.deps, ctxFor(t, w.tenant, w.operator), id);
    await records.decideChildFileRestore(t.deps, ctxFor(t, w.tenant, w.admin1), requestId, 'approve');

    const history = await records.readChildFileHistory(t.deps, ctxFor(t, w.tenant, w.operator), id);
    expect(history.map((v) => [v.version, v.change, v.changedFields, v.firstName, v.nirecMasked, v.inSubsidisedCare])).toEqual([
      [1, 'create', ['first_name', 'last_name', 'birth_date', 'nirec', 'desired_entry_date', 'days_of_care', 'in_subsidised_care'], 'Jeanne', '••••••••001', false],
      [2, 'update', ['first_name'], 'Jeanne-Aube', '••••••••001', false],
      [3, 'update', ['nirec', 'in_subsidised_care'], 'Jeanne-Aube', '••••••••002', true],
      [4, 'delete', ['deleted_at'], 'Jeanne-Aube', '••••••••002', true],
      [5, 'restore', ['deleted_at'], 'Jeanne-Aube', '••••••••002', true],
    ]);
    expect(history.map((v) => v.changedBy)).toEqual([w.parent.accountId, w.parent.accountId, w.parent.accountId, w.parent.accountId, w.admin1.accountId]);
    // Stored encrypted: no name, no NIREC in any version row.
    const rows = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('child_file_versions').selectAll().where('child_id', '=', id).execute());
    for (const r of rows) {
      expect(r.snapshot_enc![0]).toBe(1);
      for (const clear of ['Jeanne', 'HIST0000001', 'HIST0000002']) expect(r.snapshot_enc!.includes(Buffer.from(clear))).toBe(false);
    }
    // Only the ciphertext may ever change; the rest of a version is fixed, and versions are never deleted.
    await expect(inTenant(database.db, w.tenant.id, (trx) => trx.updateTable('child_file_versions').set({ changed_fields: ['nothing'] }).where('id', '=', rows[0]!.id).execute())).rejects.toThrow(/permission denied|history is not rewritten/);
    await expect(inTenant(database.db, w.tenant.id, (trx) => trx.deleteFrom('child_file_versions').where('id', '=', rows[0]!.id).execute())).rejects.toThrow(/permission denied/);
    // Parents and staff do not read the history.
    for (const actor of [w.parent, w.staff]) await expect(records.readChildFileHistory(t.deps, ctxFor(t, w.tenant, actor), id)).rejects.toMatchObject({ kind: 'notFound' });
  });

  it('versions are isolated by tenant like every personal table', async () => {
    const w = await world();
    const id = await newChild(w, w.parent);
    const other = await tenantFor(t);
    const seen = await inTenant(database.db, other.id, async (trx) => ({
      versions: await trx.selectFrom('child_file_versions').select('id').where('child_id', '=', id).execute(),
      requests: await trx.selectFrom('child_file_restore_requests').select('id').execute(),
    }));
    expect(seen).toEqual({ versions: [], requests: [] });
    // An account of another tenant (here forged onto this one's context) is refused by the gateway's guard before any
    // look-up, whatever the id: nothing is said about the file.
    await expect(records.readChildFileHistory(t.deps, ctxFor(t, other, { ...w.admin1, tenantId: other.id }), id)).rejects.toMatchObject({ kind: 'forbidden' });
    await expect(records.readChildFileHistory(t.deps, ctxFor(t, other, { ...w.admin1, tenantId: other.id }), randomUUID())).rejects.toMatchObject({ kind: 'forbidden' });
  });
});

describe('the purge', () => {
  it('leaves files inside the retention window; past it destroys the key of a family with nothing left, and re-keys a family that keeps a file', async () => {
    const w = await world();
    const kept = await newChild(w, w.parent, { firstName: 'Reste' });
    const gone = await newChild(w, w.parent, { firstName: 'Parti' });
    const aloneEmail = `seul.${Date.now()}@exemple.test`;
    const alone = await actorOf(t, w.tenant, await createParent(t, w.tenant, aloneEmail), aloneEmail);
    const lonely = await newChild(w, alone, { firstName: 'Unique' });
    const recent = await newChild(w, alone, { firstName: 'Récent' });
    await records.updateChildFile(t.deps, ctxFor(t, w.tenant, w.parent), kept, { firstName: 'Reste-Ici', lastName: 'Lapointe-Cyr', birthDate: addMonths(today(new Date()), -8), nirec: null, desiredEntryDate: addMonths(today(new Date()), 2), daysOfCare: 0b11011, inSubsidisedCare: false });
    const start = Date.now();
    await records.deleteChildFile(t.deps, ctxFor(t, w.tenant, w.parent), gone);
    await records.deleteChildFile(t.deps, ctxFor(t, w.tenant, alone), lonely);
    const familyOf = async (childId: string) => (await rawChild(w.tenant, childId)).family_id;
    const [fParent, fAlone] = [await familyOf(kept), await familyOf(lonely)];

    // Inside the window: nothing happens.
    expect(await purgeExpired(database.db, t.deps.keys, w.tenant, ORIGIN, new Date(start + 29 * DAY))).toEqual({ familiesPurged: 0, filesPurged: 0, familiesRekeyed: 0, keysDestroyed: 0 });
    // `alone` deletes its last file ten days later: its family is not purged while that one is restorable.
    t.setNow(new Date(start + 10 * DAY));
    await records.deleteChildFile(t.deps, ctxFor(t, w.tenant, alone), recent);
    const first = await purgeExpired(database.db, t.deps.keys, w.tenant, ORIGIN, new Date(start + 31 * DAY));
    expect(first).toEqual({ familiesPurged: 0, filesPurged: 2, familiesRekeyed: 2, keysDestroyed: 2 });

    // The family that keeps a file: key version 2, the kept file and its history read as before, the old key is gone.
    t.setNow(new Date(start)); // (the operator's grant lasts hours, not weeks)
    const env = envelopeFor(t.deps.keys);
    expect((await env.keyring.familyKeys(w.tenant.id, [fParent])).map((k) => k.version)).toEqual([2]);
    const file = await records.readChildFile(t.deps, ctxFor(t, w.tenant, w.parent), kept, 'parent.childFile.view');
    expect(file.firstName).toBe('Reste-Ici');
    expect((await records.readChildFileHistory(t.deps, ctxFor(t, w.tenant, w.operator), kept)).map((v) => v.firstName)).toEqual(['Reste', 'Reste-Ici']);
    const purgedRow = await rawChild(w.tenant, gone);
    expect(purgedRow).toMatchObject({ first_name_enc: null, nirec_index: null });
    expect(purgedRow.purged_at).not.toBeNull();
    const versions = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('child_file_versions').select(['snapshot_enc', 'purged_at']).where('child_id', '=', gone).execute());
    expect(versions.every((v) => v.snapshot_enc === null && v.purged_at !== null)).toBe(true);
    await expect(records.readChildFileHistory(t.deps, ctxFor(t, w.tenant, w.operator), gone)).rejects.toMatchObject({ kind: 'notFound' });

    // Then the last file of `alone` passes its window: the family's key is destroyed.
    const second = await purgeExpired(database.db, t.deps.keys, w.tenant, ORIGIN, new Date(start + 41 * DAY));
    expect(second).toEqual({ familiesPurged: 1, filesPurged: 1, familiesRekeyed: 0, keysDestroyed: 1 });
    expect(await env.keyring.familyKeys(w.tenant.id, [fAlone])).toEqual([]);
    const fam = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('families').selectAll().where('id', '=', fAlone).executeTakeFirstOrThrow());
    expect(fam).toMatchObject({ parent_first_name_enc: null, phone_enc: null, key_destroy_pending: null });
    expect(fam.purged_at).not.toBeNull();
    const audit = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('audit_events').select(['action', 'family_ids', 'target_ids']).where('action', 'like', 'records.%.purge').orderBy('occurred_at').orderBy('seq').execute());
    expect(audit.map((e) => e.action).sort()).toEqual(['records.childFile.purge', 'records.childFile.purge', 'records.family.purge']);
    // Nothing is left to purge.
    expect(await purgeExpired(database.db, t.deps.keys, w.tenant, ORIGIN, new Date(start + 42 * DAY))).toEqual({ familiesPurged: 0, filesPurged: 0, familiesRekeyed: 0, keysDestroyed: 0 });
    // The parent who kept a file still creates and reads files under the new key.
    const again = await newChild(w, w.parent, { firstName: 'Nouveau' });
    expect((await storedChild(database.db, t.deps.keys, w.tenant.id, again)).first_name).toBe('Nouveau');
  });

  it('takes the free text typed about the family: the assisting agent’s notes, why a file was protected, the reasons given to open it; the officers’ pages say it was erased', async () => {
    const w = await world();
    const n = `${Date.now().toString(36)}${(seq++).toString(36)}`;
    // Three families: one keeps a file (re-keyed), one loses its only file (its key destroyed), one is not touched.
    const kept = await newChild(w, w.parent, { firstName: 'Reste' });
    const gone = await newChild(w, w.parent, { firstName: 'Parti' });
    const aloneEmail = `seule.${n}@exemple.test`;
    const alone = await actorOf(t, w.tenant, await createParent(t, w.tenant, aloneEmail), aloneEmail);
    const lonely = await newChild(w, alone, { firstName: 'Unique' });
    const otherEmail = `autre.${n}@exemple.test`;
    const other = await actorOf(t, w.tenant, await createParent(t, w.tenant, otherEmail), otherEmail);
    const untouched = await newChild(w, other, { firstName: 'Intacte' });
    const officerEmail = `securite.${n}@exemple.test`;
    const officerId = await createAccount(t, w.tenant, officerEmail);
    await grantRole(t, w.tenant, officerId, 'security_officer', w.admin2.accountId, w.admin1.accountId);
    await enrolTotp(t.deps, w.tenant, officerId, officerEmail);

    // What people typed: an agent's note for each parent, why each file is protected, why each was opened.
    await assistWithNotes(w, [
      [w.parent.email, `note ${n} parent`],
      [aloneEmail, `note ${n} alone`],
      [otherEmail, `note ${n} other`],
    ]);
    const files = { kept, gone, lonely, untouched };
    for (const [name, id] of Object.entries(files)) {
      await markProtected(t.deps, ctxFor(t, w.tenant, w.operator), id, `marked ${n} ${name}`);
      await records.readChildFileHistory(t.deps, ctxFor(t, w.tenant, w.operator), id, { reason: `opened ${n} ${name}` });
    }
    // Each text is in one row of one table, and nowhere else (not the alert, not the audit log, not a mail).
    expect(await rowsHolding(`note ${n} parent`)).toEqual(['assisted_sessions: 1']);
    expect(await rowsHolding(`marked ${n} gone`)).toEqual(['protected_files: 1']);
    expect(await rowsHolding(`opened ${n} gone`)).toEqual(['protected_file_openings: 1']);

    const start = Date.now();
    await records.deleteChildFile(t.deps, ctxFor(t, w.tenant, w.parent), gone);
    await records.deleteChildFile(t.deps, ctxFor(t, w.tenant, alone), lonely);
    expect(await purgeExpired(database.db, t.deps.keys, w.tenant, ORIGIN, new Date(start + 31 * DAY))).toEqual({ familiesPurged: 1, filesPurged: 2, familiesRekeyed: 1, keysDestroyed: 2 });

    // Gone from every row of every table: the purged files' reasons, and the notes about both families that lost a file.
    for (const needle of [`note ${n} parent`, `note ${n} alone`, `marked ${n} gone`, `opened ${n} gone`, `marked ${n} lonely`, `opened ${n} lonely`]) {
      expect(await rowsHolding(needle), needle).toEqual([]);
    }
    // What the other files and the untouched family have stays as it was.
    expect(await rowsHolding(`note ${n} other`)).toEqual(['assisted_sessions: 1']);
    for (const name of ['kept', 'untouched']) {
      expect(await rowsHolding(`marked ${n} ${name}`)).toEqual(['protected_files: 1']);
      expect(await rowsHolding(`opened ${n} ${name}`)).toEqual(['protected_file_openings: 1']);
    }
    // The openings themselves stay, for the officers: who, which file, when, the alert. Their alerts keep no reason.
    const openings = await inTenant(database.db, w.tenant.id, (trx) =>
      trx.selectFrom('protected_file_openings').select(['child_id', 'account_id', 'reason', 'alert_id', 'opened_at']).where('child_id', 'in', Object.values(files)).execute(),
    );
    expect(Object.fromEntries(openings.map((o) => [o.child_id, o.reason]))).toEqual({ [kept]: `opened ${n} kept`, [gone]: null, [lonely]: null, [untouched]: `opened ${n} untouched` });
    expect(openings.every((o) => o.account_id === w.operator.accountId && o.alert_id && o.opened_at)).toBe(true);
    const alerts = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('detection_alerts').select(['id', 'details']).where('id', 'in', openings.map((o) => o.alert_id!)).execute());
    expect(alerts.map((a) => a.details)).toEqual([{ files: 1 }, { files: 1 }, { files: 1 }, { files: 1 }]);
    const marks = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('protected_files').select(['child_id', 'reason', 'marked_by']).where('child_id', 'in', Object.values(files)).execute());
    expect(Object.fromEntries(marks.map((m) => [m.child_id, m.reason]))).toEqual({ [kept]: `marked ${n} kept`, [gone]: null, [lonely]: null, [untouched]: `marked ${n} untouched` });
    const purges = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('audit_events').select(['action', 'details']).where('action', 'like', 'records.%.purge').orderBy('seq').execute());
    expect(purges.map((e) => [e.action, (e.details as { reasonsErased: number }).reasonsErased, (e.details as { notesErased: number }).notesErased]).sort()).toEqual([
      ['records.childFile.purge', 2, 1],
      ['records.family.purge', 2, 1],
    ]);
    // The database lets the application erase a reason, never write another.
    await expect(inTenant(database.db, w.tenant.id, (trx) => trx.updateTable('protected_file_openings').set({ reason: 'autre chose' }).where('child_id', '=', kept).execute())).rejects.toThrow(/erased, not rewritten/);
    await expect(inTenant(database.db, w.tenant.id, (trx) => trx.updateTable('assisted_sessions').set({ note: 'autre chose' }).where('parent_account_id', '=', other.accountId).execute())).rejects.toThrow(/erased, not rewritten/);

    // The officers' review and the alert still read, and say the reason went with the file (French, then English).
    t.setNow(new Date(start)); // (the officer's grant lasts hours, not weeks)
    const officer = new Client(t.app, w.tenant.hosts[0]!);
    expect((await officer.signIn(officerEmail, PASSWORD)).status).toBe(303);
    const review = await officer.get('/security/protected');
    expect(review.status).toBe(200);
    const reviewText = textOf(review.body);
    const ref = async (id: string) => (await rawChild(w.tenant, id)).reference;
    expect(reviewText).toContain(await ref(gone));
    expect(reviewText.split('Effacée avec le dossier').length - 1).toBe(2);
    expect(reviewText).toContain(`opened ${n} kept`);
    expect(reviewText).toContain(`opened ${n} untouched`);
    expect(reviewText).not.toContain(`opened ${n} gone`);
    expect(textOf((await officer.get('/security/protected?lang=en')).body).split('Erased with the file').length - 1).toBe(2);
    const alertOf = (id: string) => openings.find((o) => o.child_id === id)!.alert_id!;
    const goneAlert = await officer.get(`/security/alerts/${alertOf(gone)}?lang=fr`);
    expect(goneAlert.status).toBe(200);
    expect(textOf(goneAlert.body)).toContain(`Raison donnée — ${await ref(gone)} Effacée avec le dossier`);
    expect(textOf((await officer.get(`/security/alerts/${alertOf(gone)}?lang=en`)).body)).toContain(`Reason given — ${await ref(gone)} Erased with the file`);
    expect(textOf((await officer.get(`/security/alerts/${alertOf(kept)}?lang=fr`)).body)).toContain(`Raison donnée — ${await ref(kept)} opened ${n} kept`);
  });

  it('a parent’s account closed by the rules takes the assisting agents’ notes about them, even with no file ever made', async () => {
    const w = await world();
    const n = `${Date.now().toString(36)}${(seq++).toString(36)}`;
    await assistWithNotes(w, [[w.parent.email, `note ${n} sans dossier`]]);
    expect(await rowsHolding(`note ${n} sans dossier`)).toEqual(['assisted_sessions: 1']);
    const r = await runTenantRetention(t.deps, w.tenant, ORIGIN, new Date(Date.now() + 25 * 31 * DAY));
    expect(r.accountsClosed).toBe(1);
    expect(await rowsHolding(`note ${n} sans dossier`)).toEqual([]);
    const closed = await events(w.tenant, 'records.account.purge');
    expect(closed.map((e) => [e.target_ids, (e.details as { notesErased: number }).notesErased])).toEqual([[[w.parent.accountId], 1]]);
  });

  it('a purge interrupted after its data transaction is finished by the next run: the key is destroyed then', async () => {
    const w = await world();
    const id = await newChild(w, w.parent);
    await records.deleteChildFile(t.deps, ctxFor(t, w.tenant, w.parent), id);
    const familyId = (await rawChild(w.tenant, id)).family_id;
    const env = envelopeFor(t.deps.keys);
    // The keyring fails once, after the data transaction committed.
    const ring = env.keyring;
    const real = ring.destroyFamilyKeys.bind(ring);
    ring.destroyFamilyKeys = async () => {
      throw new Error('keyring unreachable');
    };
    try {
      await expect(purgeExpired(database.db, t.deps.keys, w.tenant, ORIGIN, new Date(Date.now() + 31 * DAY))).rejects.toThrow(/keyring unreachable/);
    } finally {
      ring.destroyFamilyKeys = real;
    }
    const pending = await inTenant(database.db, w.tenant.id, (trx) => trx.selectFrom('families').select(['key_destroy_pending', 'purged_at']).where('id', '=', familyId).executeTakeFirstOrThrow());
    expect(pending.key_destroy_pending).toBe(1);
    expect(pending.purged_at).not.toBeNull();
    expect(await ring.familyKeys(w.tenant.id, [familyId])).toHaveLength(1);
    const r = await purgeExpired(database.db, t.deps.keys, w.tenant, ORIGIN, new Date(Date.now() + 32 * DAY));
    expect(r).toEqual({ familiesPurged: 0, filesPurged: 0, familiesRekeyed: 0, keysDestroyed: 1 });
    expect(await ring.familyKeys(w.tenant.id, [familyId])).toEqual([]);
  });
});
