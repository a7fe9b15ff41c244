/**
 * Shared by every benchmark: how figures are printed, and a throwaway
 * PostgreSQL database. A benchmark measures its figure and its baseline in the
 * same run (these machines are noisy) and reports both with their ratio; it
 * never fails on a figure.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { openDatabase, type Database } from '../src/db/connection.ts';

export interface Figure {
  name: string;
  value: number;
  unit: string;
  baseline: number | null;
  /** value / baseline, or for "lower is better" units baseline / value; null without a baseline. */
  ratio: number | null;
  /** What the baseline is, for people reading the table. */
  baselineLabel?: string;
  note?: string;
}

export const JSON_OUTPUT = process.argv.includes('--json');

export function report(f: Omit<Figure, 'ratio'> & { lowerIsBetter?: boolean }): Figure {
  const ratio = f.baseline ? (f.lowerIsBetter ? f.baseline / f.value : f.value / f.baseline) : null;
  const figure: Figure = { name: f.name, value: round(f.value), unit: f.unit, baseline: f.baseline === null ? null : round(f.baseline), ratio: ratio === null ? null : round(ratio, 3), ...(f.baselineLabel ? { baselineLabel: f.baselineLabel } : {}), ...(f.note ? { note: f.note } : {}) };
  if (JSON_OUTPUT) {
    process.stdout.write(`${JSON.stringify(figure)}\n`);
  } else {
    const base = figure.baseline === null ? '' : `   baseline ${fmt(figure.baseline)} ${f.unit}${f.baselineLabel ? ` (${f.baselineLabel})` : ''}   ratio ${figure.ratio}`;
    process.stdout.write(`${figure.name.padEnd(44)} ${fmt(figure.value).padStart(12)} ${f.unit}${base}${f.note ? `   — ${f.note}` : ''}\n`);
  }
  return figure;
}

function round(x: number, digits = 2): number {
  const p = 10 ** digits;
  return Math.round(x * p) / p;
}

function fmt(x: number): string {
  return x.toLocaleString('en-CA', { maximumFractionDigits: 2 });
}

export function log(msg: string): void {
  if (!JSON_OUTPUT) process.stderr.write(`  … ${msg}\n`);
}

/** Runs `count` tasks with at most `concurrency` at a time; returns per-task latencies in ms. */
export async function pool(count: number, concurrency: number, task: (i: number) => Promise<unknown>): Promise<number[]> {
  const latencies: number[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (;;) {
        const i = next++;
        if (i >= count) return;
        const t0 = performance.now();
        await task(i);
        latencies.push(performance.now() - t0);
      }
    }),
  );
  return latencies;
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
}

const ADMIN_URL = process.env.GUICHET_BENCH_PG_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const APP_ROLE = 'guichet_bench_app';

export interface BenchDatabase {
  database: Database;
  ownerUrl: string;
  appUrl: string;
  drop(): Promise<void>;
}

/** A fresh, migrated PostgreSQL database, used through an unprivileged login role as in production. */
export async function benchDatabase(): Promise<BenchDatabase> {
  const name = `guichet_bench_${Date.now()}_${randomBytes(3).toString('hex')}`;
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const ownerUrl = urlFor(name);
  const migrated = await openDatabase({ databaseUrl: ownerUrl, databaseOwnerUrl: ownerUrl, allowPrivilegedRole: true });
  await migrated.close();
  await admin.query(`DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${APP_ROLE}') THEN CREATE ROLE ${APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END $$`);
  await admin.query(`GRANT guichet_app TO ${APP_ROLE}`);
  await admin.query(`GRANT CONNECT ON DATABASE ${name} TO ${APP_ROLE}`);
  const appUrl = urlFor(name, APP_ROLE);
  const database = await openDatabase({ databaseUrl: appUrl, migrate: false });
  return {
    database,
    ownerUrl,
    appUrl,
    drop: async () => {
      await database.close();
      if (process.env.BENCH_KEEP_DATABASE) log(`kept database ${name}`);
      else await admin.query(`DROP DATABASE IF EXISTS ${name}`);
      await admin.end();
    },
  };
}

function urlFor(database: string, user?: string): string {
  const u = new URL(ADMIN_URL);
  u.pathname = `/${database}`;
  if (user) u.username = user;
  return u.toString();
}

/** User and system CPU time (ms) in a /proc …/stat line: fields 14 and 15, after the command's closing parenthesis. */
function cpuMsOfStat(stat: string): number {
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * 10; // USER_HZ is 100 on Linux
}

/**
 * CPU time (ms) used so far by the processes named `postgres` on this machine
 * (Linux /proc; null elsewhere): with the server's own, what one request costs
 * in CPU — steadier on a shared machine than its throughput.
 */
export function postgresCpuMs(): number | null {
  try {
    let ms = 0;
    for (const pid of readdirSync('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      let stat: string;
      try {
        stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      } catch {
        continue; // ended meanwhile
      }
      if (stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) !== 'postgres') continue;
      ms += cpuMsOfStat(stat);
    }
    return ms;
  } catch {
    return null;
  }
}

/**
 * CPU time (ms) of each thread of this process, by thread id (Linux /proc; empty
 * elsewhere). The main thread's id is the process id; the others are libuv's
 * pool (where argon2id runs) and V8's helpers (garbage collection, compilers).
 */
export function threadCpuMs(): Map<number, number> {
  const out = new Map<number, number>();
  try {
    for (const tid of readdirSync('/proc/self/task')) {
      try {
        out.set(Number(tid), cpuMsOfStat(readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')));
      } catch {
        // the thread ended meanwhile
      }
    }
  } catch {
    // not Linux
  }
  return out;
}

/** What each thread spent between two threadCpuMs() readings. */
export function threadCpuSince(before: Map<number, number>): Map<number, number> {
  const out = new Map<number, number>();
  for (const [tid, ms] of threadCpuMs()) out.set(tid, ms - (before.get(tid) ?? 0));
  return out;
}

/**
 * BENCH_PROFILE=FILE: a CPU profile of this process's main thread while `fn` runs (sampled every
 * 200 µs), for finding where a measured phase spends its time. Without it, `fn` simply runs.
 */
export async function profiled<T>(fn: () => Promise<T>): Promise<T> {
  const file = process.env.BENCH_PROFILE;
  if (!file) return fn();
  const { Session } = await import('node:inspector/promises');
  const { writeFileSync } = await import('node:fs');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 200 });
  await session.post('Profiler.start');
  try {
    return await fn();
  } finally {
    const { profile } = await session.post('Profiler.stop');
    writeFileSync(file, JSON.stringify(profile));
    session.disconnect();
    log(`CPU profile written to ${file}`);
  }
}
