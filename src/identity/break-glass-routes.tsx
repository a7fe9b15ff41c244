import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { breakGlassActive } from '../access/decide.ts';
import type { Deps } from '../context.ts';
import { AppError, ValidationError } from '../errors.ts';
import { Csrf, ErrorSummary, Notice, Page, TextField, type FieldErrors } from '../web/components.tsx';
import { parseBody, text } from '../web/forms.ts';
import { formatDateTime } from '../web/i18n/index.ts';
import { pageEnv, safeReturnPath, sendPage } from '../web/render.tsx';
import { coolingRoles, endBreakGlass, startBreakGlass } from './break-glass.ts';

const startSchema = z.object({
  reason: text('breakGlassReasonRequired', 500, 'breakGlassReasonRequired').refine((r) => r.trim().length >= 10, { message: 'breakGlassReasonRequired' }),
  return: z.string().max(500).optional(),
});

/** The break-glass page: why the wait, what breaking it does, the reason to give; or, while it lasts, until when and how to end it. */
export function breakGlassRoutes(app: FastifyInstance, deps: Deps) {
  const page = (req: FastifyRequest, reply: FastifyReply, values: { reason?: string; return?: string }, errors?: FieldErrors, notice?: string) => {
    const env = pageEnv(req, reply);
    const b = env.m.breakGlass;
    const ctx = req.ctx;
    const active = breakGlassActive(ctx.actor, ctx.now) ? ctx.actor!.breakGlass! : null;
    const cooling = coolingRoles(ctx);
    return sendPage(
      reply,
      <Page env={env} title={active ? b.activeTitle : b.title} hasErrors={!!errors}>
        <ErrorSummary env={env} errors={errors} />
        {notice && <Notice>{notice}</Notice>}
        {active ? (
          <>
            <h1>{b.activeTitle}</h1>
            <p class="lead">{b.active(formatDateTime(env.locale, active.until))}</p>
            <form method="post" action="/break-glass/end">
              <Csrf env={env} />
              <button type="submit" class="button button--secondary">
                {b.end}
              </button>
            </form>
          </>
        ) : (
          <>
            <h1>{b.title}</h1>
            <p class="lead">{b.lead}</p>
            {cooling.length === 0 ? (
              <p>{b.nothing}</p>
            ) : (
              <>
                <ul>
                  {cooling.map((m) => (
                    <li>{b.coolingUntil(env.m.admin.roles[m.role], formatDateTime(env.locale, m.coolingUntil!))}</li>
                  ))}
                </ul>
                <p>
                  <strong>{b.consequences}</strong>
                </p>
                <form method="post" action="/break-glass" novalidate>
                  <Csrf env={env} />
                  <input type="hidden" name="return" value={safeReturnPath(values.return, '/admin')} />
                  <TextField env={env} name="reason" label={b.reason} hint={b.reasonHint} value={values.reason} errors={errors} />
                  <button type="submit" class="button button--warning">
                    {b.submit}
                  </button>
                </form>
              </>
            )}
          </>
        )}
      </Page>,
      errors ? 400 : 200,
    );
  };

  app.get<{ Querystring: { return?: string; ended?: string } }>('/break-glass', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    return page(req, reply, { return: req.query.return }, undefined, req.query.ended ? pageEnv(req, reply).m.breakGlass.ended : undefined);
  });

  app.post('/break-glass', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    const body = (req.body ?? {}) as Record<string, unknown>;
    const values = { reason: typeof body.reason === 'string' ? body.reason.slice(0, 500) : undefined, return: typeof body.return === 'string' ? body.return : undefined };
    try {
      const input = parseBody(startSchema, body);
      await startBreakGlass(deps, req.ctx, input.reason.trim(), safeReturnPath(input.return, '/admin'));
      return reply.redirect(safeReturnPath(input.return, '/admin'), 303);
    } catch (err) {
      if (err instanceof ValidationError) return page(req, reply, values, err.fields);
      throw err;
    }
  });

  app.post('/break-glass/end', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    await endBreakGlass(deps, req.ctx);
    return reply.redirect('/break-glass?ended=1', 303);
  });
}
