// Paced load like people reading pages, in its own process: each connection
// (its own keep-alive socket) asks for its next page after a think time drawn
// from an exponential distribution (mean 1/rate seconds), starting at a random
// moment of the first period, so the connections' requests arrive spread out
// as independent people's do — not all at the top of each second, as a
// per-second quota per connection makes them (autocannon's connectionRate).
//
// A page that comes back after its successor was due delays that successor;
// its latency is still counted from the moment it was due (no coordinated
// omission: a slow server cannot hide its queue by slowing the generator).
//
// Usage: node bench/browsers.mjs '<json>' with url, connections, duration (s),
// rate (pages a second per connection), timeout (s), requests (optional:
// [{ method, path, headers }], cycled through by each connection) and headers.
// Prints the same JSON as loadgen.mjs.
import http from 'node:http';
import { performance } from 'node:perf_hooks';

const opts = JSON.parse(process.argv[2] ?? '{}');
const url = new URL(opts.url);
const requests = opts.requests?.length ? opts.requests : [{ method: 'GET', path: url.pathname + url.search, headers: opts.headers ?? {} }];
const meanGapMs = 1000 / opts.rate;
const timeoutMs = (opts.timeout ?? 30) * 1000;
const startedAt = performance.now();
const endAt = startedAt + opts.duration * 1000;

const latencies = [];
/** Latencies by the second each page was due in: where in the run a tail comes from. */
const bySecond = [];
const statusCodeStats = {};
let errors = 0;
let timeouts = 0;
let non2xx = 0;

function once(agent, r) {
  return new Promise((resolve) => {
    const req = http.request({ host: url.hostname, port: url.port, method: r.method ?? 'GET', path: r.path, headers: { ...(opts.headers ?? {}), ...(r.headers ?? {}) }, agent, timeout: timeoutMs }, (res) => {
      res.on('data', () => {});
      res.on('end', () => resolve({ status: res.statusCode }));
      res.on('error', () => resolve({ error: true }));
    });
    req.on('timeout', () => {
      req.destroy();
      resolve({ timeout: true });
    });
    req.on('error', () => resolve({ error: true }));
    req.end();
  });
}

const gap = () => -Math.log(1 - Math.random()) * meanGapMs;
const sleepUntil = (t) => new Promise((r) => setTimeout(r, Math.max(0, t - performance.now())));

async function connection(i) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  let due = performance.now() + Math.random() * meanGapMs;
  for (let n = i; ; n++) {
    // A think time past the end is not waited out: the run lasts its duration.
    await sleepUntil(Math.min(due, endAt));
    if (due >= endAt) break;
    const r = await once(agent, requests[n % requests.length]);
    const done = performance.now();
    if (r.timeout) timeouts++;
    else if (r.error) errors++;
    else {
      latencies.push(done - due);
      (bySecond[Math.floor((due - startedAt) / 1000)] ??= []).push(done - due);
      statusCodeStats[r.status] = { count: (statusCodeStats[r.status]?.count ?? 0) + 1 };
      if (r.status < 200 || r.status >= 300) non2xx++;
    }
    due += gap();
  }
  agent.destroy();
}

await Promise.all(Array.from({ length: opts.connections }, (_, i) => connection(i)));
const seconds = (performance.now() - startedAt) / 1000;
latencies.sort((a, b) => a - b);
const pct = (p) => (latencies.length ? Math.round(latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]) : 0);
process.stdout.write(
  JSON.stringify({
    requests: latencies.length,
    rps: latencies.length / seconds,
    p50: pct(50),
    p99: pct(99),
    errors: errors + timeouts,
    timeouts,
    non2xx,
    duration: seconds,
    statusCodeStats,
    p99BySecond: bySecond.map((l) => (l.sort((a, b) => a - b), Math.round(l[Math.floor(0.99 * (l.length - 1))]))),
  }),
);
