/**
 * Sign-in throughput through the whole stack (HTTP parsing, CSRF, throttling
 * rows, argon2id verification, session creation, audit event) against raw
 * argon2id verifications with the same parameters, on the same cores, in the
 * same run. Sign-in is argon2-bound by design: the aim is a ratio ≥ 0.9.
 */
import { loadavg } from 'node:os';
import { performance as perf } from 'node:perf_hooks';
import { verify } from '@node-rs/argon2';
import { inTenant } from '../src/db/tenant.ts';
import { hashPassword } from '../src/identity/passwords.ts';
import { createDemoAccount } from '../src/identity/service.ts';
import { benchApp } from './app.ts';
import { benchDatabase, log, percentile, pool, postgresCpuMs, profiled, report, threadCpuMs, threadCpuSince } from './lib.ts';

const N = Number(process.env.BENCH_SIGNINS ?? 240);
// Enough requests in flight that argon2id's worker threads (libuv's pool, 4 by default) always have
// one waiting while others wait on the database: what a server under a burst of sign-ins sees. The
// raw verifications get the same concurrency (more than 4 changes nothing for them).
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
const PASSWORD = 'correct horse battery staple';

const b = await benchDatabase();
try {
  const { app, tenant, host } = await benchApp(b);
  const now = new Date();
  const emails = Array.from({ length: 16 }, (_, i) => `bench${i}@exemple.test`);
  await inTenant(b.database.db, tenant.id, async (trx) => {
    for (const e of emails) await createDemoAccount(trx, tenant.id, e, PASSWORD, now);
  });
  const stored = await hashPassword(PASSWORD);

  // One browser per account: a CSRF cookie and token, reused for every sign-in of that browser.
  const browsers = await Promise.all(
    emails.map(async (email, i) => {
      const r = await app.inject({ method: 'GET', url: '/signin', headers: { host }, remoteAddress: `10.1.0.${i + 1}` });
      const cookie = ([] as string[]).concat(r.headers['set-cookie'] as string[]).map((c) => c.split(';')[0]).join('; ');
      const token = /name="_csrf" value="([^"]+)"/.exec(r.body)![1]!;
      return { email, cookie, token, ip: `10.1.0.${i + 1}`, device: '' };
    }),
  );

  // CPU time of this process (every thread: argon2id's workers and the event loop) per operation:
  // unlike a rate, it does not move with what else the shared machine runs.
  const cpuMs = (since: NodeJS.CpuUsage) => {
    const u = process.cpuUsage(since);
    return (u.user + u.system) / 1000;
  };
  const argon = async (n: number) => {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await pool(n, CONCURRENCY, async () => {
      if (!(await verify(stored, PASSWORD))) throw new Error('verify failed');
    });
    return { rate: (n / (performance.now() - t0)) * 1000, cpu: cpuMs(c0) / n };
  };
  const signIns = async (n: number) => {
    const c0 = process.cpuUsage();
    const elu0 = perf.eventLoopUtilization();
    const t0 = performance.now();
    const lat = await pool(n, CONCURRENCY, async (i) => {
      const br = browsers[i % browsers.length]!;
      const r = await app.inject({
        method: 'POST',
        url: '/signin',
        // A browser keeps the device cookie of its first sign-in, as real ones do (the first is a new device).
        headers: { host, cookie: br.device ? `${br.cookie}; ${br.device}` : br.cookie, 'content-type': 'application/x-www-form-urlencoded' },
        remoteAddress: br.ip,
        payload: new URLSearchParams({ _csrf: br.token, email: br.email, password: PASSWORD }).toString(),
      });
      if (r.statusCode !== 303) throw new Error(`sign-in answered ${r.statusCode}`);
      if (!br.device) br.device = ([] as string[]).concat(r.headers['set-cookie'] as string[]).map((c) => c.split(';')[0]!).find((c) => c.includes('guichet_device=')) ?? '';
    });
    const rate = (n / (performance.now() - t0)) * 1000;
    return { rate, lat, cpu: cpuMs(c0) / n, elu: perf.eventLoopUtilization(elu0).utilization };
  };

  log('warming up');
  await argon(16);
  await signIns(16);
  log(`measuring ${N} raw argon2id verifications, ${N} sign-ins, ${N} verifications (concurrency ${CONCURRENCY})`);
  let threads = threadCpuMs();
  const before = await argon(N);
  // The threads that did the raw verifications are libuv's pool: in the sign-ins, what they spend is argon2id's.
  const poolThreads = new Set([...threadCpuSince(threads)].filter(([tid, ms]) => tid !== process.pid && ms > 0.1 * N).map(([tid]) => tid));
  threads = threadCpuMs();
  const db0 = postgresCpuMs();
  const s = await profiled(() => signIns(N));
  const db1 = postgresCpuMs();
  const spent = threadCpuSince(threads);
  const after = await argon(N);
  log(`load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}; event loop busy ${(s.elu * 100).toFixed(0)}% during the sign-ins; p50 ${percentile(s.lat, 50).toFixed(0)} ms, p99 ${percentile(s.lat, 99).toFixed(0)} ms`);
  report({ name: 'identity.signin.throughput', value: s.rate, unit: 'sign-ins/s', baseline: (before.rate + after.rate) / 2, baselineLabel: 'raw argon2id verify/s, same cores' });
  report({ name: 'identity.signin.cpu', value: s.cpu, unit: 'ms CPU/sign-in', baseline: (before.cpu + after.cpu) / 2, lowerIsBetter: true, baselineLabel: 'ms CPU/raw verify, this process (PostgreSQL not counted)' });
  // Where a sign-in's CPU goes (per sign-in): argon2id in the pool, the event loop, V8's helper threads, PostgreSQL.
  if (spent.size) {
    let argonMs = 0;
    let helpersMs = 0;
    for (const [tid, ms] of spent) if (poolThreads.has(tid)) argonMs += ms; else if (tid !== process.pid) helpersMs += ms;
    const perSignIn = (ms: number) => ms / N;
    const besides = perSignIn((spent.get(process.pid) ?? 0) + helpersMs) + (db0 === null || db1 === null ? 0 : perSignIn(db1 - db0));
    const rawCpu = (before.cpu + after.cpu) / 2;
    report({
      name: 'identity.signin.cpu.besidesArgon2',
      value: besides,
      unit: 'ms CPU/sign-in',
      // At a ratio of 0.9 a sign-in may cost 1/0.9 of a raw verification in all: this is what is left for the rest.
      baseline: rawCpu / 0.9 - rawCpu,
      lowerIsBetter: true,
      baselineLabel: 'what a ratio of 0.9 leaves besides argon2id',
      note: `argon2id ${perSignIn(argonMs).toFixed(2)} ms, event loop ${perSignIn(spent.get(process.pid) ?? 0).toFixed(2)} ms, V8 helper threads ${perSignIn(helpersMs).toFixed(2)} ms, PostgreSQL ${db0 === null || db1 === null ? 'n/a' : `${perSignIn(db1 - db0).toFixed(2)} ms`}`,
    });
  }
  await app.close();
} finally {
  await b.drop();
}
