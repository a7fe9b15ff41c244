import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { enqueueMail } from '../../src/mail/outbox.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';

let database: TestDatabase;
let t: TestApp;
let tenant: Tenant;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database, { demo: true });
  tenant = await tenantFor(t);
  await inTenant(database.db, tenant.id, (trx) =>
    enqueueMail(trx, tenant.id, { to: 'visiteur@exemple.test', locale: 'fr', template: 'set_password', subject: 'Choisir un mot de passe', body: 'https://exemple.test/set-password?token=secret-du-lien' }, new Date()),
  );
});
afterAll(async () => {
  await t?.close();
  await database?.close();
});

describe('the demo outbox page', () => {
  it('answers the machine it runs on, and nobody else, whatever a header claims', async () => {
    const get = (remoteAddress: string, headers: Record<string, string> = {}) => t.app.inject({ method: 'GET', url: '/demo/mail', remoteAddress, headers: { host: tenant.hosts[0]!, ...headers } });
    for (const local of ['127.0.0.1', '::1', '::ffff:127.0.0.1']) {
      const r = await get(local);
      expect(r.statusCode, local).toBe(200);
      expect(r.body).toContain('secret-du-lien');
    }
    for (const [remote, headers] of [['192.0.2.7', {}], ['192.0.2.7', { 'x-forwarded-for': '127.0.0.1' }], ['10.0.0.2', {}]] as const) {
      const r = await get(remote, headers);
      expect(r.statusCode, remote).toBe(404);
      expect(r.body).not.toContain('secret-du-lien');
    }
  });
});
