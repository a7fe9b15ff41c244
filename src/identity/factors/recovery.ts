import { createHmac, randomInt } from 'node:crypto';
import type { KeyProvider } from '../../crypto/keys.ts';

/**
 * Recovery codes: ten single-use codes, shown once, for the day the phone or
 * the security key is lost.
 *
 * Each code is 24 characters of Crockford's base32 (no I, L, O, U, so nothing
 * to confuse when copied by hand): 120 random bits. Such a code is not a
 * password — nobody chose it, no dictionary holds it — so a slow hash
 * (argon2id) buys nothing: 2^120 hash computations are out of anyone's reach.
 * NIST SP 800-63B §5.1.2.2 allows a plain approved hash for look-up secrets of
 * at least 112 bits. A slow hash would instead cost ~15 ms of CPU per stored
 * code and per attempt (argon2 hashes are salted, so the ten codes cannot be
 * looked up, only tried one by one). The codes are stored as HMAC-SHA-256
 * under a key derived from the key provider, which is not in the database —
 * a stolen copy of the table is useless on its own — bound to tenant and
 * account, and found by that value through a unique index.
 */
export const RECOVERY = { count: 10, length: 24 } as const;

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/** Ten new codes, as shown to the person: "K7QM-3XPA-9RTD-2WNF-H4ZC-8B6E". */
export function newRecoveryCodes(): string[] {
  const codes: string[] = [];
  while (codes.length < RECOVERY.count) {
    let s = '';
    for (let i = 0; i < RECOVERY.length; i++) s += ALPHABET[randomInt(ALPHABET.length)];
    const formatted = s.replace(/(.{4})(?=.)/g, '$1-');
    if (!codes.includes(formatted)) codes.push(formatted);
  }
  return codes;
}

/**
 * A typed code, normalised: case, spaces and hyphens ignored, and the
 * letters people mistake for digits read as those digits (O → 0, I and L → 1).
 * Null when it cannot be a recovery code.
 */
export function normaliseRecoveryCode(raw: unknown): string | null {
  if (typeof raw !== 'string' || raw.length > 64) return null;
  const s = raw
    .toUpperCase()
    .replace(/[\s-]/g, '')
    .replace(/O/g, '0')
    .replace(/[IL]/g, '1');
  if (s.length !== RECOVERY.length) return null;
  for (const c of s) if (!ALPHABET.includes(c)) return null;
  return s;
}

/** The stored form of a normalised code: a MAC bound to its tenant and account. */
export function hashRecoveryCode(keys: KeyProvider, tenantId: string, accountId: string, normalised: string): Buffer {
  return createHmac('sha256', keys.derive('recovery-code')).update(`${tenantId}:${accountId}:${normalised}`, 'utf8').digest();
}
