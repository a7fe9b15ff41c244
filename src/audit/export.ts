/**
 * The export bundle: what an outside auditor needs to check a period of a
 * tenant's log without the database (verify-bundle.ts checks it).
 *
 * - the events that occurred in [from, to), each with its entry (the exact
 *   bytes of its leaf, in base64), the entry's fields as JSON for reading,
 *   and an inclusion proof against the latest head;
 * - the heads signed in the period, the last one signed before it and the
 *   latest head, with a consistency proof between each consecutive pair: the
 *   log only grew from one to the next;
 * - the tenant's public key (which an auditor should also obtain separately,
 *   from the security console or `guichet audit key`, and pin with --key).
 *
 * A busy tenant signs up to two heads a second; beyond `maxHeads` heads in the
 * period, evenly spaced ones are kept (the first and last always): consistency
 * proofs chain any subset, so thinning loses no guarantee, only detail.
 */
import type { Kysely } from 'kysely';
import type { DB } from '../db/schema.ts';
import { enterTenant } from '../db/tenant.ts';
import type { TenantSigner } from './signing.ts';
import { consistencyProofAt, headBefore, headsSignedBetween, inclusionProofsAt, latestHead, leavesOccurredBetween, type Head } from './store.ts';
import { BUNDLE_FORMAT, decodeEntry, type EntryField } from './verify-bundle.ts';

export class ExportError extends Error {}

export interface Bundle {
  format: typeof BUNDLE_FORMAT;
  tenant: { id: string; slug: string };
  origin: string;
  public_key: { algorithm: 'Ed25519'; verifier_key: string; key_id: string; public_key: string };
  range: { from: string; to: string };
  exported_at: string;
  heads: { tree_size: number; root_hash: string; time: string; checkpoint: string }[];
  consistency: { from: number; to: number; proof: string[] }[];
  events: { leaf_index: number; entry: string; event: Record<EntryField, unknown>; inclusion: { tree_size: number; proof: string[] } }[];
}

function thin(heads: Head[], max: number): Head[] {
  if (heads.length <= max) return heads;
  const out: Head[] = [];
  for (let i = 0; i < max; i++) out.push(heads[Math.round((i * (heads.length - 1)) / (max - 1))]!);
  return [...new Map(out.map((h) => [h.treeSize, h])).values()];
}

export async function exportBundle(
  db: Kysely<DB>,
  tenant: { id: string; slug: string },
  signer: TenantSigner,
  range: { from: Date; to: Date },
  opts: { maxHeads?: number; now?: Date } = {},
): Promise<Bundle> {
  if (!(range.from < range.to)) throw new ExportError('--from must be before --to');
  const maxHeads = Math.max(2, opts.maxHeads ?? 1000);
  return db
    .transaction()
    .setIsolationLevel('repeatable read')
    .execute(async (trx) => {
      await enterTenant(trx, tenant.id);
      const latest = await latestHead(trx, tenant.id);
      if (!latest) throw new ExportError(`tenant ${tenant.slug} has no signed head yet: nothing is sealed (start the server, or run guichet audit verify, which seals first)`);
      const before = await headBefore(trx, tenant.id, range.from);
      const during = await headsSignedBetween(trx, tenant.id, range.from, range.to);
      const bySize = new Map<number, Head>();
      for (const h of [...(before ? [before] : []), ...thin(during, maxHeads), latest]) bySize.set(h.treeSize, h);
      const heads = [...bySize.values()].sort((a, b) => a.treeSize - b.treeSize);
      const consistency: Bundle['consistency'] = [];
      for (let i = 1; i < heads.length; i++) {
        const proof = await consistencyProofAt(trx, tenant.id, heads[i - 1]!.treeSize, heads[i]!.treeSize);
        consistency.push({ from: heads[i - 1]!.treeSize, to: heads[i]!.treeSize, proof: proof.map((p) => p.toString('base64')) });
      }
      const leaves = await leavesOccurredBetween(trx, tenant.id, range.from, range.to, latest.treeSize);
      const proofs = await inclusionProofsAt(
        trx,
        tenant.id,
        leaves.map((l) => l.index),
        latest.treeSize,
      );
      return {
        format: BUNDLE_FORMAT,
        tenant: { id: tenant.id, slug: tenant.slug },
        origin: signer.origin,
        public_key: { algorithm: 'Ed25519', verifier_key: signer.verifierKeyText, key_id: signer.keyIdHex, public_key: signer.verifier.publicKey.toString('base64') },
        range: { from: range.from.toISOString(), to: range.to.toISOString() },
        exported_at: (opts.now ?? new Date()).toISOString(),
        heads: heads.map((h) => ({ tree_size: h.treeSize, root_hash: h.rootHash.toString('base64'), time: h.signedAt.toISOString(), checkpoint: h.checkpoint })),
        consistency,
        events: leaves.map((l, i) => ({
          leaf_index: l.index,
          entry: l.entry.toString('base64'),
          event: decodeEntry(l.entry),
          inclusion: { tree_size: latest.treeSize, proof: proofs[i]!.map((p) => p.toString('base64')) },
        })),
      };
    });
}
