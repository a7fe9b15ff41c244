import type { FastifyInstance } from 'fastify';
import type { Deps } from '../context.ts';
import { AppError } from '../errors.ts';
import { Page, Pagination, type PageEnv } from '../web/components.tsx';
import { formatDateTime } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';
import { readAccessLog, type AccessEntry } from './access-log.ts';
import { fieldLabel } from './breach.ts';
import { buildFamilyExport } from './export.ts';

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
                      <td>{e.accessor === 'you' ? '' : e.onBehalf ? p.behalfYes : p.behalfNo}</td>
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
