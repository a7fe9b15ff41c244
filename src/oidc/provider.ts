import { createHmac } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { sql } from 'kysely';
import type { KoaContextWithOIDC, Provider } from 'oidc-provider';
import { appendAuditAlone } from '../audit/log.ts';
import type { AuditAction, AuditOutcome } from '../audit/events.ts';
import { untrustedId } from '../audit/untrusted.ts';
import type { Deps } from '../context.ts';
import { inTenant } from '../db/tenant.ts';
import { signOut } from '../identity/service.ts';
import type { Tenant } from '../tenants/service.ts';
import { adapterFor } from './adapter.ts';
import { STANDARD_SCOPES } from './clients.ts';
import { entitlementClaims } from './entitlements.ts';
import { loadSigningKeys } from './keys.ts';
import { renderProviderPage } from './pages.tsx';

/** Where the provider lives under a tenant's host: the issuer is `<tenant base URL>/oidc`. */
export const OIDC_PREFIX = '/oidc';

/** What the Fastify side hands to the provider with each raw request. */
export interface Bridge {
  req: FastifyRequest;
  reply: FastifyReply;
}
export const BRIDGE = Symbol('guichet.oidc.bridge');

export function bridgeOf(ctx: KoaContextWithOIDC): Bridge | undefined {
  return (ctx.req as unknown as { [BRIDGE]?: Bridge })[BRIDGE];
}

/** What a request did, gathered from the provider's events, written to the audit log when it ends. */
interface Facts {
  error?: { error: string; description?: string; detail?: string };
  authorized?: boolean;
  granted?: boolean;
  revokedGrant?: string;
  loggedOut?: boolean;
  released: { use: string; claims: string[]; accountId: string }[];
}
const FACTS = new WeakMap<object, Facts>();
function factsOf(ctx: object): Facts {
  let f = FACTS.get(ctx);
  if (!f) FACTS.set(ctx, (f = { released: [] }));
  return f;
}

const TTL = {
  AccessToken: 10 * 60,
  AuthorizationCode: 60,
  IdToken: 10 * 60,
  Interaction: 15 * 60,
  RefreshToken: 14 * 24 * 3600,
  Session: 12 * 3600,
  Grant: 14 * 24 * 3600,
};

interface Built {
  provider: Provider;
  fingerprint: string;
  checkedAt: number;
}

/**
 * One oidc-provider instance per tenant, built on first use and rebuilt when
 * the tenant's signing keys or scopes change (checked every few seconds, so
 * a rotation made by the CLI or another instance is picked up).
 */
export class OidcProviders {
  private built = new Map<string, Promise<Built>>();
  constructor(
    private readonly deps: Deps,
    private readonly recheckMs = 5000,
  ) {}

  async get(tenant: Tenant, issuer: string): Promise<Provider> {
    const key = `${tenant.id} ${issuer}`;
    let p = this.built.get(key);
    if (p) {
      const b = await p;
      if (Date.now() - b.checkedAt < this.recheckMs) return b.provider;
      const fp = await this.fingerprint(tenant.id);
      if (fp.fingerprint === b.fingerprint) {
        b.checkedAt = Date.now();
        return b.provider;
      }
    }
    p = this.build(tenant, issuer);
    this.built.set(key, p);
    p.catch(() => this.built.delete(key));
    return (await p).provider;
  }

  private async scopes(tenantId: string): Promise<string[]> {
    const rows = await inTenant(this.deps.db.db, tenantId, (trx) =>
      sql<{ scope: string }>`SELECT DISTINCT s AS scope FROM (SELECT unnest(scopes) AS s FROM oidc_clients UNION SELECT scope FROM oidc_entitlements) x ORDER BY 1`.execute(trx),
    );
    const extra = rows.rows.map((r) => r.scope).filter((s) => !(STANDARD_SCOPES as readonly string[]).includes(s));
    return [...STANDARD_SCOPES, ...extra];
  }

  private async fingerprint(tenantId: string) {
    const keys = await loadSigningKeys(this.deps.db.db, this.deps.keys, tenantId, this.deps.clock());
    const scopes = await this.scopes(tenantId);
    return { keys, scopes, fingerprint: `${keys.fingerprint}|${scopes.join(' ')}` };
  }

  private async build(tenant: Tenant, issuer: string): Promise<Built> {
    const { keys, scopes, fingerprint } = await this.fingerprint(tenant.id);
    // Loaded on first use: commands that never serve OpenID Connect neither load it nor print its runtime notice.
    const lib = await import('oidc-provider');
    const provider = createProvider(lib, this.deps, tenant, issuer, keys.keys, scopes);
    return { provider, fingerprint, checkedAt: Date.now() };
  }
}

function createProvider(lib: typeof import('oidc-provider'), deps: Deps, tenant: Tenant, issuer: string, jwks: object[], scopes: string[]): Provider {
  const { Provider, interactionPolicy } = lib;
  const db = deps.db.db;
  const pairwiseKey = deps.keys.derive(`oidc-pairwise:${tenant.id}`);
  const secure = issuer.startsWith('https://');

  const policy = interactionPolicy.base();
  // Guichet's own session decides who is signed in: when it has ended (sign-out,
  // expiry, revocation by an administrator) or belongs to someone else, the
  // provider's session no longer counts and the person signs in again.
  policy.get('login')!.checks.add(
    new interactionPolicy.Check('guichet_session', 'the Guichet session ended', (ctx) => {
      const actor = bridgeOf(ctx)?.req.ctx.actor;
      return !actor || actor.accountId !== ctx.oidc.session?.accountId ? interactionPolicy.Check.REQUEST_PROMPT : interactionPolicy.Check.NO_NEED_TO_PROMPT;
    }),
  );

  const claims: Record<string, string[] | null> = { acr: null, amr: null, auth_time: null, sid: null, iss: null, openid: ['sub', 'amr'], email: ['email', 'email_verified'], profile: ['locale'] };
  for (const s of scopes) if (!(STANDARD_SCOPES as readonly string[]).includes(s)) claims[s] = ['entitlements'];

  const cookieOpts = { httpOnly: true, sameSite: 'lax', secure, path: '/' };
  const provider = new Provider(issuer, {
    adapter: adapterFor(db, deps.keys, tenant.id),
    clients: [],
    jwks: { keys: jwks },
    scopes,
    claims,
    subjectTypes: ['public', 'pairwise'],
    clientDefaults: { grant_types: ['authorization_code', 'refresh_token'], id_token_signed_response_alg: 'RS256', response_types: ['code'], token_endpoint_auth_method: 'client_secret_basic', subject_type: 'pairwise' },
    // The code flow only, with PKCE (S256) for every client, public or confidential.
    responseTypes: ['code'],
    // What the console registers: a secret sent in the Authorization header, or none (PKCE alone).
    clientAuthMethods: ['client_secret_basic', 'none'],
    pkce: { required: () => true },
    // Exact matching, and never guessed: redirect_uri must be sent even if only one is registered.
    allowOmittingSingleRegisteredRedirectUri: false,
    async pairwiseIdentifier(_ctx: unknown, accountId: string, client: { sectorIdentifier: string }) {
      return createHmac('sha256', pairwiseKey).update(`${client.sectorIdentifier}\0${accountId}`).digest('base64url');
    },
    cookies: {
      keys: [deps.keys.derive(`oidc-cookies:${tenant.id}`).toString('base64url')],
      names: { session: 'guichet_oidc_session', interaction: 'guichet_oidc_interaction', resume: 'guichet_oidc_resume' },
      long: cookieOpts,
      short: cookieOpts,
    },
    features: {
      devInteractions: { enabled: false },
      // Sender-constrained tokens are not offered: relying parties here are plain web applications.
      dPoP: { enabled: false },
      revocation: { enabled: true },
      userinfo: { enabled: true },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: async (ctx: KoaContextWithOIDC, form: string) => renderProviderPage(ctx, { kind: 'logout', form }),
        postLogoutSuccessSource: async (ctx: KoaContextWithOIDC) => renderProviderPage(ctx, { kind: 'loggedOut' }),
      },
    },
    renderError: async (ctx: KoaContextWithOIDC, out: { error: string; error_description?: string }) => renderProviderPage(ctx, { kind: 'error', error: out.error, description: out.error_description ?? '' }),
    interactions: {
      url: async (_ctx: unknown, interaction: { uid: string }) => `${OIDC_PREFIX}/interaction/${interaction.uid}`,
      policy,
    },
    // Every client allowed the refresh grant gets a refresh token, rotated on each use;
    // a rotated one used again ends the whole grant (oidc-provider's reuse detection).
    issueRefreshToken: async (_ctx: unknown, client: { grantTypeAllowed(g: string): boolean }) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: true,
    ttl: TTL,
    // oidc-provider refuses outgoing requests (back-channel logout) to special-use addresses, loopback
    // included. Outside production a loopback address is allowed, as it is for redirect URIs (a relying
    // party on the developer's machine); in production the protection stays whole.
    fetch: (url: string | URL, options: RequestInit & { dispatcher?: unknown }) => {
      if (!deps.config.production && isLoopback(new URL(url))) {
        const { dispatcher: _ssrf, ...rest } = options;
        return globalThis.fetch(url, rest);
      }
      return globalThis.fetch(url, options);
    },
    clientBasedCORS: (_ctx: unknown, origin: string, client: { redirectUris?: string[] }) => (client.redirectUris ?? []).some((u) => new URL(u).origin === origin),
    async findAccount(ctx: KoaContextWithOIDC, sub: string, token?: { expiresWithSession?: boolean }) {
      if (!/^[0-9a-f-]{36}$/.test(sub)) return undefined;
      const now = deps.clock();
      const found = await inTenant(db, tenant.id, async (trx) => {
        const acc = await trx.selectFrom('accounts').select(['id', 'email', 'email_verified_at', 'locale', 'status']).where('id', '=', sub).executeTakeFirst();
        // Tokens that live with the sign-in (all but offline_access) die with the person's Guichet
        // sign-ins: once every session has ended (signed out everywhere, ended by an administrator,
        // past its 8 or 12 hours), the services' refresh tokens and userinfo calls stop too.
        const live = token?.expiresWithSession
          ? await trx
              .selectFrom('sessions')
              .select(['id', 'last_seen_at'])
              .where('account_id', '=', sub)
              .where('revoked_at', 'is', null)
              .where('expires_at', '>', now)
              // Idle past its limit, a session has ended for Guichet (resolveSession): for the services too.
              .where(sql<boolean>`last_seen_at + idle_timeout_seconds * interval '1 second' > ${now}`)
              .orderBy('last_seen_at', 'desc')
              .limit(1)
              .executeTakeFirst()
          : true;
        // Using a service is activity, as a single sign-on session counts it: a service's refresh or userinfo call
        // keeps the person's latest Guichet session from going idle (touched once a minute at most, as a page does).
        if (live && live !== true && now.getTime() - live.last_seen_at.getTime() > 60_000) {
          await trx.updateTable('sessions').set({ last_seen_at: now }).where('id', '=', live.id).execute();
        }
        // A tenant locked down at level 3 or more has closed personal data: its provider still signs
        // people in (the subject alone), but releases no personal claim until the level comes down.
        const t = await trx.selectFrom('tenants').select('lockdown_level').where('id', '=', tenant.id).executeTakeFirst();
        return acc && live ? { ...acc, closed: Number(t?.lockdown_level ?? 0) >= 3 } : undefined;
      });
      const acc = found;
      if (!acc || acc.status !== 'active') return undefined;
      return {
        accountId: acc.id,
        async claims(use: string, scope: string) {
          const out: Record<string, unknown> = { sub: acc.id };
          // The code flow always issues an access token, so the ID token carries the subject only
          // (conformIdTokenClaims) and the consented claims go out at userinfo: read nothing more here.
          if (use === 'id_token' || acc.closed) return out;
          // What the service may have now: a scope an administrator has since removed from it is released no more,
          // whatever the person's grant or a refresh token issued before still says (the client is read afresh).
          const allowed = new Set(String((ctx.oidc?.client as { scope?: string } | undefined)?.scope ?? '').split(' '));
          const granted = new Set(scope.split(' ').filter((s) => allowed.has(s)));
          if (granted.has('email')) {
            out.email = acc.email;
            out.email_verified = !!acc.email_verified_at;
          }
          if (granted.has('profile')) out.locale = acc.locale === 'fr' ? 'fr-CA' : 'en-CA';
          const entitlementScopes = [...granted].filter((s) => !(STANDARD_SCOPES as readonly string[]).includes(s));
          if (entitlementScopes.length) out.entitlements = await entitlementClaims(db, tenant.id, acc.id, entitlementScopes, deps.clock());
          const released = Object.keys(out).filter((k) => k !== 'sub');
          if (released.length) factsOf(ctx).released.push({ use, claims: released, accountId: acc.id });
          return out;
        },
      };
    },
  });
  provider.proxy = process.env.TRUST_PROXY === '1';

  const noteError = (ctx: KoaContextWithOIDC, err: { error?: string; error_description?: string; error_detail?: string; message?: string }) => {
    factsOf(ctx).error = { error: err.error ?? 'server_error', ...(err.error_description ? { description: err.error_description } : {}), ...(err.error_detail ? { detail: err.error_detail } : !err.error && err.message ? { detail: err.message } : {}) };
  };
  for (const e of ['authorization.error', 'grant.error', 'userinfo.error', 'end_session.error', 'revocation.error', 'introspection.error', 'backchannel.error', 'server_error']) {
    provider.on(e, noteError as never);
  }
  provider.on('server_error', ((ctx: KoaContextWithOIDC, err: Error) => deps.log.error({ err, route: ctx.oidc?.route }, 'oidc provider error')) as never);
  provider.on('authorization.success', ((ctx: KoaContextWithOIDC) => (factsOf(ctx).authorized = true)) as never);
  provider.on('grant.success', ((ctx: KoaContextWithOIDC) => (factsOf(ctx).granted = true)) as never);
  provider.on('grant.revoked', ((ctx: KoaContextWithOIDC, grantId: string) => (factsOf(ctx).revokedGrant = grantId)) as never);
  provider.on('end_session.success', ((ctx: KoaContextWithOIDC) => (factsOf(ctx).loggedOut = true)) as never);

  provider.use(async (ctx, next) => {
    await next();
    const bridge = bridgeOf(ctx);
    // Signing out at the provider (logout=yes) signs out of Guichet too: one session, one sign-out. Only the
    // same person's: when someone else signed in to Guichet on this browser and goes on to a service, the provider
    // ends the previous person's provider session by itself (the same confirmation), and the one now signed in
    // stays signed in.
    const endedFor = (ctx.oidc?.session as { accountId?: string } | undefined)?.accountId;
    if (ctx.oidc?.route === 'end_session_confirm' && FACTS.get(ctx)?.loggedOut && ctx.oidc.params?.logout && bridge?.req.sessionToken && endedFor && endedFor === bridge.req.ctx.actor?.accountId) {
      await signOut(deps, bridge.req.ctx, bridge.req.sessionToken);
      const { cookies, secureCookies } = bridge.req.server.guichet;
      ctx.res.appendHeader('set-cookie', `${cookies.session}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0${secureCookies ? '; Secure' : ''}`);
    }
    await auditRequest(deps, tenant, ctx);
  });
  return provider;
}

function isLoopback(u: URL): boolean {
  return u.hostname === 'localhost' || u.hostname === '127.0.0.1' || u.hostname === '[::1]' || u.hostname.endsWith('.localhost');
}

const ROUTE_ACTIONS: Record<string, AuditAction> = {
  authorization: 'oidc.authorization',
  resume: 'oidc.authorization',
  token: 'oidc.token',
  userinfo: 'oidc.userinfo',
  end_session: 'oidc.logout',
  end_session_confirm: 'oidc.logout',
  revocation: 'oidc.revocation',
};

/**
 * One audit event per protocol request that touches a person or a token, and
 * one per release of claims: which client, for whom, what was issued or
 * refused (the standard error code), which claims left.
 */
async function auditRequest(deps: Deps, tenant: Tenant, ctx: KoaContextWithOIDC): Promise<void> {
  const route = ctx.oidc?.route;
  const facts = FACTS.get(ctx);
  const action = route ? ROUTE_ACTIONS[route] : undefined;
  if (!action && !facts?.error) return;
  // An authorization request that only led to our sign-in or consent page is recorded when it resumes;
  // a logout request that only showed the confirmation page, when the person answers.
  if ((route === 'authorization' || route === 'resume') && !facts?.authorized && !facts?.error) return;
  if (route === 'end_session' && !facts?.error) return;
  const bridge = bridgeOf(ctx);
  const e = ctx.oidc?.entities ?? {};
  const client = ctx.oidc?.client?.clientId ?? (typeof ctx.oidc?.params?.client_id === 'string' ? ctx.oidc.params.client_id : undefined);
  const accountId = e.AccessToken?.accountId ?? e.RefreshToken?.accountId ?? e.AuthorizationCode?.accountId ?? e.Account?.accountId ?? ctx.oidc?.session?.accountId ?? null;
  const reuse = facts?.error?.detail === 'refresh token already used';
  const outcome: AuditOutcome = facts?.error ? (facts.error.error === 'server_error' ? 'failure' : 'denied') : 'success';
  const origin = {
    actorAccountId: bridge?.req.ctx.actor?.accountId ?? null,
    actorRoles: client ? [`oidc_client:${untrustedId(client)}`] : ['anonymous'],
    ip: bridge?.req.ctx.ip ?? null,
    userAgent: bridge?.req.ctx.userAgent ?? null,
    requestId: bridge?.req.ctx.requestId ?? null,
  };
  const grantType = typeof ctx.oidc?.params?.grant_type === 'string' ? ctx.oidc.params.grant_type : null;
  const now = deps.clock();
  const details: Record<string, string | number | boolean | null> = { route: route ?? 'unknown', status: ctx.status };
  if (grantType) details.grantType = untrustedId(grantType);
  if (facts?.error) {
    details.error = untrustedId(facts.error.error);
    if (facts.error.detail) details.detail = facts.error.detail.slice(0, 200);
  }
  if (facts?.revokedGrant) details.grantRevoked = true;
  // « Yes, sign me out » ends the provider session and Guichet's; « No » only the one service's sign-in.
  if (route === 'end_session_confirm') details.signedOutEverywhere = !!ctx.oidc?.params?.logout;
  if (e.AccessToken) details.accessToken = true;
  if (e.RefreshToken) details.refreshToken = true;
  if (route === 'token' && !facts?.error) {
    details.scope = (e.AccessToken?.scope ?? '').slice(0, 500);
  }
  await appendAuditAlone(
    deps.db.db,
    tenant.id,
    {
      action: reuse ? 'oidc.refresh.reuse' : (action ?? 'oidc.authorization'),
      outcome,
      ...origin,
      onBehalfOf: accountId,
      targetType: 'oidc_client',
      targetIds: client ? [untrustedId(client)] : [],
      details,
    },
    now,
  );
  for (const r of facts?.released ?? []) {
    await appendAuditAlone(
      deps.db.db,
      tenant.id,
      { action: 'oidc.claims.release', outcome: 'success', ...origin, onBehalfOf: r.accountId, targetType: 'oidc_client', targetIds: client ? [untrustedId(client)] : [], fields: r.claims, purpose: `oidc:${r.use}`, details: { use: r.use } },
      now,
    );
  }
}
