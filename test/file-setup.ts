/**
 * Runs before each test file, in the worker that runs it. Workers keep their
 * modules from one file to the next (vitest.config.ts, isolate: false), so
 * what a helper keeps per file starts again here.
 */
import { TEST_FILE_TENANTS } from './helpers/db.ts';

TEST_FILE_TENANTS.clear();
