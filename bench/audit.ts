/**
 * The audit log, on a throwaway PostgreSQL database (dropped at the end):
 *
 * 1. appends per second with concurrent writers, one event a transaction (the
 *    request path) and fifty (bulk work), with the sealer running as in
 *    production; baseline: the same transactions inserting the same rows into
 *    an unconstrained table (no key, no index, no trigger, no policy);
 * 2. time from an event's commit to a signed head covering it, with the sealer
 *    loop as `guichet serve` runs it; baseline: sealing right after the commit;
 * 3. at a million events: sealing rate; full verification rate beside raw
 *    SHA-256 over the same bytes, with its two parts apart (the pages the
 *    database renders and hashes, the tree recomputed here); inclusion and
 *    consistency proof latency beside a point read of one leaf.
 *
 *   node bin/run-ts.mjs bench/audit.ts [--json] [--events N] [--seconds S]
 */
import { randomUUID } from 'node:crypto';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import type { AuditEventInput } from '../src/audit/events.ts';
import { appendAudit, appendAuditMany } from '../src/audit/log.ts';
import { CompactRange, leafHash } from '../src/audit/merkle.ts';
import { Sealer } from '../src/audit/sealer.ts';
import { TenantSigner } from '../src/audit/signing.ts';
import { consistencyProofAt, countPending, eventsInOrder, hashedPage, inclusionProofAt, latestHead, leavesWithEntries, preferIndexOrder } from '../src/audit/store.ts';
import { VERIFY_PAGE_SIZE, verifyTenant } from '../src/audit/verify.ts';
import { keyProviderFromSecret } from '../src/crypto/keys.ts';
import type { DB } from '../src/db/schema.ts';
import { inTenant } from '../src/db/tenant.ts';
import { createTenant } from '../src/tenants/service.ts';
import { benchDatabase, log, percentile, report } from './lib.ts';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  return Number.isFinite(v) && v > 0 ? v : fallback;
}

const EVENTS = arg('--events', 1_000_000);
const SECONDS = arg('--seconds', 4);
const WRITERS = 16;
const keys = keyProviderFromSecret(Buffer.alloc(32, 77));
const silent = pino({ level: 'silent' });
const origin = { actorAccountId: null, actorRoles: ['system:bench'], ip: null, userAgent: null, requestId: null };

/** What an audited read of a child's file writes (src/records/gateway.ts). */
const input = (n: number): AuditEventInput => ({
  action: 'waitlist.childFile.read',
  outcome: 'success',
  actorAccountId: randomUUID(),
  actorRoles: ['parent'],
  targetType: 'child',
  targetIds: [randomUUID()],
  familyIds: [randomUUID()],
  fields: ['first_name', 'last_name', 'birth_date', 'nirec', 'desired_entry_date', 'days_of_care'],
  purpose: 'parent.childFile.view',
  ip: '192.0.2.44',
  userAgent: 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36',
  requestId: randomUUID(),
  details: { n },
});

/** The same row, as appendAudit would write it, for the unconstrained table. */
function plainRow(tenantId: string, n: number, seq: number) {
  const i = input(n);
  return {
    tenant_id: tenantId,
    seq,
    id: randomUUID(),
    occurred_at: new Date(),
    action: i.action,
    outcome: i.outcome,
    actor_account_id: i.actorAccountId,
    actor_roles: i.actorRoles,
    on_behalf_of: null,
    target_type: i.targetType,
    target_ids: i.targetIds,
    family_ids: i.familyIds,
    fields: i.fields,
    purpose: i.purpose,
    ip: i.ip,
    user_agent: i.userAgent,
    request_id: i.requestId,
    details: JSON.stringify(i.details),
  };
}

const bench = await benchDatabase();
const owner = new Kysely<DB>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: bench.ownerUrl, max: 4 }) }) });
const db = bench.database.db;
try {
  await sql`CREATE TABLE bench_plain AS SELECT * FROM audit_events WITH NO DATA`.execute(owner);
  await sql`GRANT INSERT, SELECT ON bench_plain TO guichet_app`.execute(owner);
  const tenant = await createTenant(owner, { slug: 'bench-audit', nameFr: 'Banc', nameEn: 'Bench', hosts: [] }, origin, new Date());
  const tenantId = tenant.id;

  /* ------------------------------------------------------------ appends */
  let plainSeq = 0;
  let n = 0;
  async function phase(kind: 'audit' | 'plain', perTxn: number, ms: number): Promise<number> {
    const deadline = performance.now() + ms;
    const started = performance.now();
    let count = 0;
    await Promise.all(
      Array.from({ length: WRITERS }, async () => {
        while (performance.now() < deadline) {
          await inTenant(db, tenantId, async (trx) => {
            if (kind === 'audit') {
              if (perTxn === 1) await appendAudit(trx, tenantId, input(n++), new Date());
              else await appendAuditMany(trx, tenantId, Array.from({ length: perTxn }, () => input(n++)), new Date());
            } else {
              const rows = Array.from({ length: perTxn }, () => plainRow(tenantId, n++, ++plainSeq));
              await (trx as unknown as Kysely<Record<string, Record<string, unknown>>>).insertInto('bench_plain').values(rows).execute();
            }
          });
          count += perTxn;
        }
      }),
    );
    return count / ((performance.now() - started) / 1000);
  }

  for (const perTxn of [1, 50]) {
    log(`appends, ${WRITERS} writers, ${perTxn} event(s) a transaction, ${SECONDS} s per phase, twice each, the sealer running`);
    const sealer = new Sealer(db, keys, silent, { intervalMs: 500 });
    const audit: number[] = [];
    const plain: number[] = [];
    for (let rep = 0; rep < 2; rep++) {
      plain.push(await phase('plain', perTxn, SECONDS * 1000));
      sealer.start();
      audit.push(await phase('audit', perTxn, SECONDS * 1000));
      await sealer.stop();
    }
    const backlog = await inTenant(db, tenantId, async (trx) => {
      const h = await latestHead(trx, tenantId);
      return countPending(trx, tenantId, h ? { ticket: h.lastTicket, seq: h.lastSeq } : null);
    });
    const drainStart = performance.now();
    for (let r = await sealer.sealTenant(tenantId); r.more; r = await sealer.sealTenant(tenantId));
    const drained = performance.now() - drainStart;
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    report({
      name: `audit appends, ${WRITERS} writers, ${perTxn}/txn`,
      value: mean(audit),
      unit: 'events/s',
      baseline: mean(plain),
      baselineLabel: 'plain INSERT, unconstrained table',
      note: `sealer running; backlog when writers stopped: ${backlog} events, sealed in ${Math.round(drained)} ms`,
    });
  }

  /* ------------------------------------------------ event → signed head */
  {
    log('event → signed head: 4 writers at ~200 events/s, the sealer loop as `guichet serve` runs it');
    const acked = new Map<string, number>();
    const latencies: number[] = [];
    let size = (await inTenant(db, tenantId, (trx) => latestHead(trx, tenantId)))?.treeSize ?? 0;
    const sealedRanges: { from: number; to: number; at: number }[] = [];
    const sealer = new Sealer(db, keys, silent, {
      onSeal: (_t, head) => {
        sealedRanges.push({ from: size, to: head.treeSize, at: performance.now() });
        size = head.treeSize;
      },
    });
    for (let r = await sealer.sealTenant(tenantId); r.more; r = await sealer.sealTenant(tenantId));
    sealedRanges.length = 0;
    sealer.start();
    const deadline = performance.now() + SECONDS * 2000;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (performance.now() < deadline) {
          const e = await inTenant(db, tenantId, (trx) => appendAudit(trx, tenantId, input(n++), new Date()));
          acked.set(e.id, performance.now());
          await new Promise((res) => setTimeout(res, 20));
        }
      }),
    );
    await new Promise((res) => setTimeout(res, 1500));
    await sealer.stop();
    for (const r of sealedRanges) {
      for (const l of await inTenant(db, tenantId, (trx) => leavesWithEntries(trx, tenantId, r.from, r.to))) {
        const t0 = acked.get(l.eventId);
        if (t0 !== undefined) latencies.push(r.at - t0);
      }
    }
    // Baseline: one event, sealed as soon as it committed.
    const immediate: number[] = [];
    const direct = new Sealer(db, keys, silent);
    for (let i = 0; i < 100; i++) {
      await inTenant(db, tenantId, (trx) => appendAudit(trx, tenantId, input(n++), new Date()));
      const t0 = performance.now();
      await direct.sealTenant(tenantId);
      immediate.push(performance.now() - t0);
    }
    report({ name: 'event → signed head, p50', value: percentile(latencies, 50), unit: 'ms', baseline: percentile(immediate, 50), baselineLabel: 'seal at once after the commit', lowerIsBetter: true, note: `${latencies.length} of ${acked.size} events measured, ${sealedRanges.length} heads` });
    report({ name: 'event → signed head, p99', value: percentile(latencies, 99), unit: 'ms', baseline: percentile(immediate, 99), baselineLabel: 'seal at once after the commit', lowerIsBetter: true });
    report({ name: 'event → signed head, max', value: Math.max(...latencies), unit: 'ms', baseline: 1000, baselineLabel: 'aim', lowerIsBetter: true });
  }

  /* ---------------------------------------------- a million events */
  {
    const have = Number((await sql<{ n: string }>`SELECT count(*)::text AS n FROM audit_events WHERE tenant_id = ${tenantId}`.execute(owner)).rows[0]!.n);
    const missing = Math.max(0, EVENTS - have);
    log(`filling the log to ${EVENTS.toLocaleString('en-CA')} events (${missing.toLocaleString('en-CA')} more, in SQL)`);
    for (let done = 0; done < missing; done += 100_000) {
      const k = Math.min(100_000, missing - done);
      await inTenant(db, tenantId, (trx) =>
        sql`INSERT INTO audit_events (tenant_id, id, occurred_at, action, outcome, actor_account_id, actor_roles, target_type, target_ids, family_ids, fields, purpose, ip, user_agent, request_id, details)
          SELECT ${tenantId}, gen_random_uuid(), now(), 'waitlist.childFile.read', 'success', gen_random_uuid(), '{parent}', 'child', ARRAY[gen_random_uuid()::text], ARRAY[gen_random_uuid()],
                 '{first_name,last_name,birth_date,nirec,desired_entry_date,days_of_care}', 'parent.childFile.view', '192.0.2.44',
                 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36', gen_random_uuid()::text, jsonb_build_object('n', g)
          FROM generate_series(1, ${k}) g`.execute(trx),
      );
    }
    const sealer = new Sealer(db, keys, silent, { batchMax: 50_000 });
    const sealStart = performance.now();
    let sealedNow = 0;
    for (let r = await sealer.sealTenant(tenantId); ; r = await sealer.sealTenant(tenantId)) {
      sealedNow += r.sealed;
      if (!r.more) break;
    }
    const sealSeconds = (performance.now() - sealStart) / 1000;
    report({ name: 'sealing a backlog', value: sealedNow / sealSeconds, unit: 'events/s', baseline: null, note: `${sealedNow.toLocaleString('en-CA')} events: read, hashed, leaves and subtree hashes stored, heads signed` });

    const head = (await inTenant(db, tenantId, (trx) => latestHead(trx, tenantId)))!;
    // What autovacuum does to a table that has just grown by a million rows, before anyone reads it again: without
    // it the first reader after the bulk fill pays for setting every row's commit hint (a commit-log lookup per row,
    // and the page written again), a cost of having just written the rows, not of reading them. The statistics
    // matter to the proofs' point reads below, planned otherwise on a table the planner believes almost empty.
    await sql`VACUUM (ANALYZE) audit_events, audit_leaves, audit_tree_nodes`.execute(owner);
    await sql`CHECKPOINT`.execute(owner);
    log(`verifying ${head.treeSize.toLocaleString('en-CA')} leaves`);
    const v0 = performance.now();
    const v = await verifyTenant(db, tenantId, { key: new TenantSigner(keys, tenantId).verifier });
    const verifySeconds = (performance.now() - v0) / 1000;
    if (!v.ok) throw new Error(`verification failed: ${JSON.stringify(v.firstBad)}`);

    // Raw SHA-256 over the same bytes (0x00 ‖ entry), timed alone: the entries read a page at a time, then hashed.
    let bytes = 0;
    let hashMs = 0;
    await inTenant(db, tenantId, async (trx) => {
      await preferIndexOrder(trx);
      for (let after: { ticket: string; seq: string } | null = null, done = 0; done < head.treeSize; ) {
        const rows = await eventsInOrder(trx, tenantId, after, Math.min(VERIFY_PAGE_SIZE, head.treeSize - done));
        if (!rows.length) break;
        const r1 = performance.now();
        for (const r of rows) leafHash(r.entry);
        hashMs += performance.now() - r1;
        // Counted apart: measuring the bytes is not hashing them.
        for (const r of rows) bytes += Buffer.byteLength(r.entry) + 1;
        done += rows.length;
        after = { ticket: rows[rows.length - 1]!.ticket, seq: rows[rows.length - 1]!.seq };
      }
    });

    // What verification does, apart: the pages of leaves with their events' leaf hashes computed by the database
    // (one transaction, so one server process, page after page), and the tree recomputed here from those hashes.
    let readMs = 0;
    let treeMs = 0;
    const tree = new CompactRange();
    await inTenant(db, tenantId, async (trx) => {
      await preferIndexOrder(trx);
      for (let from = 0; from < head.treeSize; from += VERIFY_PAGE_SIZE) {
        const r0 = performance.now();
        const page = await hashedPage(trx, tenantId, from, VERIFY_PAGE_SIZE);
        const r1 = performance.now();
        readMs += r1 - r0;
        for (let j = 0; j < page.leafCount; j++) tree.append(page.leafHashes.subarray(32 * j, 32 * j + 32));
        treeMs += performance.now() - r1;
      }
    });
    if (!tree.root().equals(head.rootHash)) throw new Error('the in-memory tree does not match the signed head');
    const verifyRate = head.treeSize / verifySeconds;
    const rawRate = head.treeSize / (hashMs / 1000);
    report({
      name: `full verification, ${(head.treeSize / 1e6).toFixed(2)} M events`,
      value: verifyRate,
      unit: 'events/s',
      baseline: rawRate,
      baselineLabel: 'raw SHA-256 over the same bytes',
      note: `${((bytes / verifySeconds) / 1e6).toFixed(1)} MB/s vs ${((bytes / (hashMs / 1000)) / 1e6).toFixed(1)} MB/s; ${(bytes / head.treeSize).toFixed(0)} bytes an entry; verify took ${verifySeconds.toFixed(1)} s`,
    });
    report({ name: 'hashed pages read by one transaction', value: head.treeSize / (readMs / 1000), unit: 'events/s', baseline: rawRate, baselineLabel: 'raw SHA-256 over the same bytes', note: 'one server process renders and hashes every entry and sends the page; verification keeps two at it on PostgreSQL' });
    report({ name: 'the tree recomputed in memory (node hashes)', value: head.treeSize / (treeMs / 1000), unit: 'events/s', baseline: rawRate, baselineLabel: 'raw SHA-256 over the same bytes', note: 'the hashing verification does here, from the leaf hashes the database computed' });

    // Proofs at this size, each in its own transaction as a request would make it.
    const incl: number[] = [];
    const cons: number[] = [];
    const point: number[] = [];
    for (let i = 0; i < 200; i++) {
      const m = Math.floor(Math.random() * head.treeSize);
      let t0 = performance.now();
      await inTenant(db, tenantId, (trx) => inclusionProofAt(trx, tenantId, m, head.treeSize));
      incl.push(performance.now() - t0);
      const s1 = 1 + Math.floor(Math.random() * (head.treeSize - 1));
      t0 = performance.now();
      await inTenant(db, tenantId, (trx) => consistencyProofAt(trx, tenantId, s1, head.treeSize));
      cons.push(performance.now() - t0);
      t0 = performance.now();
      await inTenant(db, tenantId, (trx) => sql`SELECT leaf_hash FROM audit_leaves WHERE tenant_id = ${tenantId} AND leaf_index = ${m}`.execute(trx));
      point.push(performance.now() - t0);
    }
    report({ name: `inclusion proof at ${(head.treeSize / 1e6).toFixed(2)} M, p50`, value: percentile(incl, 50), unit: 'ms', baseline: percentile(point, 50), baselineLabel: 'point read of one leaf', lowerIsBetter: true, note: `p99 ${percentile(incl, 99).toFixed(2)} ms` });
    report({ name: `consistency proof at ${(head.treeSize / 1e6).toFixed(2)} M, p50`, value: percentile(cons, 50), unit: 'ms', baseline: percentile(point, 50), baselineLabel: 'point read of one leaf', lowerIsBetter: true, note: `p99 ${percentile(cons, 99).toFixed(2)} ms` });
    const nodes = await sql<{ n: string }>`SELECT count(*)::text AS n FROM audit_tree_nodes WHERE tenant_id = ${tenantId}`.execute(owner);
    log(`stored subtree hashes: ${nodes.rows[0]!.n} for ${head.treeSize} leaves`);
  }
} finally {
  await owner.destroy();
  await bench.drop();
}
