/**
 * The errors of the crypto layer. All are KeyErrors, so the CLI prints their
 * message (exit 2) rather than a stack; each message names what is wrong and
 * where (which key, which keyring, which row and column).
 */

/** A key that is missing, unreadable, or not the right one. */
export class KeyError extends Error {
  override readonly name: string = 'KeyError';
}

/** The bytes did not authenticate under the master key version they name: wrong master key, or a damaged keyring entry. */
export class MasterKeyMismatchError extends KeyError {
  override readonly name = 'MasterKeyMismatchError';
}

/** The keyring cannot be read: corrupt, locked by another process, unreachable. */
export class KeyringError extends KeyError {
  override readonly name = 'KeyringError';
}

/** A stored value that cannot be decrypted as what it claims to be: damaged, truncated, or moved from elsewhere. */
export class CiphertextError extends KeyError {
  override readonly name = 'CiphertextError';
  readonly code = 'ciphertext_invalid';
}

/** The keyring has no such key and no trace of its destruction: it is not the keyring this data was written with. */
export class DataKeyMissingError extends KeyError {
  override readonly name = 'DataKeyMissingError';
  readonly code = 'data_key_missing';
}

/** The family's data key was destroyed (crypto-shredding): its data is gone for good, wherever copies lie. */
export class DataKeyDestroyedError extends KeyError {
  override readonly name = 'DataKeyDestroyedError';
  readonly code = 'data_key_destroyed';
  constructor(
    readonly familyId: string,
    readonly version: number,
    readonly destroyedAt: Date,
  ) {
    super(`family ${familyId}: its data key (version ${version}) was destroyed on ${destroyedAt.toISOString()} — the file was purged and cannot be read`);
  }
}
