/**
 * The audit log: append-only for the application, hash-chained per tenant,
 * and any tampering by someone who can bypass the triggers shows in
 * verifyChain at the right place.
 */
import { randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendAudit, appendAuditAlone, chainHash, verifyChain, type SealedEvent } from '../../src/audit/log.ts';
import type { AuditEventInput } from '../../src/audit/events.ts';
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

/** A fresh tenant with `n` events appended one transaction each. */
async function tenantWithEvents(t: TestDatabase, n: number): Promise<string> {
  const { id } = await createTestTenant(t);
  for (let i = 1; i <= n; i++) {
    await inTenant(t.db, id, (trx) => appendAudit(trx, id, input(i), new Date()));
  }
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

async function seqs(owner: Kysely<DB>, tenantId: string): Promise<number[]> {
  const rows = await owner.selectFrom('audit_events').select('seq').where('tenant_id', '=', tenantId).orderBy('seq').execute();
  return rows.map((r) => Number(r.seq));
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
  });
  afterAll(async () => {
    await t?.close();
  });

  it('appendAudit gives consecutive sequence numbers and a chain verifyChain accepts', async () => {
    const tenantId = await tenantWithEvents(t, 5);
    // Several events in one transaction, too.
    await inTenant(t.db, tenantId, async (trx) => {
      for (let i = 6; i <= 8; i++) await appendAudit(trx, tenantId, input(i), new Date());
    });
    expect(await seqs(t.ownerDb(), tenantId)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const head = await t.ownerDb().selectFrom('audit_heads').selectAll().where('tenant_id', '=', tenantId).executeTakeFirstOrThrow();
    expect(Number(head.seq)).toBe(8);
    expect(await verifyChain(t.db, tenantId)).toEqual({ tenantId, ok: true, events: 8 });
    // Paging through the chain gives the same answer.
    expect(await verifyChain(t.db, tenantId, 3)).toEqual({ tenantId, ok: true, events: 8 });
  });

  it('an event rolled back with its transaction leaves no gap', async () => {
    const tenantId = await tenantWithEvents(t, 2);
    await expect(
      inTenant(t.db, tenantId, async (trx) => {
        await appendAudit(trx, tenantId, input(3), new Date());
        throw new Error('the work failed');
      }),
    ).rejects.toThrow('the work failed');
    await inTenant(t.db, tenantId, (trx) => appendAudit(trx, tenantId, input(3), new Date()));
    expect(await seqs(t.ownerDb(), tenantId)).toEqual([1, 2, 3]);
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
    expect(await seqs(t.ownerDb(), tenantId)).toEqual([1, 2, 3]);
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
    expect(await seqs(o, tenantId)).toEqual([1, 2]);
  });

  describe('tampering with the triggers off is detected', () => {
    afterAll(async () => {
      // The tamper() transactions switch them back on; make sure.
      expect(await triggersEnabled(t.ownerDb())).toEqual(['audit_events_no_truncate:O', 'audit_events_no_update:O']);
    });

    it('a changed field', async () => {
      const tenantId = await tenantWithEvents(t, 5);
      await tamper(t.ownerDb(), async (trx) => {
        await sql`UPDATE audit_events SET outcome = 'denied' WHERE tenant_id = ${tenantId} AND seq = 3`.execute(trx);
      });
      const r = await verifyChain(t.db, tenantId);
      expect(r.ok).toBe(false);
      expect(r.firstBad?.seq).toBe('3');
      expect(r.firstBad?.problem).toMatch(/content does not match/);
    });

    it('a changed detail inside the jsonb', async () => {
      const tenantId = await tenantWithEvents(t, 4);
      await tamper(t.ownerDb(), async (trx) => {
        await sql`UPDATE audit_events SET details = jsonb_set(details, '{n}', '99') WHERE tenant_id = ${tenantId} AND seq = 2`.execute(trx);
      });
      const r = await verifyChain(t.db, tenantId);
      expect(r.ok).toBe(false);
      expect(r.firstBad?.seq).toBe('2');
    });

    it('a deleted event in the middle', async () => {
      const tenantId = await tenantWithEvents(t, 5);
      await tamper(t.ownerDb(), async (trx) => {
        await sql`DELETE FROM audit_events WHERE tenant_id = ${tenantId} AND seq = 3`.execute(trx);
      });
      const r = await verifyChain(t.db, tenantId);
      expect(r.ok).toBe(false);
      expect(r.firstBad?.seq).toBe('3');
      expect(r.firstBad?.problem).toMatch(/missing event/);
    });

    it('a deleted last event', async () => {
      const tenantId = await tenantWithEvents(t, 5);
      await tamper(t.ownerDb(), async (trx) => {
        await sql`DELETE FROM audit_events WHERE tenant_id = ${tenantId} AND seq = 5`.execute(trx);
      });
      const r = await verifyChain(t.db, tenantId);
      expect(r.ok).toBe(false);
      expect(r.firstBad?.seq).toBe('5');
      expect(r.firstBad?.problem).toMatch(/head is at 5/);
    });

    it('two events whose sequence numbers are swapped', async () => {
      const tenantId = await tenantWithEvents(t, 5);
      await tamper(t.ownerDb(), async (trx) => {
        // Through a free number: (tenant_id, seq) is the primary key.
        await sql`UPDATE audit_events SET seq = 1000000 WHERE tenant_id = ${tenantId} AND seq = 2`.execute(trx);
        await sql`UPDATE audit_events SET seq = 2 WHERE tenant_id = ${tenantId} AND seq = 4`.execute(trx);
        await sql`UPDATE audit_events SET seq = 4 WHERE tenant_id = ${tenantId} AND seq = 1000000`.execute(trx);
      });
      expect(await seqs(t.ownerDb(), tenantId)).toEqual([1, 2, 3, 4, 5]);
      const r = await verifyChain(t.db, tenantId);
      expect(r.ok).toBe(false);
      expect(r.firstBad?.seq).toBe('2');
    });

    it('a forged event with made-up hashes', async () => {
      const tenantId = await tenantWithEvents(t, 3);
      await tamper(t.ownerDb(), (trx) => insertForged(trx, tenantId, 4, Buffer.alloc(32, 7), Buffer.alloc(32, 9)));
      const r = await verifyChain(t.db, tenantId);
      expect(r.ok).toBe(false);
      expect(r.firstBad?.seq).toBe('4');
    });

    it('a forged event appended with a correctly computed hash (the head was not moved)', async () => {
      const tenantId = await tenantWithEvents(t, 3);
      const o = t.ownerDb();
      const last = await o.selectFrom('audit_events').select('hash').where('tenant_id', '=', tenantId).where('seq', '=', '3' as never).executeTakeFirstOrThrow();
      await tamper(o, (trx) => insertForged(trx, tenantId, 4, Buffer.from(last.hash)));
      const r = await verifyChain(t.db, tenantId);
      expect(r.ok).toBe(false);
      expect(r.firstBad?.seq).toBe('4');
      expect(r.firstBad?.problem).toMatch(/head is at 3/);
    });
  });

  it('50 concurrent appends get sequence numbers 1..50 with no gap and a valid chain', async () => {
    const { id } = await createTestTenant(t);
    await Promise.all(Array.from({ length: 50 }, (_, i) => appendAuditAlone(t.db, id, input(i + 1), new Date())));
    expect(await seqs(t.ownerDb(), id)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    const ids = await t.ownerDb().selectFrom('audit_events').select('id').where('tenant_id', '=', id).execute();
    expect(new Set(ids.map((r) => r.id)).size).toBe(50);
    expect(await verifyChain(t.db, id)).toEqual({ tenantId: id, ok: true, events: 50 });
  });
});

/** An event at `seq`, linked to `prevHash`; its hash is computed properly unless one is given. */
async function insertForged(trx: Trx, tenantId: string, seq: number, prevHash: Buffer, hash?: Buffer): Promise<void> {
  const event: SealedEvent = {
    tenant_id: tenantId,
    seq: String(seq),
    id: randomUUID(),
    occurred_at: new Date(Math.floor(Date.now())),
    action: 'waitlist.childFile.read',
    outcome: 'success',
    actor_account_id: randomUUID(),
    actor_roles: [],
    on_behalf_of: null,
    target_type: 'child',
    target_ids: [],
    family_ids: [],
    fields: [],
    purpose: 'forged',
    ip: null,
    user_agent: null,
    request_id: null,
    details: {},
  };
  await trx
    .insertInto('audit_events')
    .values({ ...event, details: JSON.stringify(event.details), prev_hash: prevHash, hash: hash ?? chainHash(prevHash, event) })
    .execute();
}
