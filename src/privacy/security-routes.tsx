import { h } from 'preact';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { decide } from '../access/decide.ts';
import type { Deps } from '../context.ts';
import { AppError, ValidationError } from '../errors.ts';
import { Csrf, ErrorSummary, fieldId, Fieldset, Notice, Page, Select, Tag, TextField, type FieldErrors, type PageEnv } from '../web/components.tsx';
import { isRealDate, parseBody, text } from '../web/forms.ts';
import { formatDate, formatDateTime, type FieldErrorKey } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';
import { breachReportCsv, BreachReportError, createBreachReport, fieldLabel, type BreachErrorCode, type BreachReport, type Selector } from './breach.ts';
import { authorize, createIncident, exportIncidents, getIncident, getIncidentWithLinks, linkAlerts, linkAuditEvents, listIncidents, updateIncident, type Incident, type IncidentInput, type IncidentLinks, type IncidentVersion, type LinkedAlert } from './incidents.ts';
import { sendBreachNotices } from './notices.ts';

function TextArea(props: { env: PageEnv; name: string; label: string; hint?: string; value?: string; errors?: FieldErrors | undefined; rows?: number }) {
  const id = fieldId(props.name);
  const key = props.errors?.[props.name];
  const described = [props.hint ? `${id}-hint` : '', key ? `${id}-error` : ''].filter(Boolean).join(' ') || undefined;
  return (
    <div class={`field${key ? ' field--error' : ''}`}>
      <label for={id}>{props.label}</label>
      {props.hint && (
        <p class="hint" id={`${id}-hint`}>
          {props.hint}
        </p>
      )}
      {key && (
        <p class="field-error" id={`${id}-error`}>
          <span class="visually-hidden">{props.env.m.layout.errorTitlePrefix}</span>
          {props.env.m.errors.field[key]}
        </p>
      )}
      {h('textarea', { id, name: props.name, rows: props.rows ?? 4, class: 'input input--long', 'aria-invalid': key ? 'true' : undefined, 'aria-describedby': described } as never, props.value ?? '')}
    </div>
  );
}

/* ------------------------------------------------------------ the register */

const optionalDate = z
  .string()
  .optional()
  .transform((s) => (s ?? '').trim())
  .refine((s) => s === '' || isRealDate(s), { error: 'dateInvalid' })
  .transform((s) => (s === '' ? null : s));

const longText = (required: FieldErrorKey) => text(required, 4000);
const optionalText = (max: number) =>
  z
    .string()
    .optional()
    .transform((s) => (s ?? '').normalize('NFC').trim())
    .pipe(z.string().max(max, { error: 'invalidValue' }).refine((s) => !/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/.test(s), { error: 'invalidValue' }));

const incidentForm = z
  .object({
    title: text('incidentTitleRequired', 200),
    dataConcerned: longText('incidentTextRequired'),
    circumstances: longText('incidentTextRequired'),
    occurredFrom: optionalDate,
    occurredTo: optionalDate,
    discoveredOn: z.string({ error: 'dateRequired' }).trim().min(1, { error: 'dateRequired' }).refine(isRealDate, { error: 'dateInvalid' }),
    personsCount: z
      .string()
      .optional()
      .transform((s) => (s ?? '').trim())
      .refine((s) => s === '' || (/^\d{1,9}$/.test(s) && Number(s) <= 100_000_000), { error: 'incidentPersonsInvalid' })
      .transform((s) => (s === '' ? null : Number(s))),
    riskLevel: z.enum(['undetermined', 'not_serious', 'serious'], { error: 'invalidValue' }),
    riskAssessment: optionalText(4000),
    commissionNotifiedOn: optionalDate,
    personsNotifiedOn: optionalDate,
    publicNotice: optionalText(2000),
    measures: optionalText(4000),
    auditEventIds: optionalText(40_000).transform((s) => s.split(/[\s,;]+/).filter(Boolean)),
    alertIds: optionalText(2000).transform((s) => s || null),
  })
  .superRefine((v, c) => {
    if (v.occurredFrom && v.occurredTo && v.occurredFrom > v.occurredTo) c.addIssue({ code: 'custom', path: ['occurredTo'], message: 'incidentWindowOrder' });
  });

type IncidentValues = Partial<Record<keyof IncidentInput, string>>;

function valuesOf(i: Incident): IncidentValues {
  return {
    title: i.title,
    dataConcerned: i.dataConcerned,
    circumstances: i.circumstances,
    occurredFrom: i.occurredFrom ?? '',
    occurredTo: i.occurredTo ?? '',
    discoveredOn: i.discoveredOn,
    personsCount: i.personsCount === null ? '' : String(i.personsCount),
    riskLevel: i.riskLevel,
    riskAssessment: i.riskAssessment,
    commissionNotifiedOn: i.commissionNotifiedOn ?? '',
    personsNotifiedOn: i.personsNotifiedOn ?? '',
    publicNotice: i.publicNotice,
    measures: i.measures,
    auditEventIds: i.auditEventIds.join('\n'),
    alertIds: i.alertIds ?? '',
  };
}

interface LinksProps {
  links: IncidentLinks;
  recentAlerts: LinkedAlert[];
  versions: IncidentVersion[];
  errors?: FieldErrors;
  values?: Record<string, string>;
  message?: string;
}

function IncidentLinksSection({ env, incident, p }: { env: PageEnv; incident: Incident; p: LinksProps }) {
  const m = env.m.incidents;
  const when = (d: Date) => formatDateTime(env.locale, d);
  const v = p.values ?? {};
  const linked = new Set(incident.linkedAlertIds);
  return (
    <section aria-labelledby="incident-links">
      <h2 id="incident-links">{m.linksTitle}</h2>
      {p.message && <Notice>{p.message}</Notice>}
      <h3>{m.alertsTitle}</h3>
      {p.links.alerts.length === 0 ? (
        <p>{m.alertsNone}</p>
      ) : (
        <ul>
          {p.links.alerts.map((a) => (
            <li>
              <a href={`/security/alerts/${a.id}`}>{m.alertLabel(a.ruleCode, a.severity, a.status, when(a.createdAt), a.subject)}</a>
            </li>
          ))}
        </ul>
      )}
      {p.recentAlerts.length === 0 ? (
        <p class="hint">{m.alertsNoneInTenant}</p>
      ) : (
        <form method="post" action={`/security/incidents/${incident.id}/alerts`} novalidate>
          <Csrf env={env} />
          <Fieldset legend={m.alertsLegend}>
            <p class="hint">{m.alertsKeptHint}</p>
            {p.errors?.alerts && (
              <p class="field-error" id="f-alerts-error">
                <span class="visually-hidden">{env.m.layout.errorTitlePrefix}</span>
                {env.m.errors.field[p.errors.alerts]}
              </p>
            )}
            {p.recentAlerts.map((a) => (
              <div class="checkbox">
                <input type="checkbox" id={fieldId(`alert-${a.id}`)} name="alerts" value={a.id} checked={linked.has(a.id)} disabled={linked.has(a.id)} />
                <label for={fieldId(`alert-${a.id}`)}>{m.alertLabel(a.ruleCode, a.severity, a.status, when(a.createdAt), a.subject)}</label>
              </div>
            ))}
          </Fieldset>
          <p class="actions">
            <button type="submit" class="button button--secondary">
              {m.alertsSave}
            </button>
          </p>
        </form>
      )}
      <h3>{m.eventsTitle}</h3>
      {p.links.events.length === 0 ? (
        <p>{m.eventsNone}</p>
      ) : (
        <div class="table-wrap">
          <table>
            <caption class="visually-hidden">{m.eventsTitle}</caption>
            <thead>
              <tr>
                <th scope="col" class="num">
                  {m.colSeq}
                </th>
                <th scope="col">{m.colWhen}</th>
                <th scope="col">{m.colAction}</th>
                <th scope="col">{m.colOutcome}</th>
                <th scope="col">{m.colActor}</th>
              </tr>
            </thead>
            <tbody>
              {p.links.events.map((e) => (
                <tr>
                  <td class="num">{e.seq}</td>
                  <td>{when(e.occurredAt)}</td>
                  <td>
                    <code>{e.action}</code>
                  </td>
                  <td>{e.outcome}</td>
                  <td>{e.actor ?? '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <form method="post" action={`/security/incidents/${incident.id}/events`} novalidate>
        <Csrf env={env} />
        <Fieldset legend={m.eventsLegend}>
          <p class="hint">{m.eventsHint}</p>
          <TextField env={env} name="seqFrom" label={m.seqFrom} width="short" value={v.seqFrom} errors={p.errors} />
          <TextField env={env} name="seqTo" label={m.seqTo} width="short" value={v.seqTo} errors={p.errors} />
          <TextField env={env} name="actor" label={m.actor} value={v.actor} errors={p.errors} spellcheck={false} />
          <TextField env={env} name="session" label={m.session} value={v.session} errors={p.errors} spellcheck={false} />
        </Fieldset>
        <p class="actions">
          <button type="submit" class="button button--secondary">
            {m.eventsAdd}
          </button>
        </p>
      </form>
      <h3>{m.noticesTitle}</h3>
      <p>{p.links.notices.families === 0 ? m.noticesNone : m.noticesQueued(p.links.notices.families, formatDate(env.locale, p.links.notices.firstAt!.toISOString().slice(0, 10)), formatDate(env.locale, p.links.notices.lastAt!.toISOString().slice(0, 10)))}</p>
      <p class="hint">
        <a href="/security/breach-report">{m.noticesHowTo}</a>
      </p>
      <h3>{m.versionsTitle(p.versions.length)}</h3>
      {p.versions.length === 0 ? (
        <p>{m.versionsNone}</p>
      ) : (
        <>
          <p class="hint">{m.versionsLead}</p>
          {p.versions.map((x) => (
            <details>
              <summary>{m.versionHeading(x.version, when(x.writtenAt), x.writtenBy, when(x.replacedAt), x.replacedBy)}</summary>
              <dl>
                <dt>{m.fields.title}</dt>
                <dd>{x.title}</dd>
                <dt>{m.fields.riskLevel}</dt>
                <dd>{(m.risk as Record<string, string>)[x.riskLevel] ?? x.riskLevel}</dd>
                <dt>{m.fields.riskAssessment}</dt>
                <dd>{x.riskAssessment || '—'}</dd>
                <dt>{m.fields.personsCount}</dt>
                <dd>{x.personsCount ?? '—'}</dd>
                <dt>{m.fields.commissionNotifiedOn}</dt>
                <dd>{x.commissionNotifiedOn ? formatDate(env.locale, x.commissionNotifiedOn) : '—'}</dd>
                <dt>{m.fields.personsNotifiedOn}</dt>
                <dd>{x.personsNotifiedOn ? formatDate(env.locale, x.personsNotifiedOn) : '—'}</dd>
                <dt>{m.fields.dataConcerned}</dt>
                <dd>{x.dataConcerned}</dd>
                <dt>{m.fields.circumstances}</dt>
                <dd>{x.circumstances}</dd>
                <dt>{m.fields.measures}</dt>
                <dd>{x.measures || '—'}</dd>
              </dl>
            </details>
          ))}
        </>
      )}
    </section>
  );
}

function IncidentFormPage(props: { env: PageEnv; title: string; action: string; values: IncidentValues; errors?: FieldErrors; incident?: Incident; saved?: boolean; links?: LinksProps }) {
  const { env, values: v, errors } = props;
  const m = env.m.incidents;
  const f = m.fields;
  const date = (name: keyof IncidentInput, label: string) => <TextField env={env} name={name} label={label} type="date" width="medium" value={v[name]} errors={errors} />;
  return (
    <Page env={env} title={props.title} hasErrors={(!!errors && Object.keys(errors).length > 0) || (!!props.links?.errors && Object.keys(props.links.errors).length > 0)}>
      <p>
        <a href="/security/incidents" class="back-link">
          {m.back}
        </a>
      </p>
      <ErrorSummary env={env} errors={errors ?? props.links?.errors} />
      {props.saved && <Notice>{m.saved}</Notice>}
      <h1>{props.title}</h1>
      {props.incident && <p class="hint">{m.retainUntil(formatDate(env.locale, props.incident.retainUntil))}</p>}
      <form method="post" action={props.action} novalidate>
        <Csrf env={env} />
        <TextField env={env} name="title" label={f.title} value={v.title} errors={errors} />
        <TextArea env={env} name="dataConcerned" label={f.dataConcerned} hint={f.dataConcernedHint} value={v.dataConcerned ?? ''} errors={errors} />
        <TextArea env={env} name="circumstances" label={f.circumstances} value={v.circumstances ?? ''} errors={errors} />
        {date('occurredFrom', f.occurredFrom)}
        {date('occurredTo', f.occurredTo)}
        {date('discoveredOn', f.discoveredOn)}
        <TextField env={env} name="personsCount" label={f.personsCount} hint={f.personsCountHint} width="short" value={v.personsCount} errors={errors} />
        <Select env={env} name="riskLevel" label={f.riskLevel} value={v.riskLevel ?? 'undetermined'} errors={errors} options={(['undetermined', 'not_serious', 'serious'] as const).map((r) => ({ value: r, label: m.risk[r] }))} />
        <TextArea env={env} name="riskAssessment" label={f.riskAssessment} hint={f.riskAssessmentHint} value={v.riskAssessment ?? ''} errors={errors} />
        {date('commissionNotifiedOn', f.commissionNotifiedOn)}
        {date('personsNotifiedOn', f.personsNotifiedOn)}
        <TextArea env={env} name="publicNotice" label={f.publicNotice} value={v.publicNotice ?? ''} errors={errors} rows={2} />
        <TextArea env={env} name="measures" label={f.measures} value={v.measures ?? ''} errors={errors} />
        <TextArea env={env} name="auditEventIds" label={f.auditEventIds} hint={f.auditEventIdsHint} value={v.auditEventIds ?? ''} errors={errors} rows={3} />
        <TextField env={env} name="alertIds" label={f.alertIds} value={v.alertIds} errors={errors} />
        <p class="actions">
          <button type="submit" class="button">
            {m.save}
          </button>
        </p>
      </form>
      {props.incident && props.links && <IncidentLinksSection env={env} incident={props.incident} p={props.links} />}
    </Page>
  );
}

function formValues(body: unknown): IncidentValues {
  const b = (body ?? {}) as Record<string, unknown>;
  const out: IncidentValues = {};
  for (const k of ['title', 'dataConcerned', 'circumstances', 'occurredFrom', 'occurredTo', 'discoveredOn', 'personsCount', 'riskLevel', 'riskAssessment', 'commissionNotifiedOn', 'personsNotifiedOn', 'publicNotice', 'measures', 'auditEventIds', 'alertIds'] as const) {
    if (typeof b[k] === 'string') out[k] = (b[k] as string).slice(0, 40_000);
  }
  return out;
}

const TONE = { undetermined: 'grey', not_serious: 'green', serious: 'orange' } as const;

/* ---------------------------------------------------- the breach report */

/** 'YYYY-MM-DDTHH:MM' on Montreal's clock (a datetime-local field) → an instant. */
export function montrealInstant(s: string): Date | null {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})$/.exec(s.trim());
  if (!m || !isRealDate(`${m[1]}-${m[2]}-${m[3]}`) || Number(m[4]) > 23 || Number(m[5]) > 59) return null;
  const wall = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]));
  const fmt = new Intl.DateTimeFormat('en-US', { timeZone: 'America/Toronto', hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit' });
  const offsetAt = (t: number) => {
    const p = Object.fromEntries(fmt.formatToParts(new Date(t)).map((x) => [x.type, x.value]));
    return Date.UTC(Number(p.year), Number(p.month) - 1, Number(p.day), Number(p.hour), Number(p.minute)) - t;
  };
  // Twice: the offset at the guess may differ from the one at the answer across a DST change.
  let t = wall - offsetAt(wall);
  t = wall - offsetAt(t);
  return new Date(t);
}

const FIELD_OF: Partial<Record<BreachErrorCode, [string, FieldErrorKey]>> = {
  window_invalid: ['from', 'breachWindowInvalid'],
  window_order: ['to', 'breachWindowOrder'],
  selector_missing: ['value', 'breachValueRequired'],
  unknown_actor: ['value', 'breachUnknownActor'],
  unknown_session: ['value', 'breachUnknownSession'],
  bad_ip: ['value', 'breachBadIp'],
};

type BreachValues = { kind?: string; value?: string; from?: string; to?: string };

function requireOfficer(req: FastifyRequest) {
  const ctx = req.ctx;
  if (!ctx.actor) throw new AppError('signInRequired');
  if (!decide(ctx.actor, 'privacy.breachReport.create', { type: 'tenant' }, ctx.now).allowed) throw new AppError('forbidden');
}

function BreachFormPage(props: { env: PageEnv; values: BreachValues; errors?: FieldErrors; report?: BreachReport; unverified?: boolean; incidents?: Incident[] }) {
  const { env, values: v, errors, report } = props;
  const b = env.m.breach;
  const kind = v.kind ?? 'actor';
  const radio = (value: string, label: string) => (
    <div class="radio">
      <input type="radio" id={fieldId(`kind-${value}`)} name="kind" value={value} checked={kind === value} />
      <label for={fieldId(`kind-${value}`)}>{label}</label>
    </div>
  );
  const input = (name: 'from' | 'to', label: string) => {
    const id = fieldId(name);
    const key = errors?.[name];
    return (
      <div class={`field${key ? ' field--error' : ''}`}>
        <label for={id}>{label}</label>
        {key && (
          <p class="field-error" id={`${id}-error`}>
            <span class="visually-hidden">{env.m.layout.errorTitlePrefix}</span>
            {env.m.errors.field[key]}
          </p>
        )}
        <input id={id} name={name} type="datetime-local" class="input input--medium" value={v[name] ?? ''} aria-invalid={key ? 'true' : undefined} aria-describedby={key ? `${id}-error` : undefined} />
      </div>
    );
  };
  return (
    <Page env={env} title={b.title} hasErrors={!!errors && Object.keys(errors).length > 0}>
      <p>
        <a href="/security/incidents" class="back-link">
          {env.m.incidents.title}
        </a>
      </p>
      <ErrorSummary env={env} errors={errors} />
      <h1>{b.title}</h1>
      {props.unverified && (
        <div class="error-summary" role="alert">
          <p>{b.unverified}</p>
        </div>
      )}
      <p class="lead">{b.lead}</p>
      <p class="hint">{b.stepUp}</p>
      <form method="post" action="/security/breach-report" novalidate>
        <Csrf env={env} />
        <Fieldset legend={b.selector}>
          {radio('actor', b.byActor)}
          {radio('session', b.bySession)}
          {radio('ip', b.byIp)}
        </Fieldset>
        <TextField env={env} name="value" label={b.value} value={v.value} errors={errors} spellcheck={false} />
        {input('from', b.from)}
        {input('to', b.to)}
        <p class="actions">
          <button type="submit" class="button" name="format" value="html">
            {b.show}
          </button>
          <button type="submit" class="button button--secondary" name="format" value="json">
            {b.downloadJson}
          </button>
          <button type="submit" class="button button--secondary" name="format" value="csv">
            {b.downloadCsv}
          </button>
        </p>
      </form>
      {report && <BreachResult env={env} report={report} values={v} incidents={props.incidents ?? []} />}
    </Page>
  );
}

function BreachResult({ env, report: r, values, incidents }: { env: PageEnv; report: BreachReport; values: BreachValues; incidents: Incident[] }) {
  const b = env.m.breach;
  const kinds = env.m.privacy.kinds;
  return (
    <section aria-labelledby="breach-result">
      <h2 id="breach-result">{b.resultTitle}</h2>
      <p>{b.verified(r.verification.treeSize, formatDateTime(env.locale, new Date(r.verification.signedAt)))}</p>
      <p>{b.totals(r.totals.families, r.totals.files, r.events, r.refused)}</p>
      {r.unsealed > 0 && <p>{b.unsealed(r.unsealed)}</p>}
      <p>
        <a class="button button--secondary" href={`/security/incidents/new?event=${r.eventId}&persons=${r.totals.families}`}>
          {b.toRegister}
        </a>
      </p>
      {r.persons.length === 0 ? (
        <p>{b.noneFound}</p>
      ) : (
        <div class="table-wrap">
          <table>
            <caption class="visually-hidden">{b.resultTitle}</caption>
            <thead>
              <tr>
                <th scope="col">{b.colFamily}</th>
                <th scope="col">{b.colFile}</th>
                <th scope="col">{b.colKinds}</th>
                <th scope="col">{b.colFields}</th>
                <th scope="col">{b.colWhen}</th>
              </tr>
            </thead>
            <tbody>
              {r.persons.flatMap((p) =>
                p.files.map((f) => (
                  <tr>
                    <td>{p.email ?? p.familyId}</td>
                    <td>{f.reference}</td>
                    <td>{f.kinds.map((k) => kinds[k]).join(', ')}</td>
                    <td>{f.fields.map((x) => fieldLabel(env.locale, x)).join(', ')}</td>
                    <td>{f.accesses.map((a) => formatDateTime(env.locale, new Date(a.at))).join(' ; ')}</td>
                  </tr>
                )),
              )}
            </tbody>
          </table>
        </div>
      )}
      {r.notices.length > 0 && (
        <>
          <h2>{b.noticesTitle}</h2>
          {r.notices.map((n) => (
            <details>
              <summary>
                {n.to} ({n.locale})
              </summary>
              <pre class="mail-body" lang={n.locale}>
                {`${n.subject}\n\n${n.body}`}
              </pre>
            </details>
          ))}
          <h2 id="send-notices">{b.sendTitle}</h2>
          <p>{b.sendLead}</p>
          {incidents.length === 0 ? (
            <p>{b.sendNoIncident}</p>
          ) : (
            <form method="post" action="/security/breach-report/notices" novalidate>
              <Csrf env={env} />
              <input type="hidden" name="kind" value={values.kind ?? ''} />
              <input type="hidden" name="value" value={values.value ?? ''} />
              <input type="hidden" name="from" value={values.from ?? ''} />
              <input type="hidden" name="to" value={values.to ?? ''} />
              <Select env={env} name="incident" label={b.sendIncident} value={incidents[0]!.id} options={incidents.map((i) => ({ value: i.id, label: `${env.m.incidents.editTitle(i.number)} — ${i.title}` }))} />
              <p class="actions">
                <button type="submit" class="button">
                  {b.sendButton}
                </button>
              </p>
            </form>
          )}
        </>
      )}
      <h2>{b.commissionTitle}</h2>
      <pre class="mail-body" lang="fr">
        {r.commission.fr}
      </pre>
    </section>
  );
}

export function securityPrivacyRoutes(app: FastifyInstance, deps: Deps) {
  app.get('/security/incidents', async (req, reply) => {
    const rows = await listIncidents(deps, req.ctx);
    const env = pageEnv(req, reply);
    const m = env.m.incidents;
    const d = (x: string | null) => (x ? formatDate(env.locale, x) : '—');
    return sendPage(
      reply,
      <Page env={env} title={m.title}>
        <h1>{m.title}</h1>
        <p class="lead">{m.lead}</p>
        <p class="actions">
          <a class="button" href="/security/incidents/new">
            {m.newLink}
          </a>
          <a href="/security/breach-report">{m.breachLink}</a>
        </p>
        <p>
          <a href="/security/audit">{env.m.audit.title}</a>
        </p>
        {rows.length === 0 ? (
          <p>{m.none}</p>
        ) : (
          <div class="table-wrap">
            <table>
              <caption class="visually-hidden">{m.title}</caption>
              <thead>
                <tr>
                  <th scope="col">{m.colNumber}</th>
                  <th scope="col">{m.colTitle}</th>
                  <th scope="col">{m.colDiscovered}</th>
                  <th scope="col" class="num">
                    {m.colPersons}
                  </th>
                  <th scope="col">{m.colRisk}</th>
                  <th scope="col">{m.colNotices}</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((i) => (
                  <tr>
                    <td>{i.number}</td>
                    <td>
                      <a href={`/security/incidents/${i.id}`}>{i.title}</a>
                    </td>
                    <td>{d(i.discoveredOn)}</td>
                    <td class="num">{i.personsCount ?? m.unknown}</td>
                    <td>
                      <Tag tone={TONE[i.riskLevel]}>{m.risk[i.riskLevel]}</Tag>
                    </td>
                    <td>{m.noticesSent(d(i.commissionNotifiedOn), d(i.personsNotifiedOn))}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        <p>
          <a href="/security/incidents/export.csv" download>
            {m.exportCsv}
          </a>
        </p>
        <p>
          <a href="/security/incidents/export.json" download>
            {m.exportJson}
          </a>
        </p>
      </Page>,
    );
  });

  const exportRoute = (format: 'csv' | 'json') => async (req: FastifyRequest, reply: FastifyReply) => {
    const body = await exportIncidents(deps, req.ctx, format);
    return reply
      .header('cache-control', 'no-store')
      .header('content-disposition', `attachment; filename="incidents-${req.ctx.tenant.slug}-${req.ctx.now.toISOString().slice(0, 10)}.${format}"`)
      .type(format === 'csv' ? 'text/csv; charset=utf-8' : 'application/json; charset=utf-8')
      .send(body);
  };
  app.get('/security/incidents/export.csv', exportRoute('csv'));
  app.get('/security/incidents/export.json', exportRoute('json'));

  app.get<{ Querystring: { event?: string; persons?: string } }>('/security/incidents/new', async (req, reply) => {
    requireOfficer(req);
    const env = pageEnv(req, reply);
    // From a breach report: its event linked, its count of families as the persons concerned.
    const event = typeof req.query.event === 'string' && /^[0-9a-f-]{36}$/i.test(req.query.event) ? req.query.event : '';
    const persons = typeof req.query.persons === 'string' && /^\d{1,9}$/.test(req.query.persons) ? req.query.persons : '';
    return sendPage(
      reply,
      <IncidentFormPage env={env} title={env.m.incidents.newTitle} action="/security/incidents" values={{ discoveredOn: req.ctx.now.toISOString().slice(0, 10), riskLevel: 'undetermined', auditEventIds: event, personsCount: persons }} />,
    );
  });

  app.post('/security/incidents', async (req, reply) => {
    // Who may write comes before what was written: a refusal says nothing about the input.
    await authorize(deps, req.ctx, 'incident.write', 'incident.create', 'new');
    try {
      const input = parseBody(incidentForm, req.body) as IncidentInput;
      const i = await createIncident(deps, req.ctx, input);
      return reply.redirect(`/security/incidents/${i.id}?saved=1`, 303);
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      const env = pageEnv(req, reply);
      return sendPage(reply, <IncidentFormPage env={env} title={env.m.incidents.newTitle} action="/security/incidents" values={formValues(req.body)} errors={err.fields} />, 400);
    }
  });

  app.get<{ Params: { id: string }; Querystring: { saved?: string; linked?: string; alerts?: string; queued?: string; already?: string } }>('/security/incidents/:id', async (req, reply) => {
    const { incident: i, links, recentAlerts, versions } = await getIncidentWithLinks(deps, req.ctx, req.params.id);
    const env = pageEnv(req, reply);
    const m = env.m.incidents;
    const q = req.query;
    const num = (x: string | undefined) => (typeof x === 'string' && /^\d{1,6}$/.test(x) ? Number(x) : null);
    const message =
      num(q.queued) !== null ? m.noticesSentNow(num(q.queued)!, num(q.already) ?? 0) : num(q.linked) !== null ? m.eventsAdded(num(q.linked)!) : q.alerts === '1' ? m.alertsSaved : undefined;
    return sendPage(
      reply,
      <IncidentFormPage env={env} title={m.editTitle(i.number)} action={`/security/incidents/${i.id}`} values={valuesOf(i)} incident={i} saved={q.saved === '1'} links={{ links, recentAlerts, versions, ...(message ? { message } : {}) }} />,
    );
  });

  /** The entry's page again, with an error in one of its link forms (and what was typed). */
  const linksError = async (req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply, errors: FieldErrors, values: Record<string, string>) => {
    const { incident: i, links, recentAlerts, versions } = await getIncidentWithLinks(deps, req.ctx, req.params.id);
    const env = pageEnv(req, reply);
    return sendPage(reply, <IncidentFormPage env={env} title={env.m.incidents.editTitle(i.number)} action={`/security/incidents/${i.id}`} values={valuesOf(i)} incident={i} links={{ links, recentAlerts, versions, errors, values }} />, 400);
  };

  app.post<{ Params: { id: string } }>('/security/incidents/:id/alerts', async (req, reply) => {
    await authorize(deps, req.ctx, 'incident.write', 'incident.link', req.params.id);
    const raw = ((req.body ?? {}) as Record<string, unknown>).alerts;
    const list = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
    try {
      if (list.some((x) => typeof x !== 'string')) throw new ValidationError({ alerts: 'incidentAlertUnknown' });
      await linkAlerts(deps, req.ctx, req.params.id, list as string[]);
      return reply.redirect(`/security/incidents/${req.params.id}?alerts=1`, 303);
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      return linksError(req, reply, err.fields, {});
    }
  });

  app.post<{ Params: { id: string } }>('/security/incidents/:id/events', async (req, reply) => {
    await authorize(deps, req.ctx, 'incident.write', 'incident.link', req.params.id);
    const b = (req.body ?? {}) as Record<string, unknown>;
    const str = (k: string) => (typeof b[k] === 'string' ? (b[k] as string).trim().slice(0, 200) : '');
    const values = { seqFrom: str('seqFrom'), seqTo: str('seqTo'), actor: str('actor'), session: str('session') };
    try {
      const seq = (k: 'seqFrom' | 'seqTo') => {
        if (values[k] === '') return null;
        if (!/^\d{1,15}$/.test(values[k]) || Number(values[k]) < 1) throw new ValidationError({ [k]: 'seqInvalid' });
        return Number(values[k]);
      };
      const r = await linkAuditEvents(deps, req.ctx, req.params.id, { seqFrom: seq('seqFrom'), seqTo: seq('seqTo'), actor: values.actor || null, session: values.session || null });
      return reply.redirect(`/security/incidents/${req.params.id}?linked=${r.added}`, 303);
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      return linksError(req, reply, err.fields, values);
    }
  });

  app.post<{ Params: { id: string } }>('/security/incidents/:id', async (req, reply) => {
    await authorize(deps, req.ctx, 'incident.write', 'incident.update', req.params.id);
    try {
      const input = parseBody(incidentForm, req.body) as IncidentInput;
      const i = await updateIncident(deps, req.ctx, req.params.id, input);
      return reply.redirect(`/security/incidents/${i.id}?saved=1`, 303);
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      const i = await getIncident(deps, req.ctx, req.params.id);
      const env = pageEnv(req, reply);
      return sendPage(reply, <IncidentFormPage env={env} title={env.m.incidents.editTitle(i.number)} action={`/security/incidents/${i.id}`} values={formValues(req.body)} errors={err.fields} incident={i} />, 400);
    }
  });

  app.get('/security/breach-report', async (req, reply) => {
    requireOfficer(req);
    const env = pageEnv(req, reply);
    return sendPage(reply, <BreachFormPage env={env} values={{ kind: 'actor' }} />);
  });

  app.post('/security/breach-report', async (req, reply) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const str = (k: string) => (typeof body[k] === 'string' ? (body[k] as string).slice(0, 200) : '');
    const values: BreachValues = { kind: str('kind'), value: str('value'), from: str('from'), to: str('to') };
    const format = str('format') || 'html';
    const kind = ['actor', 'session', 'ip'].includes(values.kind!) ? (values.kind as Selector['kind']) : 'actor';
    const from = montrealInstant(values.from!);
    const to = montrealInstant(values.to!);
    try {
      if (format !== 'html' && format !== 'json' && format !== 'csv') throw new AppError('badRequest');
      const report = await createBreachReport(
        deps,
        { kind: 'web', ctx: req.ctx },
        { selector: values.value ? { kind, value: values.value } : (undefined as never), from: from?.toISOString() ?? values.from ?? '', to: to?.toISOString() ?? values.to ?? '' },
      );
      if (format === 'html') {
        const incidents = report.notices.length ? await listIncidents(deps, req.ctx) : [];
        return sendPage(reply, <BreachFormPage env={pageEnv(req, reply)} values={values} report={report} incidents={incidents} />);
      }
      const stamp = req.ctx.now.toISOString().slice(0, 10);
      return reply
        .header('cache-control', 'no-store')
        .header('content-disposition', `attachment; filename="breach-report-${req.ctx.tenant.slug}-${stamp}.${format}"`)
        .type(format === 'csv' ? 'text/csv; charset=utf-8' : 'application/json; charset=utf-8')
        .send(format === 'csv' ? `\ufeff${breachReportCsv(report)}` : `${JSON.stringify(report, null, 1)}\n`);
    } catch (err) {
      if (err instanceof BreachReportError) {
        if (err.code === 'forbidden') throw new AppError(req.ctx.actor ? 'forbidden' : 'signInRequired');
        if (err.code === 'log_unverified') return sendPage(reply, <BreachFormPage env={pageEnv(req, reply)} values={values} unverified />, 409);
        const field = FIELD_OF[err.code];
        if (!field) throw err;
        return sendPage(reply, <BreachFormPage env={pageEnv(req, reply)} values={values} errors={{ [field[0]]: field[1] }} />, 400);
      }
      throw err;
    }
  });
  app.post('/security/breach-report/notices', async (req, reply) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const str = (k: string) => (typeof body[k] === 'string' ? (body[k] as string).slice(0, 200) : '');
    const values: BreachValues = { kind: str('kind'), value: str('value'), from: str('from'), to: str('to') };
    const kind = ['actor', 'session', 'ip'].includes(values.kind!) ? (values.kind as Selector['kind']) : 'actor';
    const from = montrealInstant(values.from!);
    const to = montrealInstant(values.to!);
    try {
      const sent = await sendBreachNotices(deps, req.ctx, str('incident'), {
        selector: values.value ? { kind, value: values.value } : (undefined as never),
        from: from?.toISOString() ?? values.from ?? '',
        to: to?.toISOString() ?? values.to ?? '',
      });
      return reply.redirect(`/security/incidents/${str('incident')}?queued=${sent.queued}&already=${sent.already}`, 303);
    } catch (err) {
      if (err instanceof BreachReportError) {
        if (err.code === 'forbidden') throw new AppError(req.ctx.actor ? 'forbidden' : 'signInRequired');
        if (err.code === 'log_unverified') return sendPage(reply, <BreachFormPage env={pageEnv(req, reply)} values={values} unverified />, 409);
        const field = FIELD_OF[err.code];
        if (!field) throw err;
        return sendPage(reply, <BreachFormPage env={pageEnv(req, reply)} values={values} errors={{ [field[0]]: field[1] }} />, 400);
      }
      throw err;
    }
  });
}
