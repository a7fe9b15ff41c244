import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Deps } from '../context.ts';
import { AppError, ValidationError } from '../errors.ts';
import { readAllocationSettings, setCoordinatedAllocation } from '../records/allocation.ts';
import { Csrf, ErrorSummary, fieldId, Fieldset, Notice, Page, Tag, type FieldErrors } from '../web/components.tsx';
import { parseBody } from '../web/forms.ts';
import { formatDateTime } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';

/**
 * The programme's coordinated allocation (/operator/allocation): whether the
 * rounds run (`guichet allocate` refuses while they do not), and the last
 * rounds with their counts. Operators read it; an administrator turns it on
 * or off (decide(), audited, src/records/allocation.ts).
 */

const settingsSchema = z.object({ enabled: z.enum(['on', 'off'], { error: 'allocationChoiceRequired' }) }).loose();

export function allocationAdminRoutes(app: FastifyInstance, deps: Deps) {
  const page = async (req: FastifyRequest, reply: FastifyReply, opts: { errors?: FieldErrors; saved?: boolean } = {}) => {
    const ctx = req.ctx;
    if (!ctx.actor) throw new AppError('signInRequired');
    const s = await readAllocationSettings(deps, ctx);
    const env = pageEnv(req, reply);
    const a = env.m.allocationAdmin;
    const mayChange = ctx.actor.memberships.some((m) => m.role === 'tenant_admin');
    return sendPage(
      reply,
      <Page env={env} title={a.title} hasErrors={!!opts.errors}>
        <ErrorSummary env={env} errors={opts.errors} />
        {opts.saved && <Notice>{a.saved}</Notice>}
        <h1>{a.title}</h1>
        <p class="lead">{a.lead}</p>
        <p>
          {a.state} <Tag tone={s.enabled ? 'green' : 'grey'}>{s.enabled ? a.on : a.off}</Tag>
        </p>
        {mayChange ? (
          <form method="post" action="/operator/allocation" novalidate>
            <Csrf env={env} />
            <Fieldset legend={a.legend} hint={a.hint} name="enabled" env={env} errors={opts.errors}>
              {(['on', 'off'] as const).map((v) => (
                <div class="radio">
                  <input type="radio" id={fieldId(`enabled-${v}`)} name="enabled" value={v} checked={(v === 'on') === s.enabled} />
                  <label for={fieldId(`enabled-${v}`)}>{v === 'on' ? a.choiceOn : a.choiceOff}</label>
                </div>
              ))}
            </Fieldset>
            <p class="actions">
              <button type="submit" class="button">
                {a.save}
              </button>
            </p>
          </form>
        ) : (
          <p>{a.adminOnly}</p>
        )}
        <h2>{a.runsTitle}</h2>
        {s.runs.length === 0 ? (
          <p>{a.noRuns}</p>
        ) : (
          <div class="table-wrap">
            <table>
              <caption class="visually-hidden">{a.runsTitle}</caption>
              <thead>
                <tr>
                  <th scope="col">{a.colStarted}</th>
                  <th scope="col">{a.colRun}</th>
                  <th scope="col">{a.colOrder}</th>
                  <th scope="col">{a.colChildren}</th>
                  <th scope="col">{a.colApplications}</th>
                  <th scope="col">{a.colPlaced}</th>
                </tr>
              </thead>
              <tbody>
                {s.runs.map((r) => (
                  <tr>
                    <td>{formatDateTime(env.locale, r.startedAt)}</td>
                    <td>
                      <code>{r.id}</code>
                    </td>
                    <td>{a.orders[r.order as keyof typeof a.orders] ?? r.order}</td>
                    <td>{r.children.toLocaleString(env.locale === 'fr' ? 'fr-CA' : 'en-CA')}</td>
                    <td>{r.applications.toLocaleString(env.locale === 'fr' ? 'fr-CA' : 'en-CA')}</td>
                    <td>{r.placed.toLocaleString(env.locale === 'fr' ? 'fr-CA' : 'en-CA')}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        <p>{a.replayHint}</p>
      </Page>,
      opts.errors ? 400 : 200,
    );
  };

  app.get<{ Querystring: { saved?: string } }>('/operator/allocation', async (req, reply) => page(req, reply, { saved: req.query.saved === '1' }));

  app.post('/operator/allocation', async (req, reply) => {
    const ctx = req.ctx;
    if (!ctx.actor) throw new AppError('signInRequired');
    try {
      const { enabled } = parseBody(settingsSchema, req.body);
      await setCoordinatedAllocation(deps, ctx, enabled === 'on');
      return reply.redirect('/operator/allocation?saved=1', 303);
    } catch (err) {
      if (err instanceof ValidationError) return page(req, reply, { errors: err.fields });
      throw err;
    }
  });
}
