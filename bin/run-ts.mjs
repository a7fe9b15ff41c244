#!/usr/bin/env node
import { register } from 'tsx/esm/api';
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';

register();
const [, , script, ...rest] = process.argv;
if (!script) {
  console.error('usage: run-ts.mjs FILE.ts [args]');
  process.exit(2);
}
process.argv = [process.argv[0], resolve(script), ...rest];
await import(pathToFileURL(resolve(script)).href);
