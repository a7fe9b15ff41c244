/**
 * Which entry point a test spawns for a `guichet` command. The first command a
 * test file runs goes through bin/guichet.mjs, the launcher operators run
 * (tsx compiling the sources as it loads them); the others go through the
 * run's bundle of the same sources (test/global-setup.ts), which starts
 * several times faster. Both are real processes, with their own environment,
 * output and exit code.
 */
import { inject } from 'vitest';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The bundled CLI (test/global-setup.ts), or null when it could not be built. */
    guichetCliBundle: string | null;
  }
}

export const GUICHET_BIN = 'bin/guichet.mjs';

let launcherRan = false;

/** A new test file: its first command goes through bin/guichet.mjs again (test/file-setup.ts). */
export function resetLauncher(): void {
  launcherRan = false;
}

/** The script to hand to node for one command, as described above. */
export function guichetEntry(): string {
  const bundle = inject('guichetCliBundle');
  if (!bundle || !launcherRan) {
    launcherRan = true;
    return GUICHET_BIN;
  }
  return bundle;
}
