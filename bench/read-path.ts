/**
 * An authenticated read of a child file through the whole stack (session from
 * the cookie, authorization, the records gateway with its audit event written
 * before the answer, field trimming, page rendering) against a bare Fastify
 * route doing one PostgreSQL point read, both over HTTP at 64 concurrent
 * connections from a separate load process, on the same database, in the same
 * run. Aims: ratio ≥ 0.6, p99 ≤ 50 ms.
 *
 * BENCH_PROFILE=FILE writes a CPU profile of this process (the server) during
 * the full-stack run only, for Chrome's DevTools or `node --cpu-prof`'s readers.
 */
import Fastify from 'fastify';
import pg from 'pg';
import { LISTEN_BACKLOG } from '../src/server.ts';
import { benchApp, parentWithChild } from './app.ts';
import { load } from './http.ts';
import { benchDatabase, log, postgresCpuMs, profiled, report } from './lib.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 64);

const b = await benchDatabase();
try {
  const { app, host } = await benchApp(b);
  await app.listen({ port: 0, host: '127.0.0.1', backlog: LISTEN_BACKLOG });
  const port = (app.server.address() as { port: number }).port;
  const base = `http://127.0.0.1:${port}`;

  const { childPath, childId, cookie } = await parentWithChild(base, host, b.ownerUrl);
  const owner = new pg.Client({ connectionString: b.ownerUrl });
  await owner.connect();

  // The baseline: a bare Fastify server, one point read by primary key on the same database.
  const pool = new pg.Pool({ connectionString: b.ownerUrl, max: 20 });
  const bare = Fastify();
  bare.get<{ Params: { id: string } }>('/point/:id', async (req) => (await pool.query('SELECT id, reference, desired_entry_date FROM children WHERE id = $1', [req.params.id])).rows[0]);
  await bare.listen({ port: 0, host: '127.0.0.1', backlog: LISTEN_BACKLOG });
  const barePort = (bare.server.address() as { port: number }).port;

  const run = (url: string, headers: Record<string, string> = {}) => load({ url, connections: CONNECTIONS, duration: SECONDS, headers });
  /** A run, with the CPU each request cost this server process and the database's processes. */
  const measured = async (url: string, headers: Record<string, string> = {}) => {
    const cpu0 = process.cpuUsage();
    const db0 = postgresCpuMs();
    const r = await run(url, headers);
    const cpu = process.cpuUsage(cpu0);
    const db1 = postgresCpuMs();
    const n = Math.max(1, r.requests);
    return { ...r, serverMs: (cpu.user + cpu.system) / 1000 / n, dbMs: db0 === null || db1 === null ? null : (db1 - db0) / n };
  };
  const cpuNote = (r: { serverMs: number; dbMs: number | null }) => `server ${r.serverMs.toFixed(2)} ms${r.dbMs === null ? '' : ` + PostgreSQL ${r.dbMs.toFixed(2)} ms`}`;
  log(`warming up, then ${SECONDS} s each at ${CONNECTIONS} connections`);
  await run(`http://127.0.0.1:${barePort}/point/${childId}`);
  await run(`${base}${childPath}`, { host, cookie });
  const baseline = await measured(`http://127.0.0.1:${barePort}/point/${childId}`);
  const full = await profiled(() => measured(`${base}${childPath}`, { host, cookie }));
  const audited = await owner.query<{ n: string }>("SELECT count(*) AS n FROM audit_events WHERE action = 'waitlist.childFile.read'");
  report({ name: 'read.childFile.throughput', value: full.rps, unit: 'req/s', baseline: baseline.rps, baselineLabel: 'bare Fastify + one point read', note: `CPU a request: ${cpuNote(full)}; bare: ${cpuNote(baseline)}` });
  report({ name: 'read.childFile.p99', value: full.p99, unit: 'ms', baseline: baseline.p99, lowerIsBetter: true, note: `aim ≤ 50 ms; errors ${full.errors}, non-2xx ${full.non2xx}; ${audited.rows[0]!.n} reads audited` });
  await owner.end();
  await bare.close();
  await pool.end();
  await app.close();
} finally {
  await b.drop();
}
