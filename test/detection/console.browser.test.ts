/**
 * The security console in a real browser (Debian's Chromium, axe-core on
 * every page, the page's real CSP, no script error): a security officer
 * signs in with her second factor, finds the alert detection raised, opens
 * it, takes it in charge and writes a note by keyboard, in French and in
 * English; then the lockdown, webhook and rules pages, with their error
 * summaries, and the daily review of protected files.
 */
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as records from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createParent, ctxFor, PASSWORD, type TestApp } from '../helpers/app.ts';
import { follow, shot } from '../helpers/browser.ts';
import { startBrowserApp, type BrowserApp } from '../helpers/browser-app.ts';
import type { TestDatabase } from '../helpers/db.ts';
import { enrolTotp, freshTotpCode, totpSecretFor } from '../helpers/factors.ts';
import { actorOf, createAccount, grantRole } from '../records/people.ts';

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

const check = (page: Page, label: string) => b.check(page, label);

describe('the security console', () => {
  it('alerts list, an alert, taking it in charge and a note, lockdown and webhook pages: axe-clean, keyboard, French and English', async () => {
    const adminId = await createAdmin(t, tenant, 'admin@exemple.test');
    const helperId = await createAccount(t, tenant, 'aide@exemple.test');
    const officerEmail = 'securite@exemple.test';
    const officerId = await createAccount(t, tenant, officerEmail);
    await grantRole(t, tenant, officerId, 'security_officer', helperId, adminId);
    await enrolTotp(t.deps, tenant, officerId, officerEmail);
    // An operator who opens one file too many: the alert the officer will find.
    const operatorId = await createAccount(t, tenant, 'operation@exemple.test');
    await grantRole(t, tenant, operatorId, 'program_operator', helperId, adminId);
    const operator = await actorOf(t, tenant, operatorId, 'operation@exemple.test');
    const parent = await actorOf(t, tenant, await createParent(t, tenant, 'parent@exemple.test'), 'parent@exemple.test');
    const t0 = today(new Date());
    const { id: child } = await records.createChildFile(t.deps, ctxFor(t, tenant, parent), { firstName: 'Zoé', lastName: 'Roy', birthDate: addMonths(t0, -9), nirec: null, desiredEntryDate: addMonths(t0, 2), daysOfCare: 0b11111, inSubsidisedCare: false });
    for (let i = 0; i < 20; i++) await records.readChildFileHistory(t.deps, ctxFor(t, tenant, operator), child);
    await expect(records.readChildFileHistory(t.deps, ctxFor(t, tenant, operator), child)).rejects.toMatchObject({ kind: 'forbidden' });

    const page = await b.page();
    await page.goto(`${base}/signin?return=%2Fsecurity%2Falerts`);
    await page.getByLabel('Adresse courriel').fill(officerEmail);
    await page.getByLabel('Mot de passe').fill(PASSWORD);
    await follow(page, () => page.getByRole('main').getByRole('button', { name: 'Se connecter' }).click());
    expect(new URL(page.url()).pathname).toBe('/signin/second-factor');
    // The helper hands out the previous time step's code first; the current step's leaves a loaded browser more time to send it.
    const secret = totpSecretFor(tenant.hosts[0]!, officerEmail)!;
    await freshTotpCode(secret, t.deps.clock);
    await page.getByLabel('Code à 6 chiffres').fill(await freshTotpCode(secret, t.deps.clock));
    await follow(page, () => page.getByRole('button', { name: 'Continuer' }).click());

    expect(await follow(page, () => page.goto(`${base}/security/alerts`))).toBe(200);
    await check(page, 'alerts list');
    expect(await page.locator('h1').innerText()).toBe('Alertes de sécurité');
    expect(await page.locator('tbody tr').count()).toBe(1);
    expect(await page.locator('tbody').innerText()).toContain('operation@exemple.test');
    await shot(page, '20-security-alerts');

    // Filter by keyboard: choose "Fermée", submit: nothing.
    await page.getByLabel('État').selectOption('closed');
    await page.getByRole('button', { name: 'Filtrer' }).focus();
    expect(await follow(page, () => page.keyboard.press('Enter'))).toBe(200);
    expect(await page.getByText('Aucune alerte ne correspond.').count()).toBe(1);
    await check(page, 'alerts list, filtered');
    await follow(page, () => page.goto(`${base}/security/alerts`));

    // Open the alert by keyboard.
    await page.locator('tbody a').first().focus();
    expect(await follow(page, () => page.keyboard.press('Enter'))).toBe(200);
    await check(page, 'an alert');
    expect(await page.locator('h1').innerText()).toBe('Alerte\u202f: Plus de 20 dossiers ouverts en 5 minutes');
    expect(await page.locator('main').innerText()).toContain('Cause de l’alerte');
    await shot(page, '21-security-alert');

    await page.getByRole('button', { name: 'Prendre en charge' }).focus();
    expect(await follow(page, () => page.keyboard.press('Enter'))).toBe(200);
    expect(await page.getByRole('status').innerText()).toContain('L’alerte est prise en charge.');

    // An empty note: the error summary, focusable, linking to the field.
    await page.getByRole('button', { name: 'Ajouter la note' }).click();
    await page.waitForLoadState('load');
    expect(await page.title()).toMatch(/^Erreur/);
    await check(page, 'an alert with an error');
    await page.getByLabel('Nouvelle note').fill('Compte suspendu; la directrice joint l’employée.');
    await follow(page, () => page.getByRole('button', { name: 'Ajouter la note' }).click());
    expect(await page.locator('main').innerText()).toContain('la directrice joint l’employée');
    await check(page, 'an alert with a note');
    // From the alert to the incident register, with the event that caused it.
    expect(await page.getByRole('link', { name: /Consigner un incident au registre/ }).getAttribute('href')).toMatch(/^\/security\/incidents\/new\?event=[0-9a-f-]{36}$/);
    // Asking to reinstate the suspended account: the request waits for a second officer, and says so.
    expect(await follow(page, () => page.getByRole('button', { name: 'Demander le rétablissement du compte' }).click())).toBe(200);
    expect(await page.locator('main').innerText()).toContain('un autre agent de sécurité doit l’approuver');
    expect(await page.getByRole('button', { name: 'Approuver le rétablissement' }).count()).toBe(0);
    await check(page, 'an alert with a reinstatement waiting');

    // The same page in English.
    expect(await follow(page, () => page.getByRole('link', { name: /English/ }).click())).toBe(200);
    await check(page, 'an alert (en)');
    expect(await page.locator('h1').innerText()).toBe('Alert: More than 20 files opened in 5 minutes');
    expect(await page.locator('main').innerText()).toContain('Taken in charge');
    expect(await follow(page, () => page.getByRole('link', { name: 'Back to the alerts' }).click())).toBe(200);
    await check(page, 'alerts list (en)');
    expect(await follow(page, () => page.getByRole('link', { name: /Français/ }).click())).toBe(200);

    // The lockdown page, and a raise without a reason.
    expect(await follow(page, () => page.getByRole('link', { name: 'Niveau de verrouillage' }).click())).toBe(200);
    await check(page, 'lockdown page');
    await follow(page, () => page.getByRole('button', { name: 'Élever le niveau maintenant' }).click());
    expect(await page.title()).toMatch(/^Erreur/);
    await check(page, 'lockdown page with an error');
    await shot(page, '22-security-lockdown');
    await page.getByLabel('Raison').first().fill('Lecture massive par un compte d’opération');
    expect(await follow(page, () => page.getByRole('button', { name: 'Élever le niveau maintenant' }).click())).toBe(200);
    await check(page, 'lockdown confirmation page');
    expect(await page.locator('h1').innerText()).toBe('Élever le verrouillage au niveau 1\u202f?');
    expect(await follow(page, () => page.getByRole('link', { name: 'Non, revenir au niveau de verrouillage' }).click())).toBe(200);

    // The webhook page.
    expect(await follow(page, () => page.goto(`${base}/security/alerts/webhook`))).toBe(200);
    await check(page, 'webhook page');
    await page.getByLabel('Adresse du récepteur (https://…)').fill('pas une adresse');
    await follow(page, () => page.getByRole('button', { name: 'Enregistrer l’adresse' }).click());
    await check(page, 'webhook page with an error');
    expect(await page.locator('.error-summary').innerText()).toContain('Entrez une adresse https:// complète');

    // The rules and the daily review of protected files.
    expect(await follow(page, () => page.goto(`${base}/security/rules`))).toBe(200);
    await check(page, 'rules page');
    await page.getByLabel('Seuil (nombre)').fill('beaucoup');
    await follow(page, () => page.getByRole('button', { name: 'Enregistrer la règle' }).click());
    await check(page, 'rules page with an error');
    // The tenant's working hours: an impossible time is refused in the reader's language, then a declaration is saved.
    await page.getByLabel('Début (par exemple 08:30)').fill('25:00');
    await follow(page, () => page.getByRole('button', { name: 'Enregistrer les heures de travail' }).click());
    expect(await page.title()).toMatch(/^Erreur/);
    await check(page, 'rules page, working hours with an error');
    expect(await page.locator('.error-summary').innerText()).toContain('Entrez une heure sous la forme 08:30');
    await page.getByLabel('Début (par exemple 08:30)').fill('06:30');
    await page.getByLabel('samedi').check();
    expect(await follow(page, () => page.getByRole('button', { name: 'Enregistrer les heures de travail' }).click())).toBe(200);
    expect(await page.getByRole('status').innerText()).toContain('Les heures de travail sont enregistrées.');
    expect(await page.locator('main').innerText()).toContain('lundi, mardi, mercredi, jeudi, vendredi, samedi, de 06:30 à 19:00 (America/Toronto)');
    await check(page, 'rules page, working hours saved');
    expect(await follow(page, () => page.goto(`${base}/security/rules?lang=en`))).toBe(200);
    await check(page, 'rules page (en)');
    expect(await page.locator('main').innerText()).toContain('Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, from 06:30 to 19:00 (America/Toronto)');
    expect(await follow(page, () => page.goto(`${base}/security/rules?lang=fr`))).toBe(200);
    expect(await follow(page, () => page.goto(`${base}/security/protected`))).toBe(200);
    await check(page, 'protected files review');
    expect(await follow(page, () => page.goto(`${base}/security/protected?lang=en`))).toBe(200);
    await check(page, 'protected files review (en)');
  }, 120_000);
});
