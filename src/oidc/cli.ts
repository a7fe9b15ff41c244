import { parseArgs } from 'node:util';
import type { Kysely } from 'kysely';
import type { AuditOrigin } from '../audit/events.ts';
import type { Config } from '../config/config.ts';
import { loadKeyProvider, type KeyProvider } from '../crypto/keys.ts';
import type { DB } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import type { Tenant } from '../tenants/service.ts';
import { rotateSigningKeys } from './keys.ts';

export interface OidcCliHelpers {
  config: Config;
  withDatabase<T>(fn: (db: Kysely<DB>) => Promise<T>): Promise<T>;
  tenant(db: Kysely<DB>, slug: string | undefined): Promise<Tenant>;
  origin(command: string): AuditOrigin;
  usage(message: string): Error;
  out(text: string): void;
  /** For tests: a provider over a fixed secret instead of the environment's. */
  keys?: KeyProvider;
}

const USAGE = 'usage: guichet oidc keys --tenant T | oidc rotate-keys --tenant T';

/**
 * `guichet oidc keys`: the tenant's signing keys and their state.
 * `guichet oidc rotate-keys`: a new signing key per algorithm; the replaced
 * ones stay in the JWKS until the next rotation (run rotations at least a
 * token lifetime apart, e.g. monthly). Running servers pick the change up
 * within a few seconds.
 */
export async function oidcCommand(args: string[], h: OidcCliHelpers): Promise<number> {
  const [sub, ...rest] = args;
  let values: { tenant?: string | undefined };
  try {
    values = parseArgs({ args: rest, options: { tenant: { type: 'string' } } }).values;
  } catch (e) {
    throw h.usage(`${(e as Error).message}\n${USAGE}`);
  }
  if ((sub !== 'keys' && sub !== 'rotate-keys') || !values.tenant) throw h.usage(USAGE);
  return h.withDatabase(async (db) => {
    const t = await h.tenant(db, values.tenant);
    if (sub === 'keys') {
      const rows = await inTenant(db, t.id, (trx) => trx.selectFrom('oidc_signing_keys').select(['kid', 'alg', 'status', 'created_at', 'retired_at']).orderBy('created_at').execute());
      if (!rows.length) h.out(`${t.slug}: no signing keys yet (created on the provider's first use)\n`);
      for (const r of rows) h.out(`${t.slug}  ${r.kid}  ${r.alg}  ${r.status}  created ${new Date(r.created_at).toISOString()}${r.retired_at ? `  retired ${new Date(r.retired_at).toISOString()}` : ''}\n`);
      return 0;
    }
    const keys = h.keys ?? loadKeyProvider(process.env, h.config.dataDir);
    try {
      const r = await rotateSigningKeys(db, keys, t.id, h.origin(`oidc rotate-keys --tenant ${t.slug}`), new Date());
      h.out(`${t.slug}: new signing keys ${r.created.join(', ')}; retired ${r.retired.length ? r.retired.join(', ') : 'none'}\n`);
      return 0;
    } finally {
      if (!h.keys) await keys.close();
    }
  });
}
