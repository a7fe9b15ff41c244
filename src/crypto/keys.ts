import { hkdfSync, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

/**
 * Where Guichet's root secret comes from. The default is a key file in the
 * data directory, created on first start with mode 0600; GUICHET_MASTER_KEY
 * (base64, 32 bytes) overrides it, and GUICHET_KEY_FILE names another file.
 * A KMS or Vault provider implements the same interface.
 */
export interface KeyProvider {
  readonly source: string;
  /** A subkey for one purpose, derived with HKDF-SHA256 from the root secret. */
  derive(purpose: string, length?: number): Buffer;
}

class LocalKeyProvider implements KeyProvider {
  constructor(
    private readonly root: Buffer,
    readonly source: string,
  ) {}
  derive(purpose: string, length = 32): Buffer {
    return Buffer.from(hkdfSync('sha256', this.root, Buffer.alloc(0), `guichet:${purpose}`, length));
  }
}

export class KeyError extends Error {}

export function loadKeyProvider(env: NodeJS.ProcessEnv, dataDir: string): KeyProvider {
  const inline = env.GUICHET_MASTER_KEY;
  if (inline) {
    const key = Buffer.from(inline, 'base64');
    if (key.length !== 32) throw new KeyError('GUICHET_MASTER_KEY: must be 32 bytes, base64-encoded');
    return new LocalKeyProvider(key, 'env:GUICHET_MASTER_KEY');
  }
  const file = resolve(env.GUICHET_KEY_FILE ?? join(dataDir, 'keys', 'master.key'));
  if (!existsSync(file)) {
    if (env.GUICHET_KEY_FILE) throw new KeyError(`GUICHET_KEY_FILE: ${file} does not exist`);
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    writeFileSync(file, randomBytes(32).toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
    chmodSync(file, 0o600);
  }
  const mode = statSync(file).mode & 0o077;
  if (mode) throw new KeyError(`key file ${file}: readable by group or others (chmod 600 it)`);
  const key = Buffer.from(readFileSync(file, 'utf8').trim(), 'base64');
  if (key.length !== 32) throw new KeyError(`key file ${file}: must hold 32 bytes, base64-encoded`);
  return new LocalKeyProvider(key, `file:${file}`);
}

/** For tests: a provider over a fixed secret. */
export function keyProviderFromSecret(secret: Buffer): KeyProvider {
  return new LocalKeyProvider(secret, 'memory');
}
