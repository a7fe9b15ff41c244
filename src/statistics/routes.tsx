import type { FastifyInstance, FastifyReply } from 'fastify';
import { z } from 'zod';
import type { Deps } from '../context.ts';
import { AppError, ValidationError } from '../errors.ts';
import { readStatistics, type Shown, type Statistics, type StatisticsFilters } from '../records/statistics.ts';
import { ErrorSummary, Page, Select, TextField, type FieldErrors, type PageEnv } from '../web/components.tsx';
import { parseBody } from '../web/forms.ts';
import { messages, type Locale } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';

/**
 * The programme's statistics pages (/operator/statistics): each figure as a
 * chart drawn on the server (SVG, no script, with its text alternative) and
 * the same figures as a table, with a CSV download of each table. Filters
 * travel in the query string (a GET form), validated here.
 */

const MONTH = /^\d{4}-(0[1-9]|1[0-2])$/;
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

const filtersSchema = z
  .object({
    region: z.string({ error: 'regionUnknown' }).max(120, { error: 'regionUnknown' }).refine((s) => !CONTROL.test(s), { error: 'regionUnknown' }).optional(),
    from: z.string({ error: 'monthInvalid' }).trim().refine((s) => s === '' || MONTH.test(s), { error: 'monthInvalid' }).optional(),
    to: z.string({ error: 'monthInvalid' }).trim().refine((s) => s === '' || MONTH.test(s), { error: 'monthInvalid' }).optional(),
    lang: z.string().optional(),
  })
  .strict()
  .refine((f) => !f.from || !f.to || f.from <= f.to, { error: 'monthOrder', path: ['to'] });

export const TABLES = ['waiting-by-region', 'waiting-by-age', 'waiting-by-month', 'places', 'placement'] as const;
type Table = (typeof TABLES)[number];

function parseFilters(query: unknown): StatisticsFilters {
  const f = parseBody(filtersSchema, query);
  return { region: f.region ? f.region : null, from: f.from ? f.from : null, to: f.to ? f.to : null };
}

function cellText(m: ReturnType<typeof messages>, c: Shown, plain = false): string {
  if ('lt5' in c) return m.statistics.small;
  if ('masked' in c) return m.statistics.masked;
  return plain ? String(c.n) : c.n.toLocaleString(m.lang === 'fr' ? 'fr-CA' : 'en-CA');
}

/** A table as rows of text, the same for the page and the CSV file. */
function tableOf(m: ReturnType<typeof messages>, s: Statistics, t: Table, csv = false): { title: string; head: string[]; rows: string[][]; numeric: boolean[] } {
  const st = m.statistics;
  const age = (k: 'infant' | 'toddler' | 'unknown') => st.ageGroup[k];
  // A spreadsheet reads plain digits as numbers; a page groups thousands the reader's way.
  const num = (n: number) => (csv ? String(n) : n.toLocaleString(m.lang === 'fr' ? 'fr-CA' : 'en-CA'));
  const cell = (c: Shown) => cellText(m, c, csv);
  switch (t) {
    case 'waiting-by-region':
      return { title: st.byRegionTitle, head: [st.colRegion, st.colChildren], rows: s.waiting.byRegion.map((r) => [r.key, cell(r.count)]), numeric: [false, true] };
    case 'waiting-by-age':
      return { title: st.byAgeTitle, head: [st.colAgeGroup, st.colChildren], rows: s.waiting.byAgeGroup.map((r) => [age(r.key), cell(r.count)]), numeric: [false, true] };
    case 'waiting-by-month':
      return { title: st.byMonthTitle, head: [st.colMonth, st.colChildren], rows: s.waiting.byMonth.map((r) => [r.key, cell(r.count)]), numeric: [false, true] };
    case 'places':
      return {
        title: st.placesTitle,
        head: [st.colRegion, st.colAgeGroup, st.colFacilities, st.colPlaces, st.colVacancies],
        rows: s.places.map((r) => [r.region, age(r.ageGroup), num(r.facilities), num(r.places), num(r.vacancies)]),
        numeric: [false, false, true, true, true],
      };
    case 'placement':
      return {
        title: st.placementTitle,
        head: [st.colRegion, st.colAgeGroup, st.colPlaced, st.colMedian, st.colMean],
        rows: s.placement.map((r) => [r.region, age(r.ageGroup), cell(r.placed), r.medianDays === null ? st.notShown : num(r.medianDays), r.meanDays === null ? st.notShown : num(r.meanDays)]),
        numeric: [false, false, true, true, true],
      };
  }
}

/** CSV as Excel opens it in Quebec: UTF-8 with a BOM (accents), semicolons (the decimal separator is a comma), CRLF. */
export function toCsv(head: string[], rows: string[][]): string {
  const q = (v: string) => {
    // A cell that a spreadsheet would read as a formula is neutralised (CSV injection).
    const safe = /^[=+\-@\t\r]/.test(v) && !/^-?\d/.test(v) ? `'${v}` : v;
    return /[;"\r\n]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
  };
  return `\ufeff${[head, ...rows].map((r) => r.map(q).join(';')).join('\r\n')}\r\n`;
}

/** A horizontal bar chart in SVG: one bar per row, its value written beside it; "<5" and masked values draw no bar. */
function BarChart(props: { id: string; title: string; label: string; bars: { label: string; value: Shown; text: string }[] }) {
  const max = Math.max(1, ...props.bars.map((b) => ('n' in b.value ? b.value.n : 0)));
  const rowH = 26;
  const labelW = 240;
  const barW = 360;
  const height = props.bars.length * rowH + 8;
  return (
    <figure class="chart">
      <svg role="img" aria-labelledby={`${props.id}-t`} viewBox={`0 0 ${labelW + barW + 90} ${height}`} width="100%" height={height} focusable="false">
        <title id={`${props.id}-t`}>{props.label}</title>
        {props.bars.map((b, i) => {
          const w = 'n' in b.value ? Math.round((b.value.n / max) * barW) : 0;
          const y = i * rowH + 4;
          return (
            <g>
              <text x={labelW - 8} y={y + 17} text-anchor="end" class="chart-label">
                {b.label.length > 34 ? `${b.label.slice(0, 33)}…` : b.label}
              </text>
              <rect x={labelW} y={y + 3} width={w} height={rowH - 8} class="chart-bar" />
              <text x={labelW + w + 6} y={y + 17} class="chart-value">
                {b.text}
              </text>
            </g>
          );
        })}
      </svg>
    </figure>
  );
}

function DataTable(props: { env: PageEnv; t: ReturnType<typeof tableOf>; csvHref: string; csvLabel: string }) {
  const { t } = props;
  return (
    <>
      {t.rows.length === 0 ? (
        <p>{props.env.m.statistics.none}</p>
      ) : (
        <div class="table-wrap">
          <table>
            <caption>{t.title}</caption>
            <thead>
              <tr>
                {t.head.map((h, i) => (
                  <th scope="col" class={t.numeric[i] ? 'num' : undefined}>
                    {h}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {t.rows.map((r) => (
                <tr>
                  {r.map((v, i) => (i === 0 ? <th scope="row">{v}</th> : <td class={t.numeric[i] ? 'num' : undefined}>{v}</td>))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <p>
        <a href={props.csvHref} download>
          {props.csvLabel}
        </a>
      </p>
    </>
  );
}

function query(f: StatisticsFilters, extra: Record<string, string> = {}): string {
  const p = new URLSearchParams();
  if (f.region) p.set('region', f.region);
  if (f.from) p.set('from', f.from);
  if (f.to) p.set('to', f.to);
  for (const [k, v] of Object.entries(extra)) p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : '';
}

function StatisticsPage(props: { env: PageEnv; s: Statistics | null; regions: string[]; values: Record<string, string | undefined>; errors?: FieldErrors }) {
  const { env, s } = props;
  const st = env.m.statistics;
  const m = env.m;
  const section = (id: Table, chart: { label: string; value: Shown; text: string }[] | null, note: string) => {
    const t = tableOf(m, s!, id);
    return (
      <section aria-labelledby={`h-${id}`}>
        <h3 id={`h-${id}`}>{t.title}</h3>
        <p class="hint">{note}</p>
        {chart && chart.length > 0 && <BarChart id={`c-${id}`} title={t.title} label={st.chartLabel(t.title)} bars={chart} />}
        <DataTable env={env} t={t} csvHref={`/operator/statistics/${id}.csv${query(s!.filters)}`} csvLabel={st.csv(t.title)} />
      </section>
    );
  };
  return (
    <Page env={env} title={st.title} hasErrors={!!props.errors}>
      <h1>{st.title}</h1>
      <ErrorSummary env={env} errors={props.errors} />
      <p class="lead">{st.lead}</p>
      <form method="get" action="/operator/statistics" novalidate>
        <fieldset>
          <legend>{st.filters}</legend>
          <Select env={env} name="region" label={st.region} value={props.values.region ?? ''} errors={props.errors} options={[{ value: '', label: st.allRegions }, ...props.regions.map((r) => ({ value: r, label: r }))]} />
          <TextField env={env} name="from" label={st.from} hint={st.monthHint} value={props.values.from} errors={props.errors} width="short" />
          <TextField env={env} name="to" label={st.to} value={props.values.to} errors={props.errors} width="short" />
          <p class="actions">
            <button type="submit" class="button">
              {st.apply}
            </button>
          </p>
        </fieldset>
      </form>
      <p class="hint">{st.csvNote}</p>
      {s && (
        <>
          <h2>{st.waitingTitle}</h2>
          <p>{st.waitingLead}</p>
          <p>
            <strong>{st.total(cellText(m, s.waiting.total))}</strong>
          </p>
          {section(
            'waiting-by-region',
            s.waiting.byRegion.map((r) => ({ label: r.key, value: r.count, text: cellText(m, r.count) })),
            st.byRegionNote,
          )}
          {section(
            'waiting-by-age',
            s.waiting.byAgeGroup.map((r) => ({ label: st.ageGroup[r.key], value: r.count, text: cellText(m, r.count) })),
            st.byAgeNote,
          )}
          {section(
            'waiting-by-month',
            s.waiting.byMonth.map((r) => ({ label: r.key, value: r.count, text: cellText(m, r.count) })),
            st.byMonthNote,
          )}
          <h2>{st.placesTitle}</h2>
          {section(
            'places',
            s.places.map((r) => ({ label: `${r.region} — ${st.ageGroup[r.ageGroup]}`, value: { n: r.vacancies }, text: `${r.vacancies} / ${r.places}` })),
            st.placesNote,
          )}
          <h2>{st.placementTitle}</h2>
          {section(
            'placement',
            s.placement.map((r) => ({ label: `${r.region} — ${st.ageGroup[r.ageGroup]}`, value: r.medianDays === null ? { lt5: true } : { n: r.medianDays }, text: r.medianDays === null ? st.notShown : String(r.medianDays) })),
            st.placementNote,
          )}
        </>
      )}
    </Page>
  );
}

function rawValues(q: unknown): Record<string, string | undefined> {
  const o = (q ?? {}) as Record<string, unknown>;
  const v: Record<string, string | undefined> = {};
  for (const k of ['region', 'from', 'to']) if (typeof o[k] === 'string') v[k] = (o[k] as string).slice(0, 120);
  return v;
}

export function statisticsRoutes(app: FastifyInstance, deps: Deps) {
  app.get('/operator/statistics', async (req, reply: FastifyReply) => {
    const ctx = req.ctx;
    if (!ctx.actor) throw new AppError('signInRequired');
    const env = pageEnv(req, reply);
    let filters: StatisticsFilters;
    try {
      filters = parseFilters(req.query);
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      // The page comes back with the filters as typed, and no figures until they are right.
      const s = await readStatistics(deps, ctx, { region: null, from: null, to: null }, { kind: 'page' });
      return sendPage(reply, <StatisticsPage env={env} s={null} regions={s.regions} values={rawValues(req.query)} errors={err.fields} />, 400);
    }
    const s = await readStatistics(deps, ctx, filters, { kind: 'page' });
    if (filters.region && !s.regions.includes(filters.region)) {
      return sendPage(reply, <StatisticsPage env={env} s={null} regions={s.regions} values={rawValues(req.query)} errors={{ region: 'regionUnknown' }} />, 400);
    }
    return sendPage(reply, <StatisticsPage env={env} s={s} regions={s.regions} values={{ region: filters.region ?? '', from: filters.from ?? '', to: filters.to ?? '' }} />);
  });

  app.get<{ Params: { table: string } }>('/operator/statistics/:table', async (req, reply) => {
    const ctx = req.ctx;
    if (!ctx.actor) throw new AppError('signInRequired');
    const m = /^([a-z-]+)\.csv$/.exec(req.params.table);
    const table = m && (TABLES as readonly string[]).includes(m[1]!) ? (m[1] as Table) : null;
    if (!table) throw new AppError('notFound');
    const filters = parseFilters(req.query);
    const s = await readStatistics(deps, ctx, filters, { kind: 'csv', table });
    if (filters.region && !s.regions.includes(filters.region)) throw new ValidationError({ region: 'regionUnknown' });
    const locale: Locale = ctx.locale;
    const t = tableOf(messages(locale), s, table, true);
    const name = `guichet-${table}-${ctx.now.toISOString().slice(0, 10)}.csv`;
    return reply
      .header('cache-control', 'no-store')
      .header('content-disposition', `attachment; filename="${name}"`)
      .type('text/csv; charset=utf-8')
      .send(toCsv(t.head, t.rows));
  });
}
