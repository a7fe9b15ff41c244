/**
 * Which columns of the personal-data tables are encrypted, and the helpers
 * that seal and open them with the family's data key (src/crypto/envelope.ts).
 * Only src/records/ uses these: the gateway decides, audits and trims; these
 * only turn values into ciphertexts bound to their row and back.
 *
 * The associated data names the *logical* column ('first_name'), the table
 * and the row id, so a ciphertext is valid in exactly one place.
 */
import type { Envelope, FamilyKey, FieldRef } from '../crypto/envelope.ts';
import { keyVersionOf } from '../crypto/envelope.ts';

export const CHILD_FIELDS = ['first_name', 'last_name', 'birth_date', 'nirec'] as const;
export type ChildField = (typeof CHILD_FIELDS)[number];
export const FAMILY_FIELDS = ['parent_first_name', 'parent_last_name', 'phone', 'postal_code'] as const;
export type FamilyField = (typeof FAMILY_FIELDS)[number];

export type ChildValues = Record<ChildField, string | null>;
export type FamilyValues = Record<FamilyField, string | null>;

export type ChildCiphertexts = { [K in ChildField as `${K}_enc`]: Buffer };
export type FamilyCiphertexts = { [K in FamilyField as `${K}_enc`]: Buffer };

/** The whole child file as one version of its history. */
export interface ChildSnapshot {
  reference: string;
  firstName: string;
  lastName: string;
  birthDate: string;
  nirec: string | null;
  desiredEntryDate: string;
  daysOfCare: number;
  inSubsidisedCare: boolean;
  deleted: boolean;
}

const ref = (tenantId: string, table: string, column: string, rowId: string): FieldRef => ({ tenantId, table, column, rowId });

export function sealChild(env: Envelope, key: FamilyKey, childId: string, values: Partial<ChildValues>): Partial<ChildCiphertexts> {
  const out: Partial<ChildCiphertexts> = {};
  for (const f of CHILD_FIELDS) {
    if (f in values) out[`${f}_enc`] = env.seal(key, ref(key.tenantId, 'children', f, childId), values[f] ?? null);
  }
  return out;
}

export function sealFamily(env: Envelope, key: FamilyKey, familyId: string, values: FamilyValues): FamilyCiphertexts {
  const out = {} as FamilyCiphertexts;
  for (const f of FAMILY_FIELDS) out[`${f}_enc`] = env.seal(key, ref(key.tenantId, 'families', f, familyId), values[f]);
  return out;
}

export function sealSnapshot(env: Envelope, key: FamilyKey, versionId: string, s: ChildSnapshot): Buffer {
  return env.seal(key, ref(key.tenantId, 'child_file_versions', 'snapshot', versionId), JSON.stringify(s));
}

/** What a benchmark's envelope (skipDecryption) hands back instead of a value. */
const PLACEHOLDER: Record<string, string> = { birth_date: '1970-01-01', snapshot: '{}' };

/** One encrypted cell to open: which row, which column, which family's key. */
export interface Cell {
  rowId: string;
  familyId: string;
  column: string;
  blob: Buffer;
}

/**
 * Opens cells of one table, fetching the family keys they need in one
 * keyring look-up (cached ones need none). The key version comes from each
 * ciphertext's header. Returns "rowId/column" → value.
 */
export async function openCells(env: Envelope, tenantId: string, table: string, cells: readonly Cell[]): Promise<Map<string, string | null>> {
  const out = new Map<string, string | null>();
  if (env.skipDecryption) {
    for (const c of cells) out.set(`${c.rowId}/${c.column}`, PLACEHOLDER[c.column] ?? '…');
    return out;
  }
  const wanted = cells.map((c) => ({ familyId: c.familyId, version: keyVersionOf(c.blob, ref(tenantId, table, c.column, c.rowId)) }));
  const keys = await env.familyKeys(tenantId, wanted);
  cells.forEach((c, i) => {
    const key = keys.get(`${c.familyId}/${wanted[i]!.version}`)!;
    out.set(`${c.rowId}/${c.column}`, env.open(key, ref(tenantId, table, c.column, c.rowId), c.blob));
  });
  return out;
}

type EncRow = { id: string; family_id: string } & { [K in `${ChildField}_enc`]?: Buffer | null };

/** Opens the named fields of child rows: only what the purpose needs is decrypted. */
export async function openChildren(env: Envelope, tenantId: string, rows: readonly EncRow[], fields: readonly ChildField[]): Promise<Map<string, Partial<ChildValues>>> {
  const cells: Cell[] = [];
  for (const r of rows) {
    for (const f of fields) {
      const blob = r[`${f}_enc`];
      if (!blob) throw new Error(`children.${f} of row ${r.id}: no ciphertext (purged, or written before encryption)`);
      cells.push({ rowId: r.id, familyId: r.family_id, column: f, blob });
    }
  }
  const opened = await openCells(env, tenantId, 'children', cells);
  const out = new Map<string, Partial<ChildValues>>();
  for (const r of rows) {
    const v: Partial<ChildValues> = {};
    for (const f of fields) v[f] = opened.get(`${r.id}/${f}`) ?? null;
    out.set(r.id, v);
  }
  return out;
}

export async function openChild(env: Envelope, tenantId: string, row: EncRow, fields: readonly ChildField[]): Promise<Partial<ChildValues>> {
  return (await openChildren(env, tenantId, [row], fields)).get(row.id)!;
}

/** The birth month in clear, for age groups in aggregates and the allocation (migrations 0019 and 0020 say why it is kept). */
export function birthMonth(birthDate: string | null): string | null {
  return birthDate && /^\d{4}-\d{2}-\d{2}$/.test(birthDate) ? `${birthDate.slice(0, 7)}-01` : null;
}

/** A required text field, after opening: never null for names and dates. */
export function required(v: string | null | undefined, what: string): string {
  if (v === null || v === undefined) throw new Error(`${what}: decrypted to nothing`);
  return v;
}

export async function openSnapshots(env: Envelope, tenantId: string, rows: readonly { id: string; family_id: string; snapshot_enc: Buffer }[]): Promise<Map<string, ChildSnapshot>> {
  const opened = await openCells(
    env,
    tenantId,
    'child_file_versions',
    rows.map((r) => ({ rowId: r.id, familyId: r.family_id, column: 'snapshot', blob: r.snapshot_enc })),
  );
  return new Map(rows.map((r) => [r.id, JSON.parse(opened.get(`${r.id}/snapshot`) ?? '{}') as ChildSnapshot]));
}
