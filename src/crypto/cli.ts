/**
 * `guichet keys …`: key status, rotation (online, resumable, with a progress
 * bar on a terminal) and the purge of deleted files past their retention
 * window (crypto-shredding). src/cli/main.ts hands over its helpers.
 */
import { parseArgs } from 'node:util';
import type { Kysely } from 'kysely';
import { appendAuditAlone } from '../audit/log.ts';
import type { AuditOrigin } from '../audit/events.ts';
import type { Config } from '../config/config.ts';
import type { DB } from '../db/schema.ts';
import { purgeExpired } from '../records/purge.ts';
import type { Tenant } from '../tenants/service.ts';
import { originFields } from '../tenants/service.ts';
import { envelopeFor } from './envelope.ts';
import { loadKeyProvider, type KeyProvider } from './keys.ts';
import { rotateMaster, rotateTenantKey } from './rotation.ts';

export interface KeysCliHelpers {
  config: Config;
  withDatabase<T>(fn: (db: Kysely<DB>) => Promise<T>): Promise<T>;
  tenant(db: Kysely<DB>, slug: string | undefined): Promise<Tenant>;
  tenants(db: Kysely<DB>): Promise<Tenant[]>;
  origin(command: string): AuditOrigin;
  usage(message: string): Error;
  out?: NodeJS.WriteStream;
  err?: NodeJS.WriteStream;
}

const USAGE = 'usage: guichet keys status [--tenant T] | keys rotate (--tenant T | --master) [--batch N] | keys purge [--tenant T]';

/** A progress bar on a terminal; a line every tenth of the way otherwise (logs, pipes). */
export function progressBar(stream: NodeJS.WriteStream, label: string) {
  const tty = !!stream.isTTY;
  let lastTenth = -1;
  let lastDraw = 0;
  let drawn = false;
  return {
    update(done: number, total: number, force = false) {
      const pct = total ? Math.min(100, Math.floor((done * 100) / total)) : 100;
      if (tty) {
        const now = Date.now();
        if (!force && now - lastDraw < 80 && pct < 100) return;
        lastDraw = now;
        const width = 30;
        const fill = Math.round((pct * width) / 100);
        stream.write(`\r${label} [${'#'.repeat(fill)}${'-'.repeat(width - fill)}] ${String(pct).padStart(3)}% ${done}/${total}`);
        drawn = true;
      } else {
        const tenth = Math.floor(pct / 10);
        if (tenth === lastTenth && !force) return;
        lastTenth = tenth;
        stream.write(`${label}: ${pct}% (${done}/${total})\n`);
      }
    },
    end() {
      if (tty && drawn) stream.write('\n');
    },
  };
}

export async function keysCommand(args: string[], h: KeysCliHelpers): Promise<number> {
  const out = h.out ?? process.stdout;
  const err = h.err ?? process.stderr;
  const [sub, ...rest] = args;
  const { values } = (() => {
    try {
      return parseArgs({ args: rest, options: { tenant: { type: 'string' }, master: { type: 'boolean' }, batch: { type: 'string' } } });
    } catch (e) {
      throw h.usage(`${(e as Error).message}\n${USAGE}`);
    }
  })();
  const batch = values.batch === undefined ? 500 : Number(values.batch);
  if (!Number.isInteger(batch) || batch < 1 || batch > 10_000) throw h.usage('--batch: a whole number from 1 to 10,000');
  if (sub !== 'status' && sub !== 'rotate' && sub !== 'purge') throw h.usage(USAGE);
  if (sub === 'rotate' && !!values.master === !!values.tenant) throw h.usage(`keys rotate: name either --tenant T or --master\n${USAGE}`);

  return h.withDatabase(async (db) => {
    const keys: KeyProvider = loadKeyProvider(process.env, h.config.dataDir);
    try {
      const env = envelopeFor(keys);
      if (sub === 'status') {
        const tenants = values.tenant ? [await h.tenant(db, values.tenant)] : await h.tenants(db);
        out.write(`master key: ${keys.source}, version ${await keys.currentMasterVersion()} (versions held: ${(await keys.masterVersions()).join(', ')})\nkeyring: ${keys.keyring.location}\n`);
        const master = await keys.keyring.openRotation('master', null);
        if (master) out.write(`master rotation to version ${master.toVersion} in progress: ${master.done}/${master.total} (run: guichet keys rotate --master)\n`);
        for (const t of tenants) {
          const keks = await keys.keyring.tenantKeys(t.id, 'kek');
          const families = await keys.keyring.countFamilyKeys(t.id);
          const rot = await keys.keyring.openRotation('tenant', t.id);
          out.write(`${t.slug}: tenant key version${keks.length === 1 ? '' : 's'} ${keks.map((k) => k.version).join(', ') || '(none yet)'}, ${families} family key${families === 1 ? '' : 's'}`);
          out.write(rot ? `; rotation to version ${rot.toVersion} in progress: ${rot.done}/${rot.total} (run: guichet keys rotate --tenant ${t.slug})\n` : '\n');
        }
        return 0;
      }
      if (sub === 'rotate' && values.master) {
        const bar = progressBar(err, 'master key');
        const r = await rotateMaster(env, { onProgress: (p) => bar.update(p.done, p.total) });
        bar.end();
        for (const t of await h.tenants(db)) {
          await appendAuditAlone(db, t.id, { action: 'keys.master.rotate', outcome: 'success', ...originFields(h.origin('keys rotate --master')), details: { toVersion: r.toVersion, rewrapped: r.rewrapped, resumed: r.resumed, retired: r.retired.join(',') } }, new Date());
        }
        out.write(`${r.resumed ? 'resumed: ' : ''}master key version ${r.toVersion} wraps ${r.total} tenant key${r.total === 1 ? '' : 's'} (${r.rewrapped} re-wrapped now)`);
        out.write(r.retired.length ? `; version${r.retired.length === 1 ? '' : 's'} ${r.retired.join(', ')} removed from ${keys.source}\n` : '\n');
        return 0;
      }
      if (sub === 'rotate') {
        const t = await h.tenant(db, values.tenant);
        const before = await keys.keyring.openRotation('tenant', t.id);
        if (before) out.write(`${t.slug}: resuming the rotation to tenant key version ${before.toVersion} (${before.done} family keys already re-wrapped)\n`);
        const bar = progressBar(err, `${t.slug} family keys`);
        const r = await rotateTenantKey(env, t.id, { batchSize: batch, onProgress: (p) => bar.update(p.done, p.total) });
        bar.end();
        await appendAuditAlone(
          db,
          t.id,
          { action: 'keys.tenant.rotate', outcome: 'success', ...originFields(h.origin(`keys rotate --tenant ${t.slug}`)), targetType: 'tenant', targetIds: [t.id], details: { fromVersion: r.fromVersion, toVersion: r.toVersion, rewrapped: r.rewrapped, total: r.total, resumed: r.resumed } },
          new Date(),
        );
        out.write(`${t.slug}: tenant key version ${r.toVersion} wraps ${r.total} family key${r.total === 1 ? '' : 's'} (${r.rewrapped} re-wrapped now)${r.retired.length ? `; version ${r.retired.join(', ')} destroyed` : ''}\n`);
        return 0;
      }
      const tenants = values.tenant ? [await h.tenant(db, values.tenant)] : await h.tenants(db);
      for (const t of tenants) {
        const r = await purgeExpired(db, keys, t, h.origin('keys purge'), new Date());
        out.write(
          `${t.slug}: ${r.filesPurged} file${r.filesPurged === 1 ? '' : 's'} purged (retention ${t.rules.deletedFileRetentionDays} days), ${r.familiesPurged} famil${r.familiesPurged === 1 ? 'y' : 'ies'} destroyed, ${r.familiesRekeyed} re-keyed, ${r.keysDestroyed} key${r.keysDestroyed === 1 ? '' : 's'} destroyed\n`,
        );
      }
      return 0;
    } finally {
      await keys.close();
    }
  });
}
