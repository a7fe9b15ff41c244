/**
 * Migration 0047 on a database that already holds allocation runs: each run
 * stored before gets the number of its own allocation.run event (the one
 * that names it), not of another event naming the run, so that the families
 * whose files those rounds read see them in their access lists. On an
 * in-memory PGlite migrated up to 0046, then to the end (under either run:
 * the data migration is the same SQL).
 */
import { randomUUID } from 'node:crypto';
import { PGlite } from '@electric-sql/pglite';
import { describe, expect, it } from 'vitest';
import { pgliteMigrationTarget } from '../../src/db/connection.ts';
import { migrationFiles, runMigrations } from '../../src/db/migrate.ts';

describe('migration 0047', () => {
  it('gives each run stored before the number of its allocation.run event', async () => {
    const client = new PGlite();
    try {
      const target = pgliteMigrationTarget(client);
      await client.query('CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
      for (const m of migrationFiles().filter((f) => f.version < 47)) {
        await target.execInTransaction(`${m.sql}\n;INSERT INTO schema_migrations (version, name) VALUES (${m.version}, '${m.name}');`);
      }
      const tenant = randomUUID();
      await client.query(`INSERT INTO tenants (id, slug, name_fr, name_en) VALUES ($1, 'migration-0047', 'Programme', 'Programme')`, [tenant]);
      const runs = [randomUUID(), randomUUID()];
      const b = (n: number) => `'\\x${'01'.repeat(n)}'::bytea`;
      for (const run of runs) {
        await client.query(
          `INSERT INTO allocation_runs (id, tenant_id, started_at, finished_at, dry_run, parameters, children, applications, placed, inputs_hash, outputs_hash, inputs_snapshot, signature, public_key)
           VALUES ($1, $2, now(), now(), false, '{}', 0, 0, 0, ${b(32)}, ${b(32)}, ${b(4)}, ${b(64)}, ${b(32)})`,
          [run, tenant],
        );
      }
      const event = async (action: string, run: string) =>
        String(
          (await client.query<{ seq: string }>(`INSERT INTO audit_events (tenant_id, id, occurred_at, action, outcome, target_type, target_ids) VALUES ($1, $2, now(), $3, 'success', 'allocation_run', ARRAY[$4]) RETURNING seq`, [tenant, randomUUID(), action, run])).rows[0]!.seq,
        );
      const first = await event('allocation.run', runs[0]!);
      await event('allocation.replay', runs[0]!);
      const second = await event('allocation.run', runs[1]!);
      await event('allocation.replay', runs[1]!);

      expect(await runMigrations(target)).toBe(migrationFiles().filter((f) => f.version >= 47).length);
      const { rows } = await client.query<{ id: string; audit_seq: string }>('SELECT id, audit_seq FROM allocation_runs');
      expect(Object.fromEntries(rows.map((r) => [r.id, String(r.audit_seq)]))).toEqual({ [runs[0]!]: first, [runs[1]!]: second });
      // Row-level security is forced again on both tables.
      const forced = await client.query<{ relname: string; relforcerowsecurity: boolean }>(`SELECT relname, relforcerowsecurity FROM pg_class WHERE relname IN ('allocation_runs', 'audit_events', 'allocation_reads') ORDER BY relname`);
      expect(forced.rows.map((r) => [r.relname, r.relforcerowsecurity])).toEqual([['allocation_reads', true], ['allocation_runs', true], ['audit_events', true]]);
    } finally {
      await client.close();
    }
  }, 120_000);
});
