/**
 * Deleting a child file in a real browser (Debian's Chromium, axe-core on
 * every page, the page's real CSP, no script error): the file's page offers
 * "Supprimer le dossier", the confirmation page names the consequences and
 * is reachable and usable by keyboard, in French and in English; when the
 * sign-in is older than five minutes it first asks to confirm who you are
 * (step-up) and comes back; the deletion lands on the account page with its
 * notice, the file listed as deleted with the last day it can come back, and
 * a restore can be asked for from there. Works without JavaScript.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { inTenant } from '../../src/db/tenant.ts';
import * as records from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { formatDate } from '../../src/web/i18n/index.ts';
import { createFacility, createParent, ctxFor, PASSWORD, type TestApp } from '../helpers/app.ts';
import { assertNoPageProblems, checkA11y, follow, shot } from '../helpers/browser.ts';
import { startBrowserApp, type BrowserApp } from '../helpers/browser-app.ts';
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

async function parentWithChild(email: string): Promise<string> {
  const accountId = await createParent(t, tenant, email);
  const actor: Actor = { accountId, tenantId: tenant.id, sessionId: null, email, emailVerified: true, locale: 'fr', memberships: [] };
  const facility = await createFacility(t, tenant, { name: 'CPE Les Petits Explorateurs' });
  const t0 = today(new Date());
  const { id } = await records.createChildFile(t.deps, ctxFor(t, tenant, actor), { firstName: 'Éloïse', lastName: 'Gagnon-Côté', birthDate: addMonths(t0, -8), nirec: 'BRW1234567', desiredEntryDate: addMonths(t0, 3), daysOfCare: 21, inSubsidisedCare: false });
  await records.addApplication(t.deps, ctxFor(t, tenant, actor), id, { facilityId: facility, siblingAttending: false, parentIsStaff: false });
  return id;
}

describe('deleting a child file', () => {
  for (const js of [true, false]) {
    it(`from the file to the confirmation page to the account page, axe-clean, keyboard only (JavaScript ${js ? 'on' : 'off'})`, async () => {
      const email = `suppression.${js ? 'js' : 'nojs'}.${Date.now()}@exemple.test`;
      const childId = await parentWithChild(email);
      const page = await b.page({ javaScriptEnabled: js });
      await page.goto(`${base}/signin`);
      await page.getByLabel('Adresse courriel').fill(email);
      await page.getByLabel('Mot de passe').fill(PASSWORD);
      await follow(page, () => page.getByRole('button', { name: 'Se connecter' }).click());

      expect(await follow(page, () => page.goto(`${base}/children/${childId}`))).toBe(200);
      await checkA11y(page, 'child page with the delete section');
      expect(await page.getByRole('heading', { name: 'Supprimer le dossier', level: 2 }).count()).toBe(1);
      // By keyboard: focus the link and press Enter.
      const link = page.getByRole('link', { name: /Supprimer le dossier — Éloïse Gagnon-Côté/ });
      await link.focus();
      expect(await follow(page, () => page.keyboard.press('Enter'))).toBe(200);
      expect(page.url()).toBe(`${base}/children/${childId}/delete`);
      await checkA11y(page, 'delete confirmation page');
      assertNoPageProblems(page, 'delete confirmation page');
      expect(await page.title()).toBe('Supprimer le dossier de Éloïse Gagnon-Côté\u202f? — Guichet');
      expect(await page.locator('h1').innerText()).toBe('Supprimer le dossier de Éloïse Gagnon-Côté\u202f?');
      const consequences = await page.locator('main ul li').allInnerTexts();
      expect(consequences).toHaveLength(4);
      expect(consequences[1]).toContain('le service de garde ne voit plus l’enfant dans sa liste');
      expect(consequences[3]).toContain('pas même dans les copies de sauvegarde');
      expect(await page.locator('.warning-text').innerText()).toContain('la suppression ne peut plus être annulée');
      await shot(page, '09-delete-confirm');

      // The same page in English.
      expect(await follow(page, () => page.getByRole('link', { name: /English/ }).click())).toBe(200);
      await checkA11y(page, 'delete confirmation page (en)');
      expect(await page.locator('h1').innerText()).toBe('Delete Éloïse Gagnon-Côté’s file?');
      expect(await page.getByRole('button', { name: 'Yes, delete the file' }).count()).toBe(1);
      expect(await follow(page, () => page.getByRole('link', { name: /Français/ }).click())).toBe(200);

      // Cancel first: back to the file, nothing deleted.
      expect(await follow(page, () => page.getByRole('link', { name: 'Non, revenir au dossier' }).last().click())).toBe(200);
      expect(page.url()).toBe(`${base}/children/${childId}`);
      expect((await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('children').select('deleted_at').where('id', '=', childId).executeTakeFirstOrThrow())).deleted_at).toBeNull();

      // Six minutes later the sign-in is too old to delete: confirm who you are first, then back to the confirmation.
      t.setNow(new Date(t.deps.clock().getTime() + 6 * 60_000));
      expect(await follow(page, () => page.goto(`${base}/children/${childId}/delete`))).toBe(200);
      expect(new URL(page.url()).pathname).toBe('/reauth');
      await checkA11y(page, 're-authentication before deleting');
      expect(await page.locator('h1').innerText()).toBe('Confirmer votre identité');
      await page.getByLabel('Mot de passe').fill(PASSWORD);
      expect(await follow(page, () => page.getByRole('main').getByRole('button', { name: 'Confirmer' }).click())).toBe(200);
      expect(page.url()).toBe(`${base}/children/${childId}/delete`);

      // Then delete, pressing the button by keyboard.
      await page.getByRole('button', { name: 'Oui, supprimer le dossier' }).focus();
      expect(await follow(page, () => page.keyboard.press('Enter'))).toBe(200);
      expect(new URL(page.url()).pathname).toBe('/account');
      await checkA11y(page, 'account page after deletion');
      expect(await page.getByRole('status').innerText()).toContain('Le dossier a été supprimé. Le programme peut le rétablir à votre demande pendant 30 jours.');
      // Off the list of children, in the deleted files with the last day it can come back.
      const deleted = page.getByRole('region', { name: 'Dossiers supprimés' });
      expect(await deleted.innerText()).toContain('Éloïse Gagnon-Côté');
      expect(await deleted.innerText()).toContain(formatDate('fr', new Date(t.deps.clock().getTime() + 30 * 86_400_000)));
      expect(await page.locator(`main a[href="/children/${childId}"]`).count()).toBe(0);
      expect(await follow(page, () => page.goto(`${base}/children/${childId}`))).toBe(404);
      await checkA11y(page, 'the deleted file');
      assertNoPageProblems(page, 'the deleted file');

      // Asking for it back, from the account page.
      await follow(page, () => page.goto(`${base}/account`));
      expect(await follow(page, () => page.getByRole('button', { name: 'Demander le rétablissement du dossier de Éloïse Gagnon-Côté' }).click())).toBe(200);
      expect(await page.getByRole('status').innerText()).toContain('Votre demande de rétablissement est envoyée.');
      expect(await deleted.innerText()).toContain('Demande envoyée');
      await checkA11y(page, 'account page after asking for a restore');
      expect(await follow(page, () => page.getByRole('link', { name: /English/ }).click())).toBe(200);
      expect(await page.getByRole('region', { name: 'Deleted files' }).innerText()).toContain('Request sent');
      await checkA11y(page, 'account page after asking for a restore (en)');
      expect(await follow(page, () => page.getByRole('link', { name: /Français/ }).click())).toBe(200);
    }, 60_000);
  }
});
