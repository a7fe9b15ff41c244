/**
 * The shape of the source tree, checked statically:
 *  - the personal-data tables (families, children, applications, and the
 *    history and restore requests of child files) are named in
 *    Kysely calls or raw SQL only under src/records/, in the migrations and in
 *    the schema types: everything else goes through the records gateway;
 *  - audit_events is written only from src/audit/.
 * A failure names the offending file and line.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SRC = join(ROOT, 'src');

const PERSONAL = ['families', 'children', 'applications', 'child_file_versions', 'child_file_restore_requests', 'offers', 'allocation_runs', 'allocation_results', 'allocation_reads'] as const;
const T = `(?:${PERSONAL.join('|')})`;

/**
 * A table named as Kysely names it: a string literal that is the table, the
 * table with an alias ('children as c'), or a qualified column
 * ('children.first_name'); and raw SQL: FROM, JOIN, INTO, UPDATE, TABLE,
 * TRUNCATE, REFERENCES followed by the table, quoted or schema-qualified or not.
 */
const PERSONAL_PATTERNS: RegExp[] = [
  // A file name ('children.csv' in an export) is not the table.
  new RegExp(`(['"\`])(?:public\\.)?${T}(?:\\s+as\\s+\\w+|\\.(?!csv\\1)\\w+)?\\1`, 'g'),
  new RegExp(`\\b(?:from|join|into|update|table|truncate|references)\\s+(?:only\\s+)?(?:"?public"?\\.)?"?${T}"?(?![\\w-])`, 'gi'),
];

/** Writes to the audit log: Kysely's insert, update, delete, merge; raw INSERT, UPDATE, DELETE, TRUNCATE, COPY. */
const AUDIT_WRITE_PATTERNS: RegExp[] = [
  /\b(?:insertInto|replaceInto|updateTable|deleteFrom|mergeInto)\s*\(\s*(['"`])(?:public\.)?audit_events(?:\s+as\s+\w+)?\1/g,
  /\b(?:insert\s+into|update|delete\s+from|truncate(?:\s+table)?|merge\s+into|copy)\s+(?:only\s+)?(?:"?public"?\.)?"?audit_events\b/gi,
];

const PERSONAL_ALLOWED = (file: string) => file.startsWith('src/records/') || file.startsWith('src/db/migrations/') || file === 'src/db/schema.ts';
const AUDIT_WRITE_ALLOWED = (file: string) => file.startsWith('src/audit/') || file.startsWith('src/db/migrations/');

interface Hit {
  file: string;
  line: number;
  text: string;
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(full));
    else if (/\.(?:[cm]?[jt]sx?|sql)$/.test(entry.name)) out.push(full);
  }
  return out.sort();
}

function scan(file: string, content: string, patterns: RegExp[]): Hit[] {
  const hits: Hit[] = [];
  const lines = content.split('\n');
  for (const p of patterns) {
    for (const m of content.matchAll(new RegExp(p.source, p.flags))) {
      const line = content.slice(0, m.index).split('\n').length;
      hits.push({ file, line, text: lines[line - 1]!.trim().slice(0, 160) });
    }
  }
  // one hit per line, however many patterns it matches
  return [...new Map(hits.map((h) => [h.line, h])).values()].sort((a, b) => a.line - b.line);
}

function scanTree(patterns: RegExp[]): Hit[] {
  return sourceFiles(SRC).flatMap((full) => scan(relative(ROOT, full).split(sep).join('/'), readFileSync(full, 'utf8'), patterns));
}

const fmt = (h: Hit) => `${h.file}:${h.line}  ${h.text}`;

describe('the scanner itself', () => {
  it('finds the ways a table is named, and not the words', () => {
    const sample = [
      "trx.selectFrom('children as c')",
      '.innerJoin("families as f", "f.id", "c.family_id")',
      '.selectFrom(`applications`)',
      "sql.ref('children.first_name')",
      'sql`SELECT count(*) FROM applications WHERE x`',
      'sql`update public.children set x = 1`',
      'await db.execute(`DELETE FROM "families"`)',
      '// and these are words, not tables:',
      "const k = 'parent.children.list';",
      'props.children.map((c) => c)',
      "const label = 'Mes enfants — applications';",
    ].join('\n');
    expect(scan('x.ts', sample, PERSONAL_PATTERNS).map((h) => h.line)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    const audit = [
      "trx.insertInto('audit_events').values(e)",
      'db.updateTable("audit_events")',
      'sql`DELETE FROM audit_events`',
      'sql`TRUNCATE audit_events`',
      "trx.selectFrom('audit_events')",
      'sql`SELECT * FROM audit_events`',
    ].join('\n');
    expect(scan('x.ts', audit, AUDIT_WRITE_PATTERNS).map((h) => h.line)).toEqual([1, 2, 3, 4]);
  });

  it('reads the whole tree, and sees the gateway and the migrations name the tables', () => {
    const files = new Set(scanTree(PERSONAL_PATTERNS).map((h) => h.file));
    expect(files).toContain('src/records/gateway.ts');
    expect([...files].some((f) => f.startsWith('src/db/migrations/'))).toBe(true);
    expect(scanTree(AUDIT_WRITE_PATTERNS).map((h) => h.file)).toContain('src/audit/log.ts');
  });
});

describe('personal data goes through src/records/', () => {
  it('the personal-data tables are named only under src/records/, src/db/migrations/ and in src/db/schema.ts', () => {
    const hits = scanTree(PERSONAL_PATTERNS);
    const files = [...new Set(hits.map((h) => h.file))];
    // Every file that names them, for the record (shown with --reporter=verbose or on failure).
    console.info(`files naming ${PERSONAL.join(', ')}:\n  ${files.join('\n  ')}`);
    const offending = hits.filter((h) => !PERSONAL_ALLOWED(h.file)).map(fmt);
    expect(offending, `personal-data tables named outside src/records/:\n${offending.join('\n')}`).toEqual([]);
  });
});

describe('the audit log is written only by src/audit/', () => {
  it('audit_events is inserted into, updated, deleted or truncated only from src/audit/ (and the migrations that guard it)', () => {
    const offending = scanTree(AUDIT_WRITE_PATTERNS)
      .filter((h) => !AUDIT_WRITE_ALLOWED(h.file))
      .map(fmt);
    expect(offending, `audit_events written outside src/audit/:\n${offending.join('\n')}`).toEqual([]);
  });

  it('no other module aliases the table name to write it indirectly', () => {
    // A write through a variable (const t = 'audit_events'; insertInto(t)) escapes the pattern above:
    // outside the allowed places, the name may appear only in a read (selectFrom) or in the schema types.
    const offending = scanTree([/(['"`])audit_events\1/g])
      .filter((h) => !AUDIT_WRITE_ALLOWED(h.file) && h.file !== 'src/db/schema.ts')
      .filter((h) => !/selectFrom\s*\(\s*['"`]audit_events/.test(h.text))
      .map(fmt);
    expect(offending).toEqual([]);
  });
});
