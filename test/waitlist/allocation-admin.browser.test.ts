/**
 * The programme's coordinated allocation page in a real browser (Chromium,
 * axe-core, the page's CSP), in French and in English: an administrator
 * turns the rounds on, a round then runs and is listed with its counts, and
 * the change is in the audit log with its value before and after; sending no
 * choice is a 400 page naming the field; a parent reads "forbidden" (who
 * may read and change it: test/access/decide.test.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { runAllocation } from '../../src/records/allocation.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { today } from '../../src/waitlist/dates.ts';
import { createAdmin, createParent, type TestApp } from '../helpers/app.ts';
import { bothLanguages, mainText, startBrowserApp, type BrowserApp } from '../helpers/browser-app.ts';

let b: BrowserApp;
let t: TestApp;
let tenant: Tenant;
let base: string;

beforeAll(async () => {
  b = await startBrowserApp();
  ({ t, tenant, base } = b);
}, 120_000);

afterAll(async () => {
  await b?.close();
});

async function rulesNow(): Promise<Record<string, unknown>> {
  return inTenant(t.database.db, tenant.id, async (trx) => {
    const r = await trx.selectFrom('tenants').select('rules').where('id', '=', tenant.id).executeTakeFirstOrThrow();
    return (typeof r.rules === 'string' ? JSON.parse(r.rules) : r.rules) as Record<string, unknown>;
  });
}

describe('coordinated allocation settings page', () => {
  it('an administrator turns it on; the rounds are listed; bad input is a 400 page; others cannot change it', async () => {
    const adminEmail = `admin.${Date.now()}@exemple.test`;
    const adminId = await createAdmin(t, tenant, adminEmail);
    const before = await rulesNow();
    expect(before.coordinatedAllocation ?? false).toBe(false);

    const page = await b.page();
    await b.signIn(page, adminEmail, true);
    await b.visit(page, '/operator/allocation', 'allocation settings, off');
    expect(await page.locator('h1').innerText()).toBe('Répartition coordonnée du programme');
    expect(await mainText(page)).toContain('Hors service');
    expect(await mainText(page)).toContain('Aucune ronde n’a encore été enregistrée.');

    // The choice by keyboard, then saved.
    await page.getByLabel(/^En service.*les rondes peuvent être lancées$/).check();
    expect(await b.go(page, 'allocation settings, saved', () => page.getByRole('button', { name: 'Enregistrer' }).click())).toBe(200);
    expect(await mainText(page)).toContain('Le réglage est enregistré.');
    expect(await mainText(page)).toContain('En service');
    const after = await rulesNow();
    // One key changed, the rest of the rules as they were.
    expect(after).toEqual({ ...before, coordinatedAllocation: true });
    const events = await inTenant(t.database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select(['actor_account_id', 'details']).where('action', '=', 'allocation.settings.update').orderBy('seq').execute());
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ actor_account_id: adminId, details: expect.objectContaining({ before: false, after: true }) });

    // A round now runs, and is listed.
    t.deps.tenants.invalidate();
    const fresh = (await t.deps.tenants.bySlug(tenant.slug))!;
    const now = new Date();
    const run = await runAllocation(t.database.db, t.deps.keys, fresh, { dryRun: false, today: today(now), deadlineDays: 5, now, origin: { actorAccountId: null, actorRoles: ['system:test'], ip: null, userAgent: null, requestId: null } });
    await b.visit(page, '/operator/allocation', 'allocation settings with a round');
    expect(await mainText(page)).toContain(run.runId);
    await bothLanguages(page, 'allocation settings', async (p) => {
      expect(await p.locator('h1').innerText()).toBe('The programme’s coordinated allocation');
      expect(await mainText(p)).toContain('Last rounds');
    });

    // No choice sent: a 400 page naming the field, nothing changed.
    await page.locator('input[name="enabled"][value="off"]').evaluate((el) => ((el as HTMLInputElement).value = 'peut-être'));
    await page.locator('input[name="enabled"][value="peut-être"]').check();
    expect(await b.go(page, 'allocation settings, bad input', () => page.getByRole('button', { name: 'Enregistrer' }).click())).toBe(400);
    expect(await mainText(page)).toContain('Choisissez si la répartition coordonnée est en service ou non');
    expect((await rulesNow()).coordinatedAllocation).toBe(true);

    // A parent: forbidden.
    const parentEmail = `parent.${Date.now()}@exemple.test`;
    await createParent(t, tenant, parentEmail);
    const parentPage = await b.page();
    await b.signIn(parentPage, parentEmail);
    expect((await parentPage.goto(`${base}/operator/allocation`))?.status()).toBe(403);
  });
});
