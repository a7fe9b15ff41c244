import { createHash, randomBytes } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import { decide } from '../access/decide.ts';
import type { Action } from '../access/actions.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import type { AuditAction } from '../audit/events.ts';
import { untrustedId } from '../audit/untrusted.ts';
import { originOf, type Ctx, type Deps } from '../context.ts';
import type { KeyProvider } from '../crypto/keys.ts';
import type { Trx } from '../db/connection.ts';
import type { DB, OidcClientsTable } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError, ValidationError } from '../errors.ts';
import { requireRecentAuth } from '../identity/stepup.ts';
import { originFields } from '../tenants/service.ts';
import { lookAlike } from '../web/look-alikes.ts';
import type { Selectable } from 'kysely';

export type ClientRow = Selectable<OidcClientsTable>;

/** Scopes that release nothing about the person but a pairwise identifier (and the right to stay signed in). */
export const NON_PERSONAL_SCOPES: ReadonlySet<string> = new Set(['openid', 'offline_access']);
/** Scopes every provider knows; entitlement scopes are added per tenant (see entitlements.ts). */
export const STANDARD_SCOPES = ['openid', 'offline_access', 'email', 'profile'] as const;
export const SCOPE_SHAPE = /^[a-z][a-z0-9_]{1,39}$/;

export function isPersonal(scopes: readonly string[]): boolean {
  return scopes.some((s) => !NON_PERSONAL_SCOPES.has(s));
}

function secretContext(tenantId: string, clientId: string): string {
  return `oidc-client-secret:${tenantId}:${clientId}`;
}

/** A client secret as stored: wrapped by the key provider, bound to its tenant and client. */
export function wrapClientSecret(keys: KeyProvider, tenantId: string, clientId: string, secret: string): Promise<Buffer> {
  return keys.wrap(Buffer.from(secret, 'utf8'), secretContext(tenantId, clientId));
}

export async function findActiveClient(db: Kysely<DB>, tenantId: string, clientId: string): Promise<ClientRow | undefined> {
  if (!/^[A-Za-z0-9_-]{16,64}$/.test(clientId)) return undefined;
  return inTenant(db, tenantId, (trx) => trx.selectFrom('oidc_clients').selectAll().where('client_id', '=', clientId).where('status', '=', 'active').executeTakeFirst());
}

/**
 * A registered client as oidc-provider's client metadata. Only what Guichet
 * allows: the authorization code flow (PKCE is required for every client, see
 * provider.ts), refresh tokens, the registered redirect URIs compared exactly,
 * pairwise subjects unless registered otherwise.
 */
export async function clientMetadata(keys: KeyProvider, c: ClientRow): Promise<Record<string, unknown>> {
  const secret = c.secret_wrapped ? (await keys.unwrap(c.secret_wrapped, secretContext(c.tenant_id, c.client_id))).toString('utf8') : null;
  return {
    client_id: c.client_id,
    ...(secret ? { client_secret: secret, token_endpoint_auth_method: 'client_secret_basic' } : { token_endpoint_auth_method: 'none' }),
    client_name: c.name,
    ...(c.logo_uri ? { logo_uri: c.logo_uri } : {}),
    redirect_uris: c.redirect_uris,
    post_logout_redirect_uris: c.post_logout_redirect_uris,
    ...(c.backchannel_logout_uri ? { backchannel_logout_uri: c.backchannel_logout_uri, backchannel_logout_session_required: true } : {}),
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    scope: c.scopes.join(' '),
    subject_type: c.subject_type,
    application_type: 'web',
  };
}

/* ------------------------------------------------- form-action of the pages */

const ORIGINS_TTL_MS = 5000;
const originsCache = new Map<string, { at: number; origins: Promise<string[]> }>();

/**
 * The origins the tenant's active relying parties receive people at (their
 * redirect and post-logout addresses). A sign-in, consent or logout form ends
 * with a redirect to one of them, and browsers apply the page's CSP
 * form-action to that redirect too: Guichet's pages allow exactly these
 * besides 'self'.
 */
export function clientOrigins(db: Kysely<DB>, tenantId: string): Promise<string[]> {
  const hit = originsCache.get(tenantId);
  if (hit && Date.now() - hit.at < ORIGINS_TTL_MS) return hit.origins;
  const origins = inTenant(db, tenantId, (trx) => trx.selectFrom('oidc_clients').select(['redirect_uris', 'post_logout_redirect_uris']).where('status', '=', 'active').execute()).then((rows) => {
    const set = new Set<string>();
    for (const r of rows) for (const u of [...r.redirect_uris, ...r.post_logout_redirect_uris]) set.add(new URL(u).origin);
    return [...set].sort();
  });
  originsCache.set(tenantId, { at: Date.now(), origins });
  origins.catch(() => originsCache.delete(tenantId));
  return origins;
}

export function forgetClientOrigins(tenantId: string): void {
  originsCache.delete(tenantId);
}

export function widenFormAction(csp: string, origins: readonly string[]): string {
  if (!origins.length) return csp;
  return csp.replace(/form-action 'self'/, `form-action 'self' ${origins.join(' ')}`);
}

/* ------------------------------------------------------------- registration */

export interface NewClient {
  name: string;
  redirectUris: string[];
  postLogoutRedirectUris: string[];
  scopes: string[];
  logoUri: string | null;
  backchannelLogoutUri: string | null;
  /** A confidential client (a server) gets a secret; a public one (a browser or mobile app) relies on PKCE alone. */
  confidential: boolean;
}

/** An https URL, or http on a loopback name for development; no fragment. The provider compares redirect URIs exactly. */
export function checkRedirectUri(raw: string, production: boolean): boolean {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return false;
  }
  if (u.hash || u.username || u.password || raw.length > 500) return false;
  if (u.protocol === 'https:') return true;
  const loopback = u.hostname === 'localhost' || u.hostname === '127.0.0.1' || u.hostname === '[::1]' || u.hostname.endsWith('.localhost');
  return u.protocol === 'http:' && loopback && !production;
}

async function refuse(deps: Deps, ctx: Ctx, action: AuditAction, targetIds: string[], reason: string, error: AppError): Promise<never> {
  await appendAuditAlone(deps.db.db, ctx.tenant.id, { action, outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'oidc_client', targetIds: targetIds.map(untrustedId), details: { reason } }, ctx.now);
  throw error;
}

async function check(deps: Deps, ctx: Ctx, action: Action, audited: AuditAction, targetIds: string[]): Promise<void> {
  const d = decide(ctx.actor, action, { type: 'tenant' }, ctx.now);
  if (!d.allowed) await refuse(deps, ctx, audited, targetIds, d.reason ?? 'denied', new AppError(ctx.actor ? 'forbidden' : 'signInRequired'));
}

/** The checks every registration and every edit pass: bad input names its field, nothing is written. */
export function validateClient(input: Omit<NewClient, 'confidential'>, production: boolean): void {
  const errors: Record<string, 'invalidValue' | 'nameLookAlike'> = {};
  if (!input.name.trim() || input.name.length > 120) errors.name = 'invalidValue';
  // The name is what a person reads on the consent page: it must not pass for another service's.
  else if (lookAlike(input.name)) errors.name = 'nameLookAlike';
  if (!input.redirectUris.length || input.redirectUris.length > 10 || !input.redirectUris.every((u) => checkRedirectUri(u, production))) errors.redirectUris = 'invalidValue';
  // Pairwise identifiers are computed per host: every redirect URI on one host.
  else if (new Set(input.redirectUris.map((u) => new URL(u).host)).size > 1) errors.redirectUris = 'invalidValue';
  if (input.postLogoutRedirectUris.length > 10 || !input.postLogoutRedirectUris.every((u) => checkRedirectUri(u, production))) errors.postLogoutRedirectUris = 'invalidValue';
  if (!input.scopes.includes('openid') || input.scopes.length > 20 || !input.scopes.every((s) => SCOPE_SHAPE.test(s))) errors.scopes = 'invalidValue';
  if (input.logoUri && (!checkRedirectUri(input.logoUri, production) || !input.logoUri.startsWith('https://'))) errors.logoUri = 'invalidValue';
  if (input.backchannelLogoutUri && !checkRedirectUri(input.backchannelLogoutUri, production)) errors.backchannelLogoutUri = 'invalidValue';
  if (Object.keys(errors).length) throw new ValidationError(errors);
}

/**
 * Registers a relying party. One that may receive personal claims waits for a
 * second administrator (approveClient); the secret is returned once, here,
 * and kept only wrapped by the key provider.
 */
export async function registerClient(deps: Deps, ctx: Ctx, input: NewClient): Promise<{ clientId: string; secret: string | null; status: 'pending' | 'active' }> {
  await check(deps, ctx, 'oidc.client.create', 'oidc.client.create', []);
  requireRecentAuth(ctx);
  validateClient(input, deps.config.production);

  const clientId = randomBytes(18).toString('base64url');
  const secret = input.confidential ? randomBytes(32).toString('base64url') : null;
  const personal = isPersonal(input.scopes);
  const status = personal ? 'pending' : 'active';
  const actor = ctx.actor!;
  await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    await trx
      .insertInto('oidc_clients')
      .values({
        tenant_id: ctx.tenant.id,
        client_id: clientId,
        name: input.name.trim(),
        redirect_uris: input.redirectUris,
        post_logout_redirect_uris: input.postLogoutRedirectUris,
        scopes: [...new Set(input.scopes)],
        logo_uri: input.logoUri,
        backchannel_logout_uri: input.backchannelLogoutUri,
        secret_wrapped: secret ? await wrapClientSecret(deps.keys, ctx.tenant.id, clientId, secret) : null,
        personal,
        status,
        requested_by: actor.accountId,
        requested_at: ctx.now,
        approved_by: null,
        approved_at: null,
      })
      .execute();
    await appendAudit(trx, ctx.tenant.id, { action: 'oidc.client.create', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'oidc_client', targetIds: [clientId], details: { personal, status, scopes: input.scopes.join(' '), confidential: input.confidential } }, ctx.now);
  }, actor.accountId);
  forgetClientOrigins(ctx.tenant.id);
  return { clientId, secret, status };
}

export async function listClients(deps: Deps, ctx: Ctx): Promise<ClientRow[]> {
  await check(deps, ctx, 'oidc.client.list', 'oidc.client.list', []);
  return inTenant(deps.db.db, ctx.tenant.id, (trx) => trx.selectFrom('oidc_clients').selectAll().orderBy('requested_at', 'desc').execute());
}

export async function getClient(deps: Deps, ctx: Ctx, clientId: string): Promise<ClientRow> {
  await check(deps, ctx, 'oidc.client.list', 'oidc.client.list', [clientId]);
  const c = /^[A-Za-z0-9_-]{16,64}$/.test(clientId) ? await inTenant(deps.db.db, ctx.tenant.id, (trx) => trx.selectFrom('oidc_clients').selectAll().where('client_id', '=', clientId).executeTakeFirst()) : undefined;
  if (!c) throw new AppError('notFound');
  return c;
}

export type ClientDecision = 'approve' | 'refuse' | 'disable';

/**
 * What an approver read: a digest of everything an approval lets through
 * (name, addresses, scopes, logo, and what waits). The review page carries it
 * in its form; an approval is refused if the client changed since, so that
 * an edit made between the reading and the click is not approved unread.
 */
export function reviewVersion(c: ClientRow): string {
  const seen = [c.status, c.name, c.redirect_uris, c.post_logout_redirect_uris, c.scopes, c.logo_uri, c.backchannel_logout_uri, c.pending_scopes, c.pending_redirect_uris, c.requested_by, c.pending_requested_by];
  return createHash('sha256').update(JSON.stringify(seen)).digest('base64url').slice(0, 22);
}

/** In the deciding transaction: locks the row and says whether it is still what the approver reviewed. */
async function stillAsReviewed(trx: Trx, clientId: string, reviewed: string | undefined): Promise<boolean> {
  const row = await trx.selectFrom('oidc_clients').selectAll().where('client_id', '=', clientId).forUpdate().executeTakeFirst();
  return !!row && reviewed === reviewVersion(row);
}

/**
 * The second administrator's decision on a pending client, or ending an
 * active one. Approval: a current administrator other than the requester,
 * authenticated with a second factor in the last five minutes; the database
 * refuses a self-approval too (oidc_clients_guard).
 */
export async function decideClient(deps: Deps, ctx: Ctx, clientId: string, decision: ClientDecision, reviewed?: string): Promise<void> {
  const audited: AuditAction = decision === 'approve' ? 'oidc.client.approve' : decision === 'refuse' ? 'oidc.client.refuse' : 'oidc.client.disable';
  await check(deps, ctx, decision === 'approve' ? 'oidc.client.approve' : 'oidc.client.create', audited, [clientId]);
  const c = await getClient(deps, ctx, clientId);
  // Every decision, not only approval: disabling a service ends every sign-in to it, and a stale session alone must not.
  requireRecentAuth(ctx);
  const actor = ctx.actor!;
  if (decision !== 'disable' && c.status !== 'pending') await refuse(deps, ctx, audited, [clientId], 'not_pending', new ValidationError({ _: 'grantDecided' }));
  if (decision === 'disable' && c.status !== 'active') await refuse(deps, ctx, audited, [clientId], 'not_active', new ValidationError({ _: 'grantDecided' }));
  if (decision === 'approve' && c.requested_by === actor.accountId) await refuse(deps, ctx, audited, [clientId], 'self_approval', new AppError('forbidden'));
  const done = await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    if (decision === 'approve' && !(await stillAsReviewed(trx, clientId, reviewed))) return false;
    const status = decision === 'approve' ? 'active' : decision === 'refuse' ? 'refused' : 'disabled';
    await trx
      .updateTable('oidc_clients')
      .set({ status, ...(decision === 'approve' ? { approved_by: actor.accountId, approved_at: ctx.now } : {}) })
      .where('client_id', '=', clientId)
      .execute();
    if (decision === 'disable') {
      // A disabled client's tokens stop working now, not when they expire.
      await trx.deleteFrom('oidc_payloads').where(sql<string>`payload->>'clientId'`, '=', clientId).where('model', 'in', ['AccessToken', 'RefreshToken', 'AuthorizationCode', 'Grant']).execute();
    }
    await appendAudit(trx, ctx.tenant.id, { action: audited, outcome: 'success', ...originFields(originOf(ctx)), targetType: 'oidc_client', targetIds: [clientId], details: { personal: c.personal } }, ctx.now);
    return true;
  }, actor.accountId);
  if (!done) await refuse(deps, ctx, audited, [clientId], 'changed_since_review', new ValidationError({ _: 'clientChangedSinceReview' }));
  forgetClientOrigins(ctx.tenant.id);
}

/* --------------------------------------------------------------- editing */

export type ClientEdit = Omit<NewClient, 'confidential'>;

/** The personal scopes an edit adds to those in force: what needs a second administrator. */
export function widenedScopes(current: readonly string[], next: readonly string[]): string[] {
  return next.filter((s) => !NON_PERSONAL_SCOPES.has(s) && !current.includes(s));
}

/**
 * An administrator edits a client: name, addresses, logo, back-channel
 * address and scopes. Narrowing, or adding only non-personal scopes, applies
 * at once. Adding a personal scope to an active client, or a redirect address
 * to an active client that receives personal claims, goes through the same
 * dual control as registering such a client: the rest of the edit applies,
 * the scopes (pending_scopes) and the addresses (pending_redirect_uris) wait
 * for a second administrator, and the client keeps working with what it had.
 * A pending client is still waiting for its approval: the edit applies to
 * what will be approved, and its editor becomes the one who asked for it (so
 * may not approve it).
 */
export async function updateClient(deps: Deps, ctx: Ctx, clientId: string, input: ClientEdit): Promise<{ scopesPending: boolean }> {
  await check(deps, ctx, 'oidc.client.update', 'oidc.client.update', [clientId]);
  const c = await getClient(deps, ctx, clientId);
  requireRecentAuth(ctx);
  if (c.status !== 'active' && c.status !== 'pending') await refuse(deps, ctx, 'oidc.client.update', [clientId], `status_${c.status}`, new ValidationError({ _: 'grantDecided' }));
  validateClient(input, deps.config.production);
  const scopes = [...new Set(input.scopes)];
  const widened = c.status === 'active' ? widenedScopes(c.scopes, scopes) : [];
  const addedUris = c.status === 'active' && (c.personal || isPersonal(scopes)) ? input.redirectUris.filter((u) => !c.redirect_uris.includes(u)) : [];
  const held = widened.length > 0 || addedUris.length > 0;
  const actor = ctx.actor!;
  const fields = {
    name: input.name.trim(),
    // New addresses wait with the approval; removing some applies now.
    redirect_uris: addedUris.length ? c.redirect_uris.filter((u) => input.redirectUris.includes(u)) : input.redirectUris,
    post_logout_redirect_uris: input.postLogoutRedirectUris,
    logo_uri: input.logoUri,
    backchannel_logout_uri: input.backchannelLogoutUri,
  };
  if (addedUris.length && fields.redirect_uris.length === 0) {
    // Every address replaced: the client keeps its old ones until the new ones are approved.
    fields.redirect_uris = c.redirect_uris;
  }
  const changed = (Object.keys(fields) as (keyof typeof fields)[]).filter((k) => JSON.stringify(fields[k]) !== JSON.stringify(c[k]));
  await inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      if (held) {
        // What can apply now applies now: a scope removed stops at once, even beside one added; what widens waits,
        // whole, for a second administrator (refused, the narrowed set stays).
        const scopesNow = widened.length ? c.scopes.filter((s) => scopes.includes(s)) : scopes;
        await trx
          .updateTable('oidc_clients')
          .set({
            ...fields,
            scopes: scopesNow,
            personal: isPersonal(scopesNow),
            pending_scopes: scopes,
            pending_redirect_uris: addedUris.length ? input.redirectUris : null,
            pending_requested_by: actor.accountId,
            pending_requested_at: ctx.now,
          })
          .where('client_id', '=', clientId)
          .execute();
        if (JSON.stringify(scopesNow) !== JSON.stringify(c.scopes)) changed.push('scopes' as never);
        await appendAudit(
          trx,
          ctx.tenant.id,
          {
            action: 'oidc.client.scopes.request',
            outcome: 'success',
            ...originFields(originOf(ctx)),
            targetType: 'oidc_client',
            targetIds: [clientId],
            details: { scopes: scopes.join(' '), widened: widened.join(' '), from: c.scopes.join(' '), ...(addedUris.length ? { redirect_uris: input.redirectUris.join(' '), added_redirect_uris: addedUris.join(' ') } : {}) },
          },
          ctx.now,
        );
      } else {
        await trx
          .updateTable('oidc_clients')
          .set({
            ...fields,
            scopes,
            personal: c.status === 'pending' ? isPersonal(scopes) || c.personal : isPersonal(scopes),
            pending_scopes: null,
            pending_redirect_uris: null,
            pending_requested_by: null,
            pending_requested_at: null,
            // A pending client is approved as it stands: whoever changes it asked for it, and someone else approves it (0043).
            ...(c.status === 'pending' && (changed.length || JSON.stringify(scopes) !== JSON.stringify(c.scopes)) ? { requested_by: actor.accountId, requested_at: ctx.now } : {}),
          })
          .where('client_id', '=', clientId)
          .execute();
        if (JSON.stringify(scopes) !== JSON.stringify(c.scopes)) changed.push('scopes' as never);
      }
      await appendAudit(trx, ctx.tenant.id, { action: 'oidc.client.update', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'oidc_client', targetIds: [clientId], details: { changed: changed.join(' '), scopes_pending: widened.length > 0, redirect_uris_pending: addedUris.length > 0 } }, ctx.now);
    },
    actor.accountId,
  );
  forgetClientOrigins(ctx.tenant.id);
  return { scopesPending: held };
}

/** A second administrator approves or refuses the personal scopes, or the redirect addresses, another asked to add. */
export async function decideScopes(deps: Deps, ctx: Ctx, clientId: string, decision: 'approve' | 'refuse', reviewed?: string): Promise<void> {
  await check(deps, ctx, 'oidc.client.approve', 'oidc.client.approve', [clientId]);
  const c = await getClient(deps, ctx, clientId);
  requireRecentAuth(ctx);
  const actor = ctx.actor!;
  if (!c.pending_scopes || c.status !== 'active') await refuse(deps, ctx, 'oidc.client.approve', [clientId], 'no_pending_scopes', new ValidationError({ _: 'grantDecided' }));
  if (decision === 'approve' && c.pending_requested_by === actor.accountId) await refuse(deps, ctx, 'oidc.client.approve', [clientId], 'self_approval', new AppError('forbidden'));
  const done = await inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      if (decision === 'approve' && !(await stillAsReviewed(trx, clientId, reviewed))) return false;
      if (decision === 'approve') {
        await trx
          .updateTable('oidc_clients')
          .set({
            scopes: c.pending_scopes!,
            personal: isPersonal(c.pending_scopes!),
            ...(c.pending_redirect_uris ? { redirect_uris: c.pending_redirect_uris } : {}),
            pending_redirect_uris: null,
            requested_by: c.pending_requested_by!,
            requested_at: c.pending_requested_at!,
            approved_by: actor.accountId,
            approved_at: ctx.now,
            pending_scopes: null,
            pending_requested_by: null,
            pending_requested_at: null,
          })
          .where('client_id', '=', clientId)
          .execute();
      } else {
        await trx.updateTable('oidc_clients').set({ pending_scopes: null, pending_redirect_uris: null, pending_requested_by: null, pending_requested_at: null }).where('client_id', '=', clientId).execute();
      }
      await appendAudit(trx, ctx.tenant.id, { action: decision === 'approve' ? 'oidc.client.approve' : 'oidc.client.refuse', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'oidc_client', targetIds: [clientId], details: { scopes: c.pending_scopes!.join(' '), widening: true, ...(c.pending_redirect_uris ? { redirect_uris: c.pending_redirect_uris.join(' ') } : {}) } }, ctx.now);
      return true;
    },
    actor.accountId,
  );
  if (!done) await refuse(deps, ctx, 'oidc.client.approve', [clientId], 'changed_since_review', new ValidationError({ _: 'clientChangedSinceReview' }));
}

/**
 * A new secret for a confidential client, shown once. The old one stops
 * working at once: the provider reads the client from the database at each
 * request (adapter.ts), so no cached copy lets the old secret through. The
 * relying party's operator changes it on their side in the same moment.
 */
export async function rotateClientSecret(deps: Deps, ctx: Ctx, clientId: string): Promise<string> {
  await check(deps, ctx, 'oidc.client.update', 'oidc.client.secret.rotate', [clientId]);
  const c = await getClient(deps, ctx, clientId);
  requireRecentAuth(ctx);
  if (!c.secret_wrapped) await refuse(deps, ctx, 'oidc.client.secret.rotate', [clientId], 'public_client', new ValidationError({ _: 'invalidValue' }));
  if (c.status === 'refused' || c.status === 'disabled') await refuse(deps, ctx, 'oidc.client.secret.rotate', [clientId], `status_${c.status}`, new ValidationError({ _: 'grantDecided' }));
  const secret = randomBytes(32).toString('base64url');
  const wrapped = await wrapClientSecret(deps.keys, ctx.tenant.id, clientId, secret);
  await inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      await trx.updateTable('oidc_clients').set({ secret_wrapped: wrapped, secret_rotated_at: ctx.now }).where('client_id', '=', clientId).execute();
      await appendAudit(trx, ctx.tenant.id, { action: 'oidc.client.secret.rotate', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'oidc_client', targetIds: [clientId], details: { grace_seconds: 0 } }, ctx.now);
    },
    ctx.actor!.accountId,
  );
  return secret;
}
