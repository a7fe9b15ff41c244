/**
 * Stored and reflected XSS in a real browser (Debian's Chromium, the pages'
 * real CSP): payloads that would set a flag on window, print to the console
 * or open a dialog are typed where a person types — a child's names, a
 * service's name, a search, an e-mail address, a return address — and the
 * pages that show them are opened. The text is shown as text, no script runs
 * (no flag, no console message, no dialog), and no CSP violation is reported
 * (which would mean the markup went into the page and only the policy stopped
 * it). A script put into a page all the same is blocked, and reported to the
 * server. Every page passes axe-core.
 */
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { registry } from '../../src/web/metrics.ts';
import { createAdmin, createFacility, createParent, PASSWORD } from '../helpers/app.ts';
import { startBrowserApp, type BrowserApp } from '../helpers/browser-app.ts';
import { Client } from '../helpers/client.ts';
import { childForm } from '../helpers/world.ts';

const PAYLOADS = {
  script: `<script>window.__xss='script';console.log('XSS-RAN')</script>`,
  img: `"><img src=x onerror="window.__xss='img';console.log('XSS-RAN')">`,
  svg: `'><svg onload=alert('XSS-RAN')>`,
};

let b: BrowserApp;
let childId: string;
const n = Date.now().toString(36);
const emails = { parent: `parent.${n}@exemple.test`, admin: `admin.${n}@exemple.test` };
const started = Date.now();

beforeAll(async () => {
  b = await startBrowserApp();
  const facility = await createFacility(b.t, b.tenant, { name: 'CPE Les Mésanges' });
  await createParent(b.t, b.tenant, emails.parent);
  await createAdmin(b.t, b.tenant, emails.admin);
  // The payloads go in through the real forms, with their validation.
  const parent = new Client(b.t.app, b.tenant.hosts[0]!);
  await parent.signIn(emails.parent, PASSWORD);
  await parent.get('/children/new');
  // Children's names take letters only: the payloads are refused there (400), and shown back in the form as text.
  const refused = await parent.post('/children/new', childForm({ firstName: PAYLOADS.img.slice(0, 60), lastName: PAYLOADS.script }));
  expect(refused.status).toBe(400);
  const made = await parent.post('/children/new', childForm({ firstName: "Zoé-Ève", lastName: "O'Brien" }));
  expect(made.status).toBe(303);
  childId = /\/children\/([0-9a-f-]{36})/.exec(String(made.headers.location))![1]!;
  await parent.get(`/directory/${facility}`);
  await parent.post('/applications', { childId, facilityId: facility });
  const admin = new Client(b.t.app, b.tenant.hosts[0]!);
  await admin.signIn(emails.admin, PASSWORD);
  await admin.get('/admin/oidc/clients/new');
  // A service's name is free text: the payloads are saved as typed, and must come out as text.
  const client = await admin.post('/admin/oidc/clients', { name: `${PAYLOADS.img.slice(0, 70)}${PAYLOADS.svg}`, redirectUris: 'https://catalogue.exemple.test/callback', kind: 'confidential' });
  expect(client.status, client.body.slice(0, 300)).toBeLessThan(400);
}, 180_000);

afterAll(async () => {
  console.log(`[xss.browser] whole file in ${Date.now() - started} ms`);
  await b?.close();
});

/** Opens the page with console and dialog listeners; returns what ran. */
async function visitWatching(page: Page, path: string, label: string): Promise<string[]> {
  const ran: string[] = [];
  const onConsole = (m: { text(): string }) => {
    if (m.text().includes('XSS-RAN')) ran.push(`console: ${m.text()}`);
  };
  const onDialog = (d: { message(): string; dismiss(): Promise<void> }) => {
    ran.push(`dialog: ${d.message()}`);
    void d.dismiss();
  };
  page.on('console', onConsole);
  page.on('dialog', onDialog);
  try {
    await b.visit(page, path, label);
    const flag = await page.evaluate(() => (window as unknown as { __xss?: string }).__xss);
    if (flag) ran.push(`window.__xss = ${flag}`);
    const injected = await page.evaluate(() => document.querySelectorAll('img[src="x"], svg[onload], script:not([src^="/assets/"])').length);
    if (injected) ran.push(`${injected} injected element(s)`);
  } finally {
    page.off('console', onConsole);
    page.off('dialog', onDialog);
  }
  return ran;
}

describe('XSS in a real browser', () => {
  it('stored: a service named by the payloads, a child file, on the parent’s and the administrator’s pages — shown as text, nothing runs', async () => {
    const parent = await b.page();
    await b.signIn(parent, emails.parent);
    const ran: string[] = [];
    for (const path of ['/account', `/children/${childId}`, `/children/${childId}/edit`, '/account/privacy']) {
      ran.push(...(await visitWatching(parent, path, `parent ${path}`)).map((x) => `${path}: ${x}`));
    }
    const admin = await b.page();
    await b.signIn(admin, emails.admin, true);
    for (const path of ['/admin', '/admin/oidc/clients', `/admin/files/${childId}/history`]) {
      ran.push(...(await visitWatching(admin, path, `admin ${path}`)).map((x) => `${path}: ${x}`));
    }
    expect(ran).toEqual([]);
    // Guard: the payloads really are in the database, so that the pages above had them to show.
    const rows = await inTenant(b.database.db, b.tenant.id, (trx) => trx.selectFrom('oidc_clients').select('name').execute().catch(() => [] as { name: string }[]));
    expect(rows.some((r) => r.name.includes('<svg') && r.name.includes('<img'))).toBe(true);
    await admin.goto(`${b.base}/admin/oidc/clients`);
    expect(await admin.locator('main').innerText()).toContain('<svg onload=');
  }, 180_000);

  it('a script that does get into a page is blocked by the policy, and Chromium reports it to the server at once', async () => {
    const counted = async () => (await registry.getSingleMetric('guichet_csp_violations_total')!.get()).values.reduce((n, v) => n + v.value, 0);
    const page = await b.page();
    await page.goto(`${b.base}/directory`);
    const before = await counted();
    const report = page.waitForRequest((r) => r.url().endsWith('/csp-report') && r.method() === 'POST', { timeout: 15_000 });
    // What an injection that escaped the templates would do: a script element with inline code.
    await page.evaluate(() => {
      const s = document.createElement('script');
      s.textContent = "window.__xss = 'inline'";
      document.body.appendChild(s);
    });
    const sent = await report;
    expect((await sent.response())?.status()).toBe(204);
    expect(JSON.parse(sent.postData() ?? '{}')['csp-report']?.['effective-directive']).toBe('script-src-elem');
    expect(await page.evaluate(() => (window as unknown as { __xss?: string }).__xss)).toBeUndefined();
    expect(await counted()).toBe(before + 1);

    // The page's own style sheet and script carry this answer's nonce and load; a script element naming one of
    // Guichet's own files, as an injection could, has none and is refused like inline code (a 'self' source
    // would have let it run).
    expect(await page.evaluate(() => getComputedStyle(document.querySelector('.skip-link')!).position)).toBe('absolute');
    const ownFile = page.waitForRequest((r) => r.url().endsWith('/csp-report') && r.method() === 'POST', { timeout: 15_000 });
    await page.evaluate(() => {
      const s = document.createElement('script');
      s.src = '/assets/guichet.js?injected';
      document.body.appendChild(s);
    });
    const secondSent = await ownFile;
    expect((await secondSent.response())?.status()).toBe(204);
    const second = JSON.parse(secondSent.postData() ?? '{}')['csp-report'];
    expect(second?.['effective-directive']).toBe('script-src-elem');
    expect(String(second?.['blocked-uri'])).toContain('/assets/guichet.js');
    expect(await counted()).toBe(before + 2);
  }, 60_000);

  it('reflected: payloads in the query of the search, the sign-in return address and a refused form — shown as text, nothing runs', async () => {
    const page = await b.page();
    const ran: string[] = [];
    for (const path of [`/directory?q=${encodeURIComponent(PAYLOADS.script)}&municipality=${encodeURIComponent(PAYLOADS.img)}`, `/signin?return=${encodeURIComponent(PAYLOADS.img)}`, `/signin?return=${encodeURIComponent('javascript:alert("XSS-RAN")')}`]) {
      ran.push(...(await visitWatching(page, path, `reflected ${path.slice(0, 40)}`)).map((x) => `${path}: ${x}`));
    }
    // A form refused with the payload typed back into it.
    await page.goto(`${b.base}/signup`);
    await page.getByLabel('Adresse courriel').fill(PAYLOADS.img);
    await page.getByRole('main').getByRole('button').first().click();
    await page.waitForLoadState('load');
    const flag = await page.evaluate(() => (window as unknown as { __xss?: string }).__xss);
    if (flag) ran.push(`signup: window.__xss = ${flag}`);
    expect(ran).toEqual([]);
  }, 120_000);
});
