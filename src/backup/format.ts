/**
 * The encrypted backup file: what `guichet backup` writes and `guichet
 * restore` reads.
 *
 *   magic "GUICHBK1" (8 bytes)
 *   header length (uint32 BE) ‖ header (UTF-8 JSON, at most 64 KiB)
 *   chunks, each: plaintext length (uint32 BE) ‖ ciphertext ‖ GCM tag (16)
 *
 * The header names the format, what the file holds (the data database of an
 * engine, or a keyring), when it was made, the id of the key and a random
 * 32-byte salt — nothing about the data (no table, no count). It is in
 * clear, but authenticated: every chunk's
 * associated data starts with SHA-256(magic ‖ header), so a changed header
 * makes the first chunk fail.
 *
 * Each file has its own key, HKDF-SHA256(derive('backup.v1'), salt), so the
 * chunk counter can be the nonce (12 bytes: 0 ‖ counter as uint64 ‖ 0 0 0)
 * without a nonce ever repeating under one key. The associated data of a
 * chunk also carries its index and a final flag (the STREAM construction of
 * Hoang, Reyhanitabar, Rogaway and Vizár): chunks cannot be reordered,
 * dropped or duplicated, and a file cut at a chunk boundary lacks its final
 * chunk and is refused as truncated.
 *
 * The key comes from the key provider's derive(): HKDF of the root secret,
 * which a master rotation does not change (like the CSRF and TOTP subkeys),
 * so a rotation never strands a backup. The key id is a fingerprint of that
 * key: a backup made under another master key is named as such before any
 * decryption is attempted.
 */
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import type { KeyProvider } from '../crypto/keys.ts';

export const MAGIC = Buffer.from('GUICHBK1', 'ascii');
const MAX_HEADER = 64 * 1024;
export const CHUNK = 1024 * 1024;
const TAG = 16;

/** What a backup holds. */
export type BackupContents = 'postgres' | 'pglite' | 'keyring-file' | 'keyring-postgres';

export interface BackupHeader {
  format: 'guichet-backup';
  version: 1;
  contents: BackupContents;
  createdAt: string;
  keyId: string;
  salt: string;
  chunkSize: number;
  /** The tools and server that made it (pg_dump and server versions, PGlite's), for restore to check. */
  made: Record<string, string | number>;
  /** The last migration applied in the data it holds, when it holds data. */
  schemaVersion?: number;
}

/** A file that is not a Guichet backup, or one that was altered, cut short or made with another key. */
export class BackupFormatError extends Error {}

function backupRoot(keys: KeyProvider): Buffer {
  return keys.derive('backup.v1');
}

/** The fingerprint of the backup key this provider holds ("k1:" and 16 hex digits). */
export function backupKeyId(keys: KeyProvider): string {
  return `k1:${Buffer.from(hkdfSync('sha256', backupRoot(keys), Buffer.alloc(0), 'guichet.backup.v1.key-id', 8)).toString('hex')}`;
}

function fileKey(keys: KeyProvider, salt: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', backupRoot(keys), salt, 'guichet.backup.v1.file', 32));
}

function nonce(index: number): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64BE(BigInt(index), 1);
  return n;
}

function chunkAad(headerHash: Buffer, index: number, final: boolean): Buffer {
  const a = Buffer.alloc(headerHash.length + 9);
  headerHash.copy(a, 0);
  a.writeBigUInt64BE(BigInt(index), headerHash.length);
  a[headerHash.length + 8] = final ? 1 : 0;
  return a;
}

/** Encrypts a stream into a backup file's bytes; the header goes first. */
export function encryptStream(keys: KeyProvider, fields: Omit<BackupHeader, 'format' | 'version' | 'keyId' | 'salt' | 'chunkSize' | 'createdAt'> & { createdAt?: string }): { header: BackupHeader; stream: Transform } {
  const salt = randomBytes(32);
  const header: BackupHeader = {
    format: 'guichet-backup',
    version: 1,
    contents: fields.contents,
    createdAt: fields.createdAt ?? new Date().toISOString(),
    keyId: backupKeyId(keys),
    salt: salt.toString('base64'),
    chunkSize: CHUNK,
    made: fields.made,
    ...(fields.schemaVersion !== undefined ? { schemaVersion: fields.schemaVersion } : {}),
  };
  const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(headerBytes.length);
  const preamble = Buffer.concat([MAGIC, len, headerBytes]);
  const headerHash = createHash('sha256').update(preamble).digest();
  const key = fileKey(keys, salt);
  let index = 0;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let started = false;

  const seal = (plain: Buffer, final: boolean): Buffer => {
    const cipher = createCipheriv('aes-256-gcm', key, nonce(index));
    cipher.setAAD(chunkAad(headerHash, index, final));
    const ct = Buffer.concat([cipher.update(plain), cipher.final()]);
    const l = Buffer.alloc(4);
    l.writeUInt32BE(plain.length);
    index++;
    return Buffer.concat([l, ct, cipher.getAuthTag()]);
  };

  const stream = new Transform({
    transform(data: Buffer, _enc, done: TransformCallback) {
      if (!started) {
        this.push(preamble);
        started = true;
      }
      pending.push(data);
      pendingBytes += data.length;
      // Keep at least one byte back: the last chunk must be the one marked final.
      while (pendingBytes > CHUNK) {
        const all = Buffer.concat(pending);
        this.push(seal(all.subarray(0, CHUNK), false));
        pending = [all.subarray(CHUNK)];
        pendingBytes = all.length - CHUNK;
      }
      done();
    },
    flush(done: TransformCallback) {
      if (!started) this.push(preamble);
      this.push(seal(Buffer.concat(pending), true));
      done();
    },
  });
  return { header, stream };
}

/** Reads the header of a backup file's first bytes; null when more bytes are needed. */
export function parsePreamble(buf: Buffer): { header: BackupHeader; length: number; hash: Buffer } | null {
  if (buf.length < MAGIC.length) return null;
  if (!buf.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new BackupFormatError('not a Guichet backup (its first bytes are not "GUICHBK1"): was it made by `guichet backup`?');
  }
  if (buf.length < MAGIC.length + 4) return null;
  const len = buf.readUInt32BE(MAGIC.length);
  if (len < 2 || len > MAX_HEADER) throw new BackupFormatError(`the backup's header is damaged (it claims ${len} bytes)`);
  const end = MAGIC.length + 4 + len;
  if (buf.length < end) return null;
  let header: BackupHeader;
  try {
    header = JSON.parse(buf.subarray(MAGIC.length + 4, end).toString('utf8')) as BackupHeader;
  } catch {
    throw new BackupFormatError("the backup's header is damaged (not JSON)");
  }
  if (header.format !== 'guichet-backup') throw new BackupFormatError("the backup's header is damaged (no format name)");
  if (header.version !== 1) throw new BackupFormatError(`backup format version ${String(header.version)}: this Guichet reads version 1 only (use the release that made it)`);
  if (typeof header.salt !== 'string' || Buffer.from(header.salt, 'base64').length !== 32 || typeof header.keyId !== 'string') {
    throw new BackupFormatError("the backup's header is damaged (salt or key id)");
  }
  if (!Number.isInteger(header.chunkSize) || header.chunkSize < 1 || header.chunkSize > 64 * 1024 * 1024) {
    throw new BackupFormatError("the backup's header is damaged (chunk size)");
  }
  return { header, length: end, hash: createHash('sha256').update(buf.subarray(0, end)).digest() };
}

/**
 * Decrypts a backup file's bytes. Each chunk is authenticated before its
 * plaintext is passed on; the stream fails with a BackupFormatError naming
 * the chunk and the byte offset when a chunk was altered, when the file ends
 * before its final chunk, or when bytes follow it. `onHeader` sees the header
 * before any plaintext (to refuse a backup of the wrong kind early).
 */
export function decryptStream(keys: KeyProvider, onHeader?: (h: BackupHeader) => void): Transform {
  let buf: Buffer = Buffer.alloc(0);
  let header: BackupHeader | null = null;
  let hash: Buffer | null = null;
  let key: Buffer | null = null;
  let index = 0;
  let offset = 0;
  let finished = false;

  const step = (t: Transform): void => {
    if (!header) {
      const p = parsePreamble(buf);
      if (!p) return;
      header = p.header;
      hash = p.hash;
      const mine = backupKeyId(keys);
      if (header.keyId !== mine) {
        throw new BackupFormatError(
          `this backup was encrypted with backup key ${header.keyId}; the key provider (${keys.source}) holds ${mine}. ` +
            'Restore with the master key the backup was made with (or the header was altered)',
        );
      }
      key = fileKey(keys, Buffer.from(header.salt, 'base64'));
      onHeader?.(header);
      buf = buf.subarray(p.length);
      offset = p.length;
    }
    for (;;) {
      if (finished) {
        if (buf.length) throw new BackupFormatError(`${buf.length} bytes follow the backup's final chunk (at byte ${offset}): the file was altered`);
        return;
      }
      if (buf.length < 4) return;
      const plainLen = buf.readUInt32BE(0);
      if (plainLen > header.chunkSize) throw new BackupFormatError(`chunk ${index} at byte ${offset} is damaged (it claims ${plainLen} bytes): the file was altered`);
      const total = 4 + plainLen + TAG;
      if (buf.length < total) return;
      const ct = buf.subarray(4, 4 + plainLen);
      const tag = buf.subarray(4 + plainLen, total);
      // A chunk shorter than the chunk size can only be the last one; try it as final first.
      const tryFinal = plainLen < header.chunkSize;
      let plain: Buffer | null = null;
      for (const final of tryFinal ? [true, false] : [false, true]) {
        const d = createDecipheriv('aes-256-gcm', key!, nonce(index));
        d.setAAD(chunkAad(hash!, index, final));
        d.setAuthTag(tag);
        try {
          plain = Buffer.concat([d.update(ct), d.final()]);
          finished = final;
          break;
        } catch {
          /* try the other flag */
        }
      }
      if (!plain) throw new BackupFormatError(`chunk ${index} at byte ${offset} does not authenticate: the backup was altered or damaged`);
      t.push(plain);
      index++;
      offset += total;
      buf = buf.subarray(total);
    }
  };

  return new Transform({
    transform(data: Buffer, _enc, done: TransformCallback) {
      buf = buf.length ? Buffer.concat([buf, data]) : data;
      try {
        step(this);
        done();
      } catch (err) {
        done(err as Error);
      }
    },
    flush(done: TransformCallback) {
      if (!header) return done(new BackupFormatError(`the file ends after ${buf.length} bytes, inside the header: truncated, or not a backup`));
      if (!finished) return done(new BackupFormatError(`the backup ends at byte ${offset + buf.length} before its final chunk: truncated (copy it again from where it is kept)`));
      done();
    },
  });
}
