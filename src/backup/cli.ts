/**
 * `guichet backup` and `guichet restore`. The operator-facing side of
 * backup.ts: which database, which role, which key, and what to say.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import type { Config } from '../config/config.ts';
import { loadKeyProvider, type KeyProvider } from '../crypto/keys.ts';
import {
  BackupError,
  BackupFormatError,
  backupHeader,
  backupKeyringFile,
  backupPglite,
  backupPostgres,
  describe,
  restoreKeyringFile,
  restorePglite,
  restorePostgres,
  type BackupResult,
  type PgTools,
} from './backup.ts';

export interface BackupCliContext {
  config: Config;
  env: NodeJS.ProcessEnv;
  /** Takes the embedded data directory for the command's length (the server must not hold it). */
  lockDataDir(dataDir: string): () => void;
  usage(message: string): Error;
  out(text: string): void;
  err(text: string): void;
}

export const BACKUP_USAGE = `usage: guichet backup --out FILE [--keyring]
       guichet backup --check FILE
       guichet restore FILE [--force]`;

const KEYRING_NOTE =
  'The keyring is not in this file, on purpose: a data backup never carries the keys that open it (src/crypto/README.md).\n' +
  'Back the keyring up on its own, more often and kept no longer than 7 days: guichet backup --keyring --out FILE.\n';

function tools(env: NodeJS.ProcessEnv): PgTools {
  return { bin: env.GUICHET_PG_BIN || undefined };
}

function keyringDir(config: Config): string {
  return join(resolve(config.dataDir), 'keys', 'keyring');
}

function pgliteDir(config: Config): string {
  return join(config.dataDir, 'pglite');
}

/** A restore never makes a new master key: only the one the backup was made with can open it. */
function existingKeys(ctx: BackupCliContext): KeyProvider {
  const env = ctx.env;
  if (!env.GUICHET_MASTER_KEY) {
    const file = resolve(env.GUICHET_KEY_FILE ?? join(ctx.config.dataDir, 'keys', 'master.key'));
    if (!existsSync(file)) {
      throw new BackupError(`no master key at ${file}: a restore needs the master key the backup was made with (copy it there from its own safe place, or set GUICHET_MASTER_KEY or GUICHET_KEY_FILE)`);
    }
  }
  return loadKeyProvider(env, ctx.config.dataDir);
}

function summary(r: BackupResult): string {
  const h = r.header;
  const parts = [`${describe(h.contents)} written to ${r.file}`, `${r.bytes.toLocaleString('en-CA')} bytes`, `encrypted with backup key ${h.keyId}`];
  if (h.schemaVersion !== undefined) parts.push(`schema version ${h.schemaVersion}`);
  if (h.made.pgDump) parts.push(`pg_dump ${h.made.pgDump}, server ${h.made.server}`);
  if (r.rows) parts.push(`${Object.values(r.rows).reduce((a, b) => a + b, 0).toLocaleString('en-CA')} rows in ${Object.keys(r.rows).length} tables`);
  return `${parts.join(', ')}\n`;
}

async function failing<T>(ctx: BackupCliContext, fn: () => Promise<T>): Promise<T | number> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof BackupFormatError) {
      ctx.err(`guichet: refused: ${err.message}\n`);
      return 1;
    }
    if (err instanceof BackupError) {
      ctx.err(`guichet: ${err.message}\n`);
      return 2;
    }
    if ((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) throw ctx.usage(`${(err as Error).message}\n${BACKUP_USAGE}`);
    throw err;
  }
}

export async function backupCommand(args: string[], ctx: BackupCliContext): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: { out: { type: 'string' }, keyring: { type: 'boolean' }, check: { type: 'string' } }, allowPositionals: true });
  if (positionals.length) throw ctx.usage(BACKUP_USAGE);
  const { config, env } = ctx;
  if (values.check) {
    const file = values.check;
    const r = await failing(ctx, async () => {
      const keys = existingKeys(ctx);
      try {
        const h = await backupHeader(file, keys);
        ctx.out(`${file}: ok, a ${describe(h.contents)} of ${h.createdAt}, every chunk authenticated under backup key ${h.keyId}${h.schemaVersion !== undefined ? `, schema version ${h.schemaVersion}` : ''}\n`);
        return 0;
      } finally {
        await keys.close();
      }
    });
    return r;
  }
  if (!values.out) throw ctx.usage(`--out FILE is required\n${BACKUP_USAGE}`);
  const out = values.out;
  return failing(ctx, async () => {
    if (existsSync(resolve(out))) throw new BackupError(`${resolve(out)} exists: choose another name (a backup never overwrites a file)`);
    const keys = loadKeyProvider(env, config.dataDir);
    try {
      if (values.keyring) {
        const r = env.GUICHET_KEYRING_URL
          ? await backupPostgres({ url: env.GUICHET_KEYRING_URL, keys, out, tools: tools(env), contents: 'keyring-postgres' })
          : await backupKeyringFile({ dir: keyringDir(config), keys, out });
        ctx.out(summary(r));
        ctx.out('Keep it apart from the data backups and from the master key; with the master key it opens every family\'s data key.\n');
        return 0;
      }
      if (config.databaseUrl) {
        // The backup reads every tenant's rows, which FORCEd row-level security hides even from the owner.
        const url = env.GUICHET_BACKUP_URL ?? config.databaseOwnerUrl ?? config.databaseUrl;
        const r = await backupPostgres({ url, keys, out, tools: tools(env) });
        ctx.out(summary(r));
      } else {
        const unlock = ctx.lockDataDir(config.dataDir);
        try {
          const r = await backupPglite({ dir: pgliteDir(config), keys, out });
          ctx.out(summary(r));
        } finally {
          unlock();
        }
      }
      ctx.out(KEYRING_NOTE);
      return 0;
    } finally {
      await keys.close();
    }
  });
}

export async function restoreCommand(args: string[], ctx: BackupCliContext): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: { force: { type: 'boolean' } }, allowPositionals: true });
  if (positionals.length !== 1) throw ctx.usage(BACKUP_USAGE);
  const file = positionals[0]!;
  const { config, env } = ctx;
  const force = !!values.force;
  return failing(ctx, async () => {
    const keys = existingKeys(ctx);
    try {
      // The header says what the file holds; it is authenticated with the rest before anything is written.
      const h = await backupHeader(file, keys);
      switch (h.contents) {
        case 'keyring-file': {
          if (env.GUICHET_KEYRING_URL) throw new BackupError(`${file} holds a file keyring, but GUICHET_KEYRING_URL names a PostgreSQL keyring: unset it to restore into ${keyringDir(config)}`);
          const r = await restoreKeyringFile({ dir: keyringDir(config), keys, file, force });
          ctx.out(`file keyring of ${h.createdAt} restored into ${keyringDir(config)} (${r.bytes.toLocaleString('en-CA')} bytes)${r.movedAside ? `; the previous one is at ${r.movedAside}` : ''}\n`);
          return 0;
        }
        case 'keyring-postgres': {
          if (!env.GUICHET_KEYRING_URL) throw new BackupError(`${file} holds a PostgreSQL keyring: set GUICHET_KEYRING_URL to the (empty) keyring database to restore it into`);
          await restorePostgres({ url: env.GUICHET_KEYRING_URL, keys, file, tools: tools(env), force });
          ctx.out(`PostgreSQL keyring of ${h.createdAt} restored\n`);
          return 0;
        }
        case 'postgres': {
          const owner = config.databaseOwnerUrl ?? config.databaseUrl;
          if (!owner) throw new BackupError(`${file} holds a PostgreSQL database: set DATABASE_OWNER_URL (the owner of the restored tables) and DATABASE_URL`);
          const r = await restorePostgres({ url: owner, keys, file, tools: tools(env), force });
          ctx.out(`PostgreSQL data backup of ${h.createdAt} (schema version ${h.schemaVersion}) restored into ${new URL(owner).pathname.slice(1)}: ${r.tables} tables; row-level security enabled and forced on all ${r.rlsForced} tenant-owned tables; guichet_app granted on ${r.appGranted}\n`);
          if (config.databaseUrl && config.databaseUrl !== owner) ctx.out(`${await appRoleCheck(config.databaseUrl)}\n`);
          ctx.out(AFTER_RESTORE);
          return 0;
        }
        case 'pglite': {
          if (config.databaseUrl) throw new BackupError(`${file} holds an embedded (PGlite) database: unset DATABASE_URL and set GUICHET_DATA_DIR to restore it`);
          const unlock = ctx.lockDataDir(config.dataDir);
          try {
            const r = await restorePglite({ dir: pgliteDir(config), keys, file, force });
            const rows = Object.values(r.rows ?? {}).reduce((a, b) => a + b, 0);
            ctx.out(
              `embedded data backup of ${h.createdAt} (schema version ${h.schemaVersion}) restored into ${resolve(pgliteDir(config))}: ${r.tables} tables, ${rows.toLocaleString('en-CA')} rows, as the backup counted them; ` +
                `row-level security enabled and forced on all ${r.rlsForced} tenant-owned tables; guichet_app granted on ${r.appGranted}` +
                `${r.movedAside ? `; the previous data directory is at ${r.movedAside}` : ''}\n`,
            );
          } finally {
            unlock();
          }
          ctx.out(AFTER_RESTORE);
          return 0;
        }
      }
    } finally {
      await keys.close();
    }
  });
}

const AFTER_RESTORE =
  'Next: restore the keyring if this machine lacks it (a keyring at least as recent as this backup), then run guichet audit verify:\n' +
  'it checks the restored log against its signed heads and the witness, which also shows what a restore of an older backup lost.\n';

/** The application's login role, as it will serve: it connects, reads what it may, and row-level security answers for it. */
async function appRoleCheck(url: string): Promise<string> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const who = (await c.query<{ who: string; tenants: number }>(`SELECT current_user AS who, (SELECT count(*)::int FROM tenants) AS tenants`)).rows[0]!;
    // Every tenant-owned table this role may read must show it nothing while no tenant is set.
    const { rows: tables } = await c.query<{ name: string }>(
      `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND has_table_privilege(current_user, c.oid, 'SELECT')
         AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)`,
    );
    const seen: string[] = [];
    for (const t of tables) {
      const n = (await c.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${t.name.replace(/"/g, '""')}"`)).rows[0]!.n;
      if (n) seen.push(`${t.name} (${n})`);
    }
    if (seen.length) throw new BackupError(`the application role ${who.who} sees rows of ${seen.join(', ')} without naming a tenant: row-level security does not hold; do not serve this database`);
    return `the application role ${who.who} connects and reads ${who.tenants} tenants; without a tenant it sees no row of the ${tables.length} tenant-owned tables it may read (row-level security holds)`;
  } catch (err) {
    if (err instanceof BackupError) throw err;
    throw new BackupError(`the application role (DATABASE_URL) cannot use the restored database: ${(err as Error).message}`);
  } finally {
    await c.end();
  }
}
