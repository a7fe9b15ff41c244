/**
 * Property-based fuzzing (fast-check) of every route's input: a generated
 * request picks a route from the router (GET or POST, so a new route is
 * fuzzed the day it is registered), a person (signed out, parent, staff,
 * operator, security officer, administrator), path parameters (the person's
 * own ids, unknown ids, any string), a query string and a body built from
 * the fields the forms read (with valid values, any unicode, arrays, control
 * characters, long strings) and fields nobody reads, sent as a form, JSON,
 * text or a multipart body, with the session's CSRF token most of the time so
 * that it reaches the handlers. Property: never a 5xx.
 *
 * A few hundred requests in the normal suite; a long run on demand:
 *   GUICHET_FUZZ_RUNS=100000 npx vitest run test/web/fuzz.test.ts   (npm run fuzz)
 * GUICHET_FUZZ_SEED replays a run.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { PASSWORD, registeredRoutes, startTestApp, type TestApp } from '../helpers/app.ts';
import { Client, type Response } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { buildSide, ROLES, type Role, type Side } from '../helpers/world.ts';

const RUNS = Number(process.env.GUICHET_FUZZ_RUNS ?? 150);
const SEED = process.env.GUICHET_FUZZ_SEED ? Number(process.env.GUICHET_FUZZ_SEED) : undefined;

let database: TestDatabase;
let t: TestApp;
let A: Side;
const clients = new Map<Role | 'anonymous', Client>();
const started = Date.now();

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
  A = await buildSide(t);
  for (const who of ROLES) clients.set(who, await A.signIn(who));
  const anon = new Client(t.app, A.host);
  await anon.get('/signin');
  clients.set('anonymous', anon);
  console.log(`[fuzz] fixtures in ${Date.now() - started} ms`);
}, 120_000);

afterAll(async () => {
  console.log(`[fuzz] whole file in ${Date.now() - started} ms`);
  await t?.close();
  await database?.close();
});

const d0 = today(new Date());
/** Field names the forms read, each with a value the form would accept. */
const FIELDS: Record<string, string> = {
  email: 'parent@exemple.test',
  password: PASSWORD,
  passwordConfirm: PASSWORD,
  firstName: 'Zoé',
  lastName: 'Tremblay',
  birthDate: addMonths(d0, -6),
  desiredEntryDate: addMonths(d0, 4),
  nirec: '1234 5678 90',
  day_mon: 'on',
  inSubsidisedCare: 'on',
  siblingAttending: 'on',
  name: 'Téléphone',
  reason: 'Un motif réel et précis',
  note: 'Constat',
  title: 'Accès inhabituel',
  dataConcerned: 'Noms',
  circumstances: 'Un samedi soir',
  discoveredOn: '2026-05-17',
  riskLevel: 'undetermined',
  measures: 'Sessions révoquées',
  code: '123456',
  level: '1',
  infant: '1',
  toddler: '0',
  startDate: addMonths(d0, 2),
  decision: 'approve',
  scope: 'openid',
  value: 'Réseau BIBLIO',
  labelFr: 'Abonnée',
  labelEn: 'Patron',
  validUntil: addMonths(d0, 6),
  kind: 'patron',
  channel: 'phone',
  url: 'https://exemple.test/alertes',
  threshold: '10',
  windowSeconds: '300',
  response: 'alert',
  lockdownLevel: '2',
  enabled: 'on',
  durationMinutes: '60',
  format: 'html',
  from: '2026-05-15T19:00',
  to: '2026-05-15T23:00',
  redirectUris: 'https://catalogue.exemple.test/callback',
  return: '/account',
  token: 'a'.repeat(43),
  credential: '{}',
  assignee: '00000000-0000-4000-8000-000000000000',
  role: 'security_officer',
  status: 'open',
  q: 'Longueuil',
  page: '2',
  form: 'priorities',
};

/** Routes that end the session or close the tenant: after one succeeds, the person signs in again / the tenant is reopened. */
const ENDS_SESSION = /^\/(signout|account\/sessions|account\/security\/totp\/remove|account\/privacy\/delete|assist\/end|break-glass\/end)/;

const PROTOCOL = (route: string) => route.includes('*') || (route.startsWith('/oidc/') && !route.startsWith('/oidc/interaction'));

function arbitraries(routes: { method: 'GET' | 'POST'; route: string }[]) {
  const ids = fc.oneof(
    fc.constantFrom(A.child1, A.app1, A.facility1, A.facility2, A.child2, A.accounts.parent),
    fc.uuid(),
    fc.string({ maxLength: 40 }),
    fc.string({ unit: 'binary', maxLength: 40 }),
    fc.constantFrom('%00', '..%2F..', '%E0%A4%A', 'a'.repeat(250), "1' OR '1'='1"),
  );
  const value = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...Object.values(FIELDS)) },
    { weight: 2, arbitrary: fc.string({ maxLength: 60 }) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 60 }) },
    { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 30 }) },
    { weight: 1, arbitrary: fc.integer().map(String) },
    { weight: 1, arbitrary: fc.tuple(fc.date({ noInvalidDate: false }), fc.constantFrom(7, 10, 16, 19, 24)).map(([d, n]) => (Number.isNaN(d.getTime()) ? 'Invalid Date' : d.toISOString().slice(0, n))) },
    { weight: 1, arbitrary: fc.constantFrom('', ' ', '\u0000', '\u202e', '\u200b', 'ＡＤＭＩＮ', 'раураl', 'x'.repeat(5000), '{{7*7}}', "'; DROP TABLE children;--", '2025-02-30', '9999-99-99') },
  );
  const key = fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...Object.keys(FIELDS)) }, { weight: 1, arbitrary: fc.string({ maxLength: 20 }) }, { weight: 1, arbitrary: fc.constantFrom('__proto__', 'constructor', 'tenant_id', 'role', 'a[b]', '_csrf') });
  const fields = fc.dictionary(key, fc.oneof({ weight: 6, arbitrary: value }, { weight: 1, arbitrary: fc.array(value, { maxLength: 3 }) }), { maxKeys: 12 });
  return fc.record({
    target: fc.constantFrom(...routes),
    who: fc.constantFrom<Role | 'anonymous'>('anonymous', ...ROLES),
    params: fc.array(ids, { minLength: 3, maxLength: 3 }),
    query: fields,
    body: fields,
    // Mostly a form with the session's token, so that the request reaches the handler.
    encoding: fc.constantFrom('form', 'form', 'form', 'form', 'form-no-csrf', 'json', 'text', 'multipart', 'none'),
    baseline: fc.boolean(),
  });
}

function encode(fields: Record<string, string | string[]>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(fields)) for (const x of Array.isArray(v) ? v : [v]) p.append(k, x);
  return p.toString();
}

describe('fuzzing every route', () => {
  it(`${RUNS} generated requests over every route and person: never a 5xx`, async () => {
    const routes = (['GET', 'POST'] as const).flatMap((method) => registeredRoutes(t.app, method).filter((r) => !PROTOCOL(r)).map((route) => ({ method, route })));
    expect(routes.length).toBeGreaterThan(100);
    const statuses = new Map<number, number>();
    const failures: string[] = [];
    const t0 = Date.now();
    let n = 0;
    await fc.assert(
      fc.asyncProperty(arbitraries(routes), async (g) => {
        const c = clients.get(g.who)!;
        let i = 0;
        const path = g.target.route.replace(/:(\w+)/g, () => encodeURIComponent(g.params[i++ % 3]!));
        const query = encode(g.query);
        const url = query ? `${path}?${query}` : path;
        // Half the bodies start from every field's valid value, so that one spoiled field is all that is wrong.
        const body: Record<string, string | string[]> = g.baseline ? { ...FIELDS, ...g.body } : g.body;
        let r: Response;
        if (g.target.method === 'GET') r = await c.get(url);
        else if (g.encoding === 'form') r = await c.post(url, body);
        else if (g.encoding === 'form-no-csrf') r = await c.post(url, body, { csrf: null });
        else if (g.encoding === 'json') r = await c.raw({ method: 'POST', url, payload: JSON.stringify({ _csrf: c.csrf, ...body }), headers: { 'content-type': 'application/json' } });
        else if (g.encoding === 'text') r = await c.raw({ method: 'POST', url, payload: encode({ _csrf: c.csrf ?? '', ...body }), headers: { 'content-type': 'text/plain' } });
        else if (g.encoding === 'multipart') r = await c.raw({ method: 'POST', url, payload: `--x\r\nContent-Disposition: form-data; name="_csrf"\r\n\r\n${c.csrf}\r\n--x--\r\n`, headers: { 'content-type': 'multipart/form-data; boundary=x' } });
        else r = await c.raw({ method: 'POST', url, headers: { 'content-type': 'application/x-www-form-urlencoded' } });
        n++;
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        // A lockdown at level 4 answers 503 by design (a maintenance page): reopen the tenant and go on.
        const maintenance = r.status === 503 && r.body.includes('maintenance');
        if (r.status >= 500 && !maintenance) failures.push(`${g.who} ${g.target.method} ${url.slice(0, 200)} (${g.encoding}) → ${r.status}`);
        if (maintenance || (g.target.route.startsWith('/security/lockdown') && r.status < 400)) {
          await database.db.updateTable('tenants').set({ lockdown_level: 0 }).where('id', '=', A.tenant.id).execute();
        }
        // Signed out by the request (or by a session-ending route): sign in again, so the rest is tried signed in.
        if (g.who !== 'anonymous' && (![...c.cookies.keys()].some((k) => k.includes('session')) || (ENDS_SESSION.test(g.target.route) && r.status < 400))) {
          // An account the fuzzing locked (a lost factor, a suspension) stays signed out: the rest is tried as such.
          clients.set(g.who, await A.signIn(g.who).catch(() => c));
        }
        if (g.who === 'anonymous' && !c.csrf) await c.get('/signin');
        return r.status < 500 || maintenance;
      }),
      { numRuns: RUNS, ...(SEED !== undefined ? { seed: SEED } : {}), endOnFailure: false, verbose: 1 },
    );
    const ms = Date.now() - t0;
    console.log(`[fuzz] ${n} requests over ${routes.length} routes in ${ms} ms (${Math.round((n / ms) * 1000)} a second); statuses ${JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))}; ${failures.length} 5xx`);
    expect(failures).toEqual([]);
  }, Math.max(600_000, RUNS * 200));
});
