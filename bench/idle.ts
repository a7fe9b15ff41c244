/**
 * What the background work costs when nothing happens, by number of tenants:
 * the loops `guichet serve` runs several times a second (sealer, detection
 * stream, webhook sender, mail sender), on PostgreSQL through the
 * unprivileged application role, for BENCH_IDLE_SECONDS (default 10) each.
 *
 *   idle.<n>.server     this process's CPU, ms per second
 *   idle.<n>.postgres   PostgreSQL's CPU, ms per second
 *
 * Baseline, same run, same database: the same loops looking at every tenant
 * on every tick, as they did before the work signals (migration 0040). The
 * notes give what the process and PostgreSQL spend with no loop running.
 * Then, with the signals on, the time from a message queued to its delivery
 * at the SMTP server, beside the same with every tick a full pass.
 *
 * node bin/run-ts.mjs bench/idle.ts [--json]
 * A throwaway database via postgres@127.0.0.1, dropped after.
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import { SMTPServer } from 'smtp-server';
import { Sealer } from '../src/audit/sealer.ts';
import { loadConfig } from '../src/config/config.ts';
import type { Deps } from '../src/context.ts';
import { keyProviderFromSecret } from '../src/crypto/keys.ts';
import type { DB } from '../src/db/schema.ts';
import { inTenant } from '../src/db/tenant.ts';
import { DetectionStream, tenantBaseUrl } from '../src/detection/stream.ts';
import { WebhookSender } from '../src/detection/webhook.ts';
import { enqueueMail } from '../src/mail/outbox.ts';
import { MailSender } from '../src/mail/sender.ts';
import { createTenant, TenantDirectory } from '../src/tenants/service.ts';
import { benchDatabase, log, percentile, postgresCpuMs, report } from './lib.ts';

const SECONDS = Number(process.env.BENCH_IDLE_SECONDS ?? 10);
const TENANT_COUNTS = [1, 30, 100];

const bench = await benchDatabase();
const owner = new Kysely<DB>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: bench.ownerUrl, max: 2 }) }) });
const received = new Map<string, number>();
const smtp = new SMTPServer({
  authOptional: true,
  disabledCommands: ['STARTTLS', 'AUTH'],
  logger: false,
  onData: (stream, session, cb) => {
    stream.resume();
    stream.on('end', () => {
      for (const r of session.envelope.rcptTo) received.set(r.address, performance.now());
      cb();
    });
  },
});
smtp.listen(0, '127.0.0.1');
await once(smtp.server, 'listening');
const smtpUrl = `smtp://127.0.0.1:${(smtp.server.address() as AddressInfo).port}?ignoreTLS=true`;

const config = { ...loadConfig({ NODE_ENV: 'production', LOG_LEVEL: 'silent', DATABASE_URL: bench.appUrl, GUICHET_DEFAULT_TENANT: 'none', SMTP_URL: smtpUrl }) };
const deps: Deps = {
  db: bench.database,
  config,
  clock: () => new Date(),
  log: pino({ level: 'silent' }),
  tenants: new TenantDirectory(bench.database.db, config.defaultTenant),
  keys: keyProviderFromSecret(Buffer.alloc(32, 3)),
};

/** The loops of `guichet serve` (src/jobs/jobs.ts), with the work signals on or off. */
function startLoops(watchWork: boolean) {
  const sealer = new Sealer(deps.db.db, deps.keys, deps.log, { watchWork });
  const stream = new DetectionStream(deps, tenantBaseUrl(deps), 250, () => true, { watchWork });
  const webhooks = new WebhookSender(deps, 250, 5000, () => true, { watchWork });
  const mail = new MailSender(deps, smtpUrl, { watchWork });
  sealer.start();
  stream.start();
  webhooks.start();
  mail.start();
  return {
    mail,
    stop: async () => {
      await Promise.all([sealer.stop(), stream.stop(), webhooks.stop(), mail.stop()]);
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function idleCost(watchWork: boolean | null): Promise<{ server: number; postgres: number }> {
  // null: no loop at all, what this process and PostgreSQL spend anyway.
  const loops = watchWork === null ? { stop: async () => {} } : startLoops(watchWork);
  // The first passes (cursors made, the first quiet pass) are not idling.
  await sleep(2000);
  const cpu0 = process.cpuUsage();
  const pg0 = postgresCpuMs();
  const t0 = performance.now();
  await sleep(SECONDS * 1000);
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const pgMs = (postgresCpuMs() ?? 0) - (pg0 ?? 0);
  await loops.stop();
  return { server: (cpu.user + cpu.system) / 1000 / seconds, postgres: pgMs / seconds };
}

let mailNo = 0;
/** Messages queued one at a time in a random tenant, idle in between: queued to received at the SMTP server (ms). */
async function mailLatency(watchWork: boolean, tenantIds: readonly string[], count: number): Promise<number[]> {
  const loops = startLoops(watchWork);
  await sleep(2000);
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const to = `personne${++mailNo}@exemple.test`;
    const tenantId = tenantIds[Math.floor(Math.random() * tenantIds.length)]!;
    await inTenant(deps.db.db, tenantId, (trx) => enqueueMail(trx, tenantId, { to, locale: 'fr', template: 'verify_email', subject: 'Objet', body: 'Corps' }, new Date()));
    const t0 = performance.now();
    while (!received.has(to)) await sleep(5);
    out.push(received.get(to)! - t0);
    // Idle again before the next one, at a random point of the tick.
    await sleep(1500 + Math.random() * 1000);
  }
  await loops.stop();
  return out;
}

try {
  const origin = { actorAccountId: null, actorRoles: ['system:bench'], ip: null, userAgent: null, requestId: null };
  const ids: string[] = [];
  const floor = await idleCost(null);
  for (const n of TENANT_COUNTS) {
    while (ids.length < n) {
      const t = await createTenant(owner, { slug: `banc-${ids.length + 1}`, nameFr: `Banc ${ids.length + 1}`, nameEn: `Bench ${ids.length + 1}`, hosts: [`banc-${ids.length + 1}.localhost`] }, origin, new Date());
      ids.push(t.id);
    }
    deps.tenants.invalidate();
    log(`${n} tenant(s): ${SECONDS} s idle with every tick a full pass, then ${SECONDS} s with the work signals`);
    const before = await idleCost(false);
    const after = await idleCost(true);
    report({ name: `idle.${n}.server`, value: after.server, unit: 'ms CPU/s', baseline: before.server, baselineLabel: 'every tick a pass over every tenant', lowerIsBetter: true, note: `sealer, detection stream, webhook and mail loops of one instance, nothing to do; with no loop at all ${floor.server.toFixed(1)}` });
    report({ name: `idle.${n}.postgres`, value: after.postgres, unit: 'ms CPU/s', baseline: before.postgres, baselineLabel: 'every tick a pass over every tenant', lowerIsBetter: true, note: `PostgreSQL, for the same; with no loop at all ${floor.postgres.toFixed(1)}` });
  }
  log('mail: queued to delivered, 10 messages each way');
  const full = await mailLatency(false, ids, 10);
  const watched = await mailLatency(true, ids, 10);
  report({ name: `mail.queuedToSent.p50, ${ids.length} tenants`, value: percentile(watched, 50), unit: 'ms', baseline: percentile(full, 50), baselineLabel: 'every tick a pass over every tenant', lowerIsBetter: true, note: `max ${Math.max(...watched).toFixed(0)} ms against ${Math.max(...full).toFixed(0)} ms; the sender ticks every second` });
} finally {
  await new Promise<void>((r) => smtp.close(() => r()));
  await owner.destroy();
  await bench.drop();
}
