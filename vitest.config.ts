import { defineConfig } from 'vitest/config';

// GUICHET_TEST_DB=postgres runs the same suite on PostgreSQL (npm run test:pg);
// the default is PGlite. test/global-setup.ts prepares the database once a run.
export default defineConfig({
  test: {
    environment: 'node',
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    setupFiles: ['test/file-setup.ts'],
    // Generous: on two shared cores a browser journey or a CLI run can take several times its usual time.
    testTimeout: 90_000,
    hookTimeout: 120_000,
    // Test files run in parallel, two at a time: the machines have two cores.
    fileParallelism: true,
    maxWorkers: 2,
    // A worker keeps its modules from one test file to the next: importing the application again for
    // every file cost about 6 s a file on a loaded machine (a third of a PGlite run). Files isolate
    // themselves by what they open — their own database or tenants, app, clock and browser — not by
    // module state; what is module-wide (key caches, the counters in use) is keyed or restored.
    isolate: false,
    // The default reporter: a line per file, failures in full, then the summary
    // (files, tests, duration). It needs no TTY.
    reporters: ['default'],
  },
});
