/**
 * Facility directory import.
 *
 * Two inputs are accepted:
 *  - the cleaned file shipped in seed-data/ (English headers, yes/no flag);
 *  - the Ministère de la Famille list "Liste des centres de la petite enfance
 *    et garderies en fonction" exactly as published: title lines above the
 *    header, French headers, contact columns, `CR` for reduced-contribution
 *    places, and a "Légende" block under the rows. Header names were taken from
 *    the public copy of the region 16 file (Carbonec2/geolocator-garderies,
 *    excel/repertoire16-sdg.csv, update of 1 November 2022).
 *
 * The import is all or nothing: one tenant transaction for every batch and its
 * audit event, so a failure half-way leaves the directory as it was and the
 * audit log never claims an import that did not happen.
 */
import { createHash } from 'node:crypto';
import { parse } from 'csv-parse/sync';
import { sql, type Kysely } from 'kysely';
import { appendAudit } from '../audit/log.ts';
import type { AuditOrigin } from '../audit/events.ts';
import type { DB } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';

export interface ImportOptions {
  now: Date;
  origin: AuditOrigin;
}

export interface SkippedRow {
  /** 1-based line in the file where the record starts (what an editor shows). */
  line: number;
  reason: string;
}

export interface ImportResult {
  inserted: number;
  updated: number;
  skipped: SkippedRow[];
}

export type DirectoryFormat = 'guichet' | 'ministere';

/** A validated row, ready to be written. */
export interface FacilityRow {
  line: number;
  code: string;
  name: string;
  kind: 'cpe' | 'garderie';
  subsidised: boolean;
  address: string;
  municipality: string;
  postal_code: string;
  region: string;
  places_total: number;
  places_infant: number;
  search_key: string;
}

export interface ParsedDirectory {
  format: DirectoryFormat;
  rows: FacilityRow[];
  skipped: SkippedRow[];
}

/** The file as a whole cannot be read: nothing was imported. */
export class DirectoryFormatError extends Error {
  override name = 'DirectoryFormatError';
}

/** Rows per INSERT … ON CONFLICT: 500 × 12 columns stays far below the 65,535-parameter limit. */
const BATCH_ROWS = 500;

/** How many leading records may precede the header (the ministry file has three title lines). */
const HEADER_SEARCH_ROWS = 10;

type Field = 'name' | 'region' | 'address' | 'municipality' | 'postal_code' | 'type' | 'places_total' | 'places_infant' | 'subsidised';

interface FormatSpec {
  format: DirectoryFormat;
  /** Normalised header text (see headerKey) for each field the import needs. */
  columns: Record<Field, string>;
  /**
   * Optional permit-number column. Neither known format has one today; the
   * names are an assumption about a future ministry export, and a permit
   * number, when present, is the better stable key.
   */
  permitColumns: string[];
  subsidised: (raw: string) => boolean | undefined;
}

const FORMATS: FormatSpec[] = [
  {
    format: 'guichet',
    columns: {
      name: 'name',
      region: 'region',
      address: 'address',
      municipality: 'municipality',
      postal_code: 'postal code',
      type: 'type',
      places_total: 'places total',
      places_infant: 'places 17 months or less',
      subsidised: 'reduced contribution',
    },
    permitColumns: ['permit number', 'permit'],
    subsidised: (raw) => {
      const v = raw.trim().toLowerCase();
      if (v === 'yes' || v === 'oui' || v === 'true') return true;
      if (v === 'no' || v === 'non' || v === 'false' || v === '') return false;
      return undefined;
    },
  },
  {
    format: 'ministere',
    columns: {
      name: "nom de l'installation",
      region: 'region administrative',
      address: 'adresse',
      municipality: 'municipalite',
      postal_code: 'code postal',
      type: 'type de service de garde',
      places_total: 'places totales au permis',
      places_infant: 'places 17 mois ou moins',
      subsidised: 'place a contribution reduite',
    },
    permitColumns: ['numero de permis', 'no de permis', 'n de permis', 'permis'],
    // The published file marks reduced-contribution places with "CR" and
    // leaves the cell empty otherwise.
    subsidised: (raw) => {
      const v = raw.trim().toUpperCase();
      if (v === 'CR') return true;
      if (v === '') return false;
      return undefined;
    },
  },
];

const KINDS: Record<string, 'cpe' | 'garderie'> = { CPE: 'cpe', GARD: 'garderie' };

// Canada Post never uses D, F, I, O, Q, U (nor W, Z in the first position).
const POSTAL_CODE = /^[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z] \d[ABCEGHJ-NPRSTV-Z]\d$/;

/** Lower-case, accents removed: the form the directory search matches against. */
export function foldForSearch(text: string): string {
  return text
    .normalize('NFD')
    .replace(/\p{M}/gu, '')
    .toLowerCase()
    .replace(/\s+/g, ' ')
    .trim();
}

/** Header cells compare without accents, case, punctuation or spacing, so "Municipalité" matches "municipalite". */
function headerKey(cell: string): string {
  return foldForSearch(cell.replace(/[\u2018\u2019`]/g, "'"))
    .replace(/[^a-z0-9']+/g, ' ')
    .trim();
}

/**
 * The identity of a facility when the file carries no permit number. Folding
 * accents, case and punctuation keeps the key stable across the two formats
 * and across cosmetic edits (a re-typed apostrophe, a double space).
 */
function identityText(name: string, address: string, postalCode: string): string {
  const f = (s: string) => foldForSearch(s).replace(/[^a-z0-9]+/g, ' ').trim();
  return `${f(name)}|${f(address)}|${postalCode.replace(/\s+/g, '').toUpperCase()}`;
}

function hashCode(identity: string, occurrence: number): string {
  // The same installation may appear more than once with the same name and
  // address (the 2022 file lists "C.P.E. LES FRIMOUSSES DU FORT" twice at one
  // address: two permits, different infant places). The occurrence number in
  // file order keeps them apart; it is stable as long as the ministry keeps
  // its sort order, which is the best a file without permit numbers allows.
  const input = occurrence === 1 ? identity : `${identity}#${occurrence}`;
  return 'D' + createHash('sha256').update(input, 'utf8').digest('hex').slice(0, 15).toUpperCase();
}

function normalisePostalCode(raw: string): string {
  const compact = raw.replace(/\s+/g, '').toUpperCase();
  return compact.length === 6 ? `${compact.slice(0, 3)} ${compact.slice(3)}` : raw.trim().toUpperCase();
}

function parseCount(raw: string): number | undefined {
  const v = raw.trim();
  if (!/^\d{1,6}$/.test(v)) return undefined;
  return Number(v);
}

function findHeader(records: { line: number; cells: string[] }[]): { spec: FormatSpec; index: Record<Field, number>; permit: number; at: number } {
  for (let i = 0; i < Math.min(records.length, HEADER_SEARCH_ROWS); i++) {
    const rec = records[i];
    if (!rec) break;
    const keys = rec.cells.map(headerKey);
    for (const spec of FORMATS) {
      const index = {} as Record<Field, number>;
      let complete = true;
      for (const [field, header] of Object.entries(spec.columns) as [Field, string][]) {
        const at = keys.indexOf(header);
        if (at < 0) {
          complete = false;
          break;
        }
        index[field] = at;
      }
      if (complete) {
        const permit = keys.findIndex((k) => spec.permitColumns.includes(k));
        return { spec, index, permit, at: i };
      }
    }
  }
  const first = records.find((r) => r.cells.some((c) => c.trim() !== ''));
  throw new DirectoryFormatError(
    'Unrecognised facility directory: no header row matches a known format. Expected either ' +
      `"${Object.values(FORMATS[0]!.columns).join(',')}" (the Guichet seed file) or the Ministère de la Famille list ` +
      `with "Nom de l'installation", "Municipalité", "Type de service de garde", "Places totales au permis", … ` +
      `First row read: ${JSON.stringify(first?.cells.slice(0, 12) ?? [])}`,
  );
}

/**
 * Reads and validates a directory file without touching the database, so the
 * CLI can offer a dry run and tests can check validation on its own.
 */
function readRecords(csvText: string, delimiter: string): { line: number; cells: string[] }[] {
  let parsed: { record: string[]; info: { lines: number } }[];
  try {
    parsed = parse(csvText, { bom: true, info: true, relax_column_count: true, skip_empty_lines: false, delimiter }) as never;
  } catch (err) {
    throw new DirectoryFormatError(`Facility directory is not valid CSV: ${(err as Error).message}`);
  }
  // csv-parse reports the line where a record ends; a record starts on the
  // line after the previous one ended (empty lines come through as records).
  let prevEnd = 0;
  return parsed.map((p) => {
    const rec = { line: prevEnd + 1, cells: p.record };
    prevEnd = p.info.lines;
    return rec;
  });
}

export function parseFacilities(csvText: string): ParsedDirectory {
  let records = readRecords(csvText, ',');
  let header: ReturnType<typeof findHeader>;
  try {
    header = findHeader(records);
  } catch (err) {
    // Excel in a French locale saves "CSV" with semicolons; accept that too,
    // but report the error of the comma reading if neither works.
    try {
      records = readRecords(csvText, ';');
      header = findHeader(records);
    } catch {
      throw err;
    }
  }
  const { spec, index, permit, at } = header;
  const headerWidth = records[at]!.cells.length;
  const needed = Math.max(...Object.values(index), permit) + 1;

  const rows: FacilityRow[] = [];
  const skipped: SkippedRow[] = [];
  const occurrences = new Map<string, number>();
  const permits = new Set<string>();

  for (const { line, cells } of records.slice(at + 1)) {
    if (cells.every((c) => c.trim() === '')) continue;
    // The published list ends with a legend explaining its abbreviations.
    if (spec.format === 'ministere' && headerKey(cells[0] ?? '') === 'legende') break;

    const skip = (reason: string) => skipped.push({ line, reason });
    if (cells.length < needed) {
      skip(`missing columns: ${cells.length} found, ${headerWidth} expected`);
      continue;
    }
    const cell = (f: Field) => (cells[index[f]] ?? '').trim();

    const name = cell('name').replace(/\s+/g, ' ');
    const address = cell('address').replace(/\s+/g, ' ');
    const municipality = cell('municipality').replace(/\s+/g, ' ');
    const region = cell('region').replace(/\s+/g, ' ');
    if (!name) { skip('name is empty'); continue; }
    if (name.length > 300) { skip('name is longer than 300 characters'); continue; }
    if (!address) { skip('address is empty'); continue; }
    if (!municipality) { skip('municipality is empty'); continue; }
    if (!region) { skip('region is empty'); continue; }

    const postal = normalisePostalCode(cell('postal_code'));
    if (!POSTAL_CODE.test(postal)) { skip(`postal code "${cell('postal_code')}" is not a Canadian postal code like J0H 1A0`); continue; }

    const typeRaw = cell('type').toUpperCase();
    const kind = KINDS[typeRaw];
    if (!kind) { skip(`unknown type "${cell('type')}" (expected CPE or GARD)`); continue; }

    const total = parseCount(cell('places_total'));
    if (total === undefined) { skip(`places total "${cell('places_total')}" is not a whole number ≥ 0`); continue; }
    const infant = parseCount(cell('places_infant'));
    if (infant === undefined) { skip(`places for 17 months or less "${cell('places_infant')}" is not a whole number ≥ 0`); continue; }
    if (infant > total) { skip(`places for 17 months or less (${infant}) exceed places total (${total})`); continue; }

    const subsidised = spec.subsidised(cell('subsidised'));
    if (subsidised === undefined) { skip(`reduced-contribution flag "${cell('subsidised')}" is not recognised`); continue; }

    let code: string;
    const permitNo = permit >= 0 ? (cells[permit] ?? '').trim() : '';
    if (permitNo) {
      if (!/^[A-Za-z0-9-]{1,64}$/.test(permitNo)) { skip(`permit number "${permitNo}" is not valid`); continue; }
      if (permits.has(permitNo)) { skip(`permit number ${permitNo} appears more than once`); continue; }
      permits.add(permitNo);
      code = permitNo;
    } else {
      const identity = identityText(name, address, postal);
      const n = (occurrences.get(identity) ?? 0) + 1;
      occurrences.set(identity, n);
      code = hashCode(identity, n);
    }

    rows.push({
      line,
      code,
      name,
      kind,
      subsidised,
      address,
      municipality,
      postal_code: postal,
      region,
      places_total: total,
      places_infant: infant,
      search_key: foldForSearch(`${name} ${municipality}`),
    });
  }
  return { format: spec.format, rows, skipped };
}

/**
 * Published files come from Excel exports, sometimes in Windows-1252. Decode
 * as UTF-8 when the bytes are valid UTF-8, else as Windows-1252, so that
 * "Montérégie" survives either way. (For the CLI; importFacilities takes text.)
 */
export function decodeDirectoryBytes(bytes: Uint8Array): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return new TextDecoder('windows-1252').decode(bytes);
  }
}

/**
 * Inserts new facilities and updates known ones (matched on the tenant and the
 * facility code). Facilities absent from the file are left alone: closing a
 * facility has consequences for waiting lists that an import must not decide.
 *
 * Throws DirectoryFormatError when the file cannot be read at all; rows that
 * fail validation are reported in `skipped` and the rest are imported.
 */
export async function importFacilities(db: Kysely<DB>, tenantId: string, csvText: string, opts: ImportOptions): Promise<ImportResult> {
  const { format, rows, skipped } = parseFacilities(csvText);
  const { now, origin } = opts;
  return inTenant(
    db,
    tenantId,
    async (trx) => {
      let inserted = 0;
      let updated = 0;
      for (let i = 0; i < rows.length; i += BATCH_ROWS) {
        const batch = rows.slice(i, i + BATCH_ROWS).map(({ line: _line, ...r }) => ({
          ...r,
          tenant_id: tenantId,
          created_at: now,
          updated_at: now,
        }));
        const result = await trx
          .insertInto('facilities')
          .values(batch)
          .onConflict((oc) =>
            oc.columns(['tenant_id', 'code']).doUpdateSet((eb) => ({
              name: eb.ref('excluded.name'),
              kind: eb.ref('excluded.kind'),
              subsidised: eb.ref('excluded.subsidised'),
              address: eb.ref('excluded.address'),
              municipality: eb.ref('excluded.municipality'),
              postal_code: eb.ref('excluded.postal_code'),
              region: eb.ref('excluded.region'),
              places_total: eb.ref('excluded.places_total'),
              places_infant: eb.ref('excluded.places_infant'),
              search_key: eb.ref('excluded.search_key'),
              updated_at: eb.ref('excluded.updated_at'),
            })),
          )
          // xmax is 0 on a freshly inserted tuple and set on one rewritten by
          // ON CONFLICT DO UPDATE: one round trip tells inserts from updates.
          .returning(sql<boolean>`(xmax = 0)`.as('inserted'))
          .execute();
        for (const r of result) {
          if (r.inserted) inserted++;
          else updated++;
        }
      }
      await appendAudit(
        trx,
        tenantId,
        {
          action: 'directory.import',
          outcome: 'success',
          actorAccountId: origin.actorAccountId,
          actorRoles: origin.actorRoles,
          ip: origin.ip,
          userAgent: origin.userAgent,
          requestId: origin.requestId,
          targetType: 'facility',
          details: { format, inserted, updated, skipped: skipped.length },
        },
        now,
      );
      return { inserted, updated, skipped };
    },
    origin.actorAccountId,
  );
}
