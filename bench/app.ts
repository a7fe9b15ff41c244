/** The real application over a bench database, as `guichet serve` builds it. */
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import { loadConfig } from '../src/config/config.ts';
import type { Deps } from '../src/context.ts';
import { keyProviderFromSecret } from '../src/crypto/keys.ts';
import type { DB } from '../src/db/schema.ts';
import { startJobs, type RunningJobs } from '../src/jobs/jobs.ts';
import { ROUTES } from '../src/server.ts';
import { createTenant, TenantDirectory, type Tenant } from '../src/tenants/service.ts';
import { buildApp } from '../src/web/app.ts';
import type { BenchDatabase } from './lib.ts';

export async function benchApp(b: BenchDatabase, slug = 'bench') {
  const owner = new Kysely<DB>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: b.ownerUrl, max: 2 }) }) });
  const tenant: Tenant = await createTenant(owner, { slug, nameFr: 'Banc d’essai', nameEn: 'Bench', hosts: [`${slug}.localhost`] }, { actorAccountId: null, actorRoles: ['system:bench'], ip: null, userAgent: null, requestId: null }, new Date());
  await owner.destroy();
  const config = { ...loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent', GUICHET_DEFAULT_TENANT: slug }), demo: false };
  const deps: Deps = {
    db: b.database,
    config,
    clock: () => new Date(),
    log: pino({ level: 'silent' }),
    tenants: new TenantDirectory(b.database.db, slug),
    keys: keyProviderFromSecret(Buffer.alloc(32, 9)),
  };
  const app = await buildApp(deps, ROUTES);
  // Listening, it seals as `guichet serve` does: the sealer's load is part of the figures.
  let jobs: RunningJobs | null = null;
  app.addHook('onListen', async () => {
    jobs = startJobs(deps, ['sealer']);
  });
  app.addHook('onClose', async () => {
    await jobs?.stop();
  });
  await app.ready();
  return { app, deps, tenant, host: `${slug}.localhost` };
}

/**
 * A parent with a verified account and one child file, made through the real
 * pages over HTTP (sign-up, the link from the outbox, sign-in, the form).
 * Returns the session cookie and the child's page.
 */
export async function parentWithChild(base: string, host: string, ownerUrl: string, email = 'lecteur@exemple.test') {
  const PASSWORD = 'correct horse battery staple';
  const jar = new Map<string, string>();
  const call = async (method: string, path: string, form?: Record<string, string>) => {
    const res = await fetch(`${base}${path}`, {
      method,
      redirect: 'manual',
      headers: { host, cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; '), ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
      ...(form ? { body: new URLSearchParams(form).toString() } : {}),
    });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair!.indexOf('=');
      jar.set(pair!.slice(0, i), pair!.slice(i + 1));
    }
    return { status: res.status, location: res.headers.get('location'), body: await res.text() };
  };
  const csrf = (html: string) => /name="_csrf" value="([^"]+)"/.exec(html)![1]!;
  let page = await call('GET', '/signup');
  await call('POST', '/signup', { _csrf: csrf(page.body), email, password: PASSWORD, passwordConfirm: PASSWORD });
  const owner = new pg.Client({ connectionString: ownerUrl });
  await owner.connect();
  const mail = await owner.query<{ body_text: string }>('SELECT body_text FROM mail_outbox WHERE to_address = $1', [email]);
  await owner.end();
  const token = /\/verify-email\?token=([A-Za-z0-9_-]{43})/.exec(mail.rows[0]!.body_text)![1]!;
  page = await call('GET', `/verify-email?token=${token}`);
  await call('POST', '/verify-email', { _csrf: csrf(page.body), token });
  page = await call('GET', '/signin');
  await call('POST', '/signin', { _csrf: csrf(page.body), email, password: PASSWORD });
  page = await call('GET', '/children/new');
  const iso = (d: Date) => d.toISOString().slice(0, 10);
  const today = Date.now();
  const created = await call('POST', '/children/new', {
    _csrf: csrf(page.body),
    firstName: 'Zoé',
    lastName: 'Lavoie',
    birthDate: iso(new Date(today - 200 * 86400_000)),
    nirec: `5550${Math.floor(Math.random() * 1e6)}`,
    desiredEntryDate: iso(new Date(today + 60 * 86400_000)),
    day_mon: 'on',
  });
  if (!created.location) throw new Error(`child file not created (${created.status})`);
  const childPath = created.location.replace(/\?.*$/, '');
  const check = await call('GET', childPath);
  if (check.status !== 200 || !check.body.includes('Zoé')) throw new Error(`child page answered ${check.status}`);
  return { childPath, childId: childPath.split('/').pop()!, cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; ') };
}
