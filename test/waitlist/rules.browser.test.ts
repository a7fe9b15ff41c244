/**
 * The waitlist rules' pages in a real browser (Debian's Chromium, axe-core
 * with 0 violations, the real CSP, no script error), in French and in
 * English: the director's page of declared priorities, with its error page
 * (too many kinds); the facility page where a parent states a declared
 * priority; the child's page with its rank and why, and the confirmation
 * section of an inactive file, confirmed with the button.
 */
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { inTenant } from '../../src/db/tenant.ts';
import * as records from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createFacility, createParent, ctxFor, type TestApp } from '../helpers/app.ts';
import { follow, shot } from '../helpers/browser.ts';
import { mainText, startBrowserApp, type BrowserApp } from '../helpers/browser-app.ts';
import type { TestDatabase } from '../helpers/db.ts';
import { enrolTotp } from '../helpers/factors.ts';

let b: BrowserApp;
let database: TestDatabase;
let t: TestApp;
let tenant: Tenant;
let base: string;

beforeAll(async () => {
  b = await startBrowserApp({ name_fr: 'Programme de la Rive-Sud', name_en: 'Rive-Sud programme' });
  ({ database, t, tenant, base } = b);
}, 120_000);

afterAll(async () => {
  await b?.close();
});

const signIn = (page: Page, email: string, totp = false) => b.signIn(page, email, totp);


/** Checks the page, then the same page in English, then back to French. */
async function bothLanguages(page: Page, label: string, fr: string, en: string): Promise<void> {
  await b.check(page, `${label} (fr)`);
  expect(await mainText(page)).toContain(fr);
  expect(await follow(page, () => page.getByRole('link', { name: /English/ }).click())).toBeLessThan(500);
  await b.check(page, `${label} (en)`);
  expect(await mainText(page)).toContain(en);
  await follow(page, () => page.getByRole('link', { name: /Français/ }).click());
}

describe('waitlist rules pages', () => {
  it('a director declares priorities, a parent states one, sees the rank and why, and confirms an inactive file', async () => {
    const n = Date.now().toString(36);
    const facility = await createFacility(t, tenant, { name: 'CPE Les Hirondelles' });
    const directorEmail = `direction.${n}@exemple.test`;
    const directorId = await createParent(t, tenant, directorEmail);
    const granter = await createParent(t, tenant, `octroi.${n}@exemple.test`);
    const approver = await createAdmin(t, tenant, `admin.${n}@exemple.test`, { secondFactor: false });
    await inTenant(database.db, tenant.id, (trx) =>
      trx.insertInto('memberships').values({ tenant_id: tenant.id, account_id: directorId, role: 'facility_director', facility_id: facility, source: 'grant', granted_by: granter, approved_by: approver, created_at: new Date(Date.now() - 2 * 3600_000), expires_at: new Date(Date.now() + 8 * 3600_000) }).execute(),
    );
    await enrolTotp(t.deps, tenant, directorId, directorEmail);

    // The director's page: declare, then too many kinds (the programme allows six of six; a seventh name is refused).
    const d = await b.page();
    await signIn(d, directorEmail, true);
    await follow(d, () => d.goto(`${base}/staff`));
    expect(await follow(d, () => d.getByRole('link', { name: /Priorités du service/ }).click())).toBe(200);
    await bothLanguages(d, 'priorities page', 'au plus 6 types de besoins', 'at most 6 kinds of need');
    await d.getByRole('checkbox', { name: 'Enfant ayant des besoins particuliers' }).check();
    await d.getByRole('checkbox', { name: 'Parent employé d’un employeur' }).check();
    expect(await follow(d, () => d.getByRole('button', { name: 'Enregistrer les priorités' }).click())).toBe(400);
    await b.check(d, 'priorities page with an error');
    expect(await d.title()).toMatch(/^Erreur/);
    expect(await mainText(d)).toContain('Précisez l’établissement, l’employeur ou la municipalité');
    await d.getByLabel('Lequel ou laquelle — Parent employé d’un employeur').fill('Hôpital Charles-Le Moyne');
    expect(await follow(d, () => d.getByRole('button', { name: 'Enregistrer les priorités' }).click())).toBe(200);
    await b.check(d, 'priorities saved');
    expect(await mainText(d)).toContain('Les priorités du service sont enregistrées.');
    await shot(d, 'rules-01-priorities');

    // A parent with a file: the facility page offers the declared priorities; stating one lifts the child.
    const parentEmail = `parent.${n}@exemple.test`;
    const accountId = await createParent(t, tenant, parentEmail);
    const actor: Actor = { accountId, tenantId: tenant.id, sessionId: null, email: parentEmail, emailVerified: true, locale: 'fr', memberships: [] };
    const t0 = today(new Date());
    const { id: childId } = await records.createChildFile(t.deps, ctxFor(t, tenant, actor), { firstName: 'Noémie', lastName: 'Bouchard', birthDate: addMonths(t0, -8), nirec: null, desiredEntryDate: addMonths(t0, 2), daysOfCare: 31, inSubsidisedCare: true });
    const p = await b.page();
    await signIn(p, parentEmail);
    await b.visit(p, `/directory/${facility}`, 'facility page with priorities');
    await p.getByRole('checkbox', { name: 'Enfant ayant des besoins particuliers' }).check();
    expect(await follow(p, () => p.getByRole('button', { name: /Inscrire/ }).click())).toBe(200);
    await bothLanguages(p, 'child page with rank and why', '1er sur 1', '1 of 1');
    expect(await mainText(p)).toContain('priorités du service');
    await shot(p, 'rules-02-rank');

    // The file falls inactive (no confirmation): the page says so, and the button brings it back.
    await inTenant(database.db, tenant.id, (trx) => trx.updateTable('children').set({ inactive_since: new Date(), confirmed_at: new Date(Date.now() - 250 * 86_400_000) }).where('id', '=', childId).execute());
    await b.visit(p, `/children/${childId}`, 'inactive file');
    await bothLanguages(p, 'inactive file', 'Non classé (dossier inactif)', 'Not ranked (inactive file)');
    const button = p.getByRole('button', { name: 'Confirmer que je souhaite toujours une place' });
    await button.focus();
    expect(await follow(p, () => p.keyboard.press('Enter'))).toBe(200);
    await b.check(p, 'file confirmed');
    expect(await mainText(p)).toContain('Le dossier est confirmé et revient sur les listes.');
    expect(await mainText(p)).toContain('1er sur 1');
    await shot(p, 'rules-03-confirmed');
  });
});
