import { defineConfig } from 'vitest/config';

// GUICHET_TEST_DB=postgres runs the same suite on PostgreSQL (npm run test:pg);
// the default is PGlite. test/global-setup.ts prepares the database once a run.
export default defineConfig({
  test: {
    environment: 'node',
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    // Generous: on two shared cores a browser journey or a CLI run can take several times its usual time.
    testTimeout: 90_000,
    hookTimeout: 120_000,
    // Test files run in parallel, two at a time: the machines have two cores.
    fileParallelism: true,
    maxWorkers: 2,
    // The default reporter: a line per file, failures in full, then the summary
    // (files, tests, duration). It needs no TTY.
    reporters: ['default'],
  },
});
