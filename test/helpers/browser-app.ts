/**
 * A browser test's world in one call: a test database, the application
 * listening on a free port for one tenant (reached by its host name), and
 * Debian's Chromium. Pages made with page() are closed with the rest by
 * close(); visit() and go() check every page they reach with axe-core and
 * for script errors or CSP violations.
 */
import type { AddressInfo } from 'node:net';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { expect } from 'vitest';
import type { Tenant } from '../../src/tenants/service.ts';
import { PASSWORD, startTestApp, tenantFor, type TestApp } from './app.ts';
import { assertNoPageProblems, checkA11y, closeBrowser, follow, launchBrowser, newContext, newPage } from './browser.ts';
import { createTestDatabase, type TestDatabase } from './db.ts';
import { freshTotpCode, totpSecretFor } from './factors.ts';

export interface BrowserApp {
  database: TestDatabase;
  t: TestApp;
  tenant: Tenant;
  /** http://<tenant host>:<port> */
  base: string;
  browser: Browser;
  /** A page in a browser context of its own (French, 1200×900). */
  page(options?: Parameters<typeof newContext>[1]): Promise<Page>;
  /** axe-core (0 violations), no script error, no CSP violation. */
  check(page: Page, label: string): Promise<void>;
  /** Goes to a path of the application, expects its status, checks the page. */
  visit(page: Page, path: string, label: string, status?: number): Promise<void>;
  /** Runs an action that loads a page, checks that page, returns its status. */
  go(page: Page, label: string, action: () => Promise<unknown>): Promise<number>;
  /** Signs in with the test password, and the account's authenticator code when it has one (`totp`). */
  signIn(page: Page, email: string, totp?: boolean): Promise<void>;
  close(): Promise<void>;
}

const DEFAULT_NAMES = { name_fr: 'Bureau coordonnateur de la Rive-Sud', name_en: 'Rive-Sud coordinating office' };

export async function startBrowserApp(names: { name_fr: string; name_en: string } = DEFAULT_NAMES): Promise<BrowserApp> {
  const database = await createTestDatabase();
  const t = await startTestApp(database);
  const tenant = await tenantFor(t, names);
  await t.app.listen({ port: 0, host: '127.0.0.1' });
  const base = `http://${tenant.hosts[0]}:${(t.app.server.address() as AddressInfo).port}`;
  const browser = await launchBrowser();
  const contexts: BrowserContext[] = [];
  const check = async (page: Page, label: string) => {
    await checkA11y(page, label);
    assertNoPageProblems(page, label);
  };
  return {
    database,
    t,
    tenant,
    base,
    browser,
    async page(options = {}) {
      const context = await newContext(browser, options);
      contexts.push(context);
      return newPage(context);
    },
    check,
    async visit(page, path, label, status = 200) {
      const r = await page.goto(base + path);
      expect(r?.status(), `${label}: status of ${path}`).toBe(status);
      await check(page, label);
    },
    async go(page, label, action) {
      const status = await follow(page, action);
      await check(page, label);
      return status;
    },
    async signIn(page, email, totp = false) {
      await follow(page, () => page.goto(`${base}/signin`));
      await page.getByLabel('Adresse courriel').fill(email);
      await page.getByLabel('Mot de passe').fill(PASSWORD);
      await follow(page, () => page.getByRole('main').getByRole('button', { name: 'Se connecter' }).click());
      if (!totp) return;
      // The helper's first code may be for the time step just ended (valid ±1 step): on a loaded machine it can age
      // out between typing and sending. A second code, for a later step, then goes through.
      for (let attempt = 0; attempt < 2 && new URL(page.url()).pathname === '/signin/second-factor'; attempt++) {
        await page.getByLabel('Code à 6 chiffres').fill(await freshTotpCode(totpSecretFor(tenant.hosts[0]!, email)!, t.deps.clock));
        await follow(page, () => page.getByRole('button', { name: 'Continuer' }).click());
      }
      expect(new URL(page.url()).pathname, await page.locator('main').innerText()).not.toMatch(/^\/signin/);
    },
    async close() {
      for (const c of contexts) await c.close().catch(() => {});
      await closeBrowser(browser);
      await t.close();
      await database.close();
    },
  };
}

/** The page's path and query. */
export function pathOf(page: Page): string {
  const u = new URL(page.url());
  return u.pathname + u.search;
}

/** The main region's text, white space collapsed. */
export async function mainText(page: Page): Promise<string> {
  return (await page.locator('main').innerText()).replace(/\s+/g, ' ');
}

/** Checks the page in French, switches to English by its link, checks it there and runs `english`, then comes back to French. */
export async function bothLanguages(page: Page, label: string, english: (page: Page) => Promise<void> = async () => {}): Promise<void> {
  await checkA11y(page, `${label} (fr)`);
  assertNoPageProblems(page, label);
  expect(await follow(page, () => page.getByRole('link', { name: /English/ }).click())).toBeLessThan(400);
  expect(await page.locator('html').getAttribute('lang')).toBe('en');
  await checkA11y(page, `${label} (en)`);
  assertNoPageProblems(page, `${label} (en)`);
  await english(page);
  expect(await follow(page, () => page.getByRole('link', { name: /Français/ }).click())).toBeLessThan(400);
}
