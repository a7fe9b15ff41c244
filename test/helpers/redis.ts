/**
 * Redis for the tests of the shared counters. GUICHET_TEST_REDIS_URL names
 * it (CI sets it, and then Redis must answer); unset, the local default is
 * tried and the Redis half of a test is skipped if nothing answers there.
 *
 * GUICHET_TEST_COUNTERS=redis makes every test app of a run count in Redis
 * (test/helpers/app.ts), so the throttle and detection suites run unchanged
 * against the Redis implementation.
 */
import { Socket } from 'node:net';
import pino from 'pino';
import { RedisCounters } from '../../src/counters/redis.ts';

export function testRedisUrl(): string {
  return process.env.GUICHET_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
}

async function answers(url: string): Promise<boolean> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = new Socket();
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.once('error', () => done(false));
    s.connect(Number(u.port || 6379), u.hostname, () => s.write('PING\r\n'));
    s.once('data', (b) => done(b.toString().startsWith('+PONG') || b.toString().startsWith('-NOAUTH')));
  });
}

/** Whether the Redis half of the tests runs; a Redis named by GUICHET_TEST_REDIS_URL that does not answer fails the run. */
export async function redisForTests(): Promise<boolean> {
  const ok = await answers(testRedisUrl());
  if (!ok && process.env.GUICHET_TEST_REDIS_URL) throw new Error(`GUICHET_TEST_REDIS_URL=${process.env.GUICHET_TEST_REDIS_URL} does not answer`);
  return ok;
}

export function connectTestCounters(): Promise<RedisCounters> {
  // A prefix of its own per run: nothing another run left behind is counted.
  return RedisCounters.connect(testRedisUrl(), pino({ level: 'silent' }), `guichet-test:${process.pid}:`);
}
