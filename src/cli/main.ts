import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import type { AuditOrigin } from '../audit/events.ts';
import { ConfigError, loadConfig, type Config } from '../config/config.ts';
import { UnsafeDatabaseRoleError } from '../db/connection.ts';
import type { DB } from '../db/schema.ts';
import { KeyError } from '../crypto/keys.ts';
import { seedDemo } from '../demo/seed.ts';
import { decodeDirectoryBytes, DirectoryFormatError, importFacilities } from '../directory/import.ts';
import { bootstrapAdmins } from '../identity/service.ts';
import { createLogger, DataDirInUseError, lockDataDir, openFromConfig } from '../runtime.ts';
import { createTenant, tenantBaseUrl, TenantDirectory, type Tenant } from '../tenants/service.ts';

const HELP = `guichet — the childcare single window

Usage: guichet <command> [options]

Commands:
  serve [--demo] [--no-jobs]           Start the web server (npm start runs it with --demo); it runs the
                                       background jobs too unless --no-jobs or GUICHET_JOBS=off.
  worker                               Run the background jobs (audit sealer, detection, mail, retention,
                                       purges) without a web server, beside servers started with --no-jobs.
  migrate                              Apply pending database migrations.
  tenant create --slug S --name-fr N --name-en N [--host H]...
                                       Create a tenant (a programme that runs on Guichet).
  import facilities FILE --tenant T    Import the ministry's facility directory (CSV).
  seed --families N --seed S --tenant T
                                       Generate N synthetic families, deterministically from S.
  seed --children N [--facilities F] [--choices K] --seed S --tenant T
                                       Scale seed: F synthetic facilities (directory distributions, 10 % of
                                       places open) and exactly N children with K choices each (up to
                                       1,000,000, 30,000 and 10 by default); a progress bar on a terminal.
  allocate --tenant T [--dry-run] [--today YYYY-MM-DD] [--deadline-days N]
                                       Coordinated allocation round (deferred acceptance) when the tenant's
                                       rules allow it; signed run, one offer per placed child.
  allocate --replay RUN [--tenant T]   Rebuild a run's inputs, run it again and check the signature and the
                                       output hash; exit 1 if anything differs.
  admin bootstrap --tenant T --email E [--email E2]
                                       Create the tenant's first administrators, one or two (once).
  audit verify [--tenant T] [--no-seal]
                                       Seal waiting events, then recompute the audit Merkle trees, signed
                                       heads and the witness's copy; exit 1 naming the first bad leaf.
  audit export --tenant T --from ISO --to ISO --out FILE
                                       Write a bundle for an outside auditor (events, signed heads, proofs).
  audit check BUNDLE [--key KEY]       Verify a bundle without the database; exit 1 if it does not check.
  audit key [--tenant T]               Print the tenant's audit log public key, for auditors to pin.
  keys status [--tenant T]             Key versions, family keys and rotations in progress.
  keys rotate --tenant T | --master    Re-wrap under a new tenant key or master key, online; resumes if interrupted.
  keys purge [--tenant T]              Destroy the keys of files deleted longer ago than the retention window.
  oidc keys --tenant T                 The tenant's OpenID Connect signing keys and their state.
  oidc rotate-keys --tenant T          New OpenID Connect signing keys; the previous ones stay published until the next rotation.
  breach-report --tenant T (--actor ACCOUNT | --session ID | --ip ADDR) --from ISO --to ISO
                [--format json|csv] [--out FILE] [--notices DIR]
                                       The exact persons, files and fields an actor, session or address read,
                                       exported, changed or deleted in a window, from the verified audit log;
                                       --notices writes each family's notice and the Commission's summary.
  retention run [--tenant T]           Delete the files the tenant's retention rules say are done, and purge
                                       deleted files past their window (the server does it daily).
  backup --out FILE [--keyring]        Back up the data database, encrypted with a key from the key provider:
                                       PostgreSQL through pg_dump (as GUICHET_BACKUP_URL, a role that reads every
                                       row), the embedded database through its data directory (stop the server).
                                       The keyring is never in it: --keyring backs it up alone, into another file,
                                       to keep apart and for no longer than 7 days.
  backup --check FILE                  Authenticate every byte of a backup without restoring it.
  restore FILE [--force]               Restore a backup into a fresh, empty database (or, from a --keyring file, the
                                       keyring); refuses an altered or truncated file, and a non-empty target
                                       unless --force. Then run guichet audit verify.
  help                                 Show this help.

Environment: PORT, HOST, GUICHET_DATA_DIR, DATABASE_URL, DATABASE_OWNER_URL, DATABASE_PREPARED_STATEMENTS, SMTP_URL,
PUBLIC_URL, NODE_ENV, LOG_LEVEL, GUICHET_DEFAULT_TENANT, GUICHET_MASTER_KEY, GUICHET_KEY_FILE,
GUICHET_KEYRING_URL, GUICHET_BACKUP_URL, GUICHET_PG_BIN, REDIS_URL, GUICHET_JOBS, GUICHET_METRICS_TOKEN.
See README.md.`;

class UsageError extends Error {}

function origin(command: string): AuditOrigin {
  return { actorAccountId: null, actorRoles: [`system:cli`], ip: null, userAgent: `guichet ${command} (uid ${process.getuid?.() ?? '?'})`, requestId: null };
}

/** The owner connection: tenant creation is not something the application role may do. */
function ownerKysely(config: Config, fallback: Kysely<DB>): { db: Kysely<DB>; close: () => Promise<void> } {
  if (!config.databaseOwnerUrl || config.databaseOwnerUrl === config.databaseUrl) return { db: fallback, close: async () => {} };
  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: config.databaseOwnerUrl, max: 2 }) }) });
  return { db, close: () => db.destroy() };
}

async function withDatabase<T>(config: Config, fn: (db: Kysely<DB>, config: Config) => Promise<T>): Promise<T> {
  const log = createLogger({ ...config, logLevel: 'warn' });
  const unlock = config.databaseUrl ? () => {} : lockDataDir(config.dataDir);
  const database = await openFromConfig({ ...config, allowPrivilegedDbRole: true }, log);
  try {
    return await fn(database.db, config);
  } finally {
    await database.close();
    unlock();
  }
}

async function tenantOrFail(db: Kysely<DB>, config: Config, slug: string | undefined): Promise<Tenant> {
  const directory = new TenantDirectory(db, config.defaultTenant);
  if (slug === undefined) {
    // One programme: no doubt which. Several: a command that acts on one names it, rather than fall on the default.
    const all = await directory.all();
    if (all.length > 1) throw new UsageError(`--tenant: this database holds ${all.length} programmes (${all.map((x) => x.slug).sort().join(', ')}): name the one to act on`);
  }
  const s = slug ?? config.defaultTenant;
  const t = await directory.bySlug(s);
  if (!t) throw new UsageError(`--tenant: no tenant "${s}" (create it with: guichet tenant create --slug ${s} ...)`);
  return t;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const config = loadConfig();
  switch (command) {
    case 'serve': {
      const { values } = parseArgs({ args: rest, options: { demo: { type: 'boolean' }, 'no-jobs': { type: 'boolean' } } });
      // The web server's modules are loaded by the commands that run it only (a CLI command starts in half the time).
      const { serve } = await import('../server.ts');
      await serve(config, { demo: !!values.demo, jobs: !values['no-jobs'] });
      return -1; // keeps running
    }
    case 'worker': {
      parseArgs({ args: rest, options: {} });
      const { worker } = await import('../server.ts');
      await worker(config);
      return -1; // keeps running
    }
    case 'migrate':
      // Migrations are the owner's work: DATABASE_OWNER_URL alone is enough.
      await withDatabase({ ...config, databaseUrl: config.databaseOwnerUrl ?? config.databaseUrl }, async () => {});
      process.stdout.write('migrations applied\n');
      return 0;
    case 'tenant': {
      const [sub, ...args] = rest;
      if (sub !== 'create') throw new UsageError('usage: guichet tenant create --slug S --name-fr N --name-en N [--host H]');
      const { values } = parseArgs({ args, options: { slug: { type: 'string' }, 'name-fr': { type: 'string' }, 'name-en': { type: 'string' }, host: { type: 'string', multiple: true } } });
      if (!values.slug || !/^[a-z0-9-]{2,40}$/.test(values.slug)) throw new UsageError('--slug: 2 to 40 characters among a-z, 0-9 and -');
      if (!values['name-fr'] || !values['name-en']) throw new UsageError('--name-fr and --name-en are required');
      const hosts = (values.host ?? []).map((h) => h.trim().toLowerCase());
      if (hosts.some((h) => !/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/.test(h))) throw new UsageError('--host: a host name such as guichet.example.org, without scheme, port or path');
      return withDatabase(config, async (db) => {
        const owner = ownerKysely(config, db);
        try {
          const t = await createTenant(owner.db, { slug: values.slug!, nameFr: values['name-fr']!, nameEn: values['name-en']!, hosts }, origin('tenant create'), new Date());
          process.stdout.write(`tenant ${t.slug} created (${t.id})\n`);
        } catch (err) {
          // A host another tenant already has: each request must find one tenant only.
          const m = /the host (\S+) already serves another tenant|a host name is listed twice/.exec((err as Error).message);
          if (m) throw new UsageError(`--host: ${m[1] ? `${m[1]} already serves another tenant` : 'a host name is listed twice'}`);
          throw err;
        } finally {
          await owner.close();
        }
        return 0;
      });
    }
    case 'import': {
      const [what, file, ...args] = rest;
      if (what !== 'facilities' || !file) throw new UsageError('usage: guichet import facilities FILE --tenant T');
      const { values } = parseArgs({ args, options: { tenant: { type: 'string' } } });
      const text = decodeDirectoryBytes(readFileSync(file));
      return withDatabase(config, async (db) => {
        const t = await tenantOrFail(db, config, values.tenant);
        const r = await importFacilities(db, t.id, text, { now: new Date(), origin: origin('import facilities') });
        process.stdout.write(`${r.inserted} inserted, ${r.updated} updated, ${r.skipped.length} skipped\n`);
        for (const s of r.skipped) process.stdout.write(`  line ${s.line}: ${s.reason}\n`);
        return 0;
      });
    }
    case 'seed': {
      const { values } = parseArgs({ args: rest, options: { families: { type: 'string' }, seed: { type: 'string' }, tenant: { type: 'string' }, children: { type: 'string' }, facilities: { type: 'string' }, choices: { type: 'string' }, 'synthetic-data-in-production': { type: 'boolean' } } });
      // Synthetic families in a real programme's list would compete for real places: never by a slip of the command.
      if (config.production && !values['synthetic-data-in-production']) throw new UsageError('seed writes synthetic families: refused in production (NODE_ENV=production) unless --synthetic-data-in-production says it is meant');
      if (values.children !== undefined) {
        const children = Number(values.children);
        const facilities = Number(values.facilities ?? 0);
        const choices = Number(values.choices ?? 10);
        if (!Number.isInteger(children) || children < 1 || children > 1_000_000) throw new UsageError('--children: a whole number from 1 to 1,000,000');
        if (!Number.isInteger(facilities) || facilities < 0 || facilities > 30_000) throw new UsageError('--facilities: a whole number from 0 to 30,000');
        if (!Number.isInteger(choices) || choices < 1 || choices > 20) throw new UsageError('--choices: a whole number from 1 to 20');
        const seed = values.seed ?? '1';
        return withDatabase(config, async (db) => {
          const t = await tenantOrFail(db, config, values.tenant);
          const { seedScale } = await import('../demo/scale.ts');
          const { progress } = await import('./progress.ts');
          const bar = progress();
          bar.phase('seed');
          const started = Date.now();
          const r = await seedScale(db, t.id, { children, facilities, choices, seed: /^\d+$/.test(seed) ? Number(seed) : seed, now: new Date(), origin: origin('seed'), onProgress: (d, n) => bar.update(d, n) });
          bar.done();
          // Fresh statistics: without them the planner walks a million rows in nested loops on the first round (and
          // the statistics page took 13.7 s instead of 5 at 300,000 files). And the visibility map, which index-only
          // scans need (the statistics' counts, a facility's candidates): what autovacuum does after a bulk insert,
          // done now. Only the tables' owner may do either: the application role skips every table with a warning.
          const owner = ownerKysely(config, db);
          try {
            await sql`VACUUM (ANALYZE) facilities, facility_places, children, applications, offers`.execute(owner.db);
          } catch (err) {
            process.stderr.write(`seed: the tables could not be analysed (${(err as Error).message}); run ANALYZE as their owner before measuring anything\n`);
          } finally {
            await owner.close();
          }
          process.stdout.write(`${r.facilities} facilities, ${r.families} families, ${r.children} children, ${r.applications} applications in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
          return 0;
        });
      }
      const families = Number(values.families ?? 1000);
      if (!Number.isInteger(families) || families < 1 || families > 2_000_000) throw new UsageError('--families: a whole number from 1 to 2,000,000');
      const seed = values.seed ?? '1';
      return withDatabase(config, async (db) => {
        const t = await tenantOrFail(db, config, values.tenant);
        const started = Date.now();
        const r = await seedDemo(db, t.id, { families, seed: /^\d+$/.test(seed) ? Number(seed) : seed, now: new Date(), origin: origin('seed') });
        process.stdout.write(`${r.families} families, ${r.children} children, ${r.applications} applications in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
        return 0;
      });
    }
    case 'admin': {
      const [sub, ...args] = rest;
      if (sub !== 'bootstrap') throw new UsageError('usage: guichet admin bootstrap --tenant T --email E [--email E2]');
      const { values } = parseArgs({ args, options: { tenant: { type: 'string' }, email: { type: 'string', multiple: true } } });
      const emails = (values.email ?? []).map((e) => e.trim().toLowerCase());
      if (!emails.length || emails.some((e) => !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(e))) throw new UsageError('--email: an e-mail address is required');
      if (emails.length > 2 || new Set(emails).size !== emails.length) throw new UsageError('--email: one or two different addresses (the two first administrators)');
      return withDatabase(config, async (db) => {
        const t = await tenantOrFail(db, config, values.tenant);
        // The link opens on the tenant's own host: on another tenant's, the token would be unknown.
        const base = tenantBaseUrl(config, t.hosts);
        try {
          const r = await bootstrapAdmins(db, t, emails, base, origin('admin bootstrap'), new Date());
          emails.forEach((email, i) => {
            process.stdout.write(`${i === 0 ? 'First' : 'Second'} administrator of ${t.slug}: ${email}\nA link to choose the password was queued by e-mail (valid 24 h):\n${r[i]!.link}\n`);
          });
          if (emails.length === 1) {
            process.stdout.write('Whoever invites a person may not approve their privileged role: name a second administrator now (--email twice) or have the second one invited by someone else.\n');
          }
          return 0;
        } catch (err) {
          if (/already bootstrapped/.test(String((err as Error).message))) {
            process.stderr.write(`guichet: tenant ${t.slug} already has had an administrator; further privileged roles need a second administrator's approval\n`);
            return 1;
          }
          throw err;
        }
      });
    }
    case 'audit': {
      // `audit check` needs no database and no key: it reads the bundle only.
      const { runAuditCommand } = await import('../audit/cli.ts');
      return runAuditCommand(rest, {
        config,
        withDatabase: (fn) => withDatabase(config, (db) => fn(db)),
        tenantOrFail: (db, slug) => tenantOrFail(db, config, slug),
        allTenants: (db) => new TenantDirectory(db, config.defaultTenant).all(),
        origin,
        out: (text) => process.stdout.write(text),
        err: (text) => process.stderr.write(text),
      });
    }
    case 'keys': {
      const { keysCommand } = await import('../crypto/cli.ts');
      return keysCommand(rest, {
        config,
        withDatabase: (fn) => withDatabase(config, (db) => fn(db)),
        tenant: (db, slug) => tenantOrFail(db, config, slug),
        tenants: (db) => new TenantDirectory(db, config.defaultTenant).all(),
        origin,
        usage: (message) => new UsageError(message),
      });
    }
    case 'oidc': {
      const { oidcCommand } = await import('../oidc/cli.ts');
      return oidcCommand(rest, {
        config,
        withDatabase: (fn) => withDatabase(config, (db) => fn(db)),
        tenant: (db, slug) => tenantOrFail(db, config, slug),
        origin,
        usage: (message) => new UsageError(message),
        out: (text) => process.stdout.write(text),
      });
    }
    case 'breach-report': {
      const { breachReportCommand } = await import('../privacy/cli.ts');
      return breachReportCommand(rest, {
        config,
        withDatabase: (fn) => withDatabase(config, (db) => fn(db, config.databaseUrl ? 'postgres' : 'pglite')),
        tenant: (db, slug) => tenantOrFail(db, config, slug),
        origin,
        usage: (message) => new UsageError(message),
        out: (text) => process.stdout.write(text),
        err: (text) => process.stderr.write(text),
      });
    }
    case 'allocate': {
      const { allocateCommand } = await import('./allocate.ts');
      return allocateCommand(rest, {
        withDatabase: (fn) => withDatabase(config, (db) => fn(db)),
        tenant: (db, slug) => tenantOrFail(db, config, slug),
        origin,
        baseUrl: (t) => tenantBaseUrl(config, t.hosts),
        usage: (message) => new UsageError(message),
        out: (text) => process.stdout.write(text),
        err: (text) => process.stderr.write(text),
      });
    }
    case 'retention': {
      const { retentionCommand } = await import('../privacy/cli.ts');
      return retentionCommand(rest, {
        config,
        withDatabase: (fn) => withDatabase(config, (db) => fn(db, config.databaseUrl ? 'postgres' : 'pglite')),
        tenant: (db, slug) => tenantOrFail(db, config, slug),
        tenants: (db) => new TenantDirectory(db, config.defaultTenant).all(),
        origin,
        usage: (message) => new UsageError(message),
        out: (text) => process.stdout.write(text),
        err: (text) => process.stderr.write(text),
      });
    }
    case 'backup':
    case 'restore': {
      const { backupCommand, restoreCommand } = await import('../backup/cli.ts');
      const ctx = {
        config,
        env: process.env,
        lockDataDir,
        usage: (message: string) => new UsageError(message),
        out: (text: string) => process.stdout.write(text),
        err: (text: string) => process.stderr.write(text),
      };
      return command === 'backup' ? backupCommand(rest, ctx) : restoreCommand(rest, ctx);
    }
    default:
      throw new UsageError(`unknown command "${command}" (guichet help lists them)`);
  }
}

try {
  const code = await main(process.argv.slice(2));
  if (code >= 0) process.exit(code);
} catch (err) {
  if (err instanceof UsageError || err instanceof ConfigError || err instanceof DirectoryFormatError || err instanceof UnsafeDatabaseRoleError || err instanceof KeyError || err instanceof DataDirInUseError) {
    process.stderr.write(`guichet: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`guichet: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
}
