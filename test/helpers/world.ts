/**
 * One tenant's people and files, built once per test file for the attack
 * tests: two facilities, two families (each a parent with a child applying to
 * one facility), a director of the first facility, a staff member of the
 * second, a programme operator, a security officer and an administrator,
 * each signed in as the real forms do (with their second factor).
 */
import { sql } from 'kysely';
import { inTenant } from '../../src/db/tenant.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { grantRole } from '../records/people.ts';
import { createAdmin, createFacility, createParent, createStaff, PASSWORD, tenantFor, type TestApp } from './app.ts';
import { Client } from './client.ts';

export type Role = 'parent' | 'staff' | 'operator' | 'officer' | 'admin';
export const ROLES: readonly Role[] = ['parent', 'staff', 'operator', 'officer', 'admin'];

export interface Side {
  tenant: Tenant;
  host: string;
  facility1: string;
  facility2: string;
  /** The first family: parent1's child, applying to facility1. */
  child1: string;
  app1: string;
  /** The second family: parent2's child, applying to facility2 only. */
  child2: string;
  app2: string;
  emails: Record<Role | 'parent2' | 'staff2', string>;
  accounts: Record<Role | 'parent2' | 'staff2', string>;
  /** Signs in a fresh client as this person (a new session each time). */
  signIn(who: Role | 'parent2' | 'staff2'): Promise<Client>;
}

let seq = 0;
const uniq = () => `${Date.now().toString(36)}${(seq++).toString(36)}`;

export function childForm(over: Record<string, string> = {}): Record<string, string> {
  const t0 = today(new Date());
  const nirec = String(1_000_000_000 + Math.floor(Math.random() * 8_999_999_999)).slice(0, 10);
  return { firstName: 'Éloïse', lastName: 'Gagnon-Côté', birthDate: addMonths(t0, -8), nirec, desiredEntryDate: addMonths(t0, 3), day_mon: 'on', day_wed: 'on', inSubsidisedCare: 'on', ...over };
}

async function childWithApplication(t: TestApp, tenant: Tenant, parent: Client, facility: string, firstName: string): Promise<{ child: string; app: string }> {
  await parent.get('/children/new');
  const created = await parent.post('/children/new', childForm({ firstName }));
  if (created.status !== 303) throw new Error(`child not created: ${created.status} ${created.body.match(/class="error[^>]*>[^<]*/g)}`);
  const child = /\/children\/([0-9a-f-]{36})/.exec(String(created.headers.location))![1]!;
  await parent.get(`/directory/${facility}`);
  const applied = await parent.post('/applications', { childId: child, facilityId: facility });
  if (applied.status !== 303) throw new Error(`application not made: ${applied.status}`);
  const app = (await inTenant(t.database.db, tenant.id, (trx) => trx.selectFrom('applications').select('id').where('child_id', '=', child).executeTakeFirstOrThrow())).id;
  return { child, app };
}

export async function buildSide(t: TestApp): Promise<Side> {
  const tenant = await tenantFor(t);
  const host = tenant.hosts[0]!;
  const tag = uniq();
  const facility1 = await createFacility(t, tenant, { name: 'CPE Les Lucioles' });
  const facility2 = await createFacility(t, tenant, { name: 'Garderie Les Hiboux', kind: 'garderie' });
  const emails = {
    parent: `parent1.${tag}@exemple.test`,
    parent2: `parent2.${tag}@exemple.test`,
    staff: `direction.${tag}@exemple.test`,
    staff2: `educ2.${tag}@exemple.test`,
    operator: `operateur.${tag}@exemple.test`,
    officer: `securite.${tag}@exemple.test`,
    admin: `admin.${tag}@exemple.test`,
  };
  const admin = await createAdmin(t, tenant, emails.admin);
  const staff = await createStaff(t, tenant, emails.staff, facility1);
  const staff2 = await createStaff(t, tenant, emails.staff2, facility2, admin);
  const operator = await createStaff(t, tenant, emails.operator, facility1);
  const officer = await createStaff(t, tenant, emails.officer, facility1);
  await grantRole(t, tenant, operator, 'program_operator', staff2, admin);
  await grantRole(t, tenant, officer, 'security_officer', staff2, admin);
  // The staff member of facility1 is also its director (declares priorities, opens places, keys).
  const now = t.deps.clock();
  await inTenant(t.database.db, tenant.id, (trx) =>
    trx
      .insertInto('memberships')
      .values({ tenant_id: tenant.id, account_id: staff, role: 'facility_director', facility_id: facility1, source: 'grant', granted_by: staff2, approved_by: admin, created_at: new Date(now.getTime() - 2 * 3600_000), expires_at: new Date(now.getTime() + 8 * 3600_000) })
      .execute(),
  );
  const parent = await createParent(t, tenant, emails.parent);
  const parent2 = await createParent(t, tenant, emails.parent2);
  const accounts = { parent, parent2, staff, staff2, operator, officer, admin };
  const signIn = async (who: keyof typeof emails): Promise<Client> => {
    // A source address of its own: the many sign-ins of an attack test are not one address's failures (throttling).
    const c = new Client(t.app, host, `10.${(seq >> 16) & 255}.${(seq >> 8) & 255}.${seq++ & 255}`);
    const r = await c.signIn(emails[who], PASSWORD);
    if (r.status !== 303) throw new Error(`${who} could not sign in: ${r.status}`);
    await c.get('/account');
    return c;
  };
  const one = await childWithApplication(t, tenant, await signIn('parent'), facility1, 'Éloïse');
  const two = await childWithApplication(t, tenant, await signIn('parent2'), facility2, 'Mathis');
  return { tenant, host, facility1, facility2, child1: one.child, app1: one.app, child2: two.child, app2: two.app, emails, accounts, signIn };
}

/**
 * One real id from every table of the tenant that has a uuid `id` (children,
 * applications, facilities, accounts, memberships, sessions, factors, audit
 * seals…), read from the catalogue so a new table's ids are tried the day it
 * holds a row.
 */
export async function idsOfEveryKind(t: TestApp, tenant: Tenant): Promise<Map<string, string>> {
  const tables = await sql<{ table_name: string }>`
    select c.table_name from information_schema.columns c
    join information_schema.columns k on k.table_name = c.table_name and k.table_schema = c.table_schema and k.column_name = 'tenant_id'
    where c.table_schema = 'public' and c.column_name = 'id' and c.data_type = 'uuid' order by c.table_name`.execute(t.database.db);
  const out = new Map<string, string>();
  await inTenant(t.database.db, tenant.id, async (trx) => {
    for (const { table_name } of tables.rows) {
      const r = await sql<{ id: string }>`select id::text as id from ${sql.table(table_name)} where tenant_id = ${tenant.id} order by id limit 1`.execute(trx);
      if (r.rows[0]) out.set(table_name, r.rows[0].id);
    }
  });
  return out;
}
