/**
 * Load: 1,000 concurrent connections browsing the public directory (list,
 * filters, facility pages) and a parent's pages for 60 s, from a separate load
 * process; baseline: the same connections on a bare Fastify "hello" route in
 * the same run. Aims: 0 errors, p99 ≤ 200 ms.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import { importFacilities } from '../src/directory/import.ts';
import { benchApp, parentWithChild } from './app.ts';
import { load } from './http.ts';
import { benchDatabase, log, report } from './lib.ts';

const SECONDS = Number(process.env.BENCH_LOAD_SECONDS ?? 60);
const CONNECTIONS = Number(process.env.BENCH_LOAD_CONNECTIONS ?? 1000);
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

  log(`${CONNECTIONS} connections for ${SECONDS} s on the bare route, then on Guichet's pages`);
  const baseline = await load({ url: `http://127.0.0.1:${barePort}`, connections: CONNECTIONS, duration: Math.max(5, Math.round(SECONDS / 4)) });
  const r = await load({ url: `http://127.0.0.1:${port}`, connections: CONNECTIONS, duration: SECONDS, requests, timeout: 10 });
  report({ name: 'load.pages.throughput', value: r.rps, unit: 'req/s', baseline: baseline.rps, baselineLabel: 'bare Fastify hello route' });
  report({ name: 'load.pages.p99', value: r.p99, unit: 'ms', baseline: baseline.p99, lowerIsBetter: true, note: `aim ≤ 200 ms; ${r.requests} requests, errors ${r.errors}, timeouts ${r.timeouts}, non-2xx ${r.non2xx}` });
  await bare.close();
  await app.close();
} finally {
  await b.drop();
}
