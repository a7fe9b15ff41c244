import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface LoadResult {
  requests: number;
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  duration: number;
  statusCodeStats: Record<string, { count: number }>;
  /** Paced runs only: the p99 of the pages due in each second of the run. */
  p99BySecond?: number[];
}

const LOADGEN = join(dirname(fileURLToPath(import.meta.url)), 'loadgen.mjs');
const BROWSERS = join(dirname(fileURLToPath(import.meta.url)), 'browsers.mjs');

/** Runs autocannon in a separate process against a server of this process. */
export function load(options: Record<string, unknown>): Promise<LoadResult> {
  return generate(LOADGEN, options);
}

/**
 * Paced load in a separate process: each connection asks for a page after an
 * exponential think time (mean 1/rate s) from a random start (bench/browsers.mjs).
 */
export function browse(options: { url: string; connections: number; duration: number; rate: number; timeout: number; requests?: unknown[] }): Promise<LoadResult> {
  return generate(BROWSERS, options);
}

function generate(script: string, options: Record<string, unknown>): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [script, JSON.stringify(options)], { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`loadgen failed: ${stderr || err.message}`));
      resolve(JSON.parse(stdout) as LoadResult);
    });
  });
}
