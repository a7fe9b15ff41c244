/**
 * The audit log: append-only for the application and even for the owner while
 * the triggers are on, stamped by the database, sealed into the tenant's
 * Merkle tree, and any tampering by someone who can bypass the triggers shows
 * in verifyChain at the right event. (test/audit/ covers the tree, its signed
 * heads, the witness and every kind of tampering in detail.)
 */
import { randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEventInput } from '../../src/audit/events.ts';
import { appendAudit, appendAuditAlone, verifyChain } from '../../src/audit/log.ts';
import { Sealer } from '../../src/audit/sealer.ts';
import { keyProviderFromSecret } from '../../src/crypto/keys.ts';
import type { Trx } from '../../src/db/connection.ts';
import type { DB } from '../../src/db/schema.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { createTestDatabase, createTestTenant, type TestDatabase } from '../helpers/db.ts';

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
  userAgent: 'vitest',
  requestId: `req-${n}`,
  details: { n, zeta: 'last key', alpha: true },
});

let sealer: Sealer;

/** A fresh tenant with `n` events appended one transaction each, sealed. */
async function tenantWithEvents(t: TestDatabase, n: number): Promise<string> {
  const { id } = await createTestTenant(t);
  for (let i = 1; i <= n; i++) {
    await inTenant(t.db, id, (trx) => appendAudit(trx, id, input(i), new Date()));
  }
  await sealer.sealTenant(id);
  return id;
}

/**
 * Works on audit_events as the owner with the append-only triggers switched
 * off. ALTER TABLE is transactional and takes an exclusive lock until commit,
 * so no other test, even in a parallel file on the same database, ever sees
 * the triggers disabled; they are on again when the transaction ends.
 */
async function tamper(owner: Kysely<DB>, fn: (trx: Trx) => Promise<void>): Promise<void> {
  await owner.transaction().execute(async (trx) => {
    await sql`ALTER TABLE audit_events DISABLE TRIGGER USER`.execute(trx);
    await fn(trx);
    await sql`ALTER TABLE audit_events ENABLE TRIGGER USER`.execute(trx);
  });
}

/** The events of a tenant in the order the tree holds them (the `n` each was appended with). */
async function order(owner: Kysely<DB>, tenantId: string): Promise<number[]> {
  const { rows } = await sql<{ n: number }>`SELECT (e.details->>'n')::int AS n FROM audit_leaves l JOIN audit_events e ON e.id = l.event_id
    WHERE l.tenant_id = ${tenantId} ORDER BY l.leaf_index`.execute(owner);
  return rows.map((r) => r.n);
}

/** The seq of the event at leaf `index`. */
async function seqAt(owner: Kysely<DB>, tenantId: string, index: number): Promise<string> {
  const { rows } = await sql<{ seq: string }>`SELECT e.seq::text AS seq FROM audit_leaves l JOIN audit_events e ON e.id = l.event_id
    WHERE l.tenant_id = ${tenantId} AND l.leaf_index = ${index}`.execute(owner);
  return rows[0]!.seq;
}

async function triggersEnabled(owner: Kysely<DB>): Promise<string[]> {
  const { rows } = await sql<{ tgname: string; tgenabled: string }>`
    SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'audit_events'::regclass AND NOT tgisinternal ORDER BY tgname`.execute(owner);
  return rows.map((r) => `${r.tgname}:${r.tgenabled}`);
}

describe('audit log', () => {
  let t: TestDatabase;

  beforeAll(async () => {
    t = await createTestDatabase();
    sealer = new Sealer(t.db, keyProviderFromSecret(Buffer.alloc(32, 5)), pino({ level: 'silent' }));
  });
  afterAll(async () => {
    await t?.close();
  });

  it('appendAudit gives each event a number; once sealed, the tree holds them in order and verifyChain accepts it', async () => {
    const tenantId = await tenantWithEvents(t, 5);
    // Several events in one transaction, too.
    await inTenant(t.db, tenantId, async (trx) => {
      for (let i = 6; i <= 8; i++) await appendAudit(trx, tenantId, input(i), new Date());
    });
    // Waiting for the sealer: counted, not yet in the tree.
    expect(await verifyChain(t.db, tenantId)).toEqual({ tenantId, ok: true, events: 8 });
    await sealer.sealTenant(tenantId);
    expect(await order(t.ownerDb(), tenantId)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(await verifyChain(t.db, tenantId)).toEqual({ tenantId, ok: true, events: 8 });
    // Paging through the tree gives the same answer.
    expect(await verifyChain(t.db, tenantId, 3)).toEqual({ tenantId, ok: true, events: 8 });
  });

  it('an event rolled back with its transaction never reaches the tree', async () => {
    const tenantId = await tenantWithEvents(t, 2);
    await expect(
      inTenant(t.db, tenantId, async (trx) => {
        await appendAudit(trx, tenantId, input(3), new Date());
        throw new Error('the work failed');
      }),
    ).rejects.toThrow('the work failed');
    await inTenant(t.db, tenantId, (trx) => appendAudit(trx, tenantId, input(4), new Date()));
    await sealer.sealTenant(tenantId);
    expect(await order(t.ownerDb(), tenantId)).toEqual([1, 2, 4]);
    expect((await verifyChain(t.db, tenantId)).ok).toBe(true);
  });

  it('a tenant with no event verifies', async () => {
    const { id } = await createTestTenant(t);
    expect(await verifyChain(t.db, id)).toEqual({ tenantId: id, ok: true, events: 0 });
  });

  it('as guichet_app, UPDATE, DELETE and TRUNCATE on audit_events are refused', async () => {
    const tenantId = await tenantWithEvents(t, 3);
    const refused = /permission denied|append-only/;
    await expect(inTenant(t.db, tenantId, (trx) => sql`UPDATE audit_events SET action = 'x' WHERE tenant_id = ${tenantId}`.execute(trx))).rejects.toThrow(refused);
    await expect(inTenant(t.db, tenantId, (trx) => sql`DELETE FROM audit_events WHERE tenant_id = ${tenantId}`.execute(trx))).rejects.toThrow(refused);
    await expect(inTenant(t.db, tenantId, (trx) => sql`TRUNCATE audit_events`.execute(trx))).rejects.toThrow(refused);
    expect(await order(t.ownerDb(), tenantId)).toEqual([1, 2, 3]);
    expect((await verifyChain(t.db, tenantId)).ok).toBe(true);
  });

  it('even the owner is refused UPDATE, DELETE and TRUNCATE while the triggers are on', async () => {
    const tenantId = await tenantWithEvents(t, 2);
    const o = t.ownerDb();
    await expect(sql`UPDATE audit_events SET action = 'x' WHERE tenant_id = ${tenantId}`.execute(o)).rejects.toThrow(/append-only \(UPDATE refused\)/);
    await expect(sql`DELETE FROM audit_events WHERE tenant_id = ${tenantId}`.execute(o)).rejects.toThrow(/append-only \(DELETE refused\)/);
    // TRUNCATE is tried in a transaction that is rolled back whatever happens,
    // so a regression here could not wipe the other test files' events.
    await expect(
      o.transaction().execute(async (trx) => {
        await sql`TRUNCATE audit_events`.execute(trx);
        throw new Error('TRUNCATE was allowed');
      }),
    ).rejects.toThrow(/append-only \(TRUNCATE refused\)/);
    expect(await order(o, tenantId)).toEqual([1, 2]);
  });

  it('events are the transaction tenant’s only, and a tenant whose log is sealed cannot be deleted (no per-event key to tenants)', async () => {
    const tenantId = await tenantWithEvents(t, 1);
    const other = await createTestTenant(t);
    // Row-level security's WITH CHECK, not a foreign key, ties an event to the transaction's tenant.
    await expect(inTenant(t.db, tenantId, (trx) => appendAudit(trx, other.id, input(2), new Date()))).rejects.toThrow(/row-level security/);
    await sealer.sealTenant(tenantId);
    // The owner, even with nothing else of the tenant left but its log (its pre-0004 chain head removed first),
    // is stopped by the signed heads' key.
    await expect(
      t.ownerDb().transaction().execute(async (trx) => {
        await sql`DELETE FROM audit_heads WHERE tenant_id = ${tenantId}`.execute(trx);
        await sql`DELETE FROM tenants WHERE id = ${tenantId}`.execute(trx);
        throw new Error('the tenant was deleted');
      }),
    ).rejects.toThrow(/foreign key constraint "audit_tree_heads_tenant_id_fkey"/);
    expect(await order(t.ownerDb(), tenantId)).toEqual([1]);
  });

  describe('tampering with the triggers off is detected', () => {
    afterAll(async () => {
      // The tamper() transactions switch them back on; make sure.
      expect(await triggersEnabled(t.ownerDb())).toEqual(['audit_event_families_add:O', 'audit_events_no_truncate:O', 'audit_events_no_update:O']);
    });

    it('a changed field', async () => {
      const tenantId = await tenantWithEvents(t, 5);
      const seq = await seqAt(t.ownerDb(), tenantId, 2);
      await tamper(t.ownerDb(), async (trx) => {
        await sql`UPDATE audit_events SET outcome = 'denied' WHERE tenant_id = ${tenantId} AND seq = ${seq}::bigint`.execute(trx);
      });
      const r = await verifyChain(t.db, tenantId);
      expect(r.ok).toBe(false);
      expect(r.firstBad?.seq).toBe(seq);
      expect(r.firstBad?.problem).toMatch(/does not match the leaf it was sealed as/);
    });

    it('a changed detail inside the jsonb', async () => {
      const tenantId = await tenantWithEvents(t, 4);
      const seq = await seqAt(t.ownerDb(), tenantId, 1);
      await tamper(t.ownerDb(), async (trx) => {
        await sql`UPDATE audit_events SET details = jsonb_set(details, '{n}', '99') WHERE tenant_id = ${tenantId} AND seq = ${seq}::bigint`.execute(trx);
      });
      const r = await verifyChain(t.db, tenantId);
      expect(r.ok).toBe(false);
      expect(r.firstBad?.seq).toBe(seq);
    });

    it('a deleted event in the middle, and the last one', async () => {
      for (const index of [2, 4]) {
        const tenantId = await tenantWithEvents(t, 5);
        const seq = await seqAt(t.ownerDb(), tenantId, index);
        await tamper(t.ownerDb(), async (trx) => {
          await sql`DELETE FROM audit_events WHERE tenant_id = ${tenantId} AND seq = ${seq}::bigint`.execute(trx);
        });
        const r = await verifyChain(t.db, tenantId);
        expect(r.ok).toBe(false);
        expect(r.firstBad?.problem).toMatch(/missing from audit_events \(removed\)/);
        expect(r.firstBad?.id).not.toBeNull();
      }
    });

    it('two events whose numbers are swapped', async () => {
      const tenantId = await tenantWithEvents(t, 5);
      const [a, b] = [await seqAt(t.ownerDb(), tenantId, 1), await seqAt(t.ownerDb(), tenantId, 3)];
      await tamper(t.ownerDb(), async (trx) => {
        // Through a free number: (tenant_id, seq) is the primary key.
        await sql`UPDATE audit_events SET seq = 9000000000000000 WHERE tenant_id = ${tenantId} AND seq = ${a}::bigint`.execute(trx);
        await sql`UPDATE audit_events SET seq = ${a}::bigint WHERE tenant_id = ${tenantId} AND seq = ${b}::bigint`.execute(trx);
        await sql`UPDATE audit_events SET seq = ${b}::bigint WHERE tenant_id = ${tenantId} AND seq = 9000000000000000`.execute(trx);
      });
      const r = await verifyChain(t.db, tenantId);
      expect(r.ok).toBe(false);
      expect(r.firstBad?.seq).toBe(b);
    });

    it('a forged event slipped in behind the sealer', async () => {
      const tenantId = await tenantWithEvents(t, 3);
      const { rows } = await sql<{ ticket: string }>`SELECT e.ticket::text AS ticket FROM audit_leaves l JOIN audit_events e ON e.id = l.event_id
        WHERE l.tenant_id = ${tenantId} AND l.leaf_index = 0`.execute(t.ownerDb());
      const forged = randomUUID();
      await tamper(t.ownerDb(), async (trx) => {
        await sql`INSERT INTO audit_events (tenant_id, seq, id, occurred_at, action, outcome, ticket)
          VALUES (${tenantId}, 9000000000000001, ${forged}, now(), 'waitlist.childFile.read', 'success', ${rows[0]!.ticket}::bigint)`.execute(trx);
      });
      const r = await verifyChain(t.db, tenantId);
      expect(r.ok).toBe(false);
      expect(r.firstBad).toMatchObject({ seq: '9000000000000001', id: forged });
      expect(r.firstBad?.problem).toMatch(/\(inserted\)/);
    });
  });

  it('50 concurrent appends all reach the tree, each once, and verify', async () => {
    const { id } = await createTestTenant(t);
    await Promise.all(Array.from({ length: 50 }, (_, i) => appendAuditAlone(t.db, id, input(i + 1), new Date())));
    await sealer.sealTenant(id);
    const got = await order(t.ownerDb(), id);
    expect([...got].sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    expect(await verifyChain(t.db, id)).toEqual({ tenantId: id, ok: true, events: 50 });
  });
});
