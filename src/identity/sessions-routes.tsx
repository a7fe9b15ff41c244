import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { Deps } from '../context.ts';
import { AppError } from '../errors.ts';
import { Csrf, Notice, Page, Tag } from '../web/components.tsx';
import { formatDateTime } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';
import { endAccountSessions, endOwnSessions, listOwnSessions } from './sessions.ts';

const STATUS = z.object({ ended: z.coerce.number().int().min(0).max(10000).optional().catch(undefined), one: z.literal('1').optional().catch(undefined) });

export function sessionRoutes(app: FastifyInstance, deps: Deps) {
  app.get<{ Querystring: Record<string, string> }>('/account/sessions', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    const sessions = await listOwnSessions(deps, req.ctx);
    const status = STATUS.parse(req.query ?? {});
    const env = pageEnv(req, reply);
    const s = env.m.security;
    return sendPage(
      reply,
      <Page env={env} title={s.sessionsTitle}>
        <p>
          <a href="/account" class="back-link">
            {env.m.child.back}
          </a>
        </p>
        {status.one && <Notice>{s.ended}</Notice>}
        {status.ended !== undefined && <Notice>{s.othersEnded(status.ended)}</Notice>}
        <h1>{s.sessionsTitle}</h1>
        <p class="lead">{s.sessionsLead}</p>
        <div class="table-wrap">
          <table>
            <caption class="visually-hidden">{s.sessionsTitle}</caption>
            <thead>
              <tr>
                <th scope="col">{s.colDevice}</th>
                <th scope="col">{s.colAddress}</th>
                <th scope="col">{s.colStarted}</th>
                <th scope="col">{s.colLastSeen}</th>
                <th scope="col">{s.colAction}</th>
              </tr>
            </thead>
            <tbody>
              {sessions.map((x) => {
                const device = x.device ?? s.unknownDevice;
                return (
                  <tr>
                    <td>
                      {device} {x.current && <Tag tone="green">{s.thisDevice}</Tag>}
                    </td>
                    <td>{x.ip ?? '—'}</td>
                    <td>{formatDateTime(env.locale, x.createdAt)}</td>
                    <td>{formatDateTime(env.locale, x.lastSeenAt)}</td>
                    <td>
                      {!x.current && (
                        <form method="post" action={`/account/sessions/${x.id}/end`} class="inline-form">
                          <Csrf env={env} />
                          <button type="submit" class="link-button" aria-label={s.endSessionLabel(device)}>
                            {s.endSession}
                          </button>
                        </form>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
        {sessions.length > 1 && (
          <form method="post" action="/account/sessions/end-others">
            <Csrf env={env} />
            <button type="submit" class="button button--secondary">
              {s.endOthers}
            </button>
          </form>
        )}
      </Page>,
    );
  });

  app.post<{ Params: { id: string } }>('/account/sessions/:id/end', async (req, reply) => {
    await endOwnSessions(deps, req.ctx, { sessionId: req.params.id });
    return reply.redirect('/account/sessions?one=1', 303);
  });

  app.post('/account/sessions/end-others', async (req, reply) => {
    const n = await endOwnSessions(deps, req.ctx, 'others');
    return reply.redirect(`/account/sessions?ended=${n}`, 303);
  });

  app.post<{ Params: { id: string } }>('/admin/accounts/:id/sessions/end', async (req, reply) => {
    const n = await endAccountSessions(deps, req.ctx, req.params.id);
    return reply.redirect(`/admin?sessionsEnded=${n}`, 303);
  });
}
