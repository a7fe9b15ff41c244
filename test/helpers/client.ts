import type { FastifyInstance } from 'fastify';
import { freshTotpCode, totpSecretFor } from './factors.ts';

export interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * A browser without a browser: keeps cookies, sends the Host that selects the
 * tenant, and fills the CSRF token from the last page it read, as a form would.
 */
export class Client {
  readonly cookies = new Map<string, string>();
  csrf: string | null = null;
  last: Response | null = null;

  constructor(
    private readonly app: FastifyInstance,
    readonly host: string,
    /** The address the request seems to come from (throttling is per source). */
    readonly ip = '127.0.0.1',
  ) {}

  private cookieHeader(): string | undefined {
    if (!this.cookies.size) return undefined;
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  private absorb(res: { statusCode: number; headers: Record<string, string | string[] | number | undefined>; body: string }): Response {
    const set = res.headers['set-cookie'];
    for (const c of Array.isArray(set) ? set : set ? [String(set)] : []) {
      const [pair, ...attrs] = c.split(';');
      const i = pair!.indexOf('=');
      const name = pair!.slice(0, i).trim();
      const value = pair!.slice(i + 1).trim();
      const expired = attrs.some((a) => /^\s*expires=thu, 01 jan 1970/i.test(a) || /^\s*max-age=0/i.test(a));
      if (expired || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    const m = /name="_csrf" value="([^"]+)"/.exec(res.body);
    if (m) this.csrf = m[1]!;
    const r: Response = { status: res.statusCode, headers: res.headers as Response['headers'], body: res.body };
    this.last = r;
    return r;
  }

  async get(url: string, headers: Record<string, string> = {}): Promise<Response> {
    const res = await this.app.inject({ method: 'GET', url, remoteAddress: this.ip, headers: { host: this.host, ...(this.cookieHeader() ? { cookie: this.cookieHeader()! } : {}), ...headers } });
    return this.absorb(res);
  }

  /** Posts a form; `_csrf` is added from the last page unless the fields name one. */
  async post(url: string, fields: Record<string, string | string[]> = {}, opts: { csrf?: string | null; headers?: Record<string, string> } = {}): Promise<Response> {
    const params = new URLSearchParams();
    const token = opts.csrf === undefined ? this.csrf : opts.csrf;
    if (token !== null && token !== undefined && !('_csrf' in fields)) params.append('_csrf', token);
    for (const [k, v] of Object.entries(fields)) for (const x of Array.isArray(v) ? v : [v]) params.append(k, x);
    const res = await this.app.inject({
      method: 'POST',
      url,
      remoteAddress: this.ip,
      payload: params.toString(),
      headers: { host: this.host, 'content-type': 'application/x-www-form-urlencoded', ...(this.cookieHeader() ? { cookie: this.cookieHeader()! } : {}), ...opts.headers },
    });
    return this.absorb(res);
  }

  async raw(opts: { method: 'GET' | 'POST'; url: string; payload?: string | Buffer; headers?: Record<string, string> }): Promise<Response> {
    const res = await this.app.inject({ method: opts.method, url: opts.url, remoteAddress: this.ip, ...(opts.payload !== undefined ? { payload: opts.payload } : {}), headers: { host: this.host, ...(this.cookieHeader() ? { cookie: this.cookieHeader()! } : {}), ...opts.headers } });
    return this.absorb(res);
  }

  /**
   * Signs in through the real form. When the account has an authenticator
   * app enrolled by the test helpers, answers the second step with a fresh code.
   */
  async signIn(email: string, password: string): Promise<Response> {
    await this.get('/signin');
    const r = await this.post('/signin', { email, password });
    const secret = totpSecretFor(this.host, email);
    if (r.status !== 303 || !String(r.headers.location ?? '').startsWith('/signin/second-factor') || !secret) return r;
    const clock = (this.app as unknown as { guichet: { clock: () => Date } }).guichet.clock;
    return this.post('/signin/second-factor', { code: await freshTotpCode(secret, clock) });
  }
}

/** The text of an HTML page without tags, for assertions on what a person reads. */
export function textOf(html: string): string {
  return html
    .replace(/<script[\s\S]*?<\/script>/g, '')
    .replace(/<[^>]+>/g, ' ')
    .replace(/&#x27;|&#39;/g, "'")
    .replace(/&quot;/g, '"')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&')
    .replace(/\s+/g, ' ');
}
