/**
 * Editing a relying party in a real browser (Chromium, axe-core, the page's
 * CSP): the service's page and its edit form in French and English; an edit
 * that widens the service to personal claims waits for a second
 * administrator, who approves it from the same page; the secret is replaced
 * and shown once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { createAdmin, createParent } from '../helpers/app.ts';
import { bothLanguages, mainText, startBrowserApp, type BrowserApp } from '../helpers/browser-app.ts';
import { enrolTotp } from '../helpers/factors.ts';
import { grantRole } from '../records/people.ts';
import { insertActiveClient } from './helpers.ts';

let b: BrowserApp;

beforeAll(async () => {
  b = await startBrowserApp();
}, 120_000);

afterAll(async () => {
  await b?.close();
});

describe('editing a service in the console', () => {
  it('the service page, its edit form, a widening approved by a second administrator, a new secret: axe-clean, in French and English', async () => {
    const { t, tenant, base } = b;
    const a1 = 'admin.edition@exemple.test';
    const a2 = 'admin.approbation@exemple.test';
    const a1Id = await createAdmin(t, tenant, a1);
    const requester = await createParent(t, tenant, 'demandeur.edition@exemple.test');
    const a2Id = await createParent(t, tenant, a2);
    await grantRole(t, tenant, a2Id, 'tenant_admin', requester, a1Id);
    // An administrator acts with a second factor.
    await enrolTotp(t.deps, tenant, a2Id, a2);
    const rp = await insertActiveClient(t, tenant, { scopes: ['openid'], name: 'Portail municipal', requestedBy: a1Id, approvedBy: a2Id });

    const page = await b.page();
    await b.signIn(page, a1, true);
    await b.visit(page, `/admin/oidc/clients/${rp.clientId}`, 'service page');
    await bothLanguages(page, 'service page', async (p) => {
      expect(await p.getByRole('link', { name: 'Edit the service' }).count(), await mainText(p)).toBe(1);
    });
    await b.visit(page, `/admin/oidc/clients/${rp.clientId}`, 'service page');
    expect(await b.go(page, 'edit form', () => page.getByRole('link', { name: 'Modifier le service' }).click())).toBe(200);
    await bothLanguages(page, 'edit form', async (p) => {
      expect(await p.locator('h1').innerText()).toBe('Edit the service “Portail municipal”');
    });
    await b.visit(page, `/admin/oidc/clients/${rp.clientId}/edit`, 'edit form');
    await page.getByLabel('Nom du service').fill('Portail citoyen');
    await page.getByRole('checkbox', { name: /courriel/i }).check();
    expect(await b.go(page, 'service page, scopes waiting', () => page.getByRole('button', { name: 'Enregistrer les modifications' }).click())).toBe(200);
    expect(await mainText(page)).toContain('les nouvelles portées ou adresses de retour attendent l’approbation d’un deuxième administrateur');
    expect(await mainText(page)).toContain('Vous avez demandé ces portées');

    // The new secret: shown once, on a page that is not kept.
    expect(await b.go(page, 'new secret', () => page.getByRole('button', { name: 'Remplacer le secret' }).click())).toBe(200);
    expect(await page.locator('h1').innerText()).toBe('Nouveau secret du service');
    expect(await page.locator('main code').nth(1).innerText()).toMatch(/^[A-Za-z0-9_-]{43}$/);

    // The second administrator approves the new scopes.
    const other = await b.page();
    await b.signIn(other, a2, true);
    await b.visit(other, `/admin/oidc/clients/${rp.clientId}`, 'service page, for the approver');
    expect(await b.go(other, 'clients after approval', () => other.getByRole('button', { name: 'Approuver les nouvelles portées' }).click())).toBe(200);
    const row = await inTenant(b.database.db, tenant.id, (trx) => trx.selectFrom('oidc_clients').selectAll().where('client_id', '=', rp.clientId).executeTakeFirstOrThrow());
    expect(row).toMatchObject({ name: 'Portail citoyen', scopes: ['openid', 'email'], pending_scopes: null, personal: true });
  });
});
