import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Numbered, forward-only SQL migrations (NNNN_name.sql), each applied in its
 * own transaction under a lock. Kysely's own migrator wants TypeScript
 * migration objects and sends one statement per query, which PGlite's
 * extended protocol cannot do for a multi-statement file; this is the small
 * part it would otherwise do.
 */
export interface MigrationTarget {
  query(text: string, params?: unknown[]): Promise<Record<string, unknown>[]>;
  execInTransaction(text: string): Promise<void>;
  lock(): Promise<void>;
  unlock(): Promise<void>;
}

const dir = join(dirname(fileURLToPath(import.meta.url)), 'migrations');

export interface MigrationFile {
  version: number;
  name: string;
  sql: string;
}

export function migrationFiles(): MigrationFile[] {
  return readdirSync(dir)
    .filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map((f) => ({ version: Number(f.slice(0, 4)), name: f.slice(5, -4), sql: readFileSync(join(dir, f), 'utf8') }));
}

export async function runMigrations(target: MigrationTarget, log?: (msg: string) => void): Promise<number> {
  await target.lock();
  try {
    await target.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    const applied = new Set((await target.query('SELECT version FROM schema_migrations')).map((r) => Number(r.version)));
    let count = 0;
    for (const m of migrationFiles()) {
      if (applied.has(m.version)) continue;
      const escapedName = m.name.replace(/'/g, "''");
      await target.execInTransaction(
        `${m.sql}\n;INSERT INTO schema_migrations (version, name) VALUES (${m.version}, '${escapedName}');` +
          `\nGRANT SELECT ON schema_migrations TO guichet_app;`,
      );
      log?.(`migration ${m.version} ${m.name} applied`);
      count++;
    }
    return count;
  } finally {
    await target.unlock();
  }
}

export function latestMigrationVersion(): number {
  return Math.max(0, ...migrationFiles().map((m) => m.version));
}
