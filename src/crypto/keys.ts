import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { KeyError, MasterKeyMismatchError } from './errors.ts';
import { LocalKeyring, SqlKeyring, type Keyring } from './keyring.ts';

/**
 * The root of Guichet's key hierarchy (src/crypto/README.md):
 *
 *   master key (this provider: a key file, an environment variable, or a KMS/Vault)
 *     └─ wraps each tenant's key-encryption key and blind-index key
 *          └─ the tenant key wraps each family's data key (AES-256-GCM)
 *               └─ the family key encrypts that family's personal fields
 *
 * A provider does two things with the master key and never hands it out:
 *  - wrap/unwrap: AES-256-GCM under a *versioned* wrapping key, so the master
 *    can be rotated (`guichet keys rotate --master`) without touching data;
 *  - derive(purpose): HKDF subkeys of the root secret for other modules (CSRF,
 *    TOTP secrets, recovery codes, throttling). They belong to the root secret,
 *    version 1, and do not change when the wrapping key is rotated.
 * It also owns the keyring (keyring.ts): where the wrapped tenant and family
 * keys live — outside the data database, so that they never travel inside a
 * data backup and destroying a family's key (crypto-shredding) reaches every
 * copy of its data.
 *
 * A KMS or Vault provider implements the same interface: wrap/unwrap call the
 * service (Encrypt/Decrypt with the context as encryption context), the
 * service manages master versions, and the keyring is a SqlKeyring.
 */
export interface KeyProvider {
  /** Where the master key comes from, for messages ("file:/…/master.key", "env:GUICHET_MASTER_KEY"). */
  readonly source: string;
  /** A subkey for one purpose, derived with HKDF-SHA256 from the root secret (master version 1). */
  derive(purpose: string, length?: number): Buffer;
  /** The master version new wraps use. */
  currentMasterVersion(): Promise<number>;
  /** The master versions this provider can unwrap with. */
  masterVersions(): Promise<number[]>;
  /** The master version a wrapped key was made with (read from its header). */
  masterVersionOf(wrapped: Buffer): number;
  /** Wraps a key under the current master version; `context` is bound as associated data. */
  wrap(key: Buffer, context: string): Promise<Buffer>;
  /** Unwraps; throws KeyError naming the version when it is unknown, MasterKeyMismatchError when the bytes do not authenticate. */
  unwrap(wrapped: Buffer, context: string): Promise<Buffer>;
  /**
   * Master rotation: a new wrapping version becomes current. A provider whose
   * versions are managed elsewhere (an environment variable, a KMS console)
   * throws a KeyError that says how to add one there.
   */
  addMasterVersion(): Promise<number>;
  /** Forgets wrapping versions other than `keep` (the root secret, version 1, always stays for derive()). */
  retireMasterVersions(keep: readonly number[]): Promise<number[]>;
  /** Where the wrapped tenant and family keys live. */
  readonly keyring: Keyring;
  close(): Promise<void>;
}

export { KeyError, MasterKeyMismatchError } from './errors.ts';

const WRAP_FORMAT = 0x01;
const WRAP_HEADER = 5; // format byte, master version (uint32 BE)
const IV = 12;
const TAG = 16;

/** The raw secrets of a local provider, by master version (1 is the root secret). */
type Secrets = Map<number, Buffer>;

class LocalKeyProvider implements KeyProvider {
  private wrapKeys = new Map<number, Buffer>();

  constructor(
    private secrets: Secrets,
    readonly source: string,
    readonly keyring: Keyring,
    /** The key file, when versions may be added to it; null for memory and environment secrets. */
    private readonly file: string | null,
    private readonly mutable: boolean,
  ) {
    if (!secrets.has(1)) throw new KeyError(`${source}: no root secret (version 1)`);
  }

  derive(purpose: string, length = 32): Buffer {
    return Buffer.from(hkdfSync('sha256', this.secrets.get(1)!, Buffer.alloc(0), `guichet:${purpose}`, length));
  }

  private wrapKey(version: number): Buffer {
    let k = this.wrapKeys.get(version);
    if (!k) {
      const secret = this.secrets.get(version);
      if (!secret) {
        // Another process (`guichet keys rotate --master`) may have added it to the file since we read it.
        if (this.file) this.reload();
        const again = this.secrets.get(version);
        if (!again) throw new KeyError(`master key version ${version} is not in ${this.source}: the keyring was wrapped with a key this provider does not hold (a newer key file, or a retired version)`);
        return this.wrapKey(version);
      }
      k = Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), 'guichet:master-wrap', 32));
      this.wrapKeys.set(version, k);
    }
    return k;
  }

  private reload(): void {
    if (!this.file) return;
    this.secrets = readKeyFile(this.file);
    this.wrapKeys.clear();
  }

  async currentMasterVersion(): Promise<number> {
    return Math.max(...this.secrets.keys());
  }

  async masterVersions(): Promise<number[]> {
    return [...this.secrets.keys()].sort((a, b) => a - b);
  }

  masterVersionOf(wrapped: Buffer): number {
    if (wrapped.length < WRAP_HEADER + IV + TAG || wrapped[0] !== WRAP_FORMAT) throw new KeyError('wrapped key: unknown format (not written by a local key provider)');
    return wrapped.readUInt32BE(1);
  }

  async wrap(key: Buffer, context: string): Promise<Buffer> {
    const version = await this.currentMasterVersion();
    const header = Buffer.alloc(WRAP_HEADER);
    header[0] = WRAP_FORMAT;
    header.writeUInt32BE(version, 1);
    const iv = randomBytes(IV);
    const cipher = createCipheriv('aes-256-gcm', this.wrapKey(version), iv);
    cipher.setAAD(Buffer.concat([Buffer.from(`guichet.master-wrap.v1\0${context}\0`, 'utf8'), header]));
    const ct = Buffer.concat([cipher.update(key), cipher.final()]);
    return Buffer.concat([header, iv, ct, cipher.getAuthTag()]);
  }

  async unwrap(wrapped: Buffer, context: string): Promise<Buffer> {
    const version = this.masterVersionOf(wrapped);
    const key = this.wrapKey(version);
    const header = wrapped.subarray(0, WRAP_HEADER);
    const iv = wrapped.subarray(WRAP_HEADER, WRAP_HEADER + IV);
    const tag = wrapped.subarray(wrapped.length - TAG);
    const decipher = createDecipheriv('aes-256-gcm', key, iv);
    decipher.setAAD(Buffer.concat([Buffer.from(`guichet.master-wrap.v1\0${context}\0`, 'utf8'), header]));
    decipher.setAuthTag(tag);
    try {
      return Buffer.concat([decipher.update(wrapped.subarray(WRAP_HEADER + IV, wrapped.length - TAG)), decipher.final()]);
    } catch {
      throw new MasterKeyMismatchError(`${context}: does not authenticate under master key version ${version} from ${this.source}`);
    }
  }

  async addMasterVersion(): Promise<number> {
    if (!this.mutable) {
      throw new KeyError(
        `${this.source}: this provider's versions are managed outside Guichet. Add a version yourself ` +
          '(GUICHET_MASTER_KEY="<root>,2:<new base64 key>"; each entry N:KEY is version N, the highest is current), then run the rotation again to re-wrap under it',
      );
    }
    if (this.file) this.reload();
    const next = (await this.currentMasterVersion()) + 1;
    const secrets = new Map(this.secrets);
    secrets.set(next, randomBytes(32));
    if (this.file) writeKeyFile(this.file, secrets);
    this.secrets = secrets;
    return next;
  }

  async retireMasterVersions(keep: readonly number[]): Promise<number[]> {
    if (this.file) this.reload();
    const retired = [...this.secrets.keys()].filter((v) => v !== 1 && !keep.includes(v));
    if (!retired.length) return [];
    if (!this.mutable) return [];
    const secrets = new Map(this.secrets);
    for (const v of retired) secrets.delete(v);
    if (this.file) writeKeyFile(this.file, secrets);
    this.secrets = secrets;
    for (const v of retired) this.wrapKeys.delete(v);
    return retired;
  }

  async close(): Promise<void> {
    await this.keyring.close();
  }
}

/* ------------------------------------------------------------- key files */

/**
 * A key file: one secret a line, base64 of 32 bytes. A bare line is version 1
 * (the root secret, as written on first start); "N:BASE64" is version N, added
 * by `guichet keys rotate --master`. Lines starting with # are comments.
 */
export function parseSecrets(text: string, where: string): Secrets {
  const secrets: Secrets = new Map();
  const lines = text.split(/[\n,]/);
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const m = /^(?:(\d{1,6}):)?([A-Za-z0-9+/=_-]+)$/.exec(line);
    if (!m) throw new KeyError(`${where}: entry ${i + 1} is not base64 (or N:base64)`);
    const version = m[1] ? Number(m[1]) : 1;
    const key = Buffer.from(m[2]!, 'base64');
    if (key.length !== 32) throw new KeyError(`${where}: ${m[1] ? `version ${version}` : 'the key'} must be 32 bytes, base64-encoded`);
    if (version < 1) throw new KeyError(`${where}: versions start at 1`);
    if (secrets.has(version)) throw new KeyError(`${where}: version ${version} appears twice`);
    secrets.set(version, key);
  });
  if (!secrets.size) throw new KeyError(`${where}: empty`);
  if (!secrets.has(1)) throw new KeyError(`${where}: no root secret (a line without a version number)`);
  return secrets;
}

function readKeyFile(file: string): Secrets {
  if (!existsSync(file)) throw new KeyError(`key file ${file} does not exist`);
  const mode = statSync(file).mode & 0o077;
  if (mode) throw new KeyError(`key file ${file}: readable by group or others (chmod 600 it)`);
  return parseSecrets(readFileSync(file, 'utf8'), `key file ${file}`);
}

/** Replaces the key file atomically (a new file, synced, renamed over the old one), mode 0600. */
function writeKeyFile(file: string, secrets: Secrets): void {
  const lines = ['# Guichet master key. Keep it apart from every backup of the data (src/crypto/README.md).'];
  for (const [v, k] of [...secrets].sort((a, b) => a[0] - b[0])) lines.push(v === 1 ? k.toString('base64') : `${v}:${k.toString('base64')}`);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, lines.join('\n') + '\n', { mode: 0o600 });
  const fd = openSync(tmp, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  chmodSync(file, 0o600);
}

/* ------------------------------------------------------------- loading */

/**
 * The provider the server and the CLI use, from the environment:
 *  - master key: GUICHET_MASTER_KEY (base64; "ROOT,2:KEY" for versions), else
 *    GUICHET_KEY_FILE, else $GUICHET_DATA_DIR/keys/master.key, created on
 *    first start with mode 0600 — but never re-created beside an existing
 *    keyring, whose keys only the lost key can open;
 *  - keyring: GUICHET_KEYRING_URL (a PostgreSQL database of its own — in
 *    production on another cluster than the data, see README), else a file
 *    keyring in $GUICHET_DATA_DIR/keys/keyring/. In production with
 *    PostgreSQL the URL is required: a file keyring cannot be shared by
 *    several instances.
 */
export function loadKeyProvider(env: NodeJS.ProcessEnv, dataDir: string): KeyProvider {
  const keyringUrl = env.GUICHET_KEYRING_URL;
  if (!keyringUrl && env.NODE_ENV === 'production' && env.DATABASE_URL) {
    throw new KeyError('GUICHET_KEYRING_URL: required in production with PostgreSQL — the keyring must live in a database of its own, outside the data backups (src/crypto/README.md)');
  }
  const keyringDir = resolve(join(dataDir, 'keys', 'keyring'));
  const openKeyring = (): Keyring => (keyringUrl ? SqlKeyring.fromUrl(keyringUrl) : LocalKeyring.open(keyringDir));

  const inline = env.GUICHET_MASTER_KEY;
  if (inline) {
    const secrets = parseSecrets(inline, 'GUICHET_MASTER_KEY');
    return new LocalKeyProvider(secrets, 'env:GUICHET_MASTER_KEY', openKeyring(), null, false);
  }
  const file = resolve(env.GUICHET_KEY_FILE ?? join(dataDir, 'keys', 'master.key'));
  if (!existsSync(file)) {
    if (env.GUICHET_KEY_FILE) throw new KeyError(`GUICHET_KEY_FILE: ${file} does not exist`);
    if (!keyringUrl && LocalKeyring.hasData(keyringDir)) {
      throw new KeyError(
        `key file ${file} is missing, but the keyring ${keyringDir} holds keys wrapped by it: restore the key file from its own backup ` +
          '(a new key would leave every family unreadable)',
      );
    }
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    writeFileSync(file, randomBytes(32).toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
    chmodSync(file, 0o600);
  }
  return new LocalKeyProvider(readKeyFile(file), `file:${file}`, openKeyring(), file, true);
}

/** For tests and benchmarks: a provider over a fixed secret, with a keyring in memory unless one is given. */
export function keyProviderFromSecret(secret: Buffer, keyring?: Keyring): KeyProvider {
  if (secret.length !== 32) throw new KeyError('secret: must be 32 bytes');
  return new LocalKeyProvider(new Map([[1, secret]]), 'memory', keyring ?? LocalKeyring.memory(), null, true);
}
