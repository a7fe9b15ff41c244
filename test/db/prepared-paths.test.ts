/**
 * The paths every person takes most — signing in, the session behind each
 * request, a child's file — send PostgreSQL only statements it has prepared
 * (src/db/held-begin.ts): a statement that is not prepared is planned anew on
 * every request, and planning is most of what such statements cost the
 * database (a sign-in's throttle counts were 1.65 ms each that way). A
 * statement falls out of preparation silently (a `*` in its columns is
 * enough), hence this test.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFacility, createParent, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client } from '../helpers/client.ts';
import { createTestDatabase, recordMessages, type TestDatabase } from '../helpers/db.ts';
import { childForm } from '../helpers/world.ts';

/** The statements of one message, each as sent: BEGIN, the tenant's settings, EXECUTE or PREPARE, COMMIT… */
function statementsOf(message: string): string[] {
  // A new statement starts after "; " with a keyword; a literal holding "; select" would split wrongly, and fail loudly.
  return message.split(/;\s+(?=(?:begin|commit|rollback|execute|prepare|deallocate|select|insert|update|delete|with|values|set|\/\*)\b|\/\*)/i).map((s) => s.trim().replace(/;$/, ''));
}

/** What PostgreSQL plans from scratch: anything but transaction control, the tenant's settings and prepared statements. */
function plannedAnew(statement: string): boolean {
  if (/^(begin|commit|rollback)(\s+isolation level [a-z ]+)?$/i.test(statement)) return false;
  if (/^(execute|prepare|deallocate)\s+guichet_\d+\b/i.test(statement)) return false;
  // The transaction's settings: set_config calls only (role, tenant, actor), held for the statement after them.
  if (/^\/\* guichet:held \*\/ select (pg_catalog\.)?set_config\('[a-z_.]+', '[^']*', true\)(, (pg_catalog\.)?set_config\('[a-z_.]+', '[^']*', true\))*$/i.test(statement)) return false;
  return true;
}

describe('how a message is read', () => {
  it('splits a message into its statements and tells the planned ones', () => {
    const m =
      "begin; /* guichet:held */ SELECT pg_catalog.set_config('role', 'guichet_app', true), pg_catalog.set_config('app.tenant_id', 'x', true); execute guichet_4('a; b', 'Mozilla/5.0 (X11; Linux x86_64)'); commit";
    expect(statementsOf(m)).toEqual([
      'begin',
      "/* guichet:held */ SELECT pg_catalog.set_config('role', 'guichet_app', true), pg_catalog.set_config('app.tenant_id', 'x', true)",
      "execute guichet_4('a; b', 'Mozilla/5.0 (X11; Linux x86_64)')",
      'commit',
    ]);
    expect(statementsOf(m).filter(plannedAnew)).toEqual([]);
    expect(statementsOf("begin; /* guichet:held */ SELECT pg_catalog.set_config('role', 'guichet_app', true);  SELECT c.*, a.id FROM c; commit").filter(plannedAnew)).toEqual(['SELECT c.*, a.id FROM c']);
    expect(plannedAnew('select * from "tenants"')).toBe(true);
  });
});

describe.runIf(process.env.GUICHET_TEST_DB === 'postgres')('the busiest paths on PostgreSQL', () => {
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

  it('a sign-in, the session behind a request, a child’s file page and the pages most browsed send only prepared statements', async () => {
    const tenant = await tenantFor(t);
    const host = tenant.hosts[0]!;
    const facility = await createFacility(t, tenant, { name: 'CPE Les Colibris' });
    const email = `parent.${Date.now().toString(36)}@exemple.test`;
    await createParent(t, tenant, email);
    const setup = new Client(t.app, host);
    expect((await setup.signIn(email, PASSWORD)).status).toBe(303);
    await setup.get('/children/new');
    const r = await setup.post('/children/new', childForm({ firstName: 'Maëlle', lastName: 'Ouellet' }));
    expect(r.status).toBe(303);
    const childId = /\/children\/([0-9a-f-]{36})/.exec(String(r.headers.location))![1]!;
    await setup.get(`/directory/${facility}`);
    expect((await setup.post('/applications', { childId, facilityId: facility })).status).toBe(303);

    const sent: string[] = [];
    const stop = recordMessages(sent);
    try {
      for (let i = 0; i < 3; i++) {
        const parent = new Client(t.app, host);
        expect((await parent.signIn(email, PASSWORD)).status).toBe(303);
        const page = await parent.get(`/children/${childId}`);
        expect(page.status).toBe(200);
        expect(page.body).toContain('Maëlle');
        // What the load test browses besides: the public directory and a parent's own pages.
        for (const path of ['/', '/directory', '/directory?page=2', '/directory?municipality=Longueuil', '/directory?kind=cpe&subsidised=on', '/directory?q=colibris', `/directory/${facility}`, '/account', '/account/sessions']) {
          expect((await parent.get(path)).status, path).toBe(200);
        }
      }
    } finally {
      stop();
    }
    expect(sent.length).toBeGreaterThan(0);
    // The tenant directory is read whole at most every two seconds by a server (src/tenants/service.ts); the test
    // app reads it on every request to see changes at once. It is not a per-request statement there.
    const directory = 'select * from "tenants"';
    expect(sent.flatMap(statementsOf).filter((s) => plannedAnew(s) && s !== directory)).toEqual([]);
  });
});
