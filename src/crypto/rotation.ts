import { randomUUID } from 'node:crypto';
import type { Envelope } from './envelope.ts';
import { KeyError } from './keys.ts';
import type { RotationRecord } from './keyring.ts';

/**
 * Key rotation, online and resumable.
 *
 * Tenant (`guichet keys rotate --tenant T`): a new KEK version becomes the one
 * new family keys are wrapped with, then every family key is unwrapped with
 * its old KEK and re-wrapped with the new one, in batches, in family id
 * order. Each batch and the rotation's progress are written together (one
 * keyring transaction, or one synced write of the file keyring), so an
 * interrupted rotation resumes where it stopped. Data is never re-encrypted:
 * the family keys themselves do not change, so reads keep working throughout
 * (both KEK versions exist until the end). At the end the old KEK versions
 * are deleted; the keyring refuses while any family key still uses one (a
 * key wrapped meanwhile by a process that had not yet seen the new version),
 * and the walk starts again until none is left.
 *
 * Master (`--master`): the provider gains a new wrapping version (or, for a
 * provider managed elsewhere, the operator has added one), every tenant key is
 * re-wrapped under it, then the provider forgets the old versions. The
 * root secret (version 1) stays: derive() subkeys of other modules depend on it.
 *
 * The blind-index key is not rotated here: a new one means recomputing every
 * index from the decrypted NIRECs, a re-indexing job of its own.
 */
export interface RotationProgress {
  done: number;
  total: number;
}

export interface RotateOptions {
  batchSize?: number;
  onProgress?: (p: RotationProgress) => void;
  /** Called after each batch is durably saved; throwing from it stops the rotation there (tests: an interruption). */
  afterBatch?: (batch: number) => void | Promise<void>;
}

export interface TenantRotationResult {
  tenantId: string;
  fromVersion: number;
  toVersion: number;
  rewrapped: number;
  total: number;
  resumed: boolean;
  retired: number[];
}

export async function rotateTenantKey(env: Envelope, tenantId: string, opts: RotateOptions = {}): Promise<TenantRotationResult> {
  const ring = env.keyring;
  const batchSize = opts.batchSize ?? 500;
  let rot = await ring.openRotation('tenant', tenantId);
  const resumed = !!rot;
  if (!rot) {
    const keks = await ring.tenantKeys(tenantId, 'kek');
    if (!keks.length) {
      // Nothing was ever encrypted for this tenant: its first KEK is all there is to make.
      const first = await env.currentTenantKey(tenantId, 'kek');
      return { tenantId, fromVersion: 0, toVersion: first.version, rewrapped: 0, total: 0, resumed: false, retired: [] };
    }
    const from = keks[keks.length - 1]!.version;
    const to = await env.addTenantKeyVersion(tenantId);
    const now = new Date();
    rot = { id: randomUUID(), scope: 'tenant', tenantId, fromVersion: from, toVersion: to, cursor: null, done: 0, total: await ring.countFamilyKeys(tenantId, to), startedAt: now, updatedAt: now, finishedAt: null };
    await ring.saveRotation(rot);
  } else {
    // The progress counts keys re-wrapped before the interruption; the rest is still to do.
    rot = { ...rot, total: rot.done + (await ring.countFamilyKeys(tenantId, rot.toVersion)) };
  }
  opts.onProgress?.({ done: rot.done, total: rot.total });
  let rewrapped = 0;
  let batchNo = 0;
  let retries = 0;
  for (;;) {
    const batch = await ring.familyKeysNotUnder(tenantId, rot.toVersion, rot.cursor, batchSize);
    if (!batch.length) {
      const left = await ring.countFamilyKeys(tenantId, rot.toVersion);
      if (left === 0) {
        const olds = (await ring.tenantKeys(tenantId, 'kek')).filter((r) => r.version !== rot!.toVersion);
        const retired: number[] = [];
        let inUse = false;
        for (const o of olds) {
          if ((await ring.deleteTenantKey(tenantId, 'kek', o.version)) === 'in_use') inUse = true;
          else retired.push(o.version);
        }
        if (!inUse) {
          rot = { ...rot, cursor: null, updatedAt: new Date(), finishedAt: new Date() };
          await ring.saveRotation(rot);
          env.forgetTenant(tenantId);
          opts.onProgress?.({ done: rot.done, total: rot.total });
          return { tenantId, fromVersion: rot.fromVersion, toVersion: rot.toVersion, rewrapped, total: rot.total, resumed, retired };
        }
      }
      if (++retries > 20) throw new KeyError(`tenant ${tenantId}: keys keep appearing under an old key version; is another process running an old release?`);
      rot = { ...rot, cursor: null, total: rot.done + left };
      continue;
    }
    const rewraps = [];
    for (const rec of batch) {
      const key = await env.unwrapFamilyKey(rec);
      rewraps.push({ tenantId, familyId: rec.familyId, version: rec.version, fromTenantKeyVersion: rec.tenantKeyVersion, toTenantKeyVersion: rot.toVersion, wrapped: await env.wrapFamilyKey(key, rot.toVersion) });
    }
    const next: RotationRecord = { ...rot, cursor: batch[batch.length - 1]!.familyId, done: rot.done + batch.length, updatedAt: new Date() };
    rewrapped += await ring.rewrapFamilyKeys(rewraps, next);
    rot = next;
    opts.onProgress?.({ done: rot.done, total: Math.max(rot.total, rot.done) });
    await opts.afterBatch?.(++batchNo);
  }
}

export interface MasterRotationResult {
  toVersion: number;
  rewrapped: number;
  total: number;
  resumed: boolean;
  retired: number[];
}

export async function rotateMaster(env: Envelope, opts: RotateOptions = {}): Promise<MasterRotationResult> {
  const ring = env.keyring;
  const provider = env.provider;
  let rot = await ring.openRotation('master', null);
  const resumed = !!rot;
  const all = await ring.allTenantKeys();
  const current = await provider.currentMasterVersion();
  if (!rot) {
    // Keys already under the current version: start a new rotation. Some behind it: a rotation was
    // interrupted before it saved its record, or the operator added a version to a managed provider.
    const behind = all.filter((k) => provider.masterVersionOf(k.wrapped) !== current);
    const to = behind.length ? current : await provider.addMasterVersion();
    const now = new Date();
    const from = Math.min(current, ...all.map((k) => provider.masterVersionOf(k.wrapped)));
    rot = { id: randomUUID(), scope: 'master', tenantId: null, fromVersion: from, toVersion: to, cursor: null, done: 0, total: all.length, startedAt: now, updatedAt: now, finishedAt: null };
    await ring.saveRotation(rot);
  } else if (current !== rot.toVersion) {
    throw new KeyError(`an interrupted master rotation re-wraps under master version ${rot.toVersion}, but ${provider.source} has version ${current} as current: restore the key file that has version ${rot.toVersion}`);
  }
  await env.ensureCanary();
  let rewrapped = 0;
  let done = all.filter((k) => provider.masterVersionOf(k.wrapped) === rot!.toVersion).length;
  rot = { ...rot, done, total: all.length };
  opts.onProgress?.({ done, total: all.length });
  let batchNo = 0;
  for (const rec of all) {
    if (provider.masterVersionOf(rec.wrapped) === rot.toVersion) continue;
    const wrapped = await env.rewrapTenantKeyRecord(rec);
    if (await ring.replaceTenantKeyWrapping({ ...rec, wrapped }, rec.wrapped)) rewrapped++;
    done++;
    rot = { ...rot, done, updatedAt: new Date() };
    await ring.saveRotation(rot);
    opts.onProgress?.({ done, total: all.length });
    await opts.afterBatch?.(++batchNo);
  }
  // Keys made during the rotation were wrapped under the current version already; check that none is left behind.
  const left = (await ring.allTenantKeys()).filter((k) => provider.masterVersionOf(k.wrapped) !== rot!.toVersion);
  if (left.length) return rotateMaster(env, opts);
  rot = { ...rot, updatedAt: new Date(), finishedAt: new Date() };
  await ring.saveRotation(rot);
  const retired = await provider.retireMasterVersions([rot.toVersion]);
  return { toVersion: rot.toVersion, rewrapped, total: all.length, resumed, retired };
}
