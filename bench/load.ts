/**
 * Load: 1,000 concurrent connections browsing the public directory (list,
 * filters, facility pages) and a parent's pages (signed in) for 60 s, from a
 * separate load process; baseline: the same connections on a bare Fastify
 * "hello" route in the same run. Aims: 0 errors, p99 ≤ 200 ms.
 *
 * Each connection sends its next request as soon as the last is answered
 * (closed loop: the figure is what the server sustains, and the latency is
 * what 1,000 waiting browsers see at that rate). BENCH_LOAD_RATE=n paces
 * each connection to n requests a second instead, closer to people reading
 * pages between clicks.
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
import { benchApp, parentWithChild } from './app.ts';
import { load, type LoadResult } from './http.ts';
import { benchDatabase, log, report } from './lib.ts';

const SECONDS = Number(process.env.BENCH_LOAD_SECONDS ?? 60);
const CONNECTIONS = Number(process.env.BENCH_LOAD_CONNECTIONS ?? 1000);
const RATE = Number(process.env.BENCH_LOAD_RATE ?? 0);
// Long enough that an overloaded server's answers are measured rather than abandoned (an abandoned
// request is still served, for nobody, and slows every other); a request still waiting then is an error.
const TIMEOUT_S = Number(process.env.BENCH_LOAD_TIMEOUT ?? 30);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');

const b = await benchDatabase();
try {
  const { app, tenant, host } = await benchApp(b);
  await importFacilities(b.database.db, tenant.id, readFileSync(join(root, 'seed-data', 'facilities-monteregie-2022-11.csv'), 'utf8'), {
    now: new Date(),
    origin: { actorAccountId: null, actorRoles: ['system:bench'], ip: null, userAgent: null, requestId: null },
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
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
  await bare.listen({ port: 0, host: '127.0.0.1' });
  const barePort = (bare.server.address() as { port: number }).port;

  // Every page answers before the clock starts: a wrong cookie or a broken page would otherwise pass as "load".
  for (const r of requests) {
    const res = await fetch(`http://127.0.0.1:${port}${r.path}`, { headers: r.headers, redirect: 'manual' });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`${r.path} answered ${res.status} before the load`);
  }

  const pace = RATE > 0 ? { connectionRate: RATE } : {};
  log(`load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}; ${CONNECTIONS} connections${RATE > 0 ? ` at ${RATE} request/s each` : ', closed loop'}: the bare route for ${Math.max(5, Math.round(SECONDS / 4))} s, then ${requests.length} of Guichet's pages (${requests.length - paths.length} signed in) for ${SECONDS} s`);
  const baseline = await load({ url: `http://127.0.0.1:${barePort}`, connections: CONNECTIONS, duration: Math.max(5, Math.round(SECONDS / 4)), timeout: TIMEOUT_S, ...pace });
  const r = await load({ url: `http://127.0.0.1:${port}`, connections: CONNECTIONS, duration: SECONDS, requests, timeout: TIMEOUT_S, ...pace });
  const errors = (x: LoadResult) => x.errors + x.non2xx;
  const codes = (x: LoadResult) => Object.entries(x.statusCodeStats).map(([c, v]) => `${c}: ${v.count}`).join(', ');
  log(`load average ${loadavg().map((l) => l.toFixed(1)).join(' ')} at the end; status codes ${codes(r)} (bare: ${codes(baseline)})`);
  const note = `${r.requests} requests; errors ${errors(r)} (timeouts ${r.timeouts}, connection errors ${r.errors - r.timeouts}, non-2xx ${r.non2xx}); bare route errors ${errors(baseline)}`;
  report({ name: 'load.pages.throughput', value: r.rps, unit: 'req/s', baseline: baseline.rps, baselineLabel: 'bare Fastify hello route' });
  // autocannon leaves timed-out requests out of its latencies: when they are more than 1 % (50 %) of
  // the attempts, the p99 (p50) is at least the timeout, and is reported as that lower bound.
  const bound = (x: LoadResult, p: number, share: number) => (x.timeouts > share * (x.requests + x.timeouts) ? Math.max(p, TIMEOUT_S * 1000) : p);
  const lowerBound = (x: LoadResult, share: number) => (x.timeouts > share * (x.requests + x.timeouts) ? `at least: ${x.timeouts} of ${x.requests + x.timeouts} requests timed out after ${TIMEOUT_S} s` : '');
  report({ name: 'load.pages.p50', value: bound(r, r.p50, 0.5), unit: 'ms', baseline: bound(baseline, baseline.p50, 0.5), lowerIsBetter: true, baselineLabel: 'bare route', note: lowerBound(r, 0.5) });
  report({ name: 'load.pages.p99', value: bound(r, r.p99, 0.01), unit: 'ms', baseline: bound(baseline, baseline.p99, 0.01), lowerIsBetter: true, baselineLabel: 'bare route', note: ['aim ≤ 200 ms', lowerBound(r, 0.01)].filter(Boolean).join('; ') });
  report({ name: 'load.pages.errors', value: errors(r), unit: 'errors', baseline: errors(baseline), baselineLabel: 'bare route', note: `aim 0; ${note}` });
  await bare.close();
  await app.close();
} finally {
  await b.drop();
}
