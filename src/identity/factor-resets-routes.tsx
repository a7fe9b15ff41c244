import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Deps } from '../context.ts';
import { AppError, ValidationError } from '../errors.ts';
import { Csrf, ErrorSummary, Notice, Page, SummaryList, Tag, TextField, type FieldErrors, type PageEnv } from '../web/components.tsx';
import { emailField, parseBody, text } from '../web/forms.ts';
import { formatDateTime } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';
import { decideFactorReset, getFactorReset, listFactorResets, requestFactorReset, type FactorResetView } from './factor-resets.ts';

const requestSchema = z.object({
  email: emailField,
  reason: text('factorResetReasonRequired', 500, 'factorResetReasonRequired'),
});

function statusTag(env: PageEnv, s: FactorResetView['status']) {
  return <Tag tone={s === 'pending' ? 'orange' : s === 'approved' ? 'green' : 'grey'}>{env.m.factorResets.status[s]}</Tag>;
}

/** Pages for resetting the second factors of someone who lost them all: request, list, review, decision. */
export function factorResetRoutes(app: FastifyInstance, deps: Deps) {
  const newPage = (req: FastifyRequest, reply: FastifyReply, values: Record<string, string | undefined>, errors?: FieldErrors) => {
    const env = pageEnv(req, reply);
    const f = env.m.factorResets;
    return sendPage(
      reply,
      <Page env={env} title={f.newTitle} hasErrors={!!errors}>
        <ErrorSummary env={env} errors={errors} />
        <p>
          <a href="/admin/factor-resets" class="back-link">
            {f.title}
          </a>
        </p>
        <h1>{f.newTitle}</h1>
        <p class="lead">{f.lead}</p>
        <form method="post" action="/admin/factor-resets/new" novalidate>
          <Csrf env={env} />
          <TextField env={env} name="email" type="email" label={f.email} value={values.email} errors={errors} autocomplete="off" spellcheck={false} />
          <TextField env={env} name="reason" label={f.reason} hint={f.reasonHint} value={values.reason} errors={errors} />
          <button type="submit" class="button">
            {f.submit}
          </button>
        </form>
      </Page>,
      errors ? 400 : 200,
    );
  };

  app.get('/admin/factor-resets/new', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    // The list checks the role: a page of its own would show a form to anyone signed in.
    await listFactorResets(deps, req.ctx);
    return newPage(req, reply, {});
  });

  app.post('/admin/factor-resets/new', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    const body = (req.body ?? {}) as Record<string, unknown>;
    const values = Object.fromEntries(['email', 'reason'].map((k) => [k, typeof body[k] === 'string' ? (body[k] as string).slice(0, 500) : undefined]));
    try {
      const input = parseBody(requestSchema, body);
      await requestFactorReset(deps, req.ctx, input);
    } catch (err) {
      if (err instanceof ValidationError) return newPage(req, reply, values, err.fields);
      throw err;
    }
    return reply.redirect('/admin/factor-resets?requested=1', 303);
  });

  app.get<{ Querystring: Record<string, string> }>('/admin/factor-resets', async (req, reply) => {
    const rows = await listFactorResets(deps, req.ctx);
    const env = pageEnv(req, reply);
    const f = env.m.factorResets;
    const q = req.query ?? {};
    const table = (list: FactorResetView[], caption: string) => (
      <div class="table-wrap">
        <table>
          <caption class="visually-hidden">{caption}</caption>
          <thead>
            <tr>
              <th scope="col">{f.colWho}</th>
              <th scope="col">{f.colRequestedBy}</th>
              <th scope="col">{f.colWhen}</th>
              <th scope="col">{f.colStatus}</th>
              <th scope="col">{f.colDecidedBy}</th>
            </tr>
          </thead>
          <tbody>
            {list.map((r) => (
              <tr>
                <td>
                  <a href={`/admin/factor-resets/${r.id}`} aria-label={f.openLabel(r.email)}>
                    {r.email}
                  </a>
                </td>
                <td>{r.requestedBy}</td>
                <td>{formatDateTime(env.locale, r.requestedAt)}</td>
                <td>{statusTag(env, r.status)}</td>
                <td>{r.decidedBy ?? '—'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    );
    const pending = rows.filter((r) => r.status === 'pending');
    const decided = rows.filter((r) => r.status !== 'pending');
    return sendPage(
      reply,
      <Page env={env} title={f.title}>
        {q.requested && <Notice>{f.requested}</Notice>}
        {q.approved && <Notice>{f.approved}</Notice>}
        {q.refused && <Notice>{f.refusedDone}</Notice>}
        <h1>{f.title}</h1>
        <p class="lead">{f.lead}</p>
        <p>
          <a class="button button--secondary" href="/admin/factor-resets/new">
            {f.newLink}
          </a>
        </p>
        <h2>{f.pending}</h2>
        {pending.length ? table(pending, f.pending) : <p>{f.none}</p>}
        <h2>{f.history}</h2>
        {decided.length ? table(decided, f.history) : <p>{f.none}</p>}
      </Page>,
    );
  });

  app.get<{ Params: { id: string } }>('/admin/factor-resets/:id', async (req, reply) => {
    const r = await getFactorReset(deps, req.ctx, req.params.id);
    const env = pageEnv(req, reply);
    const f = env.m.factorResets;
    const own = r.requestedById === env.actor?.accountId || r.accountId === env.actor?.accountId;
    const open = r.status === 'pending';
    return sendPage(
      reply,
      <Page env={env} title={f.reviewTitle}>
        <p>
          <a href="/admin/factor-resets" class="back-link">
            {f.title}
          </a>
        </p>
        <h1>{f.reviewTitle}</h1>
        <SummaryList
          rows={[
            [f.colWho, r.email],
            [f.reason, r.reason],
            [f.colRequestedBy, r.requestedBy],
            [f.colWhen, formatDateTime(env.locale, r.requestedAt)],
            [f.colStatus, statusTag(env, r.status)],
            ...(r.decidedBy ? ([[f.colDecidedBy, r.decidedBy]] as [string, string][]) : []),
          ]}
        />
        {open && own && <Notice>{f.ownRequest}</Notice>}
        {open && !own && (
          <>
            <p>
              <strong>{f.consequence(r.email)}</strong>
            </p>
            <div class="actions">
              <form method="post" action={`/admin/factor-resets/${r.id}/approve`} class="inline-form">
                <Csrf env={env} />
                <button type="submit" class="button">
                  {f.approve}
                </button>
              </form>
              <form method="post" action={`/admin/factor-resets/${r.id}/refuse`} class="inline-form">
                <Csrf env={env} />
                <button type="submit" class="button button--secondary">
                  {f.refuse}
                </button>
              </form>
            </div>
          </>
        )}
      </Page>,
    );
  });

  for (const decision of ['approve', 'refuse'] as const) {
    app.post<{ Params: { id: string } }>(`/admin/factor-resets/:id/${decision}`, async (req, reply) => {
      await decideFactorReset(deps, req.ctx, req.params.id, decision);
      return reply.redirect(`/admin/factor-resets?${decision === 'approve' ? 'approved' : 'refused'}=1`, 303);
    });
  }
}
