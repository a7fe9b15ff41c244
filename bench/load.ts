/**
 * Load: 1,000 concurrent connections browsing the public directory (list,
 * filters, facility pages) and a parent's pages (signed in), from a separate
 * load process; baseline: the same connections on a bare Fastify "hello"
 * route in the same run. Aims: 0 errors, p99 ≤ 200 ms.
 *
 * Two runs of BENCH_LOAD_SECONDS (60) each:
 * - browsing: each connection asks for its next page after a think time
 *   drawn at random around 1/BENCH_LOAD_RATE seconds (default 1: a page a
 *   second per connection, 1,000 pages a second in all — brisker than people
 *   reading), from a random start, so that requests arrive spread out as
 *   independent people's do (bench/browsers.mjs); latency counted from when
 *   each page was due. It first runs BENCH_LOAD_WARMUP (10) seconds unmeasured
 *   on a server that has just started (its figures printed apart). This is
 *   the run the aims are read on.
 * - closed loop: each connection asks again as soon as it is answered (what
 *   the server sustains; the latency is then the queue 1,000 connections
 *   make at that rate, Little's law).
 *
 * The server is the real one with its real limits: nothing here is relaxed
 * for the load generator.
 */
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import { importFacilities } from '../src/directory/import.ts';
import { LISTEN_BACKLOG } from '../src/server.ts';
import { benchApp, parentWithChild } from './app.ts';
import { browse, load, type LoadResult } from './http.ts';
import { benchDatabase, log, report } from './lib.ts';

const SECONDS = Number(process.env.BENCH_LOAD_SECONDS ?? 60);
const CONNECTIONS = Number(process.env.BENCH_LOAD_CONNECTIONS ?? 1000);
const RATE = Number(process.env.BENCH_LOAD_RATE ?? 1);
// Long enough that an overloaded server's answers are measured rather than abandoned (an abandoned
// request is still served, for nobody, and slows every other); a request still waiting then is an error.
const TIMEOUT_S = Number(process.env.BENCH_LOAD_TIMEOUT ?? 30);
// The browsing load first runs this long unmeasured, on each server: a cold start (the pool's connections
// opening and preparing their statements, the code compiled, 1,000 sockets accepted at once) queues pages for
// seconds; its figures are printed apart.
const WARM_S = Number(process.env.BENCH_LOAD_WARMUP ?? 10);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');

const b = await benchDatabase();
try {
  const { app, tenant, host } = await benchApp(b);
  await importFacilities(b.database.db, tenant.id, readFileSync(join(root, 'seed-data', 'facilities-monteregie-2022-11.csv'), 'utf8'), {
    now: new Date(),
    origin: { actorAccountId: null, actorRoles: ['system:bench'], ip: null, userAgent: null, requestId: null },
  });
  await app.listen({ port: 0, host: '127.0.0.1', backlog: LISTEN_BACKLOG });
  const port = (app.server.address() as { port: number }).port;
  const firstPage = await (await fetch(`http://127.0.0.1:${port}/directory`, { headers: { host } })).text();
  const facilityPaths = [...firstPage.matchAll(/href="(\/directory\/[0-9a-f-]{36})"/g)].map((m) => m[1]!).slice(0, 10);
  const paths = ['/', '/directory', '/directory?page=3', '/directory?municipality=Longueuil', '/directory?kind=cpe&subsidised=on', '/directory?q=soleil', '/signin', '/signup', ...facilityPaths];
  // One parent's pages too, with a session (the same session on every connection).
  const { childPath, cookie } = await parentWithChild(`http://127.0.0.1:${port}`, host, b.ownerUrl);
  const requests = [
    ...paths.map((path) => ({ method: 'GET', path, headers: { host } })),
    ...['/account', childPath, '/account/sessions'].map((path) => ({ method: 'GET', path, headers: { host, cookie } })),
  ];

  const bare = Fastify();
  bare.get('/', async () => 'bonjour');
  await bare.listen({ port: 0, host: '127.0.0.1', backlog: LISTEN_BACKLOG });
  const barePort = (bare.server.address() as { port: number }).port;

  // Every page answers before the clock starts: a wrong cookie or a broken page would otherwise pass as "load".
  for (const r of requests) {
    const res = await fetch(`http://127.0.0.1:${port}${r.path}`, { headers: r.headers, redirect: 'manual' });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`${r.path} answered ${res.status} before the load`);
  }

  const errors = (x: LoadResult) => x.errors + x.non2xx;
  const codes = (x: LoadResult) => Object.entries(x.statusCodeStats).map(([c, v]) => `${c}: ${v.count}`).join(', ');
  // autocannon leaves timed-out requests out of its latencies (and so does browsers.mjs): when they are more
  // than 1 % (50 %) of the attempts, the p99 (p50) is at least the timeout, and is reported as that lower bound.
  const bound = (x: LoadResult, p: number, share: number) => (x.timeouts > share * (x.requests + x.timeouts) ? Math.max(p, TIMEOUT_S * 1000) : p);
  const lowerBound = (x: LoadResult, share: number) => (x.timeouts > share * (x.requests + x.timeouts) ? `at least: ${x.timeouts} of ${x.requests + x.timeouts} requests timed out after ${TIMEOUT_S} s` : '');
  const bareSeconds = Math.max(5, Math.round(SECONDS / 4));
  type Run = (o: { url: string; duration: number; requests?: unknown[] }) => Promise<LoadResult>;
  const phases: { name: string; what: string; run: Run; aims: boolean }[] = [
    { name: 'browsing', what: `at about ${RATE} page/s each, spread out`, run: (o) => browse({ ...o, connections: CONNECTIONS, rate: RATE, timeout: TIMEOUT_S }), aims: true },
    { name: 'closed', what: 'closed loop', run: (o) => load({ ...o, connections: CONNECTIONS, timeout: TIMEOUT_S }), aims: false },
  ];
  for (const phase of phases) {
    log(`load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}; ${CONNECTIONS} connections ${phase.what}: the bare route for ${bareSeconds} s, then ${requests.length} of Guichet's pages (${requests.length - paths.length} signed in) for ${SECONDS} s`);
    if (phase.aims && WARM_S > 0) {
      const cold = await phase.run({ url: `http://127.0.0.1:${port}`, duration: WARM_S, requests });
      await phase.run({ url: `http://127.0.0.1:${barePort}/`, duration: Math.min(WARM_S, bareSeconds) });
      log(`warm-up from a cold start (${WARM_S} s, not in the figures): ${cold.requests} pages, p50 ${cold.p50} ms, p99 ${cold.p99} ms, errors ${errors(cold)}`);
    }
    const baseline = await phase.run({ url: `http://127.0.0.1:${barePort}/`, duration: bareSeconds });
    const r = await phase.run({ url: `http://127.0.0.1:${port}`, duration: SECONDS, requests });
    log(`load average ${loadavg().map((l) => l.toFixed(1)).join(' ')} at the end; status codes ${codes(r)} (bare: ${codes(baseline)})`);
    if (r.p99BySecond) log(`p99 of the pages due in each second (ms): ${r.p99BySecond.join(' ')}`);
    const note = `${r.requests} requests; errors ${errors(r)} (timeouts ${r.timeouts}, connection errors ${r.errors - r.timeouts}, non-2xx ${r.non2xx}); bare route errors ${errors(baseline)}`;
    const aim = (text: string) => (phase.aims ? [text] : []);
    report({ name: `load.${phase.name}.throughput`, value: r.rps, unit: 'req/s', baseline: baseline.rps, baselineLabel: 'bare Fastify hello route' });
    report({ name: `load.${phase.name}.p50`, value: bound(r, r.p50, 0.5), unit: 'ms', baseline: bound(baseline, baseline.p50, 0.5), lowerIsBetter: true, baselineLabel: 'bare route', note: lowerBound(r, 0.5) });
    report({ name: `load.${phase.name}.p99`, value: bound(r, r.p99, 0.01), unit: 'ms', baseline: bound(baseline, baseline.p99, 0.01), lowerIsBetter: true, baselineLabel: 'bare route', note: [...aim('aim ≤ 200 ms'), lowerBound(r, 0.01)].filter(Boolean).join('; ') });
    report({ name: `load.${phase.name}.errors`, value: errors(r), unit: 'errors', baseline: errors(baseline), baselineLabel: 'bare route', note: [...aim('aim 0'), note].join('; ') });
  }
  await bare.close();
  await app.close();
} finally {
  await b.drop();
}
