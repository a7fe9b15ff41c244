import { sql } from 'kysely';
import type { Ctx, Deps } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import { inTenant } from '../db/tenant.ts';
import { foldForSearch } from './import.ts';

/** The public facility directory. Not personal data: read without an audit event. */

export interface DirectoryFilters {
  q?: string | undefined;
  municipality?: string | undefined;
  kind?: 'cpe' | 'garderie' | undefined;
  subsidised?: boolean | undefined;
  infant?: boolean | undefined;
}

export interface FacilityRow {
  id: string;
  name: string;
  kind: 'cpe' | 'garderie';
  subsidised: boolean;
  address: string;
  municipality: string;
  postal_code: string;
  region: string;
  places_total: number;
  places_infant: number;
}

const COLUMNS = ['id', 'name', 'kind', 'subsidised', 'address', 'municipality', 'postal_code', 'region', 'places_total', 'places_infant'] as const;

async function search(trx: Trx, f: DirectoryFilters, page: number, pageSize: number) {
  let q = trx.selectFrom('facilities');
  if (f.q) {
    const key = foldForSearch(f.q);
    if (key) q = q.where('search_key', 'like', `%${key.replace(/[%_\\]/g, (c) => `\\${c}`)}%`);
  }
  if (f.municipality) q = q.where('municipality', '=', f.municipality);
  if (f.kind) q = q.where('kind', '=', f.kind);
  if (f.subsidised) q = q.where('subsidised', '=', true);
  if (f.infant) q = q.where('places_infant', '>', 0);
  // The page and the number of matches in one statement; a page past the end has no row to carry it.
  const rows = await q
    .select([...COLUMNS, sql<string>`count(*) over ()`.as('matches')])
    .orderBy('name')
    .orderBy('id')
    .limit(pageSize)
    .offset((page - 1) * pageSize)
    .execute();
  const total = rows.length ? Number(rows[0]!.matches) : page > 1 ? Number((await q.select(sql<string>`count(*)`.as('n')).executeTakeFirst())?.n ?? 0) : 0;
  return { total, rows: rows.map(({ matches: _m, ...r }) => r) as FacilityRow[] };
}

/**
 * Facilities whose name, municipality or postal code holds the words, first `limit` by name, and how many
 * there are in all: for a form that asks for one facility among tens of thousands.
 */
export async function findFacilities(trx: Trx, q: string, limit: number): Promise<{ total: number; rows: FacilityRow[] }> {
  return search(trx, { q }, 1, limit);
}

/** A directory page: the matches and the list of municipalities for the filter, in one transaction (one pooled connection). */
export async function directoryPage(deps: Deps, ctx: Ctx, f: DirectoryFilters, page: number, pageSize = 25) {
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const found = await search(trx, f, page, pageSize);
    return { ...found, towns: await townsOf(trx) };
  });
}

async function townsOf(trx: Trx): Promise<string[]> {
  return (await trx.selectFrom('facilities').select('municipality').distinct().orderBy('municipality').execute()).map((r) => r.municipality);
}

export async function getFacility(deps: Deps, ctx: Ctx, id: string): Promise<FacilityRow | undefined> {
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) return undefined;
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) =>
    (await trx.selectFrom('facilities').select([...COLUMNS]).where('id', '=', id).executeTakeFirst()) as FacilityRow | undefined,
  );
}

/** The facilities where the actor currently works (from their memberships). */
export async function staffFacilities(deps: Deps, ctx: Ctx): Promise<FacilityRow[]> {
  const ids = (ctx.actor?.memberships ?? []).map((m) => m.facilityId).filter((x): x is string => !!x);
  if (!ids.length) return [];
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) =>
    (await trx.selectFrom('facilities').select([...COLUMNS]).where('id', 'in', ids).orderBy('name').execute()) as FacilityRow[],
  );
}
