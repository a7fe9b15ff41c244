/**
 * The child-file console in a real browser (Debian's Chromium, the page's
 * real CSP, axe-core on every page in French and in English): an
 * administrator finds a deleted file by its NIREC, reads its history and
 * asks for it back; a second administrator, whose sign-in is more than five
 * minutes old, opens the request, confirms who they are, and approves. The
 * NIREC never appears in an address.
 */
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { inTenant } from '../../src/db/tenant.ts';
import * as records from '../../src/records/gateway.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createAdmin, createFacility, createParent, createStaff, ctxFor, PASSWORD, type TestApp } from '../helpers/app.ts';
import { assertNoPageProblems, checkA11y, follow, shot } from '../helpers/browser.ts';
import { bothLanguages, startBrowserApp, type BrowserApp } from '../helpers/browser-app.ts';
import type { TestDatabase } from '../helpers/db.ts';
import { enrolTotp, freshTotpCode, totpSecretFor } from '../helpers/factors.ts';
import { createAccount, grantRole } from './people.ts';

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

// Staff sign in with their authenticator code.
const signIn = (page: Page, email: string) => b.signIn(page, email, true);



describe('the child-file console', () => {
  it('find by NIREC → history → ask for a restore → a second administrator approves after confirming who they are; axe-clean in French and English', async () => {
    const n = Date.now().toString(36);
    const facility = await createFacility(t, tenant, { name: 'CPE Les Petits Explorateurs' });
    const parentEmail = `famille.${n}@exemple.test`;
    const parentId = await createParent(t, tenant, parentEmail);
    const parent: Actor = { accountId: parentId, tenantId: tenant.id, sessionId: null, email: parentEmail, emailVerified: true, locale: 'fr', memberships: [] };
    const t0 = today(new Date());
    const nirec = 'BRWQ7654321';
    const { id: childId } = await records.createChildFile(t.deps, ctxFor(t, tenant, parent), { firstName: 'Éloïse', lastName: 'Gagnon-Côté', birthDate: addMonths(t0, -8), nirec, desiredEntryDate: addMonths(t0, 3), daysOfCare: 21, inSubsidisedCare: false });
    await records.addApplication(t.deps, ctxFor(t, tenant, parent), childId, { facilityId: facility, siblingAttending: false, parentIsStaff: false });
    await records.deleteChildFile(t.deps, ctxFor(t, tenant, parent), childId);
    const reference = (await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('children').select('reference').where('id', '=', childId).executeTakeFirstOrThrow())).reference;
    const admin1 = `chef.${n}@exemple.test`;
    const admin1Id = await createAdmin(t, tenant, admin1);
    const staffId = await createStaff(t, tenant, `educ.${n}@exemple.test`, facility);
    const admin2 = `adjointe.${n}@exemple.test`;
    const admin2Id = await createAccount(t, tenant, admin2);
    await grantRole(t, tenant, admin2Id, 'tenant_admin', staffId, admin1Id);
    await enrolTotp(t.deps, tenant, admin2Id, admin2);

    /* ---- the first administrator: find, read, ask */
    const p1 = await b.page();
    await signIn(p1, admin1);
    expect(await follow(p1, () => p1.getByRole('navigation').getByRole('link', { name: 'Recherche de dossiers' }).click())).toBe(200);
    expect(await p1.locator('h1').innerText()).toBe('Retrouver un dossier par NIREC');
    await bothLanguages(p1, 'look-up form', async (p) => {
      expect(await p.locator('h1').innerText()).toBe('Find a file by NIREC');
    });
    await p1.getByLabel('NIREC de l’enfant').fill('brwq 765-4321');
    expect(await follow(p1, () => p1.getByRole('button', { name: 'Rechercher' }).click())).toBe(200);
    expect(p1.url()).toBe(`${base}/admin/files`);
    expect(await p1.getByRole('status').innerText()).toBe('Un dossier correspond à ce NIREC.');
    const row = await p1.locator('main table tbody tr').innerText();
    expect(row).toContain(reference);
    expect(row).toContain('Éloïse Gagnon-Côté');
    expect(row).toContain('••••••••321');
    expect(row).toContain('Supprimé');
    expect(await p1.content()).not.toContain(nirec);
    await checkA11y(p1, 'look-up results (fr)');
    assertNoPageProblems(p1, 'look-up results');
    await shot(p1, '10-console-lookup');

    expect(await follow(p1, () => p1.getByRole('link', { name: `Historique du dossier ${reference}` }).click())).toBe(200);
    expect(await p1.locator('h1').innerText()).toBe(`Historique du dossier ${reference}`);
    const versions = await p1.locator('main table tbody tr').allInnerTexts();
    expect(versions).toHaveLength(2);
    expect(versions[0]).toContain('Création');
    expect(versions[1]).toContain('Suppression');
    expect(versions[1]).toContain('La famille');
    await bothLanguages(p1, 'history', async (p) => {
      expect(await p.locator('h1').innerText()).toBe(`History of file ${reference}`);
      expect(await p.locator('main table tbody tr').last().innerText()).toContain('The family');
    });
    await shot(p1, '11-console-history');
    expect(await follow(p1, () => p1.getByRole('button', { name: `Demander le rétablissement du dossier ${reference}` }).click())).toBe(200);
    expect(await p1.getByRole('status').innerText()).toContain('La demande de rétablissement est enregistrée.');
    await checkA11y(p1, 'history after asking (fr)');
    // The one who asked sees the request, but no button to decide it.
    await follow(p1, () => p1.goto(`${base}/admin/restores`));
    await follow(p1, () => p1.getByRole('link', { name: `Examiner la demande pour le dossier ${reference}` }).click());
    expect(await p1.getByRole('status').innerText()).toContain('Vous avez fait cette demande');
    expect(await p1.getByRole('button', { name: 'Approuver le rétablissement' }).count()).toBe(0);
    await checkA11y(p1, 'own request (fr)');

    /* ---- the second administrator: review, confirm who they are, approve */
    const p2 = await b.page();
    await signIn(p2, admin2);
    expect(await follow(p2, () => p2.getByRole('navigation').getByRole('link', { name: 'Administration' }).click())).toBe(200);
    expect(await follow(p2, () => p2.getByRole('link', { name: 'Demandes de rétablissement' }).click())).toBe(200);
    expect(await p2.locator('main table tbody tr').innerText()).toContain(admin1);
    await bothLanguages(p2, 'restore requests', async (p) => {
      expect(await p.locator('h1').innerText()).toBe('Restore requests');
    });
    expect(await follow(p2, () => p2.getByRole('link', { name: `Examiner la demande pour le dossier ${reference}` }).click())).toBe(200);
    expect(await p2.locator('h1').innerText()).toBe(`Rétablir le dossier ${reference}\u202f?`);
    await bothLanguages(p2, 'restore review', async (p) => {
      expect(await p.locator('h1').innerText()).toBe(`Restore file ${reference}?`);
      expect(await p.getByRole('button', { name: 'Approve the restore' }).count()).toBe(1);
    });
    await shot(p2, '12-console-restore-review');

    // Six minutes on, the sign-in is too old to approve: confirm who you are, then back to the request.
    t.setNow(new Date(Date.now() + 6 * 60_000));
    expect(await follow(p2, () => p2.getByRole('button', { name: 'Approuver le rétablissement' }).click())).toBe(200);
    expect(new URL(p2.url()).pathname).toBe('/reauth');
    await bothLanguages(p2, 're-authentication before approving', async (p) => {
      expect(await p.locator('h1').innerText()).toBe('Confirm it is you');
    });
    expect(await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('children').select('deleted_at').where('id', '=', childId).executeTakeFirstOrThrow())).not.toMatchObject({ deleted_at: null });
    await p2.getByLabel('Mot de passe').fill(PASSWORD);
    await p2.getByLabel('Code à 6 chiffres').fill(await freshTotpCode(totpSecretFor(tenant.hosts[0]!, admin2)!, t.deps.clock));
    expect(await follow(p2, () => p2.getByRole('main').getByRole('button', { name: 'Confirmer' }).click())).toBe(200);
    expect(new URL(p2.url()).pathname).toMatch(/^\/admin\/restores\/[0-9a-f-]{36}$/);
    expect(await follow(p2, () => p2.getByRole('button', { name: 'Approuver le rétablissement' }).click())).toBe(200);
    expect(new URL(p2.url()).pathname).toBe('/admin/restores');
    expect(await p2.getByRole('status').innerText()).toBe('Le dossier est rétabli.');
    expect(await p2.locator('main').innerText()).toContain('Aucune demande en attente.');
    await bothLanguages(p2, 'after approving', async (p) => {
      expect(await p.getByRole('status').innerText()).toBe('The file is restored.');
    });
    assertNoPageProblems(p2, 'after approving');

    const child = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('children').select('deleted_at').where('id', '=', childId).executeTakeFirstOrThrow());
    expect(child.deleted_at).toBeNull();
    const decided = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('child_file_restore_requests').select(['requested_by', 'decided_by', 'decision']).where('child_id', '=', childId).execute());
    expect(decided).toEqual([{ requested_by: admin1Id, decided_by: admin2Id, decision: 'approved' }]);
    t.setNow(new Date());
  }, 120_000);
});
