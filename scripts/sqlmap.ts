/**
 * An SQL injection scan of every route with sqlmap (the Debian package),
 * against a real instance with signed-in sessions for each role.
 *
 * Starts Guichet on a throwaway embedded database with the demo data (or
 * reuses GUICHET_DATA_DIR), adds to the demo's parent, facility staff member
 * and administrator one person for each other role — a facility director, a
 * programme operator, a security officer, their roles approved by the
 * administrator as the dual-control rule and the database's guard require —
 * signs each in (the second factor answered with an authenticator secret),
 * reads the route table from the router, and gives sqlmap, route by route
 * and person by person, every parameter: path ids (marked for injection),
 * query fields and the fields of the route's form (read from the pages that
 * hold the form), with that person's session cookie and CSRF token. Routes
 * that end the session go last. Prints each route's verdict and the
 * injectable parameters found (the aim: none); exits 1 if any is found.
 *
 *   scripts/sqlmap.sh [--level 1] [--risk 1] [--technique BEU] [--roles parent,staff,director,operator,officer,admin] [--every-role] [--only REGEX] [--plan]
 *
 * --plan prints who would scan each route, and scans nothing.
 *
 * By default each route is scanned by one person: the one its session
 * reaches — for a page, the first (in the order the route's path suggests:
 * /staff the staff member, /security the officer…) that it answers 200; for a
 * form, the first whose pages hold it — since a scan answered 403 before the
 * handler tests nothing; --every-role scans every route as every person.
 *
 * Detection's bulk-reading rules are switched off on this throwaway instance,
 * or the scan (thousands of reads a minute) would be cut off at the 21st file
 * like any intruder; detection has its own tests (test/detection).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config/config.ts';
import { inTenant } from '../src/db/tenant.ts';
import { demoCredentialsFile, ensureDemo, type DemoCredentials } from '../src/demo/setup.ts';
import { createAlert } from '../src/detection/alerts.ts';
import { DEFAULT_RULES } from '../src/detection/rules.ts';
import { insertTotp } from '../src/identity/factors/store.ts';
import { newTotpSecret, totpCodeAt } from '../src/identity/factors/totp.ts';
import { createDemoAccount } from '../src/identity/service.ts';
import type { MembershipRole } from '../src/db/schema.ts';
import { createLogger, makeDeps, openFromConfig, ROUTES } from '../src/server.ts';
import { buildApp } from '../src/web/app.ts';

const { values: opts } = parseArgs({
  options: {
    level: { type: 'string', default: '1' },
    risk: { type: 'string', default: '1' },
    technique: { type: 'string', default: 'BEU' },
    roles: { type: 'string', default: 'parent,staff,director,operator,officer,admin' },
    only: { type: 'string', default: '' },
    'every-role': { type: 'boolean', default: false },
    plan: { type: 'boolean', default: false },
    port: { type: 'string', default: '0' },
    sqlmap: { type: 'string', default: '/usr/bin/sqlmap' },
    threads: { type: 'string', default: '4' },
  },
});

const keep = !!process.env.GUICHET_DATA_DIR;
const dataDir = process.env.GUICHET_DATA_DIR ?? mkdtempSync(join(tmpdir(), 'guichet-sqlmap-'));
const config = { ...loadConfig({ ...process.env, NODE_ENV: 'development', GUICHET_DATA_DIR: dataDir, LOG_LEVEL: 'warn', GUICHET_JOBS: 'off' }), demo: true, port: Number(opts.port) };
const log = createLogger(config);
const started = Date.now();
console.log(`[sqlmap] starting Guichet with demo data in ${dataDir} (the first start seeds a few thousand families: a few minutes)`);
const db = await openFromConfig(config, log);
const deps = makeDeps(config, db, log);
await ensureDemo(deps);
const app = await buildApp(deps, ROUTES);
await app.listen({ port: config.port, host: '127.0.0.1' });
const port = (app.server.address() as { port: number }).port;
const base = `http://localhost:${port}`;
const creds = JSON.parse(readFileSync(demoCredentialsFile(dataDir), 'utf8')) as DemoCredentials;
const tenant = (await deps.tenants.bySlug(config.defaultTenant))!;
await inTenant(db.db, tenant.id, async (trx) => {
  for (const r of DEFAULT_RULES.filter((x) => x.signal === 'files_read')) {
    await trx
      .insertInto('detection_rules')
      .values({ tenant_id: tenant.id, code: r.code, signal: r.signal, threshold: r.threshold, window_seconds: r.windowSeconds, response: r.response, lockdown_level: null, enabled: false, updated_at: new Date(), updated_by: null })
      .onConflict((oc) => oc.columns(['tenant_id', 'code']).doUpdateSet({ enabled: false }))
      .execute();
  }
});

/*
 * The roles the demo has no person for. Each privileged role is a grant the
 * administrator approved for someone else (granted by the holder's own
 * request, approved by a different current administrator: what the
 * memberships guard of the database accepts), past its cooling-off period so
 * that its pages open as they would for a settled holder. A kept data
 * directory keeps them.
 */
const PEOPLE = ['parent', 'staff', 'director', 'operator', 'officer', 'admin'] as const;
type Person = (typeof PEOPLE)[number];
const emails: Record<Person, string> = { parent: creds.parent, staff: creds.staff, admin: creds.admin, director: 'direction@demo.guichet.test', operator: 'operateur@demo.guichet.test', officer: 'securite@demo.guichet.test' };
const peopleFile = join(dataDir, 'sqlmap-people.json');
const totp: Record<string, string> = { ...creds.totp, ...(existsSync(peopleFile) ? (JSON.parse(readFileSync(peopleFile, 'utf8')) as Record<string, string>) : {}) };
await inTenant(db.db, tenant.id, async (trx) => {
  const now = new Date();
  const id = async (email: string) => (await trx.selectFrom('accounts').select('id').where('email', '=', email).executeTakeFirstOrThrow()).id;
  const admin = await id(creds.admin);
  const staffFacility = (await trx.selectFrom('memberships').select('facility_id').where('account_id', '=', await id(creds.staff)).where('role', '=', 'facility_staff').executeTakeFirstOrThrow()).facility_id;
  const extra: [Person, MembershipRole, string | null][] = [
    ['director', 'facility_director', staffFacility],
    ['operator', 'program_operator', null],
    ['officer', 'security_officer', null],
  ];
  for (const [who, role, facility] of extra) {
    const email = emails[who];
    const existing = await trx.selectFrom('accounts').select('id').where('email', '=', email).executeTakeFirst();
    if (existing) continue;
    const account = await createDemoAccount(trx, tenant.id, email, creds.password, now);
    await trx
      .insertInto('memberships')
      .values({ tenant_id: tenant.id, account_id: account, role, facility_id: facility, source: 'grant', granted_by: account, approved_by: admin, created_at: new Date(now.getTime() - 2 * 3600_000), expires_at: new Date(now.getTime() + 10 * 3600_000) })
      .execute();
    const secret = newTotpSecret();
    const factor = await insertTotp(trx, deps.keys, tenant.id, account, secret, now);
    await trx.updateTable('totp_factors').set({ confirmed_at: now }).where('id', '=', factor).execute();
    totp[email] = secret;
  }
  // An alert, so that the officer's pages hold the forms that act on one (acknowledge, assign, note, close…).
  if (!(await trx.selectFrom('detection_alerts').select('id').limit(1).executeTakeFirst())) {
    const origin = { actorAccountId: null, actorRoles: ['system:sqlmap'], ip: null, userAgent: 'scripts/sqlmap.ts', requestId: null };
    await createAlert(trx, tenant.id, { ruleCode: 'export.1h', signal: 'export', severity: 'low', subjectAccountId: await id(creds.staff), response: 'alert', lockdownLevel: null, eventIds: [], details: {} }, origin, now, base);
  }
});
writeFileSync(peopleFile, JSON.stringify(totp), { mode: 0o600 });
console.log(`[sqlmap] listening on ${base} after ${((Date.now() - started) / 1000).toFixed(0)} s`);

/* ------------------------------------------------------------------ sessions */

interface Session {
  who: string;
  cookie: string;
  csrf: string;
}

function cookiesOf(res: Response, jar: Map<string, string>): void {
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const i = pair!.indexOf('=');
    const v = pair!.slice(i + 1);
    if (v) jar.set(pair!.slice(0, i), v);
    else jar.delete(pair!.slice(0, i));
  }
}

/** A session's cookies as a jar `page` can send and update. */
function jarOf(s: Session): Map<string, string> {
  return new Map(s.cookie.split('; ').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as [string, string]));
}

async function page(jar: Map<string, string>, path: string, init: RequestInit = {}): Promise<{ res: Response; body: string }> {
  const res = await fetch(base + path, { redirect: 'manual', ...init, headers: { ...(init.headers as Record<string, string>), cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; ') } });
  cookiesOf(res, jar);
  return { res, body: await res.text() };
}

const csrfOf = (html: string) => /name="_csrf" value="([^"]+)"/.exec(html)?.[1] ?? '';
const form = (o: Record<string, string>) => ({ method: 'POST', body: new URLSearchParams(o).toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } });

async function signIn(who: Person): Promise<Session> {
  const email = emails[who];
  const jar = new Map<string, string>();
  const first = await page(jar, '/signin');
  let r = await page(jar, '/signin', form({ _csrf: csrfOf(first.body), email, password: creds.password }));
  const secret = totp[email];
  if (String(r.res.headers.get('location')).startsWith('/signin/second-factor') && secret) {
    const step = await page(jar, r.res.headers.get('location')!);
    r = await page(jar, '/signin/second-factor', form({ _csrf: csrfOf(step.body), code: await totpCodeAt(secret, new Date()) }));
  }
  if (r.res.status !== 303) throw new Error(`${who} could not sign in (${r.res.status})`);
  const account = await page(jar, '/account');
  return { who, cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; '), csrf: csrfOf(account.body) };
}

async function alive(s: Session): Promise<boolean> {
  const r = await fetch(`${base}/account`, { redirect: 'manual', headers: { cookie: s.cookie } });
  return r.status === 200;
}

/* --------------------------------------------------------------- the targets */

/** The router's own route table (the same reading as test/helpers/app.ts registeredRoutes). */
function routesOf(method: 'GET' | 'POST'): string[] {
  const out = new Set<string>();
  for (const tree of [app.printRoutes({ commonPrefix: false }), app.printRoutes({ method })]) {
    const stack: string[] = [];
    for (const line of tree.split('\n')) {
      const m = /^((?:[│ ] {3})*)[├└]── (.*?)(?: \(([^)]*)\))?$/.exec(line);
      if (!m) continue;
      stack.length = m[1]!.length / 4;
      stack.push(m[2]!);
      const route = stack.join('');
      if ((m[3] ?? '').split(',').map((s) => s.trim()).includes(method) && !route.includes('*')) out.add(route);
    }
  }
  return [...out].sort();
}

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;

/**
 * Adds to `ids` the ids of the person's own objects that a page links to or
 * posts to, each under the path before it with earlier ids as `*`
 * (`/children/*\/applications` for an application of a child), the first seen kept.
 */
function collectIds(body: string, ids: Map<string, string>): void {
  for (const [, url] of body.matchAll(/(?:href|action)="(\/[^"?#]*)"/g)) {
    for (const m of url!.matchAll(UUID)) {
      const key = url!.slice(0, m.index - 1).replace(UUID, '*');
      if (!ids.has(key)) ids.set(key, m[0]);
    }
  }
}

/** Ids of the person's own objects, from their pages that list them (children, facilities, offers, alerts…). */
async function ownIds(s: Session): Promise<Map<string, string>> {
  const jar = jarOf(s);
  const ids = new Map<string, string>();
  for (const p of ['/account', '/staff', '/admin', '/admin/files', '/admin/grants', '/directory', '/security/alerts', '/security/incidents', '/assist']) collectIds((await page(jar, p)).body, ids);
  return ids;
}

/** An attribute's value in a tag's attributes; '' for one written bare (`<option value selected>`, as Preact writes an empty value). */
const attr = (attrs: string, name: string): string | undefined => {
  const m = new RegExp(`(?:^|\\s)${name}(?:="([^"]*)")?(?=\\s|/|$)`).exec(attrs);
  return m ? (m[1] ?? '') : undefined;
};
const unescape = (v: string) => v.replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');

/**
 * The fields of the form that posts to this path, from the person's pages,
 * each with a value the route accepts where the page says what that is (its
 * value, the selected or first option, a date for a date field), so that a
 * scanned parameter travels with valid others and reaches the statement it
 * could reach; null when none of the pages holds the form.
 */
function formFields(pages: string[], path: string, method: 'GET' | 'POST' = 'POST'): Record<string, string> | null {
  const day = new Date().toISOString().slice(0, 10);
  for (const body of pages) {
    for (const f of body.matchAll(/<form([^>]*)>([\s\S]*?)<\/form>/g)) {
      if (attr(f[1]!, 'action')?.split('?')[0] !== path || (attr(f[1]!, 'method') ?? 'get').toUpperCase() !== method) continue;
      const fields: Record<string, string> = {};
      const inner = f[2]!;
      for (const [, attrs] of inner.matchAll(/<input\b([^>]*)>/g)) {
        const name = attr(attrs!, 'name');
        if (!name || name === '_csrf' || name in fields) continue;
        const type = attr(attrs!, 'type') ?? 'text';
        const value = attr(attrs!, 'value');
        // A search form's empty filters stay empty (no filter); a form that writes gets a value in each field.
        // A list of ids (an incident's alerts) stays empty as the page leaves it: a word is not an id; a count gets a number.
        fields[name] = value ? unescape(value) : (method === 'GET' && type !== 'search' && name !== 'q') || /Ids$/.test(name) ? '' : /Count$/.test(name) ? '1' : name === 'nirec' ? String(1_000_000_000 + Math.floor(Math.random() * 8_999_999_999)) : type === 'date' ? day : type === 'email' ? 'test@exemple.test' : type === 'number' || attr(attrs!, 'inputmode') === 'numeric' ? '1' : type === 'checkbox' ? 'on' : type === 'tel' ? '514 555-0199' : type === 'password' ? 'Pirouette-Lanterne-Érable-2026' : 'test';
      }
      for (const [, attrs, options] of inner.matchAll(/<select\b([^>]*)>([\s\S]*?)<\/select>/g)) {
        const name = attr(attrs!, 'name');
        const opts = [...options!.matchAll(/<option\b([^>]*)>/g)].map((o) => o[1]!);
        const chosen = opts.find((o) => /\bselected\b/.test(o)) ?? opts.find((o) => attr(o, 'value')) ?? opts[0];
        if (name && !(name in fields)) fields[name] = unescape((chosen && attr(chosen, 'value')) ?? 'test');
      }
      for (const [, attrs, text] of inner.matchAll(/<textarea\b([^>]*)>([\s\S]*?)<\/textarea>/g)) {
        const name = attr(attrs!, 'name');
        if (name && !(name in fields)) fields[name] = unescape(text!.trim()) || (/Ids$/.test(name) ? '' : 'test');
      }
      return fields;
    }
  }
  return null;
}

interface Result {
  who: string;
  method: string;
  route: string;
  params: number;
  injectable: string[];
  /** Findings not made again when the route was scanned again. */
  unconfirmed: string[];
  note: string;
  /** The status of the plain request (the route's own values, nothing injected). */
  plain: number;
  /** Whether the fields came from the route's form (false: guessed). */
  form: boolean;
}

/** Fields sent to a route whose form is on none of the person's pages (a link's target, an API-like form). */
const FALLBACK = { name: 'test', reason: 'test', note: 'test', email: 'test@exemple.test' };

function runSqlmap(args: string[]): Promise<string> {
  return new Promise((resolve) => {
    const p = spawn(opts.sqlmap!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('close', () => resolve(out));
  });
}

const outputDir = mkdtempSync(join(tmpdir(), 'guichet-sqlmap-out-'));
const common = ['--batch', '--dbms=PostgreSQL', `--level=${opts.level}`, `--risk=${opts.risk}`, `--technique=${opts.technique}`, '--skip=_csrf', '--flush-session', `--output-dir=${outputDir}`, '--disable-coloring', '--ignore-code=400,401,403,404,409,413,415,429', '--answers=follow=N,redirect=N', '--timeout=20', '--retries=1', `--threads=${opts.threads}`];
/** Routes scanned last: they end the session or delete what the other routes read (the child's file). */
const LAST = /^\/(signout|account\/sessions|account\/security\/(totp\/remove|passkeys\/:id\/revoke)|break-glass\/end|assist\/end|account\/privacy\/delete|children\/:id\/delete)/;
const only = opts.only ? new RegExp(opts.only) : null;

/** The person a route's path suggests (tried first): the one its pages are written for. */
function likelyPerson(route: string): Person {
  if (/^\/staff/.test(route)) return 'staff';
  if (/^\/security\//.test(route)) return 'officer';
  if (/^\/(operator|retention)/.test(route)) return 'operator';
  if (/^\/assist/.test(route)) return 'staff';
  if (/^\/(admin|grants|break-glass)/.test(route)) return 'admin';
  return 'parent';
}

/** What the scan knows of a person: their session, their own objects' ids, and their pages (where forms are found). */
interface Seen {
  session: Session;
  ids: Map<string, string>;
  pages: string[];
  /** The GET routes that answered this person 200. */
  opens: Set<string>;
}

/** The route's path with this person's ids in it, each marked `*` for injection (a zero id where they have none of that kind). */
function fill(route: string, ids: Map<string, string>): string {
  return route.replace(/:(\w+)/g, (_, _name: string, at: number) => `${ids.get(route.slice(0, at - 1).replace(/:\w+/g, '*')) ?? '00000000-0000-4000-8000-000000000000'}*`);
}

const getRoutes = routesOf('GET');
const postRoutes = routesOf('POST');
const seen = new Map<Person, Seen>();
for (const who of PEOPLE) {
  const session = await signIn(who);
  if (who === 'officer') {
    // An incident in the register, through its form, so that the pages of one (edit, link alerts and events) are there.
    const jar = jarOf(session);
    const { body } = await page(jar, '/security/incidents/new');
    const r = await page(jar, '/security/incidents', form({ ...formFields([body], '/security/incidents'), title: 'Incident de démonstration', _csrf: csrfOf(body) }));
    if (r.res.status !== 303) console.log(`[sqlmap] officer: the incident was not created (${r.res.status}: ${[...r.body.matchAll(/<p[^>]*class="[^"]*error[^"]*"[^>]*>([\s\S]*?)<\/p>/g)].map((m) => m[1]!.replace(/<[^>]+>/g, '').trim()).join(' / ')})`);
  }
  const ids = await ownIds(session);
  const jar = jarOf(session);
  const pages: string[] = [];
  const opens = new Set<string>();
  // Twice: the ids found on the first pass's pages (a session, a passkey, an application) open the pages of those objects.
  for (let pass = 0; pass < 2; pass++) {
    for (const route of getRoutes.filter((r) => !r.startsWith('/oidc') && !/^\/(signout|demo)/.test(r) && !opens.has(r) && (pass === 0 || r.includes(':')))) {
      const { res, body } = await page(jar, fill(route, ids).replace(/\*/g, ''));
      if (res.status === 200) {
        opens.add(route);
        pages.push(body);
        collectIds(body, ids);
      }
    }
  }
  seen.set(who, { session, ids, pages, opens });
  console.log(`[sqlmap] ${who}: signed in, ${ids.size} kinds of own ids, ${opens.size} pages open`);
}

/** Who scans a route: the first person, from the one its path suggests, whose session reaches its handler. */
function personFor(method: string, route: string): Person {
  const first = likelyPerson(route);
  for (const who of [first, ...PEOPLE.filter((p) => p !== first)]) {
    const s = seen.get(who)!;
    if (method === 'GET' ? s.opens.has(route) : formFields(s.pages, fill(route, s.ids).replace(/\*/g, '')) !== null) return who;
  }
  return first;
}

const results: Result[] = [];
/** The query fields the list pages read (search, paging); every GET route gets them, whether it reads them or not. */
const QUERY = 'q=test&page=1';
const targets = [
  ...getRoutes.map((route) => ({ method: 'GET', route })),
  ...postRoutes.filter((r) => !LAST.test(r)).map((route) => ({ method: 'POST', route })),
  ...postRoutes.filter((r) => LAST.test(r)).map((route) => ({ method: 'POST', route })),
].filter((x) => !x.route.startsWith('/oidc/') && !x.route.startsWith('/api/') && !/^\/(healthz|readyz|metrics|assets|security\.txt|security-policy\.txt|\.well-known)/.test(x.route) && (!only || only.test(x.route)));
const plan = targets.map((t) => ({ ...t, by: opts['every-role'] ? [...PEOPLE] : [personFor(t.method, t.route)] }));
if (opts.plan) for (const t of plan) console.log(`[sqlmap] plan: ${t.method.padEnd(4)} ${t.route} — ${t.by.join(', ')}`);
for (const who of opts.plan ? [] : (opts.roles!.split(',') as Person[])) {
  if (!seen.has(who)) throw new Error(`unknown person ${who}: one of ${PEOPLE.join(', ')}`);
  const { ids, pages } = seen.get(who)!;
  let s = seen.get(who)!.session;
  for (const { method, route } of plan.filter((t) => t.by.includes(who))) {
    if (!(await alive(s))) s = await signIn(who);
    const path = fill(route, ids);
    const t0 = Date.now();
    const fields = formFields(pages, path.replace(/\*/g, ''), method as 'GET' | 'POST');
    // A page's query: the fields of its own search form (filters, dates) where it has one, or search and paging.
    const query = method === 'GET' ? (fields ? new URLSearchParams(fields).toString() : QUERY) : '';
    const params = [...path.matchAll(/\*/g)].length + (method === 'GET' ? query.split('&').filter(Boolean).length : Object.keys(fields ?? FALLBACK).length);
    if (params === 0) continue;
    const argsFor = (session: Session) =>
      method === 'GET' ? ['-u', `${base}${path}${query ? `?${query}` : ''}`] : ['-u', `${base}${path}`, `--data=${new URLSearchParams({ _csrf: session.csrf, ...(fields ?? FALLBACK) }).toString()}`];
    // The plain request first: its answer says whether the scan's requests reach the handler's work (a 4xx
    // here means the values the scan varies travel in a request the route refuses before any statement).
    const plain = await fetch(`${base}${path.replace(/\*/g, '')}${query ? `?${query}` : ''}`, {
      method,
      redirect: 'manual',
      headers: { cookie: s.cookie, ...(method === 'POST' ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
      body: method === 'POST' ? new URLSearchParams({ _csrf: s.csrf, ...(fields ?? FALLBACK) }).toString() : undefined,
    });
    await plain.arrayBuffer();
    if (!(await alive(s))) s = await signIn(who);
    const scan = async () => {
      const out = await runSqlmap([...argsFor(s), ...common, `--cookie=${s.cookie}`]);
      return { out, found: [...out.matchAll(/Parameter: ([^\n]+)\n\s+Type:/g)].map((m) => m[1]!.trim()) };
    };
    let { out, found } = await scan();
    let unconfirmed: string[] = [];
    if (found.length) {
      // What sqlmap saw, to judge it.
      console.log(/---\n([\s\S]*?)\n---/.exec(out)?.[1] ?? out.slice(-2000));
      // An injection answers the same way every time; a boolean-based "finding" made of an answer's varying parts
      // (a time, a token) does not come back. Scanned twice more: what is not found each time is reported apart.
      for (let i = 0; i < 2 && found.length; i++) {
        if (!(await alive(s))) s = await signIn(who);
        const again = await scan();
        unconfirmed = unconfirmed.concat(found.filter((x) => !again.found.includes(x)));
        found = found.filter((x) => again.found.includes(x));
        out = again.out;
      }
    }
    const note = /all tested parameters do not appear to be injectable/.test(out) ? 'not injectable' : /no parameter\(s\) found|not found any/i.test(out) ? 'no parameter' : (/\[CRITICAL\] ([^\n]+)/.exec(out)?.[1] ?? 'done').slice(0, 100);
    // An answer sqlmap gave without its verdict (it stopped before testing): its last lines, to see why.
    if (note === 'done') console.log(out.split('\n').slice(-12).join('\n'));
    results.push({ who, method, route, params, injectable: found, unconfirmed, note, plain: plain.status, form: fields !== null });
    const verdict = found.length ? `INJECTABLE: ${found.join('; ')}` : unconfirmed.length ? `not injectable (a finding on ${unconfirmed.join('; ')} not found again)` : note;
    console.log(`[sqlmap] ${who.padEnd(8)} ${method.padEnd(4)} ${route} — ${params} parameters${fields === null && method === 'POST' ? ' (no form on their pages: fields guessed)' : fields && method === 'GET' ? ' (the page\'s search form)' : ''}, plain request ${plain.status}, ${verdict} (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  }
}

const injectable = results.filter((r) => r.injectable.length);
console.log(`\n[sqlmap] ${results.length} route scans (${new Set(results.map((r) => `${r.method} ${r.route}`)).size} routes, ${results.reduce((a, r) => a + r.params, 0)} parameters) by ${opts.roles}, level ${opts.level}, risk ${opts.risk}, techniques ${opts.technique}, in ${((Date.now() - started) / 60000).toFixed(1)} min: ${injectable.length} injectable`);
for (const r of injectable) console.log(`  ${r.who} ${r.method} ${r.route}: ${r.injectable.join('; ')}`);
const byStatus = new Map<string, number>();
for (const r of results) byStatus.set(String(r.plain), (byStatus.get(String(r.plain)) ?? 0) + 1);
console.log(`[sqlmap] plain requests' answers: ${[...byStatus].sort().map(([k, n]) => `${k} × ${n}`).join(', ')}; forms found on the person's pages for ${results.filter((r) => r.method === 'POST' && r.form).length} of ${results.filter((r) => r.method === 'POST').length} POST routes`);
for (const r of results.filter((x) => x.unconfirmed.length)) console.log(`  not found again: ${r.who} ${r.method} ${r.route}: ${r.unconfirmed.join('; ')}`);
await app.close();
await db.close();
await deps.keys.close?.();
rmSync(outputDir, { recursive: true, force: true });
if (!keep) rmSync(dataDir, { recursive: true, force: true });
process.exit(injectable.length ? 1 : 0);
