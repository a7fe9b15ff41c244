import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { InteractionDetails, Provider } from 'oidc-provider';
import type { AuthMethod } from '../access/actor.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import { inTenant } from '../db/tenant.ts';
import { originOf, type Deps } from '../context.ts';
import { reauthUrl } from '../identity/stepup.ts';
import { originFields, type Tenant } from '../tenants/service.ts';
import { pageEnv, sendPage } from '../web/render.tsx';
import { clientOrigins, findActiveClient, widenFormAction } from './clients.ts';
import { currentEntitlements } from './entitlements.ts';
import { endLapsedProviderSessions, endOrphanedProviderSessions, type EndedSessions } from './logout.ts';
import { ConsentPage, ExpiredPage } from './pages.tsx';
import { BRIDGE, OIDC_PREFIX, OidcProviders, type Bridge } from './provider.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** false: the route checks its own request forgery (the OpenID Connect endpoints, called by other sites by design). */
    csrf?: boolean;
  }
}

const CALLBACKS = new WeakMap<Provider, (req: IncomingMessage, res: ServerResponse) => void>();
function callbackOf(p: Provider) {
  let cb = CALLBACKS.get(p);
  if (!cb) CALLBACKS.set(p, (cb = p.callback()));
  return cb;
}

/** How the session authenticated, in RFC 8176 terms, for the ID token's amr. */
function amrOf(methods: readonly AuthMethod[]): string[] {
  const out = new Set<string>();
  for (const m of methods) {
    if (m === 'password') out.add('pwd');
    if (m === 'totp' || m === 'recovery') out.add('otp');
    if (m === 'passkey') out.add('hwk');
  }
  if (out.size > 1 || methods.includes('passkey')) out.add('mfa');
  return [...out];
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Runs the minute's sweep of lapsed sign-ins now (oidcRoutes, below). */
    endLapsedOidcSessions(): Promise<EndedSessions>;
  }
}

/**
 * The OpenID Connect provider of each tenant, at `<tenant host>/oidc`
 * (discovery at /oidc/.well-known/openid-configuration), and the pages where
 * a person signs in and consents. Sign-in is Guichet's own (password, second
 * factor, passkey, throttling): the interaction page sends the person to
 * /signin and takes the session it comes back with.
 */
export function oidcRoutes(app: FastifyInstance, deps: Deps) {
  const providers = new OidcProviders(deps);
  const issuerOf = (req: FastifyRequest) => `${req.ctx.baseUrl}${OIDC_PREFIX}`;
  // The tenants whose OpenID Connect endpoints this process has served, with the issuer their services know.
  const served = new Map<string, { tenant: Tenant; issuer: string }>();
  const providerFor = (req: FastifyRequest) => {
    served.set(req.ctx.tenant.id, { tenant: req.ctx.tenant, issuer: issuerOf(req) });
    return providers.get(req.ctx.tenant, issuerOf(req));
  };

  // A Guichet session that merely runs out (idle or absolute timeout) ends a sign-in without any request
  // to hang the hook below on: a sweep every minute tells the services of such people within the minute.
  // Several instances may sweep at once: each provider session is claimed by one DELETE … RETURNING.
  const sweep = () => endLapsedProviderSessions(deps, [...served.values()], providers, app.log);
  let sweeping: Promise<unknown> | null = null;
  const timer = setInterval(() => {
    sweeping ??= sweep().finally(() => (sweeping = null));
  }, 60_000);
  timer.unref();
  app.addHook('onClose', async () => {
    clearInterval(timer);
    await sweeping;
  });
  app.decorate('endLapsedOidcSessions', sweep);

  // The protocol endpoints, in a context of their own: the provider reads the
  // body itself (it must stay unread here), answers in JSON or with redirects,
  // and checks its own forgery tokens.
  app.register(async (child) => {
    child.removeAllContentTypeParsers();
    child.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
    child.route({
      method: ['GET', 'POST', 'OPTIONS'],
      url: `${OIDC_PREFIX}/*`,
      config: { csrf: false },
      handler: async (req, reply) => {
        const provider = await providerFor(req);
        // Guichet's security headers go with the provider's answers too (it adds a hash to the CSP for its own inline script).
        const origins = await clientOrigins(deps.db.db, req.ctx.tenant.id);
        for (const [k, v] of Object.entries(reply.getHeaders())) {
          if (v === undefined) continue;
          reply.raw.setHeader(k, k === 'content-security-policy' && typeof v === 'string' ? widenFormAction(v, origins) : (v as string | string[]));
        }
        const raw = req.raw as IncomingMessage & { originalUrl?: string; [BRIDGE]?: Bridge };
        raw[BRIDGE] = { req, reply };
        raw.originalUrl = raw.url;
        raw.url = (raw.url ?? '/').slice(OIDC_PREFIX.length) || '/';
        reply.hijack();
        callbackOf(provider)(raw, reply.raw);
      },
    });
  });

  // Every page's form may end, through redirects, at a relying party: see clientOrigins().
  app.addHook('onSend', async (req, reply, payload) => {
    if (!req.ctx) return payload;
    const csp = reply.getHeader('content-security-policy');
    if (typeof csp !== 'string') return payload;
    const origins = await clientOrigins(deps.db.db, req.ctx.tenant.id);
    if (origins.length) reply.header('content-security-policy', widenFormAction(csp, origins));
    return payload;
  });

  // Signing out of Guichet signs out of the provider too: this browser's provider session ends (the
  // tokens bound to it stop working), its grants are revoked as an RP-initiated logout would, and
  // every service with a back-channel address is told.
  app.addHook('preHandler', async (req) => {
    if (req.method !== 'POST' || req.routeOptions.url !== '/signout' || !req.ctx?.actor) return;
    const sessionId = req.cookies['guichet_oidc_session'];
    if (!sessionId || !/^[A-Za-z0-9_-]{10,64}$/.test(sessionId)) return;
    try {
      await endProviderSession(req, sessionId);
    } catch (err) {
      // Guichet's own sign-out goes ahead whatever happens here.
      req.log.error({ err }, 'ending the OpenID Connect session failed');
    }
  });

  // Any other change that can end a person's sign-ins (an administrator ending their sessions,
  // a role withdrawn, an account suspended, detection's response) is a POST of this application:
  // after each, the provider sessions of people left without a live Guichet session end too, and
  // the services they signed into are told (logout.ts). After the answer, so nobody waits on a
  // relying party's back-channel address.
  app.addHook('onResponse', async (req, reply) => {
    if (req.method !== 'POST' || reply.statusCode >= 400 || !req.ctx?.tenant || req.url.startsWith(OIDC_PREFIX)) return;
    try {
      await endOrphanedProviderSessions(deps, req.ctx.tenant.id, () => providerFor(req), originOf(req.ctx), deps.clock(), req.log);
    } catch (err) {
      req.log.error({ err }, 'ending the OpenID Connect sessions of ended sign-ins failed');
    }
  });

  const endProviderSession = async (req: FastifyRequest, sessionId: string) => {
    const actor = req.ctx.actor!;
    const tenantId = req.ctx.tenant.id;
    const row = await inTenant(deps.db.db, tenantId, (trx) => trx.selectFrom('oidc_payloads').select('payload').where('model', '=', 'Session').where('id', '=', sessionId).executeTakeFirst());
    if (!row) return;
    const session = (typeof row.payload === 'string' ? JSON.parse(row.payload) : row.payload) as { accountId?: string; authorizations?: Record<string, { sid?: string; grantId?: string; persistsLogout?: boolean }> };
    if (session.accountId !== actor.accountId) return;
    const provider = (await providerFor(req)) as Provider & { Client: { find(id: string): Promise<{ backchannelLogoutUri?: string; backchannelLogout(sub: string, sid: string | undefined): Promise<void> } | undefined> } };
    const told: string[] = [];
    for (const [clientId, auth] of Object.entries(session.authorizations ?? {})) {
      const client = await provider.Client.find(clientId);
      if (client?.backchannelLogoutUri) {
        await client.backchannelLogout(actor.accountId, auth.sid).then(
          () => told.push(clientId),
          (err: Error) => req.log.warn({ err, clientId }, 'back-channel logout failed'),
        );
      }
    }
    const grants = Object.values(session.authorizations ?? {}).filter((a) => a.grantId && !a.persistsLogout).map((a) => a.grantId!);
    await inTenant(deps.db.db, tenantId, async (trx) => {
      if (grants.length) await trx.deleteFrom('oidc_payloads').where((eb) => eb.or([eb('grant_id', 'in', grants), eb.and([eb('model', '=', 'Grant'), eb('id', 'in', grants)])])).execute();
      await trx.deleteFrom('oidc_payloads').where('model', '=', 'Session').where('id', '=', sessionId).execute();
      await appendAudit(trx, tenantId, { action: 'oidc.logout', outcome: 'success', ...originFields(originOf(req.ctx)), targetType: 'oidc_client', targetIds: Object.keys(session.authorizations ?? {}).slice(0, 50), details: { via: 'guichet_signout', backchannel: told.length } }, req.ctx.now);
    }, actor.accountId);
  };

  /* ------------------------------------------------------------ interactions */

  const expired = (req: FastifyRequest, reply: FastifyReply) => {
    const env = pageEnv(req, reply);
    return sendPage(reply, <ExpiredPage env={env} />, 400);
  };

  const details = async (req: FastifyRequest<{ Params: { uid: string } }>, reply: FastifyReply): Promise<{ provider: Provider; d: InteractionDetails } | null> => {
    const provider = await providerFor(req);
    try {
      const d = await provider.interactionDetails(req.raw, reply.raw);
      return d.uid === req.params.uid ? { provider, d } : null;
    } catch {
      return null;
    }
  };

  const interactionPath = (uid: string) => `${OIDC_PREFIX}/interaction/${uid}`;

  app.get<{ Params: { uid: string } }>(`${OIDC_PREFIX}/interaction/:uid`, async (req, reply) => {
    const found = await details(req, reply);
    if (!found) return expired(req, reply);
    const { provider, d } = found;
    const actor = req.ctx.actor;
    const back = interactionPath(d.uid);
    if (!actor) return reply.redirect(`/signin?return=${encodeURIComponent(back)}`, 303);

    if (d.prompt.name === 'login') {
      // prompt=login or an exceeded max_age: a fresh authentication, through Guichet's re-authentication page.
      const wantsFresh = d.prompt.reasons.includes('login_prompt') || d.prompt.reasons.includes('max_age');
      const authAt = actor.auth?.at ?? new Date(0);
      if (wantsFresh && req.ctx.now.getTime() - authAt.getTime() > 60_000) return reply.redirect(reauthUrl(back), 303);
      const url = await provider.interactionResult(
        req.raw,
        reply.raw,
        { login: { accountId: actor.accountId, amr: amrOf(actor.auth?.methods ?? ['password']), ts: Math.floor(authAt.getTime() / 1000) } },
        { mergeWithLastSubmission: false },
      );
      return reply.redirect(url, 303);
    }

    if (d.prompt.name === 'consent') {
      if (d.session?.accountId !== actor.accountId) return expired(req, reply);
      const clientId = String(d.params.client_id ?? '');
      const client = await findActiveClient(deps.db.db, req.ctx.tenant.id, clientId);
      if (!client) return expired(req, reply);
      const asked = String(d.params.scope ?? 'openid').split(' ').filter(Boolean);
      const missing = (d.prompt.details.missingOIDCScope as string[] | undefined) ?? asked;
      const scopes = ['openid', ...missing.filter((s) => s !== 'openid')];
      const extra = scopes.filter((s) => !['openid', 'email', 'profile', 'offline_access'].includes(s));
      const ents = await currentEntitlements(deps.db.db, req.ctx.tenant.id, actor.accountId, extra, req.ctx.now);
      const env = pageEnv(req, reply);
      const entitlements: Record<string, { label: string; validUntil: string | null }[]> = {};
      for (const s of extra) entitlements[s] = ents.filter((e) => e.scope === s).map((e) => ({ label: env.locale === 'fr' ? e.label_fr : e.label_en, validUntil: e.valid_until }));
      // The service's logo (registered over https) is the one image from elsewhere a page may show.
      const csp = reply.getHeader('content-security-policy');
      if (client.logo_uri && typeof csp === 'string') reply.header('content-security-policy', csp.replace("img-src 'self' data:", `img-src 'self' data: ${new URL(client.logo_uri).origin}`));
      return sendPage(reply, <ConsentPage env={env} view={{ uid: d.uid, clientName: client.name, logoUri: client.logo_uri, scopes, entitlements }} />);
    }
    return expired(req, reply);
  });

  app.post<{ Params: { uid: string }; Body: { decision?: string; scope?: string | string[] } }>(`${OIDC_PREFIX}/interaction/:uid/consent`, async (req, reply) => {
    const found = await details(req, reply);
    if (!found || found.d.prompt.name !== 'consent') return expired(req, reply);
    const { provider, d } = found;
    const actor = req.ctx.actor;
    if (!actor) return reply.redirect(`/signin?return=${encodeURIComponent(interactionPath(d.uid))}`, 303);
    if (d.session?.accountId !== actor.accountId) return expired(req, reply);
    const clientId = String(d.params.client_id ?? '');
    const body = req.body ?? {};
    const origin = originFields(originOf(req.ctx));

    if (body.decision !== 'allow') {
      await appendAuditAlone(deps.db.db, req.ctx.tenant.id, { action: 'oidc.consent', outcome: 'denied', ...origin, targetType: 'oidc_client', targetIds: [clientId.slice(0, 64)], details: { reason: 'refused_by_person' } }, req.ctx.now);
      const url = await provider.interactionResult(req.raw, reply.raw, { error: 'access_denied', error_description: 'End-User refused the request' }, { mergeWithLastSubmission: false });
      return reply.redirect(url, 303);
    }

    const missing = (d.prompt.details.missingOIDCScope as string[] | undefined) ?? [];
    const chosen = new Set((Array.isArray(body.scope) ? body.scope : body.scope ? [body.scope] : []).filter((s) => typeof s === 'string'));
    chosen.add('openid');
    const granted = missing.filter((s) => chosen.has(s));
    const rejected = missing.filter((s) => !chosen.has(s));
    const grant = (d.grantId ? await provider.Grant.find(d.grantId) : undefined) ?? new provider.Grant({ accountId: actor.accountId, clientId });
    if (granted.length) grant.addOIDCScope(granted.join(' '));
    if (rejected.length) grant.rejectOIDCScope(rejected.join(' '));
    const missingClaims = d.prompt.details.missingOIDCClaims as string[] | undefined;
    if (missingClaims?.length) grant.addOIDCClaims(missingClaims);
    const grantId = await grant.save();
    await appendAuditAlone(
      deps.db.db,
      req.ctx.tenant.id,
      { action: 'oidc.consent', outcome: 'success', ...origin, targetType: 'oidc_client', targetIds: [clientId.slice(0, 64)], details: { granted: granted.join(' '), rejected: rejected.join(' ') } },
      req.ctx.now,
    );
    const url = await provider.interactionResult(req.raw, reply.raw, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return reply.redirect(url, 303);
  });
}
