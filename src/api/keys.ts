/**
 * Keys of the facility API. One key opens one facility, to facility
 * management software, with the rights of that facility's staff (the same
 * actions, decided and audited like the pages). The director creates a key
 * after a fresh authentication; its secret is shown once and only its
 * SHA-256 is kept (256 random bits: no slow hash needed); a key is revoked,
 * never deleted — by the director, an administrator or a security officer,
 * and with its creator's sessions when those are ended. It works only while
 * its creator's account is active and still holds a role at its facility. Each request with a key acts as the facility's staff, its
 * audit events naming the key as their session (details.session) and its
 * creator as the account.
 */
import { recordApiKeyRefusal } from '../identity/throttle.ts';
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { decide } from '../access/decide.ts';
import type { Actor } from '../access/actor.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import type { AuditAction } from '../audit/events.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError, ValidationError } from '../errors.ts';
import { requireRecentAuth } from '../identity/stepup.ts';
import { originFields, type Tenant } from '../tenants/service.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const TOKEN = /^gfk_([0-9a-f]{32})_([A-Za-z0-9_-]{43})$/;

export interface ApiKeyView {
  id: string;
  name: string;
  createdAt: Date;
  createdBy: string;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
}

function hash(secret: string): Buffer {
  return createHash('sha256').update(secret, 'utf8').digest();
}

function idOf(hex: string): string {
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** An id from the request is untrusted: bounded, and printable (PostgreSQL refuses NUL in text). */
function boundedId(id: string): string {
  return id.slice(0, 64).replace(/[\u0000-\u001f\u007f-\u009f]/g, '\ufffd');
}

async function denied(deps: Deps, ctx: Ctx, action: AuditAction, targetId: string, reason: string): Promise<never> {
  await appendAuditAlone(deps.db.db, ctx.tenant.id, { action, outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'api_key', targetIds: [boundedId(targetId)], details: { reason } }, ctx.now);
  throw new AppError(ctx.actor ? 'notFound' : 'signInRequired');
}

async function mayManage(deps: Deps, ctx: Ctx, action: AuditAction, facilityId: string, rule: 'api.key.manage' | 'api.key.revoke' = 'api.key.manage'): Promise<void> {
  if (!UUID.test(facilityId)) await denied(deps, ctx, action, facilityId, 'malformed_id');
  // A key outlives break-glass's thirty minutes and its reads are not marked as the emergency's: a role still cooling
  // off creates none, glass broken or not.
  const actor = action === 'api.key.create' && ctx.actor ? { ...ctx.actor, breakGlass: undefined } : ctx.actor;
  const d = decide(actor, rule, { type: 'facility', facilityId }, ctx.now);
  if (!d.allowed) {
    if (d.reason === 'cooling_off') {
      await denied(deps, ctx, action, facilityId, 'cooling_off').catch(() => {});
      throw new AppError('coolingOff');
    }
    await denied(deps, ctx, action, facilityId, d.reason ?? 'denied');
  }
}

/** Whether the actor may create keys for the facility (the list and revocation are open to more: 'api.key.revoke'). */
export function mayCreateApiKeys(ctx: Ctx, facilityId: string): boolean {
  return decide(ctx.actor, 'api.key.manage', { type: 'facility', facilityId }, ctx.now).allowed;
}

export async function listApiKeys(deps: Deps, ctx: Ctx, facilityId: string): Promise<ApiKeyView[]> {
  await mayManage(deps, ctx, 'api.key.list', facilityId, 'api.key.revoke');
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const rows = await trx
      .selectFrom('facility_api_keys as k')
      .innerJoin('accounts as a', 'a.id', 'k.created_by')
      .select(['k.id', 'k.name', 'k.created_at', 'a.email', 'k.last_used_at', 'k.revoked_at'])
      .where('k.facility_id', '=', facilityId)
      .orderBy('k.created_at', 'desc')
      .execute();
    return rows.map((r) => ({ id: r.id, name: r.name, createdAt: r.created_at, createdBy: r.email, lastUsedAt: r.last_used_at, revokedAt: r.revoked_at }));
  }, ctx.actor?.accountId);
}

/** A new key: the token is returned once, here, and never again. */
export async function createApiKey(deps: Deps, ctx: Ctx, facilityId: string, name: string): Promise<{ id: string; token: string }> {
  const action = 'api.key.create';
  await mayManage(deps, ctx, action, facilityId);
  requireRecentAuth(ctx, undefined, { returnTo: `/staff/facilities/${facilityId}/api-keys` });
  if (!name || name.length > 100) throw new ValidationError({ name: 'apiKeyNameInvalid' });
  const id = randomUUID();
  const secret = randomBytes(32).toString('base64url');
  await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const facility = await trx.selectFrom('facilities').select('id').where('id', '=', facilityId).executeTakeFirst();
    if (!facility) throw new AppError('notFound');
    await trx.insertInto('facility_api_keys').values({ id, tenant_id: ctx.tenant.id, facility_id: facilityId, name, secret_hash: hash(secret), created_by: ctx.actor!.accountId, created_at: ctx.now }).execute();
    await appendAudit(trx, ctx.tenant.id, { action, outcome: 'success', ...originFields(originOf(ctx)), targetType: 'api_key', targetIds: [id, facilityId], details: { name } }, ctx.now);
  }, ctx.actor?.accountId);
  return { id, token: `gfk_${id.replace(/-/g, '')}_${secret}` };
}

export async function revokeApiKey(deps: Deps, ctx: Ctx, facilityId: string, keyId: string): Promise<void> {
  const action = 'api.key.revoke';
  await mayManage(deps, ctx, action, facilityId, 'api.key.revoke');
  if (!UUID.test(keyId)) await denied(deps, ctx, action, keyId, 'malformed_id');
  const found = await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const k = await trx.selectFrom('facility_api_keys').select(['id', 'revoked_at']).where('id', '=', keyId).where('facility_id', '=', facilityId).forUpdate().executeTakeFirst();
    if (!k) return false;
    if (k.revoked_at) return true;
    await trx.updateTable('facility_api_keys').set({ revoked_at: ctx.now, revoked_by: ctx.actor!.accountId }).where('id', '=', k.id).execute();
    await appendAudit(trx, ctx.tenant.id, { action, outcome: 'success', ...originFields(originOf(ctx)), targetType: 'api_key', targetIds: [k.id, facilityId] }, ctx.now);
    return true;
  }, ctx.actor?.accountId);
  if (!found) await denied(deps, ctx, action, keyId, 'not_found');
}

/**
 * The actor a request's key stands for, or null (recorded as a denied use
 * when a key was offered): the facility's staff, for that facility only,
 * strongly authenticated by the key itself.
 */
export async function actorForApiKey(deps: Deps, tenant: Tenant, authorization: string | undefined, ctx: Ctx): Promise<Actor | null> {
  const m = /^Bearer (\S+)$/.exec(authorization ?? '');
  const token = m?.[1] ?? '';
  const parts = TOKEN.exec(token);
  const fail = async (reason: string, target: string, capped = false) => {
    // Refused either way. A header that names no key of this programme (junk, a guess) is recorded while its source
    // is under its cap, or a script would fill the log for good; a refusal of a real key (revoked, wrong secret, its
    // creator gone) is always recorded.
    if (capped && !(await recordApiKeyRefusal(deps, ctx)).ok) return null;
    await appendAuditAlone(deps.db.db, tenant.id, { action: 'api.key.use', outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'api_key', targetIds: [target], details: { reason } }, ctx.now);
    return null;
  };
  if (!parts) return authorization ? fail('malformed_key', 'unknown', true) : null;
  const id = idOf(parts[1]!);
  // The key acts with its creator's staff rights at its facility: it works while the creator's account is active
  // and holds a current role there (a director's grant may expire: the key lives on while they are still its staff).
  const key = await inTenant(deps.db.db, tenant.id, (trx) =>
    trx
      .selectFrom('facility_api_keys as k')
      .innerJoin('accounts as a', 'a.id', 'k.created_by')
      .select((eb) => [
        'k.id',
        'k.facility_id',
        'k.secret_hash',
        'k.created_by',
        'k.created_at',
        'k.last_used_at',
        'k.revoked_at',
        'a.status',
        eb
          .exists(
            eb
              .selectFrom('memberships as m')
              .select('m.id')
              .whereRef('m.account_id', '=', 'k.created_by')
              .whereRef('m.facility_id', '=', 'k.facility_id')
              .where('m.role', 'in', ['facility_staff', 'facility_director'])
              .where('m.revoked_at', 'is', null)
              .where((w) => w.or([w('m.expires_at', 'is', null), w('m.expires_at', '>', ctx.now)])),
          )
          .as('creator_at_facility'),
      ])
      .where('k.id', '=', id)
      .executeTakeFirst(),
  );
  if (!key) return fail('unknown_key', id, true);
  if (!timingSafeEqual(key.secret_hash, hash(parts[2]!))) return fail('wrong_secret', id);
  if (key.revoked_at) return fail('revoked_key', id);
  if (key.status !== 'active') return fail('creator_suspended', id);
  if (!key.creator_at_facility) return fail('creator_left_facility', id);
  if (!key.last_used_at || ctx.now.getTime() - key.last_used_at.getTime() > 60_000) {
    await inTenant(deps.db.db, tenant.id, (trx) => trx.updateTable('facility_api_keys').set({ last_used_at: ctx.now }).where('id', '=', id).execute());
  }
  return {
    accountId: key.created_by,
    tenantId: tenant.id,
    sessionId: key.id,
    email: `api-key:${key.id}`,
    emailVerified: true,
    locale: 'fr',
    memberships: [{ id: key.id, role: 'facility_staff', facilityId: key.facility_id, expiresAt: null }],
    mfa: true,
    // Authenticated when it was made: a lockdown's or a detection hold's demand for a fresh authentication, which
    // a key cannot answer, refuses it until an administrator lifts it.
    auth: { methods: [], at: key.created_at, totp: false, passkeys: 0, vouchedPasskeys: 0, vouchedPasskey: false },
  };
}
