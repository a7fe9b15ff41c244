import { randomBytes } from 'node:crypto';
import {
  generateAuthenticationOptions,
  generateRegistrationOptions,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
  type AuthenticationResponseJSON,
  type PublicKeyCredentialCreationOptionsJSON,
  type PublicKeyCredentialRequestOptionsJSON,
  type RegistrationResponseJSON,
} from '@simplewebauthn/server';
import { z } from 'zod';
import type { Config } from '../../config/config.ts';
import type { Tenant } from '../../tenants/service.ts';

/**
 * Passkeys (WebAuthn Level 3) through @simplewebauthn/server. This file knows
 * the protocol; store.ts keeps the credentials and the challenges, service.ts
 * the rules.
 */

/** The relying party a request speaks to: the tenant's host, and the origin the browser will report. */
export interface RelyingParty {
  /** The RP ID: the host name the credentials are scoped to. */
  id: string;
  /** The exact origin the browser must report in clientDataJSON. */
  origin: string;
  /** What the authenticator shows. */
  name: string;
}

/**
 * The relying party for a request, from its Host header, only if that host
 * is one of the tenant's (or PUBLIC_URL's, or localhost outside production).
 * A Host that names no tenant host is refused (null) rather than trusted: a
 * credential is never created for, nor checked against, a name the operator
 * did not configure. The origin is PUBLIC_URL's when it names this host;
 * otherwise https://host in production, http://host[:port] in development
 * (WebAuthn treats http://localhost and *.localhost as secure contexts).
 */
export function relyingPartyFor(config: Config, tenant: Tenant, hostHeader: string | undefined, tenantName: string): RelyingParty | null {
  const host = (hostHeader ?? '').toLowerCase();
  const m = /^([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*)(?::(\d{1,5}))?$/.exec(host);
  if (!m) return null;
  const hostname = m[1]!;
  const publicUrl = config.publicUrl ? new URL(config.publicUrl) : null;
  const known =
    tenant.hosts.some((h) => h.toLowerCase() === hostname) || publicUrl?.hostname === hostname || (!config.production && hostname === 'localhost');
  if (!known) return null;
  const origin = publicUrl && publicUrl.hostname === hostname ? publicUrl.origin : `${config.production ? 'https' : 'http'}://${host}`;
  return { id: hostname, origin, name: `Guichet — ${tenantName}`.slice(0, 64) };
}

/** A new challenge: 32 random bytes, as the base64url string the browser will echo. */
export function newChallenge(): { bytes: Uint8Array<ArrayBuffer>; value: string } {
  const bytes = new Uint8Array(randomBytes(32));
  return { bytes, value: Buffer.from(bytes).toString('base64url') };
}

/** WebAuthn user handle: the account id's 16 bytes (no personal data). */
export function userHandleOf(accountId: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(Buffer.from(accountId.replace(/-/g, ''), 'hex'));
}

export function accountIdOfUserHandle(handle: string | undefined): string | null {
  if (!handle || !/^[A-Za-z0-9_-]{22}$/.test(handle)) return null;
  const hex = Buffer.from(handle, 'base64url').toString('hex');
  if (hex.length !== 32) return null;
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export interface StoredCredential {
  credentialId: string;
  publicKey: Buffer;
  signCount: number;
  transports: string[];
}

export const CEREMONY_TIMEOUT_MS = 120_000;

export async function registrationOptions(
  rp: RelyingParty,
  user: { accountId: string; email: string },
  challenge: Uint8Array<ArrayBuffer>,
  exclude: readonly StoredCredential[],
): Promise<PublicKeyCredentialCreationOptionsJSON> {
  return generateRegistrationOptions({
    rpName: rp.name,
    rpID: rp.id,
    userName: user.email,
    userDisplayName: user.email,
    userID: userHandleOf(user.accountId),
    challenge,
    timeout: CEREMONY_TIMEOUT_MS,
    attestationType: 'none',
    excludeCredentials: exclude.map((c) => ({ id: c.credentialId, transports: c.transports })),
    // Discoverable, so that the passkey alone can sign in; verification by PIN or biometrics when the device can.
    authenticatorSelection: { residentKey: 'required', requireResidentKey: true, userVerification: 'preferred' },
  });
}

export async function authenticationOptions(
  rp: RelyingParty,
  challenge: Uint8Array<ArrayBuffer>,
  allow: readonly StoredCredential[] | null,
  userVerification: 'required' | 'preferred',
): Promise<PublicKeyCredentialRequestOptionsJSON> {
  return generateAuthenticationOptions({
    rpID: rp.id,
    challenge,
    timeout: CEREMONY_TIMEOUT_MS,
    userVerification,
    ...(allow ? { allowCredentials: allow.map((c) => ({ id: c.credentialId, transports: c.transports })) } : {}),
  });
}

/* ------------------------------------------------------------ responses */

const b64url = z.string().max(16_000).regex(/^[A-Za-z0-9_-]*={0,2}$/);

const registrationShape = z.object({
  id: b64url.min(16),
  rawId: b64url.min(16),
  type: z.literal('public-key'),
  response: z.object({ clientDataJSON: b64url, attestationObject: b64url, transports: z.array(z.string().max(32)).max(10).optional() }).passthrough(),
  clientExtensionResults: z.record(z.string(), z.unknown()).optional().default({}),
  authenticatorAttachment: z.string().max(32).nullable().optional(),
});

const authenticationShape = z.object({
  id: b64url.min(16),
  rawId: b64url.min(16),
  type: z.literal('public-key'),
  response: z.object({ clientDataJSON: b64url, authenticatorData: b64url, signature: b64url, userHandle: b64url.nullable().optional() }).passthrough(),
  clientExtensionResults: z.record(z.string(), z.unknown()).optional().default({}),
  authenticatorAttachment: z.string().max(32).nullable().optional(),
});

function parseJson(raw: unknown): unknown {
  if (typeof raw !== 'string' || raw.length === 0 || raw.length > 48_000) return null;
  try {
    return JSON.parse(raw);
  } catch {
    return null;
  }
}

/** The credential a page posted (credential.toJSON(), as a form field), or null if it is not one. */
export function parseRegistrationResponse(raw: unknown): RegistrationResponseJSON | null {
  const r = registrationShape.safeParse(parseJson(raw));
  return r.success ? (r.data as unknown as RegistrationResponseJSON) : null;
}

export function parseAuthenticationResponse(raw: unknown): AuthenticationResponseJSON | null {
  const r = authenticationShape.safeParse(parseJson(raw));
  if (!r.success) return null;
  const data = r.data as unknown as AuthenticationResponseJSON & { response: { userHandle?: string | null } };
  if (data.response.userHandle === null) delete data.response.userHandle;
  return data;
}

/** The challenge the browser signed, read from clientDataJSON, to find the stored one. */
export function challengeOf(response: { response: { clientDataJSON: string } }): string | null {
  try {
    const client = JSON.parse(Buffer.from(response.response.clientDataJSON, 'base64url').toString('utf8')) as { challenge?: unknown };
    return typeof client.challenge === 'string' && /^[A-Za-z0-9_-]{43}$/.test(client.challenge) ? client.challenge : null;
  } catch {
    return null;
  }
}

export interface NewCredential {
  credentialId: string;
  publicKey: Buffer;
  signCount: number;
  transports: string[];
  aaguid: string;
  backedUp: boolean;
  userVerified: boolean;
}

/** Verifies a registration against the stored challenge; null when it does not verify (the reason goes to the log). */
export async function verifyRegistration(rp: RelyingParty, response: RegistrationResponseJSON, expectedChallenge: string): Promise<{ ok: true; credential: NewCredential } | { ok: false; error: string }> {
  try {
    const v = await verifyRegistrationResponse({ response, expectedChallenge, expectedOrigin: rp.origin, expectedRPID: rp.id, requireUserVerification: false });
    if (!v.verified) return { ok: false, error: 'not verified' };
    const info = v.registrationInfo;
    return {
      ok: true,
      credential: {
        credentialId: info.credential.id,
        publicKey: Buffer.from(info.credential.publicKey),
        signCount: info.credential.counter,
        transports: (info.credential.transports ?? []).map(String).slice(0, 10),
        aaguid: info.aaguid,
        backedUp: info.credentialBackedUp,
        userVerified: info.userVerified,
      },
    };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message.slice(0, 200) : 'error' };
  }
}

export async function verifyAuthentication(
  rp: RelyingParty,
  response: AuthenticationResponseJSON,
  expectedChallenge: string,
  credential: StoredCredential,
  requireUserVerification: boolean,
): Promise<{ ok: true; newSignCount: number; userVerified: boolean; backedUp: boolean } | { ok: false; error: string }> {
  try {
    const v = await verifyAuthenticationResponse({
      response,
      expectedChallenge,
      expectedOrigin: rp.origin,
      expectedRPID: rp.id,
      credential: { id: credential.credentialId, publicKey: new Uint8Array(credential.publicKey), counter: credential.signCount, transports: credential.transports as never },
      requireUserVerification,
    });
    if (!v.verified) return { ok: false, error: 'not verified' };
    return { ok: true, newSignCount: v.authenticationInfo.newCounter, userVerified: v.authenticationInfo.userVerified, backedUp: v.authenticationInfo.credentialBackedUp };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message.slice(0, 200) : 'error' };
  }
}
