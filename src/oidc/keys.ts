import { generateKeyPairSync, randomBytes, type JsonWebKey } from 'node:crypto';
import type { Kysely } from 'kysely';
import { appendAudit } from '../audit/log.ts';
import type { AuditOrigin } from '../audit/events.ts';
import type { KeyProvider } from '../crypto/keys.ts';
import type { DB } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import type { Trx } from '../db/connection.ts';
import { originFields } from '../tenants/service.ts';

/**
 * The signing keys of a tenant's provider. RS256 because it is what OpenID
 * Connect clients must support by default; ES256 beside it for clients that
 * ask. The private half is wrapped by the key provider (the master key) and
 * bound to its tenant and kid, so a row copied elsewhere does not unwrap; the
 * public half is what the JWKS publishes.
 */
export const SIGNING_ALGS = ['RS256', 'ES256'] as const;
type Alg = (typeof SIGNING_ALGS)[number];

export interface SigningKeySet {
  /** Private JWKs, current first for each algorithm, then the previous ones (still published, no longer signing). */
  keys: JsonWebKey[];
  /** Identifies the set: the provider is rebuilt when it changes. */
  fingerprint: string;
}

function wrapContext(tenantId: string, kid: string): string {
  return `oidc-signing-key:${tenantId}:${kid}`;
}

function generate(alg: Alg): { kid: string; priv: JsonWebKey; pub: JsonWebKey } {
  const kid = randomBytes(12).toString('base64url');
  const pair = alg === 'RS256' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const priv = { ...pair.privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
  const pub = { ...pair.publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
  return { kid, priv, pub };
}

async function insertKey(trx: Trx, keys: KeyProvider, tenantId: string, alg: Alg, now: Date): Promise<string> {
  const k = generate(alg);
  await trx
    .insertInto('oidc_signing_keys')
    .values({
      tenant_id: tenantId,
      kid: k.kid,
      alg,
      public_jwk: JSON.stringify(k.pub),
      private_wrapped: await keys.wrap(Buffer.from(JSON.stringify(k.priv), 'utf8'), wrapContext(tenantId, k.kid)),
      status: 'current',
      created_at: now,
      retired_at: null,
    })
    .execute();
  return k.kid;
}

/** The tenant's published keys, creating the first ones when there are none. */
export async function loadSigningKeys(db: Kysely<DB>, keys: KeyProvider, tenantId: string, now: Date): Promise<SigningKeySet> {
  const read = () => inTenant(db, tenantId, (trx) => trx.selectFrom('oidc_signing_keys').select(['kid', 'alg', 'status', 'private_wrapped', 'created_at']).where('status', 'in', ['current', 'previous']).execute());
  let rows = await read();
  const missing = SIGNING_ALGS.filter((a) => !rows.some((r) => r.alg === a && r.status === 'current'));
  if (missing.length) {
    try {
      await inTenant(db, tenantId, async (trx) => {
        for (const alg of missing) await insertKey(trx, keys, tenantId, alg, now);
      });
    } catch (err) {
      // Another instance created them at the same moment (the unique index on the current key): use theirs.
      if (!/duplicate|unique/i.test(String((err as Error).message))) throw err;
    }
    rows = await read();
  }
  rows.sort((a, b) => (a.status === b.status ? new Date(b.created_at).getTime() - new Date(a.created_at).getTime() : a.status === 'current' ? -1 : 1));
  const out: JsonWebKey[] = [];
  for (const r of rows) out.push(JSON.parse((await keys.unwrap(r.private_wrapped, wrapContext(tenantId, r.kid))).toString('utf8')) as JsonWebKey);
  return { keys: out, fingerprint: rows.map((r) => `${r.kid}:${r.status}`).join(',') };
}

/**
 * Rotation: for each algorithm a new key signs from now on; the one it
 * replaces stays in the JWKS (tokens it signed still verify) until the next
 * rotation retires it. Run it at least one token lifetime apart.
 */
export async function rotateSigningKeys(db: Kysely<DB>, keys: KeyProvider, tenantId: string, origin: AuditOrigin, now: Date): Promise<{ created: string[]; retired: string[] }> {
  return inTenant(db, tenantId, async (trx) => {
    const retired = await trx.updateTable('oidc_signing_keys').set({ status: 'retired', retired_at: now }).where('status', '=', 'previous').returning('kid').execute();
    await trx.updateTable('oidc_signing_keys').set({ status: 'previous' }).where('status', '=', 'current').execute();
    const created: string[] = [];
    for (const alg of SIGNING_ALGS) created.push(await insertKey(trx, keys, tenantId, alg, now));
    await appendAudit(trx, tenantId, { action: 'oidc.keys.rotate', outcome: 'success', ...originFields(origin), targetType: 'oidc_signing_key', targetIds: created, details: { retired: retired.map((r) => r.kid).join(' ') } }, now);
    return { created, retired: retired.map((r) => r.kid) };
  });
}
