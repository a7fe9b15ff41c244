/**
 * A family's allocation explanation in a real browser (Chromium, axe-core,
 * the page's CSP), in French and in English: after a round where another
 * child with a sibling admitted took the only infant place at the first
 * choice, the page says the child got its second choice and why not its
 * first (a category with priority), and shows nothing of who the other
 * child was — not even its category, one child admitted being too few to
 * show it without pointing at that child. The page is reachable from the
 * child's file; another family's child answers "not found".
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { runAllocation } from '../../src/records/allocation.ts';
import * as records from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createFacility, createParent, ctxFor, PASSWORD, type TestApp } from '../helpers/app.ts';
import { follow } from '../helpers/browser.ts';
import { mainText, startBrowserApp, type BrowserApp } from '../helpers/browser-app.ts';

let b: BrowserApp;
let t: TestApp;
let tenant: Tenant;
let base: string;

beforeAll(async () => {
  b = await startBrowserApp();
  ({ t, tenant, base } = b);
}, 120_000);

afterAll(async () => {
  await b?.close();
});

async function childOf(email: string, facilities: { id: string; sibling: boolean }[], name: string): Promise<string> {
  const accountId = await createParent(t, tenant, email);
  const actor: Actor = { accountId, tenantId: tenant.id, sessionId: null, email, emailVerified: true, locale: 'fr', memberships: [] };
  const t0 = today(new Date());
  const { id } = await records.createChildFile(t.deps, ctxFor(t, tenant, actor), { firstName: name, lastName: 'Gagnon-Côté', birthDate: addMonths(t0, -6), nirec: null, desiredEntryDate: addMonths(t0, 2), daysOfCare: 31, inSubsidisedCare: false });
  for (const f of facilities) await records.addApplication(t.deps, ctxFor(t, tenant, actor), id, { facilityId: f.id, siblingAttending: f.sibling, parentIsStaff: false });
  return id;
}

describe('allocation explanation page', () => {
  it('tells the family which choice it got and why not the better one, in French and English, axe-clean', async () => {
    const first = await createFacility(t, tenant, { name: 'CPE Les Petits Explorateurs', places_total: 60, places_infant: 10 });
    const second = await createFacility(t, tenant, { name: 'Garderie Soleil levant', places_total: 60, places_infant: 10 });
    await inTenant(t.database.db, tenant.id, (trx) =>
      trx
        .insertInto('facility_places')
        .values([first, second].flatMap((f) => [
          { tenant_id: tenant.id, facility_id: f, age_group: 'infant' as const, places: 10, vacancies: 1, updated_at: new Date() },
          { tenant_id: tenant.id, facility_id: f, age_group: 'toddler' as const, places: 50, vacancies: 0, updated_at: new Date() },
        ]))
        .onConflict((oc) => oc.columns(['facility_id', 'age_group']).doUpdateSet({ vacancies: 1 }))
        .execute(),
    );
    const email = `repartition.${Date.now()}@exemple.test`;
    const mine = await childOf(email, [{ id: first, sibling: false }, { id: second, sibling: false }], 'Éloïse');
    await childOf(`autre.${Date.now()}@exemple.test`, [{ id: first, sibling: true }], 'Zoé');

    // Before any round.
    const page = await b.page();
    await page.goto(`${base}/signin`);
    await page.getByLabel('Adresse courriel').fill(email);
    await page.getByLabel('Mot de passe').fill(PASSWORD);
    await follow(page, () => page.getByRole('button', { name: 'Se connecter' }).click());
    await b.visit(page, `/children/${mine}/allocation`, 'allocation page, no round yet');
    expect(await mainText(page)).toContain('Aucune répartition coordonnée n’a encore inclus ce dossier');

    const summary = await runAllocation(t.database.db, t.deps.keys, { id: tenant.id, rules: { ...tenant.rules, coordinatedAllocation: true } }, {
      dryRun: false,
      today: today(new Date()),
      deadlineDays: 7,
      now: new Date(),
      origin: { actorAccountId: null, actorRoles: ['system:test'], ip: null, userAgent: null, requestId: null },
    });
    expect(summary.placed).toBe(2);

    // From the child's file, by its link.
    await b.visit(page, `/children/${mine}`, 'child file with the allocation link');
    expect(await b.go(page, 'allocation page (fr)', () => page.getByRole('link', { name: 'Résultat de la répartition coordonnée' }).click())).toBe(200);
    expect(await page.locator('h1').innerText()).toBe('Répartition coordonnée pour Éloïse');
    const text = await mainText(page);
    expect(text).toContain('Une place vous est offerte à votre 2e choix.');
    const rows = await page.locator('tbody tr').allInnerTexts();
    expect(rows).toHaveLength(2);
    expect(rows[0]).toContain('CPE Les Petits Explorateurs');
    expect(rows[0]).toContain('Pas de place');
    expect(rows[0]).toContain('catégorie prioritaire devant la vôtre («\u202f4 — pas déjà en CPE ou garderie subventionnée\u202f»).');
    expect(rows[0]).toContain('Le détail de la dernière candidature admise n’est pas affiché\u202f: ce service a admis moins de 5 enfants dans ce groupe d’âge');
    expect(rows[0]).not.toContain('fratrie admise');
    expect(rows[1]).toContain('Place offerte');
    // Nothing of the other child.
    expect(text).not.toContain('Zoé');

    expect(await b.go(page, 'allocation page (en)', () => page.getByRole('link', { name: /English/ }).click())).toBe(200);
    expect(await page.locator('h1').innerText()).toBe('Coordinated allocation for Éloïse');
    const en = await page.locator('tbody tr').allInnerTexts();
    expect(en[0]).toContain('in a category with priority over yours (“4 — not already in a CPE or subsidised garderie”). The details of the last application admitted are not shown');
    expect(en[0]).not.toContain('sibling admitted');
    expect(await mainText(page)).toContain('A place is offered to you at your choice number 2.');

    // Another family's child: not found, nothing shown.
    const other = await childOf(`troisieme.${Date.now()}@exemple.test`, [{ id: second, sibling: false }], 'Léa');
    const r = await page.goto(`${base}/children/${other}/allocation`);
    expect(r?.status()).toBe(404);
  }, 180_000);
});
