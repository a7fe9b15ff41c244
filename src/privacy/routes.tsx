import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import { inTenant } from '../db/tenant.ts';
import type { Deps } from '../context.ts';
import { AppError } from '../errors.ts';
import { requireRecentAuth } from '../identity/stepup.ts';
import { Csrf, Page, Pagination, type PageEnv } from '../web/components.tsx';
import { formatDate, formatDateTime } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';
import { readAccessLog, type AccessEntry } from './access-log.ts';
import { fieldLabel } from './breach.ts';
import { buildFamilyExport } from './export.ts';
import { pendingPurges, requestFamilyDeletion, RETENTION_ROWS_SHOWN, retentionPreview, type DeletedFile, type ScheduledFile } from './retention.ts';
import { accountChildFiles } from '../records/lookups.ts';

function PurgeTable({ env, rows }: { env: PageEnv; rows: DeletedFile[] }) {
  const d = env.m.deletion;
  return (
    <div class="table-wrap">
      <table>
        <caption class="visually-hidden">{d.pendingTitle}</caption>
        <thead>
          <tr>
            <th scope="col">{d.colReference}</th>
            <th scope="col">{d.colDeleted}</th>
            <th scope="col">{d.colPurge}</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr>
              <td>{r.reference}</td>
              <td>{formatDate(env.locale, r.deletedAt)}</td>
              <td>{formatDate(env.locale, r.purgeOn)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export { RETENTION_ROWS_SHOWN };

function ScheduleTable({ env, rows, caption }: { env: PageEnv; rows: ScheduledFile[]; caption: string }) {
  const r = env.m.retention;
  if (!rows.length) return <p>{r.none}</p>;
  return (
    <div class="table-wrap">
      <table>
        <caption class="visually-hidden">{caption}</caption>
        <thead>
          <tr>
            <th scope="col">{r.colReference}</th>
            <th scope="col">{r.colDate}</th>
            <th scope="col">{r.colReason}</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((f) => (
            <tr>
              <td>{f.reference}</td>
              <td>{formatDate(env.locale, f.deleteOn)}</td>
              <td>{r.reasons[f.reason]}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** Who acted, as a parent reads it: the organisation, then the role. */
function whoOf(env: PageEnv, e: AccessEntry): string {
  const p = env.m.privacyPages;
  const roles = p.roles as Record<string, string>;
  const roleText = e.roles
    .filter((r) => r !== 'parent' && r !== 'anonymous')
    .map((r) => (Object.hasOwn(roles, r) ? roles[r]! : r))
    .join(', ');
  switch (e.accessor) {
    case 'you':
      return p.you;
    case 'system':
      return roleText ? `${p.system} — ${roleText}` : p.system;
    case 'staff':
      return `${e.facilities.join(', ') || p.unknownOrg} — ${roleText}`;
    case 'programme':
      return `${p.programme(env.tenantName)} — ${roleText}`;
    default:
      return roleText ? `${p.unknownOrg} — ${roleText}` : p.unknownOrg;
  }
}

function whatOf(env: PageEnv, e: AccessEntry): string {
  const p = env.m.privacyPages;
  const purposes = p.purposes as Record<string, string>;
  const why = e.purpose && Object.hasOwn(purposes, e.purpose) ? purposes[e.purpose]! : (e.purpose ?? e.action);
  return `${p.actions[e.kind]} — ${why}${e.outcome === 'failure' ? ` (${p.failed})` : ''}`;
}

export function privacyRoutes(app: FastifyInstance, deps: Deps) {
  app.get('/account/privacy', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    const pending = await pendingPurges(deps, req.ctx);
    const env = pageEnv(req, reply);
    const p = env.m.privacyPages;
    return sendPage(
      reply,
      <Page env={env} title={p.hubTitle}>
        <h1>{p.hubTitle}</h1>
        <p class="lead">{p.hubLead}</p>
        <h2>{p.accessTitle}</h2>
        <p>
          <a href="/account/privacy/access">{p.accessLink}</a>
        </p>
        <h2>{p.exportTitle}</h2>
        <p>{p.exportLead}</p>
        <p class="hint">{p.exportHint}</p>
        <p>
          <a class="button" href="/account/privacy/export" download>
            {p.exportButton}
          </a>
        </p>
        <h2>{env.m.deletion.title}</h2>
        <p>{env.m.deletion.lead}</p>
        <p>
          <a class="button button--warning" href="/account/privacy/delete">
            {env.m.deletion.link}
          </a>
        </p>
        {pending.length > 0 && (
          <>
            <h2>{env.m.deletion.pendingTitle}</h2>
            <PurgeTable env={env} rows={pending} />
          </>
        )}
      </Page>,
    );
  });

  app.get('/account/privacy/delete', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    // As for one file: who deletes every file of the family has proved who they are within five minutes.
    requireRecentAuth(req.ctx, undefined, { returnTo: '/account/privacy/delete' });
    const env = pageEnv(req, reply);
    const d = env.m.deletion;
    const live = (await inTenant(deps.db.db, req.ctx.tenant.id, (trx) => accountChildFiles(trx, req.ctx.actor!.accountId))).filter((c) => !c.deleted_at).length;
    return sendPage(
      reply,
      <Page env={env} title={d.title}>
        <p>
          <a href="/account/privacy" class="back-link">
            {d.cancel}
          </a>
        </p>
        <h1>{d.title}</h1>
        <p class="lead">{d.lead}</p>
        <p>{d.files(live)}</p>
        <ul>
          {d.consequences(req.ctx.tenant.rules.deletedFileRetentionDays).map((c) => (
            <li>{c}</li>
          ))}
          <li>{d.accountClose(req.ctx.tenant.rules.retention.accountWithoutChildMonths)}</li>
        </ul>
        <form method="post" action="/account/privacy/delete">
          <Csrf env={env} />
          <p class="actions">
            <button type="submit" class="button button--warning">
              {d.confirm}
            </button>
            <a href="/account/privacy">{d.cancel}</a>
          </p>
        </form>
      </Page>,
    );
  });

  app.post('/account/privacy/delete', async (req, reply) => {
    const pending = await requestFamilyDeletion(deps, req.ctx);
    const env = pageEnv(req, reply);
    const d = env.m.deletion;
    return sendPage(
      reply,
      <Page env={env} title={d.doneTitle}>
        <h1>{d.doneTitle}</h1>
        <p class="lead">{d.lead}</p>
        {pending.length > 0 && (
          <>
            <h2>{d.pendingTitle}</h2>
            <PurgeTable env={env} rows={pending} />
          </>
        )}
        <p>{d.accountClose(req.ctx.tenant.rules.retention.accountWithoutChildMonths)}</p>
        <p>
          <a href="/account">{env.m.layout.myFile}</a>
        </p>
      </Page>,
    );
  });

  app.get('/retention', async (req, reply) => {
    const p = await retentionPreview(deps, req.ctx);
    const env = pageEnv(req, reply);
    const r = env.m.retention;
    const rules = req.ctx.tenant.rules;
    // A programme where the job has not run for a while can have tens of thousands of files due: the page gives
    // their number and the soonest, not a table of megabytes.
    const shownOf = (total: number) => (total > RETENTION_ROWS_SHOWN ? <p>{r.shown(RETENTION_ROWS_SHOWN, total)}</p> : null);
    return sendPage(
      reply,
      <Page env={env} title={r.title}>
        <h1>{r.title}</h1>
        <p class="lead">{r.lead}</p>
        <h2>{r.rulesTitle}</h2>
        <ul>
          {r.rules(rules.retention.schoolAgeYears, rules.retention.afterSchoolAgeMonths, rules.retention.inactiveFileMonths, rules.deletedFileRetentionDays).map((x) => (
            <li>{x}</li>
          ))}
        </ul>
        <p>{p.lastRun ? r.lastRun(formatDateTime(env.locale, p.lastRun.at)) : r.never}</p>
        <h2>{r.dueTitle}</h2>
        {shownOf(p.dueNow.count)}
        <ScheduleTable env={env} rows={p.dueNow.first} caption={r.dueTitle} />
        <h2>{r.upcomingTitle(p.horizonDays)}</h2>
        {shownOf(p.upcoming.count)}
        <ScheduleTable env={env} rows={p.upcoming.first} caption={r.upcomingTitle(p.horizonDays)} />
        <h2>{r.purgeTitle}</h2>
        {shownOf(p.awaitingPurge.length)}
        {p.awaitingPurge.length ? <PurgeTable env={env} rows={p.awaitingPurge.slice(0, RETENTION_ROWS_SHOWN)} /> : <p>{r.none}</p>}
        <h2>{r.accountsTitle}</h2>
        <p>{r.accounts(p.accounts.dueNow, p.accounts.upcoming.length, p.horizonDays)}</p>
      </Page>,
    );
  });

  app.get<{ Querystring: { page?: string; own?: string } }>('/account/privacy/access', async (req, reply) => {
    const own = req.query.own === '1';
    const log = await readAccessLog(deps, req.ctx, { page: Number(req.query.page ?? 1), own });
    const env = pageEnv(req, reply);
    const p = env.m.privacyPages;
    const href = (page: number, withOwn = own) => `/account/privacy/access?${withOwn ? 'own=1&' : ''}page=${page}`;
    return sendPage(
      reply,
      <Page env={env} title={p.accessTitle}>
        <p>
          <a href="/account/privacy" class="back-link">
            {p.hubTitle}
          </a>
        </p>
        <h1>{p.accessTitle}</h1>
        <p class="lead">{p.accessLead}</p>
        <p>
          <a href={href(1, !own)}>{own ? p.hideOwn : p.showOwn}</a>
        </p>
        {log.entries.length === 0 ? (
          <p>{own ? p.noneAtAll : p.none}</p>
        ) : (
          <>
            <p>{p.count(log.total)}</p>
            <div class="table-wrap">
              <table>
                <caption class="visually-hidden">{p.accessTitle}</caption>
                <thead>
                  <tr>
                    <th scope="col">{p.colWhen}</th>
                    <th scope="col">{p.colWho}</th>
                    <th scope="col">{p.colWhat}</th>
                    <th scope="col">{p.colFiles}</th>
                    <th scope="col">{p.colFields}</th>
                    <th scope="col">{p.colBehalf}</th>
                  </tr>
                </thead>
                <tbody>
                  {log.entries.map((e) => (
                    <tr>
                      <td>{formatDateTime(env.locale, e.at)}</td>
                      <td>{whoOf(env, e)}</td>
                      <td>{whatOf(env, e)}</td>
                      <td>{e.files.join(', ')}</td>
                      <td>{e.fields.map((f) => fieldLabel(env.locale, f)).join(', ')}</td>
                      <td>{e.accessor === 'you' ? '' : e.onBehalf ? (e.agentEmail ? env.m.assisted.behalfBy(e.agentEmail, e.accessor === 'staff' ? e.facilities.join(', ') || p.unknownOrg : p.programme(env.tenantName)) : p.behalfYes) : p.behalfNo}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
            <Pagination env={env} page={log.page} pages={log.pages} href={(n) => href(n)} />
          </>
        )}
      </Page>,
    );
  });

  app.get('/account/privacy/export', async (req, reply) => {
    const out = await buildFamilyExport(deps, req.ctx);
    return reply
      .header('cache-control', 'no-store')
      .header('content-disposition', `attachment; filename="${out.filename}"`)
      .type('application/zip')
      .send(out.zip);
  });
}
