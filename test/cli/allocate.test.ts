/**
 * `guichet seed --children` and `guichet allocate`, run for real as child
 * processes on a small scale seed: refused while the tenant's rules do not
 * allow it, a dry run, a real run with its offers, a replay that matches,
 * and a replay of a tampered run that fails with exit 1. On PGlite (its own
 * data directory) and, with GUICHET_TEST_DB=postgres, on PostgreSQL.
 * Also: the scale generators are deterministic.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql, type Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../../src/db/connection.ts';
import type { DB } from '../../src/db/schema.ts';
import { generateFacilities } from '../../src/demo/scale.ts';
import { familyStream } from '../../src/demo/seed.ts';
import { filesHash } from '../../src/records/allocation.ts';
import { guichetEntry, migratedDataDir } from '../helpers/cli.ts';
import { randomSlug, testDatabaseInfo } from '../helpers/db.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CONFIG_VARS = ['PORT', 'HOST', 'GUICHET_DATA_DIR', 'DATABASE_URL', 'DATABASE_OWNER_URL', 'SMTP_URL', 'NODE_ENV', 'LOG_LEVEL', 'PUBLIC_URL', 'GUICHET_DEFAULT_TENANT', 'GUICHET_ALLOW_PRIVILEGED_DB_ROLE', 'GUICHET_MASTER_KEY', 'GUICHET_KEY_FILE', 'GUICHET_KEYRING_URL'];

function cliEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of CONFIG_VARS) delete env[k];
  return { ...env, NODE_ENV: 'test', LOG_LEVEL: 'silent', ...extra };
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [guichetEntry(), ...args], { cwd: ROOT, env, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 }, (_err, stdout, stderr) => {
      resolve({ code: child.exitCode, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

function expectExit(r: Run, code: number): void {
  expect(r.code, `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`).toBe(code);
}

/** The whole journey, against whichever database `env` and `owner` reach. */
async function journey(env: NodeJS.ProcessEnv, slug: string, owner: () => Promise<{ db: Kysely<DB>; close: () => Promise<void> }>): Promise<void> {
  expectExit(await cli(['tenant', 'create', '--slug', slug, '--name-fr', 'Répartition', '--name-en', 'Allocation'], env), 0);
  const beforeSeed = new Date();
  const seeded = await cli(['seed', '--children', '400', '--facilities', '60', '--choices', '5', '--seed', slug, '--tenant', slug], env);
  expectExit(seeded, 0);
  expect(seeded.stdout).toMatch(/^60 facilities, \d+ families, 400 children, 2000 applications in/m);
  // Not a terminal: plain progress lines, no carriage returns.
  expect(seeded.stderr).toMatch(/seed: 100 %/);
  expect(seeded.stderr).not.toContain('\r');
  // The seed's parents have addresses of its own domain: a large seed never meets the demo's families (name.name.NNNN).
  {
    const o = await owner();
    try {
      const { rows } = await sql<{ email: string }>`SELECT a.email FROM accounts a JOIN tenants t ON t.id = a.tenant_id WHERE t.slug = ${slug}`.execute(o.db);
      expect(rows.length).toBeGreaterThan(0);
      for (const r of rows) expect(r.email).toMatch(new RegExp(`@echelle-${slug.toLowerCase().replace(/[^a-z0-9-]+/g, '')}\\.exemple\\.test$`));
      // Analysed by their owner once seeded (the application role's ANALYZE would skip them).
      // reltuples is what ANALYZE leaves in the catalogue (-1 before any); PGlite keeps no activity statistics across processes.
      const analysed = await sql<{ n: number; at: Date | null }>`SELECT c.reltuples AS n, s.last_analyze AS at FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_stat_user_tables s ON s.relid = c.oid WHERE c.relname = 'applications' AND c.relkind = 'r'`.execute(o.db);
      expect(Number(analysed.rows[0]!.n)).toBeGreaterThanOrEqual(2000);
      if (process.env.GUICHET_TEST_DB === 'postgres') expect(analysed.rows[0]!.at!.getTime()).toBeGreaterThanOrEqual(beforeSeed.getTime() - 1000);
    } finally {
      await o.close();
    }
  }

  const refused = await cli(['allocate', '--tenant', slug], env);
  expectExit(refused, 2);
  expect(refused.stderr).toMatch(/coordinatedAllocation/);

  const enable = async () => {
    const o = await owner();
    try {
      await sql`UPDATE tenants SET rules = rules || '{"coordinatedAllocation": true}'::jsonb WHERE slug = ${slug}`.execute(o.db);
    } finally {
      await o.close();
    }
  };
  await enable();

  const dry = await cli(['allocate', '--tenant', slug, '--dry-run', '--today', '2026-06-01'], env);
  expectExit(dry, 0);
  expect(dry.stdout).toContain('dry run (no offers made, no result stored; which files it read is kept, for the families\' access lists)');
  const placed = Number(/400 children, 2000 applications: (\d+) placed/.exec(dry.stdout)?.[1]);
  expect(placed).toBeGreaterThan(0);
  const dryHash = /outputs hash (\w+)/.exec(dry.stdout)?.[1];

  const real = await cli(['allocate', '--tenant', slug, '--today', '2026-06-01'], env);
  expectExit(real, 0);
  // Same inputs, same round: the dry run announced exactly this outcome.
  expect(/outputs hash (\w+)/.exec(real.stdout)?.[1]).toBe(dryHash);
  const runId = /^run ([0-9a-f-]{36})$/m.exec(real.stdout)?.[1];
  expect(runId).toBeDefined();

  let drySeq = '';
  const o = await owner();
  try {
    const offers = await sql<{ n: string; children: string }>`SELECT count(*) AS n, count(DISTINCT child_id) AS children FROM offers WHERE allocation_run_id = ${runId} AND source = 'allocation' AND status = 'pending'`.execute(o.db);
    expect(Number(offers.rows[0]!.n)).toBe(placed);
    expect(Number(offers.rows[0]!.children)).toBe(placed);
    const audit = await sql<{ n: string }>`SELECT count(*) AS n FROM audit_events WHERE action = 'allocation.run' AND ${runId} = ANY (target_ids)`.execute(o.db);
    expect(Number(audit.rows[0]!.n)).toBe(1);
    // Each round is tied to the files it read, for the families' access lists: the dry run by a row a file,
    // by its event, in the order its event's hash covers; the real run by its results and its event on the run.
    const rounds = await sql<{ seq: string; purpose: string; hash: string | null; tenant_id: string }>`SELECT e.seq, e.purpose, e.details->>'filesHash' AS hash, e.tenant_id FROM audit_events e JOIN tenants t ON t.id = e.tenant_id WHERE t.slug = ${slug} AND e.action = 'allocation.run' ORDER BY e.seq`.execute(o.db);
    expect(rounds.rows.map((r) => r.purpose)).toEqual(['allocation.round.dryRun', 'allocation.round']);
    const [dryEvent, realEvent] = rounds.rows as [(typeof rounds.rows)[0], (typeof rounds.rows)[0]];
    drySeq = dryEvent.seq;
    const readBy = async (seq: string) => (await sql<{ child_id: string }>`SELECT a.child_id FROM allocation_reads a JOIN children c ON c.id = a.child_id WHERE a.tenant_id = ${dryEvent.tenant_id} AND a.seq = ${seq} ORDER BY c.reference`.execute(o.db)).rows.map((x) => x.child_id);
    const dryFiles = await readBy(dryEvent.seq);
    expect(dryFiles).toHaveLength(400);
    expect(filesHash(dryFiles)).toBe(dryEvent.hash);
    expect(await readBy(realEvent.seq)).toEqual([]);
    expect(realEvent.hash).toBeNull();
    const run = await sql<{ audit_seq: string; results: string }>`SELECT u.audit_seq, (SELECT count(*) FROM allocation_results r WHERE r.run_id = u.id) AS results FROM allocation_runs u WHERE u.id = ${runId}`.execute(o.db);
    expect(run.rows.map((r) => [String(r.audit_seq), Number(r.results)])).toEqual([[String(realEvent.seq), 400]]);
  } finally {
    await o.close();
  }

  // A second round skips the children who hold an offer.
  const second = await cli(['allocate', '--tenant', slug, '--dry-run', '--today', '2026-06-01'], env);
  expectExit(second, 0);
  expect(second.stdout).toContain(`${400 - placed} children`);

  // `audit verify` checks each dry run's recorded reads against the list its event sealed; a row removed behind the triggers shows.
  const verified = await cli(['audit', 'verify', '--tenant', slug], env);
  expectExit(verified, 0);
  expect(verified.stdout).toContain('the reads of 2 allocation dry runs match their events');
  const w = await owner();
  try {
    await w.db.transaction().execute(async (trx) => {
      await sql`ALTER TABLE allocation_reads DISABLE TRIGGER USER`.execute(trx);
      await sql`DELETE FROM allocation_reads WHERE seq = ${drySeq}::bigint AND child_id = (SELECT child_id FROM allocation_reads WHERE seq = ${drySeq}::bigint LIMIT 1)`.execute(trx);
      await sql`ALTER TABLE allocation_reads ENABLE TRIGGER USER`.execute(trx);
    });
  } finally {
    await w.close();
  }
  const broken = await cli(['audit', 'verify', '--tenant', slug], env);
  expectExit(broken, 1);
  expect(broken.stdout).toMatch(new RegExp(`BROKEN at event ${drySeq} \\([0-9a-f-]{36}\\): the files recorded as read by this allocation dry run \\(399 in allocation_reads\\) are not the 400 its event sealed`));

  const replay = await cli(['allocate', '--tenant', slug, '--replay', runId!], env);
  expectExit(replay, 0);
  expect(replay.stdout).toContain('replay OK');

  // Tampering with the stored run: its outputs hash no longer matches the signature.
  const t = await owner();
  try {
    await sql`UPDATE allocation_runs SET outputs_hash = sha256(outputs_hash) WHERE id = ${runId}`.execute(t.db);
  } finally {
    await t.close();
  }
  const tampered = await cli(['allocate', '--tenant', slug, '--replay', runId!], env);
  expectExit(tampered, 1);
  expect(tampered.stderr).toMatch(/replay FAILED: the signature does not match/);

  const unknown = await cli(['allocate', '--tenant', slug, '--replay', '00000000-0000-4000-8000-000000000000'], env);
  expectExit(unknown, 1);
}

describe('scale seed generators', () => {
  it('give the same facilities and families for the same seed, others for another', () => {
    const a = generateFacilities(200, 'x');
    expect(generateFacilities(200, 'x')).toEqual(a);
    expect(generateFacilities(200, 'y')).not.toEqual(a);
    expect(new Set(a.map((f) => f.code)).size).toBe(200);
    const facilities = a.map((f, i) => ({ ...f, id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}` }));
    const take = (seed: string) => {
      const out = [];
      for (const f of familyStream({ seed, facilities, today: new Date('2026-06-01T12:00:00Z'), choices: 10 })) {
        out.push(f);
        if (out.length === 300) break;
      }
      return out;
    };
    const first = take('s');
    expect(JSON.stringify(take('s'))).toBe(JSON.stringify(first));
    expect(JSON.stringify(take('t'))).not.toBe(JSON.stringify(first));
    for (const f of first) for (const c of f.children) expect(c.applications).toHaveLength(10);
  });
});

// Each run covers its own database: the PGlite journey under the PGlite run, the PostgreSQL one under GUICHET_TEST_DB=postgres.
describe.runIf(process.env.GUICHET_TEST_DB !== 'postgres')('guichet allocate on PGlite', () => {
  let dir: string;
  beforeAll(() => {
    dir = migratedDataDir('guichet-allocate-');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('seeds, refuses without the rule, dry-runs, runs, replays, and catches tampering', async () => {
    const env = cliEnv({ GUICHET_DATA_DIR: dir });
    await journey(env, 'alloc', async () => {
      const db = await openDatabase({ dataDir: join(dir, 'pglite'), migrate: false });
      return { db: db.db, close: () => db.close() };
    });
  }, 480_000);
});

describe.runIf(process.env.GUICHET_TEST_DB === 'postgres')('guichet allocate on PostgreSQL', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'guichet-allocate-pg-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('seeds, refuses without the rule, dry-runs, runs, replays, and catches tampering', async () => {
    const info = testDatabaseInfo();
    if (info.kind !== 'postgres') throw new Error('expected the PostgreSQL test database');
    const env = cliEnv({ GUICHET_DATA_DIR: dir, DATABASE_OWNER_URL: info.ownerUrl, DATABASE_URL: info.appUrl, GUICHET_MASTER_KEY: Buffer.alloc(32, 7).toString('base64') });
    await journey(env, randomSlug('alloc-'), async () => {
      const db = await openDatabase({ databaseUrl: info.ownerUrl, migrate: false, allowPrivilegedRole: true });
      return { db: db.db, close: () => db.close() };
    });
  }, 480_000);
});
