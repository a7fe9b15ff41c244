/**
 * `npm run bench`: every benchmark of the project, one after the other (they
 * would disturb each other run together on two cores), each in its own
 * process. Each prints its figures beside a baseline measured in the same run
 * and their ratio; `npm run bench -- --json` prints one JSON object per line
 * (name, value, unit, baseline, ratio). `npm run bench -- identity read-path`
 * runs only those. Benchmarks report; they never fail on a figure.
 */
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const HELPERS = new Set(['lib', 'app', 'http', 'run', 'loadgen']);
const json = process.argv.includes('--json');
const only = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const benches = readdirSync(here)
  .filter((f) => f.endsWith('.ts') && !HELPERS.has(f.slice(0, -3)))
  .map((f) => f.slice(0, -3))
  .filter((n) => !only.length || only.includes(n))
  .sort();

let failed = 0;
for (const name of benches) {
  if (!json) process.stdout.write(`\n== ${name}\n`);
  const code = await new Promise<number>((resolve) => {
    const child = spawn(process.execPath, [join(here, '..', 'bin', 'run-ts.mjs'), join(here, `${name}.ts`), ...(json ? ['--json'] : [])], { stdio: ['ignore', 'inherit', 'inherit'] });
    child.on('exit', (c) => resolve(c ?? 1));
  });
  if (code !== 0) {
    failed++;
    process.stderr.write(`bench ${name} exited with ${code}\n`);
  }
}
process.exit(failed ? 1 : 0);
