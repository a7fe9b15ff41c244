/**
 * /.well-known/security.txt as RFC 9116 asks: the required fields (Contact,
 * Expires) once each where the RFC says once, the configured contact, a
 * Canonical on the tenant's own address, French and English preferred, the
 * policy it points to served, the legacy location redirected — and still
 * served when the tenant is in maintenance (lockdown 4), when a reporter
 * needs it most.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/config.ts';
import { startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client } from '../helpers/client.ts';
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

/** RFC 9116 §2.2 (simplified): "Field: value" lines, comments and blank lines. */
function fields(body: string): [string, string][] {
  return body
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const m = /^([A-Za-z-]+): (.+)$/.exec(l);
      expect(m, `not a field line: ${l}`).not.toBeNull();
      return [m![1]!, m![2]!];
    });
}

describe('/.well-known/security.txt', () => {
  it('says where to report, until when, in which languages, under which policy; configurable; open during maintenance', async () => {
    const tenant = await tenantFor(t);
    const host = tenant.hosts[0]!;
    const anon = new Client(t.app, host);
    const now = Date.now();

    const r = await anon.get('/.well-known/security.txt');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('text/plain; charset=utf-8');
    const f = fields(r.body);
    const names = f.map(([k]) => k);
    // Contact at least once; Expires exactly once; Preferred-Languages at most once (§2.5).
    expect(names.filter((n) => n === 'Contact').length).toBeGreaterThanOrEqual(1);
    expect(names.filter((n) => n === 'Expires')).toHaveLength(1);
    expect(names.filter((n) => n === 'Preferred-Languages')).toHaveLength(1);
    const get = (k: string) => f.find(([n]) => n === k)?.[1];
    expect(get('Contact')).toBe('mailto:security@guichet.localhost');
    const expires = new Date(get('Expires')!);
    expect(get('Expires')).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
    // In the future, and less than a year away (§2.5.5 recommends it).
    expect(expires.getTime()).toBeGreaterThan(now);
    expect(expires.getTime()).toBeLessThan(now + 366 * 86_400_000);
    expect(get('Preferred-Languages')).toBe('fr, en');
    expect(get('Canonical')).toMatch(new RegExp(`^http://${host.replace(/\./g, '\\.')}(:\\d+)?/\\.well-known/security\\.txt$`));
    const policy = get('Policy')!;
    expect(policy).toMatch(/\/security-policy\.txt$/);

    // The policy it names is there, in both languages.
    const p = await anon.get(new URL(policy).pathname);
    expect(p.status).toBe(200);
    expect(p.body).toContain('[fr]');
    expect(p.body).toContain('[en]');
    expect(p.body).toMatch(/90 jours/);
    expect(p.body).toMatch(/90 days/);

    // The legacy location redirects (§3).
    const legacy = await anon.get('/security.txt');
    expect(legacy.status).toBe(301);
    expect(legacy.headers.location).toBe('/.well-known/security.txt');

    // Maintenance (lockdown 4) closes the site, not the way to report.
    await database.ownerDb().updateTable('tenants').set({ lockdown_level: 4 }).where('id', '=', tenant.id).execute();
    expect((await anon.get('/directory')).status).toBe(503);
    expect((await anon.get('/.well-known/security.txt')).status).toBe(200);
    expect((await anon.get('/security-policy.txt')).status).toBe(200);
  });

  it('takes the contact, expiry, policy and encryption key from the configuration, and refuses a bad value naming the variable', async () => {
    const config = loadConfig({
      NODE_ENV: 'test',
      GUICHET_SECURITY_CONTACT: 'mailto:securite@exemple.quebec, https://exemple.quebec/signaler',
      GUICHET_SECURITY_EXPIRES: '2027-03-31T23:59:59-04:00',
      GUICHET_SECURITY_POLICY: 'https://exemple.quebec/politique-divulgation',
      GUICHET_SECURITY_ENCRYPTION: 'https://exemple.quebec/pgp.asc',
    });
    const before = t.deps.config;
    t.deps.config = { ...before, securityTxt: config.securityTxt };
    try {
      const tenant = await tenantFor(t);
      const r = await new Client(t.app, tenant.hosts[0]!).get('/.well-known/security.txt');
      const f = fields(r.body);
      expect(f.filter(([k]) => k === 'Contact').map(([, v]) => v)).toEqual(['mailto:securite@exemple.quebec', 'https://exemple.quebec/signaler']);
      expect(f.find(([k]) => k === 'Expires')![1]).toBe('2027-04-01T03:59:59Z');
      expect(f.find(([k]) => k === 'Policy')![1]).toBe('https://exemple.quebec/politique-divulgation');
      expect(f.find(([k]) => k === 'Encryption')![1]).toBe('https://exemple.quebec/pgp.asc');
    } finally {
      t.deps.config = before;
    }
    for (const [variable, value] of [
      ['GUICHET_SECURITY_CONTACT', 'securite@exemple.quebec'],
      ['GUICHET_SECURITY_EXPIRES', 'next year'],
      ['GUICHET_SECURITY_POLICY', 'http://exemple.quebec/politique'],
    ] as const) {
      expect(() => loadConfig({ NODE_ENV: 'test', [variable]: value })).toThrow(ConfigError);
      expect(() => loadConfig({ NODE_ENV: 'test', [variable]: value })).toThrow(new RegExp(variable));
    }
  });
});
