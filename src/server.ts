import { assistedRoutes } from './assisted/routes.tsx';
import { statisticsRoutes } from './statistics/routes.tsx';
import { allocationAdminRoutes } from './waitlist/allocation-admin-routes.tsx';
import type { Logger } from 'pino';
import type { Database } from './db/connection.ts';
import { auditRoutes } from './audit/routes.tsx';
import type { Config } from './config/config.ts';
import type { Deps } from './context.ts';
import { useCounters } from './counters/counters.ts';
import { RedisCounters } from './counters/redis.ts';
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

/**
 * Connections waiting to be accepted (Node's default is 511). A thousand
 * browsers connecting within a second to a busy event loop overflowed 511,
 * and the kernel dropped their SYNs — each such page a second late, the
 * time before a SYN is sent again (bench/load.ts). The kernel caps it at
 * net.core.somaxconn (4,096 on current Linux).
 */
export const LISTEN_BACKLOG = 4096;

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

// The process's plumbing (logger, data-directory lock, database, deps) lives in runtime.ts, which the CLI loads
// without the web server's modules; it is re-exported here for the server's callers.
export { createLogger, DataDirInUseError, errorForLog, lockDataDir, makeDeps, openFromConfig, redactUrl } from './runtime.ts';
import { createLogger, lockDataDir, makeDeps, openFromConfig } from './runtime.ts';

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
    await app.listen({ port: config.port, host: config.host, backlog: LISTEN_BACKLOG });
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
