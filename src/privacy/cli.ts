/**
 * `guichet breach-report`: the breach impact report from the server. The
 * operator who runs it has the server's trust (as for `audit export` or
 * `keys purge`); the console asks a security officer with a fresh
 * authentication for the same report. Bad input is an error with exit 2,
 * nothing is written, and the attempt is in the audit log.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Kysely } from 'kysely';
import pino from 'pino';
import type { AuditOrigin } from '../audit/events.ts';
import type { Config } from '../config/config.ts';
import type { Deps } from '../context.ts';
import { loadKeyProvider, type KeyProvider } from '../crypto/keys.ts';
import type { DB } from '../db/schema.ts';
import { TenantDirectory, type Tenant } from '../tenants/service.ts';
import { runRetention } from './retention.ts';
import { breachReportCsv, BreachReportError, createBreachReport, type Selector } from './breach.ts';

export interface PrivacyCliHelpers {
  config: Config;
  withDatabase<T>(fn: (db: Kysely<DB>, kind: 'pglite' | 'postgres') => Promise<T>): Promise<T>;
  tenant(db: Kysely<DB>, slug: string | undefined): Promise<Tenant>;
  origin(command: string): AuditOrigin;
  usage(message: string): Error;
  out(text: string): void;
  err(text: string): void;
  /** The key provider; by default the one the configuration names. */
  keys?: KeyProvider;
}

export const BREACH_USAGE = `usage: guichet breach-report --tenant T (--actor ACCOUNT | --session ID | --ip ADDR) --from ISO --to ISO [--format json|csv] [--out FILE] [--notices DIR]`;

export async function breachReportCommand(args: string[], h: PrivacyCliHelpers): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
    args,
    options: {
      tenant: { type: 'string' },
      actor: { type: 'string' },
      session: { type: 'string' },
      ip: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
      format: { type: 'string' },
      out: { type: 'string' },
      notices: { type: 'string' },
    },
  });
  } catch (err) {
    throw h.usage(`${(err as Error).message}\n${BREACH_USAGE}`);
  }
  const { values } = parsed;
  if (!values.tenant) throw h.usage(`--tenant is required\n${BREACH_USAGE}`);
  const format = values.format ?? 'json';
  if (format !== 'json' && format !== 'csv') throw h.usage(`--format: json or csv, not "${format}"`);
  const named = (['actor', 'session', 'ip'] as const).filter((k) => values[k] !== undefined);
  if (named.length > 1) throw h.usage(`name one of --actor, --session or --ip, not ${named.map((k) => `--${k}`).join(' and ')}`);
  const selector: Selector | null = named.length ? ({ kind: named[0]!, value: values[named[0]!]! } as Selector) : null;
  return h.withDatabase(async (db, kind) => {
    const tenant = await h.tenant(db, values.tenant);
    const deps: Deps = {
      db: { kind, db, close: async () => {} },
      config: h.config,
      clock: () => new Date(),
      log: pino({ level: 'silent' }),
      tenants: new TenantDirectory(db, h.config.defaultTenant),
      keys: h.keys ?? loadKeyProvider(process.env, h.config.dataDir),
    };
    let report;
    try {
      report = await createBreachReport(deps, { kind: 'cli', tenant, origin: h.origin('breach-report'), now: new Date() }, { selector: selector as Selector, from: values.from ?? '', to: values.to ?? '' });
    } catch (err) {
      if (err instanceof BreachReportError) {
        h.err(`guichet: ${err.message}\n`);
        return err.code === 'log_unverified' ? 1 : 2;
      }
      throw err;
    }
    const text = format === 'json' ? `${JSON.stringify(report, null, 1)}\n` : breachReportCsv(report);
    // The report names families and their files: readable by its owner only.
    if (values.out) writeFileSync(values.out, text, { mode: 0o600 });
    else h.out(text);
    if (values.notices) {
      mkdirSync(values.notices, { recursive: true, mode: 0o700 });
      for (const n of report.notices) writeFileSync(join(values.notices, `notice-${n.familyId}-${n.locale}.txt`), `To: ${n.to}\nSubject: ${n.subject}\n\n${n.body}\n`, { mode: 0o600 });
      writeFileSync(join(values.notices, 'commission-fr.txt'), `${report.commission.fr}\n`, { mode: 0o600 });
      writeFileSync(join(values.notices, 'commission-en.txt'), `${report.commission.en}\n`, { mode: 0o600 });
    }
    h.err(
      `breach report: ${report.totals.families} families, ${report.totals.files} files, ${report.events} events (${report.refused} refused) in ${report.window.from} .. ${report.window.to}; log verified to ${report.verification.treeSize} events` +
        `${report.unsealed ? `; ${report.unsealed} events after the verified head are not included` : ''}\n`,
    );
    return 0;
  });
}

export const RETENTION_USAGE = 'usage: guichet retention run [--tenant T]';

/** `guichet retention run`: the daily job once, now (the server runs it on its own timer). */
export async function retentionCommand(args: string[], h: PrivacyCliHelpers & { tenants(db: Kysely<DB>): Promise<Tenant[]> }): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'run') throw h.usage(RETENTION_USAGE);
  let values: { tenant?: string | undefined };
  try {
    values = parseArgs({ args: rest, options: { tenant: { type: 'string' } } }).values;
  } catch (err) {
    throw h.usage(`${(err as Error).message}\n${RETENTION_USAGE}`);
  }
  return h.withDatabase(async (db, kind) => {
    const only = values.tenant ? await h.tenant(db, values.tenant) : undefined;
    const deps: Deps = {
      db: { kind, db, close: async () => {} },
      config: h.config,
      clock: () => new Date(),
      log: pino({ level: 'silent' }),
      tenants: new TenantDirectory(db, h.config.defaultTenant),
      keys: h.keys ?? loadKeyProvider(process.env, h.config.dataDir),
    };
    const results = await runRetention(deps, h.origin('retention run'), new Date(), only);
    if (!results) {
      h.err('guichet: another instance is running the retention job; nothing done\n');
      return 1;
    }
    for (const r of results) h.out(`${r.tenant}: ${r.deleted} files deleted by the retention rules, ${r.purge.filesPurged} purged (${r.purge.familiesPurged} families, ${r.purge.familiesRekeyed} re-keyed, ${r.purge.keysDestroyed} keys destroyed), ${r.accountsClosed} accounts without a file closed, ${r.mailBodiesEmptied} sent messages emptied\n`);
    return 0;
  });
}
