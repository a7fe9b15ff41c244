import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { generate, generateSecret, generateURI, verify } from 'otplib';
import QRCode from 'qrcode';
import type { KeyProvider } from '../../crypto/keys.ts';

/**
 * Time-based one-time passwords (RFC 6238) through otplib, with the
 * parameters every authenticator app understands: HMAC-SHA-1, 6 digits,
 * 30-second steps, a 160-bit secret (RFC 4226 §4 recommends 160 bits).
 * One step either side is accepted for clock drift (RFC 6238 §5.2 and §6),
 * and the caller stores the step of the accepted code so that it is never
 * accepted again.
 */
export const TOTP = { periodSeconds: 30, digits: 6, toleranceSteps: 1, secretBytes: 20 } as const;

export function newTotpSecret(): string {
  return generateSecret({ length: TOTP.secretBytes });
}

/** The secret for the manual entry, in groups of four: "ABCD EFGH …". */
export function formatManualKey(secret: string): string {
  return secret.replace(/(.{4})(?=.)/g, '$1 ');
}

export function otpauthUri(issuer: string, account: string, secret: string): string {
  return generateURI({ issuer, label: account, secret });
}

/** The otpauth URI as a QR code, an SVG data URL (the CSP allows img-src data:). */
export async function qrCodeDataUrl(text: string): Promise<string> {
  const svg = await QRCode.toString(text, { type: 'svg', errorCorrectionLevel: 'M', margin: 2, color: { dark: '#000000', light: '#ffffff' } });
  return `data:image/svg+xml;base64,${Buffer.from(svg, 'utf8').toString('base64')}`;
}

/** Six digits, spaces and hyphens ignored; null if it cannot be a code. */
export function normaliseTotpCode(raw: unknown): string | null {
  if (typeof raw !== 'string' || raw.length > 20) return null;
  const code = raw.replace(/[\s-]/g, '');
  return /^\d{6}$/.test(code) ? code : null;
}

export type TotpCheck = { valid: true; step: number } | { valid: false };

/** Whether `code` is the code of `secret` at `now`, ± one step; and which step it was. */
export async function checkTotp(secret: string, code: string, now: Date): Promise<TotpCheck> {
  const r = await verify({ secret, token: code, epoch: Math.floor(now.getTime() / 1000), epochTolerance: TOTP.periodSeconds * TOTP.toleranceSteps });
  return r.valid && 'timeStep' in r ? { valid: true, step: r.timeStep } : { valid: false };
}

/** The code of `secret` at `now` (tests, and nothing else). */
export function totpCodeAt(secret: string, now: Date): Promise<string> {
  return generate({ secret, epoch: Math.floor(now.getTime() / 1000) });
}

/* ------------------------------------------------------------ encryption */

/**
 * The secret is stored encrypted (AES-256-GCM) under a key derived from the
 * key provider for this purpose alone; the associated data binds the
 * ciphertext to its tenant, account and factor, so a row copied onto another
 * account does not decrypt.
 */
function aad(ids: { tenantId: string; accountId: string; factorId: string }): Buffer {
  return Buffer.from(`guichet:totp:${ids.tenantId}:${ids.accountId}:${ids.factorId}`, 'utf8');
}

export function encryptTotpSecret(keys: KeyProvider, ids: { tenantId: string; accountId: string; factorId: string }, secret: string): Buffer {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', keys.derive('totp-secret'), iv);
  cipher.setAAD(aad(ids));
  const body = Buffer.concat([cipher.update(secret, 'utf8'), cipher.final()]);
  return Buffer.concat([iv, body, cipher.getAuthTag()]);
}

export function decryptTotpSecret(keys: KeyProvider, ids: { tenantId: string; accountId: string; factorId: string }, blob: Buffer): string {
  const iv = blob.subarray(0, 12);
  const tag = blob.subarray(blob.length - 16);
  const decipher = createDecipheriv('aes-256-gcm', keys.derive('totp-secret'), iv);
  decipher.setAAD(aad(ids));
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(blob.subarray(12, blob.length - 16)), decipher.final()]).toString('utf8');
}
