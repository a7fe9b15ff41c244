/**
 * A keyring for a test, in the shape production uses beside the test's data
 * database: on PGlite runs a file keyring in a temporary directory (the
 * embedded mode's $GUICHET_DATA_DIR/keys/keyring/), on PostgreSQL runs a
 * SqlKeyring in a database of its own (GUICHET_KEYRING_URL), created for the
 * test and dropped at close.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { keyProviderFromSecret, type KeyProvider } from '../../src/crypto/keys.ts';
import { LocalKeyring, SqlKeyring, type Keyring } from '../../src/crypto/keyring.ts';
import { testDatabaseInfo } from '../helpers/db.ts';

export interface TestKeyring {
  keyring: Keyring;
  /** A URL (PostgreSQL) or directory (file) that opens the same keyring again. */
  where: { kind: 'file'; dir: string } | { kind: 'sql'; url: string };
  /** Opens the same keyring store again (another "process"). */
  reopen(): Keyring;
  close(): Promise<void>;
}

export async function createTestKeyring(): Promise<TestKeyring> {
  const info = testDatabaseInfo();
  if (info.kind === 'pglite') {
    const dir = mkdtempSync(join(tmpdir(), 'guichet-keyring-'));
    const keyring = LocalKeyring.open(dir);
    return {
      keyring,
      where: { kind: 'file', dir },
      reopen: () => LocalKeyring.open(dir),
      close: async () => {
        await keyring.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const name = `guichet_test_${Date.now()}_${process.pid}_kr${randomBytes(3).toString('hex')}`;
  const admin = new pg.Client({ connectionString: info.adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  const u = new URL(info.adminUrl);
  u.pathname = `/${name}`;
  const url = u.toString();
  const opened: SqlKeyring[] = [];
  const open = () => {
    const k = SqlKeyring.fromUrl(url);
    opened.push(k);
    return k;
  };
  const keyring = open();
  return {
    keyring,
    where: { kind: 'sql', url },
    reopen: open,
    close: async () => {
      for (const k of opened) await k.close().catch(() => undefined);
      const a = new pg.Client({ connectionString: info.adminUrl });
      await a.connect();
      try {
        await a.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await a.end();
      }
    },
  };
}

export const SECRET = Buffer.alloc(32, 7);

/** A provider over the test secret and a keyring. */
export function providerOver(keyring: Keyring, secret = SECRET): KeyProvider {
  return keyProviderFromSecret(secret, keyring);
}
