import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { Deps } from '../context.ts';
import { AppError, ValidationError } from '../errors.ts';
import { Csrf, ErrorSummary, Fieldset, Notice, Page, TextField, fieldId, type FieldErrors, type PageEnv } from '../web/components.tsx';
import { emailField, parseBody } from '../web/forms.ts';
import { formatDateTime } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';
import { endAssisted, pendingConsent, requestCode, verifyCode, type PendingConsent } from './service.ts';

const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

const requestSchema = z.object({
  email: emailField,
  channel: z.enum(['phone', 'in_person'], { error: 'assistChannelRequired' }),
  note: z
    .string({ error: 'invalidValue' })
    .optional()
    .transform((s) => (s ?? '').normalize('NFC').trim())
    .pipe(z.string().max(500, { error: 'assistNoteTooLong' }).refine((s) => !CONTROL.test(s), { error: 'invalidValue' })),
});

const codeSchema = z.object({
  code: z
    .string({ error: 'assistCodeRequired' })
    .transform((s) => s.replace(/[\s-]/g, ''))
    .pipe(z.string().min(1, { error: 'assistCodeRequired' }).regex(/^\d{6}$/, { error: 'assistCodeWrong' })),
});

function values(body: unknown, keys: string[]): Record<string, string | undefined> {
  const b = (body ?? {}) as Record<string, unknown>;
  const out: Record<string, string | undefined> = {};
  for (const k of keys) if (typeof b[k] === 'string') out[k] = (b[k] as string).slice(0, 500);
  return out;
}

function StartPage(props: { env: PageEnv; values: Record<string, string | undefined>; errors?: FieldErrors; ended?: boolean }) {
  const { env, errors } = props;
  const a = env.m.assisted;
  const actor = env.actor;
  return (
    <Page env={env} title={a.title} hasErrors={!!errors}>
      <h1>{a.title}</h1>
      <ErrorSummary env={env} errors={errors} />
      {props.ended && <Notice>{a.ended}</Notice>}
      {actor?.assisting && (
        <Notice>
          {a.active(actor.assisting.email, formatDateTime(env.locale, actor.assisting.until))} <a href="/account">{a.goToFile}</a>
        </Notice>
      )}
      <p class="lead">{a.lead}</p>
      <p>{a.how}</p>
      <form method="post" action="/assist" novalidate>
        <Csrf env={env} />
        <TextField env={env} name="email" type="email" label={a.email} value={props.values.email} errors={errors} autocomplete="off" spellcheck={false} />
        <Fieldset legend={a.channelLegend} name="channel" env={env} errors={errors}>
          {(['phone', 'in_person'] as const).map((c) => (
            <div class="radio">
              <input type="radio" id={fieldId(`channel-${c}`)} name="channel" value={c} checked={props.values.channel === c} />
              <label for={fieldId(`channel-${c}`)}>{a.channel[c]}</label>
            </div>
          ))}
        </Fieldset>
        <div class={`field${errors?.note ? ' field--error' : ''}`}>
          <label for={fieldId('note')}>{a.note}</label>
          <p class="hint" id={`${fieldId('note')}-hint`}>
            {a.noteHint}
          </p>
          {errors?.note && (
            <p class="field-error" id={`${fieldId('note')}-error`}>
              {env.m.errors.field[errors.note]}
            </p>
          )}
          <textarea id={fieldId('note')} name="note" rows={3} class="input input--long" aria-describedby={`${fieldId('note')}-hint${errors?.note ? ` ${fieldId('note')}-error` : ''}`}>
            {props.values.note ?? ''}
          </textarea>
        </div>
        <p class="actions">
          <button type="submit" class="button">
            {a.send}
          </button>
        </p>
      </form>
    </Page>
  );
}

function CodePage(props: { env: PageEnv; consent: PendingConsent; errors?: FieldErrors }) {
  const { env, consent, errors } = props;
  const a = env.m.assisted;
  return (
    <Page env={env} title={a.codeTitle} hasErrors={!!errors}>
      <h1>{a.codeTitle}</h1>
      <ErrorSummary env={env} errors={errors} />
      <p class="lead">{a.codeLead(consent.parentEmail, formatDateTime(env.locale, consent.codeExpiresAt))}</p>
      <form method="post" action={`/assist/${consent.id}`} novalidate>
        <Csrf env={env} />
        <TextField env={env} name="code" label={a.code} errors={errors} autocomplete="one-time-code" width="short" spellcheck={false} />
        <p class="actions">
          <button type="submit" class="button">
            {a.verify}
          </button>
          <a href="/assist">{a.again}</a>
        </p>
      </form>
    </Page>
  );
}

export function assistedRoutes(app: FastifyInstance, deps: Deps) {
  app.get<{ Querystring: { ended?: string } }>('/assist', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    if (!req.ctx.actor.memberships.some((m) => m.role === 'facility_staff' || m.role === 'facility_director' || m.role === 'program_operator')) throw new AppError('forbidden');
    return sendPage(reply, <StartPage env={pageEnv(req, reply)} values={{}} ended={req.query.ended === '1'} />);
  });

  app.post('/assist', async (req, reply) => {
    const ctx = req.ctx;
    if (!ctx.actor) throw new AppError('signInRequired');
    try {
      const input = parseBody(requestSchema, req.body);
      const { id } = await requestCode(deps, ctx, input);
      return reply.redirect(`/assist/${id}`, 303);
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      return sendPage(reply, <StartPage env={pageEnv(req, reply)} values={values(req.body, ['email', 'channel', 'note'])} errors={err.fields} />, 400);
    }
  });

  app.post('/assist/end', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    if (!(await endAssisted(deps, req.ctx))) throw new AppError('notFound');
    return reply.redirect('/assist?ended=1', 303);
  });

  app.get<{ Params: { id: string } }>('/assist/:id', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    const consent = await pendingConsent(deps, req.ctx, req.params.id);
    return sendPage(reply, <CodePage env={pageEnv(req, reply)} consent={consent} />);
  });

  app.post<{ Params: { id: string } }>('/assist/:id', async (req, reply) => {
    const ctx = req.ctx;
    if (!ctx.actor) throw new AppError('signInRequired');
    try {
      // The consent must be this session's before anything else is said about it.
      const consent = await pendingConsent(deps, ctx, req.params.id);
      try {
        const { code } = parseBody(codeSchema, req.body);
        await verifyCode(deps, ctx, consent.id, code);
      } catch (err) {
        if (!(err instanceof ValidationError)) throw err;
        return sendPage(reply, <CodePage env={pageEnv(req, reply)} consent={consent} errors={err.fields} />, 400);
      }
      return reply.redirect('/account?status=assisted', 303);
    } catch (err) {
      // A consent that can no longer be used (code failed too often): the start page says why.
      if (err instanceof ValidationError) return sendPage(reply, <StartPage env={pageEnv(req, reply)} values={{}} errors={err.fields} />, 400);
      throw err;
    }
  });
}
