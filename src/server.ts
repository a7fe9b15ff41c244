import { mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { assistedRoutes } from './assisted/routes.tsx';
import { statisticsRoutes } from './statistics/routes.tsx';
import { allocationAdminRoutes } from './waitlist/allocation-admin-routes.tsx';
import { join, resolve } from 'node:path';
import pino, { type Logger } from 'pino';
import { auditRoutes } from './audit/routes.tsx';
import type { Config } from './config/config.ts';
import type { Deps } from './context.ts';
import { loadKeyProvider } from './crypto/keys.ts';
import { useCounters } from './counters/counters.ts';
import { RedisCounters } from './counters/redis.ts';
import { openDatabase, type Database } from './db/connection.ts';
import { detectionRoutes } from './detection/routes.tsx';
import { directoryRoutes } from './directory/routes.tsx';
import { factorRoutes } from './identity/factors/routes.tsx';
import { identityRoutes } from './identity/routes.tsx';
import { sessionRoutes } from './identity/sessions-routes.tsx';
import { breakGlassRoutes } from './identity/break-glass-routes.tsx';
import { factorResetRoutes } from './identity/factor-resets-routes.tsx';
import { grantRoutes } from './identity/grants-routes.tsx';
import { startJobs, type RunningJobs } from './jobs/jobs.ts';
import { demoMailRoutes } from './mail/routes.tsx';
import { privacyRoutes } from './privacy/routes.tsx';
import { securityPrivacyRoutes } from './privacy/security-routes.tsx';
import { TenantDirectory } from './tenants/service.ts';
import { fileConsoleRoutes } from './waitlist/console-routes.tsx';
import { waitlistRoutes } from './waitlist/routes.tsx';
import { allocationRoutes } from './waitlist/allocation-routes.tsx';
import { offerRoutes } from './waitlist/offer-routes.tsx';
import { facilityApiRoutes } from './api/routes.tsx';
import { buildApp, type RouteModule } from './web/app.ts';
import { homeRoutes } from './web/pages.tsx';
import { securityTxtRoutes } from './web/security-txt.ts';
import { oidcRoutes } from './oidc/routes.tsx';
import { oidcAdminRoutes } from './oidc/admin-routes.tsx';

// One module a line: modules are added in parallel, and a line each merges cleanly.
export const ROUTES: RouteModule[] = [
  homeRoutes,
  directoryRoutes,
  identityRoutes,
  sessionRoutes,
  grantRoutes,
  factorResetRoutes,
  breakGlassRoutes,
  waitlistRoutes,
  allocationRoutes,
  allocationAdminRoutes,
  demoMailRoutes,
  factorRoutes,
  auditRoutes,
  fileConsoleRoutes,
  oidcRoutes,
  oidcAdminRoutes,
  privacyRoutes,
  securityPrivacyRoutes,
  detectionRoutes,
  securityTxtRoutes,
  statisticsRoutes,
  assistedRoutes,
  offerRoutes,
  facilityApiRoutes,
];

/** Tokens travel in links (verification, invitations): never let one reach the logs. */
export function redactUrl(url: string): string {
  return url.replace(/([?&](?:token|code|_csrf)=)[^&#]*/gi, '$1[redacted]');
}

/**
 * An error as logged: PostgreSQL's errors carry the values of the row they are
 * about in `detail` ("Key (tenant_id, email)=(…, parent@…) already exists"),
 * and `where`, `hint` and `internalQuery` may quote them too; PGlite's carry
 * the statement's parameters (`params`). Only their code, constraint, names
 * and the parameterised statement stay.
 */
export function errorForLog(err: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = pino.stdSerializers.err(err as Error);
  for (const k of ['detail', 'where', 'hint', 'internalQuery', 'parameters', 'params']) delete out[k];
  return out;
}

export function createLogger(config: Config, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level: config.logLevel,
    serializers: {
      req: (req: { method?: string; url?: string; id?: string }) => ({ method: req.method, url: redactUrl(req.url ?? '') }),
      res: (res: { statusCode?: number }) => ({ statusCode: res.statusCode }),
      err: errorForLog,
    },
    // Personal data never reaches the logs: no bodies are logged, and these are cut out wherever they appear.
    redact: {
      paths: ['req.headers.cookie', 'req.headers.authorization', 'res.headers["set-cookie"]', '*.password', '*.email', '*.nirec', 'body'],
      censor: '[redacted]',
    },
  };
  return destination ? pino(options, destination) : pino(options);
}

export class DataDirInUseError extends Error {}

/**
 * One process may hold a PGlite data directory; the CLI refuses to open it
 * while the server runs. The pid file is created exclusively ('wx'), so two
 * processes starting together cannot both pass; a stale file (its process is
 * gone) is replaced.
 */
export function lockDataDir(dataDir: string): () => void {
  const file = join(resolve(dataDir), 'guichet.pid');
  mkdirSync(resolve(dataDir), { recursive: true });
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(file, String(process.pid), { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 2) throw err;
      const pid = Number(readFileSync(file, 'utf8'));
      if (pid && pid !== process.pid && isAlive(pid)) {
        throw new DataDirInUseError(`GUICHET_DATA_DIR ${resolve(dataDir)} is in use by process ${pid}: stop it first (the embedded database has one owner at a time)`);
      }
      unlinkSync(file);
    }
  }
  return () => {
    try {
      unlinkSync(file);
    } catch {
      /* already gone */
    }
  };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function openFromConfig(config: Config, log: Logger, migrate = true): Promise<Database> {
  return openDatabase({
    databaseUrl: config.databaseUrl,
    databaseOwnerUrl: config.databaseOwnerUrl,
    dataDir: join(config.dataDir, 'pglite'),
    migrate,
    allowPrivilegedRole: config.allowPrivilegedDbRole,
    log: (msg) => log.info(msg),
  });
}

export function makeDeps(config: Config, db: Database, log: Logger): Deps {
  return {
    db,
    config,
    clock: () => new Date(),
    log,
    tenants: new TenantDirectory(db.db, config.defaultTenant),
    keys: loadKeyProvider(process.env, config.dataDir),
  };
}

/** REDIS_URL: the shared counters move to Redis for this process; returns what closes them. */
async function useRedisCounters(config: Config, log: Logger): Promise<() => Promise<void>> {
  if (!config.redisUrl) return async () => {};
  const redis = await RedisCounters.connect(config.redisUrl, log);
  const previous = useCounters(redis);
  log.info('shared counters (sign-in throttle, detection windows) in Redis');
  return async () => {
    useCounters(previous);
    await redis.close();
  };
}

export async function serve(configured: Config, opts: { demo: boolean; jobs?: boolean }): Promise<void> {
  // Demo mode (the outbox page, the demo banner) needs both the embedded database outside production and
  // --demo: an instance started without it serves no page that shows the outbox's sign-in links.
  const config: Config = { ...configured, demo: opts.demo && configured.demo };
  const started = Date.now();
  const log = createLogger(config);
  const unlock = config.databaseUrl ? () => {} : lockDataDir(config.dataDir);
  const runJobs = (opts.jobs ?? true) && config.jobsInServe;
  let demoInfo: string | null = null;
  let db: Database | null = null;
  let app: Awaited<ReturnType<typeof buildApp>> | null = null;
  let jobs: RunningJobs | null = null;
  let closeCounters = async () => {};
  try {
    db = await openFromConfig(config, log);
    closeCounters = await useRedisCounters(config, log);
    const deps = makeDeps(config, db, log);
    if (config.demo) {
      const { ensureDemo } = await import('./demo/setup.ts');
      demoInfo = await ensureDemo(deps);
    }
    app = await buildApp(deps, ROUTES);
    if (runJobs) jobs = startJobs(deps);
    else if (!config.databaseUrl) log.warn('background jobs are off, and on the embedded database no worker can run beside this server: nothing seals the audit log or sends mail');
    await app.listen({ port: config.port, host: config.host });
  } catch (err) {
    // Leave nothing behind: no open database, no pid file naming a dead process.
    await app?.close().catch(() => {});
    await jobs?.stop().catch(() => {});
    await closeCounters().catch(() => {});
    await db?.close().catch(() => {});
    unlock();
    throw err;
  }
  const address = `http://${config.host === '0.0.0.0' || config.host === '127.0.0.1' ? 'localhost' : config.host}:${config.port}`;
  log.info({ jobs: jobs?.names ?? [] }, jobs ? 'background jobs run in this process' : 'background jobs off: guichet worker runs them');
  const lines = [`Guichet is listening on ${address} (${db.kind}, ready in ${((Date.now() - started) / 1000).toFixed(1)} s)`];
  if (demoInfo) lines.push(demoInfo);
  process.stdout.write(`\n${lines.join('\n')}\n\n`);
  const stop = shutdown(log, unlock, [
    ['the web server', async () => app?.close()],
    ['the background jobs', async () => jobs?.stop()],
    ['the shared counters', closeCounters],
    ['the database', async () => db?.close()],
  ]);
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

/**
 * What SIGTERM and SIGINT run: each step in turn, a step that fails logged and
 * the next ones still run, the data directory unlocked, then the exit — 0, or
 * 1 if a step failed. (An exception left to escape here would end the process
 * on an unhandled rejection, half-stopped.) A second signal during it ends the
 * process at once, by that signal.
 */
function shutdown(log: Logger, unlock: () => void, steps: [string, () => Promise<unknown>][]): () => void {
  return () => {
    void (async () => {
      let failed = false;
      for (const [what, step] of steps) {
        try {
          await step();
        } catch (err) {
          failed = true;
          log.error({ err }, `stopping ${what} failed`);
        }
      }
      try {
        unlock();
      } catch (err) {
        failed = true;
        log.error({ err }, 'releasing the data directory failed');
      }
      process.exit(failed ? 1 : 0);
    })();
  };
}

/**
 * `guichet worker`: the background jobs without the web server, for a
 * deployment whose servers run with GUICHET_JOBS=off. Several may run.
 */
export async function worker(config: Config): Promise<void> {
  const log = createLogger(config);
  const unlock = config.databaseUrl ? () => {} : lockDataDir(config.dataDir);
  let db: Database | null = null;
  let jobs: RunningJobs | null = null;
  let closeCounters = async () => {};
  try {
    db = await openFromConfig(config, log);
    closeCounters = await useRedisCounters(config, log);
    jobs = startJobs(makeDeps(config, db, log));
  } catch (err) {
    await jobs?.stop().catch(() => {});
    await closeCounters().catch(() => {});
    await db?.close().catch(() => {});
    unlock();
    throw err;
  }
  process.stdout.write(`\nGuichet worker running (${db.kind}): ${jobs.names.join(', ')}\n\n`);
  const stop = shutdown(log, unlock, [
    ['the background jobs', async () => jobs?.stop()],
    ['the shared counters', closeCounters],
    ['the database', async () => db?.close()],
  ]);
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
