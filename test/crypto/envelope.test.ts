/**
 * The envelope: field ciphertexts bound to their place, family keys bound to
 * their family, the master key checked against the keyring, the blind index,
 * the key file and the keyring store refusing bad input with a message that
 * names what is wrong. The keyring is the production shape of the run's
 * database kind (a file on PGlite runs, a PostgreSQL database of its own on
 * PostgreSQL runs).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CiphertextError, DataKeyDestroyedError, DataKeyMissingError, Envelope, keyVersionOf, openField, sealField, type FamilyKey, type FieldRef } from '../../src/crypto/envelope.ts';
import { KeyError, MasterKeyMismatchError } from '../../src/crypto/errors.ts';
import { keyProviderFromSecret, loadKeyProvider, parseSecrets } from '../../src/crypto/keys.ts';
import { KeyringError, LocalKeyring } from '../../src/crypto/keyring.ts';
import { createTestKeyring, providerOver, type TestKeyring } from './keyring-helper.ts';

let kr: TestKeyring;
let env: Envelope;
const tenantA = randomUUID();
const tenantB = randomUUID();

beforeAll(async () => {
  kr = await createTestKeyring();
  env = new Envelope(providerOver(kr.keyring));
});

afterAll(async () => {
  await kr?.close();
});

const key = (version = 1): FamilyKey => ({ tenantId: tenantA, familyId: randomUUID(), version, key: randomBytes(32) });
const place = (over: Partial<FieldRef> = {}): FieldRef => ({ tenantId: tenantA, table: 'children', column: 'first_name', rowId: randomUUID(), ...over });

describe('field ciphertexts', () => {
  it('round-trip text, accents and NULL; the format is versioned and names the key version', () => {
    const k = key(3);
    for (const v of ['Éloïse', 'Vaillancourt-Bérubé', '', '2025-03-27', '𝒜 ’ 👶', null]) {
      const at = place();
      const blob = sealField(k, at, v);
      expect(blob[0]).toBe(1);
      expect(keyVersionOf(blob, at)).toBe(3);
      expect(openField(k, at, blob)).toBe(v);
    }
  });

  it('hides what a value is: the same value twice gives two ciphertexts, NULL looks like a short name, lengths show in 16-byte steps only', () => {
    const k = key();
    const at = place();
    expect(sealField(k, at, 'Léa').equals(sealField(k, at, 'Léa'))).toBe(false);
    expect(sealField(k, at, null).length).toBe(sealField(k, at, 'Léa').length);
    expect(sealField(k, at, 'Al').length).toBe(sealField(k, at, 'Marie-Ève').length);
  });

  it('a ciphertext moved to another row, column, table or tenant does not decrypt, and the error names the place', () => {
    const k = key();
    const at = place();
    const blob = sealField(k, at, 'Anouk');
    const elsewhere: [string, FieldRef][] = [
      ['another row', { ...at, rowId: randomUUID() }],
      ['another column', { ...at, column: 'last_name' }],
      ['another table', { ...at, table: 'families' }],
      ['another tenant', { ...at, tenantId: tenantB }],
    ];
    for (const [what, there] of elsewhere) {
      expect(() => openField(k, there, blob), what).toThrow(CiphertextError);
      expect(() => openField(k, there, blob), what).toThrow(new RegExp(`${there.table}\\.${there.column} of row ${there.rowId}.*does not authenticate`));
    }
    // and under another family's key
    expect(() => openField({ ...key(), version: 1 }, at, blob)).toThrow(/does not authenticate/);
  });

  it('a corrupt ciphertext is named as such: a flipped bit, a changed key version, truncation, an unknown format', () => {
    const k = key();
    const at = place();
    const blob = sealField(k, at, 'Anouk');
    for (const i of [0, 5, 20, blob.length - 1]) {
      const bad = Buffer.from(blob);
      bad[i] = bad[i]! ^ 1;
      expect(() => openField(k, at, bad), `byte ${i}`).toThrow(CiphertextError);
    }
    const otherVersion = Buffer.from(blob);
    otherVersion.writeUInt32BE(2, 1);
    expect(() => openField(k, at, otherVersion)).toThrow(/made with key version 2, not 1/);
    expect(() => openField(k, at, blob.subarray(0, 20))).toThrow(/truncated/);
    const v9 = Buffer.from(blob);
    v9[0] = 9;
    expect(() => openField(k, at, v9)).toThrow(/unknown ciphertext format 9/);
  });
});

describe('the key hierarchy', () => {
  it('a family key is made once, stored wrapped in the keyring (not in clear), and unwraps to the same key from another process', async () => {
    const familyId = randomUUID();
    const made = await env.createFamilyKeys(tenantA, [{ familyId, version: 1 }]);
    const k = made.get(`${familyId}/1`)!;
    const [rec] = await kr.keyring.familyKeys(tenantA, [familyId]);
    expect(rec).toMatchObject({ familyId, version: 1, tenantKeyVersion: 1 });
    expect(rec!.wrapped.includes(k.key)).toBe(false);
    // Another process: a fresh envelope over the same keyring store and master key.
    const other = new Envelope(providerOver(kr.reopen()));
    expect((await other.familyKey(tenantA, familyId, 1)).key.equals(k.key)).toBe(true);
    // Asking again does not replace it.
    const again = await env.createFamilyKeys(tenantA, [{ familyId, version: 1 }]);
    expect(again.get(`${familyId}/1`)!.key.equals(k.key)).toBe(true);
  });

  it('a wrapped family key copied to another family in the keyring does not unwrap', async () => {
    const [f1, f2] = [randomUUID(), randomUUID()];
    await env.createFamilyKeys(tenantA, [{ familyId: f1, version: 1 }]);
    const [rec] = await kr.keyring.familyKeys(tenantA, [f1]);
    await kr.keyring.addFamilyKeys([{ ...rec!, familyId: f2 }]);
    const fresh = new Envelope(providerOver(kr.reopen()));
    await expect(fresh.familyKey(tenantA, f2, 1)).rejects.toThrow(/family .* key version 1: wrapped key does not authenticate under its tenant key — damaged, or moved from another family/);
  });

  it('a key the keyring never had, and a destroyed one, are told apart', async () => {
    const f = randomUUID();
    await expect(env.familyKey(tenantA, f, 1)).rejects.toThrow(DataKeyMissingError);
    await expect(env.familyKey(tenantA, f, 1)).rejects.toThrow(/no data key version 1 in the keyring .* not the keyring this data was written with/);
    await env.createFamilyKeys(tenantA, [{ familyId: f, version: 1 }]);
    expect(await env.destroyFamilyKeys(tenantA, f, 1, new Date('2026-01-02T03:04:05Z'))).toBe(1);
    const fresh = new Envelope(providerOver(kr.reopen()));
    const err = await fresh.familyKey(tenantA, f, 1).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataKeyDestroyedError);
    expect((err as Error).message).toMatch(/data key \(version 1\) was destroyed on 2026-01-02T03:04:05.000Z — the file was purged/);
  });

  it('the wrong master key is named as such, not as corrupt data', async () => {
    const f = randomUUID();
    await env.createFamilyKeys(tenantA, [{ familyId: f, version: 1 }]);
    const wrong = new Envelope(keyProviderFromSecret(Buffer.alloc(32, 9), kr.reopen()));
    const err = await wrong.familyKey(tenantA, f, 1).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MasterKeyMismatchError);
    expect((err as Error).message).toMatch(/the master key \(memory, version 1\) is not the one the keyring .* was written with: wrong key file or GUICHET_MASTER_KEY/);
  });

  it('tenants have separate keys: a tenant key wrapped for one tenant does not open as another', async () => {
    const a = await env.currentTenantKey(tenantA, 'kek');
    const b = await env.currentTenantKey(tenantB, 'kek');
    expect(a.key.equals(b.key)).toBe(false);
    const [recA] = await kr.keyring.tenantKeys(tenantA, 'kek');
    const forged = randomUUID();
    await kr.keyring.addTenantKey({ ...recA!, tenantId: forged });
    const fresh = new Envelope(providerOver(kr.reopen()));
    await expect(fresh.tenantKey(forged, 'kek', 1)).rejects.toThrow(/the entry is damaged; restore the keyring from its backup/);
  });
});

describe('the blind index', () => {
  it('is equal for equal NIRECs in a tenant, different across tenants, 32 bytes, and not a plain hash', async () => {
    const x = await env.blindIndex(tenantA, 'nirec', 'QZXW7K4JT9');
    expect(x).toHaveLength(32);
    expect((await env.blindIndex(tenantA, 'nirec', 'QZXW7K4JT9')).equals(x)).toBe(true);
    expect((await env.blindIndex(tenantA, 'nirec', 'QZXW7K4JT8')).equals(x)).toBe(false);
    expect((await env.blindIndex(tenantB, 'nirec', 'QZXW7K4JT9')).equals(x)).toBe(false);
    const { createHash } = await import('node:crypto');
    expect(createHash('sha256').update('QZXW7K4JT9').digest().equals(x)).toBe(false);
  });
});

describe('the master key from the environment or a file', () => {
  const dirs: string[] = [];
  const tmp = () => {
    const d = mkdtempSync(join(tmpdir(), 'guichet-keys-'));
    dirs.push(d);
    return d;
  };
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('creates the key file on first start, mode 0600, and keeps it', async () => {
    const dir = tmp();
    const p = loadKeyProvider({}, dir);
    const file = join(dir, 'keys', 'master.key');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const first = readFileSync(file, 'utf8');
    await p.close();
    const again = loadKeyProvider({}, dir);
    expect(readFileSync(file, 'utf8')).toBe(first);
    expect(again.derive('x').equals(p.derive('x'))).toBe(true);
    await again.close();
  });

  it('a missing key file beside a keyring that holds keys is an error, not a new key', async () => {
    const dir = tmp();
    const p = loadKeyProvider({}, dir);
    await new Envelope(p).createFamilyKeys(randomUUID(), [{ familyId: randomUUID(), version: 1 }]);
    await p.close();
    rmSync(join(dir, 'keys', 'master.key'));
    expect(() => loadKeyProvider({}, dir)).toThrow(/key file .*master\.key is missing, but the keyring .* holds keys wrapped by it: restore the key file/);
    expect(existsSync(join(dir, 'keys', 'master.key'))).toBe(false);
  });

  it('names the problem with a key file or variable', () => {
    const dir = tmp();
    expect(() => loadKeyProvider({ GUICHET_KEY_FILE: join(dir, 'nope.key') }, dir)).toThrow(/GUICHET_KEY_FILE: .*nope\.key does not exist/);
    const loose = join(dir, 'loose.key');
    writeFileSync(loose, randomBytes(32).toString('base64'));
    chmodSync(loose, 0o644);
    expect(() => loadKeyProvider({ GUICHET_KEY_FILE: loose }, dir)).toThrow(/readable by group or others \(chmod 600 it\)/);
    const short = join(dir, 'short.key');
    writeFileSync(short, randomBytes(16).toString('base64'), { mode: 0o600 });
    expect(() => loadKeyProvider({ GUICHET_KEY_FILE: short }, dir)).toThrow(/short\.key: the key must be 32 bytes/);
    expect(() => loadKeyProvider({ GUICHET_MASTER_KEY: 'not base64!' }, dir)).toThrow(/GUICHET_MASTER_KEY: entry 1 is not base64/);
    expect(() => loadKeyProvider({ GUICHET_MASTER_KEY: `2:${randomBytes(32).toString('base64')}` }, dir)).toThrow(/GUICHET_MASTER_KEY: no root secret/);
    expect(() => loadKeyProvider({ NODE_ENV: 'production', DATABASE_URL: 'postgres://x@y/z', GUICHET_MASTER_KEY: randomBytes(32).toString('base64') }, dir)).toThrow(/GUICHET_KEYRING_URL: required in production with PostgreSQL/);
  });

  it('reads versioned key files: a bare line is the root secret, N:KEY is version N, the highest is current', async () => {
    const root = randomBytes(32).toString('base64');
    const v2 = randomBytes(32).toString('base64');
    const s = parseSecrets(`# comment\n${root}\n2:${v2}\n`, 'test');
    expect([...s.keys()]).toEqual([1, 2]);
    const p = loadKeyProvider({ GUICHET_MASTER_KEY: `${root},2:${v2}` }, tmp());
    expect(await p.currentMasterVersion()).toBe(2);
    // derive() belongs to the root secret whatever the current wrapping version
    const p1 = loadKeyProvider({ GUICHET_MASTER_KEY: root }, tmp());
    expect(p.derive('csrf').equals(p1.derive('csrf'))).toBe(true);
    await expect(p.addMasterVersion()).rejects.toThrow(KeyError);
    await p.close();
    await p1.close();
  });
});

describe('the file keyring store', () => {
  it('drops a torn last line (an unacknowledged write) and refuses a corrupt one, naming the line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'guichet-kr-'));
    try {
      const ring = LocalKeyring.open(dir);
      const e = new Envelope(keyProviderFromSecret(Buffer.alloc(32, 3), ring));
      const t = randomUUID();
      const f = randomUUID();
      await e.createFamilyKeys(t, [{ familyId: f, version: 1 }]);
      await ring.close();
      const file = join(dir, 'keyring.jsonl');
      appendFileSync(file, '{"op":"fk","t":"');
      const again = LocalKeyring.open(dir);
      expect(await again.familyKeys(t, [f])).toHaveLength(1);
      expect(readFileSync(file, 'utf8').endsWith('\n')).toBe(true);
      await again.close();
      writeFileSync(file, readFileSync(file, 'utf8').replace(/\n/, '\nnot json\n'));
      const broken = LocalKeyring.open(dir);
      await expect(broken.familyKeys(t, [f])).rejects.toThrow(/keyring .*keyring\.jsonl: line 2 is not a valid record .* restore the keyring from its backup/);
      await broken.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('has one process at a time: a live holder is named', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'guichet-kr-'));
    try {
      mkdirSync(dir, { recursive: true });
      // pid 1 is alive on every system
      writeFileSync(join(dir, 'keyring.lock'), '1');
      const ring = LocalKeyring.open(dir);
      const err = await ring.tenantKeys(randomUUID(), 'kek').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(KeyringError);
      expect((err as Error).message).toMatch(/keyring .* is in use by process 1: a file keyring has one process at a time/);
      await ring.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
