/**
 * Every page at ten times Quebec: each GET route of the router, opened as the
 * person it is for (scripts/crawl.ts: parent, facility staff, director,
 * programme operator, security officer, administrator, with their own ids),
 * on PostgreSQL through the application role, over a programme holding the
 * demo's data plus BENCH_CHILDREN child files (300,000 by default, ten times
 * Quebec's waiting list; `guichet seed --children`'s code) among
 * BENCH_FACILITIES facilities (30,000) and BENCH_AUDIT_PER_CHILD audit events
 * a file (10: reads by staff over a year, sealed), analysed as autovacuum
 * would leave it. Each page BENCH_REPS times (3), one at a time.
 *
 *   pages.<route>         the slowest pages' median (the BENCH_SHOW slowest, 15)
 *   pages.over100ms       how many pages have a median above 100 ms
 *
 * Baseline, same run: a facility's public page (/directory/:id, one row read),
 * measured the same way.
 *
 * The database is made and filled once (about 12 minutes for the default sizes
 * on two cores) and dropped after, unless BENCH_KEEP_DATABASE=1, which prints
 * how to run again on it: BENCH_DATABASE=<name> GUICHET_DATA_DIR=<dir> (the
 * demo's credentials and keys live in the data directory).
 *
 * node bin/run-ts.mjs bench/pages.ts [--json]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import { Sealer } from '../src/audit/sealer.ts';
import type { DB } from '../src/db/schema.ts';
import { inTenant } from '../src/db/tenant.ts';
import { seedScale } from '../src/demo/scale.ts';
import { crawl, fill, jarOf, page, PEOPLE, personFor, routesOf, startInstance } from '../scripts/crawl.ts';
import { benchDatabase, log, percentile, report } from './lib.ts';

const CHILDREN = Number(process.env.BENCH_CHILDREN ?? 300_000);
const FACILITIES = Number(process.env.BENCH_FACILITIES ?? 30_000);
const AUDIT_PER_CHILD = Number(process.env.BENCH_AUDIT_PER_CHILD ?? 10);
const REPS = Number(process.env.BENCH_REPS ?? 3);
const SHOW = Number(process.env.BENCH_SHOW ?? 15);
const ADMIN_URL = process.env.GUICHET_BENCH_PG_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

const urlFor = (database: string, user?: string) => {
  const u = new URL(ADMIN_URL);
  u.pathname = `/${database}`;
  if (user) u.username = user;
  return u.toString();
};

// A kept database (BENCH_DATABASE) or a fresh one, migrated, with the unprivileged login role.
const fresh = process.env.BENCH_DATABASE ? null : await benchDatabase();
const ownerUrl = fresh?.ownerUrl ?? urlFor(process.env.BENCH_DATABASE!);
const appUrl = fresh?.appUrl ?? urlFor(process.env.BENCH_DATABASE!, 'guichet_bench_app');
const dataDir = process.env.GUICHET_DATA_DIR ?? mkdtempSync(join(tmpdir(), 'guichet-bench-pages-'));
const owner = new Kysely<DB>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: ownerUrl, max: 2 }) }) });
const env = { ...process.env, DATABASE_URL: appUrl, DATABASE_OWNER_URL: ownerUrl, GUICHET_DATA_DIR: dataDir };
const inst = await startInstance('pages', 0, env);
try {
  const tenantId = inst.tenant.id;
  const count = async (table: 'children' | 'audit_events') => Number((await sql<{ n: string }>`SELECT count(*)::text AS n FROM ${sql.table(table)} WHERE tenant_id = ${tenantId}`.execute(owner)).rows[0]!.n);
  if ((await count('children')) < CHILDREN) {
    log(`seeding ${CHILDREN.toLocaleString('en-CA')} children among ${FACILITIES.toLocaleString('en-CA')} facilities`);
    const t0 = performance.now();
    const origin = { actorAccountId: null, actorRoles: ['system:bench'], ip: null, userAgent: 'bench/pages.ts', requestId: null };
    await seedScale(inst.db.db, tenantId, { children: CHILDREN, facilities: FACILITIES, choices: 10, seed: 'pages', now: new Date(), origin, keys: inst.deps.keys });
    log(`  seeded in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    // Statistics before the fill reads the seed back: without them its per-file look-up at an application was
    // planned as a walk of every application for each file (a pass had not ended after 9 minutes).
    await sql`ANALYZE facilities, children, applications`.execute(owner);
    log(`${AUDIT_PER_CHILD} audit events a file: staff reads over the past year`);
    for (let k = 0; k < AUDIT_PER_CHILD; k++) {
      // As the gateway writes a staff member's read: the file, its family, the reader's role at a facility it chose.
      await inTenant(inst.db.db, tenantId, (trx) =>
        sql`INSERT INTO audit_events (tenant_id, id, occurred_at, action, outcome, actor_account_id, actor_roles, target_type, target_ids, family_ids, fields, purpose, ip, user_agent, request_id, details)
          SELECT ${tenantId}, gen_random_uuid(), now() - random() * interval '365 days', 'waitlist.childFile.read', 'success', gen_random_uuid(),
                 ARRAY['facility_staff:' || (SELECT a.facility_id::text FROM applications a WHERE a.child_id = c.id LIMIT 1)],
                 'child', ARRAY[c.id::text], ARRAY[c.family_id],
                 '{first_name,last_name,birth_date,desired_entry_date,days_of_care}', 'staff.childFile.view', '192.0.2.44',
                 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36', gen_random_uuid()::text, '{}'::jsonb
            FROM children c WHERE c.purged_at IS NULL`.execute(trx),
      );
    }
    const sealer = new Sealer(inst.db.db, inst.deps.keys, pino({ level: 'silent' }), { batchMax: 50_000 });
    for (let r = await sealer.sealTenant(tenantId); r.more; r = await sealer.sealTenant(tenantId));
    log(`  ${(await count('audit_events')).toLocaleString('en-CA')} audit events, sealed, ${((performance.now() - t0) / 1000).toFixed(0)} s in all`);
  }
  // What autovacuum leaves on a settled database: statistics and the visibility map.
  await sql`VACUUM ANALYZE`.execute(owner);

  const seen = await crawl('pages');
  const time = async (jar: Map<string, string>, path: string) => {
    const ms: number[] = [];
    let status = 0;
    for (let i = 0; i < REPS; i++) {
      const t0 = performance.now();
      const { res } = await page(jar, path);
      ms.push(performance.now() - t0);
      status = res.status;
    }
    return { ms, status };
  };
  const parent = seen.get('parent')!;
  const directoryPage = fill('/directory/:id', parent.ids).replace(/\*/g, '');
  const facility = (await sql<{ id: string }>`SELECT id FROM facilities WHERE tenant_id = ${tenantId} ORDER BY code LIMIT 1`.execute(owner)).rows[0]!.id;
  const baselinePath = directoryPage.includes('00000000-0000') ? `/directory/${facility}` : directoryPage;
  const baselineMs: number[] = [];
  baselineMs.push(...(await time(jarOf(parent.session), baselinePath)).ms);

  const rows: { who: string; route: string; status: number; p50: number; max: number }[] = [];
  for (const who of PEOPLE) {
    const s = seen.get(who)!;
    const jar = jarOf(s.session);
    for (const route of routesOf('GET').filter((r) => s.opens.has(r) && personFor(seen, 'GET', r) === who)) {
      const { ms, status } = await time(jar, fill(route, s.ids).replace(/\*/g, ''));
      rows.push({ who, route, status, p50: percentile(ms, 50), max: Math.max(...ms) });
    }
  }
  baselineMs.push(...(await time(jarOf(parent.session), baselinePath)).ms);
  const baseline = percentile(baselineMs, 50);
  rows.sort((a, b) => b.p50 - a.p50);
  for (const r of rows.slice(0, SHOW)) {
    report({ name: `pages.${r.route}`, value: r.p50, unit: 'ms', baseline, baselineLabel: 'a facility’s public page', lowerIsBetter: true, note: `as the ${r.who}, max ${r.max.toFixed(0)} ms, status ${r.status}` });
  }
  const children = await count('children');
  const events = await count('audit_events');
  report({
    name: 'pages.over100ms',
    value: rows.filter((r) => r.p50 > 100).length,
    unit: 'pages',
    baseline: null,
    note: `of ${rows.length} pages opened by their person; ${children.toLocaleString('en-CA')} child files, ${events.toLocaleString('en-CA')} audit events in the programme`,
  });
  if (process.env.BENCH_KEEP_DATABASE && fresh) log(`run again on it: BENCH_DATABASE=${new URL(ownerUrl).pathname.slice(1)} GUICHET_DATA_DIR=${dataDir}`);
} finally {
  await inst.close();
  await owner.destroy();
  await fresh?.drop();
  if (!process.env.GUICHET_DATA_DIR && !process.env.BENCH_KEEP_DATABASE) rmSync(dataDir, { recursive: true, force: true });
}
