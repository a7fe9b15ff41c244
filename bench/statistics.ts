/**
 * The programme's statistics page at scale: readStatistics() (every table of
 * /operator/statistics, aggregated in SQL, with its audit event) over
 * BENCH_CHILDREN child files (default 1,000,000) with three active
 * applications each across 30,000 facilities in 17 regions, on PostgreSQL
 * through the unprivileged application role. Baseline, same run, same
 * database: one plain count of the live child files.
 *
 *   statistics.read          all tables, no filter
 *   statistics.read.region   all tables, one region
 *
 * node bin/run-ts.mjs bench/statistics.ts [--json]
 * A throwaway database via postgres@127.0.0.1, dropped after.
 */
import { sql } from 'kysely';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import type { Actor } from '../src/access/actor.ts';
import { loadConfig } from '../src/config/config.ts';
import type { Ctx, Deps } from '../src/context.ts';
import { keyProviderFromSecret } from '../src/crypto/keys.ts';
import type { DB } from '../src/db/schema.ts';
import { inTenant } from '../src/db/tenant.ts';
import { readStatistics } from '../src/records/statistics.ts';
import { createTenant, TenantDirectory } from '../src/tenants/service.ts';
import { benchDatabase, log, report } from './lib.ts';

const CHILDREN = Number(process.env.BENCH_CHILDREN ?? 1_000_000);
const FACILITIES = Number(process.env.BENCH_FACILITIES ?? 30_000);
const RUNS = 3;

const bench = await benchDatabase();
const owner = new Kysely<DB>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: bench.ownerUrl, max: 2 }) }) });
try {
  const origin = { actorAccountId: null, actorRoles: ['system:bench'], ip: null, userAgent: null, requestId: null };
  const tenant = await createTenant(owner, { slug: 'banc', nameFr: 'Banc', nameEn: 'Bench', hosts: ['banc.localhost'] }, origin, new Date());
  const t0 = Date.now();
  // Opaque stand-ins for the ciphertexts: statistics never open them.
  await sql`
    INSERT INTO facilities (tenant_id, code, name, kind, subsidised, address, municipality, postal_code, region, places_total, places_infant, search_key)
    SELECT ${tenant.id}, 'B' || i, 'CPE ' || i, 'cpe', true, '1, rue', 'Ville', 'J4K 1A1', lpad(((i % 17) + 1)::text, 2, '0') || ' - Région', 80, 10, 'cpe ' || i
      FROM generate_series(1, ${FACILITIES}) i`.execute(owner);
  await sql`INSERT INTO facility_places (tenant_id, facility_id, age_group, places, vacancies, updated_at)
    SELECT tenant_id, id, g, CASE g WHEN 'infant' THEN 10 ELSE 70 END, (hashtext(id::text || g) & 3), now() FROM facilities, unnest(ARRAY['infant','toddler']) g
    WHERE tenant_id = ${tenant.id} ON CONFLICT DO NOTHING`.execute(owner);
  const account = await sql<{ id: string }>`INSERT INTO accounts (tenant_id, email, locale, email_verified_at) VALUES (${tenant.id}, 'banc@exemple.test', 'fr', now()) RETURNING id`.execute(owner);
  const accountId = account.rows[0]!.id;
  const family = await sql<{ id: string }>`
    INSERT INTO families (tenant_id, account_id, parent_first_name_enc, parent_last_name_enc, phone_enc, postal_code_enc, key_version, created_at, updated_at)
    VALUES (${tenant.id}, ${accountId}, '\\x00', '\\x00', '\\x00', '\\x00', 1, now(), now()) RETURNING id`.execute(owner);
  const familyId = family.rows[0]!.id;
  for (let from = 1; from <= CHILDREN; from += 250_000) {
    const to = Math.min(CHILDREN, from + 249_999);
    await sql`
      INSERT INTO children (tenant_id, family_id, reference, first_name_enc, last_name_enc, birth_date_enc, nirec_enc, birth_month, desired_entry_date, days_of_care, in_subsidised_care, created_at, updated_at)
      SELECT ${tenant.id}, ${familyId}, 'E-' || lpad(i::text, 8, '0'), '\\x00', '\\x00', '\\x00', '\\x00',
             date_trunc('month', current_date - (i % 40) * interval '1 month')::date,
             (date_trunc('month', current_date) + (i % 18) * interval '1 month')::date, 31, false, now(), now()
        FROM generate_series(${from}::int, ${to}::int) i`.execute(owner);
    await sql`
      INSERT INTO applications (tenant_id, child_id, facility_id, sibling_attending, parent_is_staff, status, created_at, updated_at)
      SELECT c.tenant_id, c.id, f.id, false, false, 'active', now(), now()
        FROM children c
        CROSS JOIN LATERAL (SELECT k FROM generate_series(0, 2) k) k
        JOIN facilities f ON f.code = 'B' || (((hashtext(c.reference) & 2147483647)::bigint + k.k * 7919) % ${FACILITIES} + 1)
       WHERE c.tenant_id = ${tenant.id} AND c.reference BETWEEN ${`E-${String(from).padStart(8, '0')}`} AND ${`E-${String(to).padStart(8, '0')}`}`.execute(owner);
    log(`${to.toLocaleString('en-CA')} child files`);
  }
  // What autovacuum does to tables that have just grown by millions of rows (statistics, and the visibility map
  // that index-only scans need), before anyone reads them.
  await sql`VACUUM (ANALYZE)`.execute(owner);
  log(`seeded ${CHILDREN.toLocaleString('en-CA')} child files and ${(CHILDREN * 3).toLocaleString('en-CA')} applications in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  const config = { ...loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent', DATABASE_URL: bench.appUrl }), demo: false };
  const deps: Deps = { db: bench.database, config, clock: () => new Date(), log: pino({ level: 'silent' }), tenants: new TenantDirectory(bench.database.db, 'banc', 0), keys: keyProviderFromSecret(Buffer.alloc(32, 7)) };
  const actor: Actor = { accountId, tenantId: tenant.id, sessionId: null, email: 'banc@exemple.test', emailVerified: true, locale: 'fr', memberships: [{ id: 'm', role: 'program_operator', facilityId: null, expiresAt: null }], mfa: true };
  const ctx = (): Ctx => ({ tenant, actor, ip: null, userAgent: null, requestId: null, locale: 'fr', now: new Date(), baseUrl: 'http://banc.localhost' });

  const time = async (fn: () => Promise<unknown>) => {
    const xs: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const s = performance.now();
      await fn();
      xs.push(performance.now() - s);
    }
    return Math.min(...xs);
  };
  const baseline = await time(() => inTenant(bench.database.db, tenant.id, (trx) => sql`SELECT count(*) FROM children WHERE deleted_at IS NULL`.execute(trx)));
  const all = await time(() => readStatistics(deps, ctx(), { region: null, from: null, to: null }, { kind: 'page' }));
  const one = await time(() => readStatistics(deps, ctx(), { region: '05 - Région', from: null, to: null }, { kind: 'page' }));
  const note = `${CHILDREN.toLocaleString('en-CA')} files, ${(CHILDREN * 3).toLocaleString('en-CA')} applications, best of ${RUNS}`;
  report({ name: 'statistics.read', value: all, unit: 'ms', baseline, baselineLabel: 'count(*) of the live files', lowerIsBetter: true, note });
  report({ name: 'statistics.read.region', value: one, unit: 'ms', baseline, baselineLabel: 'count(*) of the live files', lowerIsBetter: true, note });
} finally {
  await owner.destroy();
  await bench.drop();
}
