import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Deps } from '../context.ts';
import { getFacility } from '../directory/service.ts';
import { AppError, ValidationError } from '../errors.ts';
import { StepUpRequired } from '../identity/stepup.ts';
import * as offers from '../records/offers.ts';
import { Csrf, ErrorSummary, Notice, Page, Tag, TextField, type FieldErrors } from '../web/components.tsx';
import { parseBody, text } from '../web/forms.ts';
import { formatDateTime, messages } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';
import { actorForApiKey, createApiKey, listApiKeys, mayCreateApiKeys, revokeApiKey } from './keys.ts';
import { OPENAPI } from './openapi.ts';

/**
 * The facility API (JSON, /api/v1) and the director's page for its keys.
 * The API reads no cookie: a request is the key it carries, or nobody, so
 * no CSRF token is needed; each call goes through the same records
 * functions, actions and audit as the pages.
 */

const vacanciesBody = z
  .object({
    infant: z.number({ error: 'vacanciesInvalid' }).int({ error: 'vacanciesInvalid' }).min(0, { error: 'vacanciesInvalid' }).max(1000, { error: 'vacanciesAbovePlaces' }).optional(),
    toddler: z.number({ error: 'vacanciesInvalid' }).int({ error: 'vacanciesInvalid' }).min(0, { error: 'vacanciesInvalid' }).max(1000, { error: 'vacanciesAbovePlaces' }).optional(),
  })
  .strict()
  .refine((b) => b.infant !== undefined || b.toddler !== undefined, { error: 'ageGroupInvalid', path: ['ageGroup'] });

function placesJson(rows: offers.PlacesView[]) {
  return rows.map((r) => ({ ageGroup: r.ageGroup, places: r.places, vacancies: r.vacancies, pending: r.pending, updatedAt: r.updatedAt.toISOString() }));
}

function facilityApi(deps: Deps) {
  return async (api: FastifyInstance) => {
    api.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: 16 * 1024 }, (_req, body, done) => {
      try {
        done(null, body === '' ? {} : JSON.parse(body as string));
      } catch {
        done(Object.assign(new Error('malformed JSON'), { statusCode: 400 }), undefined);
      }
    });
    // A request is its key: the session cookie, if a browser sent one, is not used.
    api.addHook('onRequest', async (req) => {
      if (!req.ctx) return;
      req.ctx.actor = null;
      req.ctx.actor = await actorForApiKey(deps, req.ctx.tenant, req.headers.authorization, req.ctx);
    });
    const requireKey = (req: FastifyRequest) => {
      if (!req.ctx.actor) throw new AppError('signInRequired');
    };
    api.setErrorHandler(async (err, req, reply) => {
      const e = err as Error & { code?: string; statusCode?: number };
      const m = messages(req.ctx?.locale ?? 'fr');
      let status = 500;
      let code = 'server';
      let fields: Record<string, string> | undefined;
      if (err instanceof StepUpRequired) {
        status = 403;
        code = 'forbidden';
      } else if (err instanceof AppError) {
        status = err.status;
        code = err instanceof ValidationError ? 'badRequest' : err.kind === 'signInRequired' ? 'unauthorized' : err.kind;
        if (err instanceof ValidationError) fields = Object.fromEntries(Object.entries(err.fields).map(([k, v]) => [k, m.errors.field[v]]));
      } else if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
        status = 413;
        code = 'tooLarge';
      } else if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
        status = 415;
        code = 'unsupportedType';
      } else if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) {
        status = e.statusCode;
        code = 'badRequest';
      } else {
        req.log.error({ err }, 'api request failed');
      }
      const words: Record<string, string> = {
        badRequest: m.errors.badRequest,
        unauthorized: m.errors.signInRequired,
        notFound: m.errors.notFound,
        forbidden: m.errors.forbidden,
        closed: m.errors.closed,
        readOnly: m.errors.readOnly,
        tooLarge: m.errors.tooLarge,
        unsupportedType: m.errors.unsupportedType,
      };
      if (status === 401) reply.header('www-authenticate', 'Bearer realm="guichet"');
      return reply.code(status).header('cache-control', 'no-store').send({ error: code, message: words[code] ?? m.errors.server, ...(fields ? { fields } : {}) });
    });
    api.setNotFoundHandler(async (req, reply) => reply.code(404).send({ error: 'notFound', message: messages(req.ctx?.locale ?? 'fr').errors.notFound }));

    api.get('/openapi.json', async (_req, reply) => reply.header('cache-control', 'public, max-age=300').send(OPENAPI));

    api.get<{ Params: { id: string } }>('/facilities/:id/places', async (req, reply) => {
      requireKey(req);
      const rows = await offers.readPlaces(deps, req.ctx, req.params.id);
      return reply.header('cache-control', 'no-store').send({ places: placesJson(rows) });
    });

    api.post<{ Params: { id: string } }>('/facilities/:id/vacancies', { config: { csrf: false } }, async (req, reply) => {
      requireKey(req);
      const input = parseBody(vacanciesBody, req.body);
      const r = await offers.declareVacancies(deps, req.ctx, req.params.id, input);
      const rows = await offers.readPlaces(deps, req.ctx, req.params.id);
      return reply.header('cache-control', 'no-store').send({ offered: r.offered, open: r.open, places: placesJson(rows) });
    });

    api.get<{ Params: { id: string } }>('/facilities/:id/referrals', async (req, reply) => {
      requireKey(req);
      const rows = await offers.listReferrals(deps, req.ctx, req.params.id);
      return reply.header('cache-control', 'no-store').send({
        referrals: rows.map(referralJson),
      });
    });

    // A protected file's identity, for one accepted offer: with a reason, kept and alerted as any opening of such a file.
    api.post<{ Params: { id: string; offerId: string } }>('/facilities/:id/referrals/:offerId/identity', { config: { csrf: false } }, async (req, reply) => {
      requireKey(req);
      const { reason } = parseBody(z.object({ reason: z.string({ error: 'reasonRequired' }).trim().min(1, { error: 'reasonRequired' }).max(500, { error: 'reasonRequired' }) }), req.body);
      const rows = await offers.listReferrals(deps, req.ctx, req.params.id, { offerId: req.params.offerId, reason });
      const r = rows.find((x) => x.id === req.params.offerId)!;
      return reply.header('cache-control', 'no-store').send({ referral: referralJson(r) });
    });
  };
}

function referralJson(r: offers.ReferralView) {
  return { ...r, offeredAt: r.offeredAt.toISOString(), deadline: r.deadline.toISOString(), answeredAt: r.answeredAt?.toISOString() ?? null };
}

// A %-escape left in a name is a form sent with a broken encoding (the parser keeps what it cannot decode).
const keyName = z.object({ name: text('apiKeyNameInvalid', 100, 'apiKeyNameInvalid').refine((s) => !/%[0-9A-Fa-f]{2}/.test(s), { error: 'apiKeyNameInvalid' }) });

export function facilityApiRoutes(app: FastifyInstance, deps: Deps) {
  /* ------------------------------------------ the director's page for keys */
  const keysPage = async (req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply, opts: { errors?: FieldErrors; name?: string; created?: { token: string; name: string }; notice?: string } = {}) => {
    const keys = await listApiKeys(deps, req.ctx, req.params.id);
    const facility = await getFacility(deps, req.ctx, req.params.id);
    if (!facility) throw new AppError('notFound');
    const env = pageEnv(req, reply);
    const k = env.m.apiKeys;
    const title = k.title(facility.name);
    return sendPage(
      reply,
      <Page env={env} title={title} hasErrors={!!opts.errors}>
        <ErrorSummary env={env} errors={opts.errors} />
        <p>
          <a href="/staff" class="back-link">
            {env.m.staff.back}
          </a>
        </p>
        {opts.notice && <Notice>{opts.notice}</Notice>}
        <h1>{title}</h1>
        <p class="lead">{k.lead}</p>
        <p>
          <a href="/api/v1/openapi.json">{k.docs}</a>
        </p>
        {opts.created && (
          <div class="notice" role="status">
            <p>
              <strong>{k.createdOnce(opts.created.name)}</strong>
            </p>
            <p>
              <code>{opts.created.token}</code>
            </p>
          </div>
        )}
        <h2>{k.listTitle}</h2>
        {keys.length === 0 ? (
          <p>{k.none}</p>
        ) : (
          <div class="table-wrap">
            <table>
              <caption class="visually-hidden">{k.listTitle}</caption>
              <thead>
                <tr>
                  <th scope="col">{k.colName}</th>
                  <th scope="col">{k.colCreated}</th>
                  <th scope="col">{k.colLastUsed}</th>
                  <th scope="col">{k.colStatus}</th>
                  <th scope="col">{env.m.child.colAction}</th>
                </tr>
              </thead>
              <tbody>
                {keys.map((x) => (
                  <tr>
                    <td>{x.name}</td>
                    <td>
                      {formatDateTime(env.locale, x.createdAt)} — {x.createdBy}
                    </td>
                    <td>{x.lastUsedAt ? formatDateTime(env.locale, x.lastUsedAt) : '—'}</td>
                    <td>{x.revokedAt ? <Tag tone="grey">{k.revoked}</Tag> : <Tag tone="green">{k.active}</Tag>}</td>
                    <td>
                      {!x.revokedAt && (
                        <form method="post" action={`/staff/facilities/${facility.id}/api-keys/${x.id}/revoke`} class="inline-form">
                          <Csrf env={env} />
                          <button type="submit" class="link-button" aria-label={k.revokeLabel(x.name)}>
                            {k.revoke}
                          </button>
                        </form>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        {mayCreateApiKeys(req.ctx, facility.id) && (
          <>
            <h2>{k.createTitle}</h2>
            <form method="post" action={`/staff/facilities/${facility.id}/api-keys`} novalidate>
              <Csrf env={env} />
              <TextField env={env} name="name" label={k.name} hint={k.nameHint} value={opts.name} errors={opts.errors} autocomplete="off" width="medium" />
              <button type="submit" class="button">
                {k.create}
              </button>
            </form>
          </>
        )}
      </Page>,
      opts.errors ? 400 : 200,
    );
  };

  app.get<{ Params: { id: string }; Querystring: { done?: string } }>('/staff/facilities/:id/api-keys', async (req, reply) => {
    const revoked = req.query.done === 'revoked';
    return keysPage(req, reply, revoked ? { notice: pageEnv(req, reply).m.apiKeys.revokedNotice } : {});
  });

  app.post<{ Params: { id: string } }>('/staff/facilities/:id/api-keys', async (req, reply) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    try {
      const input = parseBody(keyName, body);
      const created = await createApiKey(deps, req.ctx, req.params.id, input.name);
      // Shown once, on this answer (no redirect: the token is in no address and no later page).
      return keysPage(req, reply, { created: { token: created.token, name: input.name } });
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      return keysPage(req, reply, { errors: err.fields, name: typeof body.name === 'string' ? body.name.slice(0, 100) : undefined });
    }
  });

  app.post<{ Params: { id: string; keyId: string } }>('/staff/facilities/:id/api-keys/:keyId/revoke', async (req, reply) => {
    await revokeApiKey(deps, req.ctx, req.params.id, req.params.keyId);
    return reply.redirect(`/staff/facilities/${req.params.id}/api-keys?done=revoked`, 303);
  });

  return app.register(facilityApi(deps), { prefix: '/api/v1' });
}
