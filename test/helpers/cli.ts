/**
 * Which entry point a test spawns for a `guichet` command, and the data
 * directories those commands start from. Commands run through the run's build
 * of the CLI's sources (test/global-setup.ts), which starts several times
 * faster than bin/guichet.mjs, the launcher operators run (tsx compiling the
 * sources as it loads them); test/cli/demo-start.test.ts and
 * test/cli/cli.test.ts run that launcher itself. Both are real processes, with
 * their own environment, output and exit code.
 */
import { cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The built CLI (test/global-setup.ts), or null when it could not be built. */
    guichetCliBundle: string | null;
    /** An embedded database with every migration applied and nothing else (test/global-setup.ts). */
    guichetPgliteTemplate: string;
  }
}

export const GUICHET_BIN = 'bin/guichet.mjs';

/** The script to hand to node for one command. */
export function guichetEntry(): string {
  return inject('guichetCliBundle') ?? GUICHET_BIN;
}

/**
 * A new GUICHET_DATA_DIR whose embedded database already has every migration,
 * as after a first `guichet migrate`: for tests about other commands, which
 * would otherwise spend their first command's seconds migrating. Tests about
 * migrating, first starts and restores use an empty directory (mkdtempSync).
 */
export function migratedDataDir(prefix: string): string {
  return withMigratedDatabase(mkdtempSync(join(tmpdir(), prefix)));
}

/** Gives the data directory `dir` (made if need be) that migrated embedded database; returns `dir`. */
export function withMigratedDatabase(dir: string): string {
  cpSync(inject('guichetPgliteTemplate'), join(dir, 'pglite'), { recursive: true });
  return dir;
}
