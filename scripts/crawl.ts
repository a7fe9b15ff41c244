/**
 * A running Guichet with a signed-in person for each role, and the pages each
 * of them opens: what the SQL injection scan (scripts/sqlmap.ts) and the page
 * benchmark at scale (bench/pages.ts) work through.
 *
 * startInstance() starts Guichet on a throwaway embedded database with the
 * demo data (or reuses GUICHET_DATA_DIR; on PostgreSQL with DATABASE_URL and
 * DATABASE_OWNER_URL, the demo is set up through the owner connection, which
 * may create tenants, and served through the application role), adds to the
 * demo's parent, facility staff member and administrator one person for each
 * other role — a facility director, a programme operator, a security officer,
 * their roles approved by the administrator as the dual-control rule and the
 * database's guard require — and an alert. crawl() signs each in (the second
 * factor answered with an authenticator secret) and reads, from the router's
 * own route table, every page that answers them, collecting the ids of their
 * own objects from the links and forms of those pages.
 *
 * Detection's bulk-reading rules are switched off on this instance, or the
 * crawl (thousands of reads a minute) would be cut off at the 21st file like
 * any intruder; detection has its own tests (test/detection).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { loadConfig } from '../src/config/config.ts';
import type { Deps } from '../src/context.ts';
import type { Database } from '../src/db/connection.ts';
import type { MembershipRole } from '../src/db/schema.ts';
import { inTenant } from '../src/db/tenant.ts';
import { demoCredentialsFile, ensureDemo, type DemoCredentials } from '../src/demo/setup.ts';
import { createAlert } from '../src/detection/alerts.ts';
import { DEFAULT_RULES } from '../src/detection/rules.ts';
import { insertTotp } from '../src/identity/factors/store.ts';
import { newTotpSecret, totpCodeAt } from '../src/identity/factors/totp.ts';
import { createDemoAccount } from '../src/identity/service.ts';
import { createLogger, makeDeps, openFromConfig, ROUTES } from '../src/server.ts';
import type { Tenant } from '../src/tenants/service.ts';
import { buildApp } from '../src/web/app.ts';

export const PEOPLE = ['parent', 'staff', 'director', 'operator', 'officer', 'admin'] as const;
export type Person = (typeof PEOPLE)[number];

export interface Instance {
  app: FastifyInstance;
  db: Database;
  deps: Deps;
  base: string;
  dataDir: string;
  tenant: Tenant;
  creds: DemoCredentials;
  emails: Record<Person, string>;
  totp: Record<string, string>;
  close(): Promise<void>;
}

/** The instance this process works on (one at a time). */
let inst: Instance;

/**
 * Starts the instance; `tool` names the caller in its messages. A data
 * directory of its own unless GUICHET_DATA_DIR names one (kept, with its
 * people); `env` as the process's (DATABASE_URL for PostgreSQL).
 */
export async function startInstance(tool: string, port: number, env: NodeJS.ProcessEnv = process.env): Promise<Instance> {
  const keep = !!env.GUICHET_DATA_DIR;
  const dataDir = env.GUICHET_DATA_DIR ?? mkdtempSync(join(tmpdir(), `guichet-${tool}-`));
  const config = { ...loadConfig({ ...env, NODE_ENV: 'development', GUICHET_DATA_DIR: dataDir, LOG_LEVEL: 'warn', GUICHET_JOBS: 'off' }), demo: true, port };
  const log = createLogger(config);
  const started = Date.now();
  console.log(`[${tool}] starting Guichet with demo data in ${dataDir} (the first start seeds a few thousand families: a few minutes)`);
  // Setting up the demo creates a tenant, which the application role may not do: on PostgreSQL, as the owner.
  const owned = !!config.databaseUrl && !!config.databaseOwnerUrl && config.databaseOwnerUrl !== config.databaseUrl;
  if (owned) {
    const ownerDb = await openFromConfig({ ...config, databaseUrl: config.databaseOwnerUrl, allowPrivilegedDbRole: true }, log);
    try {
      await ensureDemo(makeDeps(config, ownerDb, log));
    } finally {
      await ownerDb.close();
    }
  }
  const db = await openFromConfig(config, log);
  const deps = makeDeps(config, db, log);
  if (!owned) await ensureDemo(deps);
  const app = await buildApp(deps, ROUTES);
  await app.listen({ port: config.port, host: '127.0.0.1' });
  const base = `http://localhost:${(app.server.address() as { port: number }).port}`;
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
   * administrator approved for someone else (granted by a person other than
   * the holder, here the demo's staff member, approved by a different current
   * administrator: what the memberships guard of the database accepts; the
   * holder is never one of the two), past its cooling-off period so
   * that its pages open as they would for a settled holder. A kept data
   * directory keeps them.
   */
  const emails: Record<Person, string> = { parent: creds.parent, staff: creds.staff, admin: creds.admin, director: 'direction@demo.guichet.test', operator: 'operateur@demo.guichet.test', officer: 'securite@demo.guichet.test' };
  const peopleFile = join(dataDir, 'crawl-people.json');
  const totp: Record<string, string> = { ...creds.totp, ...(existsSync(peopleFile) ? (JSON.parse(readFileSync(peopleFile, 'utf8')) as Record<string, string>) : {}) };
  await inTenant(db.db, tenant.id, async (trx) => {
    const now = new Date();
    const id = async (email: string) => (await trx.selectFrom('accounts').select('id').where('email', '=', email).executeTakeFirstOrThrow()).id;
    const admin = await id(creds.admin);
    const granter = await id(creds.staff);
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
        .values({ tenant_id: tenant.id, account_id: account, role, facility_id: facility, source: 'grant', granted_by: granter, approved_by: admin, created_at: new Date(now.getTime() - 2 * 3600_000), expires_at: new Date(now.getTime() + 10 * 3600_000) })
        .execute();
      const secret = newTotpSecret();
      const factor = await insertTotp(trx, deps.keys, tenant.id, account, secret, now);
      await trx.updateTable('totp_factors').set({ confirmed_at: now }).where('id', '=', factor).execute();
      totp[email] = secret;
    }
    // An alert, so that the officer's pages hold the forms that act on one (acknowledge, assign, note, close…).
    if (!(await trx.selectFrom('detection_alerts').select('id').limit(1).executeTakeFirst())) {
      const origin = { actorAccountId: null, actorRoles: [`system:${tool}`], ip: null, userAgent: `scripts/${tool}`, requestId: null };
      await createAlert(trx, tenant.id, { ruleCode: 'export.1h', signal: 'export', severity: 'low', subjectAccountId: await id(creds.staff), response: 'alert', lockdownLevel: null, eventIds: [], details: {} }, origin, now, base);
    }
  });
  writeFileSync(peopleFile, JSON.stringify(totp), { mode: 0o600 });
  console.log(`[${tool}] listening on ${base} after ${((Date.now() - started) / 1000).toFixed(0)} s`);
  inst = {
    app,
    db,
    deps,
    base,
    dataDir,
    tenant,
    creds,
    emails,
    totp,
    close: async () => {
      await app.close();
      await db.close();
      await deps.keys.close?.();
      if (!keep) rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return inst;
}

/* ------------------------------------------------------------------ sessions */

export interface Session {
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
export function jarOf(s: Session): Map<string, string> {
  return new Map(s.cookie.split('; ').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as [string, string]));
}

export async function page(jar: Map<string, string>, path: string, init: RequestInit = {}): Promise<{ res: Response; body: string }> {
  const res = await fetch(inst.base + path, { redirect: 'manual', ...init, headers: { ...(init.headers as Record<string, string>), cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; ') } });
  cookiesOf(res, jar);
  return { res, body: await res.text() };
}

export const csrfOf = (html: string) => /name="_csrf" value="([^"]+)"/.exec(html)?.[1] ?? '';
export const form = (o: Record<string, string>) => ({ method: 'POST', body: new URLSearchParams(o).toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } });

export async function signIn(who: Person): Promise<Session> {
  const email = inst.emails[who];
  const jar = new Map<string, string>();
  const first = await page(jar, '/signin');
  let r = await page(jar, '/signin', form({ _csrf: csrfOf(first.body), email, password: inst.creds.password }));
  const secret = inst.totp[email];
  if (String(r.res.headers.get('location')).startsWith('/signin/second-factor') && secret) {
    const step = await page(jar, r.res.headers.get('location')!);
    r = await page(jar, '/signin/second-factor', form({ _csrf: csrfOf(step.body), code: await totpCodeAt(secret, new Date()) }));
  }
  if (r.res.status !== 303) throw new Error(`${who} could not sign in (${r.res.status})`);
  const account = await page(jar, '/account');
  return { who, cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; '), csrf: csrfOf(account.body) };
}

export async function alive(s: Session): Promise<boolean> {
  const r = await fetch(`${inst.base}/account`, { redirect: 'manual', headers: { cookie: s.cookie } });
  return r.status === 200;
}

/* --------------------------------------------------------------- the targets */

/** The router's own route table (the same reading as test/helpers/app.ts registeredRoutes). */
export function routesOf(method: 'GET' | 'POST'): string[] {
  const out = new Set<string>();
  for (const tree of [inst.app.printRoutes({ commonPrefix: false }), inst.app.printRoutes({ method })]) {
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
export function collectIds(body: string, ids: Map<string, string>): void {
  for (const [, url] of body.matchAll(/(?:href|action)="(\/[^"?#]*)"/g)) {
    for (const m of url!.matchAll(UUID)) {
      const key = url!.slice(0, m.index - 1).replace(UUID, '*');
      if (!ids.has(key)) ids.set(key, m[0]);
    }
  }
}

/** Ids of the person's own objects, from their pages that list them (children, facilities, offers, alerts…). */
export async function ownIds(s: Session): Promise<Map<string, string>> {
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
export function formFields(pages: string[], path: string, method: 'GET' | 'POST' = 'POST'): Record<string, string> | null {
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
/** The person a route's path suggests (tried first): the one its pages are written for. */
export function likelyPerson(route: string): Person {
  if (/^\/staff/.test(route)) return 'staff';
  if (/^\/security\//.test(route)) return 'officer';
  if (/^\/(operator|retention)/.test(route)) return 'operator';
  if (/^\/assist/.test(route)) return 'staff';
  if (/^\/(admin|grants|break-glass)/.test(route)) return 'admin';
  return 'parent';
}

/** What the scan knows of a person: their session, their own objects' ids, and their pages (where forms are found). */
export interface Seen {
  session: Session;
  ids: Map<string, string>;
  pages: string[];
  /** The GET routes that answered this person 200. */
  opens: Set<string>;
}

/** The route's path with this person's ids in it, each marked `*` for injection (a zero id where they have none of that kind). */
export function fill(route: string, ids: Map<string, string>): string {
  return route.replace(/:(\w+)/g, (_, _name: string, at: number) => `${ids.get(route.slice(0, at - 1).replace(/:\w+/g, '*')) ?? '00000000-0000-4000-8000-000000000000'}*`);
}
/**
 * Signs each person in and reads every page that answers them (GET routes of
 * the router but OpenID Connect's, sign-out and the demo's), twice: the ids
 * found on the first pass's pages open the pages of those objects.
 */
export async function crawl(tool: string): Promise<Map<Person, Seen>> {
  const getRoutes = routesOf('GET');
  const seen = new Map<Person, Seen>();
  for (const who of PEOPLE) {
    const session = await signIn(who);
    if (who === 'officer') {
      // An incident in the register, through its form, so that the pages of one (edit, link alerts and events) are there.
      const jar = jarOf(session);
      const { body } = await page(jar, '/security/incidents/new');
      const r = await page(jar, '/security/incidents', form({ ...formFields([body], '/security/incidents'), title: 'Incident de démonstration', _csrf: csrfOf(body) }));
      if (r.res.status !== 303) console.log(`[${tool}] officer: the incident was not created (${r.res.status}: ${[...r.body.matchAll(/<p[^>]*class="[^"]*error[^"]*"[^>]*>([\s\S]*?)<\/p>/g)].map((m) => m[1]!.replace(/<[^>]+>/g, '').trim()).join(' / ')})`);
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
    console.log(`[${tool}] ${who}: signed in, ${ids.size} kinds of own ids, ${opens.size} pages open`);
  }
  return seen;
}

/** Who works on a route: the first person, from the one its path suggests, whose session reaches its handler. */
export function personFor(seen: Map<Person, Seen>, method: string, route: string): Person {
  const first = likelyPerson(route);
  for (const who of [first, ...PEOPLE.filter((p) => p !== first)]) {
    const s = seen.get(who)!;
    if (method === 'GET' ? s.opens.has(route) : formFields(s.pages, fill(route, s.ids).replace(/\*/g, '')) !== null) return who;
  }
  return first;
}
