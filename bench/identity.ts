/**
 * Sign-in throughput through the whole stack (HTTP parsing, CSRF, throttling
 * rows, argon2id verification, session creation, audit event) against raw
 * argon2id verifications with the same parameters, on the same cores, in the
 * same run. Sign-in is argon2-bound by design: the aim is a ratio ≥ 0.9.
 */
import { verify } from '@node-rs/argon2';
import { inTenant } from '../src/db/tenant.ts';
import { hashPassword } from '../src/identity/passwords.ts';
import { createDemoAccount } from '../src/identity/service.ts';
import { benchApp } from './app.ts';
import { benchDatabase, log, pool, report } from './lib.ts';

const N = Number(process.env.BENCH_SIGNINS ?? 240);
const CONCURRENCY = 8;
const PASSWORD = 'correct horse battery staple';

const b = await benchDatabase();
try {
  const { app, tenant, host } = await benchApp(b);
  const now = new Date();
  const emails = Array.from({ length: 16 }, (_, i) => `bench${i}@exemple.test`);
  await inTenant(b.database.db, tenant.id, async (trx) => {
    for (const e of emails) await createDemoAccount(trx, tenant.id, e, PASSWORD, now);
  });
  const stored = await hashPassword(PASSWORD);

  // One browser per account: a CSRF cookie and token, reused for every sign-in of that browser.
  const browsers = await Promise.all(
    emails.map(async (email, i) => {
      const r = await app.inject({ method: 'GET', url: '/signin', headers: { host }, remoteAddress: `10.1.0.${i + 1}` });
      const cookie = ([] as string[]).concat(r.headers['set-cookie'] as string[]).map((c) => c.split(';')[0]).join('; ');
      const token = /name="_csrf" value="([^"]+)"/.exec(r.body)![1]!;
      return { email, cookie, token, ip: `10.1.0.${i + 1}` };
    }),
  );

  const argon = async (n: number) => {
    const t0 = performance.now();
    await pool(n, CONCURRENCY, async () => {
      if (!(await verify(stored, PASSWORD))) throw new Error('verify failed');
    });
    return (n / (performance.now() - t0)) * 1000;
  };
  const signIns = async (n: number) => {
    const t0 = performance.now();
    const lat = await pool(n, CONCURRENCY, async (i) => {
      const br = browsers[i % browsers.length]!;
      const r = await app.inject({
        method: 'POST',
        url: '/signin',
        headers: { host, cookie: br.cookie, 'content-type': 'application/x-www-form-urlencoded' },
        remoteAddress: br.ip,
        payload: new URLSearchParams({ _csrf: br.token, email: br.email, password: PASSWORD }).toString(),
      });
      if (r.statusCode !== 303) throw new Error(`sign-in answered ${r.statusCode}`);
    });
    return { rate: (n / (performance.now() - t0)) * 1000, lat };
  };

  log('warming up');
  await argon(16);
  await signIns(16);
  log(`measuring ${N} raw argon2id verifications, ${N} sign-ins, ${N} verifications (concurrency ${CONCURRENCY})`);
  const before = await argon(N);
  const s = await signIns(N);
  const after = await argon(N);
  report({ name: 'identity.signin.throughput', value: s.rate, unit: 'sign-ins/s', baseline: (before + after) / 2, baselineLabel: 'raw argon2id verify/s, same cores' });
  await app.close();
} finally {
  await b.drop();
}
