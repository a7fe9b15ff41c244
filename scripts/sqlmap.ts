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
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { alive, crawl, fill, formFields, PEOPLE, personFor as whoWorksOn, routesOf, signIn, startInstance, type Person, type Session } from './crawl.ts';

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

const started = Date.now();
const inst = await startInstance('sqlmap', Number(opts.port));
const { base } = inst;
const seen = await crawl('sqlmap');
const getRoutes = routesOf('GET');
const postRoutes = routesOf('POST');
/** Who scans a route: the first person, from the one its path suggests, whose session reaches its handler. */
const personFor = (method: string, route: string) => whoWorksOn(seen, method, route);

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
await inst.close();
rmSync(outputDir, { recursive: true, force: true });
process.exit(injectable.length ? 1 : 0);
