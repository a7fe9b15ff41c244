/**
 * The two catalogues at run time: the same keys all the way down, no empty
 * string, French typography (a narrow no-break space or a no-break space,
 * never a plain space, before : ; ! ? and inside « »), none of it in English.
 * Then the pages anyone can reach signed out: the same elements (ids, form
 * fields) in both languages, <html lang> matching, and no sentence of the
 * other language left behind.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PRIVACY_PURPOSE_FIELDS } from '../../src/privacy/purposes.ts';
import { PURPOSE_FIELDS } from '../../src/records/views.ts';
import { en } from '../../src/web/i18n/en.ts';
import { fr } from '../../src/web/i18n/fr.ts';
import { createFacility, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';

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

/* ------------------------------------------------------------ catalogues */

/** Every .ts and .tsx file under `dir`. */
function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? sources(join(dir, d.name)) : /\.tsx?$/.test(d.name) ? [join(dir, d.name)] : []));
}

describe('the purposes a family reads in « Qui a consulté le dossier »', () => {
  it('every purpose an audit event can carry has words in both languages, not its code', () => {
    const used = new Set<string>([...Object.keys(PURPOSE_FIELDS), ...Object.keys(PRIVACY_PURPOSE_FIELDS)]);
    const systemRoles = new Set<string>();
    for (const f of sources('src')) {
      const text = readFileSync(f, 'utf8');
      // Every quoted purpose on a line that sets one, a choice between two included.
      for (const line of text.split('\n').filter((l) => /purpose: /.test(l))) for (const m of line.slice(line.indexOf('purpose: ')).matchAll(/'([a-z][a-zA-Z]*(?:\.[a-zA-Z]+)+)'/g)) used.add(m[1]!);
      for (const m of text.matchAll(/'(system:[a-z-]+)'/g)) systemRoles.add(m[1]!);
    }
    // Not audit purposes (a WebAuthn challenge's, a key's), or events about staff accounts that name no family.
    const notFamilies = (p: string) => ['register', 'authenticate', 'kek'].includes(p) || /^admin\.(staff|invitations|grants|factorResets)\./.test(p);
    const missing = (labels: Record<string, string>) => [...used].filter((p) => !notFamilies(p) && !Object.hasOwn(labels, p)).sort();
    expect(missing(fr.privacyPages.purposes as Record<string, string>)).toEqual([]);
    expect(missing(en.privacyPages.purposes as Record<string, string>)).toEqual([]);
    expect(used.size).toBeGreaterThan(30);
    // And whoever did it, when Guichet did it itself: its jobs by name.
    for (const roles of [fr.privacyPages.roles, en.privacyPages.roles] as Record<string, string>[]) expect([...systemRoles].filter((r) => !Object.hasOwn(roles, r)).sort()).toEqual([]);
  });
});

type Tree = unknown;

/** Differences of shape between two catalogues, as paths. */
function shapeDiff(a: Tree, b: Tree, path = '$'): string[] {
  if (typeof a !== typeof b) return [`${path}: ${typeof a} in fr, ${typeof b} in en`];
  if (typeof a === 'function') return a.length === (b as (...x: unknown[]) => unknown).length ? [] : [`${path}: takes ${a.length} arguments in fr, ${(b as () => unknown).length} in en`];
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b)) return [`${path}: an array in one language only`];
    if (a.length !== b.length) return [`${path}: ${a.length} items in fr, ${b.length} in en`];
    return a.flatMap((x, i) => shapeDiff(x, b[i], `${path}[${i}]`));
  }
  if (a && typeof a === 'object') {
    const ka = Object.keys(a).sort();
    const kb = Object.keys(b as object).sort();
    const out = [...ka.filter((k) => !kb.includes(k)).map((k) => `${path}.${k}: missing in en`), ...kb.filter((k) => !ka.includes(k)).map((k) => `${path}.${k}: missing in fr`)];
    for (const k of ka.filter((k) => kb.includes(k))) out.push(...shapeDiff((a as Record<string, Tree>)[k], (b as Record<string, Tree>)[k], `${path}.${k}`));
    return out;
  }
  return [];
}

/** Sample arguments for the catalogue's functions: numbers read well both as counts and as names or links. */
const SAMPLE_ARGS = [[0], [1], [2], [1234], [3, 7], [1, 1]];

/** Every string a catalogue can produce, with where it comes from (functions called with sample arguments). */
function strings(tree: Tree, path = '$'): [string, string][] {
  if (typeof tree === 'string') return [[path, tree]];
  if (typeof tree === 'function') {
    return SAMPLE_ARGS.filter((args) => args.length >= tree.length).flatMap((args) => strings((tree as (...x: unknown[]) => unknown)(...args), `${path}(${args.join(', ')})`));
  }
  if (Array.isArray(tree)) return tree.flatMap((x, i) => strings(x, `${path}[${i}]`));
  if (tree && typeof tree === 'object') return Object.entries(tree).flatMap(([k, v]) => strings(v, `${path}.${k}`));
  return [];
}

const NNBSP = '\u202f';
const NBSP = '\u00a0';

/** French: before : ; ! ? and inside « », a (narrow) no-break space and never a plain one. */
function frenchTypography(s: string): string[] {
  const out: string[] = [];
  for (const m of s.matchAll(/[:;!?]/g)) {
    const i = m.index;
    const before = s[i - 1];
    // a URL's scheme (https://) and a clock time (14:30) are not punctuation
    if (m[0] === ':' && s.slice(i, i + 3) === '://') continue;
    if (m[0] === ':' && /\d/.test(before ?? '') && /\d/.test(s[i + 1] ?? '')) continue;
    if (before !== NNBSP && before !== NBSP) out.push(`“${m[0]}” after ${before === undefined ? 'nothing' : before === ' ' ? 'a plain space' : JSON.stringify(before)} in “…${s.slice(Math.max(0, i - 20), i + 1)}”`);
    else if (s[i - 2] === ' ') out.push(`a plain space and a no-break space before “${m[0]}” in “…${s.slice(Math.max(0, i - 20), i + 1)}”`);
  }
  for (const m of s.matchAll(/«(.)/g)) if (m[1] !== NNBSP && m[1] !== NBSP) out.push(`“«” followed by ${JSON.stringify(m[1])}`);
  for (const m of s.matchAll(/(.)»/g)) if (m[1] !== NNBSP && m[1] !== NBSP) out.push(`“»” preceded by ${JSON.stringify(m[1])}`);
  return out;
}

/** English: no space of any kind before : ; ! ?, and no guillemets. */
function englishTypography(s: string): string[] {
  const out: string[] = [];
  for (const m of s.matchAll(/([\s\u00a0\u202f\u2009])([:;!?])/g)) out.push(`${JSON.stringify(m[1])} before “${m[2]}” in “…${s.slice(Math.max(0, m.index - 20), m.index + 2)}”`);
  if (/[«»]/.test(s)) out.push(`guillemets in “${s.slice(0, 60)}”`);
  return out;
}

describe('the catalogues', () => {
  it('fr and en have the same keys, all the way down (functions with the same arity, lists of the same length)', () => {
    expect(shapeDiff(fr, en)).toEqual([]);
  });

  it('have no empty string, and every function returns a non-empty string', () => {
    for (const [name, cat] of [['fr', fr], ['en', en]] as const) {
      const all = strings(cat);
      expect(all.length, name).toBeGreaterThan(200);
      expect(all.filter(([, s]) => s.trim() === '').map(([p]) => `${name} ${p}`)).toEqual([]);
    }
  });

  it('French uses a (narrow) no-break space, never a plain space, before : ; ! ? and inside « »', () => {
    const problems = strings(fr).flatMap(([path, s]) => frenchTypography(s).map((p) => `${path}: ${p}`));
    expect(problems).toEqual([]);
  });

  it('English has none of the French spacing', () => {
    const problems = strings(en).flatMap(([path, s]) => englishTypography(s).map((p) => `${path}: ${p}`));
    expect(problems).toEqual([]);
  });

  it('a programme is named once: « Le programme Québec », but « Programme municipal », not « Le programme Programme municipal »', () => {
    expect(fr.privacyPages.programme('Québec')).toBe('Le programme Québec');
    expect(fr.privacyPages.programme('Programme municipal (démo)')).toBe('Programme municipal (démo)');
    expect(en.privacyPages.programme('Quebec')).toBe('The Quebec programme');
    expect(en.privacyPages.programme('Municipal Programme (demo)')).toBe('Municipal Programme (demo)');
    expect(en.privacyPages.programme('Programme municipal (démo)')).toBe('Programme municipal (démo)');
  });

  it('the checks themselves catch what they must', () => {
    expect(frenchTypography('Vous avez déjà un compte ?')).toHaveLength(1);
    expect(frenchTypography('Par exemple: 2025')).toHaveLength(1);
    expect(frenchTypography(`Erreur${NNBSP}: x, « citation${NNBSP}»`)).toHaveLength(1);
    expect(frenchTypography(`Erreur${NNBSP}: à 14:30, https://exemple.ca ; «${NBSP}oui${NNBSP}»`)).toHaveLength(1);
    expect(frenchTypography(`Pas encore de compte${NNBSP}? Ah${NBSP}!`)).toEqual([]);
    expect(englishTypography(`Error${NNBSP}: x`)).toHaveLength(1);
    expect(englishTypography('Error: x « y »')).toHaveLength(1);
    expect(englishTypography('Error: x? Yes!')).toEqual([]);
  });
});

/* ------------------------------------------------------------------ pages */

function ids(html: string): string[] {
  return [...html.matchAll(/\sid="([^"]+)"/g)].map((m) => m[1]!).sort();
}

function fieldNames(html: string): string[] {
  return [...html.matchAll(/<(?:input|select|textarea)\b[^>]*\sname="([^"]+)"/g)].map((m) => m[1]!).sort();
}

/** Catalogue sentences of one language that differ in the other (long enough to be a sentence, not a name). */
function sentences(cat: Tree, other: Tree): string[] {
  const mine = new Map(strings(cat));
  const theirs = new Map(strings(other));
  return [...mine].filter(([p, s]) => s.length >= 12 && theirs.get(p) !== s && !s.includes('\n')).map(([, s]) => s);
}

describe('pages a signed-out visitor reaches', () => {
  it('have the same elements in French and in English, in the language they say they are in', async () => {
    const tenant = await tenantFor(t);
    const facility = await createFacility(t, tenant, { name: 'CPE Les Bourgeons' });
    const paths = ['/', '/directory', `/directory/${facility}`, '/directory?q=bourgeons', '/signin', '/signup', '/password/forgot', '/nowhere'];
    const frOnly = sentences(fr, en);
    const enOnly = sentences(en, fr);
    for (const path of paths) {
      const sep = path.includes('?') ? '&' : '?';
      const pages = {
        fr: await new Client(t.app, tenant.hosts[0]!).get(`${path}${sep}lang=fr`),
        en: await new Client(t.app, tenant.hosts[0]!).get(`${path}${sep}lang=en`),
      };
      for (const [lang, page] of Object.entries(pages)) {
        expect(page.status, `${path} ${lang}`).toBe(path === '/nowhere' ? 404 : 200);
        expect(page.body, `${path} ${lang}`).toMatch(new RegExp(`<html lang="${lang}"`));
      }
      expect(ids(pages.en.body), path).toEqual(ids(pages.fr.body));
      expect(ids(pages.fr.body).length, path).toBeGreaterThan(0);
      expect(fieldNames(pages.en.body), path).toEqual(fieldNames(pages.fr.body));
      // no sentence of the other language left in the page (the language switch aside, which is in the other language on purpose)
      const switchLabels = [fr.otherLanguage.switchLabel, en.otherLanguage.switchLabel];
      const enText = textOf(pages.en.body);
      const frText = textOf(pages.fr.body);
      expect(frOnly.filter((s) => !switchLabels.includes(s) && enText.includes(s)), `${path}: French in the English page`).toEqual([]);
      expect(enOnly.filter((s) => !switchLabels.includes(s) && frText.includes(s)), `${path}: English in the French page`).toEqual([]);
      // the page offers the other language, pointing at itself
      expect(pages.fr.body).toContain('hreflang="en"');
      expect(pages.en.body).toContain('hreflang="fr"');
    }
  });

  it('the language chosen sticks (a cookie) until changed, and an unknown one falls back to French', async () => {
    const tenant = await tenantFor(t);
    const c = new Client(t.app, tenant.hosts[0]!);
    expect((await c.get('/?lang=en')).body).toContain('<html lang="en"');
    expect((await c.get('/signin')).body).toContain('<html lang="en"');
    expect((await c.get('/signin?lang=fr')).body).toContain('<html lang="fr"');
    expect((await c.get('/')).body).toContain('<html lang="fr"');
    const d = new Client(t.app, tenant.hosts[0]!);
    expect((await d.get('/?lang=de')).body).toContain('<html lang="fr"');
    d.cookies.set('guichet_lang', 'xx');
    expect((await d.get('/')).body).toContain('<html lang="fr"');
  });
});
