/**
 * Crypto-shredding reaches backups. A backup of the whole data database is
 * taken (PGlite: dumpDataDir of the data directory; PostgreSQL: pg_dump);
 * then a family's only file is deleted, the retention window passes, and the
 * purge destroys the family's key. The backup is restored into a fresh
 * database and read with the *current* keyring: that family is unreadable —
 * wherever its ciphertexts lie — and every other family reads as before.
 *
 * It holds because the wrapped family keys never travel inside the data
 * backup: the keyring is a store of its own (a file beside the master key on
 * PGlite runs, a PostgreSQL database of its own on PostgreSQL runs), which
 * this test checks in the backup's bytes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { DataKeyDestroyedError, envelopeFor } from '../../src/crypto/envelope.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { insertSyntheticFamilies, type SyntheticFamily } from '../../src/records/bulk.ts';
import { openChild } from '../../src/records/fields.ts';
import * as records from '../../src/records/gateway.ts';
import { purgeExpired } from '../../src/records/purge.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createFacility, createParent, ctxFor, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { createTestKeyring, providerOver, type TestKeyring } from '../crypto/keyring-helper.ts';
import { createScenarioDb, plainDump, type ScenarioDb } from './scenario-db.ts';
import { storedChild } from './stored.ts';

let s: ScenarioDb;
let restored: ScenarioDb | undefined;
let kr: TestKeyring;
let t: TestApp;
let t2: TestApp | undefined;

beforeAll(async () => {
  s = await createScenarioDb();
  kr = await createTestKeyring();
  t = await startTestApp(s.database);
  t.deps.keys = providerOver(kr.keyring);
}, 60_000);

afterAll(async () => {
  await t2?.close();
  await restored?.close();
  await t?.close();
  await s?.close();
  await kr?.close();
});

const ORIGIN = { actorAccountId: null, actorRoles: ['system:test'], ip: null, userAgent: 'vitest', requestId: null };
const DAY = 86_400_000;

interface Family {
  email: string;
  actor: Actor;
  childId: string;
  familyId: string;
  firstName: string;
  lastName: string;
  nirec: string;
}

const NAMES: [string, string][] = [
  ['Rosalie', 'Thibodeau'],
  ['Édouard', 'Lachapelle'],
  ['Maëlys', 'Quintal-Brassard'],
  ['Anatole', 'Vézina'],
  ['Clémentine', 'Harvey'],
];

async function familyWithChild(tenant: Tenant, facility: string, i: number): Promise<Family> {
  const email = `famille.${i}.${Date.now().toString(36)}@exemple.test`;
  const accountId = await createParent(t, tenant, email);
  const actor: Actor = { accountId, tenantId: tenant.id, sessionId: null, email, emailVerified: true, locale: 'fr', memberships: [] };
  const [firstName, lastName] = NAMES[i]!;
  const nirec = `QC${String(7310452 + i * 7919)}`;
  const t0 = today(t.deps.clock());
  const { id: childId } = await records.createChildFile(t.deps, ctxFor(t, tenant, actor), { firstName, lastName, birthDate: addMonths(t0, -9 - i), nirec, desiredEntryDate: addMonths(t0, 3), daysOfCare: 31, inSubsidisedCare: false });
  await records.addApplication(t.deps, ctxFor(t, tenant, actor), childId, { facilityId: facility, siblingAttending: false, parentIsStaff: false });
  const { family_id } = await inTenant(s.database.db, tenant.id, (trx) => trx.selectFrom('children').select('family_id').where('id', '=', childId).executeTakeFirstOrThrow());
  return { email, actor, childId, familyId: family_id, firstName, lastName, nirec };
}

function synthetic(facility: string): SyntheticFamily[] {
  const t0 = today(new Date());
  return Array.from({ length: 40 }, (_, i) => ({
    email: `synth.${i}.${Date.now().toString(36)}@exemple.test`,
    locale: 'fr' as const,
    parentFirstName: 'Geneviève',
    parentLastName: `Ouellet${i}`,
    phone: `450-555-01${String(i).padStart(2, '0')}`,
    postalCode: 'J4K 3C3',
    children: [{ reference: `E-BK${Date.now().toString(36).slice(-4).toUpperCase()}${String(i).padStart(2, '0')}`, firstName: 'Hugo', lastName: `Ouellet${i}`, birthDate: addMonths(t0, -12), desiredEntryDate: addMonths(t0, 4), registeredOn: t0, daysOfCare: 15, inSubsidisedCare: false, applications: [{ facilityId: facility, siblingAttending: false, parentIsStaff: false }] }],
  }));
}

describe('a backup restored after a purge', () => {
  it('has the purged family unreadable and every other family readable, with the current keyring', async () => {
    const started = Date.now();
    const tenant = await tenantFor(t);
    const facility = await createFacility(t, tenant, { name: 'CPE Les Sauvegardes' });
    const families: Family[] = [];
    for (let i = 0; i < NAMES.length; i++) families.push(await familyWithChild(tenant, facility, i));
    const seeded = synthetic(facility);
    await inTenant(s.database.db, tenant.id, (trx) => insertSyntheticFamilies(trx, tenant.id, seeded, t.deps.clock(), t.deps.keys));
    const victim = families[2]!;

    // 1. The nightly backup of the data.
    const backup = await s.backup();
    const raw = await plainDump(s, backup);
    const [victimKey] = await kr.keyring.familyKeys(tenant.id, [victim.familyId]);
    expect(victimKey).toBeDefined();
    // The search sees what is there (a clear column, the reference, is found)…
    const { reference } = await inTenant(s.database.db, tenant.id, (trx) => trx.selectFrom('children').select('reference').where('id', '=', victim.childId).executeTakeFirstOrThrow());
    expect(raw.includes(Buffer.from(reference)), 'the search finds a clear column').toBe(true);
    // …and the family keys are not in it, in any form; nor is the personal data in clear.
    expect(raw.includes(victimKey!.wrapped), 'wrapped family key in the backup').toBe(false);
    expect(raw.includes(Buffer.from(victimKey!.wrapped.toString('hex'))), 'wrapped family key (hex) in the backup').toBe(false);
    for (const f of families) {
      for (const clear of [f.lastName, f.nirec]) expect(raw.includes(Buffer.from(clear, 'utf8')), `${clear} in clear in the backup`).toBe(false);
    }
    expect(raw.includes(Buffer.from('450-555-0107')), 'a telephone number in clear in the backup').toBe(false);

    // 2. The family deletes its only file; the retention window passes; the purge destroys the key.
    await records.deleteChildFile(t.deps, ctxFor(t, tenant, victim.actor), victim.childId);
    const later = new Date(Date.now() + (tenant.rules.deletedFileRetentionDays + 1) * DAY);
    t.setNow(later);
    const purged = await purgeExpired(s.database.db, t.deps.keys, tenant, ORIGIN, later);
    expect(purged).toEqual({ familiesPurged: 1, filesPurged: 1, familiesRekeyed: 0, keysDestroyed: 1 });
    expect(await kr.keyring.familyKeys(tenant.id, [victim.familyId])).toEqual([]);
    const live = await inTenant(s.database.db, tenant.id, (trx) => trx.selectFrom('children').selectAll().where('id', '=', victim.childId).executeTakeFirstOrThrow());
    expect(live).toMatchObject({ first_name_enc: null, last_name_enc: null, birth_date_enc: null, nirec_enc: null, nirec_index: null });
    expect(live.purged_at).not.toBeNull();

    // 3. Disaster: the backup is restored into a fresh database; the keyring is the current one.
    restored = await s.restore(backup);
    t2 = await startTestApp(restored.database);
    // A new process: nothing cached, every key read from the keyring store.
    t2.deps.keys = providerOver(kr.reopen());
    t2.setNow(later);
    const tenant2 = (await t2.deps.tenants.bySlug(tenant.slug))!;

    // The purged family: unreadable through the gateway (answered "not found", recorded as a failure)…
    await expect(records.readChildFile(t2.deps, ctxFor(t2, tenant2, victim.actor), victim.childId, 'parent.childFile.view')).rejects.toMatchObject({ kind: 'notFound' });
    const failure = await inTenant(restored.database.db, tenant.id, (trx) =>
      trx.selectFrom('audit_events').selectAll().where('action', '=', 'waitlist.childFile.read').where('outcome', '=', 'failure').executeTakeFirstOrThrow(),
    );
    expect(failure.details).toMatchObject({ reason: 'data_key_destroyed' });
    expect(failure.family_ids).toEqual([victim.familyId]);
    // …and at the bottom, its ciphertexts (still in the backup) no longer open.
    const row = await inTenant(restored.database.db, tenant.id, (trx) => trx.selectFrom('children').selectAll().where('id', '=', victim.childId).executeTakeFirstOrThrow());
    expect(row.first_name_enc).not.toBeNull();
    await expect(openChild(envelopeFor(t2.deps.keys), tenant.id, row, ['first_name'])).rejects.toThrow(DataKeyDestroyedError);
    await expect(openChild(envelopeFor(t2.deps.keys), tenant.id, row, ['first_name'])).rejects.toThrow(/destroyed on .* the file was purged/);

    // Every other family reads as it did.
    for (const f of families.filter((x) => x !== victim)) {
      const file = await records.readChildFile(t2.deps, ctxFor(t2, tenant2, f.actor), f.childId, 'parent.childFile.view');
      expect(file).toMatchObject({ firstName: f.firstName, lastName: f.lastName, nirecMasked: `${'•'.repeat(f.nirec.length - 3)}${f.nirec.slice(-3)}` });
      expect(file.applications).toHaveLength(1);
    }
    const ids = await inTenant(restored.database.db, tenant.id, async (trx) => (await trx.selectFrom('children').select(['id', 'reference']).where('reference', 'like', 'E-BK%').execute()));
    expect(ids).toHaveLength(seeded.length);
    for (const { id } of ids) expect((await storedChild(restored.database.db, t2.deps.keys, tenant.id, id)).first_name).toBe('Hugo');
    console.info(`[backup] ${families.length + seeded.length} families, backup ${(backup.bytes.length / 1024).toFixed(0)} KiB, purge and restore proven in ${Date.now() - started} ms`);
  }, 60_000);
});
