/**
 * Names that imitate other names: a child's file whose name reads like
 * another's but is another string (a Cyrillic letter among Latin ones, full
 * width letters, an invisible character, stacked accents) is refused with a
 * clear message in the reader's language, and nothing is written; real names
 * of every alphabet still pass.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { ValidationError } from '../../src/errors.ts';
import { validateClient } from '../../src/oidc/clients.ts';
import { lookAlike } from '../../src/web/look-alikes.ts';
import { addMonths, today } from '../../src/waitlist/dates.ts';
import { createParent, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';

describe('lookAlike', () => {
  it('passes real names of every alphabet', () => {
    for (const name of ['Marie', 'Zoé', 'Zoe\u0301', 'Jean-François', 'O’Brien', "D'Amours", 'Nguyễn', 'Łukasz', 'Øyvind', 'Ærin', 'Hélène Tremblay-Gagnon', 'Мария', 'Ἀλέξανδρος', 'محمد', '山田 はなこ', '김민준', 'ᐊᓂᕐᓂᖅ']) {
      expect(lookAlike(name), name).toBeNull();
    }
  });

  it('names each trick', () => {
    expect(lookAlike('Маrie')).toBe('mixedScripts'); // Cyrillic М
    expect(lookAlike('раураl')).toBe('mixedScripts');
    expect(lookAlike('Jean-Frаnçois')).toBe('mixedScripts'); // Cyrillic а in the second word
    expect(lookAlike('Αlice')).toBe('mixedScripts'); // Greek Alpha
    expect(lookAlike('ＡＤＭＩＮ')).toBe('compatibility');
    expect(lookAlike('Ｍarie')).toBe('compatibility');
    expect(lookAlike('ﬁona')).toBe('compatibility');
    expect(lookAlike('𝐌arie')).toBe('compatibility');
    expect(lookAlike('Ma\u200brie')).toBe('invisible');
    expect(lookAlike('Ma\u200drie')).toBe('invisible');
    expect(lookAlike('Ma\u00adrie')).toBe('invisible');
    expect(lookAlike('\ufeffMarie')).toBe('invisible');
    expect(lookAlike('Mari\u0065\u0301\u0301\u0301\u0301')).toBe('stackedMarks');
  });
});

describe('a relying service named like another', () => {
  it('is refused: its name is what a person reads on the consent page', () => {
    const client = { redirectUris: ['https://biblio.exemple.test/cb'], postLogoutRedirectUris: [], scopes: ['openid'], logoUri: null, backchannelLogoutUri: null };
    expect(() => validateClient({ ...client, name: 'Bibliothèque de Longueuil' }, true)).not.toThrow();
    try {
      validateClient({ ...client, name: 'Bibliothèque de Lоngueuil' }, true); // Cyrillic о
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ValidationError);
      expect((err as ValidationError).fields).toEqual({ name: 'nameLookAlike' });
    }
  });
});

describe('a child named like another', () => {
  let database: TestDatabase;
  let t: TestApp;
  beforeAll(async () => {
    database = await createTestDatabase();
    t = await startTestApp(database);
  });
  afterAll(async () => {
    await t?.close();
    await database?.close();
  });

  it('is refused in French and in English, and nothing is written', async () => {
    const tenant = await tenantFor(t);
    const email = `sosie.${Date.now()}@exemple.test`;
    const parent = await createParent(t, tenant, email);
    const c = new Client(t.app, tenant.hosts[0]!);
    expect((await c.signIn(email, PASSWORD)).status).toBe(303);
    const T0 = today(t.deps.clock());
    const good = { lastName: 'Tremblay', birthDate: addMonths(T0, -14), nirec: 'TREM24041512', desiredEntryDate: addMonths(T0, 2), day_mon: 'on' };
    await c.get('/children/new');
    for (const [firstName, lang, says] of [
      ['Маrie', 'fr', 'mêle des alphabets'],
      ['Ma\u200brie', 'fr', 'mêle des alphabets'],
      ['Ｍarie', 'en', 'mixes alphabets'],
    ] as const) {
      if (lang === 'en') await c.get('/children/new?lang=en');
      const r = await c.post('/children/new', { ...good, firstName });
      expect(r.status, firstName).toBe(400);
      expect(textOf(r.body)).toContain(says);
    }
    const count = async () =>
      inTenant(database.db, tenant.id, (trx) => trx.selectFrom('children').innerJoin('families', 'families.id', 'children.family_id').select((eb) => eb.fn.countAll<string>().as('n')).where('families.account_id', '=', parent).executeTakeFirstOrThrow());
    expect(Number((await count()).n)).toBe(0);
    // The same file with the Latin letter goes through.
    const ok = await c.post('/children/new', { ...good, firstName: 'Marie' });
    expect(ok.status).toBe(303);
    expect(Number((await count()).n)).toBe(1);
  });
});
