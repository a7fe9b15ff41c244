/**
 * Dual control in a real browser (Debian's Chromium, its virtual
 * authenticator for the passkeys — not a mock): a staff member asks for the
 * administrator role for herself, the first administrator endorses it and
 * the second approves it, each with a passkey;
 * the new administrator, whose passkey was added before her role and so
 * must first be vouched for by a link e-mailed to her, her role still in its
 * cooling-off hour, breaks the glass and approves the reset of a colleague's lost second factor that the
 * first one asked for. Each side signs its step with a
 * passkey. An administrator's first passkey takes the link e-mailed to her,
 * delivered over SMTP to a real server on loopback and followed in her own
 * browser (another browser is refused). axe-core checks every page on the
 * way (0 violations), in French and in English.
 */
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { MailSender } from '../../src/mail/sender.ts';
import { enrolledFactors, hasSecondFactor } from '../../src/identity/factors/store.ts';
import type { Tenant } from '../../src/tenants/service.ts';
import { createAdmins, createFacility, createStaff, PASSWORD, type TestApp } from '../helpers/app.ts';
import { mainText, pathOf as path, startBrowserApp, type BrowserApp } from '../helpers/browser-app.ts';
import type { TestDatabase } from '../helpers/db.ts';
import { freshTotpCode, PASSKEY_LINK, totpSecretFor } from '../helpers/factors.ts';
import { decodedBody, Inbox } from '../helpers/inbox.ts';

let b: BrowserApp;
let database: TestDatabase;
let t: TestApp;
let tenant: Tenant;
let inbox: Inbox;
let sender: MailSender;

beforeAll(async () => {
  b = await startBrowserApp({ name_fr: 'Ville de Longueuil', name_en: 'City of Longueuil' });
  ({ database, t, tenant } = b);
  inbox = new Inbox();
  sender = new MailSender(t.deps, `smtp://127.0.0.1:${await inbox.start()}?ignoreTLS=true`);
}, 120_000);

afterAll(async () => {
  await sender?.stop();
  await inbox?.stop();
  await b?.close();
});

/** Delivers the outbox over SMTP, and gives the path of the passkey link in the latest message to `to` (the host in it is the app's configured one). */
async function mailedPasskeyLink(to: string): Promise<string> {
  await sender.tick([tenant.id]);
  const links = inbox.received.filter((m) => m.to.includes(to)).map((m) => PASSKEY_LINK.exec(decodedBody(m.raw))?.[0]);
  const link = links.filter((l) => l !== undefined).at(-1);
  if (!link) throw new Error(`no passkey link delivered to ${to}`);
  return link;
}

/** A page of its own, with Chromium's virtual platform authenticator (user verification on). */
async function personalBrowser(): Promise<Page> {
  const page = await b.page();
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true },
  });
  return page;
}

const visit = (page: Page, p: string, label: string, status = 200) => b.visit(page, p, label, status);
const go = (page: Page, label: string, action: () => Promise<unknown>) => b.go(page, label, action);

/**
 * A step that needs a passkey used within five minutes: when the machine is
 * slow enough for the sign-in to have aged, the server asks again, the
 * passkey answers, and the step is taken again from its page.
 */
async function signed(page: Page, label: string, action: () => Promise<unknown>): Promise<void> {
  await go(page, label, action);
  if (new URL(page.url()).pathname === '/reauth') {
    await go(page, `${label}: passkey again`, () => page.getByRole('button', { name: 'Utiliser une clé d’accès' }).click());
    await go(page, `${label}: again`, action);
  }
}



/**
 * Password and app code, then a passkey added to the account (the session
 * then counts it). An administrator's first passkey takes the link e-mailed
 * to her, followed in this browser; `elsewhere`, a browser of someone else,
 * tries it first and is refused.
 */
async function signInAndAddPasskey(page: Page, email: string, label: string, privileged: { elsewhere?: Page } | false = false): Promise<void> {
  await visit(page, '/signin', `${label}: sign-in page`);
  await page.getByLabel('Adresse courriel').fill(email);
  await page.getByLabel('Mot de passe').fill(PASSWORD);
  await go(page, `${label}: after the password`, () => page.getByRole('main').getByRole('button', { name: 'Se connecter', exact: true }).click());
  // The helper hands out the step before the current one first: skip it, so that a slow browser still sends a valid code.
  const secret = totpSecretFor(tenant.hosts[0]!, email)!;
  await freshTotpCode(secret, t.deps.clock);
  await page.getByLabel('Code à 6 chiffres').fill(await freshTotpCode(secret, t.deps.clock));
  await go(page, `${label}: second step`, () => page.getByRole('button', { name: 'Continuer' }).click());
  expect(new URL(page.url()).pathname, `${label}: signed in`).not.toMatch(/^\/signin/);
  await visit(page, '/account/security', `${label}: account security`);
  if (privileged) {
    expect(await page.getByRole('button', { name: 'Ajouter une clé d’accès', exact: true }).count(), `${label}: no passkey form before the link`).toBe(0);
    await go(page, `${label}: link asked for`, () => page.getByRole('button', { name: 'Recevoir un lien pour ajouter une clé d’accès' }).click());
    expect(await mainText(page)).toContain('Nous vous avons envoyé un lien par courriel.');
    const link = await mailedPasskeyLink(email);
    if (privileged.elsewhere) {
      await visit(privileged.elsewhere, link, `${label}: link opened in another browser, refused`, 403);
      expect(await mainText(privileged.elsewhere)).toContain('Ce lien ne fonctionne que dans le navigateur et la session où il a été demandé');
    }
    await visit(page, link, `${label}: link followed`);
    expect(path(page)).toBe('/account/security?status=mailboxProven');
    expect(await mainText(page)).toContain('Votre adresse courriel est confirmée.');
  }
  await expect.poll(() => page.getByRole('button', { name: 'Ajouter une clé d’accès' }).isVisible()).toBe(true);
  await go(page, `${label}: passkey added`, () => page.getByRole('button', { name: 'Ajouter une clé d’accès' }).click());
  if (await page.getByRole('link', { name: 'J’ai conservé mes codes' }).count()) {
    await go(page, `${label}: codes kept`, () => page.getByRole('link', { name: 'J’ai conservé mes codes' }).click());
  }
  expect(await mainText(page)).toContain('La clé d’accès a été ajoutée.');
}

describe('dual control, in Chromium with passkeys', () => {
  it('a third administrator by request, endorsement and approval, then a lost second factor reset by two of them', async () => {
    const facility = await createFacility(t, tenant, { name: 'CPE Les Explorateurs' });
    const first = 'direction.generale@exemple.test';
    const second = 'coordonnatrice@exemple.test';
    const colleague = 'educatrice.sans.telephone@exemple.test';
    const deputy = 'direction.adjointe@exemple.test';
    const [adminId] = await createAdmins(t, tenant, [first, deputy]);
    await createStaff(t, tenant, second, facility);
    const colleagueId = await createStaff(t, tenant, colleague, facility, adminId);

    const a = await personalBrowser();
    const b = await personalBrowser();
    await signInAndAddPasskey(a, first, 'first administrator', { elsewhere: b });
    await signInAndAddPasskey(b, second, 'coordinator');

    // the coordinator asks for the administrator role for herself
    await visit(b, '/grants/new', 'privileged role request form');
    await b.getByLabel('Rôle').selectOption('tenant_admin');
    await b.getByLabel('Raison').fill('Remplacement de la direction pendant les vacances');
    await signed(b, 'role requested', () => b.getByRole('button', { name: 'Envoyer la demande' }).click());
    expect(await mainText(b)).toContain('La demande est envoyée.');

    expect(await mainText(b)).toContain('Deux personnes de l’administration doivent l’approuver');

    // the coordinator asked for herself: the first administrator's approval only endorses the request
    await visit(a, '/admin/grants', 'privileged roles, one pending');
    await go(a, 'request review', () => a.getByRole('link', { name: `Examiner la demande pour ${second}` }).click());
    expect(await mainText(a)).toContain('Remplacement de la direction pendant les vacances');
    expect(await mainText(a)).toContain('deux personnes de l’administration doivent l’approuver');
    await signed(a, 'request endorsed', () => a.getByRole('button', { name: 'Appuyer la demande' }).click());
    expect(await mainText(a)).toContain('Vous avez appuyé la demande');
    await go(a, 'endorsed request review', () => a.getByRole('link', { name: `Examiner la demande pour ${second}` }).click());
    expect(await mainText(a)).toContain('Vous avez appuyé cette demande');
    expect(await a.getByRole('button', { name: 'Approuver' }).count()).toBe(0);

    // the second administrator approves it
    const d = await personalBrowser();
    await signInAndAddPasskey(d, deputy, 'second administrator', {});
    await visit(d, '/admin/grants', 'privileged roles, one endorsed');
    await go(d, 'endorsed request, second review', () => d.getByRole('link', { name: `Examiner la demande pour ${second}` }).click());
    expect(await mainText(d)).toContain(first);
    await signed(d, 'role approved', () => d.getByRole('button', { name: 'Approuver' }).click());
    expect(await mainText(d)).toContain('La demande est approuvée');

    // her roles changed, so her session ended: she signs in again with her passkey alone
    await visit(b, '/signin', 'coordinator signed out by the role change');
    await go(b, 'coordinator signs in with her passkey', () => b.getByRole('button', { name: 'Utiliser une clé d’accès' }).click());

    // the first administrator asks for the colleague's lost factors to be reset
    await visit(a, '/admin', 'administration');
    await go(a, 'factor resets, none yet', () => a.getByRole('link', { name: 'Réinitialiser la deuxième étape' }).click());
    await go(a, 'reset request form', () => a.getByRole('link', { name: 'Demander une réinitialisation' }).click());
    await a.getByLabel('Adresse courriel de la personne').fill(colleague);
    await go(a, 'reset request without a reason', () => a.getByRole('button', { name: 'Envoyer la demande' }).click());
    expect(await mainText(a)).toContain('Expliquez comment vous avez vérifié l’identité de la personne');
    await a.getByLabel('Vérification de l’identité').fill('Rappel au numéro du dossier du personnel, questions de vérification');
    await signed(a, 'reset requested', () => a.getByRole('button', { name: 'Envoyer la demande' }).click());
    expect(path(a)).toBe('/admin/factor-resets?requested=1');
    await go(a, 'own request: cannot decide it', () => a.getByRole('link', { name: `Examiner la demande pour ${colleague}` }).click());
    expect(await mainText(a)).toContain('une autre personne de l’administration doit la traiter');
    expect(await a.getByRole('button', { name: 'Approuver' }).count()).toBe(0);
    expect(hasSecondFactor(await inTenant(database.db, tenant.id, (trx) => enrolledFactors(trx, colleagueId)))).toBe(true);

    // the new administrator's role is still cooling off: she breaks the glass, giving the reason
    await visit(b, '/admin/factor-resets', 'cooling-off refusal', 403);
    expect(await mainText(b)).toContain('Votre rôle vient d’être accordé');
    await go(b, 'break-glass page', () => b.getByRole('link', { name: 'Briser la glace (urgence)' }).click());
    await b.getByLabel('Raison de l’urgence').fill('Éducatrice sans accès, ouverture du service demain matin');
    // her passkey was added before the role: it does not count for a privileged action until her mailbox vouches for it
    await go(b, 'glass: passkey not vouched for', () => b.getByRole('button', { name: 'Briser la glace pour 30 minutes' }).click());
    const glassPage = `/break-glass?return=${encodeURIComponent('/admin/factor-resets')}`;
    expect(path(b)).toBe(`/reauth?return=${encodeURIComponent(glassPage)}&level=passkey`);
    expect(await mainText(b)).toContain('elle ne compte pas encore pour les actions privilégiées');
    expect(await b.getByRole('button', { name: 'Utiliser une clé d’accès' }).count()).toBe(0);
    await go(b, 'confirmation link asked for', () => b.getByRole('button', { name: 'Recevoir un lien pour confirmer ma clé d’accès' }).click());
    expect(await mainText(b)).toContain('Nous vous avons envoyé un lien par courriel.');
    await visit(b, await mailedPasskeyLink(second), 'confirmation link followed');
    expect(path(b)).toBe(`/reauth?return=${encodeURIComponent(glassPage)}&level=passkey&link=proven`);
    expect(await mainText(b)).toContain('Votre adresse courriel est confirmée. Utilisez maintenant votre clé d’accès');
    await go(b, 'passkey vouched for', () => b.getByRole('button', { name: 'Utiliser une clé d’accès' }).click());
    expect(path(b)).toBe(glassPage);
    await b.getByLabel('Raison de l’urgence').fill('Éducatrice sans accès, ouverture du service demain matin');
    await signed(b, 'glass broken', () => b.getByRole('button', { name: 'Briser la glace pour 30 minutes' }).click());
    expect(path(b)).toBe('/admin/factor-resets');

    // and approves it, in English
    await visit(b, '/admin/factor-resets?lang=en', 'factor resets in English');
    await go(b, 'reset review in English', () => b.getByRole('link', { name: `Review the request for ${colleague}` }).click());
    expect(await mainText(b)).toContain('will be removed and all their sessions will end');
    await signed(b, 'reset approved', () => b.getByRole('button', { name: 'Approve' }).click());
    expect(await mainText(b)).toContain('The request is approved');
    expect(hasSecondFactor(await inTenant(database.db, tenant.id, (trx) => enrolledFactors(trx, colleagueId)))).toBe(false);

    const events = await inTenant(database.db, tenant.id, (trx) =>
      trx.selectFrom('audit_events').select(['action', 'outcome']).where('action', 'in', ['identity.grant.request', 'identity.grant.endorse', 'identity.grant.approve', 'identity.factorReset.request', 'identity.factorReset.approve']).orderBy('seq').execute(),
    );
    expect(events.filter((e) => e.outcome === 'success').map((e) => e.action)).toEqual(['identity.grant.request', 'identity.grant.endorse', 'identity.grant.approve', 'identity.factorReset.request', 'identity.factorReset.approve']);
    const glass = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('audit_events').select('actor_roles').where('action', '=', 'identity.factorReset.approve').where('outcome', '=', 'success').executeTakeFirstOrThrow());
    expect(glass.actor_roles.some((r) => r.startsWith('break_glass:'))).toBe(true);
  });
});
