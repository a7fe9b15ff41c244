import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ComponentChildren } from 'preact';
import { z } from 'zod';
import type { Deps } from '../context.ts';
import { AppError, ValidationError } from '../errors.ts';
import { Checkbox, Csrf, ErrorSummary, Fieldset, Notice, Page, Select, SummaryList, Tag, TextField, type FieldErrors } from '../web/components.tsx';
import { formatDateTime } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';
import { ALERT_STATUSES, ALERTS_PAGE_SIZE, listAlerts, readAlert, responseKey, SEVERITIES, updateAlert, type AlertStatus, type Severity } from './alerts.ts';
import { setWebhook, webhookSettings } from './webhook.ts';
import { protectedReview } from './protected.ts';
import { listRules, RESPONSE_ORDER, saveRule } from './rules.ts';
import { saveWorkingHours, workingHoursOf, type WorkingHours } from './hours.ts';
import { decideLockdownLower, lockdownState, MAX_LEVEL, raiseLockdown, requestLockdownLower, type LockdownChangeView } from './lockdown.ts';
import type { PageEnv } from '../web/components.tsx';
import { Pagination } from '../web/components.tsx';

function hhmm(minutes: number): string {
  return `${String(Math.floor(minutes / 60)).padStart(2, '0')}:${String(minutes % 60).padStart(2, '0')}`;
}

/** "08:30" as minutes from midnight; "24:00" only as an end. */
function minutesOf(v: string, end: boolean): number | null {
  const m = /^(\d{1,2})(?::|h)(\d{2})$/.exec(v);
  if (!m) return null;
  const h = Number(m[1]);
  const min = Number(m[2]);
  if (min > 59 || h > 24 || (h === 24 && (min > 0 || !end))) return null;
  return h * 60 + min;
}

const SEVERITY_TONE: Record<Severity, 'blue' | 'orange' | 'grey'> = { low: 'blue', high: 'orange', critical: 'orange' };
const STATUS_TONE: Record<AlertStatus, 'orange' | 'blue' | 'green'> = { open: 'orange', acknowledged: 'blue', closed: 'green' };

function ruleLabel(env: PageEnv, code: string): string {
  return env.m.detection.rules[code] ?? code;
}

function alertsQuery(q: Record<string, unknown>) {
  const status = ALERT_STATUSES.find((s) => s === q.status);
  const severity = SEVERITIES.find((s) => s === q.severity);
  const mine = q.mine === 'on';
  const page = z.coerce.number().int().min(1).max(10_000).catch(1).parse(q.page);
  return { status, severity, mine, page };
}

const UPDATES = ['acknowledge', 'close', 'reopen', 'assign', 'note', 'reinstate', 'reinstateApprove', 'reinstateRefuse'] as const;

const DONE = ['raised', 'requested', 'approved', 'refused'] as const;

const levelForm = z.object({ level: z.string().max(2).optional(), reason: z.string().max(2000).optional(), confirm: z.string().max(8).optional() });

/** The security console's pages for detection: alerts, the daily review of protected files, the webhook, the tenant's lockdown level. */
export function detectionRoutes(app: FastifyInstance, deps: Deps) {
  app.get('/security/alerts', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    const f = alertsQuery((req.query ?? {}) as Record<string, unknown>);
    const { rows, total } = await listAlerts(deps, req.ctx, f);
    const env = pageEnv(req, reply);
    const a = env.m.detection.alerts;
    const pages = Math.max(1, Math.ceil(total / ALERTS_PAGE_SIZE));
    const qs = (p: number) => {
      const u = new URLSearchParams();
      if (f.status) u.set('status', f.status);
      if (f.severity) u.set('severity', f.severity);
      if (f.mine) u.set('mine', 'on');
      u.set('page', String(p));
      return `/security/alerts?${u.toString()}`;
    };
    return sendPage(
      reply,
      <Page env={env} title={a.title}>
        <h1>{a.title}</h1>
        <p class="lead">{a.lead}</p>
        <ul>
          <li>
            <a href="/security/lockdown">{a.lockdownLink}</a>
          </li>
          <li>
            <a href="/security/alerts/webhook">{a.webhookLink}</a>
          </li>
          <li>
            <a href="/security/protected">{env.m.detection.protected.link}</a>
          </li>
          <li>
            <a href="/security/rules">{env.m.detection.rulesPage.link}</a>
          </li>
        </ul>
        <form method="get" action="/security/alerts" class="filters">
          <h2>{a.filterTitle}</h2>
          <Select env={env} name="status" label={a.status} value={f.status ?? ''} options={[{ value: '', label: a.any }, ...ALERT_STATUSES.map((x) => ({ value: x, label: a.statuses[x] }))]} />
          <Select env={env} name="severity" label={a.severityLabel} value={f.severity ?? ''} options={[{ value: '', label: a.any }, ...SEVERITIES.map((x) => ({ value: x, label: env.m.detection.severity[x] }))]} />
          <Checkbox name="mine" label={a.mine} checked={f.mine} />
          <button type="submit" class="button button--secondary">
            {a.apply}
          </button>
        </form>
        <p role="status">{a.count(total)}</p>
        {rows.length === 0 ? (
          <p>{a.none}</p>
        ) : (
          <div class="table-wrap">
            <table>
              <caption class="visually-hidden">{a.title}</caption>
              <thead>
                <tr>
                  <th scope="col">{a.colWhen}</th>
                  <th scope="col">{a.colRule}</th>
                  <th scope="col">{a.colSeverity}</th>
                  <th scope="col">{a.colSubject}</th>
                  <th scope="col">{a.colResponse}</th>
                  <th scope="col">{a.colStatus}</th>
                  <th scope="col">{a.colAssigned}</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((r) => (
                  <tr>
                    <td>
                      <a href={`/security/alerts/${r.id}`} aria-label={a.open(formatDateTime(env.locale, r.createdAt))}>
                        {formatDateTime(env.locale, r.createdAt)}
                      </a>
                    </td>
                    <td>{ruleLabel(env, r.ruleCode)}</td>
                    <td>
                      <Tag tone={SEVERITY_TONE[r.severity]}>{env.m.detection.severity[r.severity]}</Tag>
                    </td>
                    <td>{r.subjectEmail ?? '—'}</td>
                    <td>
                      {env.m.detection.responses[responseKey(r.response)]}
                      {r.lockdownLevel ? ` — ${a.lockdownRaised(r.lockdownLevel)}` : ''}
                    </td>
                    <td>
                      <Tag tone={STATUS_TONE[r.status]}>{a.statuses[r.status]}</Tag>
                    </td>
                    <td>{r.assignedEmail ?? a.nobody}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        <Pagination env={env} page={f.page} pages={pages} href={qs} />
      </Page>,
    );
  });

  async function rulesPage(req: FastifyRequest, reply: FastifyReply, errors?: FieldErrors, hoursErrors?: FieldErrors, hoursValues?: Record<string, string>) {
    const rules = await listRules(deps, req.ctx);
    const hours = await workingHoursOf(deps, req.ctx);
    const env = pageEnv(req, reply);
    const r = env.m.detection.rulesPage;
    const saved = (req.query as Record<string, unknown>)?.saved === '1';
    const hoursSaved = (req.query as Record<string, unknown>)?.saved === 'hours';
    const hv = hoursValues ?? { start: hhmm(hours.startMinute), end: hhmm(hours.endMinute), timeZone: hours.timeZone, ...Object.fromEntries(hours.days.map((d) => [`day${d}`, 'on'])) };
    const yesNo = (b: boolean) => (b ? r.yes : r.no);
    return sendPage(
      reply,
      <Page env={env} title={r.title} hasErrors={!!errors || !!hoursErrors}>
        <p>
          <a href="/security/alerts" class="back-link">
            {env.m.detection.alerts.back}
          </a>
        </p>
        <ErrorSummary env={env} errors={errors} />
        <h1>{r.title}</h1>
        <p class="lead">{r.lead}</p>
        {saved && <Notice>{r.saved}</Notice>}
        {hoursSaved && <Notice>{r.hoursSaved}</Notice>}
        <div class="table-wrap">
          <table>
            <caption class="visually-hidden">{r.title}</caption>
            <thead>
              <tr>
                <th scope="col">{r.colRule}</th>
                <th scope="col">{r.colSignal}</th>
                <th scope="col" class="num">
                  {r.colThreshold}
                </th>
                <th scope="col" class="num">
                  {r.colWindow}
                </th>
                <th scope="col">{r.colResponse}</th>
                <th scope="col">{r.colLockdown}</th>
                <th scope="col">{r.colBatch}</th>
                <th scope="col">{r.colEnabled}</th>
              </tr>
            </thead>
            <tbody>
              {rules.map((x) => (
                <tr>
                  <td>
                    {ruleLabel(env, x.code)} <code>{x.code}</code>
                  </td>
                  <td>{r.signals[x.signal] ?? x.signal}</td>
                  <td class="num">{x.threshold}</td>
                  <td class="num">{x.windowSeconds}</td>
                  <td>{env.m.detection.responses[responseKey(x.response)]}</td>
                  <td>{x.lockdownLevel ?? r.none}</td>
                  <td>{yesNo(x.exceptDeclaredBatch)}</td>
                  <td>{yesNo(x.enabled)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        <form method="post" action="/security/rules" novalidate>
          <Csrf env={env} />
          <h2>{r.changeTitle}</h2>
          <Select env={env} name="code" label={r.code} options={rules.map((x) => ({ value: x.code, label: `${ruleLabel(env, x.code)} (${x.code})` }))} errors={errors} />
          <TextField env={env} name="threshold" label={r.threshold} width="short" errors={errors} />
          <TextField env={env} name="windowSeconds" label={r.window} width="short" errors={errors} />
          <Select env={env} name="response" label={r.response} options={RESPONSE_ORDER.map((x) => ({ value: x, label: env.m.detection.responses[x] }))} errors={errors} />
          <Select env={env} name="lockdownLevel" label={r.lockdown} options={[{ value: '', label: r.none }, ...[1, 2, 3, 4].map((n) => ({ value: String(n), label: env.m.detection.lockdown.levelOption(n) }))]} errors={errors} />
          <Checkbox name="exceptDeclaredBatch" label={r.batch} />
          <Checkbox name="enabled" label={r.enabled} checked />
          <button type="submit" class="button">
            {r.save}
          </button>
        </form>
        <form method="post" action="/security/rules/hours" novalidate>
          <Csrf env={env} />
          <h2>{r.hoursTitle}</h2>
          <p>{r.hoursLead}</p>
          <p>
            {r.hoursCurrent(
              hours.days.map((d) => r.weekdays[d - 1]).join(', '),
              hhmm(hours.startMinute),
              hhmm(hours.endMinute),
              hours.timeZone,
            )}
          </p>
          <ErrorSummary env={env} errors={hoursErrors} />
          <Fieldset legend={r.hoursDays} name="days" env={env} errors={hoursErrors}>
            {r.weekdays.map((label, i) => (
              <Checkbox name={`day${i + 1}`} label={label} checked={hv[`day${i + 1}`] === 'on'} />
            ))}
          </Fieldset>
          <TextField env={env} name="start" label={r.hoursStart} width="short" value={hv.start} errors={hoursErrors} />
          <TextField env={env} name="end" label={r.hoursEnd} width="short" value={hv.end} errors={hoursErrors} />
          <TextField env={env} name="timeZone" label={r.hoursTimeZone} width="medium" value={hv.timeZone} errors={hoursErrors} spellcheck={false} />
          <button type="submit" class="button">
            {r.hoursSave}
          </button>
        </form>
      </Page>,
      errors || hoursErrors ? 400 : 200,
    );
  }

  app.post('/security/rules/hours', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    const b = (req.body ?? {}) as Record<string, unknown>;
    const str = (k: string) => (typeof b[k] === 'string' ? (b[k] as string).trim().slice(0, 100) : '');
    const values: Record<string, string> = { start: str('start'), end: str('end'), timeZone: str('timeZone') };
    const days: number[] = [];
    for (let d = 1; d <= 7; d++) {
      if (b[`day${d}`] === 'on') {
        days.push(d);
        values[`day${d}`] = 'on';
      }
    }
    try {
      const start = minutesOf(values.start!, false);
      const end = minutesOf(values.end!, true);
      if (!days.length) throw new ValidationError({ days: 'hoursDays' });
      if (start === null) throw new ValidationError({ start: 'hoursTime' });
      if (end === null) throw new ValidationError({ end: 'hoursTime' });
      const h: WorkingHours = { timeZone: values.timeZone!, days, startMinute: start, endMinute: end };
      await saveWorkingHours(deps, req.ctx, h);
    } catch (err) {
      if (err instanceof ValidationError) return rulesPage(req, reply, undefined, err.fields, values);
      throw err;
    }
    return reply.redirect('/security/rules?saved=hours', 303);
  });

  app.get('/security/rules', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    return rulesPage(req, reply);
  });

  app.post('/security/rules', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    const b = (req.body ?? {}) as Record<string, unknown>;
    const str = (k: string) => (typeof b[k] === 'string' ? (b[k] as string).trim() : '');
    const current = (await listRules(deps, req.ctx)).find((x) => x.code === str('code'));
    const int = (k: string) => (/^\d{1,7}$/.test(str(k)) ? Number(str(k)) : Number.NaN);
    try {
      if (!current) throw new ValidationError({ code: 'invalidValue' });
      if (Number.isNaN(int('threshold'))) throw new ValidationError({ threshold: 'invalidValue' });
      if (Number.isNaN(int('windowSeconds'))) throw new ValidationError({ windowSeconds: 'invalidValue' });
      await saveRule(deps, req.ctx, {
        code: current.code,
        signal: current.signal,
        threshold: int('threshold'),
        windowSeconds: int('windowSeconds'),
        response: str('response') as never,
        lockdownLevel: str('lockdownLevel') ? Number(str('lockdownLevel')) : null,
        exceptDeclaredBatch: b.exceptDeclaredBatch === 'on',
        enabled: b.enabled === 'on',
      });
    } catch (err) {
      if (err instanceof ValidationError) return rulesPage(req, reply, err.fields.rule ? { threshold: 'invalidValue' } : err.fields);
      throw err;
    }
    return reply.redirect('/security/rules?saved=1', 303);
  });

  app.get('/security/protected', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    const raw = (req.query as Record<string, unknown>)?.day;
    const todayHere = new Intl.DateTimeFormat('en-CA', { timeZone: 'America/Toronto', year: 'numeric', month: '2-digit', day: '2-digit' }).format(req.ctx.now);
    const day = typeof raw === 'string' && raw ? raw.slice(0, 10) : todayHere;
    let rows: Awaited<ReturnType<typeof protectedReview>> = [];
    let errors: FieldErrors | undefined;
    try {
      rows = await protectedReview(deps, req.ctx, day);
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      errors = { day: 'dateInvalid' };
    }
    const env = pageEnv(req, reply);
    const p = env.m.detection.protected;
    return sendPage(
      reply,
      <Page env={env} title={p.title} hasErrors={!!errors}>
        <p>
          <a href="/security/alerts" class="back-link">
            {env.m.detection.alerts.back}
          </a>
        </p>
        <ErrorSummary env={env} errors={errors} />
        <h1>{p.title}</h1>
        <p class="lead">{p.lead}</p>
        <form method="get" action="/security/protected">
          <TextField env={env} name="day" label={p.day} type="date" value={errors ? '' : day} errors={errors} width="medium" />
          <button type="submit" class="button button--secondary">
            {p.show}
          </button>
        </form>
        {!errors &&
          (rows.length === 0 ? (
            <p>{p.none}</p>
          ) : (
            <div class="table-wrap">
              <table>
                <caption class="visually-hidden">{p.title}</caption>
                <thead>
                  <tr>
                    <th scope="col">{p.colWhen}</th>
                    <th scope="col">{p.colBy}</th>
                    <th scope="col">{p.colFile}</th>
                    <th scope="col">{p.colReason}</th>
                    <th scope="col">{p.colAlert}</th>
                  </tr>
                </thead>
                <tbody>
                  {rows.map((r) => (
                    <tr>
                      <td>{formatDateTime(env.locale, r.openedAt)}</td>
                      <td>{r.accountEmail}</td>
                      <td>
                        <code>{r.reference}</code>
                      </td>
                      <td>{r.reason ?? <em>{p.reasonErased}</em>}</td>
                      <td>{r.alertId ? <a href={`/security/alerts/${r.alertId}`}>{p.viewAlert(r.reference)}</a> : '—'}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          ))}
      </Page>,
      errors ? 400 : 200,
    );
  });

  async function webhookPage(req: FastifyRequest, reply: FastifyReply, errors?: FieldErrors, value?: string) {
    const s = await webhookSettings(deps, req.ctx);
    const env = pageEnv(req, reply);
    const a = env.m.detection.alerts;
    const saved = (req.query as Record<string, unknown>)?.saved === '1';
    return sendPage(
      reply,
      <Page env={env} title={a.webhookTitle} hasErrors={!!errors}>
        <p>
          <a href="/security/alerts" class="back-link">
            {a.back}
          </a>
        </p>
        <ErrorSummary env={env} errors={errors} />
        <h1>{a.webhookTitle}</h1>
        <p class="lead">{a.webhookLead}</p>
        {saved && <Notice>{a.webhookSaved}</Notice>}
        <SummaryList
          rows={[
            [a.webhookUrl, s.url ?? a.webhookNone],
            [a.webhookSecret, <code>{s.secret}</code>],
          ]}
        />
        <form method="post" action="/security/alerts/webhook" novalidate>
          <Csrf env={env} />
          <TextField env={env} name="url" label={a.webhookUrl} hint={a.webhookUrlHint} value={value ?? s.url ?? ''} errors={errors} spellcheck={false} />
          <button type="submit" class="button">
            {a.webhookSave}
          </button>
        </form>
        {s.recent.length > 0 && (
          <>
            <h2>{a.deliveriesTitle}</h2>
            <div class="table-wrap">
              <table>
                <caption class="visually-hidden">{a.deliveriesTitle}</caption>
                <thead>
                  <tr>
                    <th scope="col">{a.colWhen}</th>
                    <th scope="col">{a.colDelivered}</th>
                    <th scope="col" class="num">
                      {a.colAttempts}
                    </th>
                    <th scope="col">{a.colLastError}</th>
                  </tr>
                </thead>
                <tbody>
                  {s.recent.map((r) => (
                    <tr>
                      <td>{formatDateTime(env.locale, r.createdAt)}</td>
                      <td>{r.deliveredAt ? formatDateTime(env.locale, r.deliveredAt) : a.notDelivered}</td>
                      <td class="num">{r.attempts}</td>
                      <td>{r.lastError ?? '—'}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          </>
        )}
      </Page>,
      errors ? 400 : 200,
    );
  }

  app.get('/security/alerts/webhook', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    return webhookPage(req, reply);
  });

  app.post('/security/alerts/webhook', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    const raw = (req.body as Record<string, unknown> | undefined)?.url;
    const url = typeof raw === 'string' ? raw : '';
    try {
      await setWebhook(deps, req.ctx, url);
    } catch (err) {
      if (err instanceof ValidationError) return webhookPage(req, reply, err.fields, url.slice(0, 500));
      throw err;
    }
    return reply.redirect('/security/alerts/webhook?saved=1', 303);
  });

  async function alertPage(req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply, errors?: FieldErrors, note?: string) {
    const { alert, notes, events, officers, reinstatement, openings } = await readAlert(deps, req.ctx, req.params.id);
    const env = pageEnv(req, reply);
    const a = env.m.detection.alerts;
    const done = UPDATES.find((d) => d === (req.query as Record<string, unknown>)?.done);
    const title = a.alertTitle(ruleLabel(env, alert.ruleCode));
    const d = alert.details;
    const action = (kind: (typeof UPDATES)[number], label: string, secondary = false) => (
      <form method="post" action={`/security/alerts/${alert.id}/${kind}`} class="inline-form">
        <Csrf env={env} />
        <button type="submit" class={`button${secondary ? ' button--secondary' : ''}`}>
          {label}
        </button>
      </form>
    );
    return sendPage(
      reply,
      <Page env={env} title={title} hasErrors={!!errors}>
        <p>
          <a href="/security/alerts" class="back-link">
            {a.back}
          </a>
        </p>
        <ErrorSummary env={env} errors={errors} />
        <h1>{title}</h1>
        {done && <Notice>{a.done[done]}</Notice>}
        <SummaryList
          rows={[
            [a.summaryWhen, formatDateTime(env.locale, alert.createdAt)],
            [a.colSeverity, <Tag tone={SEVERITY_TONE[alert.severity]}>{env.m.detection.severity[alert.severity]}</Tag>],
            [a.colSubject, alert.subjectEmail ?? '—'],
            ...(alert.subjectStatus ? ([[a.summaryAccount, a.accountStatus[alert.subjectStatus] ?? alert.subjectStatus]] as [string, string][]) : []),
            [a.colResponse, `${env.m.detection.responses[responseKey(alert.response)]}${alert.lockdownLevel ? ` — ${a.lockdownRaised(alert.lockdownLevel)}` : ''}`],
            ...(typeof d.total === 'number' && typeof d.threshold === 'number' && typeof d.windowSeconds === 'number'
              ? ([[a.summaryTotal, `${d.total} (${a.summaryThreshold(d.threshold, d.windowSeconds)})`]] as [string, string][])
              : []),
            ...openings.map((o): [string, ComponentChildren] => [a.summaryReason(o.reference), o.reason ?? <em>{env.m.detection.protected.reasonErased}</em>]),
            [a.colStatus, <Tag tone={STATUS_TONE[alert.status]}>{a.statuses[alert.status]}</Tag>],
            [a.colAssigned, alert.assignedEmail ?? a.nobody],
          ]}
        />
        <div class="actions">
          {alert.status === 'open' && action('acknowledge', a.acknowledge)}
          {alert.status !== 'closed' ? action('close', a.close, true) : action('reopen', a.reopen, true)}
          {alert.subjectStatus === 'suspended' && !reinstatement && action('reinstate', a.reinstate, true)}
        </div>
        {reinstatement && (
          <div class="notice notice--info" role="status">
            <p>
              {reinstatement.requestedBy === req.ctx.actor!.accountId
                ? a.reinstateAskedByYou(formatDateTime(env.locale, reinstatement.requestedAt))
                : a.reinstateAsked(reinstatement.requestedByEmail, formatDateTime(env.locale, reinstatement.requestedAt))}
            </p>
            <div class="actions">
              {reinstatement.requestedBy !== req.ctx.actor!.accountId && action('reinstateApprove', a.reinstateApprove)}
              {action('reinstateRefuse', reinstatement.requestedBy === req.ctx.actor!.accountId ? a.reinstateWithdraw : a.reinstateRefuse, true)}
            </div>
          </div>
        )}
        <form method="post" action={`/security/alerts/${alert.id}/assign`}>
          <Csrf env={env} />
          <h2>{a.assignTitle}</h2>
          <Select env={env} name="assignee" label={a.assignee} value={alert.assignedTo ?? ''} options={officers.map((o) => ({ value: o.id, label: o.email }))} errors={errors} />
          <button type="submit" class="button button--secondary">
            {a.assign}
          </button>
        </form>
        <h2>{a.notesTitle}</h2>
        {notes.length === 0 ? (
          <p>{a.noNotes}</p>
        ) : (
          <ul class="notes">
            {notes.map((n) => (
              <li>
                <p>
                  <strong>{n.authorEmail}</strong> — {formatDateTime(env.locale, n.createdAt)}
                </p>
                <p class="note-body">{n.body}</p>
              </li>
            ))}
          </ul>
        )}
        <form method="post" action={`/security/alerts/${alert.id}/note`} novalidate>
          <Csrf env={env} />
          <TextField env={env} name="note" label={a.note} hint={a.noteHint} value={note} errors={errors} />
          <button type="submit" class="button">
            {a.addNote}
          </button>
        </form>
        <h2>{a.eventsTitle}</h2>
        <p>{a.eventsLead}</p>
        <div class="table-wrap">
          <table>
            <caption class="visually-hidden">{a.eventsTitle}</caption>
            <thead>
              <tr>
                <th scope="col" class="num">
                  {a.colSeq}
                </th>
                <th scope="col">{a.colWhen}</th>
                <th scope="col">{a.colAction}</th>
                <th scope="col">{a.colOutcome}</th>
                <th scope="col">{a.colActor}</th>
                <th scope="col" class="num">
                  {a.colTargets}
                </th>
                <th scope="col">{a.colRequest}</th>
              </tr>
            </thead>
            <tbody>
              {events.map((e) => (
                <tr id={`event-${e.id}`}>
                  <td class="num">{e.seq}</td>
                  <td>{formatDateTime(env.locale, e.occurredAt)}</td>
                  <td>
                    <code>{e.action}</code>
                    {e.cause && (
                      <>
                        {' '}
                        <Tag tone="orange">{a.cause}</Tag>
                      </>
                    )}
                  </td>
                  <td>{a.outcomes[e.outcome] ?? e.outcome}</td>
                  <td>{e.actorEmail ?? '—'}</td>
                  <td class="num">{e.count}</td>
                  <td>
                    <code>{e.requestId ?? '—'}</code>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        {alert.eventIds[0] && (
          <p>
            <a href={`/security/incidents/new?event=${encodeURIComponent(alert.eventIds[0])}`}>{a.openIncident}</a>
          </p>
        )}
      </Page>,
      errors ? 400 : 200,
    );
  }

  app.get<{ Params: { id: string } }>('/security/alerts/:id', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    return alertPage(req, reply);
  });

  for (const kind of UPDATES) {
    app.post<{ Params: { id: string } }>(`/security/alerts/:id/${kind}`, async (req, reply) => {
      if (!req.ctx.actor) throw new AppError('signInRequired');
      const body = (req.body ?? {}) as Record<string, unknown>;
      const text = (k: string) => (typeof body[k] === 'string' ? (body[k] as string) : '');
      try {
        if (kind === 'assign') await updateAlert(deps, req.ctx, req.params.id, { kind, accountId: text('assignee') });
        else if (kind === 'note') await updateAlert(deps, req.ctx, req.params.id, { kind, body: text('note') });
        else await updateAlert(deps, req.ctx, req.params.id, { kind });
      } catch (err) {
        if (err instanceof ValidationError) return alertPage(req, reply, err.fields, kind === 'note' ? text('note').slice(0, 2000) : undefined);
        throw err;
      }
      return reply.redirect(`/security/alerts/${req.params.id}?done=${kind}`, 303);
    });
  }

  async function lockdownPage(req: FastifyRequest, reply: FastifyReply, form: { raise?: FieldErrors; lower?: FieldErrors; values?: { level?: string; reason?: string } } = {}) {
    const state = await lockdownState(deps, req.ctx);
    const env = pageEnv(req, reply);
    const l = env.m.detection.lockdown;
    const me = req.ctx.actor!.accountId;
    const done = DONE.find((d) => d === (req.query as Record<string, unknown>)?.done);
    const errors = { ...form.raise, ...form.lower };
    const higher = Array.from({ length: MAX_LEVEL - state.level }, (_, i) => state.level + 1 + i);
    const lower = Array.from({ length: state.level }, (_, i) => i);
    const pending = state.changes.filter((c) => c.status === 'pending');
    const history = state.changes.filter((c) => c.status !== 'pending');
    const who = (c: LockdownChangeView) => c.requestedByEmail ?? l.byDetection;
    return sendPage(
      reply,
      <Page env={env} title={l.title} hasErrors={Object.keys(errors).length > 0}>
        <ErrorSummary env={env} errors={errors} />
        <h1>{l.title}</h1>
        <p class="lead">{l.lead}</p>
        {done && <Notice>{l.done[done]}</Notice>}
        <SummaryList
          rows={[
            [l.current, <Tag tone={state.level === 0 ? 'green' : 'orange'}>{l.levelOption(state.level)}</Tag>],
            ...(state.since ? ([[l.since, formatDateTime(env.locale, state.since)]] as [string, string][]) : []),
          ]}
        />
        <p>{l.levels[state.level]}</p>
        <h2>{l.levelsTitle}</h2>
        <ul>
          {l.levels.map((d) => (
            <li>{d}</li>
          ))}
        </ul>
        {higher.length > 0 && (
          <form method="post" action="/security/lockdown/raise" novalidate>
            <Csrf env={env} />
            <h2>{l.raiseTitle}</h2>
            <p class="hint">{l.raiseHint}</p>
            <Select env={env} name="level" label={l.level} options={higher.map((n) => ({ value: String(n), label: l.levels[n]! }))} value={form.raise ? form.values?.level : undefined} errors={form.raise} />
            <TextField env={env} name="reason" label={l.reason} hint={l.reasonHint} value={form.raise ? form.values?.reason : undefined} errors={form.raise} />
            <button type="submit" class="button button--warning">
              {l.raiseButton}
            </button>
          </form>
        )}
        {lower.length > 0 && (
          <form method="post" action="/security/lockdown/lower" novalidate>
            <Csrf env={env} />
            <h2>{l.lowerTitle}</h2>
            <p class="hint">{l.lowerHint}</p>
            <Select env={env} name="level" label={l.level} options={lower.map((n) => ({ value: String(n), label: l.levels[n]! }))} value={form.lower ? form.values?.level : undefined} errors={form.lower} />
            <TextField env={env} name="reason" label={l.reason} hint={l.reasonHint} value={form.lower ? form.values?.reason : undefined} errors={form.lower} />
            <button type="submit" class="button button--secondary">
              {l.lowerButton}
            </button>
          </form>
        )}
        <h2>{l.pendingTitle}</h2>
        {pending.length === 0 ? (
          <p>{l.none}</p>
        ) : (
          <div class="table-wrap">
            <table>
              <caption class="visually-hidden">{l.pendingTitle}</caption>
              <thead>
                <tr>
                  <th scope="col">{l.colChange}</th>
                  <th scope="col">{l.colReason}</th>
                  <th scope="col">{l.colBy}</th>
                  <th scope="col">{l.colWhen}</th>
                  <th scope="col">{l.colAction}</th>
                </tr>
              </thead>
              <tbody>
                {pending.map((c) => (
                  <tr>
                    <td>{l.change(c.fromLevel, c.toLevel)}</td>
                    <td>{c.reason}</td>
                    <td>{who(c)}</td>
                    <td>{formatDateTime(env.locale, c.requestedAt)}</td>
                    <td>
                      {c.requestedBy === me ? (
                        l.ownRequest
                      ) : (
                        <>
                          <form method="post" action={`/security/lockdown/changes/${c.id}/approve`} class="inline-form">
                            <Csrf env={env} />
                            <button type="submit" class="button" aria-label={l.approveLabel(c.fromLevel, c.toLevel)}>
                              {l.approve}
                            </button>
                          </form>{' '}
                          <form method="post" action={`/security/lockdown/changes/${c.id}/refuse`} class="inline-form">
                            <Csrf env={env} />
                            <button type="submit" class="button button--secondary" aria-label={l.refuseLabel(c.fromLevel, c.toLevel)}>
                              {l.refuse}
                            </button>
                          </form>
                        </>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        <h2>{l.historyTitle}</h2>
        {history.length === 0 ? (
          <p>{l.none}</p>
        ) : (
          <div class="table-wrap">
            <table>
              <caption class="visually-hidden">{l.historyTitle}</caption>
              <thead>
                <tr>
                  <th scope="col">{l.colChange}</th>
                  <th scope="col">{l.colReason}</th>
                  <th scope="col">{l.colBy}</th>
                  <th scope="col">{l.colWhen}</th>
                  <th scope="col">{l.colStatus}</th>
                </tr>
              </thead>
              <tbody>
                {history.map((c) => (
                  <tr>
                    <td>{l.change(c.fromLevel, c.toLevel)}</td>
                    <td>{c.reason}</td>
                    <td>
                      {who(c)}
                      {c.decidedByEmail ? ` / ${c.decidedByEmail}` : ''}
                    </td>
                    <td>{formatDateTime(env.locale, c.decidedAt ?? c.requestedAt)}</td>
                    <td>{l.status[c.status]}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Page>,
      Object.keys(errors).length ? 400 : 200,
    );
  }

  app.get('/security/lockdown', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    return lockdownPage(req, reply);
  });

  for (const which of ['raise', 'lower'] as const) {
    app.post(`/security/lockdown/${which}`, async (req, reply) => {
      if (!req.ctx.actor) throw new AppError('signInRequired');
      const body = levelForm.safeParse(req.body);
      const values = body.success ? body.data : {};
      const level = values.level === undefined || values.level === '' ? Number.NaN : Number(values.level);
      try {
        if (which === 'raise' && values.confirm !== 'yes') {
          // A dangerous action: its own page, naming the consequence, before anything changes.
          const c = await raiseLockdown(deps, req.ctx, level, values.reason, { check: true });
          const env = pageEnv(req, reply);
          const l = env.m.detection.lockdown;
          return sendPage(
            reply,
            <Page env={env} title={l.confirmTitle(c.to)}>
              <h1>{l.confirmTitle(c.to)}</h1>
              <p class="lead">{l.levels[c.to]}</p>
              <p>{l.confirmLead(c.from, c.to)}</p>
              <form method="post" action="/security/lockdown/raise">
                <Csrf env={env} />
                <input type="hidden" name="level" value={String(c.to)} />
                <input type="hidden" name="reason" value={c.reason} />
                <input type="hidden" name="confirm" value="yes" />
                <button type="submit" class="button button--warning">
                  {l.confirmButton(c.to)}
                </button>
              </form>
              <p>
                <a href="/security/lockdown">{l.cancel}</a>
              </p>
            </Page>,
          );
        }
        if (which === 'raise') await raiseLockdown(deps, req.ctx, level, values.reason);
        else await requestLockdownLower(deps, req.ctx, level, values.reason);
      } catch (err) {
        if (err instanceof ValidationError) return lockdownPage(req, reply, { [which]: err.fields, values: values as { level?: string; reason?: string } });
        throw err;
      }
      return reply.redirect(`/security/lockdown?done=${which === 'raise' ? 'raised' : 'requested'}`, 303);
    });
  }

  for (const decision of ['approve', 'refuse'] as const) {
    app.post<{ Params: { id: string } }>(`/security/lockdown/changes/:id/${decision}`, async (req, reply) => {
      if (!req.ctx.actor) throw new AppError('signInRequired');
      await decideLockdownLower(deps, req.ctx, req.params.id, decision);
      return reply.redirect(`/security/lockdown?done=${decision === 'approve' ? 'approved' : 'refused'}`, 303);
    });
  }
}
