/**
 * The operator's pages in a real browser (Debian's Chromium, the real CSP,
 * axe-core in French and in English): the statistics with their charts and
 * tables; then assisted mode — ask the parent's consent, a wrong code, the
 * right one, the banner on the parent's pages, the end — and the parent's
 * access log that names the agent.
 */
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { inTenant } from '../../src/db/tenant.ts';
import * as records from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createFacility, createParent, ctxFor, type TestApp } from '../helpers/app.ts';
import { checkA11y, follow } from '../helpers/browser.ts';
import { bothLanguages, startBrowserApp, type BrowserApp } from '../helpers/browser-app.ts';
import type { TestDatabase } from '../helpers/db.ts';
import { enrolTotp } from '../helpers/factors.ts';
import { createAccount, grantRole } from '../records/people.ts';

let b: BrowserApp;
let database: TestDatabase;
let t: TestApp;
let tenant: Tenant;
let base: string;

beforeAll(async () => {
  b = await startBrowserApp();
  ({ database, t, tenant, base } = b);
}, 120_000);

afterAll(async () => {
  await b?.close();
});

const signIn = (page: Page, email: string, totp = false) => b.signIn(page, email, totp);



describe('operator pages', () => {
  it('statistics, then helping a parent by phone; axe-clean in French and English', async () => {
    const n = Date.now().toString(36);
    const facility = await createFacility(t, tenant, { name: 'CPE Les Petits Explorateurs' });
    const parentEmail = `famille.${n}@exemple.test`;
    const parentId = await createParent(t, tenant, parentEmail);
    const parent: Actor = { accountId: parentId, tenantId: tenant.id, sessionId: null, email: parentEmail, emailVerified: true, locale: 'fr', memberships: [] };
    const t0 = today(new Date());
    const { id: childId } = await records.createChildFile(t.deps, ctxFor(t, tenant, parent), { firstName: 'Éloïse', lastName: 'Gagnon-Côté', birthDate: addMonths(t0, -8), nirec: null, desiredEntryDate: addMonths(t0, 3), daysOfCare: 21, inSubsidisedCare: false });
    await records.addApplication(t.deps, ctxFor(t, tenant, parent), childId, { facilityId: facility, siblingAttending: false, parentIsStaff: false });
    const adminId = await createAdmin(t, tenant, `chef.${n}@exemple.test`);
    const requester = await createAccount(t, tenant, `demande.${n}@exemple.test`);
    const opEmail = `operation.${n}@exemple.test`;
    const operator = await createAccount(t, tenant, opEmail);
    await grantRole(t, tenant, operator, 'program_operator', requester, adminId);
    await enrolTotp(t.deps, tenant, operator, opEmail);

    const page = await b.page();
    await signIn(page, opEmail, true);

    /* ---- statistics */
    expect(await follow(page, () => page.getByRole('navigation').getByRole('link', { name: 'Statistiques' }).click())).toBe(200);
    expect(await page.locator('h1').innerText()).toBe('Statistiques du programme');
    expect(await page.locator('svg[role="img"]').count()).toBeGreaterThan(0);
    expect(await page.locator('main').innerText()).toContain('<5');
    await bothLanguages(page, 'statistics', async (p) => {
      expect(await p.locator('h1').innerText()).toBe('Programme statistics');
    });
    await page.getByLabel('Du mois').fill('2026-13');
    expect(await follow(page, () => page.getByRole('button', { name: 'Afficher' }).click())).toBe(400);
    expect(await page.title()).toMatch(/^Erreur/);
    await checkA11y(page, 'statistics with a bad filter (fr)');

    /* ---- assisted mode */
    expect(await follow(page, () => page.getByRole('navigation').getByRole('link', { name: 'Aider un parent' }).click())).toBe(200);
    await bothLanguages(page, 'assist start', async (p) => {
      expect(await p.locator('h1').innerText()).toBe('Help a parent');
    });
    await page.getByLabel('Adresse courriel du parent').fill(parentEmail);
    await page.getByLabel('Par téléphone').check();
    await page.getByLabel('Note (facultative)').fill('Appel pour changer la date d’entrée');
    expect(await follow(page, () => page.getByRole('button', { name: 'Envoyer le code au parent' }).click())).toBe(200);
    expect(await page.locator('h1').innerText()).toBe('Code du parent');
    await bothLanguages(page, 'assist code', async (p) => {
      expect(await p.locator('h1').innerText()).toBe('The parent’s code');
    });
    const mail = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('mail_outbox').select('body_text').where('to_address', '=', parentEmail).where('template', '=', 'assisted_code').executeTakeFirstOrThrow());
    const code = /: (\d{6})\b/.exec(mail.body_text)![1]!;
    await page.getByLabel('Code à 6 chiffres').fill(code === '000000' ? '111111' : '000000');
    expect(await follow(page, () => page.getByRole('button', { name: 'Commencer la session d’aide' }).click())).toBe(400);
    expect(await page.title()).toMatch(/^Erreur/);
    await checkA11y(page, 'assist wrong code (fr)');
    await page.getByLabel('Code à 6 chiffres').fill(code);
    expect(await follow(page, () => page.getByRole('button', { name: 'Commencer la session d’aide' }).click())).toBe(200);
    expect(new URL(page.url()).pathname).toBe('/account');
    expect(await page.locator('.assist-banner').innerText()).toContain(`Vous agissez pour ${parentEmail}`);
    expect(await page.locator('main').innerText()).toContain('Éloïse');
    await bothLanguages(page, 'parent file while assisting', async (p) => {
      expect(await p.locator('.assist-banner').innerText()).toContain(`You are acting for ${parentEmail}`);
    });
    expect(await follow(page, () => page.getByRole('link', { name: /Éloïse/ }).click())).toBe(200);
    await checkA11y(page, 'child file while assisting (fr)');
    expect(await follow(page, () => page.getByRole('button', { name: 'Terminer la session d’aide' }).click())).toBe(200);
    expect(await page.getByRole('status').innerText()).toContain('La session d’aide est terminée.');
    expect(await page.locator('.assist-banner').count()).toBe(0);

    /* ---- the parent's access log */
    const pp = await b.page();
    await signIn(pp, parentEmail, false);
    await follow(pp, () => pp.goto(`${base}/account/privacy/access`));
    expect(await pp.locator('main').innerText()).toContain(`Fait pour vous par ${opEmail}`);
    await bothLanguages(pp, 'access log with assisted actions', async (p) => {
      expect(await p.locator('main').innerText()).toContain(`Done for you by ${opEmail}`);
    });
  }, 180_000);
});
