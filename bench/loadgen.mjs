// A load generator in its own process, so that it does not share the event
// loop of the server it measures. Usage: node bench/loadgen.mjs '<json options>'
// Options are autocannon's (url, connections, duration, headers, requests…).
// Prints autocannon's result as JSON on stdout.
import autocannon from 'autocannon';

const opts = JSON.parse(process.argv[2] ?? '{}');
const result = await autocannon({ ...opts, renderProgressBar: false, renderResultsTable: false, renderLatencyTable: false });
process.stdout.write(JSON.stringify({
  requests: result.requests.total,
  rps: result.requests.average,
  p50: result.latency.p50,
  p99: result.latency.p99,
  errors: result.errors,
  timeouts: result.timeouts,
  non2xx: result.non2xx,
  duration: result.duration,
  statusCodeStats: result.statusCodeStats,
}));
