/**
 * Personal data at rest, through the records gateway:
 *  - what the tables hold is ciphertext bound to its row and column, never the
 *    names, birth dates, NIREC, phone or postal code in clear;
 *  - the NIREC is a blind index: duplicates are found however the NIREC is
 *    typed, within a tenant only, and an authorised agent looks a child up by
 *    it (audited, the NIREC itself never written down); others are refused;
 *  - a corrupt or moved ciphertext is an error naming the row and column,
 *    recorded in the audit log, with nothing lost elsewhere;
 *  - a database written before encryption is encrypted on first use.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { CiphertextError } from '../../src/crypto/errors.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { ValidationError } from '../../src/errors.ts';
import { insertSyntheticFamilies } from '../../src/records/bulk.ts';
import * as records from '../../src/records/gateway.ts';
import { encryptLegacyRows } from '../../src/records/legacy.ts';
import { listRankedApplications, readChildRanks } from '../../src/records/ranks.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client } from '../helpers/client.ts';
import { createTestDatabase, createTestTenant, type TestDatabase } from '../helpers/db.ts';
import { actorOf, createAccount, grantRole } from './people.ts';
import { createScenarioDb, migrateScenario } from './scenario-db.ts';
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

let seq = 0;
const t0 = () => today(new Date());

async function parentIn(tenant: Tenant): Promise<Actor> {
  const email = `p${seq++}.${Date.now().toString(36)}@exemple.test`;
  return actorOf(t, tenant, await createParent(t, tenant, email), email);
}

function childInput(over: Partial<{ firstName: string; lastName: string; nirec: string | null; birthDate: string }> = {}) {
  return { firstName: 'Philomène', lastName: 'Desrosiers', birthDate: addMonths(t0(), -11), nirec: 'PX4R7T2K9Q', desiredEntryDate: addMonths(t0(), 5), daysOfCare: 7, inSubsidisedCare: false, ...over };
}

describe('at rest', () => {
  it('the tables hold ciphertexts bound to their row, never the personal fields in clear', async () => {
    const tenant = await tenantFor(t);
    const facility = await createFacility(t, tenant);
    const parent = await parentIn(tenant);
    const { id } = await records.createChildFile(t.deps, ctxFor(t, tenant, parent), childInput({ birthDate: '2025-12-03' }));
    await inTenant(database.db, tenant.id, (trx) =>
      insertSyntheticFamilies(
        trx,
        tenant.id,
        [{ email: `s.${Date.now()}@exemple.test`, locale: 'fr', parentFirstName: 'Bérénice', parentLastName: 'Pelletier', phone: '579-555-0142', postalCode: 'J3Y 8Z9', children: [{ reference: `E-AR${Date.now().toString(36).toUpperCase().slice(-5)}`, firstName: 'Ulysse', lastName: 'Pelletier', birthDate: '2025-06-17', desiredEntryDate: addMonths(t0(), 4), registeredOn: t0(), daysOfCare: 31, inSubsidisedCare: false, applications: [{ facilityId: facility, siblingAttending: false, parentIsStaff: false }] }] }],
        new Date(),
        t.deps.keys,
      ),
    );
    const tables = await inTenant(database.db, tenant.id, async (trx) => {
      const { rows } = await sql<{ t: string; j: string }>`
        SELECT 'families' AS t, row_to_json(f)::text AS j FROM families f
        UNION ALL SELECT 'children', row_to_json(c)::text FROM children c
        UNION ALL SELECT 'versions', row_to_json(v)::text FROM child_file_versions v`.execute(trx);
      return rows;
    });
    expect(tables.length).toBeGreaterThanOrEqual(6);
    const clear = ['Philomène', 'Desrosiers', 'PX4R7T2K9Q', '2025-12-03', 'Bérénice', 'Pelletier', 'Ulysse', '579-555-0142', '5795550142', 'J3Y 8Z9', '2025-06-17'];
    for (const row of tables) {
      const hex = row.j.toLowerCase();
      for (const c of clear) {
        expect(row.j.includes(c), `${c} in ${row.t}`).toBe(false);
        expect(hex.includes(Buffer.from(c).toString('hex')), `${c} (hex) in ${row.t}`).toBe(false);
      }
    }
    const child = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('children').selectAll().where('id', '=', id).executeTakeFirstOrThrow());
    for (const col of ['first_name_enc', 'last_name_enc', 'birth_date_enc', 'nirec_enc'] as const) expect(child[col]![0], col).toBe(1);
    expect(child.nirec_index).toHaveLength(32);
    expect(child).toMatchObject({ legacy_first_name: null, legacy_nirec: null });
    expect(await storedChild(database.db, t.deps.keys, tenant.id, id)).toEqual({ first_name: 'Philomène', last_name: 'Desrosiers', birth_date: '2025-12-03', nirec: 'PX4R7T2K9Q' });
  });

  it('the database refuses a new row in clear or without its ciphertexts, whatever the code does', async () => {
    const tenant = await tenantFor(t);
    const parent = await parentIn(tenant);
    const { id } = await records.createChildFile(t.deps, ctxFor(t, tenant, parent), childInput({ nirec: null, birthDate: addMonths(t0(), -1) }));
    const family = (await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('children').select('family_id').where('id', '=', id).executeTakeFirstOrThrow())).family_id;
    const attempts = [
      () => inTenant(database.db, tenant.id, (trx) => trx.updateTable('children').set({ legacy_first_name: 'Philomène' }).where('id', '=', id).execute()),
      () => inTenant(database.db, tenant.id, (trx) => trx.updateTable('children').set({ nirec_enc: null }).where('id', '=', id).execute()),
      () => inTenant(database.db, tenant.id, (trx) => trx.updateTable('families').set({ legacy_phone: '450-555-0199' }).where('id', '=', family).execute()),
      () => inTenant(database.db, tenant.id, (trx) => trx.updateTable('children').set({ purged_at: new Date() }).where('id', '=', id).execute()),
    ];
    for (const a of attempts) await expect(a()).rejects.toThrow(/personal_data_encrypted/);
  });
});

describe('NIREC as a blind index', () => {
  it('finds the duplicate however the NIREC is typed, in the same tenant only', async () => {
    const tenant = await tenantFor(t);
    const a = await parentIn(tenant);
    const b = await parentIn(tenant);
    await records.createChildFile(t.deps, ctxFor(t, tenant, a), childInput({ nirec: 'QA12BC34DE' }));
    const dup = await records.createChildFile(t.deps, ctxFor(t, tenant, b), childInput({ nirec: 'QA12BC34DE' })).catch((e: unknown) => e);
    expect(dup).toBeInstanceOf(ValidationError);
    expect((dup as ValidationError).fields).toEqual({ nirec: 'nirecDuplicate' });
    // Through the form, typed with spaces and a hyphen: the same message as before encryption.
    const c = new Client(t.app, tenant.hosts[0]!);
    await c.signIn(b.email, PASSWORD);
    await c.get('/children/new');
    const r = await c.post('/children/new', { firstName: 'Autre', lastName: 'Enfant', birthDate: addMonths(t0(), -3), nirec: 'qa12 bc34-de', desiredEntryDate: addMonths(t0(), 2), day_mon: 'on' });
    expect(r.status).toBe(400);
    expect(r.body).toContain('Un dossier existe déjà pour cet enfant');
    // Another tenant: unrelated.
    const other = await tenantFor(t);
    await records.createChildFile(t.deps, ctxFor(t, other, await parentIn(other)), childInput({ nirec: 'QA12BC34DE' }));
    // Two registrations at the same moment: one wins, the other is told it is a duplicate.
    const race = await Promise.allSettled([1, 2].map(async () => records.createChildFile(t.deps, ctxFor(t, tenant, await parentIn(tenant)), childInput({ nirec: 'RACE000001' }))));
    expect(race.filter((x) => x.status === 'fulfilled')).toHaveLength(1);
    expect((race.find((x) => x.status === 'rejected') as PromiseRejectedResult).reason).toBeInstanceOf(ValidationError);
  });

  it('an authorised agent looks a child up by NIREC (deleted files too); the look-up is audited without the NIREC; others are refused', async () => {
    const tenant = await tenantFor(t);
    const facility = await createFacility(t, tenant);
    const staffEmail = `staff.${Date.now()}@exemple.test`;
    const staffId = await createStaff(t, tenant, staffEmail, facility);
    const adminEmail = `admin.${Date.now()}@exemple.test`;
    const adminId = await createAdmin(t, tenant, adminEmail);
    const opEmail = `op.${Date.now()}@exemple.test`;
    const opId = await createAccount(t, tenant, opEmail);
    await grantRole(t, tenant, opId, 'program_operator', staffId, adminId);
    const operator = await actorOf(t, tenant, opId, opEmail);
    const parent = await parentIn(tenant);
    const { id } = await records.createChildFile(t.deps, ctxFor(t, tenant, parent), childInput({ nirec: 'LOOK123456' }));
    const found = await records.lookupChildFileByNirec(t.deps, ctxFor(t, tenant, operator), ' look-1234 56 ');
    expect(found).toEqual([expect.objectContaining({ id, firstName: 'Philomène', nirecMasked: '•••••••456', status: 'active', deletedAt: null })]);
    await records.deleteChildFile(t.deps, ctxFor(t, tenant, parent), id);
    expect((await records.lookupChildFileByNirec(t.deps, ctxFor(t, tenant, operator), 'LOOK123456')).map((m) => m.status)).toEqual(['deleted']);
    expect(await records.lookupChildFileByNirec(t.deps, ctxFor(t, tenant, operator), 'NOBODY0000')).toEqual([]);
    await expect(records.lookupChildFileByNirec(t.deps, ctxFor(t, tenant, operator), 'x')).rejects.toBeInstanceOf(ValidationError);
    for (const who of [parent, await actorOf(t, tenant, staffId, staffEmail), null]) {
      await expect(records.lookupChildFileByNirec(t.deps, ctxFor(t, tenant, who), 'LOOK123456')).rejects.toMatchObject({ status: expect.any(Number) });
    }
    const events = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').selectAll().where('action', '=', 'waitlist.childFile.lookupByNirec').orderBy('occurred_at').orderBy('seq').execute());
    expect(events.map((e) => [e.outcome, e.details])).toEqual([
      ['success', { matches: 1 }],
      ['success', { matches: 1 }],
      ['success', { matches: 0 }],
      ['denied', expect.anything()],
      ['denied', expect.anything()],
      ['denied', expect.anything()],
    ]);
    expect(JSON.stringify(events)).not.toMatch(/LOOK|123456|NOBODY/);
  });
});

describe('bad ciphertexts', () => {
  it('a corrupt field is an error naming the row and column, audited as a failure; the other files read fine and nothing is overwritten', async () => {
    const tenant = await tenantFor(t);
    const a = await parentIn(tenant);
    const b = await parentIn(tenant);
    const { id: broken } = await records.createChildFile(t.deps, ctxFor(t, tenant, a), childInput({ nirec: 'CORRUPT001' }));
    const { id: fine } = await records.createChildFile(t.deps, ctxFor(t, tenant, b), childInput({ nirec: 'CORRUPT002' }));
    const before = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('children').selectAll().where('id', '=', broken).executeTakeFirstOrThrow());
    const flipped = Buffer.from(before.last_name_enc!);
    flipped[flipped.length - 3]! ^= 0x40;
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('children').set({ last_name_enc: flipped }).where('id', '=', broken).execute());
    const err = await records.readChildFile(t.deps, ctxFor(t, tenant, a), broken, 'parent.childFile.view').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CiphertextError);
    expect((err as Error).message).toBe(`children.last_name of row ${broken} (tenant ${tenant.id}): does not authenticate — damaged, or copied from another row, column or tenant`);
    const [failure] = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').selectAll().where('outcome', '=', 'failure').execute());
    expect(failure).toMatchObject({ action: 'waitlist.childFile.read', actor_account_id: a.accountId });
    expect(failure!.details).toMatchObject({ reason: 'ciphertext_invalid' });
    // An update that cannot read the file writes nothing.
    await expect(records.updateChildFile(t.deps, ctxFor(t, tenant, a), broken, childInput({ firstName: 'Autre', nirec: null }))).rejects.toBeInstanceOf(CiphertextError);
    const after = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('children').selectAll().where('id', '=', broken).executeTakeFirstOrThrow());
    expect(after.first_name_enc!.equals(before.first_name_enc!)).toBe(true);
    expect((await records.readChildFile(t.deps, ctxFor(t, tenant, b), fine, 'parent.childFile.view')).lastName).toBe('Desrosiers');
    // Through a page: a plain server error, and no personal data in it.
    const c = new Client(t.app, tenant.hosts[0]!);
    await c.signIn(a.email, PASSWORD);
    const page = await c.get(`/children/${broken}`);
    expect(page.status).toBe(500);
    expect(page.body).not.toContain('Desrosiers');
  });

  it('a ciphertext copied from another child, or from another column, does not decrypt', async () => {
    const tenant = await tenantFor(t);
    const a = await parentIn(tenant);
    const { id: x } = await records.createChildFile(t.deps, ctxFor(t, tenant, a), childInput({ firstName: 'Xavière', nirec: 'MOVE000001' }));
    const { id: y } = await records.createChildFile(t.deps, ctxFor(t, tenant, a), childInput({ firstName: 'Yolande', nirec: 'MOVE000002' }));
    const rowX = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('children').selectAll().where('id', '=', x).executeTakeFirstOrThrow());
    // Same family, same key: only the associated data stops it.
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('children').set({ first_name_enc: rowX.first_name_enc }).where('id', '=', y).execute());
    await expect(records.readChildFile(t.deps, ctxFor(t, tenant, a), y, 'parent.childFile.view')).rejects.toThrow(`children.first_name of row ${y}`);
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('children').set({ first_name_enc: rowX.last_name_enc }).where('id', '=', x).execute());
    await expect(records.readChildFile(t.deps, ctxFor(t, tenant, a), x, 'parent.childFile.view')).rejects.toThrow(`children.first_name of row ${x}`);
  });
});

describe('a database written before encryption', () => {
  it('a file without the clear birth month (before migration 0019): its birth date opened once, on the record, its month stored; one that does not open stays as it was', async () => {
    const tenant = await tenantFor(t);
    const birth = addMonths(t0(), -14);
    const ids: string[] = [];
    for (const [i, who] of [await parentIn(tenant), await parentIn(tenant), await parentIn(tenant)].entries()) {
      ids.push((await records.createChildFile(t.deps, ctxFor(t, tenant, who), childInput({ birthDate: birth, nirec: `MONTH0000${i}` }))).id);
    }
    const [x, y, z] = ids as [string, string, string];
    const rows = () => inTenant(database.db, tenant.id, (trx) => trx.selectFrom('children').select(['id', 'family_id', 'birth_month', 'birth_date_enc']).where('id', 'in', ids).orderBy('id').execute());
    const before = await rows();
    const family = new Map(before.map((r) => [r.id, r.family_id]));
    // As the releases before 0019 wrote them; z's birth date damaged besides.
    const damaged = Buffer.from(before.find((r) => r.id === z)!.birth_date_enc!);
    damaged[damaged.length - 2]! ^= 0x20;
    await inTenant(database.db, tenant.id, async (trx) => {
      await trx.updateTable('children').set({ birth_month: null }).where('id', 'in', ids).execute();
      await trx.updateTable('children').set({ birth_date_enc: damaged }).where('id', '=', z).execute();
    });

    expect(await encryptLegacyRows(database.db, t.deps.keys, tenant.id, new Date())).toEqual({ families: 0, children: 0, birthMonths: 2 });
    const month = `${birth.slice(0, 7)}-01`;
    expect(Object.fromEntries((await rows()).map((r) => [r.id, r.birth_month]))).toEqual({ [x]: month, [y]: month, [z]: null });
    const events = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['action', 'actor_roles', 'target_type', 'target_ids', 'family_ids', 'fields', 'purpose']).where('action', '=', 'records.legacy.birthMonth').execute());
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ actor_roles: ['system:records'], target_type: 'child', fields: ['birth_date'], purpose: 'system.records' });
    expect([...events[0]!.target_ids].sort()).toEqual([x, y].sort());
    expect([...events[0]!.family_ids].sort()).toEqual([family.get(x), family.get(y)].sort());
    // Once done, done: nothing opened again, nothing more on the record.
    expect(await encryptLegacyRows(database.db, t.deps.keys, tenant.id, new Date())).toEqual({ families: 0, children: 0, birthMonths: 0 });
    expect(await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select('id').where('action', '=', 'records.legacy.birthMonth').execute())).toHaveLength(1);
  });

  it('a ranking that opens another family’s birth date (a file without its month in clear) names that file and family, listed or not', async () => {
    const tenant = await tenantFor(t);
    const facility = await createFacility(t, tenant);
    const [a, b] = [await parentIn(tenant), await parentIn(tenant)];
    const file = async (who: Actor, firstName: string, nirec: string) => {
      const { id } = await records.createChildFile(t.deps, ctxFor(t, tenant, who), childInput({ firstName, nirec, birthDate: addMonths(t0(), -20) }));
      await records.addApplication(t.deps, ctxFor(t, tenant, who), id, { facilityId: facility, siblingAttending: false, parentIsStaff: false });
      return id;
    };
    const mine = await file(a, 'Aurèle', 'RANKAA0001');
    const theirs = await file(b, 'Bérénice', 'RANKBB0002');
    const [familyA, familyB] = await inTenant(database.db, tenant.id, async (trx) =>
      Promise.all([mine, theirs].map(async (id) => (await trx.selectFrom('children').select('family_id').where('id', '=', id).executeTakeFirstOrThrow()).family_id)),
    );
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('children').set({ birth_month: null }).where('id', '=', theirs).execute());
    const opened = () =>
      inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['action', 'actor_account_id', 'actor_roles', 'target_ids', 'family_ids', 'fields']).where('purpose', '=', 'ranking.ageGroup').orderBy('seq').execute());

    // A parent's rank: the other family's file is ranked from its opened birth date, and named with its family.
    const ranks = await readChildRanks(t.deps, ctxFor(t, tenant, a), mine);
    expect(ranks.ranks.map((r) => r.total)).toEqual([2]);
    // Guichet's own work, not the parent's: the other family sees « Guichet (traitement automatique) ».
    expect(await opened()).toEqual([{ action: 'waitlist.childFile.read', actor_account_id: null, actor_roles: ['system:ranking'], target_ids: [theirs], family_ids: [familyB], fields: ['birth_date'] }]);

    // The facility's list, cut to its first row: the file opened is named even when it is not listed.
    const staffEmail = `educ.rang.${Date.now().toString(36)}@exemple.test`;
    const staff = await actorOf(t, tenant, await createStaff(t, tenant, staffEmail, facility), staffEmail);
    const listed = await listRankedApplications(t.deps, ctxFor(t, tenant, staff), facility, null, { limit: 1 });
    expect(listed).toHaveLength(1);
    const last = (await opened()).at(-1)!;
    expect(last).toMatchObject({ action: 'waitlist.candidates.list', actor_account_id: null, actor_roles: ['system:ranking'], target_ids: [theirs], family_ids: [familyB] });
    expect(familyA).not.toBe(familyB);
  });

  it('is encrypted on first use: clear columns emptied, keys made, NIREC indexed, a first version written, the files read as before', async () => {
    // A database of the release before this one (migrations up to 0005), with families in clear.
    const s = await createScenarioDb({ upTo: 5 });
    try {
      const db = s.database.db;
      const { id: tenantId, slug } = await createTestTenant(s.database);
      const accountId = randomUUID();
      const familyId = randomUUID();
      const childId = randomUUID();
      const now = new Date();
      await sql`SELECT set_config('app.tenant_id', ${tenantId}, false)`.execute(db);
      await sql`INSERT INTO accounts (id, tenant_id, email, email_verified_at, locale) VALUES (${accountId}, ${tenantId}, ${`ancien.${Date.now()}@exemple.test`}, ${now}, 'fr')`.execute(db);
      await sql`INSERT INTO families (id, tenant_id, account_id, parent_first_name, parent_last_name, phone, postal_code, created_at, updated_at)
                VALUES (${familyId}, ${tenantId}, ${accountId}, 'Huguette', 'Marchand', '450-555-0177', 'J4B 1A1', ${now}, ${now})`.execute(db);
      await sql`INSERT INTO children (id, tenant_id, family_id, reference, first_name, last_name, birth_date, nirec, desired_entry_date, days_of_care, in_subsidised_care, created_at, updated_at)
                VALUES (${childId}, ${tenantId}, ${familyId}, 'E-LEGACY01', 'Octave', 'Marchand', '2025-04-04', 'OLD9876543', ${addMonths(t0(), 3)}, 31, false, ${now}, ${now})`.execute(db);
      await sql`SELECT set_config('app.tenant_id', '', false)`.execute(db);
      // The upgrade.
      await migrateScenario(s);
      const legacy = await sql<{ legacy_first_name: string; first_name_enc: Buffer | null }>`SELECT legacy_first_name, first_name_enc FROM children WHERE id = ${childId}`.execute(db);
      expect(legacy.rows[0]).toEqual({ legacy_first_name: 'Octave', first_name_enc: null });
      // The first use of the tenant.
      const app = await startTestApp(s.database);
      app.deps.keys = t.deps.keys;
      try {
        const tenant = (await app.deps.tenants.bySlug(slug))!;
        const actor: Actor = { accountId, tenantId, sessionId: null, email: 'x', emailVerified: true, locale: 'fr', memberships: [] };
        const file = await records.readChildFile(app.deps, ctxFor(app, tenant, actor), childId, 'parent.childFile.view');
        expect(file).toMatchObject({ firstName: 'Octave', lastName: 'Marchand', birthDate: '2025-04-04', nirecMasked: '•••••••543', reference: 'E-LEGACY01' });
        const { rows } = await sql<Record<string, unknown>>`SELECT c.*, f.legacy_phone, f.phone_enc FROM children c JOIN families f ON f.id = c.family_id WHERE c.id = ${childId}`.execute(db);
        expect(rows[0]).toMatchObject({ legacy_first_name: null, legacy_last_name: null, legacy_birth_date: null, legacy_nirec: null, legacy_phone: null });
        expect(rows[0]!.phone_enc).toBeInstanceOf(Buffer);
        expect((await records.lookupChildFileByNirec(app.deps, ctxFor(app, tenant, { ...actor, memberships: [{ id: randomUUID(), role: 'tenant_admin', facilityId: null, expiresAt: null }], ...{ mfa: true } } as Actor), 'OLD9876543')).map((m) => m.id)).toEqual([childId]);
        const dup = await records.createChildFile(app.deps, ctxFor(app, tenant, actor), childInput({ nirec: 'OLD9876543' })).catch((e: unknown) => e);
        expect(dup).toBeInstanceOf(ValidationError);
        const { rows: versions } = await sql<{ change: string }>`SELECT change FROM child_file_versions WHERE child_id = ${childId}`.execute(db);
        expect(versions.map((v) => v.change)).toEqual(['legacy']);
        // Each batch on the record, naming the family whose clear fields it read; the birth month kept in clear from the clear date.
        const { rows: audit } = await sql<{ action: string; target_type: string; family_ids: string[]; fields: string[]; details: unknown }>`SELECT action, target_type, family_ids, fields, details FROM audit_events WHERE action LIKE 'records.legacy.%' ORDER BY seq`.execute(db);
        expect(audit).toEqual([
          { action: 'records.legacy.encrypt', target_type: 'family', family_ids: [familyId], fields: ['parent_first_name', 'parent_last_name', 'phone', 'postal_code'], details: { families: 1 } },
          { action: 'records.legacy.encrypt', target_type: 'child', family_ids: [familyId], fields: ['first_name', 'last_name', 'birth_date', 'nirec'], details: { children: 1 } },
        ]);
        expect(rows[0]!.birth_month).toBe('2025-04-01');
      } finally {
        await app.close();
      }
    } finally {
      await s.close();
    }
  }, 60_000);
});
