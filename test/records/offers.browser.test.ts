/**
 * The referral in a real browser (Debian's Chromium, axe-core on every page,
 * the page's real CSP, no script error), in French and in English: the
 * facility's places page, declaring a vacancy, the referrals page before and
 * after acceptance, the director's start form and API keys; the parent's account page
 * and child page with the offer, and the offer page where they accept.
 */
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { inTenant } from '../../src/db/tenant.ts';
import * as records from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createFacility, createParent, createStaff, ctxFor, type TestApp } from '../helpers/app.ts';
import { assertNoPageProblems, checkA11y, follow, shot } from '../helpers/browser.ts';
import { bothLanguages, startBrowserApp, type BrowserApp } from '../helpers/browser-app.ts';
import type { TestDatabase } from '../helpers/db.ts';

let b: BrowserApp;
let database: TestDatabase;
let t: TestApp;
let tenant: Tenant;
let base: string;

beforeAll(async () => {
  b = await startBrowserApp({ name_fr: 'Bureau coordonnateur de la Rive-Sud', name_en: 'Rive-Sud coordinating office' });
  ({ database, t, tenant, base } = b);
}, 120_000);

afterAll(async () => {
  await b?.close();
});

const signIn = (page: Page, email: string, totp = false) => b.signIn(page, email, totp);



describe('referral pages', () => {
  it('places, declaration, referrals, the offer and its acceptance, the start of care: axe-clean in both languages', async () => {
    const facility = await createFacility(t, tenant, { name: 'CPE Les Petits Explorateurs', places_total: 6, places_infant: 2 });
    const parentEmail = `parent.offre.${Date.now()}@exemple.test`;
    const accountId = await createParent(t, tenant, parentEmail);
    const actor: Actor = { accountId, tenantId: tenant.id, sessionId: null, email: parentEmail, emailVerified: true, locale: 'fr', memberships: [] };
    const t0 = today(new Date());
    const { id: childId } = await records.createChildFile(t.deps, ctxFor(t, tenant, actor), { firstName: 'Éloïse', lastName: 'Gagnon-Côté', birthDate: addMonths(t0, -26), nirec: null, desiredEntryDate: addMonths(t0, 1), daysOfCare: 31, inSubsidisedCare: false });
    await records.addApplication(t.deps, ctxFor(t, tenant, actor), childId, { facilityId: facility, siblingAttending: false, parentIsStaff: false });
    const adminId = await createAdmin(t, tenant, `admin.offre.${Date.now()}@exemple.test`);
    const staffEmail = `educ.offre.${Date.now()}@exemple.test`;
    const staffId = await createStaff(t, tenant, staffEmail, facility, adminId);
    const directorEmail = `direction.offre.${Date.now()}@exemple.test`;
    const directorId = await createStaff(t, tenant, directorEmail, facility);
    const now = t.deps.clock();
    await inTenant(database.db, tenant.id, (trx) =>
      trx
        .insertInto('memberships')
        .values({ tenant_id: tenant.id, account_id: directorId, role: 'facility_director', facility_id: facility, source: 'grant', granted_by: staffId, approved_by: adminId, created_at: new Date(now.getTime() - 2 * 3600_000), expires_at: new Date(now.getTime() + 4 * 3600_000) })
        .execute(),
    );

    // Staff: the places page, a bad value, then a vacancy declared.
    const staff = await b.page();
    await signIn(staff, staffEmail, true);
    expect(await follow(staff, () => staff.goto(`${base}/staff`))).toBe(200);
    expect(await follow(staff, () => staff.getByRole('link', { name: /Places et places vacantes/ }).click())).toBe(200);
    expect(new URL(staff.url()).pathname).toBe(`/staff/facilities/${facility}/places`);
    await bothLanguages(staff, 'places page', async (p) => {
      expect(await p.locator('h1').innerText()).toBe('Places — CPE Les Petits Explorateurs');
      expect(await p.getByRole('button', { name: 'Declare and refer' }).count()).toBe(1);
    });
    await staff.getByLabel('Places vacantes — 18 mois à 5 ans').fill('9');
    expect(await follow(staff, () => staff.getByRole('button', { name: 'Déclarer et référer' }).click())).toBe(400);
    await checkA11y(staff, 'places page with an error');
    expect(await staff.title()).toMatch(/^Erreur/);
    expect(await staff.locator('.error-summary').innerText()).toContain('ne peuvent pas dépasser');
    await staff.getByLabel('Places vacantes — 18 mois à 5 ans').fill('1');
    expect(await follow(staff, () => staff.getByRole('button', { name: 'Déclarer et référer' }).click())).toBe(200);
    expect(await staff.getByRole('status').innerText()).toContain('Une offre faite');
    await checkA11y(staff, 'places page after declaring');
    await shot(staff, '20-places');

    expect(await follow(staff, () => staff.getByRole('main').getByRole('link', { name: 'Référencements' }).click())).toBe(200);
    await bothLanguages(staff, 'referrals page before acceptance', async (p) => {
      expect(await p.locator('main').innerText()).toContain('Shown after acceptance');
    });
    expect(await staff.locator('main').innerText()).not.toContain('Gagnon-Côté');

    // The parent: the account page, the child's page, the offer page; accepts.
    const parent = await b.page();
    await signIn(parent, parentEmail, false);
    expect(await follow(parent, () => parent.goto(`${base}/account`))).toBe(200);
    await bothLanguages(parent, 'account page with an offer', async (p) => {
      expect(await p.getByRole('heading', { name: 'Place offers' }).count()).toBe(1);
    });
    expect(await follow(parent, () => parent.goto(`${base}/children/${childId}`))).toBe(200);
    await bothLanguages(parent, 'child page with an offer', async (p) => {
      expect(await p.getByRole('heading', { name: 'Place offers' }).count()).toBe(1);
    });
    expect(await follow(parent, () => parent.getByRole('link', { name: 'Voir l’offre de CPE Les Petits Explorateurs' }).click())).toBe(200);
    await bothLanguages(parent, 'offer page', async (p) => {
      expect(await p.locator('h1').innerText()).toBe('A place is offered to you — CPE Les Petits Explorateurs');
      expect(await p.getByRole('button', { name: 'Accept the place' }).count()).toBe(1);
    });
    await shot(parent, '21-offer');
    await parent.getByRole('button', { name: 'Accepter la place' }).focus();
    expect(await follow(parent, () => parent.keyboard.press('Enter'))).toBe(200);
    expect(await parent.getByRole('status').innerText()).toContain('Vous avez accepté la place');
    await bothLanguages(parent, 'offer page after acceptance', async (p) => {
      expect(await p.locator('main').innerText()).toContain('Accepted');
    });

    // The facility now sees who the child is; the director confirms the start.
    const director = await b.page();
    await signIn(director, directorEmail, true);
    expect(await follow(director, () => director.goto(`${base}/staff/facilities/${facility}/referrals`))).toBe(200);
    expect(await director.locator('main').innerText()).toContain('Éloïse Gagnon-Côté');
    await bothLanguages(director, 'referrals page with the start form', async (p) => {
      expect(await p.getByRole('button', { name: /Confirm the start of care/ }).count()).toBe(1);
    });
    await shot(director, '22-referrals');
    await director.getByLabel('Date de début').fill(addMonths(t0, 1));
    expect(await follow(director, () => director.getByRole('button', { name: /Confirmer le début/ }).click())).toBe(200);
    expect(await director.getByRole('status').innerText()).toContain('Le début de la fréquentation est confirmé');
    await checkA11y(director, 'referrals page after the start');
    assertNoPageProblems(director, 'referrals page after the start');

    // The director's API keys: the page, a key created and shown once, then revoked.
    expect(await follow(director, () => director.getByRole('link', { name: 'Clés d’API' }).click())).toBe(200);
    await bothLanguages(director, 'API keys page', async (p) => {
      expect(await p.locator('h1').innerText()).toBe('API keys — CPE Les Petits Explorateurs');
    });
    await director.getByLabel('Nom de la clé').fill('Logiciel Amisgest');
    expect(await follow(director, () => director.getByRole('button', { name: 'Créer la clé' }).click())).toBe(200);
    expect(await director.getByRole('status').innerText()).toMatch(/gfk_[0-9a-f]{32}_/);
    await checkA11y(director, 'API keys page with the new key');
    expect(await follow(director, () => director.getByRole('button', { name: 'Révoquer la clé Logiciel Amisgest' }).click())).toBe(200);
    expect(await director.getByRole('status').innerText()).toContain('La clé est révoquée');
    await checkA11y(director, 'API keys page after revoking');
    assertNoPageProblems(director, 'API keys page after revoking');
  });
});
