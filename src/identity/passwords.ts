import { hash, verify } from '@node-rs/argon2';

/** OWASP Password Storage Cheat Sheet (2023+): argon2id, 19 MiB, t=2, p=1. */
// Algorithm.Argon2id is an ambient const enum (2); spelled out for verbatimModuleSyntax.
const OPTIONS = { algorithm: 2 as const, memoryCost: 19456, timeCost: 2, parallelism: 1 } as const;

export function hashPassword(password: string): Promise<string> {
  return hash(password.normalize('NFC'), OPTIONS);
}

let dummyHash: Promise<string> | null = null;

/**
 * Verifies a password. With no stored hash (unknown account, or an account
 * without a password) it still runs one argon2 verification against a dummy
 * hash, so the answer takes the same time whether or not the account exists.
 */
export async function verifyPassword(stored: string | null | undefined, password: string): Promise<boolean> {
  const candidate = password.normalize('NFC');
  if (!stored) {
    dummyHash ??= hash('guichet-dummy-password-for-timing', OPTIONS);
    await verify(await dummyHash, candidate).catch(() => false);
    return false;
  }
  try {
    return await verify(stored, candidate);
  } catch {
    return false;
  }
}
