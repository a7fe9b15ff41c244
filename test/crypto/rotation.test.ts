/**
 * Key rotation, online and resumable, with the keyring in its production
 * shape (a file on PGlite runs, a PostgreSQL database of its own on
 * PostgreSQL runs):
 *  - a tenant rotation re-wraps every family key while the service keeps
 *    answering: reads by parents and staff run all along, through the
 *    gateway and straight from the keyring, and a family created during the
 *    rotation ends under the new key;
 *  - interrupted half-way, nothing is lost, reads work, and the next run
 *    resumes where it stopped (no second new version);
 *  - a master rotation re-wraps the tenant keys under a new master version,
 *    and a provider without that version is told so by name.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { Envelope } from '../../src/crypto/envelope.ts';
import { keyProviderFromSecret, type KeyProvider } from '../../src/crypto/keys.ts';
import { rotateMaster, rotateTenantKey } from '../../src/crypto/rotation.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { insertSyntheticFamilies, type SyntheticFamily } from '../../src/records/bulk.ts';
import * as records from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createFacility, createParent, createStaff, ctxFor, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { actorOf } from '../records/people.ts';
import { storedChild } from '../records/stored.ts';
import { createTestKeyring, providerOver, SECRET, type TestKeyring } from './keyring-helper.ts';

let database: TestDatabase;
let t: TestApp;
let kr: TestKeyring;

beforeAll(async () => {
  database = await createTestDatabase();
  kr = await createTestKeyring();
  t = await startTestApp(database);
  t.deps.keys = providerOver(kr.keyring);
});

afterAll(async () => {
  await t?.close();
  await database?.close();
  await kr?.close();
});

interface Setup {
  tenant: Tenant;
  facility: string;
  parent: Actor;
  childId: string;
  staff: Actor;
  synthetic: string[];
}

function families(facility: string, n: number, tag: string): SyntheticFamily[] {
  const t0 = today(new Date());
  return Array.from({ length: n }, (_, i) => ({
    email: `rot.${tag.toLowerCase()}.${i}@exemple.test`,
    locale: 'fr' as const,
    parentFirstName: 'Solange',
    parentLastName: `Morin${i}`,
    phone: `450-555-01${String(i % 100).padStart(2, '0')}`,
    postalCode: 'J4K 1A1',
    children: [{ reference: `E-R${tag}${String(i).padStart(3, '0')}`, firstName: 'Timothée', lastName: `Morin${i}`, birthDate: addMonths(t0, -15), desiredEntryDate: addMonths(t0, 2), registeredOn: t0, daysOfCare: 31, inSubsidisedCare: false, applications: [{ facilityId: facility, siblingAttending: false, parentIsStaff: false }] }],
  }));
}

async function setup(n = 150): Promise<Setup> {
  const tag = Math.random().toString(36).slice(2, 7).toUpperCase();
  const tenant = await tenantFor(t);
  const facility = await createFacility(t, tenant);
  const email = `parent.${tag.toLowerCase()}@exemple.test`;
  const parent = await actorOf(t, tenant, await createParent(t, tenant, email), email);
  const t0 = today(new Date());
  const { id: childId } = await records.createChildFile(t.deps, ctxFor(t, tenant, parent), { firstName: 'Capucine', lastName: 'Roy', birthDate: addMonths(t0, -5), nirec: `ROT${tag}1`, desiredEntryDate: addMonths(t0, 1), daysOfCare: 31, inSubsidisedCare: false });
  await records.addApplication(t.deps, ctxFor(t, tenant, parent), childId, { facilityId: facility, siblingAttending: false, parentIsStaff: false });
  const staffEmail = `staff.${tag.toLowerCase()}@exemple.test`;
  const staff = await actorOf(t, tenant, await createStaff(t, tenant, staffEmail, facility), staffEmail);
  await inTenant(database.db, tenant.id, (trx) => insertSyntheticFamilies(trx, tenant.id, families(facility, n, tag), new Date(), t.deps.keys));
  const synthetic = await inTenant(database.db, tenant.id, async (trx) => (await trx.selectFrom('children').select('id').where('reference', 'like', `E-R${tag}%`).execute()).map((r) => r.id));
  return { tenant, facility, parent, childId, staff, synthetic };
}

/** A process that has cached nothing: every key comes from the keyring store (its own connection to it). */
let otherProcessRing: ReturnType<TestKeyring['reopen']> | undefined;
const freshProvider = (): KeyProvider => providerOver((otherProcessRing ??= kr.reopen()));

describe('rotating a tenant key', () => {
  it('re-wraps every family key while the service keeps answering', async () => {
    const s = await setup(150);
    const env = new Envelope(t.deps.keys);
    expect((await kr.keyring.tenantKeys(s.tenant.id, 'kek')).map((k) => k.version)).toEqual([1]);
    let rotating = true;
    let reads = 0;
    let staffPages = 0;
    const failures: string[] = [];
    let newcomer: string | null = null;
    const reader = (async () => {
      let i = 0;
      while (rotating) {
        // A request arrives from the network: let timers run (PGlite answers without leaving the microtask queue).
        await new Promise((res) => setImmediate(res));
        try {
          const file = await records.readChildFile(t.deps, ctxFor(t, s.tenant, s.parent), s.childId, 'parent.childFile.view');
          if (file.firstName !== 'Capucine') failures.push(`read ${file.firstName}`);
          // A page of candidates counts as one file read for the staff member: stay under the bulk-read
          // rule (more than 20 in 5 minutes suspends), however long a loaded machine takes to rotate.
          if (i % 3 === 0 && staffPages < 18) {
            staffPages++;
            const page = await records.listCandidates(t.deps, ctxFor(t, s.tenant, s.staff), s.facility, 1 + (staffPages % 3));
            if (!page.rows.length) failures.push('no candidates');
          }
          // Straight from the keyring, as another process would: nothing cached.
          const id = s.synthetic[i % s.synthetic.length]!;
          if ((await storedChild(database.db, freshProvider(), s.tenant.id, id)).first_name !== 'Timothée') failures.push(`synthetic ${id}`);
          if (i === 1) {
            // A family created while the rotation runs.
            const email = `nouveau.${randomUUID()}@exemple.test`;
            const p = await actorOf(t, s.tenant, await createParent(t, s.tenant, email), email);
            newcomer = (await records.createChildFile(t.deps, ctxFor(t, s.tenant, p), { firstName: 'Arrivée', lastName: 'Pendant', birthDate: addMonths(today(new Date()), -2), nirec: null, desiredEntryDate: addMonths(today(new Date()), 3), daysOfCare: 1, inSubsidisedCare: false })).id;
          }
          reads += 2;
          i++;
        } catch (err) {
          failures.push(String(err));
        }
      }
    })();
    const progress: number[] = [];
    let r: Awaited<ReturnType<typeof rotateTenantKey>>;
    try {
      r = await rotateTenantKey(env, s.tenant.id, {
        batchSize: 10,
        onProgress: (p) => progress.push(p.done),
        // Leave room for the readers between batches, as a busy server would.
        afterBatch: () => new Promise((res) => setTimeout(res, 20)),
      });
    } finally {
      rotating = false;
      await reader;
    }
    expect(failures).toEqual([]);
    expect(reads).toBeGreaterThanOrEqual(12);
    expect(r).toMatchObject({ fromVersion: 1, toVersion: 2, resumed: false, retired: [1] });
    expect(r.rewrapped).toBeGreaterThanOrEqual(151);
    expect(progress.at(-1)).toBe(r.total);
    // Every family key is under version 2 (the newcomer's too), and version 1 is gone.
    expect(await kr.keyring.countFamilyKeys(s.tenant.id, 2)).toBe(0);
    expect((await kr.keyring.tenantKeys(s.tenant.id, 'kek')).map((k) => k.version)).toEqual([2]);
    expect(newcomer).not.toBeNull();
    const p = freshProvider();
    expect((await storedChild(database.db, p, s.tenant.id, newcomer!)).first_name).toBe('Arrivée');
    for (const id of s.synthetic.slice(0, 20)) expect((await storedChild(database.db, p, s.tenant.id, id)).first_name).toBe('Timothée');
    console.info(`[rotation] ${r.total} family keys re-wrapped in batches of 10 while ${reads} reads succeeded`);
  }, 60_000);

  it('interrupted half-way loses nothing, keeps reading, and resumes where it stopped', async () => {
    const s = await setup(60);
    const env = new Envelope(t.deps.keys);
    await expect(
      rotateTenantKey(env, s.tenant.id, {
        batchSize: 10,
        afterBatch: (n) => {
          if (n === 3) throw new Error('the server was stopped');
        },
      }),
    ).rejects.toThrow('the server was stopped');
    const open = await kr.keyring.openRotation('tenant', s.tenant.id);
    expect(open).toMatchObject({ fromVersion: 1, toVersion: 2, done: 30, finishedAt: null });
    expect(await kr.keyring.countFamilyKeys(s.tenant.id, 2)).toBe(31);
    expect((await kr.keyring.tenantKeys(s.tenant.id, 'kek')).map((k) => k.version)).toEqual([1, 2]);
    // Meanwhile everything reads, from a process that caches nothing.
    const p = freshProvider();
    for (const id of [s.childId, ...s.synthetic]) expect((await storedChild(database.db, p, s.tenant.id, id)).last_name).toMatch(/^(Roy|Morin\d+)$/);
    // Resumed by another process: the same target version, the rest re-wrapped.
    const r = await rotateTenantKey(new Envelope(freshProvider()), s.tenant.id, { batchSize: 10 });
    expect(r).toMatchObject({ fromVersion: 1, toVersion: 2, resumed: true, rewrapped: 31, total: 61, retired: [1] });
    expect(await kr.keyring.openRotation('tenant', s.tenant.id)).toBeNull();
    expect((await kr.keyring.tenantKeys(s.tenant.id, 'kek')).map((k) => k.version)).toEqual([2]);
    const q = freshProvider();
    for (const id of [s.childId, ...s.synthetic]) expect((await storedChild(database.db, q, s.tenant.id, id)).last_name).toMatch(/^(Roy|Morin\d+)$/);
  }, 60_000);
});

describe('rotating the master key', () => {
  it('re-wraps the tenant keys under a new master version, resumably; derive() is unchanged; a provider without it is told so', async () => {
    const s = await setup(5);
    const provider = t.deps.keys;
    const before = provider.derive('csrf');
    const env = new Envelope(provider);
    const tenantKeys = (await kr.keyring.allTenantKeys()).length;
    await expect(rotateMaster(env, { afterBatch: (n) => { if (n === 1) throw new Error('interrupted'); } })).rejects.toThrow('interrupted');
    expect(await provider.currentMasterVersion()).toBe(2);
    const r = await rotateMaster(env);
    expect(r).toMatchObject({ toVersion: 2, resumed: true, total: tenantKeys });
    expect(r.rewrapped).toBe(tenantKeys - 1);
    for (const k of await kr.keyring.allTenantKeys()) expect(provider.masterVersionOf(k.wrapped)).toBe(2);
    expect(provider.derive('csrf').equals(before)).toBe(true);
    expect((await storedChild(database.db, provider, s.tenant.id, s.childId)).first_name).toBe('Capucine');
    // A process still holding only the old master key: told which version it lacks.
    const stale = new Envelope(keyProviderFromSecret(SECRET, kr.reopen()));
    await expect(stale.tenantKey(s.tenant.id, 'kek', (await kr.keyring.tenantKeys(s.tenant.id, 'kek')).at(-1)!.version)).rejects.toThrow(/master key version 2 is not in memory/);
    // A second rotation makes version 3 and forgets 2 (the root secret stays).
    const again = await rotateMaster(env);
    expect(again).toMatchObject({ toVersion: 3, resumed: false, retired: [2] });
    expect(await provider.masterVersions()).toEqual([1, 3]);
    expect((await storedChild(database.db, provider, s.tenant.id, s.childId)).first_name).toBe('Capucine');
  }, 60_000);
});
