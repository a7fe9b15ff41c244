import type { FastifyReply, FastifyRequest } from 'fastify';
import type { VNode } from 'preact';
import { render } from 'preact-render-to-string';
import type { PageEnv } from './components.tsx';
import { messages } from './i18n/index.ts';

export function pageEnv(req: FastifyRequest, reply: FastifyReply): PageEnv {
  const ctx = req.ctx;
  const url = new URL(req.url, 'http://x');
  url.searchParams.delete('lang');
  const path = url.pathname + (url.searchParams.size ? `?${url.searchParams.toString()}` : '');
  return {
    m: messages(ctx.locale),
    locale: ctx.locale,
    tenantName: ctx.locale === 'fr' ? ctx.tenant.nameFr : ctx.tenant.nameEn,
    actor: ctx.actor,
    csrf: reply.generateCsrf({ userInfo: req.csrfUser }),
    path,
    demo: req.server.guichet.config.demo,
    nonce: reply.cspNonce,
  };
}

export function sendPage(reply: FastifyReply, node: VNode, status = 200): FastifyReply {
  return reply
    .code(status)
    .header('cache-control', 'no-store')
    .type('text/html; charset=utf-8')
    .send(`<!doctype html>\n${render(node)}`);
}

/**
 * When a session ends in this browser (signing out, or a session cookie that no
 * longer opens one), the browser is told to drop what it kept for the site
 * (ASVS 14.3.1): its HTTP cache, and any storage a later page might use. Not
 * "cookies": the language chosen stays. Pages are no-store already.
 */
export const CLEAR_SITE_DATA = '"cache", "storage"';

/**
 * The longest path a page may be asked to return to: a page's own query, wrapped by the re-authentication
 * page's and then by the passkey link's (each percent-encoding it again), stays well under it; the link's
 * stored copy allows as much (migration 0049).
 */
export const MAX_RETURN_PATH = 2048;

/** After a POST, go to a page on this site only (no open redirect). */
export function safeReturnPath(value: unknown, fallback: string): string {
  if (typeof value !== 'string') return fallback;
  if (!/^\/(?![/\\])[\x21-\x7e]*$/.test(value) || value.length > MAX_RETURN_PATH) return fallback;
  return value;
}
