/**
 * The audit tree on a real database (PGlite, or PostgreSQL with
 * GUICHET_TEST_DB=postgres): appends without locks, sealing in the order the
 * horizon rule gives, several sealers at once, proofs from the store, signed
 * heads, the witness file, and verification naming the first bad leaf for
 * every kind of tampering, including a rewrite re-signed with the real key,
 * which only the witness's copy reveals.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql, type Kysely } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEventInput } from '../../src/audit/events.ts';
import { appendAudit, appendAuditAlone, appendAuditMany, verifyChain } from '../../src/audit/log.ts';
import { consistencyProof, inclusionProof, rootHash, verifyConsistency, verifyInclusion } from '../../src/audit/merkle.ts';
import { SealRefusedError, Sealer } from '../../src/audit/sealer.ts';
import { TenantSigner } from '../../src/audit/signing.ts';
import { consistencyProofAt, inclusionProofAt, inclusionProofsAt, latestHead, leavesWithEntries, rootAt } from '../../src/audit/store.ts';
import { verifyTenant } from '../../src/audit/verify.ts';
import { decodeEntry, ENTRY_FIELDS, openCheckpoint } from '../../src/audit/verify-bundle.ts';
import { readWitnessFile, witnessRecordsFor } from '../../src/audit/witness.ts';
import { keyProviderFromSecret } from '../../src/crypto/keys.ts';
import type { Trx } from '../../src/db/connection.ts';
import type { DB } from '../../src/db/schema.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { createTestDatabase, createTestTenant, testDbKind, type TestDatabase } from '../helpers/db.ts';

const keys = keyProviderFromSecret(Buffer.alloc(32, 9));
const otherKeys = keyProviderFromSecret(Buffer.alloc(32, 10));
const silent = pino({ level: 'silent' });

const input = (n: number): AuditEventInput => ({
  action: 'waitlist.childFile.read',
  outcome: 'success',
  actorAccountId: randomUUID(),
  actorRoles: ['program_operator'],
  targetType: 'child',
  targetIds: [randomUUID()],
  familyIds: [randomUUID()],
  fields: ['first_name', 'birth_date'],
  purpose: 'test',
  ip: '192.0.2.1',
  userAgent: 'vitest « é »',
  requestId: `req-${n}`,
  details: { n, zeta: 'last key', alpha: true, ratio: 1.5, none: null },
});

let t: TestDatabase;
let dir: string;
let witnessFile: string;
let sealer: Sealer;

beforeAll(async () => {
  t = await createTestDatabase();
  dir = mkdtempSync(join(tmpdir(), 'guichet-audit-tree-'));
  witnessFile = join(dir, 'witness.jsonl');
  sealer = new Sealer(t.db, keys, silent, { witness: { file: witnessFile, url: null } });
});
afterAll(async () => {
  await t?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function append(tenantId: string, n: number, from = 1): Promise<void> {
  for (let i = from; i < from + n; i++) await inTenant(t.db, tenantId, (trx) => appendAudit(trx, tenantId, input(i), new Date()));
}

/** A tenant with `sizes` seals: e.g. [5, 12] gives heads of size 5 and 17. */
async function sealedTenant(sizes: number[]): Promise<string> {
  const { id } = await createTestTenant(t);
  let n = 1;
  for (const s of sizes) {
    await append(id, s, n);
    n += s;
    const r = await sealer.sealTenant(id);
    expect(r.sealed).toBe(s);
  }
  return id;
}

/** The `n` an entry's details carry (input(n)). */
const nOf = (entry: Buffer | null) => (decodeEntry(entry!).details as { n: number }).n;

/**
 * A v2 entry written out here from the event's fields, as the format is
 * documented (verify-bundle.ts), to hold the database's bytes to it.
 */
function encodeV2(fields: (string | string[] | null)[], types: string[], details: string): Buffer {
  const OIDS: Record<string, number> = { text: 25, int8: 20, uuid: 2950, timestamptz: 1184, 'text[]': 1009, 'uuid[]': 2951, jsonb: 3802 };
  const int32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeInt32BE(n);
    return b;
  };
  const int64 = (n: bigint) => {
    const b = Buffer.alloc(8);
    b.writeBigInt64BE(n);
    return b;
  };
  const withLength = (b: Buffer) => [int32(b.length), b];
  const value = (type: string, v: string | string[]): Buffer => {
    if (type === 'text') return Buffer.from(v as string, 'utf8');
    if (type === 'uuid') return Buffer.from((v as string).replace(/-/g, ''), 'hex');
    if (type === 'int8') return int64(BigInt(v as string));
    // microseconds since 2000-01-01 (the test's times are whole milliseconds)
    if (type === 'timestamptz') return int64((BigInt(Date.parse(v as string)) - 946_684_800_000n) * 1000n);
    if (type === 'jsonb') return Buffer.concat([Buffer.from([1]), Buffer.from(details, 'utf8')]);
    const items = v as string[];
    const element = type === 'text[]' ? 'text' : 'uuid';
    if (!items.length) return Buffer.concat([int32(0), int32(0), int32(OIDS[element]!)]);
    return Buffer.concat([int32(1), int32(0), int32(OIDS[element]!), int32(items.length), int32(1), ...items.flatMap((x) => withLength(value(element, x)))]);
  };
  return Buffer.concat([
    int32(fields.length),
    ...fields.flatMap((v, i) => {
      if (v === null) return [int32(OIDS[types[i]!]!), int32(-1)];
      const b = value(types[i]!, v);
      return [int32(OIDS[types[i]!]!), int32(b.length), b];
    }),
  ]);
}

async function leaves(tenantId: string) {
  return inTenant(t.db, tenantId, (trx) => leavesWithEntries(trx, tenantId, 0, 1_000_000));
}

async function witnessOf(tenantId: string) {
  return witnessRecordsFor(await readWitnessFile(witnessFile), tenantId);
}

async function verify(tenantId: string) {
  return verifyTenant(t.db, tenantId, { key: new TenantSigner(keys, tenantId).verifier, witness: await witnessOf(tenantId) });
}

/** Works as the owner with the append-only triggers of the audit tables off (ALTER TABLE locks them until commit). */
async function tamper(fn: (trx: Trx) => Promise<unknown>): Promise<void> {
  const tables = ['audit_events', 'audit_leaves', 'audit_tree_nodes', 'audit_tree_heads'];
  await t.ownerDb().transaction().execute(async (trx) => {
    for (const x of tables) await sql`ALTER TABLE ${sql.table(x)} DISABLE TRIGGER USER`.execute(trx);
    await fn(trx);
    for (const x of tables) await sql`ALTER TABLE ${sql.table(x)} ENABLE TRIGGER USER`.execute(trx);
  });
}

async function eventOfLeaf(tenantId: string, index: number): Promise<{ id: string; seq: string; ticket: string }> {
  const { rows } = await sql<{ id: string; seq: string; ticket: string }>`SELECT e.id, e.seq::text AS seq, e.ticket::text AS ticket FROM audit_leaves l JOIN audit_events e ON e.id = l.event_id
    WHERE l.tenant_id = ${tenantId} AND l.leaf_index = ${index}`.execute(t.ownerDb());
  return rows[0]!;
}

describe('appending and sealing', () => {
  it('each appending transaction gets a ticket from the database, shared by its events, which a writer cannot choose', async () => {
    const { id } = await createTestTenant(t);
    const [e1, e2] = await inTenant(t.db, id, async (trx) => [await appendAudit(trx, id, input(1), new Date()), await appendAudit(trx, id, input(2), new Date())]);
    const e3 = await inTenant(t.db, id, (trx) => appendAudit(trx, id, input(3), new Date()));
    const rows = await t.ownerDb().selectFrom('audit_events').select(['id', 'seq', 'ticket', 'prev_hash']).where('tenant_id', '=', id).execute();
    const of = (e: { id: string }) => rows.find((r) => r.id === e.id)!;
    expect(String(of(e1!).seq)).toBe(e1!.seq);
    expect(of(e1!).ticket).toBe(of(e2!).ticket);
    expect(BigInt(of(e3).ticket)).toBeGreaterThan(BigInt(of(e1!).ticket));
    expect(Number(of(e2!).seq)).toBeGreaterThan(Number(of(e1!).seq));
    expect(of(e1!).prev_hash).toBeNull();
    // A row claiming an old ticket would hide behind the sealer's cutoff: the column is not the writer's.
    await expect(
      inTenant(t.db, id, (trx) =>
        sql`INSERT INTO audit_events (tenant_id, id, occurred_at, action, outcome, ticket) VALUES (${id}, ${randomUUID()}, now(), 'demo.seed', 'success', 3)`.execute(trx),
      ),
    ).rejects.toThrow(/permission denied/);
  });

  it('seals waiting events into signed heads, one leaf per event, in order, and verifies', async () => {
    const id = await sealedTenant([5, 3]);
    // Several events in one transaction, in one statement.
    await inTenant(t.db, id, (trx) => appendAuditMany(trx, id, [input(9), input(10), input(11)], new Date()));
    expect((await sealer.sealTenant(id)).sealed).toBe(3);
    expect((await sealer.sealTenant(id)).sealed).toBe(0);
    const ls = await leaves(id);
    expect(ls.map((l) => l.index)).toEqual([...Array(11).keys()]);
    expect(ls.map((l) => nOf(l.entry))).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    const head = await inTenant(t.db, id, (trx) => latestHead(trx, id));
    expect(head!.treeSize).toBe(11);
    expect(head!.rootHash).toEqual(rootHash(ls.map((l) => l.leafHash)));
    const cp = openCheckpoint(head!.checkpoint, new TenantSigner(keys, id).verifier);
    expect(cp).toMatchObject({ origin: `guichet.audit/${id}`, size: 11 });
    const r = await verify(id);
    expect(r).toMatchObject({ ok: true, events: 11, treeSize: 11, pending: 0, heads: 3, signaturesChecked: true, witness: { records: 3, latestSize: 11 } });
    expect(await verifyChain(t.db, id)).toEqual({ tenantId: id, ok: true, events: 11 });
  });

  it('an entry is the stored event, field for field, byte for byte as documented, time in UTC to the microsecond', async () => {
    const { id } = await createTestTenant(t);
    const e = await inTenant(t.db, id, (trx) => appendAudit(trx, id, input(1), new Date('2025-03-04T05:06:07.089Z')));
    await sealer.sealTenant(id);
    const [leaf] = await leaves(id);
    const values = [
      'guichet.audit/v2', id, e.seq, e.id, '2025-03-04T05:06:07.089000Z', e.action, e.outcome, e.actor_account_id, e.actor_roles, null, 'child',
      e.target_ids, e.family_ids, e.fields, 'test', '192.0.2.1', 'vitest « é »', 'req-1',
    ] as (string | string[] | null)[];
    expect(decodeEntry(leaf!.entry!)).toEqual(Object.fromEntries(ENTRY_FIELDS.map((f, i) => [f, i < values.length ? values[i] : e.details])));
    // jsonb's own text: keys by length then bytes, ", " and ": " between
    const types = ['text', 'uuid', 'int8', 'uuid', 'timestamptz', 'text', 'text', 'uuid', 'text[]', 'uuid', 'text', 'text[]', 'uuid[]', 'text[]', 'text', 'text', 'text', 'text', 'jsonb'];
    const details = '{"n": 1, "none": null, "zeta": "last key", "alpha": true, "ratio": 1.5}';
    expect(leaf!.entry!.toString('hex')).toBe(encodeV2([...values, ''], types, details).toString('hex'));
    // an empty list, and a null
    const bare = await inTenant(t.db, id, (trx) => appendAudit(trx, id, { action: 'identity.signin', outcome: 'failure', details: {} }, new Date('2025-03-04T05:06:07Z')));
    await sealer.sealTenant(id);
    const second = (await leaves(id))[1]!;
    expect(decodeEntry(second.entry!)).toMatchObject({ seq: bare.seq, actor_roles: [], target_ids: [], family_ids: [], fields: [], target_type: null, ip: null, details: {} });
    expect(second.entry!.toString('hex')).toBe(
      encodeV2(['guichet.audit/v2', id, bare.seq, bare.id, '2025-03-04T05:06:07.000000Z', 'identity.signin', 'failure', null, [], null, null, [], [], [], null, null, null, null, ''], types, '{}').toString('hex'),
    );
  });

  it('events written in format 1 keep it: a log of both formats verifies, and an event whose format is changed is a changed event', async () => {
    const { id } = await createTestTenant(t);
    await append(id, 4);
    // the first two as events written before migration 0051 were
    const firstTwo = (await t.ownerDb().selectFrom('audit_events').select('id').where('tenant_id', '=', id).orderBy('seq').limit(2).execute()).map((r) => r.id);
    await tamper((trx) => sql`UPDATE audit_events SET entry_format = 1 WHERE id IN (${sql.join(firstTwo)})`.execute(trx));
    await sealer.sealTenant(id);
    const ls = await leaves(id);
    expect(ls.map((l) => decodeEntry(l.entry!).format)).toEqual(['guichet.audit/v1', 'guichet.audit/v1', 'guichet.audit/v2', 'guichet.audit/v2']);
    expect(ls[0]!.entry!.toString('utf8')).toMatch(/^\["guichet\.audit\/v1", /);
    // the same fields either way
    const { format: _f1, ...v1 } = decodeEntry(ls[1]!.entry!);
    const { format: _f2, ...v2 } = decodeEntry(ls[2]!.entry!);
    expect(Object.keys(v1)).toEqual(Object.keys(v2));
    expect(await verify(id)).toMatchObject({ ok: true, treeSize: 4 });
    const e = await eventOfLeaf(id, 2);
    await tamper((trx) => sql`UPDATE audit_events SET entry_format = 1 WHERE id = ${e.id}`.execute(trx));
    expect((await verify(id)).firstBad).toMatchObject({ leafIndex: 2, eventId: e.id });
  });

  it('a seal that fails half-way (leaves written, head not yet signed) leaves nothing behind, and the next one takes it all', async () => {
    const id = await sealedTenant([3]);
    await append(id, 4, 10);
    const broken = new Sealer(t.db, keys, silent, {
      clock: () => {
        throw new Error('crashed while signing');
      },
    });
    await expect(broken.sealTenant(id)).rejects.toThrow('crashed while signing');
    expect((await leaves(id)).length).toBe(3);
    expect((await sealer.sealTenant(id)).sealed).toBe(4);
    expect(await verify(id)).toMatchObject({ ok: true, treeSize: 7 });
  });

  it('a tenant with no event verifies, with nothing to seal', async () => {
    const { id } = await createTestTenant(t);
    expect(await sealer.sealTenant(id)).toMatchObject({ sealed: 0, head: null });
    expect(await verify(id)).toMatchObject({ ok: true, events: 0, treeSize: 0, heads: 0 });
  });

  it('a rolled-back event never reaches the tree', async () => {
    const { id } = await createTestTenant(t);
    await expect(
      inTenant(t.db, id, async (trx) => {
        await appendAudit(trx, id, input(1), new Date());
        throw new Error('the work failed');
      }),
    ).rejects.toThrow('the work failed');
    await append(id, 1, 2);
    await sealer.sealTenant(id);
    expect((await leaves(id)).map((l) => nOf(l.entry))).toEqual([2]);
  });

  it('many concurrent writers and two sealers: every event in the tree exactly once, heads growing, all consistent', async () => {
    const { id } = await createTestTenant(t);
    const other = new Sealer(t.db, keys, silent);
    let stop = false;
    const sealing = [sealer, other].map(async (s) => {
      const sizes: number[] = [];
      while (!stop) {
        const r = await s.sealTenant(id);
        if (r.head) sizes.push(r.head.treeSize);
        await new Promise((res) => setTimeout(res, 5));
      }
      return sizes;
    });
    const writers = Array.from({ length: 12 }, (_, w) =>
      (async () => {
        for (let i = 0; i < 25; i++) {
          if (i % 5 === 4) await inTenant(t.db, id, (trx) => appendAuditMany(trx, id, [input(w * 1000 + i), input(w * 1000 + i + 500)], new Date()));
          else await appendAuditAlone(t.db, id, input(w * 1000 + i), new Date());
        }
      })(),
    );
    await Promise.all(writers);
    stop = true;
    const sizes = await Promise.all(sealing);
    await sealer.sealTenant(id);
    const ls = await leaves(id);
    expect(ls.length).toBe(12 * 30);
    expect(new Set(ls.map((l) => l.eventId)).size).toBe(ls.length);
    // Sizes signed by either sealer interleave into one growing sequence.
    const all = [...sizes[0]!, ...sizes[1]!].sort((a, b) => a - b);
    expect(new Set(all).size).toBe(all.length);
    const r = await verifyTenant(t.db, id, { key: new TenantSigner(keys, id).verifier });
    expect(r).toMatchObject({ ok: true, events: 360, treeSize: 360, pending: 0 });
  });

  it.runIf(testDbKind() === 'postgres')("another tenant's appender and a transaction that writes no audit event never hold a tenant back", async () => {
    const [{ id }, other] = [await createTestTenant(t), await createTestTenant(t)];
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let ready = 0;
    let bothReady!: () => void;
    const started = new Promise<void>((r) => (bothReady = r));
    const open = [
      // Another tenant's transaction, its audit event written, still open.
      inTenant(t.db, other.id, async (trx) => {
        await appendAudit(trx, other.id, input(1), new Date());
        if (++ready === 2) bothReady();
        await held;
      }),
      // A transaction of this tenant that wrote something else (it has a transaction id), still open.
      inTenant(t.db, id, async (trx) => {
        await sql`SELECT pg_current_xact_id()`.execute(trx);
        if (++ready === 2) bothReady();
        await held;
      }),
    ];
    await started;
    await append(id, 2, 1);
    try {
      expect((await sealer.sealTenant(id)).sealed).toBe(2);
      expect((await sealer.sealTenant(other.id)).sealed).toBe(0);
    } finally {
      release();
      await Promise.all(open);
    }
    expect((await sealer.sealTenant(other.id)).sealed).toBe(1);
  });

  it.runIf(testDbKind() === 'postgres')('appends take no lock, and an event waits behind a transaction still open, then comes first', async () => {
    const { id } = await createTestTenant(t);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let inserted!: () => void;
    const didInsert = new Promise<void>((r) => (inserted = r));
    // A: appends, then stays open.
    const a = inTenant(t.db, id, async (trx) => {
      await appendAudit(trx, id, input(1), new Date());
      inserted();
      await held;
    });
    await didInsert;
    // B: appends and commits while A is open: no waiting on A.
    const started = Date.now();
    await appendAuditAlone(t.db, id, input(2), new Date());
    expect(Date.now() - started).toBeLessThan(2000);
    // B committed, but A, which began before, is still running: nothing may be sealed yet.
    expect((await sealer.sealTenant(id)).sealed).toBe(0);
    release();
    await a;
    expect((await sealer.sealTenant(id)).sealed).toBe(2);
    // A's transaction id is the smaller: its event comes first, though it committed second.
    expect((await leaves(id)).map((l) => nOf(l.entry))).toEqual([1, 2]);
  });
});

describe('proofs from the store', () => {
  it('inclusion and consistency proofs equal the in-memory ones and verify, for every leaf and head of a 300-leaf tree', async () => {
    const id = await sealedTenant([1, 2, 13, 16, 17, 64, 187]);
    const hs = (await leaves(id)).map((l) => l.leafHash);
    expect(hs.length).toBe(300);
    await inTenant(t.db, id, async (trx) => {
      const heads = [1, 3, 16, 32, 49, 113, 300];
      for (const n of heads) expect(await rootAt(trx, id, n)).toEqual(rootHash(hs.slice(0, n)));
      const batch = await inclusionProofsAt(trx, id, [...hs.keys()], 300);
      for (let m = 0; m < 300; m += 7) {
        const p = await inclusionProofAt(trx, id, m, 300);
        expect(p).toEqual(inclusionProof(m, hs));
        expect(batch[m]).toEqual(p);
        expect(verifyInclusion(m, 300, hs[m]!, p, rootHash(hs))).toBe(true);
      }
      for (let i = 0; i < heads.length; i++) {
        for (let j = i; j < heads.length; j++) {
          const p = await consistencyProofAt(trx, id, heads[i]!, heads[j]!);
          expect(p).toEqual(consistencyProof(heads[i]!, hs.slice(0, heads[j]!)));
          expect(verifyConsistency(heads[i]!, heads[j]!, p, rootHash(hs.slice(0, heads[i]!)), rootHash(hs.slice(0, heads[j]!)))).toBe(true);
        }
      }
    });
    // Stored interior hashes: one per complete 16-, 256-leaf subtree.
    const nodes = await t.ownerDb().selectFrom('audit_tree_nodes').select(['level']).where('tenant_id', '=', id).execute();
    expect(nodes.filter((n) => n.level === 4).length).toBe(18);
    expect(nodes.filter((n) => n.level === 8).length).toBe(1);
  });
});

describe('the witness file', () => {
  it('holds every head, signed, one line each, and a restarted sealer hands it the latest head it missed', async () => {
    const id = await sealedTenant([2, 2]);
    const records = await witnessOf(id);
    expect(records.map((r) => r.tree_size)).toEqual([2, 4]);
    const key = new TenantSigner(keys, id).verifier;
    for (const r of records) expect(openCheckpoint(r.checkpoint, key).size).toBe(r.tree_size);
    // A seal whose witnessing was lost (a crash between commit and append): sealed by a sealer without the witness.
    await append(id, 3, 10);
    await new Sealer(t.db, keys, silent).sealTenant(id);
    expect((await witnessOf(id)).map((r) => r.tree_size)).toEqual([2, 4]);
    const restarted = new Sealer(t.db, keys, silent, { witness: { file: witnessFile, url: null }, intervalMs: 60_000 });
    restarted.start();
    await restarted.stop();
    expect((await witnessOf(id)).map((r) => r.tree_size)).toEqual([2, 4, 7]);
    expect(readFileSync(witnessFile, 'utf8').endsWith('\n')).toBe(true);
  });
});

describe('verification names the first bad leaf', () => {
  it('an event changed', async () => {
    const id = await sealedTenant([6, 6]);
    const e = await eventOfLeaf(id, 7);
    await tamper((trx) => sql`UPDATE audit_events SET outcome = 'denied' WHERE id = ${e.id}`.execute(trx));
    const r = await verify(id);
    expect(r.ok).toBe(false);
    expect(r.firstBad).toMatchObject({ leafIndex: 7, eventId: e.id, eventSeq: e.seq });
    expect(r.firstBad!.problem).toMatch(/does not match the leaf it was sealed as \(changed\)/);
  });

  it('a detail inside the jsonb changed, and the time moved by a microsecond', async () => {
    const id = await sealedTenant([4]);
    const e = await eventOfLeaf(id, 2);
    await tamper((trx) => sql`UPDATE audit_events SET details = jsonb_set(details, '{n}', '99') WHERE id = ${e.id}`.execute(trx));
    expect((await verify(id)).firstBad).toMatchObject({ leafIndex: 2 });
    const id2 = await sealedTenant([4]);
    const e2 = await eventOfLeaf(id2, 1);
    await tamper((trx) => sql`UPDATE audit_events SET occurred_at = occurred_at + interval '1 microsecond' WHERE id = ${e2.id}`.execute(trx));
    expect((await verify(id2)).firstBad).toMatchObject({ leafIndex: 1 });
  });

  it('an event removed', async () => {
    const id = await sealedTenant([5, 5]);
    const e = await eventOfLeaf(id, 3);
    await tamper((trx) => sql`DELETE FROM audit_events WHERE id = ${e.id}`.execute(trx));
    const r = await verify(id);
    expect(r.firstBad).toMatchObject({ leafIndex: 3, eventId: e.id });
    expect(r.firstBad!.problem).toMatch(/missing from audit_events \(removed\)/);
  });

  it('events reordered: two leaves swapped with their hashes', async () => {
    const id = await sealedTenant([8]);
    const [a, b] = [await eventOfLeaf(id, 2), await eventOfLeaf(id, 5)];
    const hashes = await t.ownerDb().selectFrom('audit_leaves').select(['leaf_index', 'leaf_hash']).where('tenant_id', '=', id).where('leaf_index', 'in', ['2', '5']).orderBy('leaf_index').execute();
    await tamper(async (trx) => {
      await sql`UPDATE audit_leaves SET event_id = ${randomUUID()} WHERE tenant_id = ${id} AND leaf_index = 5`.execute(trx);
      await sql`UPDATE audit_leaves SET event_id = ${b.id}, leaf_hash = ${hashes[1]!.leaf_hash} WHERE tenant_id = ${id} AND leaf_index = 2`.execute(trx);
      await sql`UPDATE audit_leaves SET event_id = ${a.id}, leaf_hash = ${hashes[0]!.leaf_hash} WHERE tenant_id = ${id} AND leaf_index = 5`.execute(trx);
    });
    const r = await verify(id);
    expect(r.firstBad).toMatchObject({ leafIndex: 2, eventId: b.id });
    expect(r.firstBad!.problem).toMatch(/leaves 2 and 5 are out of order: the event of leaf 5 sorts here \(reordered\)/);
  });

  it('events reordered: two events swapped their numbers', async () => {
    const id = await sealedTenant([6]);
    const [a, b] = [await eventOfLeaf(id, 1), await eventOfLeaf(id, 4)];
    await tamper(async (trx) => {
      await sql`UPDATE audit_events SET seq = 9000000000000001 WHERE id = ${a.id}`.execute(trx);
      await sql`UPDATE audit_events SET seq = ${a.seq}::bigint WHERE id = ${b.id}`.execute(trx);
      await sql`UPDATE audit_events SET seq = ${b.seq}::bigint WHERE id = ${a.id}`.execute(trx);
    });
    expect((await verify(id)).firstBad).toMatchObject({ leafIndex: 1, eventId: a.id });
  });

  it('an event inserted behind the sealer (an old transaction id)', async () => {
    const id = await sealedTenant([6, 4]);
    const e = await eventOfLeaf(id, 3);
    const forged = randomUUID();
    await tamper((trx) =>
      sql`INSERT INTO audit_events (tenant_id, seq, id, occurred_at, action, outcome, ticket)
          VALUES (${id}, 9000000000000000, ${forged}, now(), 'waitlist.childFile.read', 'success', ${e.ticket}::bigint)`.execute(trx),
    );
    const r = await verify(id);
    expect(r.firstBad).toMatchObject({ leafIndex: 4, eventId: forged });
    expect(r.firstBad!.problem).toMatch(/not in the tree.*\(inserted\)/);
  });

  it('the events truncated', async () => {
    const id = await sealedTenant([3, 3]);
    await tamper((trx) => sql`DELETE FROM audit_events WHERE tenant_id = ${id}`.execute(trx));
    const r = await verify(id);
    expect(r.firstBad).toMatchObject({ leafIndex: 0 });
    expect(r.firstBad!.problem).toMatch(/removed/);
  });

  it('the events and the whole tree truncated: the witness still holds the heads', async () => {
    const id = await sealedTenant([3, 3]);
    await tamper(async (trx) => {
      for (const x of ['audit_events', 'audit_leaves', 'audit_tree_nodes', 'audit_tree_heads']) await sql`DELETE FROM ${sql.table(x)} WHERE tenant_id = ${id}`.execute(trx);
    });
    const r = await verify(id);
    expect(r.firstBad).toMatchObject({ leafIndex: 0 });
    expect(r.firstBad!.problem).toMatch(/witness holds a head of size 6 but the database's tree has only 0 leaves/);
  });

  it('the last leaves removed with their events: the signed head still covers them', async () => {
    const id = await sealedTenant([4, 3]);
    await tamper(async (trx) => {
      await sql`DELETE FROM audit_events WHERE id IN (SELECT event_id FROM audit_leaves WHERE tenant_id = ${id} AND leaf_index >= 5)`.execute(trx);
      await sql`DELETE FROM audit_leaves WHERE tenant_id = ${id} AND leaf_index >= 5`.execute(trx);
    });
    const r = await verifyTenant(t.db, id, { key: new TenantSigner(keys, id).verifier });
    expect(r.firstBad).toMatchObject({ leafIndex: 5 });
    expect(r.firstBad!.problem).toMatch(/covers 7 leaves but the tree has only 5/);
  });

  it('a head replaced (its root changed)', async () => {
    const id = await sealedTenant([4, 4, 4]);
    await tamper((trx) => sql`UPDATE audit_tree_heads SET root_hash = ${Buffer.alloc(32, 1)} WHERE tenant_id = ${id} AND tree_size = 8`.execute(trx));
    const r = await verify(id);
    expect(r.firstBad).toMatchObject({ leafIndex: 4 });
    expect(r.firstBad!.problem).toMatch(/signed head of size 8 .*does not check: its columns differ from its signed checkpoint/);
    // Without the key (verifyChain), the recomputed root still gives it away.
    expect((await verifyChain(t.db, id)).firstBad?.problem).toMatch(/signed head of size 8 does not match the tree recomputed from leaves 4\.\.7 \(head replaced\?\)/);
  });

  it('a head replaced by one validly signed over another root', async () => {
    const id = await sealedTenant([4, 4]);
    const head = await inTenant(t.db, id, (trx) => latestHead(trx, id));
    const forged = new TenantSigner(keys, id).sign(8, Buffer.alloc(32, 2), head!.signedAt);
    await tamper((trx) => sql`UPDATE audit_tree_heads SET root_hash = ${Buffer.alloc(32, 2)}, checkpoint = ${forged} WHERE tenant_id = ${id} AND tree_size = 8`.execute(trx));
    const r = await verify(id);
    expect(r.firstBad).toMatchObject({ leafIndex: 4 });
    expect(r.firstBad!.problem).toMatch(/does not match the tree recomputed from leaves 4\.\.7/);
  });

  it('a head re-signed with another key', async () => {
    const id = await sealedTenant([3, 3]);
    const head = await inTenant(t.db, id, (trx) => latestHead(trx, id));
    const resigned = new TenantSigner(otherKeys, id).sign(6, head!.rootHash, head!.signedAt);
    await tamper((trx) => sql`UPDATE audit_tree_heads SET checkpoint = ${resigned} WHERE tenant_id = ${id} AND tree_size = 6`.execute(trx));
    const r = await verify(id);
    expect(r.firstBad).toMatchObject({ leafIndex: 3 });
    expect(r.firstBad!.problem).toMatch(/size 6 .*not signed by the trusted key .*signed by an unknown key/);
    // And the sealer will not lend its signature to that tree.
    await append(id, 1, 50);
    await expect(sealer.sealTenant(id)).rejects.toThrow(SealRefusedError);
  });

  it('a stored subtree hash changed: proofs would lie, verification says where', async () => {
    const id = await sealedTenant([40]);
    await tamper((trx) => sql`UPDATE audit_tree_nodes SET hash = ${Buffer.alloc(32, 3)} WHERE tenant_id = ${id} AND level = 4 AND node_index = 1`.execute(trx));
    const r = await verify(id);
    expect(r.firstBad).toMatchObject({ leafIndex: 0 });
    expect(r.firstBad!.problem).toMatch(/stored hash of leaves 16\.\.31 differs/);
  });

  it('the same report whatever the page size and the number of readers, the problem at a page boundary or not', async () => {
    const cases: [string, (id: string) => Promise<unknown>][] = [
      ['intact', async () => {}],
      ['changed', async (id) => {
        const e = await eventOfLeaf(id, 8);
        await tamper((trx) => sql`UPDATE audit_events SET outcome = 'denied' WHERE id = ${e.id}`.execute(trx));
      }],
      ['removed', async (id) => {
        const e = await eventOfLeaf(id, 6);
        await tamper((trx) => sql`DELETE FROM audit_events WHERE id = ${e.id}`.execute(trx));
      }],
      ['inserted', async (id) => {
        const e = await eventOfLeaf(id, 3);
        await tamper((trx) =>
          sql`INSERT INTO audit_events (tenant_id, seq, id, occurred_at, action, outcome, ticket)
              VALUES (${id}, 9000000000000000, ${randomUUID()}, now(), 'waitlist.childFile.read', 'success', ${e.ticket}::bigint)`.execute(trx),
        );
      }],
      // One leaf only: a page with no leaf at all ends the tree, so a wider gap is reported by the page size.
      ['leaf gone', async (id) => tamper((trx) => sql`DELETE FROM audit_leaves WHERE tenant_id = ${id} AND leaf_index = 9`.execute(trx))],
      ['leaf hash', async (id) => tamper((trx) => sql`UPDATE audit_leaves SET leaf_hash = ${Buffer.alloc(32, 5)} WHERE tenant_id = ${id} AND leaf_index = 9`.execute(trx))],
    ];
    for (const [name, spoil] of cases) {
      const id = await sealedTenant([7, 5]);
      await spoil(id);
      const key = new TenantSigner(keys, id).verifier;
      const witness = await witnessOf(id);
      const whole = await verifyTenant(t.db, id, { key, witness, readers: 1 });
      expect(whole.ok, name).toBe(name === 'intact');
      for (const pageSize of [2, 3, 4, 8]) {
        for (const readers of testDbKind() === 'postgres' ? [1, 2] : [1]) {
          expect(await verifyTenant(t.db, id, { key, witness, pageSize, readers }), `${name}, pages of ${pageSize}, ${readers} reader(s)`).toEqual(whole);
        }
      }
    }
  });

  it('the whole history rewritten and re-signed with the real key: only the witness tells', async () => {
    const id = await sealedTenant([5, 5]);
    const e = await eventOfLeaf(id, 2);
    await tamper(async (trx) => {
      await sql`UPDATE audit_events SET outcome = 'failure' WHERE id = ${e.id}`.execute(trx);
      for (const x of ['audit_leaves', 'audit_tree_nodes', 'audit_tree_heads']) await sql`DELETE FROM ${sql.table(x)} WHERE tenant_id = ${id}`.execute(trx);
    });
    // The attacker's sealer, with the key but without the witness.
    await new Sealer(t.db, keys, silent).sealTenant(id);
    const alone = await verifyTenant(t.db, id, { key: new TenantSigner(keys, id).verifier });
    expect(alone.ok).toBe(true);
    const r = await verify(id);
    expect(r.ok).toBe(false);
    expect(r.firstBad).toMatchObject({ leafIndex: 0 });
    expect(r.firstBad!.problem).toMatch(/witness's head of size 5 disagrees with the tree recomputed from the database: history rewritten within leaves 0\.\.4/);
  });
});

describe('what the application role may do to the tree', () => {
  it('insert and read only: no update, delete or truncate, even as the owner while the triggers are on', async () => {
    const id = await sealedTenant([20]);
    const refused = /permission denied|append-only/;
    for (const table of ['audit_leaves', 'audit_tree_nodes', 'audit_tree_heads'] as const) {
      await expect(inTenant(t.db, id, (trx) => sql`UPDATE ${sql.table(table)} SET tenant_id = tenant_id WHERE tenant_id = ${id}`.execute(trx)), table).rejects.toThrow(refused);
      await expect(inTenant(t.db, id, (trx) => sql`DELETE FROM ${sql.table(table)} WHERE tenant_id = ${id}`.execute(trx)), table).rejects.toThrow(refused);
      await expect(inTenant(t.db, id, (trx) => sql`TRUNCATE ${sql.table(table)}`.execute(trx)), table).rejects.toThrow(refused);
      await expect(sql`DELETE FROM ${sql.table(table)} WHERE tenant_id = ${id}`.execute(t.ownerDb()), table).rejects.toThrow(/append-only \(DELETE refused\)/);
    }
    // The old chain head cannot be moved any more.
    await expect(inTenant(t.db, id, (trx) => sql`UPDATE audit_heads SET seq = 99 WHERE tenant_id = ${id}`.execute(trx))).rejects.toThrow(/permission denied/);
    expect((await verify(id)).ok).toBe(true);
  });

  it("another tenant's tree is invisible and unwritable", async () => {
    const a = await sealedTenant([2]);
    const b = await sealedTenant([2]);
    const seen = await inTenant(t.db, a, (trx) => (trx as unknown as Kysely<DB>).selectFrom('audit_leaves').select('tenant_id').execute());
    expect(new Set(seen.map((r) => r.tenant_id))).toEqual(new Set([a]));
    await expect(
      inTenant(t.db, a, (trx) => sql`INSERT INTO audit_tree_heads (tenant_id, tree_size, root_hash, signed_at, key_id, checkpoint, last_ticket, last_seq)
        VALUES (${b}, 99, ${Buffer.alloc(32)}, now(), 'x', 'x', 1, 1)`.execute(trx)),
    ).rejects.toThrow(/row-level security/);
  });
});
