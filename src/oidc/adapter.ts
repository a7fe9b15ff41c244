import type { Kysely } from 'kysely';
import type { Adapter, AdapterPayload } from 'oidc-provider';
import type { KeyProvider } from '../crypto/keys.ts';
import type { DB } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import { clientMetadata, findActiveClient } from './clients.ts';

/**
 * oidc-provider's storage, in PostgreSQL (or PGlite), one tenant per adapter:
 * every call is its own tenant transaction, so row-level security keeps one
 * tenant's codes and tokens out of another's provider even if an id leaked.
 * Clients are not stored by the provider: they are Guichet's own registry
 * (oidc_clients), read here and shaped as client metadata.
 */
export function adapterFor(db: Kysely<DB>, keys: KeyProvider, tenantId: string): new (name: string) => Adapter {
  return class TenantAdapter implements Adapter {
    constructor(readonly name: string) {}

    async upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void> {
      if (this.name === 'Client') return;
      const expiresAt = expiresIn ? new Date(Date.now() + expiresIn * 1000) : null;
      const row = {
        tenant_id: tenantId,
        model: this.name,
        id,
        payload: JSON.stringify(payload),
        grant_id: typeof payload.grantId === 'string' ? payload.grantId : null,
        uid: typeof payload.uid === 'string' ? payload.uid : null,
        user_code: typeof payload.userCode === 'string' ? payload.userCode : null,
        expires_at: expiresAt,
        consumed_at: null,
      };
      await inTenant(db, tenantId, (trx) =>
        trx
          .insertInto('oidc_payloads')
          .values(row)
          .onConflict((oc) => oc.columns(['tenant_id', 'model', 'id']).doUpdateSet({ payload: row.payload, grant_id: row.grant_id, uid: row.uid, user_code: row.user_code, expires_at: row.expires_at }))
          .execute(),
      );
    }

    async find(id: string): Promise<AdapterPayload | undefined> {
      if (this.name === 'Client') {
        const c = await findActiveClient(db, tenantId, id);
        return c ? ((await clientMetadata(keys, c)) as AdapterPayload) : undefined;
      }
      return this.findBy('id', id);
    }

    async findByUid(uid: string): Promise<AdapterPayload | undefined> {
      return this.findBy('uid', uid);
    }

    async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
      return this.findBy('user_code', userCode);
    }

    private async findBy(column: 'id' | 'uid' | 'user_code', value: string): Promise<AdapterPayload | undefined> {
      const r = await inTenant(db, tenantId, (trx) =>
        trx.selectFrom('oidc_payloads').select(['payload', 'expires_at', 'consumed_at']).where('model', '=', this.name).where(column, '=', value).executeTakeFirst(),
      );
      if (!r) return undefined;
      // Expired rows are swept later; until then they are simply not there.
      if (r.expires_at && new Date(r.expires_at).getTime() <= Date.now()) return undefined;
      const payload = (typeof r.payload === 'string' ? JSON.parse(r.payload) : r.payload) as AdapterPayload;
      return r.consumed_at ? { ...payload, consumed: Math.floor(new Date(r.consumed_at).getTime() / 1000) } : payload;
    }

    async consume(id: string): Promise<void> {
      await inTenant(db, tenantId, (trx) => trx.updateTable('oidc_payloads').set({ consumed_at: new Date() }).where('model', '=', this.name).where('id', '=', id).execute());
    }

    async destroy(id: string): Promise<void> {
      await inTenant(db, tenantId, (trx) => trx.deleteFrom('oidc_payloads').where('model', '=', this.name).where('id', '=', id).execute());
    }

    /** Called for each model in turn when a grant ends (logout, revocation, a reused refresh token). */
    async revokeByGrantId(grantId: string): Promise<void> {
      await inTenant(db, tenantId, (trx) => trx.deleteFrom('oidc_payloads').where('model', '=', this.name).where('grant_id', '=', grantId).execute());
    }
  };
}

/** Removes expired artefacts of every tenant's provider (run by the maintenance loop). */
export async function sweepExpired(db: Kysely<DB>, tenantIds: readonly string[], now: Date): Promise<number> {
  let n = 0;
  for (const t of tenantIds) {
    const r = await inTenant(db, t, (trx) => trx.deleteFrom('oidc_payloads').where('expires_at', '<', now).executeTakeFirst());
    n += Number(r.numDeletedRows);
  }
  return n;
}
