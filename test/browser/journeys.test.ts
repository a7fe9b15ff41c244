/**
 * The journeys of test/web/journeys.test.ts, in a real browser (Debian's
 * Chromium through playwright-core): what people see and do, with axe-core
 * checking every page visited, error pages included, and with the page's real
 * Content-Security-Policy in force. GUICHET_SCREENSHOTS=1 also writes
 * docs/screenshots/*.png.
 *
 * One app (listening on a loopback port) and one Chromium for the file. The
 * tenant is picked from the Host header, and Chromium resolves any
 * *.localhost name to loopback: pages are at http://<slug>.localhost:<port>/.
 */
import type { AddressInfo } from 'node:net';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { foldForSearch } from '../../src/directory/import.ts';
import { inTenant } from '../../src/db/tenant.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createParent, createStaff, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { assertNoPageProblems, checkA11y, closeBrowser, follow, launchBrowser, newContext, newPage, shot } from '../helpers/browser.ts';
import { childrenWithNirec } from '../records/stored.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { freshTotpCode, totpSecretFor } from '../helpers/factors.ts';

const NNBSP = '\u202f';
const ERROR_TITLE = `Erreur${NNBSP}: `;
const XSS = '<img src=x onerror=alert(1)>';

let database: TestDatabase;
let t: TestApp;
let tenant: Tenant;
let base: string;
let browser: Browser;
const contexts: BrowserContext[] = [];
/** The visitor of the signed-out pages, who then signs up as the parent. */
let visitor: Page;
const facility: Record<'explorateurs' | 'arcEnCiel' | 'eveil' | 'ruche', string> = { explorateurs: '', arcEnCiel: '', eveil: '', ruche: '' };

/** Thirty facilities in four towns: more than one page of the directory (25 a page). */
const FACILITIES: [name: string, municipality: string, kind: 'cpe' | 'garderie', subsidised: boolean, places: number, infant: number][] = [
  ['CPE Les Petits Explorateurs', 'Longueuil', 'cpe', true, 80, 10],
  ['Garderie Arc-en-ciel', 'Brossard', 'garderie', false, 60, 0],
  ['CPE L’Éveil des Bambins', 'Saint-Lambert', 'cpe', true, 62, 15],
  ['CPE La Ruche', 'Boucherville', 'cpe', true, 80, 10],
  ['CPE Les Câlinours', 'Longueuil', 'cpe', true, 75, 10],
  ['CPE Les Frimousses du Vieux-Longueuil', 'Longueuil', 'cpe', true, 70, 15],
  ['CPE Le Jardin des Découvertes', 'Longueuil', 'cpe', true, 80, 10],
  ['CPE Les Lutins de la Rive-Sud', 'Longueuil', 'cpe', true, 60, 10],
  ['CPE L’Île aux Trésors', 'Longueuil', 'cpe', true, 80, 15],
  ['Garderie Les Petits Génies', 'Longueuil', 'garderie', true, 60, 5],
  ['Garderie Le Château Enchanté', 'Longueuil', 'garderie', false, 50, 0],
  ['Garderie Les Étoiles Filantes', 'Longueuil', 'garderie', true, 70, 10],
  ['Garderie Méli-Mélo', 'Longueuil', 'garderie', false, 45, 5],
  ['CPE Pomme de Reinette', 'Longueuil', 'cpe', true, 80, 10],
  ['CPE Les Coccinelles', 'Brossard', 'cpe', true, 80, 10],
  ['CPE Le Petit Prince', 'Brossard', 'cpe', true, 62, 10],
  ['Garderie Bonhomme Soleil', 'Brossard', 'garderie', true, 80, 10],
  ['Garderie La Forêt Enchantée', 'Brossard', 'garderie', false, 40, 0],
  ['CPE Les Hiboux Savants', 'Brossard', 'cpe', true, 70, 15],
  ['Garderie Les Trottinettes', 'Brossard', 'garderie', false, 55, 5],
  ['CPE Tournesol', 'Brossard', 'cpe', true, 60, 10],
  ['CPE Le Carrousel', 'Saint-Lambert', 'cpe', true, 80, 10],
  ['Garderie Les Papillons Bleus', 'Saint-Lambert', 'garderie', true, 60, 5],
  ['CPE La Marelle', 'Saint-Lambert', 'cpe', true, 50, 10],
  ['Garderie Au Pays des Merveilles', 'Saint-Lambert', 'garderie', false, 45, 0],
  ['CPE Les Mésanges', 'Boucherville', 'cpe', true, 80, 15],
  ['Garderie Le Nid Douillet', 'Boucherville', 'garderie', true, 60, 10],
  ['CPE Les Matelots', 'Boucherville', 'cpe', true, 70, 10],
  ['Garderie Les Oursons', 'Boucherville', 'garderie', false, 50, 5],
  ['CPE L’Escale', 'Longueuil', 'cpe', true, 80, 10],
];

async function seedFacilities(): Promise<void> {
  // Inserted here rather than with createFacility(): the directory matches on a
  // search key folded as the importer folds it (accents removed), which the
  // accent-free name search below depends on.
  const ids = await inTenant(database.db, tenant.id, (trx) =>
    trx
      .insertInto('facilities')
      .values(
        FACILITIES.map(([name, municipality, kind, subsidised, places, infant], i) => ({
          tenant_id: tenant.id,
          code: `B${String(i + 1).padStart(3, '0')}`,
          name,
          kind,
          subsidised,
          address: `${100 + i * 7}, rue Principale`,
          municipality,
          postal_code: 'J4K 1A1',
          region: '16 - Montérégie',
          places_total: places,
          places_infant: infant,
          search_key: foldForSearch(`${name} ${municipality}`),
        })),
      )
      .returning(['id', 'name'])
      .execute(),
  );
  const idOf = (name: string) => ids.find((r) => r.name === name)!.id;
  facility.explorateurs = idOf('CPE Les Petits Explorateurs');
  facility.arcEnCiel = idOf('Garderie Arc-en-ciel');
  facility.eveil = idOf('CPE L’Éveil des Bambins');
  facility.ruche = idOf('CPE La Ruche');
}

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
  // Fixed names and addresses: the screenshots should not change from run to run.
  tenant = await tenantFor(t, { name_fr: 'Bureau coordonnateur de la Rive-Sud', name_en: 'Rive-Sud coordinating office' });
  await t.app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = t.app.server.address() as AddressInfo;
  base = `http://${tenant.hosts[0]}:${port}`;
  await seedFacilities();
  browser = await launchBrowser();
});

afterAll(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  await closeBrowser(browser);
  await t?.close();
  await database?.close();
});

/* ------------------------------------------------------------------ helpers */

async function freshPage(options: Parameters<typeof newContext>[1] = {}): Promise<Page> {
  const context = await newContext(browser, options);
  contexts.push(context);
  return newPage(context);
}

/** Every page visited goes through this: accessibility, no script error, no CSP violation. */
async function check(page: Page, label: string): Promise<void> {
  await checkA11y(page, label);
  assertNoPageProblems(page, label);
}

async function visit(page: Page, path: string, label: string, status = 200): Promise<void> {
  const r = await page.goto(base + path);
  expect(r?.status(), `${label}: status of ${path}`).toBe(status);
  await check(page, label);
}

/** Clicks, waits for the next page, checks it; returns its HTTP status. */
async function go(page: Page, label: string, action: () => Promise<unknown>): Promise<number> {
  const status = await follow(page, action);
  await check(page, label);
  return status;
}

function path(page: Page): string {
  const u = new URL(page.url());
  return u.pathname + u.search;
}

async function mainText(page: Page): Promise<string> {
  return (await page.locator('main').innerText()).replace(/\s+/g, ' ');
}

async function lang(page: Page): Promise<string | null> {
  return page.locator('html').getAttribute('lang');
}

function nav(page: Page) {
  return page.getByRole('navigation', { name: /Navigation principale|Main navigation/ });
}

async function outbox(to: string) {
  return inTenant(database.db, tenant.id, (trx) => trx.selectFrom('mail_outbox').selectAll().where('to_address', '=', to).orderBy('created_at').execute());
}

/** The path of the link in the last e-mail sent to `to` (the host in the mail is the app's, not this test's port). */
async function linkIn(to: string, route: string): Promise<string> {
  const mails = await outbox(to);
  const body = mails.at(-1)?.body_text ?? '';
  const m = new RegExp(`${route.replace(/[/?]/g, '\\$&')}\\?token=[A-Za-z0-9_-]{43}`).exec(body);
  if (!m) throw new Error(`no ${route} link in the mail to ${to}: ${body}`);
  return m[0];
}

async function signIn(page: Page, email: string, label: string): Promise<void> {
  await visit(page, '/signin', `${label}: sign-in page`);
  await page.getByLabel('Adresse courriel').fill(email);
  await page.getByLabel('Mot de passe').fill(PASSWORD);
  await go(page, `${label}: after sign-in`, () => page.getByRole('main').getByRole('button', { name: 'Se connecter' }).click());
  // Staff and administrators have an authenticator app (test/helpers/factors.ts): the second step asks for its code.
  const secret = totpSecretFor(tenant.hosts[0]!, email);
  if (secret && new URL(page.url()).pathname === '/signin/second-factor') {
    await page.getByLabel('Code à 6 chiffres').fill(await freshTotpCode(secret, t.deps.clock));
    await go(page, `${label}: second step`, () => page.getByRole('button', { name: 'Continuer' }).click());
  }
}

const t0 = today(new Date());
const dates = { birth: addMonths(t0, -8), entry: addMonths(t0, 3), past: addMonths(t0, -1) };

/* ------------------------------------------------------------------ journeys */

describe('signed out: home, directory, a facility, both languages', () => {
  let page: Page;

  it('shows the home page in French', async () => {
    page = visitor = await freshPage();
    await visit(page, '/', 'home');
    expect(await lang(page)).toBe('fr');
    expect(await page.getByRole('heading', { level: 1 }).count()).toBe(1);
    expect(await page.title()).toBe('Trouver une place en service de garde — Guichet');
    await shot(page, '01-home');
  });

  it('lists the directory, pages through it, and filters by municipality and by name without accents', async () => {
    await go(page, 'directory', () => nav(page).getByRole('link', { name: 'Répertoire des services de garde' }).click());
    expect(path(page)).toBe('/directory');
    expect(await page.locator('#results').innerText()).toBe('30 services trouvés');
    expect(await page.locator('tbody tr').count()).toBe(25);
    await shot(page, '02-directory');

    await go(page, 'directory, page 2', () => page.getByRole('link', { name: 'Page suivante' }).click());
    expect(new URL(page.url()).searchParams.get('page')).toBe('2');
    expect(await page.locator('tbody tr').count()).toBe(5);
    expect(await mainText(page)).toContain('Page 2 sur 2');

    await page.getByLabel('Municipalité').selectOption('Saint-Lambert');
    await go(page, 'directory filtered by municipality', () => page.getByRole('button', { name: 'Appliquer les filtres' }).click());
    expect(new URL(page.url()).searchParams.get('municipality')).toBe('Saint-Lambert');
    expect(await page.locator('#results').innerText()).toBe('5 services trouvés');
    const towns = await page.locator('tbody tr td:nth-child(3)').allInnerTexts();
    expect(new Set(towns)).toEqual(new Set(['Saint-Lambert']));
    expect(await page.getByLabel('Municipalité').inputValue()).toBe('Saint-Lambert');

    await go(page, 'directory, filters cleared', () => page.getByRole('link', { name: 'Effacer les filtres' }).click());
    await page.getByLabel('Nom du service').fill('eveil des bambins');
    await go(page, 'directory searched without accents', () => page.getByRole('button', { name: 'Appliquer les filtres' }).click());
    expect(await page.locator('#results').innerText()).toBe('1 service trouvé');
    expect(await page.getByRole('link', { name: 'CPE L’Éveil des Bambins' }).count()).toBe(1);
  });

  it('opens a facility, reads it in English on the same page, and comes back to French', async () => {
    await go(page, 'facility page', () => page.getByRole('link', { name: 'CPE L’Éveil des Bambins' }).click());
    expect(path(page)).toBe(`/directory/${facility.eveil}`);
    expect(await page.getByRole('heading', { level: 1 }).innerText()).toBe('CPE L’Éveil des Bambins');
    expect(await mainText(page)).toContain('Connectez-vous pour inscrire votre enfant à ce service.');
    await shot(page, '03-facility');

    await go(page, 'facility page in English', () => page.getByRole('link', { name: /English/ }).click());
    expect(new URL(page.url()).pathname).toBe(`/directory/${facility.eveil}`);
    expect(await lang(page)).toBe('en');
    expect(await page.getByRole('heading', { level: 1 }).innerText()).toBe('CPE L’Éveil des Bambins');
    expect(await mainText(page)).toContain('Back to the directory');
    expect(await page.locator('.brand-tenant').innerText()).toBe('Rive-Sud coordinating office');

    await go(page, 'facility page back in French', () => page.getByRole('link', { name: /Français/ }).click());
    expect(new URL(page.url()).pathname).toBe(`/directory/${facility.eveil}`);
    expect(await lang(page)).toBe('fr');
    expect(await mainText(page)).toContain('Retour au répertoire');
  });

  it('shows an accessible "not found" page for an unknown facility', async () => {
    await visit(page, '/directory/00000000-0000-4000-8000-000000000000', 'not found page', 404);
    expect(await page.getByRole('heading', { level: 1 }).innerText()).toBe('Page introuvable');
  });
});

describe('a parent, from sign-up to a registered child', () => {
  const email = 'parent@exemple.test';
  let page: Page;
  let childId: string;

  it('gets the sign-up errors in a focused summary, with the e-mail kept', async () => {
    page = visitor;
    await go(page, 'sign-up form', () => nav(page).getByRole('link', { name: 'Créer un compte' }).click());
    await page.getByLabel('Adresse courriel').fill('parent@exemple');
    await page.getByLabel('Mot de passe', { exact: true }).fill('court');
    await page.getByLabel('Confirmez le mot de passe').fill('autre');
    const status = await go(page, 'sign-up form with errors', () => page.getByRole('button', { name: 'Créer mon compte' }).click());
    expect(status).toBe(400);
    expect((await page.title()).startsWith(ERROR_TITLE)).toBe(true);
    expect(await page.locator('[data-error-summary]:focus').count()).toBe(1);
    const summary = await page.locator('.error-summary').innerText();
    expect(summary).toContain('Entrez une adresse courriel valide');
    expect(summary).toContain('Le mot de passe doit compter au moins 12 caractères');
    expect(await page.getByLabel('Adresse courriel').inputValue()).toBe('parent@exemple');
    // the summary links lead to the fields
    await page.locator('.error-summary').getByRole('link', { name: /adresse courriel valide/ }).click();
    expect(await page.locator('#f-email:focus').count()).toBe(1);
  });

  it('signs up, follows the link from the e-mail and confirms the address with the button', async () => {
    await page.getByLabel('Adresse courriel').fill(email);
    await page.getByLabel('Mot de passe', { exact: true }).fill(PASSWORD);
    await page.getByLabel('Confirmez le mot de passe').fill(PASSWORD);
    await go(page, 'sign-up sent', () => page.getByRole('button', { name: 'Créer mon compte' }).click());
    expect(await page.getByRole('heading', { level: 1 }).innerText()).toBe('Vérifiez vos courriels');

    await visit(page, await linkIn(email, '/verify-email'), 'verify e-mail');
    await go(page, 'address confirmed', () => page.getByRole('button', { name: 'Confirmer mon adresse' }).click());
    expect(await page.getByRole('heading', { level: 1 }).innerText()).toBe('Adresse confirmée');
  });

  it('is refused with a wrong password, then signs in and lands on the file page', async () => {
    await go(page, 'sign-in page', () => page.getByRole('main').getByRole('link', { name: 'Se connecter' }).click());
    await shot(page, '04-signin');
    await page.getByLabel('Adresse courriel').fill(email);
    await page.getByLabel('Mot de passe').fill('not the password at all');
    const refused = await go(page, 'sign-in refused', () => page.getByRole('main').getByRole('button', { name: 'Se connecter' }).click());
    expect(refused).toBe(401);
    expect((await page.title()).startsWith(ERROR_TITLE)).toBe(true);
    expect(await page.locator('[data-error-summary]:focus').count()).toBe(1);
    expect(await page.getByLabel('Adresse courriel').inputValue()).toBe(email);

    await page.getByLabel('Mot de passe').fill(PASSWORD);
    await go(page, 'account page', () => page.getByRole('main').getByRole('button', { name: 'Se connecter' }).click());
    expect(path(page)).toBe('/account');
    expect(await page.getByRole('heading', { level: 1 }).innerText()).toBe('Mon dossier');
  });

  it('gets every problem of a bad child form at once, keeping what was typed', async () => {
    await go(page, 'new child form', () => page.getByRole('link', { name: 'Créer le dossier d’un enfant' }).click());
    await page.getByLabel('Nom de famille').fill('Gagnon-Côté');
    await page.getByLabel('Date de naissance').fill(dates.birth);
    await page.getByLabel(/NIREC/).fill('12#34');
    await page.getByLabel('Date d’entrée souhaitée').fill(dates.past);
    for (const day of ['Lundi', 'Mardi', 'Mercredi', 'Jeudi', 'Vendredi']) await page.getByLabel(day).uncheck();
    const status = await go(page, 'child form with errors', () => page.getByRole('button', { name: 'Créer le dossier' }).click());
    expect(status).toBe(400);
    expect((await page.title()).startsWith(ERROR_TITLE)).toBe(true);
    expect(await page.locator('[data-error-summary]:focus').count()).toBe(1);
    const summary = await page.locator('.error-summary').innerText();
    for (const msg of ['Entrez le prénom de l’enfant', 'Le NIREC n’a pas le bon format', 'La date d’entrée souhaitée doit être aujourd’hui ou plus tard', 'Choisissez au moins un jour de garde']) {
      expect(summary).toContain(msg);
    }
    expect(await page.getByLabel('Nom de famille').inputValue()).toBe('Gagnon-Côté');
    expect(await page.getByLabel('Date de naissance').inputValue()).toBe(dates.birth);
    expect(await page.getByLabel(/NIREC/).inputValue()).toBe('12#34');
    expect(await page.getByLabel('Date d’entrée souhaitée').inputValue()).toBe(dates.past);
    expect(await page.getByLabel('Prénom').getAttribute('aria-invalid')).toBe('true');
    await shot(page, '05-child-form-errors');
  });

  it('creates the child file and sees it, the NIREC masked', async () => {
    await page.getByLabel('Prénom').fill('Éloïse');
    await page.getByLabel(/NIREC/).fill('1234 5678 90');
    await page.getByLabel('Date d’entrée souhaitée').fill(dates.entry);
    for (const day of ['Lundi', 'Mercredi', 'Vendredi']) await page.getByLabel(day).check();
    await go(page, 'child page, created', () => page.getByRole('button', { name: 'Créer le dossier' }).click());
    const m = /^\/children\/([0-9a-f-]{36})\?status=created$/.exec(path(page));
    expect(m, path(page)).not.toBeNull();
    childId = m![1]!;
    expect(await page.getByRole('heading', { level: 1 }).innerText()).toBe('Éloïse Gagnon-Côté');
    const text = await mainText(page);
    expect(text).toContain('Le dossier a été créé.');
    expect(text).toContain('•••••••890');
    expect(text).toContain('Lundi, Mercredi, Vendredi');
    expect(await page.content()).not.toContain('1234567890');
  });

  it('registers the child with two facilities from the directory, sees them, and withdraws one', async () => {
    for (const [q, name] of [
      ['explorateurs', 'CPE Les Petits Explorateurs'],
      ['arc-en-ciel', 'Garderie Arc-en-ciel'],
    ] as const) {
      await go(page, `directory (to ${name})`, () => nav(page).getByRole('link', { name: 'Répertoire des services de garde' }).click());
      await page.getByLabel('Nom du service').fill(q);
      await go(page, `directory search "${q}"`, () => page.getByRole('button', { name: 'Appliquer les filtres' }).click());
      await go(page, `facility page ${name}, signed in`, () => page.getByRole('link', { name }).click());
      expect(await page.getByLabel('Enfant', { exact: true }).inputValue()).toBe(childId);
      if (name === 'CPE Les Petits Explorateurs') await page.getByLabel('Un frère ou une sœur de l’enfant fréquente ce service').check();
      await go(page, `child page, applied to ${name}`, () => page.getByRole('button', { name: 'Inscrire l’enfant' }).click());
      expect(path(page)).toBe(`/children/${childId}?status=applied`);
      expect(await mainText(page)).toContain('L’enfant a été inscrit au service.');
    }
    // The registrations' table comes first; the ranks at each facility follow in their own.
    const rows = page.locator('main table').first().locator('tbody tr');
    expect(await rows.count()).toBe(2);
    expect(await rows.filter({ hasText: 'CPE Les Petits Explorateurs' }).innerText()).toContain('En attente');
    expect(await rows.filter({ hasText: 'Garderie Arc-en-ciel' }).innerText()).toContain('En attente');

    await go(page, 'child page, withdrawn', () => page.getByRole('button', { name: 'Retirer l’inscription auprès de Garderie Arc-en-ciel' }).click());
    expect(path(page)).toBe(`/children/${childId}?status=withdrawn`);
    expect(await mainText(page)).toContain('L’inscription a été retirée.');
    expect(await rows.filter({ hasText: 'Garderie Arc-en-ciel' }).innerText()).toContain('Retirée');
    expect(await rows.filter({ hasText: 'CPE Les Petits Explorateurs' }).innerText()).toContain('En attente');
    await shot(page, '06-child');
  });

  it('edits the file, then signs out', async () => {
    await go(page, 'edit child form', () => page.getByRole('link', { name: /^Modifier/ }).click());
    expect(path(page)).toBe(`/children/${childId}/edit`);
    expect(await page.getByLabel('Prénom').inputValue()).toBe('Éloïse');
    expect(await page.getByLabel(/NIREC/).inputValue()).toBe('');
    await page.getByLabel('Prénom').fill('Éloïse-Marie');
    await go(page, 'child page, updated', () => page.getByRole('button', { name: 'Enregistrer les modifications' }).click());
    expect(path(page)).toBe(`/children/${childId}?status=updated`);
    expect(await page.getByRole('heading', { level: 1 }).innerText()).toBe('Éloïse-Marie Gagnon-Côté');
    expect(await mainText(page)).toContain('•••••••890');

    await go(page, 'signed out', () => nav(page).getByRole('button', { name: 'Se déconnecter' }).click());
    expect(path(page)).toBe('/signin?signedOut=1');
    expect(await mainText(page)).toContain('Vous êtes déconnecté.');
    await visit(page, `/children/${childId}`, 'child page after sign-out (redirected to sign-in)');
    expect(new URL(page.url()).pathname).toBe('/signin');
  });

  it('facility staff see the child’s reference among their candidates, never the child’s name', async () => {
    const staffEmail = 'educatrice@exemple.test';
    await createStaff(t, tenant, staffEmail, facility.explorateurs);
    const staff = await freshPage();
    await signIn(staff, staffEmail, 'staff');
    expect(path(staff)).toBe('/staff');
    await go(staff, 'staff space', () => nav(staff).getByRole('link', { name: 'Espace service de garde' }).click());
    expect(await staff.getByRole('heading', { level: 1 }).innerText()).toBe('Espace service de garde');
    await go(staff, 'candidates list', () => staff.getByRole('link', { name: 'Voir les candidats — CPE Les Petits Explorateurs' }).click());
    expect(path(staff)).toBe(`/staff/facilities/${facility.explorateurs}/candidates`);
    const { reference } = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('children').select('reference').where('id', '=', childId).executeTakeFirstOrThrow());
    const text = await staff.locator('html').innerText();
    const title = await staff.title();
    expect(text).toContain(reference);
    expect(text).toContain('3 — fratrie au service');
    for (const secret of ['Éloïse', 'Gagnon', 'Côté', '890']) {
      expect(text).not.toContain(secret);
      expect(title).not.toContain(secret);
    }
    await shot(staff, '07-candidates');
  });
});

describe('an administrator invites a staff member', () => {
  it('signs in, opens a facility, invites; the invitee accepts from the e-mail and is asked to add a second factor first', async () => {
    const adminEmail = 'direction@exemple.test';
    const invitee = 'nouvelle.educatrice@exemple.test';
    await createAdmin(t, tenant, adminEmail);
    const page = await freshPage();
    await signIn(page, adminEmail, 'administrator');
    expect(path(page)).toBe('/admin');
    expect(await page.getByRole('heading', { level: 1 }).innerText()).toBe('Administration');

    await go(page, 'directory from admin', () => page.getByRole('main').getByRole('link', { name: 'Répertoire des services de garde' }).click());
    await page.getByLabel('Nom du service').fill('ruche');
    await go(page, 'directory search "ruche"', () => page.getByRole('button', { name: 'Appliquer les filtres' }).click());
    await go(page, 'facility page, administrator', () => page.getByRole('link', { name: 'CPE La Ruche' }).click());
    expect(await page.getByRole('heading', { name: 'Inviter un membre du personnel' }).count()).toBe(1);

    await page.getByLabel('Adresse courriel de la personne').fill('pas une adresse');
    const bad = await go(page, 'invitation with an error', () => page.getByRole('button', { name: 'Envoyer l’invitation' }).click());
    expect(bad).toBe(400);
    expect((await page.title()).startsWith(ERROR_TITLE)).toBe(true);
    expect(await page.getByLabel('Adresse courriel de la personne').inputValue()).toBe('pas une adresse');

    await page.getByLabel('Adresse courriel de la personne').fill(invitee);
    await go(page, 'invitation sent', () => page.getByRole('button', { name: 'Envoyer l’invitation' }).click());
    expect(await mainText(page)).toContain(`L’invitation a été envoyée à ${invitee}.`);

    await go(page, 'admin page with a pending invitation', () => nav(page).getByRole('link', { name: 'Administration' }).click());
    expect(await page.locator('main tbody tr').filter({ hasText: invitee }).innerText()).toContain('CPE La Ruche');
    await shot(page, '08-admin');

    const link = await linkIn(invitee, '/invitations/accept');
    const fresh = await freshPage();
    await visit(fresh, link, 'invitation page');
    expect(await mainText(fresh)).toContain('Vous êtes invité à rejoindre le personnel de CPE La Ruche sur Guichet.');
    await fresh.getByLabel('Choisissez un mot de passe').fill(PASSWORD);
    await fresh.getByLabel('Confirmez le mot de passe').fill(PASSWORD);
    await go(fresh, 'staff space of the new staff member', () => fresh.getByRole('button', { name: 'Accepter l’invitation' }).click());
    // A new staff member opens no personal data before adding a second factor: enrolment first.
    expect(path(fresh)).toBe('/account/security?status=required');
    expect(await mainText(fresh)).toContain('Une deuxième étape de connexion est obligatoire');
  });
});

describe('the checks themselves', () => {
  // A gate that never closes proves nothing: break a page on purpose and see axe refuse it.
  const breakPage = "document.querySelector('main').insertAdjacentHTML('beforeend', '<img src=\\'/assets/guichet.css\\'><input type=\\'text\\' name=\\'nolabel\\'>')";

  it('checkA11y names the rule, the impact and the element of each violation', async () => {
    const page = visitor;
    await visit(page, '/', 'home (before breaking it)');
    await page.evaluate(breakPage);
    const err = await checkA11y(page, 'home, broken on purpose').then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/home, broken on purpose/);
    expect(err?.message).toMatch(/image-alt \[critical\]/);
    expect(err?.message).toMatch(/label \[critical\]/);
    expect(err?.message).toMatch(/targets: input/);
  });

  it('checkA11y also checks pages seen with JavaScript off', async () => {
    const page = await freshPage({ javaScriptEnabled: false });
    await visit(page, '/', 'home without JavaScript');
    await page.evaluate(breakPage);
    await expect(checkA11y(page, 'home without JavaScript, broken on purpose')).rejects.toThrow(/image-alt/);
  });
});

describe('keyboard', () => {
  it('the first Tab reaches the skip link, which moves focus to the main content', async () => {
    const page = visitor; // signed out since the parent's journey ended
    await visit(page, '/signin', 'sign-in page (keyboard)');
    await page.keyboard.press('Tab');
    const skip = page.locator('a.skip-link:focus');
    expect(await skip.count()).toBe(1);
    expect(await skip.innerText()).toBe('Aller au contenu principal');
    // visible once focused, not left off-screen
    const box = await skip.boundingBox();
    expect(box && box.x >= 0 && box.y >= 0 && box.width > 0).toBe(true);
    await checkA11y(page, 'sign-in page, skip link focused');
    await page.keyboard.press('Enter');
    expect(await page.locator('main#main:focus').count()).toBe(1);
    expect(new URL(page.url()).hash).toBe('#main');
  });
});

describe('without JavaScript', () => {
  it('signs in and creates a child file with plain forms', async () => {
    const email = 'sans.javascript@exemple.test';
    await createParent(t, tenant, email);
    const page = await freshPage({ javaScriptEnabled: false });
    await signIn(page, email, 'no JavaScript');
    expect(path(page)).toBe('/account');
    await go(page, 'new child form (no JavaScript)', () => page.getByRole('link', { name: 'Créer le dossier d’un enfant' }).click());
    await page.getByLabel('Date de naissance').fill(dates.birth);
    await page.getByLabel('Date d’entrée souhaitée').fill(dates.entry);
    const status = await go(page, 'child form with errors (no JavaScript)', () => page.getByRole('button', { name: 'Créer le dossier' }).click());
    expect(status).toBe(400);
    // guichet.js did not run: the summary is there but nothing moved the focus to it
    expect(await page.locator('.error-summary').count()).toBe(1);
    expect(await page.locator('[data-error-summary]:focus').count()).toBe(0);
    expect(await page.getByLabel('Date de naissance').inputValue()).toBe(dates.birth);

    await page.getByLabel('Prénom').fill('Noé');
    await page.getByLabel('Nom de famille').fill('Tremblay');
    await page.getByLabel(/NIREC/).fill('2345 6789 01');
    await go(page, 'child page (no JavaScript)', () => page.getByRole('button', { name: 'Créer le dossier' }).click());
    expect(path(page)).toMatch(/^\/children\/[0-9a-f-]{36}\?status=created$/);
    expect(await page.getByRole('heading', { level: 1 }).innerText()).toBe('Noé Tremblay');
  });
});

describe('an XSS probe in the child’s names', () => {
  it('is refused by validation, shown back as text, and never runs', async () => {
    const email = 'sonde@exemple.test';
    await createParent(t, tenant, email);
    // bypassCSP: the page's CSP alone would stop an injected onerror handler;
    // with it off, escaping is the only defence left, and that is what we test.
    const page = await freshPage({ bypassCSP: true });
    const dialogs: string[] = [];
    page.on('dialog', (d) => {
      dialogs.push(d.message());
      void d.dismiss();
    });
    await signIn(page, email, 'XSS probe');
    await visit(page, '/children/new', 'new child form (XSS probe)');
    await page.getByLabel('Prénom').fill(XSS);
    await page.getByLabel('Nom de famille').fill(XSS);
    await page.getByLabel('Date de naissance').fill(dates.birth);
    await page.getByLabel(/NIREC/).fill('3456 7890 12');
    await page.getByLabel('Date d’entrée souhaitée').fill(dates.entry);
    const status = await go(page, 'child form with the XSS probe', () => page.getByRole('button', { name: 'Créer le dossier' }).click());
    expect(status).toBe(400);
    expect(await page.locator('.error-summary').innerText()).toContain('Le nom ne peut contenir que des lettres');
    expect(await page.getByLabel('Prénom').inputValue()).toBe(XSS);
    expect(await page.getByLabel('Nom de famille').inputValue()).toBe(XSS);
    expect(await page.locator('img').count()).toBe(0);
    await page.waitForTimeout(200);
    expect(dialogs).toEqual([]);
    expect(await childrenWithNirec(database.db, t.deps.keys, tenant.id, '3456789012')).toHaveLength(0);
  });
});
