#!/usr/bin/env node
// Guichet ships its TypeScript sources and runs them through tsx, so the
// code that is reviewed is the code that runs (no separate build artefact).
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
