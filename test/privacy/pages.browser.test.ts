/**
 * Issue 8's pages in a real browser (Debian's Chromium, the pages' real CSP,
 * axe-core with WCAG 2.1 A/AA and best practices: 0 violations), each in
 * French and in English: a parent's privacy page, « Qui a consulté le
 * dossier » (a facility's list and a dry run of the allocation among its
 * entries), the deletion request and its dates; the security officer's
 * incident register (list, form with errors, entry) and breach report (form
 * and result); the operator's retention page.
 */
import type { AddressInfo } from 'node:net';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { runAllocation } from '../../src/records/allocation.ts';
import * as records from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { assertNoPageProblems, checkA11y, closeBrowser, follow, launchBrowser, newContext, newPage } from '../helpers/browser.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { enrolTotp, freshTotpCode, totpSecretFor } from '../helpers/factors.ts';
import { actorOf, createAccount, grantRole } from '../records/people.ts';

let database: TestDatabase;
let t: TestApp;
let tenant: Tenant;
let base: string;
let browser: Browser;
const contexts: BrowserContext[] = [];
const n = Date.now().toString(36);
const emails = { parent: `parent.${n}@exemple.test`, admin: `admin.${n}@exemple.test`, staff: `educ.${n}@exemple.test`, officer: `securite.${n}@exemple.test` };
let facility: string;
let parent: Actor;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
  tenant = await tenantFor(t, { name_fr: 'Programme de la Rive-Sud', name_en: 'Rive-Sud programme' });
  await t.app.listen({ port: 0, host: '127.0.0.1' });
  base = `http://${tenant.hosts[0]}:${(t.app.server.address() as AddressInfo).port}`;
  facility = await createFacility(t, tenant, { name: 'CPE Les Mésanges' });
  parent = await actorOf(t, tenant, await createParent(t, tenant, emails.parent), emails.parent);
  const d0 = today(new Date());
  for (const firstName of ['Éloïse', 'Jacob']) {
    const { id } = await records.createChildFile(t.deps, ctxFor(t, tenant, parent), { firstName, lastName: 'Gagnon-Côté', birthDate: addMonths(d0, -8), nirec: null, desiredEntryDate: addMonths(d0, 3), daysOfCare: 21, inSubsidisedCare: false });
    await records.addApplication(t.deps, ctxFor(t, tenant, parent), id, { facilityId: facility, siblingAttending: false, parentIsStaff: false });
  }
  const adminId = await createAdmin(t, tenant, emails.admin);
  const staffId = await createStaff(t, tenant, emails.staff, facility);
  const admin2 = await createAccount(t, tenant, `admin2.${n}@exemple.test`);
  await grantRole(t, tenant, admin2, 'tenant_admin', staffId, adminId);
  const officerId = await createAccount(t, tenant, emails.officer);
  await grantRole(t, tenant, officerId, 'security_officer', admin2, adminId);
  await enrolTotp(t.deps, tenant, officerId, emails.officer);
  // Someone else has read the files: the staff's list.
  await records.listCandidates(t.deps, ctxFor(t, tenant, await actorOf(t, tenant, staffId, emails.staff)), facility, 1);
  // And a dry run of the coordinated allocation, from the server's command line.
  const now = t.deps.clock();
  await runAllocation(t.database.db, t.deps.keys, { id: tenant.id, rules: { ...tenant.rules, coordinatedAllocation: true } }, { dryRun: true, today: today(now), deadlineDays: 7, now, origin: { actorAccountId: null, actorRoles: ['system:cli'], ip: null, userAgent: 'guichet allocate --dry-run', requestId: null } });
  browser = await launchBrowser();
}, 120_000);

afterAll(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  await closeBrowser(browser);
  await t?.close();
  await database?.close();
});

async function signedIn(email: string): Promise<Page> {
  const context = await newContext(browser);
  contexts.push(context);
  const page = await newPage(context);
  await page.goto(`${base}/signin`);
  await page.getByLabel('Adresse courriel').fill(email);
  await page.getByLabel('Mot de passe').fill(PASSWORD);
  await follow(page, () => page.getByRole('main').getByRole('button', { name: 'Se connecter' }).click());
  const secret = totpSecretFor(tenant.hosts[0]!, email);
  if (secret && new URL(page.url()).pathname === '/signin/second-factor') {
    await page.getByLabel('Code à 6 chiffres').fill(await freshTotpCode(secret, t.deps.clock));
    await follow(page, () => page.getByRole('button', { name: 'Continuer' }).click());
  }
  return page;
}

/** Both languages of a page: 200, axe-clean, no script or CSP problem. */
async function bothLanguages(page: Page, path: string, label: string, h1: { fr: string; en: string }) {
  for (const lang of ['fr', 'en'] as const) {
    expect(await follow(page, () => page.goto(`${base}${path}${path.includes('?') ? '&' : '?'}lang=${lang}`))).toBe(200);
    expect(await page.locator('html').getAttribute('lang')).toBe(lang);
    expect(await page.locator('h1').innerText()).toBe(h1[lang]);
    await checkA11y(page, `${label} (${lang})`);
    assertNoPageProblems(page, `${label} (${lang})`);
  }
  await page.goto(`${base}${path}${path.includes('?') ? '&' : '?'}lang=fr`);
}

describe('a parent’s pages', () => {
  it('privacy page, who consulted the file, deletion request and its dates: axe-clean in French and English', async () => {
    const page = await signedIn(emails.parent);
    await bothLanguages(page, '/account/privacy', 'privacy page', { fr: 'Vos renseignements personnels', en: 'Your personal information' });
    await bothLanguages(page, '/account/privacy/access', 'who consulted the file', { fr: 'Qui a consulté le dossier', en: 'Who consulted this file' });
    expect(await page.locator('main table tbody tr').count()).toBeGreaterThan(0);
    expect(await page.locator('main table').innerText()).toContain('CPE Les Mésanges — personnel du service de garde');
    expect(await page.locator('main table').innerText()).toContain('— commande sur le serveur');
    expect(await page.locator('main table').innerText()).toContain('Consultation — essai de la répartition coordonnée, sans offre ni résultat conservé');
    await bothLanguages(page, '/account/privacy/access?own=1', 'who consulted the file, own included', { fr: 'Qui a consulté le dossier', en: 'Who consulted this file' });
    await bothLanguages(page, '/account/privacy/delete', 'deletion request', { fr: 'Demander la suppression de vos données', en: 'Ask for your data to be deleted' });
    expect(await follow(page, () => page.getByRole('button', { name: 'Oui, supprimer mes données' }).click())).toBe(200);
    expect(await page.locator('h1').innerText()).toBe('Votre demande a été enregistrée');
    await checkA11y(page, 'deletion request done');
    expect(await page.locator('main table tbody tr').count()).toBe(2);
    await bothLanguages(page, '/account/privacy', 'privacy page with destruction dates', { fr: 'Vos renseignements personnels', en: 'Your personal information' });
  });
});

describe('the security officer’s and the operator’s pages', () => {
  it('incident register, a form with errors, an entry, the breach report form and result: axe-clean in French and English', async () => {
    const page = await signedIn(emails.officer);
    await bothLanguages(page, '/security/incidents', 'incident register (empty)', { fr: 'Registre des incidents de confidentialité', en: 'Register of confidentiality incidents' });
    await bothLanguages(page, '/security/incidents/new', 'new incident form', { fr: 'Inscrire un incident de confidentialité', en: 'Record a confidentiality incident' });
    // Submitted empty: the error summary, then the field errors.
    await page.getByLabel('Titre').fill('');
    expect(await follow(page, () => page.getByRole('button', { name: 'Enregistrer' }).click())).toBe(400);
    expect(await page.title()).toMatch(/^Erreur\u202f: /);
    await checkA11y(page, 'incident form with errors');
    await page.getByLabel('Titre').fill('Accès inhabituel à des dossiers');
    await page.getByLabel('Renseignements personnels visés').fill('Noms et dates de naissance d’enfants.');
    await page.getByLabel('Circonstances de l’incident').fill('Un compte a consulté des dossiers un samedi soir.');
    await page.getByLabel('Nombre de personnes concernées').fill('2');
    expect(await follow(page, () => page.getByRole('button', { name: 'Enregistrer' }).click())).toBe(200);
    const entry = new URL(page.url()).pathname;
    await bothLanguages(page, entry, 'incident entry', { fr: 'Incident no 1', en: 'Incident no. 1' });
    await bothLanguages(page, '/security/incidents', 'incident register', { fr: 'Registre des incidents de confidentialité', en: 'Register of confidentiality incidents' });
    await bothLanguages(page, '/security/breach-report', 'breach report form', { fr: 'Rapport d’impact d’un incident', en: 'Incident impact report' });
    await page.getByLabel('Compte, session ou adresse').fill(emails.staff);
    const fmt = (d: Date) => {
      const p = Object.fromEntries(new Intl.DateTimeFormat('en-CA', { timeZone: 'America/Toronto', hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit' }).formatToParts(d).map((x) => [x.type, x.value]));
      return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}`;
    };
    await page.getByLabel('Du (heure de Montréal)').fill(fmt(new Date(Date.now() - 3600_000)));
    await page.getByLabel('Au (heure de Montréal)').fill(fmt(new Date(Date.now() + 3600_000)));
    expect(await follow(page, () => page.getByRole('button', { name: 'Afficher le rapport' }).click(), 60_000)).toBe(200);
    expect(await page.locator('#breach-result').innerText()).toBe('Résultat');
    expect(await page.locator('main table tbody tr').count()).toBe(2);
    await checkA11y(page, 'breach report result');
    assertNoPageProblems(page, 'breach report result');
  });

  it('the retention page: axe-clean in French and English', async () => {
    const page = await signedIn(emails.admin);
    await bothLanguages(page, '/retention', 'retention page', { fr: 'Conservation et destruction des dossiers', en: 'Retention and destruction of files' });
  });
});
