import { createPrivateKey, createPublicKey, sign, type KeyObject } from 'node:crypto';
import type { KeyProvider } from '../crypto/keys.ts';
import { checkpointText, formatVerifierKey, originFor, signedNote, verifierKey, type VerifierKey } from './verify-bundle.ts';

// PKCS#8 wrapping of a raw Ed25519 seed (RFC 8410): node:crypto takes keys as DER.
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/** An Ed25519 private key from a 32-byte seed, and its raw public key. */
export function ed25519FromSeed(seed: Buffer): { privateKey: KeyObject; publicKey: Buffer } {
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  const spki = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
  return { privateKey, publicKey: Buffer.from(spki.subarray(spki.length - 32)) };
}

/**
 * A tenant's log key. One Ed25519 key per tenant, derived from the master key
 * (HKDF, purpose `audit-signing:<tenant>`): nothing to store or back up beyond
 * the master key, and one tenant's heads can never pass for another's. The
 * public key is published (security console, `guichet audit key`, every
 * export) so that auditors and witnesses pin it.
 */
export class TenantSigner {
  readonly origin: string;
  readonly verifier: VerifierKey;
  private readonly privateKey: KeyObject;

  constructor(keys: KeyProvider, readonly tenantId: string) {
    this.origin = originFor(tenantId);
    const seed = keys.derive(`audit-signing:${tenantId}`, 32);
    this.privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' });
    const spki = createPublicKey(this.privateKey).export({ format: 'der', type: 'spki' });
    this.verifier = verifierKey(this.origin, spki.subarray(spki.length - 32));
  }

  /** `<origin>+<key id>+<key>`: the line an auditor pins. */
  get verifierKeyText(): string {
    return formatVerifierKey(this.verifier);
  }

  get keyIdHex(): string {
    return this.verifier.id.toString('hex');
  }

  /** The signed checkpoint for a tree of `size` leaves with this root, signed at `time`. */
  sign(size: number, root: Buffer, time: Date): string {
    const text = checkpointText(this.origin, size, root, time);
    return signedNote(text, this.verifier, sign(null, Buffer.from(text, 'utf8'), this.privateKey));
  }
}

/** Signers are cheap but not free (key derivation, key parsing): one per tenant per process. */
export class SignerCache {
  private readonly byTenant = new Map<string, TenantSigner>();
  constructor(private readonly keys: KeyProvider) {}
  for(tenantId: string): TenantSigner {
    let s = this.byTenant.get(tenantId);
    if (!s) {
      s = new TenantSigner(this.keys, tenantId);
      this.byTenant.set(tenantId, s);
    }
    return s;
  }
}
