import { requireRecentAuth } from '../identity/stepup.ts';
import { type Kysely, type Selectable } from 'kysely';
import { decide } from '../access/decide.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import { originOf, type Ctx, type Deps } from '../context.ts';
import type { DB, OidcEntitlementsTable } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError, ValidationError } from '../errors.ts';
import { originFields } from '../tenants/service.ts';
import { SCOPE_SHAPE, STANDARD_SCOPES } from './clients.ts';

/**
 * Access rights as data: "patron of the library network X until Y",
 * "resident of municipality Z". The tenant records them; each belongs to one
 * scope, and a relying party receives it (claim `entitlements`) only when the
 * person consented to that scope for that client.
 */
export type EntitlementRow = Selectable<OidcEntitlementsTable>;

export interface EntitlementClaim {
  scope: string;
  type: string;
  value: string;
  valid_until: string | null;
}

function today(now: Date): string {
  return now.toISOString().slice(0, 10);
}

/** The current (unrevoked, unexpired) entitlements of an account under some scopes. */
export async function currentEntitlements(db: Kysely<DB>, tenantId: string, accountId: string, scopes: readonly string[], now: Date): Promise<EntitlementRow[]> {
  if (!scopes.length) return [];
  return inTenant(db, tenantId, (trx) =>
    trx
      .selectFrom('oidc_entitlements')
      .selectAll()
      .where('account_id', '=', accountId)
      .where('scope', 'in', [...scopes])
      .where('revoked_at', 'is', null)
      .where((eb) => eb.or([eb('valid_until', 'is', null), eb('valid_until', '>=', today(now))]))
      .orderBy('scope')
      .orderBy('kind')
      .execute(),
  );
}

/** The same, as released in tokens and userinfo (claim `entitlements`). */
export async function entitlementClaims(db: Kysely<DB>, tenantId: string, accountId: string, scopes: readonly string[], now: Date): Promise<EntitlementClaim[]> {
  const rows = await currentEntitlements(db, tenantId, accountId, scopes, now);
  return rows.map((r) => ({ scope: r.scope, type: r.kind, value: r.value, valid_until: r.valid_until }));
}

export interface NewEntitlement {
  email: string;
  scope: string;
  kind: string;
  value: string;
  labelFr: string;
  labelEn: string;
  validUntil: string | null;
}

async function denied(deps: Deps, ctx: Ctx, action: 'oidc.entitlement.create' | 'oidc.entitlement.revoke' | 'oidc.entitlement.list', reason: string): Promise<never> {
  await appendAuditAlone(deps.db.db, ctx.tenant.id, { action, outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'oidc_entitlement', details: { reason } }, ctx.now);
  throw new AppError(ctx.actor ? 'forbidden' : 'signInRequired');
}

export async function grantEntitlement(deps: Deps, ctx: Ctx, input: NewEntitlement): Promise<string> {
  const d = decide(ctx.actor, 'oidc.entitlement.manage', { type: 'tenant' }, ctx.now);
  if (!d.allowed) return denied(deps, ctx, 'oidc.entitlement.create', d.reason ?? 'denied');
  // What the services trust about a person (a library card, a residency): as any console change, a fresh authentication.
  requireRecentAuth(ctx, undefined, { returnTo: '/admin/oidc/entitlements' });
  const errors: Record<string, 'invalidValue' | 'grantUnknownAccount'> = {};
  if (!SCOPE_SHAPE.test(input.scope) || (STANDARD_SCOPES as readonly string[]).includes(input.scope)) errors.scope = 'invalidValue';
  if (!/^[a-z][a-z0-9_.-]{1,63}$/.test(input.kind)) errors.kind = 'invalidValue';
  if (!input.value.trim() || input.value.length > 200) errors.value = 'invalidValue';
  if (!input.labelFr.trim() || input.labelFr.length > 200) errors.labelFr = 'invalidValue';
  if (!input.labelEn.trim() || input.labelEn.length > 200) errors.labelEn = 'invalidValue';
  if (input.validUntil && !/^\d{4}-\d{2}-\d{2}$/.test(input.validUntil)) errors.validUntil = 'invalidValue';
  if (Object.keys(errors).length) throw new ValidationError(errors);
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const acc = await trx.selectFrom('accounts').select(['id', 'status']).where('email', '=', input.email.trim().toLowerCase()).executeTakeFirst();
    if (!acc || acc.status !== 'active') throw new ValidationError({ email: 'grantUnknownAccount' });
    const r = await trx
      .insertInto('oidc_entitlements')
      .values({
        tenant_id: ctx.tenant.id,
        account_id: acc.id,
        scope: input.scope,
        kind: input.kind,
        value: input.value.trim(),
        label_fr: input.labelFr.trim(),
        label_en: input.labelEn.trim(),
        valid_until: input.validUntil,
        created_by: ctx.actor!.accountId,
        created_at: ctx.now,
        revoked_at: null,
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    await appendAudit(trx, ctx.tenant.id, { action: 'oidc.entitlement.create', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'oidc_entitlement', targetIds: [r.id, acc.id], details: { scope: input.scope, kind: input.kind, validUntil: input.validUntil } }, ctx.now);
    return r.id;
  }, ctx.actor!.accountId);
}

export async function revokeEntitlement(deps: Deps, ctx: Ctx, id: string): Promise<void> {
  const d = decide(ctx.actor, 'oidc.entitlement.manage', { type: 'tenant' }, ctx.now);
  if (!d.allowed) return denied(deps, ctx, 'oidc.entitlement.revoke', d.reason ?? 'denied');
  requireRecentAuth(ctx, undefined, { returnTo: '/admin/oidc/entitlements' });
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) throw new AppError('notFound');
  await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const r = await trx.updateTable('oidc_entitlements').set({ revoked_at: ctx.now }).where('id', '=', id).where('revoked_at', 'is', null).returning(['id', 'account_id']).executeTakeFirst();
    if (!r) throw new AppError('notFound');
    await appendAudit(trx, ctx.tenant.id, { action: 'oidc.entitlement.revoke', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'oidc_entitlement', targetIds: [r.id, r.account_id] }, ctx.now);
  }, ctx.actor!.accountId);
}

/** Every entitlement of the tenant, for its administrators. */
export async function listEntitlements(deps: Deps, ctx: Ctx): Promise<(EntitlementRow & { email: string })[]> {
  const d = decide(ctx.actor, 'oidc.entitlement.manage', { type: 'tenant' }, ctx.now);
  if (!d.allowed) return denied(deps, ctx, 'oidc.entitlement.list', d.reason ?? 'denied');
  // Up to 500 people's addresses and rights: read only by whoever has just proved who they are.
  requireRecentAuth(ctx, undefined, { returnTo: '/admin/oidc/entitlements' });
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    // People's addresses and rights: closed with the rest of the personal data at lockdown level 3 and up.
    const level = Number((await trx.selectFrom('tenants').select('lockdown_level').where('id', '=', ctx.tenant.id).executeTakeFirst())?.lockdown_level ?? 0);
    if (level >= 3) throw new AppError('closed');
    const rows = await trx.selectFrom('oidc_entitlements as e').innerJoin('accounts as a', 'a.id', 'e.account_id').selectAll('e').select('a.email').orderBy('e.created_at', 'desc').limit(500).execute();
    await appendAudit(trx, ctx.tenant.id, { action: 'oidc.entitlement.list', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'oidc_entitlement', targetIds: [...new Set(rows.map((r) => r.account_id))].slice(0, 500) }, ctx.now);
    return rows;
  }, ctx.actor!.accountId);
}

/** A person's own entitlements, current and past, for their account page. */
export async function ownEntitlements(deps: Deps, ctx: Ctx): Promise<EntitlementRow[]> {
  const d = decide(ctx.actor, 'oidc.entitlement.readOwn', { type: 'tenant' }, ctx.now);
  if (!d.allowed) throw new AppError(ctx.actor ? 'forbidden' : 'signInRequired');
  return inTenant(deps.db.db, ctx.tenant.id, (trx) => trx.selectFrom('oidc_entitlements').selectAll().where('account_id', '=', ctx.actor!.accountId).orderBy('created_at', 'desc').execute());
}

/* ------------------------------------------------------ consents given */

export interface ConnectedService {
  grantId: string;
  clientId: string;
  name: string;
  scopes: string[];
}

/** The services the person consented to (the provider's grants still in force), for their account page. */
export async function connectedServices(deps: Deps, ctx: Ctx): Promise<ConnectedService[]> {
  const actor = ctx.actor;
  if (!actor) throw new AppError('signInRequired');
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const grants = await trx
      .selectFrom('oidc_payloads')
      .select(['id', 'payload'])
      .where('model', '=', 'Grant')
      .where('account_id', '=', actor.accountId)
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', ctx.now)]))
      .execute();
    if (!grants.length) return [];
    const parsed = grants.map((g) => {
      const p = (typeof g.payload === 'string' ? JSON.parse(g.payload) : g.payload) as { clientId?: string; openid?: { scope?: string } };
      return { grantId: g.id, clientId: String(p.clientId ?? ''), scopes: String(p.openid?.scope ?? '').split(' ').filter(Boolean) };
    });
    const clients = await trx.selectFrom('oidc_clients').select(['client_id', 'name']).where('client_id', 'in', [...new Set(parsed.map((p) => p.clientId))]).execute();
    const names = new Map(clients.map((c) => [c.client_id, c.name]));
    return parsed.filter((p) => names.has(p.clientId)).map((p) => ({ ...p, name: names.get(p.clientId)! }));
  }, actor.accountId);
}

/**
 * Withdraws a consent: the grant and every code and token issued under it end
 * now; the service asks again at the next sign-in.
 */
export async function withdrawConsent(deps: Deps, ctx: Ctx, grantId: string): Promise<void> {
  const actor = ctx.actor;
  if (!actor) throw new AppError('signInRequired');
  if (!/^[A-Za-z0-9_-]{10,64}$/.test(grantId)) throw new AppError('notFound');
  const clientId = await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const g = await trx.selectFrom('oidc_payloads').select('payload').where('model', '=', 'Grant').where('id', '=', grantId).where('account_id', '=', actor.accountId).executeTakeFirst();
    if (!g) return null;
    const p = (typeof g.payload === 'string' ? JSON.parse(g.payload) : g.payload) as { clientId?: string };
    await trx.deleteFrom('oidc_payloads').where((eb) => eb.or([eb('grant_id', '=', grantId), eb.and([eb('model', '=', 'Grant'), eb('id', '=', grantId)])])).execute();
    await appendAudit(trx, ctx.tenant.id, { action: 'oidc.consent.withdraw', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'oidc_client', targetIds: [String(p.clientId ?? '').slice(0, 64)] }, ctx.now);
    return String(p.clientId ?? '');
  }, actor.accountId);
  if (clientId === null) {
    // Someone else's grant, or none: the same answer, and a record of the attempt.
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action: 'oidc.consent.withdraw', outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'oidc_grant', targetIds: [grantId.slice(0, 64)], details: { reason: 'not_found' } }, ctx.now);
    throw new AppError('notFound');
  }
}
