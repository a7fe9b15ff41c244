/**
 * Synthetic waiting-list population for demonstrations and benchmarks.
 *
 * Deterministic on purpose: a benchmark or a bug report must be able to name a
 * seed and get the same families back. Everything random comes from one seeded
 * PRNG consumed in a fixed order; no Math.random, no clock, no Map/Set whose
 * iteration order depends on anything but insertion.
 *
 * Realism comes from the real distributions in seed-data/: first names by how
 * often Quebec parents gave them, surnames by rank, postal areas and choices of
 * facilities near where the family lives.
 */
import { readFileSync } from 'node:fs';
import { parse } from 'csv-parse/sync';
import type { Kysely } from 'kysely';
import { appendAudit } from '../audit/log.ts';
import type { AuditOrigin } from '../audit/events.ts';
import { loadKeyProvider, type KeyProvider } from '../crypto/keys.ts';
import type { DB } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import { insertSyntheticFamilies, type SyntheticApplication, type SyntheticChild, type SyntheticFamily } from '../records/bulk.ts';

export type { SyntheticFamily } from '../records/bulk.ts';

// ---------------------------------------------------------------------------
// PRNG

/** A generator of floats in [0, 1). */
export type Rng = () => number;

/**
 * sfc32 (Chris Doty-Humphrey's Small Fast Counter): 128-bit state, passes
 * PractRand, and uses only 32-bit integer operations, so every JavaScript
 * engine produces the same stream.
 */
function sfc32(a: number, b: number, c: number, d: number): Rng {
  return () => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0;
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
}

/** Spreads any seed (a number or a word) over the 128 bits sfc32 needs. */
export function createRng(seed: number | string): Rng {
  const text = String(seed);
  // Four differently-keyed FNV-1a style hashes, one per state word.
  const words = [0x811c9dc5, 0x01000193 ^ 0x9e3779b9, 0x85ebca6b, 0xc2b2ae35].map((h) => {
    for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
    return Math.imul(h ^ (h >>> 16), 0x45d9f3b) >>> 0;
  });
  const rng = sfc32(words[0]!, words[1]!, words[2]!, words[3]!);
  // The first outputs of a freshly keyed sfc32 are poorly mixed.
  for (let i = 0; i < 15; i++) rng();
  return rng;
}

function int(rng: Rng, min: number, max: number): number {
  return min + Math.floor(rng() * (max - min + 1));
}

function chance(rng: Rng, p: number): boolean {
  return rng() < p;
}

function oneOf<T>(rng: Rng, items: readonly T[]): T {
  return items[Math.floor(rng() * items.length)]!;
}

// ---------------------------------------------------------------------------
// Weighted tables

interface Weighted<T> {
  items: T[];
  /** Running totals: cumulative[i] = sum of weights 0..i. */
  cumulative: Float64Array;
  total: number;
}

function weighted<T>(entries: [T, number][]): Weighted<T> {
  const cumulative = new Float64Array(entries.length);
  let total = 0;
  entries.forEach(([, w], i) => {
    total += w;
    cumulative[i] = total;
  });
  return { items: entries.map(([item]) => item), cumulative, total };
}

function draw<T>(rng: Rng, w: Weighted<T>): T {
  const x = rng() * w.total;
  let lo = 0;
  let hi = w.cumulative.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (w.cumulative[mid]! > x) hi = mid;
    else lo = mid + 1;
  }
  return w.items[lo]!;
}

export interface NameTables {
  childFirst: { F: Weighted<string>; M: Weighted<string> };
  parentFirst: { F: Weighted<string>; M: Weighted<string> };
  last: Weighted<string>;
  /** Forward sortation areas of the J region (Montérégie and its neighbours). */
  fsaJ: string[];
}

const SEED_DATA = new URL('../../seed-data/', import.meta.url);

function readCsv(file: string): Record<string, string>[] {
  return parse(readFileSync(new URL(file, SEED_DATA), 'utf8'), { columns: true, bom: true, skip_empty_lines: true }) as Record<string, string>[];
}

function firstNames(file: string): { F: Weighted<string>; M: Weighted<string> } {
  const rows = readCsv(file);
  const by = (sex: string) => weighted(rows.filter((r) => r.sex === sex).map((r) => [r.name!, Number(r.count)] as [string, number]));
  return { F: by('F'), M: by('M') };
}

let cachedTables: NameTables | undefined;

/** Reads the name files once per process; they are ~200 kB and never change at run time. */
export function loadNameTables(): NameTables {
  if (cachedTables) return cachedTables;
  const last = readCsv('last-names-quebec-top1000.csv');
  cachedTables = {
    // The first-name files have accents stripped at the source (Retraite
    // Québec); they are used as they are rather than guessing "Éloïse".
    childFirst: firstNames('first-names-children-2016-2020.csv'),
    parentFirst: firstNames('first-names-parents-1980-1995.csv'),
    // No counts in the source: surname frequencies follow Zipf's law closely
    // enough that 1/rank gives a believable mix of Tremblay and rarer names.
    last: weighted(last.map((r) => [r.last_name!, 1 / Number(r.rank)] as [string, number])),
    fsaJ: readCsv('quebec-fsa.csv')
      .map((r) => r.fsa!)
      .filter((f) => /^J\d[A-Z]$/.test(f)),
  };
  return cachedTables;
}

// ---------------------------------------------------------------------------
// Dates, as whole UTC days: no time zone or daylight-saving surprises.

const DAY_MS = 86_400_000;
const MONTH_DAYS = 30.44;

function dayOf(d: Date): number {
  return Math.floor(d.getTime() / DAY_MS);
}

function isoDay(day: number): string {
  return new Date(day * DAY_MS).toISOString().slice(0, 10);
}

// ---------------------------------------------------------------------------
// Generation

export interface SeedFacility {
  id: string;
  municipality: string;
  postal_code: string;
  places_infant: number;
  /** When known, families are spread in proportion to it (else to infant places). */
  places_total?: number;
}

export interface GenerateOptions {
  count: number;
  seed: number | string;
  /** The order matters for determinism: pass them in a stable order (seedDemo sorts by code). */
  facilities: SeedFacility[];
  today: Date;
  /** Defaults to the tables in seed-data/. */
  names?: NameTables;
  /** Every child makes exactly this many choices (the scale seed: 10); by default 1 to 5, as families do. */
  choices?: number;
  /**
   * The parents' e-mail domain (exemple.test by default). Addresses are name.name.NNNN: a few
   * hundred thousand families exhaust the common names' numbers, so a large seed beside the
   * demo's families would meet theirs; the scale seed gives each seed its own domain.
   */
  emailDomain?: string;
}

// Letters and digits that cannot be misread over the phone (no 0/O, 1/I/L).
const REFERENCE_ALPHABET = 'ABCDEFGHJKMNPQRSTUVWXYZ23456789';
// Canada Post never uses D, F, I, O, Q, U in a postal code.
const POSTAL_LETTERS = [...'ABCEGHJKLMNPRSTVWXYZ'];
// Montérégie's area codes.
const AREA_CODES = ['450', '579'] as const;
// Part-time patterns parents actually ask for (Mon = 1 … Fri = 16).
const PART_TIME = [15, 30, 7, 28, 21, 10, 23] as const;
// How many facilities a child applies to: most families hedge with 2–4.
const CHOICES = weighted<number>([[1, 15], [2, 20], [3, 30], [4, 20], [5, 15]]);

/** ASCII, lower case, for e-mail local parts: "Côté" → "cote", "D'Amours" → "damours". */
export function emailPart(name: string): string {
  return name
    .normalize('NFD')
    .replace(/\p{M}/gu, '')
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '');
}

function fsaOf(postalCode: string): string {
  return postalCode.replace(/\s+/g, '').slice(0, 3).toUpperCase();
}

interface FacilityIndex {
  list: SeedFacility[];
  /** Tiers already filtered for infants, by "tier|key": at 30,000 facilities, filtering per child would dominate. */
  eligibleCache: Map<string, number[]>;
  weight: number[];
  all: Weighted<number>;
  allInfant: Weighted<number> | null;
  byMunicipality: Map<string, number[]>;
  byFsa: Map<string, number[]>;
  byArea: Map<string, number[]>;
}

function indexFacilities(list: SeedFacility[]): FacilityIndex {
  // +1 so that a facility with no places of the kind can still be chosen as a
  // landmark for where a family lives.
  const weight = list.map((f) => (f.places_total ?? f.places_infant) + 1);
  const group = (key: (f: SeedFacility) => string) => {
    const m = new Map<string, number[]>();
    list.forEach((f, i) => {
      const k = key(f);
      const arr = m.get(k);
      if (arr) arr.push(i);
      else m.set(k, [i]);
    });
    return m;
  };
  const infant = list.map((f, i) => [i, f.places_infant] as [number, number]).filter(([, w]) => w > 0);
  return {
    list,
    eligibleCache: new Map(),
    weight,
    all: weighted(list.map((_, i) => [i, weight[i]!] as [number, number])),
    allInfant: infant.length ? weighted(infant) : null,
    byMunicipality: group((f) => f.municipality),
    byFsa: group((f) => fsaOf(f.postal_code)),
    // The first two characters (J4, J3…) approximate a cluster of neighbouring towns.
    byArea: group((f) => fsaOf(f.postal_code).slice(0, 2)),
  };
}

/**
 * A child's choices: mostly the family's own municipality, then the same
 * postal area, then the neighbouring areas; now and then a facility anywhere
 * (near a parent's work). Infants only choose facilities with infant places,
 * since no other facility could ever offer them one.
 */
function chooseFacilities(rng: Rng, idx: FacilityIndex, home: SeedFacility, infant: boolean, siblingAttending: boolean, parentIsStaff: boolean, choices?: number): SyntheticApplication[] {
  const wanted = Math.min(choices ?? draw(rng, CHOICES), idx.list.length);
  const eligible = (i: number) => !infant || idx.allInfant === null || idx.list[i]!.places_infant > 0;
  const tier = (name: string, m: Map<string, number[]>, key: string) => {
    const k = `${name}|${infant}|${key}`;
    let t = idx.eligibleCache.get(k);
    if (!t) {
      t = (m.get(key) ?? []).filter(eligible);
      idx.eligibleCache.set(k, t);
    }
    return t;
  };
  const tiers = [
    () => tier('m', idx.byMunicipality, home.municipality),
    () => tier('f', idx.byFsa, fsaOf(home.postal_code)),
    () => tier('a', idx.byArea, fsaOf(home.postal_code).slice(0, 2)),
  ];
  const chosen: number[] = [];
  const taken = new Set<number>();
  const anywhere = infant && idx.allInfant ? idx.allInfant : idx.all;
  while (chosen.length < wanted) {
    let pick = -1;
    if (!chance(rng, 0.1)) {
      for (const lazyTier of tiers) {
        const tier = lazyTier();
        const open = tier.filter((i) => !taken.has(i));
        if (open.length === 0) continue;
        pick = draw(rng, weighted(open.map((i) => [i, idx.weight[i]!] as [number, number])));
        break;
      }
    }
    if (pick < 0) {
      // Rejection sampling over every facility: cheap while few are taken.
      for (let tries = 0; tries < 32 && (pick < 0 || taken.has(pick)); tries++) pick = draw(rng, anywhere);
      if (taken.has(pick)) break;
    }
    taken.add(pick);
    chosen.push(pick);
  }
  // A sibling attends, or the parent works at, one particular facility: the
  // declaration goes on that application, which families list first.
  return chosen.map((i, n) => ({
    facilityId: idx.list[i]!.id,
    siblingAttending: siblingAttending && n === 0,
    parentIsStaff: parentIsStaff && n === 0,
  }));
}

/**
 * Generates `count` synthetic families. Same inputs, same output, byte for
 * byte (JSON.stringify of the result is stable).
 */
export function generateFamilies(opts: GenerateOptions): SyntheticFamily[] {
  const { count } = opts;
  if (!Number.isInteger(count) || count < 0) throw new Error('generateFamilies: count must be a whole number ≥ 0');
  const families: SyntheticFamily[] = [];
  if (count === 0) return families;
  for (const f of familyStream(opts)) {
    families.push(f);
    if (families.length === count) break;
  }
  return families;
}

/**
 * The same families one at a time, without end: a seed of a million children
 * is written in batches as it is generated rather than held whole in memory.
 * The first n families are those generateFamilies gives for count n.
 */
export function* familyStream(opts: Omit<GenerateOptions, 'count'>): Generator<SyntheticFamily> {
  const { seed, facilities, today } = opts;
  if (facilities.length === 0) throw new Error('generateFamilies: no facilities to apply to (import the directory first)');
  const names = opts.names ?? loadNameTables();
  const rng = createRng(seed);
  const idx = indexFacilities(facilities);
  const knownFsa = new Set(names.fsaJ);
  const todayDay = dayOf(today);
  const fiveYears = Math.round(5 * 365.25);

  const emailDomain = opts.emailDomain ?? 'exemple.test';
  const emails = new Set<string>();
  const references = new Set<string>();
  const newReference = () => {
    for (;;) {
      let r = 'E-';
      for (let i = 0; i < 8; i++) r += REFERENCE_ALPHABET[Math.floor(rng() * REFERENCE_ALPHABET.length)];
      if (!references.has(r)) {
        references.add(r);
        return r;
      }
    }
  };

  for (;;) {
    const home = idx.list[draw(rng, idx.all)]!;
    // The family lives where its landmark facility is; if that FSA is not in
    // the reference list (a typo in the directory), any J area will do.
    const homeFsa = fsaOf(home.postal_code);
    const fsa = knownFsa.has(homeFsa) || names.fsaJ.length === 0 ? homeFsa : oneOf(rng, names.fsaJ);
    const postalCode = `${fsa} ${int(rng, 0, 9)}${oneOf(rng, POSTAL_LETTERS)}${int(rng, 0, 9)}`;

    const parentSex = chance(rng, 0.5) ? 'F' : 'M';
    const parentFirstName = draw(rng, names.parentFirst[parentSex]);
    const parentLastName = draw(rng, names.last);
    const locale = chance(rng, 0.85) ? 'fr' : 'en';

    let email: string;
    do {
      email = `${emailPart(parentFirstName)}.${emailPart(parentLastName)}.${String(int(rng, 0, 9999)).padStart(4, '0')}@${emailDomain}`;
    } while (emails.has(email));
    emails.add(email);
    const phone = `${oneOf(rng, AREA_CODES)}-555-01${String(int(rng, 0, 99)).padStart(2, '0')}`;

    // Quebec children often carry both parents' names; one in ten here.
    let childLastName = parentLastName;
    if (chance(rng, 0.1)) {
      const other = draw(rng, names.last);
      if (other !== parentLastName) childLastName = `${parentLastName}-${other}`;
    }

    // Waiting lists are dominated by the youngest: skew ages towards zero.
    const births: number[] = [];
    if (chance(rng, 0.15)) {
      const older = todayDay - int(rng, 365, fiveYears);
      const gap = int(rng, 365, 3 * 365);
      births.push(older, Math.min(todayDay, older + gap));
    } else {
      births.push(todayDay - Math.floor(rng() ** 1.5 * fiveYears));
    }

    const children: SyntheticChild[] = [];
    for (const birth of births) {
      const sex = chance(rng, 0.51) ? 'M' : 'F';
      let firstName = draw(rng, names.childFirst[sex]);
      if (children.some((c) => c.firstName === firstName)) firstName = draw(rng, names.childFirst[sex]);

      // Families registered at some point since the birth (Quebec registers
      // after birth only) and ask for a start after parental leave (3+ months),
      // most within the year. A desired date already past means the child is
      // waiting: seniority counts from that date, so the list has a real spread.
      const registered = birth + Math.floor(rng() ** 1.5 * (todayDay - birth));
      const earliest = Math.max(registered, birth + Math.round(3 * MONTH_DAYS));
      let desired = earliest + Math.floor(rng() ** 2 * 365);
      if (desired > birth + Math.round(59 * MONTH_DAYS)) desired = earliest;
      const infant = desired - birth < 18 * MONTH_DAYS;

      const daysOfCare = chance(rng, 0.8) ? 31 : oneOf(rng, PART_TIME);
      const inSubsidisedCare = chance(rng, 0.2);
      const siblingAttending = chance(rng, 0.1);
      const parentIsStaff = chance(rng, 0.03);
      children.push({
        reference: newReference(),
        firstName,
        lastName: childLastName,
        birthDate: isoDay(birth),
        desiredEntryDate: isoDay(desired),
        registeredOn: isoDay(registered),
        daysOfCare,
        inSubsidisedCare,
        applications: chooseFacilities(rng, idx, home, infant, siblingAttending, parentIsStaff, opts.choices),
      });
    }

    yield { email, locale, parentFirstName, parentLastName, phone, postalCode, children };
  }
}

// ---------------------------------------------------------------------------
// Seeding a tenant

export interface SeedDemoOptions {
  families: number;
  seed: number | string;
  now: Date;
  origin: AuditOrigin;
  /**
   * The key provider whose keyring receives the families' data keys. The CLI
   * (`guichet seed`) leaves it out: the seed then opens the same provider as
   * the server does, from GUICHET_MASTER_KEY / GUICHET_KEY_FILE /
   * GUICHET_KEYRING_URL and GUICHET_DATA_DIR.
   */
  keys?: KeyProvider;
}

export interface SeedDemoResult {
  families: number;
  children: number;
  applications: number;
  seed: number | string;
}

/**
 * Fills a tenant with synthetic families applying to its facilities, in one
 * transaction with its audit event: either the whole population appears,
 * recorded, or nothing does.
 */
export async function seedDemo(db: Kysely<DB>, tenantId: string, opts: SeedDemoOptions): Promise<SeedDemoResult> {
  if (!opts.keys) {
    const keys = loadKeyProvider(process.env, process.env.GUICHET_DATA_DIR || './data');
    try {
      return await seedDemo(db, tenantId, { ...opts, keys });
    } finally {
      await keys.close();
    }
  }
  const { now, origin, seed } = opts;
  const keys = opts.keys;
  return inTenant(
    db,
    tenantId,
    async (trx) => {
      // Sorted by code, not id: ids differ between databases, codes do not, so
      // a seed picks the same facilities everywhere.
      const facilities = await trx
        .selectFrom('facilities')
        .select(['id', 'municipality', 'postal_code', 'places_infant', 'places_total'])
        .where('tenant_id', '=', tenantId)
        .orderBy('code')
        .execute();
      if (facilities.length === 0) throw new Error('seed: the tenant has no facilities; import the directory first');
      const families = generateFamilies({ count: opts.families, seed, facilities, today: now });
      const written = await insertSyntheticFamilies(trx, tenantId, families, now, keys);
      await appendAudit(
        trx,
        tenantId,
        {
          action: 'demo.seed',
          outcome: 'success',
          actorAccountId: origin.actorAccountId,
          actorRoles: origin.actorRoles,
          ip: origin.ip,
          userAgent: origin.userAgent,
          requestId: origin.requestId,
          targetType: 'family',
          details: { families: written.families, children: written.children, applications: written.applications, seed },
        },
        now,
      );
      return { families: written.families, children: written.children, applications: written.applications, seed };
    },
    origin.actorAccountId,
  );
}
