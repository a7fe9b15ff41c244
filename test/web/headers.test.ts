/**
 * What every answer says about itself: a strict Content-Security-Policy that
 * the pages really keep to (no inline script or style), no framing, no
 * sniffing, a referrer policy, no caching of personal data; cookies that
 * scripts cannot read and other sites cannot send; a sign-in that returns
 * only within the site; health checks in JSON.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createFacility, createParent, createStaff, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, type Response } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';

let database: TestDatabase;
let t: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
});

afterAll(async () => {
  await t?.close();
  await database?.close();
});

let seq = 0;
const uniq = () => `${Date.now().toString(36)}${(seq++).toString(36)}`;

interface Fixture {
  tenant: Tenant;
  host: string;
  facility: string;
  parentEmail: string;
  parent: Client;
  staff: Client;
  admin: Client;
  childId: string;
}

async function fixture(): Promise<Fixture> {
  const tenant = await tenantFor(t);
  const host = tenant.hosts[0]!;
  const facility = await createFacility(t, tenant, { name: 'CPE Les Colibris' });
  const parentEmail = `parent.${uniq()}@exemple.test`;
  await createParent(t, tenant, parentEmail);
  const staffEmail = `staff.${uniq()}@exemple.test`;
  await createStaff(t, tenant, staffEmail, facility);
  const adminEmail = `admin.${uniq()}@exemple.test`;
  await createAdmin(t, tenant, adminEmail);
  const parent = new Client(t.app, host);
  expect((await parent.signIn(parentEmail, PASSWORD)).status).toBe(303);
  await parent.get('/children/new');
  const t0 = today(new Date());
  const r = await parent.post('/children/new', { firstName: 'Maëlle', lastName: 'Ouellet', birthDate: addMonths(t0, -6), nirec: 'AB12CD34EF', desiredEntryDate: addMonths(t0, 2), day_tue: 'on' });
  expect(r.status).toBe(303);
  const childId = /\/children\/([0-9a-f-]{36})/.exec(String(r.headers.location))![1]!;
  await parent.get(`/directory/${facility}`);
  expect((await parent.post('/applications', { childId, facilityId: facility })).status).toBe(303);
  const staff = new Client(t.app, host);
  expect((await staff.signIn(staffEmail, PASSWORD)).status).toBe(303);
  const admin = new Client(t.app, host);
  expect((await admin.signIn(adminEmail, PASSWORD)).status).toBe(303);
  return { tenant, host, facility, parentEmail, parent, staff, admin, childId };
}

/* ------------------------------------------------------------- the checks */

function csp(r: Response): Map<string, string[]> {
  const header = String(r.headers['content-security-policy'] ?? '');
  return new Map(
    header
      .split(';')
      .map((d) => d.trim())
      .filter(Boolean)
      .map((d) => {
        const [name, ...values] = d.split(/\s+/);
        return [name!.toLowerCase(), values] as [string, string[]];
      }),
  );
}

/** What is wrong with the security headers of an answer. */
function headerProblems(r: Response): string[] {
  const out: string[] = [];
  const policy = csp(r);
  if (!policy.size) out.push('no Content-Security-Policy');
  else {
    if (policy.get('default-src')?.join(' ') !== "'none'") out.push(`default-src ${policy.get('default-src')?.join(' ')}`);
    if (policy.get('frame-ancestors')?.join(' ') !== "'none'") out.push(`frame-ancestors ${policy.get('frame-ancestors')?.join(' ')}`);
    if (policy.get('object-src')?.join(' ') !== "'none'") out.push(`object-src ${policy.get('object-src')?.join(' ')}`);
    if (policy.get('base-uri')?.join(' ') !== "'none'") out.push(`base-uri ${policy.get('base-uri')?.join(' ')}`);
    if (policy.get('form-action')?.join(' ') !== "'self'") out.push(`form-action ${policy.get('form-action')?.join(' ')}`);
    for (const [name, values] of policy) {
      for (const v of values) {
        if (/^'unsafe-|^'strict-dynamic'$|^\*$|^https?:$|^blob:$/.test(v)) out.push(`${name} allows ${v}`);
        if (v === 'data:' && name !== 'img-src') out.push(`${name} allows data:`);
      }
    }
    // A policy per answer (ASVS 3.4.3, level 3): scripts and style sheets only with this answer's nonce, nothing else.
    for (const name of ['script-src', 'style-src']) {
      const values = policy.get(name) ?? [];
      if (values.length !== 1 || !/^'nonce-[0-9a-f]{32}'$/.test(values[0]!)) out.push(`${name} ${values.join(' ')}`);
    }
  }
  if (String(r.headers['x-frame-options']).toUpperCase() !== 'DENY') out.push(`X-Frame-Options ${r.headers['x-frame-options']}`);
  if (r.headers['x-content-type-options'] !== 'nosniff') out.push(`X-Content-Type-Options ${r.headers['x-content-type-options']}`);
  const referrer = String(r.headers['referrer-policy'] ?? '');
  if (!['no-referrer', 'same-origin', 'strict-origin', 'strict-origin-when-cross-origin'].includes(referrer)) out.push(`Referrer-Policy ${referrer || 'missing'}`);
  if (r.headers['x-powered-by']) out.push(`X-Powered-By ${r.headers['x-powered-by']}`);
  return out;
}

/** The nonce the answer's policy gives to a directive. */
function nonceOf(r: Response, directive: 'script-src' | 'style-src'): string | undefined {
  return /^'nonce-([0-9a-f]+)'$/.exec(csp(r).get(directive)?.[0] ?? '')?.[1];
}

/** A strict CSP is only worth it if the page keeps to it: no inline script, style or handler; its own tags carry its nonces. */
function inlineProblems(r: Response): string[] {
  const html = r.body;
  const out: string[] = [];
  for (const m of html.matchAll(/<script\b([^>]*)>/gi)) {
    if (!/\ssrc="\/assets\/[^"]+"/.test(m[1]!)) out.push(`inline <script${m[1]}>`);
    else if (!m[1]!.includes(` nonce="${nonceOf(r, 'script-src')}"`)) out.push(`<script${m[1]}> without the answer's script nonce`);
  }
  for (const m of html.matchAll(/<link\b([^>]*)>/gi)) {
    if (/\srel="stylesheet"/.test(m[1]!) && !m[1]!.includes(` nonce="${nonceOf(r, 'style-src')}"`)) out.push(`<link${m[1]}> without the answer's style nonce`);
  }
  if (/<style\b/i.test(html)) out.push('a <style> element');
  for (const m of html.matchAll(/<[a-z]+\b[^>]*\s(style|on[a-z]+)=/gi)) out.push(`an inline ${m[1]} attribute`);
  if (/\b(?:href|src|action)="\s*javascript:/i.test(html)) out.push('a javascript: URL');
  return out;
}

function setCookies(r: Response): string[] {
  const h = r.headers['set-cookie'];
  return Array.isArray(h) ? h : h ? [String(h)] : [];
}

/* ------------------------------------------------------------------ tests */

describe('every HTML answer', () => {
  it('has the strict CSP and the other headers, keeps to the CSP, and is not cached when it carries personal data', async () => {
    const f = await fixture();
    const anon = new Client(t.app, f.host);
    const answers: [string, Response, 'personal' | 'public'][] = [];
    const take = async (label: string, p: Promise<Response>, kind: 'personal' | 'public') => {
      const r = await p;
      answers.push([label, r, kind]);
      return r;
    };
    // signed out
    await take('GET /', anon.get('/'), 'public');
    await take('GET /directory', anon.get('/directory?q=colibris'), 'public');
    await take('GET /directory/:id', anon.get(`/directory/${f.facility}`), 'public');
    await take('GET /signin', anon.get('/signin?return=/account'), 'public');
    await take('GET /signup', anon.get('/signup'), 'public');
    await take('GET /verify-email (bad link)', anon.get('/verify-email?token=nope'), 'public');
    await take('GET /set-password (bad link)', anon.get('/set-password?token=nope'), 'public');
    await take('GET /invitations/accept (bad link)', anon.get('/invitations/accept?token=nope'), 'public');
    await take('GET /nowhere (404)', anon.get('/nowhere'), 'public');
    await take('POST /signin (wrong password, 401)', anon.post('/signin', { email: f.parentEmail, password: 'wrong password here' }), 'personal');
    await take('POST /signup (bad form, 400)', anon.post('/signup', { email: 'not an address', password: 'x' }), 'personal');
    // the parent
    await take('GET /account', f.parent.get('/account'), 'personal');
    await take('GET /children/new', f.parent.get('/children/new'), 'personal');
    await take('GET /children/:id', f.parent.get(`/children/${f.childId}`), 'personal');
    await take('GET /children/:id/edit', f.parent.get(`/children/${f.childId}/edit`), 'personal');
    await take('GET /directory/:id (with the children to choose from)', f.parent.get(`/directory/${f.facility}`), 'personal');
    await f.parent.get('/children/new');
    await take('POST /children/new (bad form, 400)', f.parent.post('/children/new', { firstName: 'Maëlle', lastName: '', birthDate: '2025-02-30' }), 'personal');
    await take('POST /children/new (no CSRF token, 403)', f.parent.post('/children/new', { firstName: 'X' }, { csrf: null }), 'personal');
    await take('POST /children/new (too large, 413)', f.parent.post('/children/new', { firstName: 'x'.repeat(70_000) }), 'personal');
    await take('POST /children/new (application/xml, 415)', f.parent.raw({ method: 'POST', url: '/children/new', payload: 'firstName=x', headers: { 'content-type': 'application/xml' } }), 'personal');
    await take('GET /admin as a parent (403)', f.parent.get('/admin'), 'personal');
    // staff and administrator
    await take('GET /staff', f.staff.get('/staff'), 'personal');
    await take('GET /staff/facilities/:id/candidates', f.staff.get(`/staff/facilities/${f.facility}/candidates`), 'personal');
    await take('GET /admin', f.admin.get('/admin'), 'personal');
    await take('GET /directory/:id (with the invitation form)', f.admin.get(`/directory/${f.facility}`), 'personal');
    await take('POST /admin/facilities/:id/invitations', f.admin.post(`/admin/facilities/${f.facility}/invitations`, { email: `new.${uniq()}@exemple.test` }), 'personal');

    const problems: string[] = [];
    for (const [label, r, kind] of answers) {
      if (!/^text\/html; charset=utf-8$/i.test(String(r.headers['content-type']))) {
        problems.push(`${label}: content type ${r.headers['content-type']} (status ${r.status})`);
        continue;
      }
      for (const p of headerProblems(r)) problems.push(`${label}: ${p}`);
      for (const p of inlineProblems(r)) problems.push(`${label}: ${p}`);
      const cache = String(r.headers['cache-control'] ?? '');
      if (kind === 'personal' && !/\bno-store\b/.test(cache)) problems.push(`${label}: Cache-Control ${cache || 'missing'}`);
      if (/\bpublic\b/.test(cache)) problems.push(`${label}: Cache-Control ${cache}`);
    }
    expect(problems).toEqual([]);
    expect(answers.length).toBeGreaterThan(20);
    // Drawn afresh for every answer: a nonce read from one page is of no use in the next.
    const nonces = answers.flatMap(([, r]) => [nonceOf(r, 'script-src'), nonceOf(r, 'style-src')]);
    expect(new Set(nonces).size).toBe(nonces.length);
  });

  it('answers outside the pages carry the same protective headers (assets, health checks, an unknown host, a refused URL)', async () => {
    const f = await fixture();
    const anon = new Client(t.app, f.host);
    const stranger = new Client(t.app, 'unknown.invalid');
    const problems: string[] = [];
    for (const [label, r] of [
      ['GET /assets/guichet.css', await anon.get('/assets/guichet.css')],
      ['GET /assets/guichet.js', await anon.get('/assets/guichet.js')],
      ['GET /healthz', await anon.get('/healthz')],
      ['GET /readyz', await anon.get('/readyz')],
      ['GET / on an unknown host', await stranger.get('/')],
      ['GET a broken %-escape', await anon.get('/children/%E0%A4%A')],
      ['GET an over-long parameter', await anon.get(`/directory/${'b'.repeat(300)}`)],
    ] as [string, Response][]) {
      for (const p of headerProblems(r)) problems.push(`${label}: ${p}`);
      if (r.status >= 500) problems.push(`${label}: status ${r.status}`);
    }
    expect(problems).toEqual([]);
  });
});

describe('cookies', () => {
  it('every cookie is HttpOnly and SameSite, on path /, and the session cookie is bound to the host', async () => {
    const f = await fixture();
    const c = new Client(t.app, f.host);
    const all: string[] = [];
    all.push(...setCookies(await c.get('/?lang=en')));
    all.push(...setCookies(await c.get('/signin')));
    all.push(...setCookies(await c.post('/signin', { email: f.parentEmail, password: PASSWORD })));
    all.push(...setCookies(await c.get('/account')));
    all.push(...setCookies(await c.post('/signout')));
    // a dead session cookie is cleared
    const stale = new Client(t.app, f.host);
    stale.cookies.set('guichet_session', 'A'.repeat(43));
    all.push(...setCookies(await stale.get('/')));
    const names = new Set(all.map((s) => s.split('=')[0]));
    expect([...names].sort()).toEqual(['guichet_csrf', 'guichet_device', 'guichet_lang', 'guichet_session']);
    const problems: string[] = [];
    for (const cookie of all) {
      const name = cookie.split('=')[0];
      const attrs = cookie.split(';').slice(1).map((a) => a.trim().toLowerCase());
      if (!attrs.includes('httponly')) problems.push(`${name}: not HttpOnly (${cookie})`);
      if (!attrs.some((a) => a === 'samesite=lax' || a === 'samesite=strict')) problems.push(`${name}: SameSite ${attrs.find((a) => a.startsWith('samesite')) ?? 'missing'}`);
      if (!attrs.includes('path=/')) problems.push(`${name}: not on path /`);
      if (attrs.some((a) => a.startsWith('domain='))) problems.push(`${name}: a Domain attribute shares it with other hosts`);
    }
    expect(problems).toEqual([]);
  });

  it('signing out, or a session cookie that no longer opens a session, tells the browser to drop its cache and storage (Clear-Site-Data); other answers do not', async () => {
    const f = await fixture();
    const c = new Client(t.app, f.host);
    expect((await c.signIn(f.parentEmail, PASSWORD)).status).toBe(303);
    const signedIn = await c.get('/account');
    expect(signedIn.status).toBe(200);
    expect(signedIn.headers['clear-site-data']).toBeUndefined();
    const cookie = c.cookies.get('guichet_session')!;
    const out = await c.post('/signout');
    expect(out.status).toBe(303);
    expect(out.headers['clear-site-data']).toBe('"cache", "storage"');
    // The language chosen is not among what is dropped.
    expect(String(out.headers['clear-site-data'])).not.toContain('cookies');
    // The same cookie later, in a browser that kept it: cleared, and the site's data with it.
    const stale = new Client(t.app, f.host);
    stale.cookies.set('guichet_session', cookie);
    const after = await stale.get('/');
    expect(after.headers['clear-site-data']).toBe('"cache", "storage"');
    expect(setCookies(after).some((x) => x.startsWith('guichet_session=;'))).toBe(true);
    expect((await new Client(t.app, f.host).get('/')).headers['clear-site-data']).toBeUndefined();
  });
});

describe('sign-in returns only within the site', () => {
  const HOSTILE = [
    '//evil.example',
    '//evil.example/account',
    'https://evil.example',
    'http:evil.example',
    'https:/evil.example',
    '/\\evil.example',
    '\\\\evil.example',
    '/\\/evil.example',
    '\\/evil.example',
    ' //evil.example',
    '/\t/evil.example',
    '/\n/evil.example',
    '/\r\nSet-Cookie: stolen=1',
    '/%0d%0aSet-Cookie:%20stolen=1',
    '//%09evil.example',
    '/\u3000/evil.example',
    '/\uff0f\uff0fevil.example',
    '/\u202e/elpmaxe.live',
    '/\u0000',
    'javascript:alert(1)',
    'data:text/html,<script>alert(1)</script>',
    'evil.example',
    `/${'a'.repeat(600)}`,
  ];

  /** Where a Location header sends a browser, resolved against the site as a browser would. */
  function staysOnSite(location: string, host: string): string | null {
    if (!location.startsWith('/')) return `not a path: ${JSON.stringify(location)}`;
    if (/^\/[/\\]/.test(location)) return `scheme-relative: ${JSON.stringify(location)}`;
    if (/[\u0000-\u0020\u007f-\uffff]/.test(location)) return `unsafe characters: ${JSON.stringify(location)}`;
    // browsers drop tabs and line breaks and read \ as / before resolving
    const browserish = location.replace(/[\t\n\r]/g, '').replace(/\\/g, '/');
    const url = new URL(browserish, `http://${host}/`);
    if (url.origin !== `http://${host}`) return `leaves the site: ${JSON.stringify(location)} → ${url.origin}`;
    return null;
  }

  it('a hostile return address, in the link or in the form, lands on the site (and never breaks the sign-in)', async () => {
    const f = await fixture();
    const problems: string[] = [];
    for (const value of HOSTILE) {
      const label = JSON.stringify(value.slice(0, 40));
      // the link: the form must not carry the hostile value
      const c = new Client(t.app, f.host);
      const page = await c.get(`/signin?return=${encodeURIComponent(value)}`);
      if (page.status !== 200) problems.push(`GET /signin?return=${label}: status ${page.status}`);
      const hidden = /name="return" value="([^"]*)"/.exec(page.body)?.[1];
      if (hidden !== undefined && staysOnSite(hidden.replace(/&amp;/g, '&'), f.host)) problems.push(`GET /signin?return=${label}: the form carries ${JSON.stringify(hidden)}`);
      // the form, as another site would post it
      const r = await c.post('/signin', { email: f.parentEmail, password: PASSWORD, return: value });
      if (r.status !== 303) problems.push(`POST /signin return=${label}: status ${r.status}`);
      else {
        const p = staysOnSite(String(r.headers.location), f.host);
        if (p) problems.push(`POST /signin return=${label}: ${p}`);
      }
      for (const cookie of setCookies(r)) if (/stolen/.test(cookie)) problems.push(`POST /signin return=${label}: header injection`);
      // already signed in: the link redirects at once
      const again = await c.get(`/signin?return=${encodeURIComponent(value)}`);
      if (again.status !== 303) problems.push(`GET /signin?return=${label} (signed in): status ${again.status}`);
      else {
        const p = staysOnSite(String(again.headers.location), f.host);
        if (p) problems.push(`GET /signin?return=${label} (signed in): ${p}`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('a return address on the site is honoured, from the link through the form', async () => {
    const f = await fixture();
    const c = new Client(t.app, f.host);
    const target = `/directory/${f.facility}`;
    const page = await c.get(`/signin?return=${encodeURIComponent(target)}`);
    const hidden = /name="return" value="([^"]*)"/.exec(page.body)?.[1];
    expect(hidden).toBe(target);
    const r = await c.post('/signin', { email: f.parentEmail, password: PASSWORD, return: hidden! });
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe(target);
    // a page that needs a session sends the visitor to sign in, and back
    const later = new Client(t.app, f.host);
    const bounce = await later.get('/children/new?x=1');
    expect(bounce.status).toBe(303);
    expect(bounce.headers.location).toBe(`/signin?return=${encodeURIComponent('/children/new?x=1')}`);
  });
});

describe('health checks', () => {
  it('/healthz and /readyz answer JSON, whatever the host', async () => {
    for (const host of ['localhost', 'unknown.invalid']) {
      const c = new Client(t.app, host);
      const h = await c.get('/healthz');
      expect(h.status).toBe(200);
      expect(String(h.headers['content-type'])).toMatch(/^application\/json/);
      expect(JSON.parse(h.body)).toEqual({ status: 'ok' });
      const r = await c.get('/readyz');
      expect(r.status).toBe(200);
      expect(String(r.headers['content-type'])).toMatch(/^application\/json/);
      expect(JSON.parse(r.body)).toEqual({ status: 'ready' });
      expect(setCookies(h)).toEqual([]);
      expect(setCookies(r)).toEqual([]);
    }
  });
});
