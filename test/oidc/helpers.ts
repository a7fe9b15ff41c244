import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { createServer } from 'node:net';
import * as oidc from 'openid-client';
import { inTenant } from '../../src/db/tenant.ts';
import { wrapClientSecret } from '../../src/oidc/clients.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import type { TestApp } from '../helpers/app.ts';
import type { Client } from '../helpers/client.ts';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (a && typeof a === 'object' ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * The relying party's HTTP: tenant hosts are `<slug>.localhost`, which Node
 * does not resolve, so connect to the loopback address and send the Host.
 */
export function loopbackFetch(port: number): oidc.CustomFetch {
  return (url, options) =>
    new Promise((resolve, reject) => {
      const u = new URL(url);
      const headers: Record<string, string> = {};
      new Headers(options.headers as HeadersInit).forEach((v, k) => (headers[k] = v));
      headers.host = u.host;
      const req = request({ host: '127.0.0.1', port, method: options.method, path: u.pathname + u.search, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const h = new Headers();
          for (const [k, v] of Object.entries(res.headers)) {
            if (Array.isArray(v)) for (const x of v) h.append(k, x);
            else if (v !== undefined) h.set(k, v);
          }
          const status = res.statusCode ?? 500;
          resolve(new Response(status === 204 || status === 304 ? null : Buffer.concat(chunks), { status, headers: h }));
        });
      });
      req.on('error', reject);
      const body = options.body;
      if (body === undefined || body === null) req.end();
      else req.end(typeof body === 'string' ? body : body instanceof URLSearchParams ? body.toString() : Buffer.from(body as ArrayBuffer));
    });
}

export interface RegisteredClient {
  clientId: string;
  secret: string | null;
  redirectUri: string;
  postLogoutRedirectUri: string;
}

/**
 * A relying party as the console would leave it once active (the console and
 * its dual control have their own tests): two other accounts of the tenant
 * stand for the requester and the approver.
 */
export async function insertActiveClient(t: TestApp, tenant: Tenant, opts: { scopes: string[]; confidential?: boolean; name?: string; requestedBy: string; approvedBy: string; backchannelLogoutUri?: string; redirectUri?: string; postLogoutRedirectUri?: string }): Promise<RegisteredClient> {
  const clientId = randomBytes(18).toString('base64url');
  const secret = opts.confidential === false ? null : randomBytes(32).toString('base64url');
  const redirectUri = opts.redirectUri ?? 'https://catalogue.example.org/callback';
  const postLogoutRedirectUri = opts.postLogoutRedirectUri ?? 'https://catalogue.example.org/signed-out';
  await inTenant(t.database.db, tenant.id, async (trx) =>
    trx
      .insertInto('oidc_clients')
      .values({
        tenant_id: tenant.id,
        client_id: clientId,
        name: opts.name ?? 'Catalogue des bibliothèques',
        redirect_uris: [redirectUri],
        post_logout_redirect_uris: [postLogoutRedirectUri],
        scopes: opts.scopes,
        logo_uri: null,
        backchannel_logout_uri: opts.backchannelLogoutUri ?? null,
        secret_wrapped: secret ? await wrapClientSecret(t.deps.keys, tenant.id, clientId, secret) : null,
        personal: opts.scopes.some((s) => s !== 'openid' && s !== 'offline_access'),
        status: 'active',
        requested_by: opts.requestedBy,
        requested_at: new Date(),
        approved_by: opts.approvedBy,
        approved_at: new Date(),
      })
      .execute(),
  );
  return { clientId, secret, redirectUri, postLogoutRedirectUri };
}

export async function rpConfig(issuer: string, port: number, c: RegisteredClient): Promise<oidc.Configuration> {
  const fetch = loopbackFetch(port);
  const config = await oidc.discovery(new URL(issuer), c.clientId, { redirect_uris: [c.redirectUri] }, c.secret ? oidc.ClientSecretBasic(c.secret) : oidc.None(), {
    execute: [oidc.allowInsecureRequests],
    [oidc.customFetch]: fetch,
  });
  config[oidc.customFetch] = fetch;
  return config;
}

/** Follows redirects on the Guichet host (as a browser would) until one leaves it, or a page answers. */
export async function follow(person: Client, start: string, max = 10): Promise<{ status: number; location: string | null; body: string; path: string }> {
  let url = start;
  for (let i = 0; i < max; i++) {
    const u = new URL(url, `http://${person.host}`);
    if (u.hostname !== person.host.replace(/:\d+$/, '')) return { status: 303, location: url, body: '', path: url };
    const r = await person.get(u.pathname + u.search);
    const loc = r.headers.location;
    if (r.status >= 300 && r.status < 400 && typeof loc === 'string') {
      url = loc;
      continue;
    }
    return { status: r.status, location: null, body: r.body, path: u.pathname + u.search };
  }
  throw new Error(`too many redirects from ${start}`);
}
