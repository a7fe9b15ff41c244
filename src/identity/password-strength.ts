import type { Tenant } from '../tenants/service.ts';

/**
 * A new password must not be easy to guess (ASVS 6.2.4, 6.2.11, 6.2.12;
 * NIST SP 800-63B §3.1.1.2): not among the passwords most often found in
 * breaches (the 49,000 of zxcvbn's common list), and not made of French or
 * English words, names, dates, keyboard rows, repeats or sequences that an
 * attacker tries first, nor of the person's own address, the service's
 * name or Guichet's. zxcvbn estimates how many guesses such an attack needs;
 * under 10^8 (its score 3) the password is refused. No composition rule: a
 * long phrase of unrelated words passes, `Motdepasse2026!` does not.
 *
 * The estimate runs on this thread. Letter-for-symbol substitutions are not
 * tried (the common ones, p@ssw0rd and the like, are in the breach list as
 * they are), and only the first 64 characters are weighed: without these
 * limits a random 256-character string took seconds. Measured on two
 * cores: 3–35 ms a password once loaded; loading takes about half a second
 * and 75 MB, on the first password chosen after a start.
 */
export const MIN_SCORE = 3;

type Factory = { check: (password: string, userInputs?: (string | number)[]) => { score: number } };
let factory: Promise<Factory> | null = null;

function load(): Promise<Factory> {
  factory ??= (async () => {
    const [core, common, fr, en] = await Promise.all([import('@zxcvbn-ts/core'), import('@zxcvbn-ts/language-common'), import('@zxcvbn-ts/language-fr'), import('@zxcvbn-ts/language-en')]);
    return new core.ZxcvbnFactory({
      dictionary: { ...common.dictionary, ...fr.dictionary, ...en.dictionary },
      graphs: common.adjacencyGraphs,
      l33tMaxSubstitutions: 0,
      maxLength: 64,
    });
  })();
  return factory;
}

/** The words of this person and this service that a password must not lean on. */
export function contextWords(email: string | null | undefined, tenant: Pick<Tenant, 'slug' | 'nameFr' | 'nameEn' | 'hosts'>): string[] {
  const words = new Set<string>(['guichet', 'garderie', 'cpe', 'place 0-5', 'laplace0-5']);
  const add = (s: string) => {
    const v = s.trim().toLowerCase();
    if (v.length >= 3) words.add(v);
  };
  if (email) {
    add(email);
    const [local = '', domain = ''] = email.split('@');
    add(local);
    for (const part of local.split(/[._+-]+/)) add(part);
    add(domain.split('.')[0] ?? '');
  }
  add(tenant.slug);
  for (const name of [tenant.nameFr, tenant.nameEn]) {
    add(name);
    for (const part of name.split(/[\s'’-]+/)) add(part);
  }
  for (const host of tenant.hosts) add(host.split('.')[0] ?? '');
  return [...words];
}

/** Whether zxcvbn's estimate puts the password within an attacker's first 10^8 guesses. */
export async function isGuessable(password: string, context: string[]): Promise<boolean> {
  const f = await load();
  return f.check(password, context).score < MIN_SCORE;
}
