/**
 * CSP violation reports (ASVS 3.4.7): every page's policy names the endpoint;
 * a report in either format is answered 204, counted by directive and kept
 * without its page's query or the blocked address's path; a bad body is a
 * 4xx; nothing is read from or written to the database.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { readViolations } from '../../src/web/csp-report.ts';
import { registry } from '../../src/web/metrics.ts';
import { startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import type { Tenant } from '../../src/tenants/service.ts';

let database: TestDatabase;
let t: TestApp;
let tenant: Tenant;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
  tenant = await tenantFor(t);
});

afterAll(async () => {
  await t?.close();
  await database?.close();
});

async function counted(directive: string): Promise<number> {
  const m = await registry.getSingleMetric('guichet_csp_violations_total')!.get();
  return m.values.find((v) => v.labels.directive === directive)?.value ?? 0;
}

const post = (body: string, type = 'application/csp-report', host = tenant.hosts[0]!) =>
  t.app.inject({ method: 'POST', url: '/csp-report', headers: { host, 'content-type': type }, payload: body });

const LEGACY = {
  'csp-report': {
    'document-uri': 'https://guichet.exemple.test/children/6f1c2a2e-0b7e-4d55-9a43-9d0c1f3c2b10?nirec=LEVR12345678',
    'violated-directive': 'script-src-elem',
    'effective-directive': 'script-src-elem',
    'blocked-uri': 'https://evil.exemple.test/steal.js?who=marie.tremblay@exemple.test',
    'source-file': 'https://guichet.exemple.test/assets/app.js?v=3',
    'line-number': 12,
    disposition: 'enforce',
  },
};

describe('CSP violation reports', () => {
  it('every page’s policy names the endpoint', async () => {
    for (const url of ['/', '/signin', '/directory']) {
      const r = await t.app.inject({ method: 'GET', url, headers: { host: tenant.hosts[0]! } });
      expect(String(r.headers['content-security-policy']), url).toMatch(/(^|;)\s*report-uri \/csp-report(;|$)/);
    }
  });

  it('keeps the directive, the page’s path and the blocked origin — never a query, a path or an address', () => {
    expect(readViolations(LEGACY)).toEqual([{ directive: 'script-src-elem', page: '/children/6f1c2a2e-0b7e-4d55-9a43-9d0c1f3c2b10', blocked: 'https://evil.exemple.test', source: '/assets/app.js:12', disposition: 'enforce' }]);
    const api = [{ type: 'csp-violation', url: 'https://x/', body: { documentURL: 'https://guichet.exemple.test/account?x=1', effectiveDirective: 'style-src-attr', blockedURL: 'inline', disposition: 'report' } }, { type: 'deprecation', body: {} }];
    expect(readViolations(api)).toEqual([{ directive: 'style-src-attr', page: '/account', blocked: 'inline', source: null, disposition: 'report' }]);
    expect(readViolations({ 'csp-report': { 'violated-directive': 'made-up-directive x' } })[0]!.directive).toBe('other');
    for (const junk of [null, 1, 'x', {}, [], [1, null, 'x'], { 'csp-report': [] }]) expect(readViolations(junk)).toEqual([]);
  });

  it('answers 204 and counts a report in either format; refuses bad bodies with a 4xx; touches no table', async () => {
    const events = () => inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select('id').execute());
    const before = (await events()).length;
    const scripts = await counted('script-src-elem');
    const r = await post(JSON.stringify(LEGACY));
    expect(r.statusCode).toBe(204);
    expect(await counted('script-src-elem')).toBe(scripts + 1);
    // The Reporting API's format, and a host Guichet does not serve: counted too (a report needs no tenant).
    const styles = await counted('style-src-attr');
    expect((await post(JSON.stringify([{ type: 'csp-violation', body: { effectiveDirective: 'style-src-attr', blockedURL: 'inline' } }]), 'application/reports+json', 'unknown.exemple.test')).statusCode).toBe(204);
    expect(await counted('style-src-attr')).toBe(styles + 1);
    // No CSRF token, no cookie: a browser sends none.
    expect((await post(JSON.stringify(LEGACY), 'application/json')).statusCode).toBe(204);

    expect((await post('{"csp-report":')).statusCode).toBe(400);
    expect((await post('csp-report=1', 'application/x-www-form-urlencoded')).statusCode).toBe(415);
    expect((await post('x', 'text/plain')).statusCode).toBe(415);
    expect((await post(JSON.stringify({ 'csp-report': { pad: 'x'.repeat(20_000) } }))).statusCode).toBe(413);
    expect((await t.app.inject({ method: 'GET', url: '/csp-report', headers: { host: tenant.hosts[0]! } })).statusCode).toBe(404);
    expect((await events()).length).toBe(before);
  });
});
