import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Deps } from '../context.ts';
import { AppError, ValidationError } from '../errors.ts';
import { Csrf, ErrorSummary, Notice, Page, Select, SummaryList, Tag, TextField, type FieldErrors } from '../web/components.tsx';
import { formatDateTime } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';
import { decideLockdownLower, lockdownState, MAX_LEVEL, raiseLockdown, requestLockdownLower, type LockdownChangeView } from './lockdown.ts';

const DONE = ['raised', 'requested', 'approved', 'refused'] as const;

const levelForm = z.object({ level: z.string().max(2).optional(), reason: z.string().max(2000).optional() });

/** The security console's pages for detection: the tenant's lockdown level. */
export function detectionRoutes(app: FastifyInstance, deps: Deps) {
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
