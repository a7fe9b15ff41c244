/**
 * The shared counters' contract, run the same on both implementations:
 * PostgreSQL rows (the test database, PGlite or PostgreSQL) and Redis (the
 * local server; skipped if none answers and GUICHET_TEST_REDIS_URL is
 * unset). The suites of the sign-in throttle and of detection run over
 * either with GUICHET_TEST_COUNTERS=redis.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SharedCounters, SignInWindows } from '../../src/counters/counters.ts';
import { PostgresCounters } from '../../src/counters/postgres.ts';
import type { RedisCounters } from '../../src/counters/redis.ts';
import type { Trx } from '../../src/db/connection.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { createTestDatabase, createTestTenant, type TestDatabase } from '../helpers/db.ts';
import { connectTestCounters, redisForTests } from '../helpers/redis.ts';

const W: SignInWindows = { accountMs: 15 * 60_000, sourceMs: 10 * 60_000, sourceBlockMs: 30 * 60_000 };
const MIN = 60_000;

let database: TestDatabase;
let redis: RedisCounters | null = null;
const hasRedis = await redisForTests();

beforeAll(async () => {
  database = await createTestDatabase();
  if (hasRedis) redis = await connectTestCounters();
});
afterAll(async () => {
  await redis?.close();
  await database?.close();
});

const impls: { name: string; get: () => SharedCounters; run: boolean }[] = [
  { name: 'PostgreSQL rows', get: () => new PostgresCounters(), run: true },
  { name: 'Redis', get: () => redis!, run: hasRedis },
];

for (const impl of impls) {
  describe.runIf(impl.run)(`shared counters: ${impl.name}`, () => {
    let tenantId: string;
    let c: SharedCounters;
    beforeAll(async () => {
      tenantId = (await createTestTenant(database)).id;
      c = impl.get();
    });
    const tx = <T>(fn: (trx: Trx) => Promise<T>) => inTenant(database.db, tenantId, fn);
    const key = () => randomBytes(32);
    const ip = () => `203.0.113.${1 + Math.floor(Math.random() * 250)}-${randomUUID().slice(0, 6)}`;

    it('counts an account’s failures since its last success, and a source’s failures and accounts, in their windows', async () => {
      const t0 = Date.UTC(2030, 0, 1, 12);
      const at = (ms: number) => new Date(t0 + ms);
      const a = key();
      const b = key();
      const src = ip();
      expect(await tx((trx) => c.signInCounts(trx, tenantId, a, src, W, at(0)))).toEqual({ accountFailures: 0, accountLast: null, sourceFailures: 0, sourceLast: null, sourceAccounts: 0 });
      for (let i = 0; i < 3; i++) {
        const r = await tx((trx) => c.recordSignIn(trx, tenantId, a, src, false, W, at(i * 1000)));
        expect(r).toMatchObject({ accountFailures: i + 1, sourceFailures: i + 1, sourceAccounts: 1 });
      }
      expect(await tx((trx) => c.recordSignIn(trx, tenantId, b, src, false, W, at(3000)))).toMatchObject({ accountFailures: 1, sourceFailures: 4, sourceAccounts: 2 });
      const now = await tx((trx) => c.signInCounts(trx, tenantId, a, src, W, at(5000)));
      expect(now).toEqual({ accountFailures: 3, accountLast: at(2000), sourceFailures: 4, sourceLast: at(3000), sourceAccounts: 2 });
      // A success resets the account's count, not its latest failure, and not the source's counts.
      expect(await tx((trx) => c.recordSignIn(trx, tenantId, a, src, true, W, at(6000)))).toBeNull();
      expect(await tx((trx) => c.signInCounts(trx, tenantId, a, src, W, at(7000)))).toEqual({ accountFailures: 0, accountLast: at(2000), sourceFailures: 4, sourceLast: at(3000), sourceAccounts: 2 });
      expect(await tx((trx) => c.recordSignIn(trx, tenantId, a, src, false, W, at(8000)))).toMatchObject({ accountFailures: 1 });
      // Windows slide: past the source window the counts go, the latest failure still blocks until the longest block ends.
      expect(await tx((trx) => c.signInCounts(trx, tenantId, a, src, W, at(8000 + 11 * MIN)))).toEqual({ accountFailures: 1, accountLast: at(8000), sourceFailures: 0, sourceLast: at(8000), sourceAccounts: 0 });
      expect(await tx((trx) => c.signInCounts(trx, tenantId, a, src, W, at(8000 + 31 * MIN)))).toEqual({ accountFailures: 0, accountLast: null, sourceFailures: 0, sourceLast: null, sourceAccounts: 0 });
      // No source address: counted for the account only.
      const d = key();
      expect(await tx((trx) => c.recordSignIn(trx, tenantId, d, null, false, W, at(0)))).toEqual({ accountFailures: 1, accountLast: at(0), sourceFailures: 0, sourceLast: null, sourceAccounts: 0 });
    });

    it('counts failures recorded at once, from many connections, each once', async () => {
      const a = key();
      const src = ip();
      const now = new Date();
      const results = await Promise.all(Array.from({ length: 12 }, () => tx((trx) => c.recordSignIn(trx, tenantId, a, src, false, W, now))));
      expect(results.every((r) => r !== null)).toBe(true);
      expect(await tx((trx) => c.signInCounts(trx, tenantId, a, src, W, now))).toMatchObject({ accountFailures: 12, sourceFailures: 12, sourceAccounts: 1 });
      if (impl.name === 'Redis') {
        // Atomic: each failure saw its own total, so "the tenth" happens exactly once.
        expect(results.map((r) => r!.accountFailures).sort((x, y) => x - y)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
      }
    });

    it('gives a source so many of a kind in a window, then says when the oldest leaves it', async () => {
      const t0 = Date.UTC(2030, 0, 2, 12);
      const at = (ms: number) => new Date(t0 + ms);
      const src = ip();
      for (let i = 0; i < 3; i++) expect(await tx((trx) => c.takeQuota(trx, tenantId, 'signup', src, key(), 3, 60 * MIN, at(i * MIN)))).toEqual({ ok: true });
      expect(await tx((trx) => c.takeQuota(trx, tenantId, 'signup', src, key(), 3, 60 * MIN, at(10 * MIN)))).toEqual({ ok: false, first: at(0) });
      // Another kind, another source: their own quotas.
      expect(await tx((trx) => c.takeQuota(trx, tenantId, 'recovery', src, key(), 3, 60 * MIN, at(10 * MIN)))).toEqual({ ok: true });
      expect(await tx((trx) => c.takeQuota(trx, tenantId, 'signup', ip(), key(), 3, 60 * MIN, at(10 * MIN)))).toEqual({ ok: true });
      // The first one leaves the window: one more fits.
      expect(await tx((trx) => c.takeQuota(trx, tenantId, 'signup', src, key(), 3, 60 * MIN, at(60 * MIN + 1)))).toEqual({ ok: true });
      expect(await tx((trx) => c.takeQuota(trx, tenantId, 'signup', src, key(), 3, 60 * MIN, at(60 * MIN + 2)))).toEqual({ ok: false, first: at(1 * MIN) });
    });

    it('sums an actor’s weighted events over several sliding windows, per signal', async () => {
      const t0 = Date.UTC(2030, 0, 3, 12);
      const at = (ms: number) => new Date(t0 + ms);
      const actor = randomUUID();
      const other = randomUUID();
      await tx(async (trx) => {
        await c.addHit(trx, tenantId, actor, 'files_read', 1, at(0));
        await c.addHit(trx, tenantId, actor, 'files_read', 5, at(4 * MIN));
        await c.addHit(trx, tenantId, actor, 'files_read', 2, at(30 * MIN));
        await c.addHit(trx, tenantId, actor, 'deletion', 7, at(30 * MIN));
        await c.addHit(trx, tenantId, other, 'files_read', 100, at(30 * MIN));
      });
      expect(await tx((trx) => c.windowTotals(trx, tenantId, actor, 'files_read', [300, 3600, 86400], at(31 * MIN)))).toEqual([2, 8, 8]);
      expect(await tx((trx) => c.windowTotals(trx, tenantId, actor, 'files_read', [300, 3600, 86400], at(61 * MIN)))).toEqual([0, 7, 8]);
      expect(await tx((trx) => c.windowTotals(trx, tenantId, actor, 'deletion', [3600], at(31 * MIN)))).toEqual([7]);
      expect(await tx((trx) => c.windowTotals(trx, tenantId, actor, 'privilege', [3600], at(31 * MIN)))).toEqual([0]);
      expect(await tx((trx) => c.windowTotals(trx, tenantId, actor, 'files_read', [], at(31 * MIN)))).toEqual([]);
    });
  });
}
