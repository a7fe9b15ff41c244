/**
 * A software WebAuthn authenticator for HTTP-level tests: an ES256 key pair
 * per credential, "none" attestation, a signature counter, user presence and
 * verification flags as asked. It answers the options the server sends with
 * what a browser's credential.toJSON() would post. The browser tests use
 * Chromium's own virtual authenticator instead; this one lets the server's
 * checks (challenge, origin, counter, user handle) be tried quickly and
 * against crafted answers.
 */
import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';

function b64url(b: Uint8Array): string {
  return Buffer.from(b).toString('base64url');
}

/* A little CBOR (RFC 8949): unsigned and negative integers, byte and text strings, maps. */
function head(major: number, n: number): Buffer {
  if (n < 24) return Buffer.from([(major << 5) | n]);
  if (n < 256) return Buffer.from([(major << 5) | 24, n]);
  if (n < 65536) return Buffer.from([(major << 5) | 25, n >> 8, n & 255]);
  const b = Buffer.alloc(5);
  b[0] = (major << 5) | 26;
  b.writeUInt32BE(n, 1);
  return b;
}
type Cbor = number | string | Uint8Array | Map<Cbor, Cbor>;
function cbor(v: Cbor): Buffer {
  if (typeof v === 'number') return v >= 0 ? head(0, v) : head(1, -1 - v);
  if (typeof v === 'string') {
    const s = Buffer.from(v, 'utf8');
    return Buffer.concat([head(3, s.length), s]);
  }
  if (v instanceof Uint8Array) return Buffer.concat([head(2, v.length), Buffer.from(v)]);
  const parts: Buffer[] = [head(5, v.size)];
  for (const [k, x] of v) parts.push(cbor(k), cbor(x));
  return Buffer.concat(parts);
}

interface SoftCredential {
  id: Buffer;
  privateKey: KeyObject;
  publicKey: KeyObject;
  rpId: string;
  userHandle: string;
  counter: number;
}

export interface CreationOptionsJSON {
  challenge: string;
  rp: { id?: string; name: string };
  user: { id: string; name: string; displayName: string };
  excludeCredentials?: { id: string }[];
}

export interface RequestOptionsJSON {
  challenge: string;
  rpId?: string;
  allowCredentials?: { id: string }[];
  userVerification?: string;
}

export class SoftAuthenticator {
  readonly credentials: SoftCredential[] = [];
  /** Whether the person is verified (PIN, biometrics) on each use. */
  userVerified = true;

  constructor(readonly origin: string) {}

  private authData(rpId: string, flags: number, counter: number, attested?: Buffer): Buffer {
    const c = Buffer.alloc(4);
    c.writeUInt32BE(counter >>> 0);
    return Buffer.concat([createHash('sha256').update(rpId).digest(), Buffer.from([flags]), c, ...(attested ? [attested] : [])]);
  }

  /** navigator.credentials.create(), then credential.toJSON(), as a string a form would post. */
  create(options: CreationOptionsJSON): string {
    const rpId = options.rp.id ?? new URL(this.origin).hostname;
    if (options.excludeCredentials?.some((e) => this.credentials.some((c) => b64url(c.id) === e.id))) throw new Error('InvalidStateError: already registered');
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = publicKey.export({ format: 'jwk' });
    const cose = cbor(
      new Map<Cbor, Cbor>([
        [1, 2],
        [3, -7],
        [-1, 1],
        [-2, Buffer.from(jwk.x!, 'base64url')],
        [-3, Buffer.from(jwk.y!, 'base64url')],
      ]),
    );
    const id = randomBytes(32);
    const len = Buffer.alloc(2);
    len.writeUInt16BE(id.length);
    const attested = Buffer.concat([Buffer.alloc(16), len, id, cose]);
    const flags = 0x01 | (this.userVerified ? 0x04 : 0) | 0x40;
    const authData = this.authData(rpId, flags, 0, attested);
    const attestationObject = cbor(new Map<Cbor, Cbor>([['fmt', 'none'], ['attStmt', new Map()], ['authData', authData]]));
    const clientData = Buffer.from(JSON.stringify({ type: 'webauthn.create', challenge: options.challenge, origin: this.origin, crossOrigin: false }));
    this.credentials.push({ id, privateKey, publicKey, rpId, userHandle: options.user.id, counter: 0 });
    return JSON.stringify({
      id: b64url(id),
      rawId: b64url(id),
      type: 'public-key',
      response: { clientDataJSON: b64url(clientData), attestationObject: b64url(attestationObject), transports: ['internal'] },
      clientExtensionResults: {},
      authenticatorAttachment: 'platform',
    });
  }

  /** navigator.credentials.get(), then credential.toJSON(). `tamper` changes what is signed, to try the server's checks. */
  get(options: RequestOptionsJSON, tamper: { origin?: string; challenge?: string; counter?: number; userHandle?: string; credential?: number } = {}): string {
    const rpId = options.rpId ?? new URL(this.origin).hostname;
    const allowed = options.allowCredentials?.map((a) => a.id);
    const usable = this.credentials.filter((c) => c.rpId === rpId && (!allowed?.length || allowed.includes(b64url(c.id))));
    const cred = tamper.credential !== undefined ? this.credentials[tamper.credential] : usable[0];
    if (!cred) throw new Error('NotAllowedError: no credential');
    cred.counter = tamper.counter ?? cred.counter + 1;
    const authData = this.authData(rpId, 0x01 | (this.userVerified ? 0x04 : 0), cred.counter);
    const clientData = Buffer.from(JSON.stringify({ type: 'webauthn.get', challenge: tamper.challenge ?? options.challenge, origin: tamper.origin ?? this.origin, crossOrigin: false }));
    const signature = sign('sha256', Buffer.concat([authData, createHash('sha256').update(clientData).digest()]), cred.privateKey);
    return JSON.stringify({
      id: b64url(cred.id),
      rawId: b64url(cred.id),
      type: 'public-key',
      response: { clientDataJSON: b64url(clientData), authenticatorData: b64url(authData), signature: b64url(signature), userHandle: tamper.userHandle ?? cred.userHandle },
      clientExtensionResults: {},
      authenticatorAttachment: 'platform',
    });
  }
}
