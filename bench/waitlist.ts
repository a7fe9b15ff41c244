/**
 * The waitlist at scale, on PostgreSQL with a scale seed (`seedScale`, the
 * same code as `guichet seed --children`):
 *
 *   waitlist.candidates.p50 / .p95   a facility's ranked candidate list (page 1, 50 rows)
 *                                    through the real records path (decide, audit
 *                                    event; age groups from the clear birth month),
 *                                    busiest facilities;
 *                                    baseline: one tenant transaction with a point read
 *   waitlist.parent.ranks.p50 / .p95 a parent reading their child's rank and why at each of
 *                                    its chosen facilities (BENCH_CHOICES), records path;
 *                                    the same baseline
 *   waitlist.allocation.load         the round's inputs read through src/records (no baseline)
 *   waitlist.allocation.round        one deferred-acceptance round over the seed's children;
 *                                    baseline: a plain sort of the same applications' times
 *   waitlist.allocation.round.x10    the same seed tiled ten times (children, facilities,
 *                                    vacancies), for the 1,000,000-children figure without a
 *                                    million-row seed; the same baseline on the tiled arrays
 *
 * BENCH_CHILDREN (100,000) children with BENCH_CHOICES (10) choices among
 * BENCH_FACILITIES (children / 33) facilities; BENCH_TILE (10; 1 leaves the tiled round
 * out); BENCH_PAGES (300) candidate pages; BENCH_RANK_READS (BENCH_PAGES) parents' reads.
 * node bin/run-ts.mjs bench/waitlist.ts [--json]
 * Throwaway databases (data and keyring) via postgres@127.0.0.1, dropped after.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import type { Actor } from '../src/access/actor.ts';
import { loadConfig } from '../src/config/config.ts';
import type { Ctx, Deps } from '../src/context.ts';
import { keyProviderFromSecret } from '../src/crypto/keys.ts';
import { SqlKeyring } from '../src/crypto/keyring.ts';
import type { DB } from '../src/db/schema.ts';
import { inTenant } from '../src/db/tenant.ts';
import { seedScale } from '../src/demo/scale.ts';
import { loadInputs } from '../src/records/allocation.ts';
import * as records from '../src/records/gateway.ts';
import { readChildRanks } from '../src/records/ranks.ts';
import { createTenant, type Tenant } from '../src/tenants/service.ts';
import { TenantDirectory } from '../src/tenants/service.ts';
import { allocate, type AllocationInputs } from '../src/waitlist/allocation.ts';
import { benchDatabase, log, percentile, report } from './lib.ts';

const CHILDREN = Number(process.env.BENCH_CHILDREN ?? 100_000);
const CHOICES = Number(process.env.BENCH_CHOICES ?? 10);
const FACILITIES = Number(process.env.BENCH_FACILITIES ?? Math.max(10, Math.round(CHILDREN / 33)));
const TILE = Number(process.env.BENCH_TILE ?? 10);
const PAGES = Number(process.env.BENCH_PAGES ?? 300);
const ADMIN_URL = process.env.GUICHET_BENCH_PG_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** k copies of a market side by side: copy j's children choose copy j's facilities. */
function tile(x: AllocationInputs, k: number): AllocationInputs {
  const nc = x.childIds.length;
  const na = x.appFacility.length;
  const nf = x.facilityIds.length;
  const out: AllocationInputs = {
    childIds: new Array<string>(nc * k),
    facilityIds: new Array<string>(nf * k),
    childDesiredDay: new Int32Array(nc * k),
    childAgeGroup: new Uint8Array(nc * k),
    choiceStart: new Int32Array(nc * k + 1),
    appFacility: new Int32Array(na * k),
    appCategory: new Uint8Array(na * k),
    appCreatedMs: new Float64Array(na * k),
    vacancies: new Int32Array(nf * 2 * k),
  };
  for (let j = 0; j < k; j++) {
    for (let c = 0; c < nc; c++) out.childIds[j * nc + c] = j === 0 ? x.childIds[c]! : randomUUID();
    for (let f = 0; f < nf; f++) out.facilityIds[j * nf + f] = j === 0 ? x.facilityIds[f]! : randomUUID();
    out.childDesiredDay.set(x.childDesiredDay, j * nc);
    out.childAgeGroup.set(x.childAgeGroup, j * nc);
    for (let c = 0; c < nc; c++) out.choiceStart[j * nc + c + 1] = j * na + x.choiceStart[c + 1]!;
    for (let a = 0; a < na; a++) out.appFacility[j * na + a] = j * nf + x.appFacility[a]!;
    out.appCategory.set(x.appCategory, j * na);
    // A minute apart per copy: the copies' children are other people.
    for (let a = 0; a < na; a++) out.appCreatedMs[j * na + a] = x.appCreatedMs[a]! + j * 60_000;
    out.vacancies.set(x.vacancies, j * nf * 2);
  }
  return out;
}

function round(x: AllocationInputs): { ms: number; placed: number; baselineMs: number } {
  const t0 = performance.now();
  const r = allocate(x);
  const t1 = performance.now();
  Float64Array.from(x.appCreatedMs).sort();
  const t2 = performance.now();
  let placed = 0;
  for (const a of r.assigned) if (a >= 0) placed++;
  return { ms: t1 - t0, placed, baselineMs: t2 - t1 };
}

const b = await benchDatabase();
const keyringName = `guichet_bench_${Date.now()}_${randomBytes(3).toString('hex')}_kr`;
const admin = new pg.Client({ connectionString: ADMIN_URL });
await admin.connect();
await admin.query(`CREATE DATABASE ${keyringName}`);
const keyringUrl = new URL(ADMIN_URL);
keyringUrl.pathname = `/${keyringName}`;
const keyring = SqlKeyring.fromUrl(keyringUrl.toString());
const owner = new Kysely<DB>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: b.ownerUrl, max: 2 }) }) });
try {
  const origin = { actorAccountId: null, actorRoles: ['system:bench'], ip: null, userAgent: null, requestId: null };
  const tenant: Tenant = await createTenant(owner, { slug: 'bench', nameFr: 'Banc d’essai', nameEn: 'Bench', hosts: ['bench.localhost'] }, origin, new Date());
  const keys = keyProviderFromSecret(randomBytes(32), keyring);
  const now = new Date();

  log(`seeding ${CHILDREN} children with ${CHOICES} choices among ${FACILITIES} facilities`);
  const t0 = performance.now();
  let lastShown = 0;
  const seeded = await seedScale(b.database.db, tenant.id, {
    children: CHILDREN,
    facilities: FACILITIES,
    choices: CHOICES,
    seed: 'bench',
    now,
    origin,
    keys,
    onProgress: (d) => {
      if (d - lastShown >= CHILDREN / 10) {
        lastShown = d;
        log(`  ${d} children, ${((performance.now() - t0) / 1000).toFixed(0)} s`);
      }
    },
  });
  const seedSeconds = (performance.now() - t0) / 1000;
  // What autovacuum leaves behind on a settled database: statistics, and the visibility map that lets a
  // covering index answer alone (a parent's ranks, migration 0024).
  await sql`VACUUM ANALYZE`.execute(owner);
  report({ name: 'waitlist.seed', value: seeded.children / seedSeconds, unit: 'children/s', baseline: null, note: `${seeded.children} children, ${seeded.applications} applications, ${seeded.families} families encrypted, ${seedSeconds.toFixed(1)} s` });

  // The candidate list, as a facility's staff member opens it: the busiest facilities.
  const busiest = (
    await sql<{ facility_id: string }>`SELECT facility_id FROM applications WHERE status = 'active' GROUP BY facility_id ORDER BY count(*) DESC, facility_id LIMIT 20`.execute(owner)
  ).rows.map((r) => r.facility_id);
  const config = { ...loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent', GUICHET_DEFAULT_TENANT: 'bench' }), demo: false };
  const deps: Deps = { db: b.database, config, clock: () => new Date(), log: pino({ level: 'silent' }), tenants: new TenantDirectory(b.database.db, 'bench'), keys };
  // One staff member per page: detection rightly suspends one account reading hundreds of lists in a minute.
  const accounts = (await sql<{ id: string }>`SELECT id FROM accounts WHERE tenant_id = ${tenant.id} ORDER BY id LIMIT ${PAGES + 40}`.execute(owner)).rows.map((r) => r.id);
  let nextAccount = 0;
  const staffCtx = (facilityId: string): Ctx => ({
    tenant,
    actor: { accountId: accounts[nextAccount++ % accounts.length]!, tenantId: tenant.id, sessionId: null, email: 'x@exemple.test', emailVerified: true, locale: 'fr', memberships: [{ id: 'm', role: 'facility_staff', facilityId, expiresAt: null }], mfa: true } as unknown as Actor,
    ip: '127.0.0.1',
    userAgent: 'bench',
    requestId: null,
    locale: 'fr',
    now: new Date(),
    baseUrl: 'http://localhost',
  });
  const sizes = (await sql<{ n: string }>`SELECT count(*) AS n FROM applications WHERE facility_id = ${busiest[0]!} AND status = 'active'`.execute(owner)).rows[0]!.n;
  log(`${PAGES} candidate pages, one at a time, over the ${busiest.length} busiest facilities (the busiest has ${sizes} candidates)`);
  for (let i = 0; i < 20; i++) await records.listCandidates(deps, staffCtx(busiest[i % busiest.length]!), busiest[i % busiest.length]!, 1);
  const lat: number[] = [];
  const base: number[] = [];
  for (let i = 0; i < PAGES; i++) {
    const f = busiest[i % busiest.length]!;
    let s = performance.now();
    await records.listCandidates(deps, staffCtx(f), f, 1);
    lat.push(performance.now() - s);
    s = performance.now();
    await inTenant(b.database.db, tenant.id, (trx) => trx.selectFrom('facilities').select('id').where('id', '=', f).executeTakeFirst());
    base.push(performance.now() - s);
  }
  report({ name: 'waitlist.candidates.p50', value: percentile(lat, 50), unit: 'ms', baseline: percentile(base, 50), baselineLabel: 'tenant transaction + point read', lowerIsBetter: true });
  report({ name: 'waitlist.candidates.p95', value: percentile(lat, 95), unit: 'ms', baseline: percentile(base, 95), baselineLabel: 'tenant transaction + point read', lowerIsBetter: true, note: `busiest facility: ${sizes} candidates` });

  // A parent reading their child's ranks: every chosen facility's order computed live, through the records path, beside the same baseline.
  const RANK_READS = Number(process.env.BENCH_RANK_READS ?? PAGES);
  const parents = (
    await sql<{ child_id: string; account_id: string; n: string }>`
      SELECT c.id AS child_id, f.account_id, count(*) AS n FROM children c JOIN families f ON f.id = c.family_id JOIN applications a ON a.child_id = c.id AND a.status = 'active'
      WHERE c.tenant_id = ${tenant.id} GROUP BY c.id, f.account_id HAVING count(*) >= ${CHOICES} ORDER BY c.id LIMIT ${RANK_READS}`.execute(owner)
  ).rows;
  const parentCtx = (accountId: string): Ctx => ({
    tenant,
    actor: { accountId, tenantId: tenant.id, sessionId: null, email: 'parent@exemple.test', emailVerified: true, locale: 'fr', memberships: [], mfa: false } as unknown as Actor,
    ip: '127.0.0.1',
    userAgent: 'bench',
    requestId: null,
    locale: 'fr',
    now: new Date(),
    baseUrl: 'http://localhost',
  });
  log(`${parents.length} parents reading their child's ranks (${CHOICES} chosen facilities each), one at a time`);
  for (const p of parents.slice(0, 10)) await readChildRanks(deps, parentCtx(p.account_id), p.child_id);
  const rankLat: number[] = [];
  const rankBase: number[] = [];
  for (const p of parents) {
    let s = performance.now();
    const r = await readChildRanks(deps, parentCtx(p.account_id), p.child_id);
    rankLat.push(performance.now() - s);
    if (r.ranks.length < CHOICES) throw new Error(`ranks: ${r.ranks.length} facilities for a child with ${p.n} applications`);
    s = performance.now();
    await inTenant(b.database.db, tenant.id, (trx) => trx.selectFrom('children').select('id').where('id', '=', p.child_id).executeTakeFirst());
    rankBase.push(performance.now() - s);
  }
  report({ name: 'waitlist.parent.ranks.p50', value: percentile(rankLat, 50), unit: 'ms', baseline: percentile(rankBase, 50), baselineLabel: 'tenant transaction + point read', lowerIsBetter: true });
  report({ name: 'waitlist.parent.ranks.p95', value: percentile(rankLat, 95), unit: 'ms', baseline: percentile(rankBase, 95), baselineLabel: 'tenant transaction + point read', lowerIsBetter: true, note: `${CHOICES} facilities per child, ${parents.length} reads` });

  log('loading the round inputs through src/records');
  const l0 = performance.now();
  const loaded = await inTenant(b.database.db, tenant.id, (trx) => loadInputs(trx, tenant, keys, { order: 'categories', today: now.toISOString().slice(0, 10), infantMaxMonths: 18, deadlineDays: 7 }));
  const loadSeconds = (performance.now() - l0) / 1000;
  report({ name: 'waitlist.allocation.load', value: loadSeconds, unit: 's', baseline: null, note: `${loaded.inputs.childIds.length} children, ${loaded.inputs.appFacility.length} applications` });

  round(loaded.inputs); // warm-up: the JIT, the first allocation of the arrays
  const one = round(loaded.inputs);
  report({ name: 'waitlist.allocation.round', value: one.ms, unit: 'ms', baseline: one.baselineMs, baselineLabel: 'plain sort of the same applications', lowerIsBetter: true, note: `${loaded.inputs.childIds.length} children, ${one.placed} placed` });
  if (TILE > 1) {
    const big = tile(loaded.inputs, TILE);
    const r = round(big);
    report({ name: 'waitlist.allocation.round.x10', value: r.ms, unit: 'ms', baseline: r.baselineMs, baselineLabel: 'plain sort of the same applications', lowerIsBetter: true, note: `${big.childIds.length} children, ${big.appFacility.length} applications, ${r.placed} placed` });
  }
} finally {
  await owner.destroy();
  await keyring.close();
  await b.drop();
  await admin.query(`DROP DATABASE IF EXISTS ${keyringName} WITH (FORCE)`);
  await admin.end();
}
