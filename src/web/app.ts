import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyCookie from '@fastify/cookie';
import fastifyCsrf from '@fastify/csrf-protection';
import fastifyFormbody from '@fastify/formbody';
import fastifyHelmet from '@fastify/helmet';
import fastifyStatic from '@fastify/static';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Ctx, Deps } from '../context.ts';
import { AppError, ValidationError } from '../errors.ts';
import { resolveSession } from '../identity/service.ts';
import { StepUpRequired, stepUpRedirect } from '../identity/stepup.ts';
import { isTokenShaped } from '../identity/tokens.ts';
import { isLocale, type Locale } from './i18n/index.ts';
import { metricsRoutes } from './metrics.ts';
import { CSP_REPORT_PATH, cspReportRoutes } from './csp-report.ts';
import { recordRefusedObjectRequests } from './refusals.ts';
import { errorPage } from './pages.tsx';
import { CLEAR_SITE_DATA } from './render.tsx';

declare module 'fastify' {
  interface FastifyRequest {
    ctx: Ctx;
    /** The session cookie's token, when it named a live session. */
    sessionToken: string | null;
    /** What CSRF tokens are bound to: the session, or "anonymous". */
    csrfUser: string;
  }
  interface FastifyInstance {
    guichet: Deps & { cookies: CookieNames; secureCookies: boolean };
  }
}

export interface CookieNames {
  session: string;
  csrf: string;
  lang: string;
}

const ASSETS = join(fileURLToPath(new URL('.', import.meta.url)), 'assets');

export type RouteModule = (app: FastifyInstance, deps: Deps) => void | Promise<void>;

export async function buildApp(deps: Deps, routes: RouteModule[]): Promise<FastifyInstance> {
  const secureCookies = deps.config.publicUrl ? deps.config.publicUrl.startsWith('https://') : deps.config.production;
  // The __Host- prefix pins a cookie to this host and path /, over HTTPS only.
  const prefix = secureCookies ? '__Host-' : '';
  const cookies: CookieNames = { session: `${prefix}guichet_session`, csrf: `${prefix}guichet_csrf`, lang: 'guichet_lang' };

  const app = Fastify({
    loggerInstance: deps.log as FastifyBaseLogger,
    genReqId: () => randomUUID(),
    bodyLimit: 64 * 1024,
    trustProxy: process.env.TRUST_PROXY === '1',
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // The router answers a broken %-escape or an over-long parameter with a bare JSON error, before any
    // hook runs (no page, no security headers). Such a path names nothing here: route it to "not found".
    rewriteUrl: (req) => routableUrl(req.url ?? '/'),
  });
  app.decorate('guichet', { ...deps, cookies, secureCookies });
  app.decorateRequest('ctx', null as unknown as Ctx);
  app.decorateRequest('sessionToken', null);
  app.decorateRequest('csrfUser', 'anonymous');

  await app.register(fastifyHelmet, {
    // A policy per response (ASVS 3.4.3 at level 3): scripts and style sheets run only with the nonce drawn for
    // this answer (reply.cspNonce, 128 random bits each), carried by the page frame's own tags. A tag injected
    // into a page, even one naming a file of /assets/, has no nonce and is refused.
    enableCSPNonces: true,
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'none'"],
        // The nonce is the only source: helmet adds 'nonce-…' to these two for every answer.
        scriptSrc: [],
        styleSrc: [],
        imgSrc: ["'self'", 'data:'],
        fontSrc: ["'self'"],
        connectSrc: ["'self'"],
        formAction: ["'self'"],
        frameAncestors: ["'none'"],
        baseUri: ["'none'"],
        objectSrc: ["'none'"],
        // Violations are reported to this server at once (src/web/csp-report.ts). Not report-to: where a browser has
        // both it prefers report-to, whose reports it queues for up to a minute.
        reportUri: [CSP_REPORT_PATH],
        ...(secureCookies ? { upgradeInsecureRequests: [] } : {}),
      },
    },
    strictTransportSecurity: secureCookies ? { maxAge: 63072000, includeSubDomains: true } : false,
    referrerPolicy: { policy: 'same-origin' },
    crossOriginEmbedderPolicy: false,
    frameguard: { action: 'deny' },
  });
  await app.register(fastifyCookie);
  await app.register(fastifyFormbody, { bodyLimit: 64 * 1024 });
  // The pages take urlencoded forms only: any other body (JSON, text/plain, …) is refused with 415.
  // An API, when it comes, registers its own JSON parser inside its own prefix.
  app.removeContentTypeParser(['text/plain', 'application/json']);
  await app.register(fastifyCsrf, {
    sessionPlugin: '@fastify/cookie',
    cookieKey: cookies.csrf,
    cookieOpts: { path: '/', sameSite: 'lax', httpOnly: true, secure: secureCookies },
    csrfOpts: { hmacKey: deps.keys.derive('csrf') },
    getUserInfo: (req) => req.csrfUser,
    getToken: (req) => (req.body as Record<string, unknown> | undefined)?._csrf as string | undefined,
  });
  await app.register(fastifyStatic, { root: ASSETS, prefix: '/assets/', index: false, maxAge: '1h', decorateReply: false });

  // Tenant, language and session: resolved once, before any route runs.
  app.addHook('onRequest', async (req, reply) => {
    // Probes and the metrics scrape are not a tenant's pages: no tenant, session or language.
    // Nor are the browsers' CSP violation reports, which must cost no database work.
    if (req.url.startsWith('/assets/') || req.url === '/healthz' || req.url === '/readyz' || req.url === '/metrics' || req.url.startsWith('/metrics?') || req.url === CSP_REPORT_PATH) return;
    const now = deps.clock();
    const tenant = await deps.tenants.forHost(req.headers.host);
    if (!tenant) {
      return reply.code(404).type('text/plain; charset=utf-8').send('Guichet: no such service / aucun service à cette adresse');
    }
    const q = req.query as Record<string, unknown>;
    let locale: Locale | null = null;
    if (isLocale(q.lang)) {
      locale = q.lang;
      reply.setCookie(cookies.lang, q.lang, { path: '/', sameSite: 'lax', httpOnly: true, secure: secureCookies, maxAge: 365 * 86400 });
    } else if (isLocale(req.cookies[cookies.lang])) {
      locale = req.cookies[cookies.lang] as Locale;
    }
    const token = req.cookies[cookies.session];
    const actor = isTokenShaped(token) ? await resolveSession(deps, tenant, token, now) : null;
    if (actor && isTokenShaped(token)) {
      req.sessionToken = token;
      req.csrfUser = `s:${actor.sessionId}`;
    } else if (token) {
      // Cleared with the attributes it was set with: a __Host- cookie without Secure is ignored by browsers.
      reply.clearCookie(cookies.session, { path: '/', httpOnly: true, sameSite: 'lax', secure: secureCookies });
      // The session ended elsewhere (timed out, signed out from another device, the account suspended).
      reply.header('clear-site-data', CLEAR_SITE_DATA);
    }
    req.ctx = {
      tenant,
      actor,
      ip: req.ip ?? null,
      userAgent: typeof req.headers['user-agent'] === 'string' ? req.headers['user-agent'] : null,
      requestId: req.id,
      locale: locale ?? actor?.locale ?? 'fr',
      now,
      baseUrl: baseUrlFor(deps, tenant.hosts[0]),
    };
    // Lockdown level 4 (src/detection/lockdown.ts): a maintenance page for everything but signing in and the security console.
    if (tenant.lockdownLevel >= 4 && !OPEN_IN_MAINTENANCE.test(req.url)) return errorPage(req, reply, 'maintenance', 503);
  });

  // Bytes of a form that are not UTF-8 decode to U+FFFD, which nobody types: the request is refused whole, before any
  // handler reads (or stores) a name with a hole in it. The facility API and the OpenID Connect endpoints answer their own way.
  app.addHook('preValidation', async (req, reply) => {
    if (!req.ctx || req.method !== 'POST' || req.url.startsWith('/api/') || req.routeOptions.config.csrf === false) return;
    if (holdsReplacementCharacter(req.body)) return errorPage(req, reply, 'badRequest', 400);
  });

  // Every state-changing request carries a CSRF token bound to the session.
  app.addHook('preHandler', (req, reply, done) => {
    if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS' || !req.ctx) return done();
    // Protocol endpoints that other sites post to by design (OpenID Connect) check their own tokens.
    if (req.routeOptions.config.csrf === false) return done();
    app.csrfProtection(req, reply, done);
  });

  app.setErrorHandler(async (err, req, reply) => {
    const e = err as Error & { code?: string; statusCode?: number };
    let status = 500;
    let kind: Parameters<typeof errorPage>[2] = 'server';
    if (err instanceof StepUpRequired) {
      // A sensitive action wants a fresh authentication: the re-authentication page, then back.
      return stepUpRedirect(req, reply, err);
    }
    if (err instanceof AppError) {
      status = err.status;
      kind = err instanceof ValidationError ? 'badRequest' : err.kind;
    } else if (e.code === 'FST_CSRF_INVALID_TOKEN' || e.code === 'FST_CSRF_MISSING_SECRET') {
      status = 403;
      kind = 'csrf';
    } else if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      status = 413;
      kind = 'tooLarge';
    } else if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      status = 415;
      kind = 'unsupportedType';
    } else if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) {
      status = e.statusCode;
      kind = 'badRequest';
    } else {
      req.log.error({ err }, 'request failed');
    }
    if (!req.ctx) {
      return reply.code(status).type('text/plain; charset=utf-8').send(status >= 500 ? 'Error' : 'Bad request');
    }
    return errorPage(req, reply, kind, status);
  });

  app.setNotFoundHandler(async (req, reply) => {
    if (!req.ctx) return reply.code(404).type('text/plain; charset=utf-8').send('Not found');
    return errorPage(req, reply, 'notFound', 404);
  });

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    try {
      await deps.db.db.selectFrom('schema_migrations').select('version').limit(1).execute();
      return { status: 'ready' };
    } catch {
      return reply.code(503).send({ status: 'unavailable' });
    }
  });

  metricsRoutes(app, deps);
  cspReportRoutes(app);
  recordRefusedObjectRequests(app, deps);
  for (const r of routes) await r(app, deps);
  return app;
}

const MAX_PARAM_LENGTH = 200;

function holdsReplacementCharacter(body: unknown): boolean {
  if (typeof body === 'string') return body.includes('\ufffd');
  if (Array.isArray(body)) return body.some((v) => typeof v === 'string' && v.includes('\ufffd'));
  if (!body || typeof body !== 'object') return false;
  return Object.entries(body as Record<string, unknown>).some(([k, v]) => k.includes('\ufffd') || (typeof v === 'string' ? v.includes('\ufffd') : Array.isArray(v) && v.some((x) => typeof x === 'string' && x.includes('\ufffd'))));
}

// security.txt stays reachable: an incident is when a reporter most needs the address.
const OPEN_IN_MAINTENANCE = /^\/(signin|signout|reauth|security|\.well-known\/security\.txt|security-policy\.txt)(\/|\?|$)/;

function routableUrl(url: string): string {
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  try {
    decodeURIComponent(path);
  } catch {
    return `/.invalid-path${q < 0 ? '' : url.slice(q)}`;
  }
  return path.split('/').some((segment) => segment.length > MAX_PARAM_LENGTH) ? `/.invalid-path${q < 0 ? '' : url.slice(q)}` : url;
}

function baseUrlFor(deps: Deps, host: string | undefined): string {
  if (deps.config.publicUrl && !host) return deps.config.publicUrl;
  if (host && deps.config.production) return `https://${host}`;
  if (host) return `http://${host}:${deps.config.port}`;
  return deps.config.publicUrl ?? `http://localhost:${deps.config.port}`;
}
