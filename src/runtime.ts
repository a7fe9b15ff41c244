/**
 * What every Guichet process needs before it does anything: its logger (with
 * what must never reach a log cut out), the embedded database's single-owner
 * lock, the database itself and the dependencies services take. Kept apart
 * from server.ts so that a CLI command loads none of the web server.
 */
import { mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import pino, { type Logger } from 'pino';
import type { Config } from './config/config.ts';
import type { Deps } from './context.ts';
import { loadKeyProvider } from './crypto/keys.ts';
import { openDatabase, type Database } from './db/connection.ts';
import { TenantDirectory } from './tenants/service.ts';

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
    preparedStatements: config.databasePreparedStatements,
    log: (msg) => log.info(msg),
  });
}

export function makeDeps(config: Config, db: Database, log: Logger): Deps {
  return {
    db,
    config,
    clock: () => new Date(),
    log,
    tenants: new TenantDirectory(db.db, config.defaultTenant, undefined, config.production),
    keys: loadKeyProvider(process.env, config.dataDir),
  };
}

