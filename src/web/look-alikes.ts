/**
 * Names that imitate other names. A child's file named « Маrie » with a
 * Cyrillic М reads exactly like « Marie » on a page and in a search, yet is a
 * different string: a second file passing for the first (the 2021 intruder
 * went looking for a namesake's file), or a relying service's name on the
 * consent page passing for another's. Unicode's security mechanisms (UTS #39)
 * name the tricks; the ones a form can refuse without refusing real names:
 *
 * - compatibility forms that NFKC folds into plain letters (ＡＤＭＩＮ in full
 *   width, ligatures, mathematical 𝐀, superscripts);
 * - one word written in several scripts (UTS #39 "single script" per word:
 *   Latin with a Cyrillic or Greek letter in it). A whole word in Cyrillic or
 *   Greek stays a real name. Chinese and Japanese words mix Han with kana and
 *   Korean with Hangul by nature: those count as one script;
 * - a letter loaded with more than two combining marks (stacked accents draw
 *   over the neighbouring lines and hide what is under them);
 * - invisible characters (zero-width spaces and joiners, soft hyphen, word
 *   joiner, byte order mark) and bidirectional controls.
 *
 * The form's own pattern keeps control characters out; this adds the rest.
 */

const INVISIBLE = /[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]/u;
const STACKED_MARKS = /\p{M}{3,}/u;

/** Scripts told apart; CJK scripts that share words are one. A letter of none of these is of "another" script. */
const SCRIPTS: [string, RegExp][] = [
  ['Latin', /\p{Script=Latin}/u],
  ['Greek', /\p{Script=Greek}/u],
  ['Cyrillic', /\p{Script=Cyrillic}/u],
  ['Armenian', /\p{Script=Armenian}/u],
  ['Cherokee', /\p{Script=Cherokee}/u],
  ['Georgian', /\p{Script=Georgian}/u],
  ['Hebrew', /\p{Script=Hebrew}/u],
  ['Arabic', /\p{Script=Arabic}/u],
  ['CJK', /[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Hangul}\p{Script=Bopomofo}]/u],
  ...['Devanagari', 'Bengali', 'Gurmukhi', 'Gujarati', 'Tamil', 'Telugu', 'Kannada', 'Malayalam', 'Sinhala', 'Thai', 'Lao', 'Khmer', 'Myanmar', 'Tibetan', 'Ethiopic', 'Canadian_Aboriginal', 'Syriac', 'Thaana', 'Tifinagh'].map(
    (name): [string, RegExp] => [name, new RegExp(`\\p{Script=${name}}`, 'u')],
  ),
];

function scriptOf(letter: string): string {
  for (const [name, re] of SCRIPTS) if (re.test(letter)) return name;
  return 'another';
}

export type LookAlike = 'compatibility' | 'mixedScripts' | 'stackedMarks' | 'invisible';

/** Why a name imitates another, or null when it does not. */
export function lookAlike(s: string): LookAlike | null {
  const nfc = s.normalize('NFC');
  if (INVISIBLE.test(nfc)) return 'invisible';
  if (nfc.normalize('NFKC') !== nfc) return 'compatibility';
  if (STACKED_MARKS.test(nfc)) return 'stackedMarks';
  for (const word of nfc.split(/[\s'’.\-]+/u)) {
    let seen: string | null = null;
    for (const ch of word) {
      if (!/\p{L}/u.test(ch)) continue;
      const sc = scriptOf(ch);
      if (seen === null) seen = sc;
      else if (sc !== seen) return 'mixedScripts';
    }
  }
  return null;
}
