import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Deps } from '../context.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError, ValidationError } from '../errors.ts';
import { Csrf, ErrorSummary, Fieldset, Notice, Page, SummaryList, Tag, TextField, type FieldErrors } from '../web/components.tsx';
import { formatDate, formatDateTime } from '../web/i18n/index.ts';
import { dateField, parseBody } from '../web/forms.ts';
import { pageEnv, sendPage } from '../web/render.tsx';
import { decideClient, decideScopes, getClient, listClients, registerClient, reviewVersion, rotateClientSecret, updateClient, type ClientRow } from './clients.ts';
import { connectedServices, grantEntitlement, listEntitlements, ownEntitlements, revokeEntitlement, withdrawConsent } from './entitlements.ts';
import { OIDC_PREFIX } from './provider.ts';

type Body = Record<string, unknown>;
const str = (v: unknown, max = 2000) => (typeof v === 'string' ? v.slice(0, max) : '');
const list = (v: unknown) => str(v).split(/\s+/).filter(Boolean);

/**
 * Refuses a form before anything is written when a field is not one plain
 * string within its bound: repeated (an array), too long, holding control or
 * bidirectional-override characters, or badly encoded (U+FFFD). Multi-line
 * fields (lists of addresses) may hold line breaks and tabs.
 */
function strictFields(body: Body, bounds: Record<string, number>, multiline: readonly string[] = []): void {
  const errors: Record<string, 'invalidValue'> = {};
  for (const [name, max] of Object.entries(bounds)) {
    const v = body[name];
    if (v === undefined) continue;
    const bad = multiline.includes(name) ? /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069\ufffd]/ : /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069\ufffd]/;
    if (typeof v !== 'string' || v.length > max || bad.test(v)) errors[name] = 'invalidValue';
  }
  if (Object.keys(errors).length) throw new ValidationError(errors);
}
const TONE = { pending: 'orange', active: 'green', refused: 'grey', disabled: 'grey' } as const;
const CHOOSABLE = ['email', 'profile', 'offline_access'] as const;

/**
 * The tenant administrators' console for relying parties and access rights,
 * and the person's own view of their access rights.
 */
export function oidcAdminRoutes(app: FastifyInstance, deps: Deps) {
  /* ------------------------------------------------------------ clients */
  app.get<{ Querystring: { decided?: string } }>('/admin/oidc/clients', async (req, reply) => {
    const clients = await listClients(deps, req.ctx);
    const env = pageEnv(req, reply);
    const o = env.m.oidc;
    return sendPage(
      reply,
      <Page env={env} title={o.clientsTitle}>
        {req.query.decided && <Notice>{o.decided}</Notice>}
        <h1>{o.clientsTitle}</h1>
        <p class="lead">{o.clientsLead}</p>
        <SummaryList rows={[[o.discovery, <code>{`${req.ctx.baseUrl}${OIDC_PREFIX}/.well-known/openid-configuration`}</code>]]} />
        <p>
          <a class="button" href="/admin/oidc/clients/new">
            {o.newClient}
          </a>
        </p>
        {clients.length === 0 ? (
          <p>{o.clientsNone}</p>
        ) : (
          <div class="table-wrap">
            <table>
              <caption class="visually-hidden">{o.clientsTitle}</caption>
              <thead>
                <tr>
                  <th scope="col">{o.colName}</th>
                  <th scope="col">{o.colStatus}</th>
                  <th scope="col">{o.colScopes}</th>
                  <th scope="col">{o.colRequested}</th>
                </tr>
              </thead>
              <tbody>
                {clients.map((c) => (
                  <tr>
                    <td>
                      <a href={`/admin/oidc/clients/${c.client_id}`}>{c.name}</a>
                    </td>
                    <td>
                      <Tag tone={TONE[c.status]}>{o.status[c.status]}</Tag>
                    </td>
                    <td>{c.scopes.join(' ')}</td>
                    <td>{formatDate(env.locale, new Date(c.requested_at))}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        <p>
          <a href="/admin/oidc/entitlements">{o.entTitle}</a>
        </p>
      </Page>,
    );
  });

  const clientForm = (req: FastifyRequest, reply: FastifyReply, body: Body = {}, errors?: FieldErrors, editing?: ClientRow) => {
    const env = pageEnv(req, reply);
    const o = env.m.oidc;
    const title = editing ? o.editTitle(editing.name) : o.formTitle;
    const chosen = new Set(Array.isArray(body.scope) ? body.scope : body.scope ? [body.scope] : []);
    const label = { email: o.scopeEmail, profile: o.scopeProfile, offline_access: o.scopeOfflineAccess };
    const confidential = body.kind !== 'public';
    return sendPage(
      reply,
      <Page env={env} title={title} hasErrors={!!errors}>
        <ErrorSummary env={env} errors={errors} />
        <h1>{title}</h1>
        <p class="lead">{editing ? o.editLead : o.formLead}</p>
        <form method="post" action={editing ? `/admin/oidc/clients/${editing.client_id}/edit` : '/admin/oidc/clients'} novalidate>
          <Csrf env={env} />
          <TextField env={env} name="name" label={o.name} hint={o.nameHint} value={str(body.name, 120)} errors={errors} />
          <TextField env={env} name="redirectUris" label={o.redirectUris} hint={o.redirectUrisHint} value={str(body.redirectUris)} errors={errors} spellcheck={false} />
          <TextField env={env} name="postLogoutRedirectUris" label={o.postLogoutUris} hint={o.postLogoutUrisHint} value={str(body.postLogoutRedirectUris)} errors={errors} spellcheck={false} />
          <Fieldset legend={o.scopesLegend} hint={o.scopesHint} name="scopes" env={env} errors={errors}>
            <div class="checkbox">
              <input type="checkbox" id="scope-openid" checked disabled />
              <label for="scope-openid">{o.scopeOpenid}</label>
            </div>
            {CHOOSABLE.map((s) => (
              <div class="checkbox">
                <input type="checkbox" id={`scope-${s}`} name="scope" value={s} checked={chosen.has(s)} />
                <label for={`scope-${s}`}>{label[s]}</label>
              </div>
            ))}
          </Fieldset>
          <TextField env={env} name="extraScopes" label={o.extraScopes} hint={o.extraScopesHint} value={str(body.extraScopes, 400)} errors={errors} spellcheck={false} />
          <TextField env={env} name="logoUri" label={o.logoUri} value={str(body.logoUri, 500)} errors={errors} spellcheck={false} />
          <TextField env={env} name="backchannelLogoutUri" label={o.backchannelUri} hint={o.backchannelUriHint} value={str(body.backchannelLogoutUri, 500)} errors={errors} spellcheck={false} />
          {!editing && (
            <Fieldset legend={o.kindLegend}>
              <div class="checkbox">
                <input type="radio" id="kind-confidential" name="kind" value="confidential" checked={confidential} />
                <label for="kind-confidential">{o.confidential}</label>
              </div>
              <div class="checkbox">
                <input type="radio" id="kind-public" name="kind" value="public" checked={!confidential} />
                <label for="kind-public">{o.public}</label>
              </div>
            </Fieldset>
          )}
          <button type="submit" class="button">
            {editing ? o.editSubmit : o.submit}
          </button>
        </form>
      </Page>,
      errors ? 400 : 200,
    );
  };

  app.get('/admin/oidc/clients/new', async (req, reply) => {
    // The same check as the list: the form is no use to someone who may not register.
    await listClients(deps, req.ctx);
    return clientForm(req, reply);
  });

  app.post('/admin/oidc/clients', async (req, reply) => {
    const body = (req.body ?? {}) as Body;
    try {
      strictFields(body, { name: 200, redirectUris: 4000, postLogoutRedirectUris: 4000, extraScopes: 400, logoUri: 600, backchannelLogoutUri: 600, kind: 20 }, ['redirectUris', 'postLogoutRedirectUris', 'extraScopes']);
    } catch (err) {
      if (err instanceof ValidationError) return clientForm(req, reply, body, err.fields);
      throw err;
    }
    const scopes = ['openid', ...(Array.isArray(body.scope) ? body.scope : body.scope ? [body.scope] : []).filter((s): s is string => typeof s === 'string'), ...list(body.extraScopes)];
    let r;
    try {
      r = await registerClient(deps, req.ctx, {
        name: str(body.name, 200),
        redirectUris: list(body.redirectUris),
        postLogoutRedirectUris: list(body.postLogoutRedirectUris),
        scopes,
        logoUri: str(body.logoUri, 600) || null,
        backchannelLogoutUri: str(body.backchannelLogoutUri, 600) || null,
        confidential: body.kind !== 'public',
      });
    } catch (err) {
      if (err instanceof ValidationError) return clientForm(req, reply, body, err.fields);
      throw err;
    }
    const env = pageEnv(req, reply);
    const o = env.m.oidc;
    return sendPage(
      reply,
      <Page env={env} title={o.createdTitle}>
        <h1>{o.createdTitle}</h1>
        <Notice>{r.status === 'pending' ? o.pendingNotice : o.activeNotice}</Notice>
        <SummaryList
          rows={[
            [o.clientId, <code>{r.clientId}</code>],
            ...(r.secret ? ([[o.secret, <code>{r.secret}</code>]] as [string, preact.ComponentChildren][]) : []),
            [o.discovery, <code>{`${req.ctx.baseUrl}${OIDC_PREFIX}/.well-known/openid-configuration`}</code>],
          ]}
        />
        {r.secret && <p class="notice notice--warning">{o.secretOnce}</p>}
        <p>
          <a href={`/admin/oidc/clients/${r.clientId}`}>{o.detailTitle(str(body.name, 120))}</a>
        </p>
      </Page>,
      201,
    );
  });

  const emailOf = async (req: FastifyRequest, id: string | null) =>
    id ? ((await inTenant(deps.db.db, req.ctx.tenant.id, (trx) => trx.selectFrom('accounts').select('email').where('id', '=', id).executeTakeFirst()))?.email ?? '—') : '—';

  const clientPage = async (req: FastifyRequest, reply: FastifyReply, c: ClientRow, notice?: string, status = 200) => {
    const env = pageEnv(req, reply);
    const o = env.m.oidc;
    const mine = c.requested_by === req.ctx.actor?.accountId;
    const mineScopes = c.pending_requested_by === req.ctx.actor?.accountId;
    const editable = c.status === 'active' || c.status === 'pending';
    return sendPage(
      reply,
      <Page env={env} title={o.detailTitle(c.name)}>
        {notice && <Notice>{notice}</Notice>}
        <h1>{o.detailTitle(c.name)}</h1>
        <SummaryList
          rows={[
            [o.colStatus, <Tag tone={TONE[c.status]}>{o.status[c.status]}</Tag>],
            [o.clientId, <code>{c.client_id}</code>],
            [o.redirectUris, c.redirect_uris.join(' ')],
            [o.postLogoutUris, c.post_logout_redirect_uris.join(' ') || '—'],
            [o.colScopes, c.scopes.join(' ')],
            [o.kindLegend, c.secret_wrapped ? o.confidential : o.public],
            [o.requestedBy, `${await emailOf(req, c.requested_by)} — ${formatDateTime(env.locale, new Date(c.requested_at))}`],
            ...(c.approved_by ? ([[o.approvedBy, await emailOf(req, c.approved_by)]] as [string, string][]) : []),
            ...(c.logo_uri ? ([[o.logoUri, c.logo_uri]] as [string, string][]) : []),
            ...(c.secret_rotated_at ? ([[o.secretRotatedAt, formatDateTime(env.locale, new Date(c.secret_rotated_at))]] as [string, string][]) : []),
          ]}
        />
        {c.pending_scopes && (
          <section aria-labelledby="pending-scopes">
            <h2 id="pending-scopes">{o.pendingScopes}</h2>
            <p>
              <code>{c.pending_scopes.join(' ')}</code>
            </p>
            {c.pending_redirect_uris && (
              <>
                <h3>{o.pendingRedirectUris}</h3>
                <ul>
                  {c.pending_redirect_uris.map((u) => (
                    <li>
                      <code>{u}</code>
                      {!c.redirect_uris.includes(u) && <> — {o.newAddress}</>}
                    </li>
                  ))}
                </ul>
              </>
            )}
            <p>{o.pendingBy(await emailOf(req, c.pending_requested_by), formatDateTime(env.locale, new Date(c.pending_requested_at!)))}</p>
            {mineScopes ? (
              <Notice>{o.selfApprovalScopes}</Notice>
            ) : (
              <form method="post" action={`/admin/oidc/clients/${c.client_id}/decision`}>
                <Csrf env={env} />
                <input type="hidden" name="reviewed" value={reviewVersion(c)} />
                <div class="actions">
                  <button type="submit" class="button" name="decision" value="approveScopes">
                    {o.approveScopes}
                  </button>
                  <button type="submit" class="button button--secondary" name="decision" value="refuseScopes">
                    {o.refuseScopes}
                  </button>
                </div>
              </form>
            )}
          </section>
        )}
        {editable && (
          <p class="actions">
            <a class="button button--secondary" href={`/admin/oidc/clients/${c.client_id}/edit`}>
              {o.edit}
            </a>
          </p>
        )}
        {editable && c.secret_wrapped && (
          <form method="post" action={`/admin/oidc/clients/${c.client_id}/secret`}>
            <Csrf env={env} />
            <p>{o.rotateWarning}</p>
            <button type="submit" class="button button--secondary">
              {o.rotate}
            </button>
          </form>
        )}
        {c.status === 'pending' && mine && <Notice>{o.selfApproval}</Notice>}
        {c.status === 'pending' && !mine && (
          <form method="post" action={`/admin/oidc/clients/${c.client_id}/decision`}>
            <Csrf env={env} />
            <input type="hidden" name="reviewed" value={reviewVersion(c)} />
            <div class="actions">
              <button type="submit" class="button" name="decision" value="approve">
                {o.approve}
              </button>
              <button type="submit" class="button button--secondary" name="decision" value="refuse">
                {o.refuse}
              </button>
            </div>
          </form>
        )}
        {c.status === 'active' && (
          <form method="post" action={`/admin/oidc/clients/${c.client_id}/decision`}>
            <Csrf env={env} />
            <p>{o.disableWarning}</p>
            <button type="submit" class="button button--warning" name="decision" value="disable">
              {o.disable}
            </button>
          </form>
        )}
        <p>
          <a href="/admin/oidc/clients">{o.clientsTitle}</a>
        </p>
      </Page>,
      status,
    );
  };

  app.get<{ Params: { clientId: string }; Querystring: { edited?: string } }>('/admin/oidc/clients/:clientId', async (req, reply) => {
    const c = await getClient(deps, req.ctx, req.params.clientId);
    const o = pageEnv(req, reply).m.oidc;
    return clientPage(req, reply, c, req.query.edited === '1' ? o.edited : req.query.edited === 'pending' ? o.editedPending : undefined);
  });

  /** The form as the client stands: its scopes ticked or listed, its addresses one per line. */
  const bodyOf = (c: ClientRow): Body => {
    const scopes = c.pending_scopes ?? c.scopes;
    return {
      name: c.name,
      redirectUris: (c.pending_redirect_uris ?? c.redirect_uris).join(' '),
      postLogoutRedirectUris: c.post_logout_redirect_uris.join(' '),
      scope: scopes.filter((s) => (CHOOSABLE as readonly string[]).includes(s)),
      extraScopes: scopes.filter((s) => s !== 'openid' && !(CHOOSABLE as readonly string[]).includes(s)).join(' '),
      logoUri: c.logo_uri ?? '',
      backchannelLogoutUri: c.backchannel_logout_uri ?? '',
    };
  };

  app.get<{ Params: { clientId: string } }>('/admin/oidc/clients/:clientId/edit', async (req, reply) => {
    const c = await getClient(deps, req.ctx, req.params.clientId);
    if (c.status !== 'active' && c.status !== 'pending') throw new AppError('notFound');
    return clientForm(req, reply, bodyOf(c), undefined, c);
  });

  app.post<{ Params: { clientId: string } }>('/admin/oidc/clients/:clientId/edit', async (req, reply) => {
    const body = (req.body ?? {}) as Body;
    const c = await getClient(deps, req.ctx, req.params.clientId);
    try {
      strictFields(body, { name: 200, redirectUris: 4000, postLogoutRedirectUris: 4000, extraScopes: 400, logoUri: 600, backchannelLogoutUri: 600 }, ['redirectUris', 'postLogoutRedirectUris', 'extraScopes']);
      const scopes = ['openid', ...(Array.isArray(body.scope) ? body.scope : body.scope ? [body.scope] : []).filter((s): s is string => typeof s === 'string'), ...list(body.extraScopes)];
      const r = await updateClient(deps, req.ctx, c.client_id, {
        name: str(body.name, 200),
        redirectUris: list(body.redirectUris),
        postLogoutRedirectUris: list(body.postLogoutRedirectUris),
        scopes,
        logoUri: str(body.logoUri, 600) || null,
        backchannelLogoutUri: str(body.backchannelLogoutUri, 600) || null,
      });
      return reply.redirect(`/admin/oidc/clients/${c.client_id}?edited=${r.scopesPending ? 'pending' : '1'}`, 303);
    } catch (err) {
      if (err instanceof ValidationError && !err.fields._) return clientForm(req, reply, body, err.fields, c);
      throw err;
    }
  });

  app.post<{ Params: { clientId: string } }>('/admin/oidc/clients/:clientId/secret', async (req, reply) => {
    const secret = await rotateClientSecret(deps, req.ctx, req.params.clientId);
    const c = await getClient(deps, req.ctx, req.params.clientId);
    const env = pageEnv(req, reply);
    const o = env.m.oidc;
    reply.header('cache-control', 'no-store');
    return sendPage(
      reply,
      <Page env={env} title={o.rotatedTitle}>
        <h1>{o.rotatedTitle}</h1>
        <Notice>{o.rotatedNotice}</Notice>
        <SummaryList
          rows={[
            [o.clientId, <code>{c.client_id}</code>],
            [o.secret, <code>{secret}</code>],
          ]}
        />
        <p class="notice notice--warning">{o.secretOnce}</p>
        <p>
          <a href={`/admin/oidc/clients/${c.client_id}`}>{o.detailTitle(c.name)}</a>
        </p>
      </Page>,
    );
  });

  app.post<{ Params: { clientId: string } }>('/admin/oidc/clients/:clientId/decision', async (req, reply) => {
    strictFields((req.body ?? {}) as Body, { decision: 20, reviewed: 64 });
    const d = str((req.body as Body | undefined)?.decision, 20);
    const reviewed = str((req.body as Body | undefined)?.reviewed, 64) || undefined;
    try {
      if (d === 'approveScopes' || d === 'refuseScopes') {
        await decideScopes(deps, req.ctx, req.params.clientId, d === 'approveScopes' ? 'approve' : 'refuse', reviewed);
        return reply.redirect('/admin/oidc/clients?decided=1', 303);
      }
      if (d !== 'approve' && d !== 'refuse' && d !== 'disable') throw new ValidationError({ decision: 'invalidValue' });
      await decideClient(deps, req.ctx, req.params.clientId, d, reviewed);
      return reply.redirect('/admin/oidc/clients?decided=1', 303);
    } catch (err) {
      // Changed since the approver read it: the page again, as it is now, saying so.
      if (!(err instanceof ValidationError) || err.fields._ !== 'clientChangedSinceReview') throw err;
      return clientPage(req, reply, await getClient(deps, req.ctx, req.params.clientId), pageEnv(req, reply).m.errors.field.clientChangedSinceReview, 409);
    }
  });

  /* ------------------------------------------------------- entitlements */
  const entitlementsPage = async (req: FastifyRequest, reply: FastifyReply, opts: { body?: Body; errors?: FieldErrors; notice?: string } = {}) => {
    const rows = await listEntitlements(deps, req.ctx);
    const env = pageEnv(req, reply);
    const o = env.m.oidc;
    const b = opts.body ?? {};
    return sendPage(
      reply,
      <Page env={env} title={o.entTitle} hasErrors={!!opts.errors}>
        <ErrorSummary env={env} errors={opts.errors} />
        {opts.notice && <Notice>{opts.notice}</Notice>}
        <h1>{o.entTitle}</h1>
        <p class="lead">{o.entLead}</p>
        {rows.length === 0 ? (
          <p>{o.entNone}</p>
        ) : (
          <div class="table-wrap">
            <table>
              <caption class="visually-hidden">{o.entTitle}</caption>
              <thead>
                <tr>
                  <th scope="col">{o.colPerson}</th>
                  <th scope="col">{o.colEntitlement}</th>
                  <th scope="col">{o.entScope}</th>
                  <th scope="col">{o.colValidUntil}</th>
                  <th scope="col">{o.colState}</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((r) => {
                  const label = env.locale === 'fr' ? r.label_fr : r.label_en;
                  return (
                    <tr>
                      <td>{r.email}</td>
                      <td>{label}</td>
                      <td>
                        <code>{r.scope}</code>
                      </td>
                      <td>{r.valid_until ? formatDate(env.locale, r.valid_until) : o.noLimit}</td>
                      <td>
                        {r.revoked_at ? (
                          o.stateRevoked
                        ) : (
                          <form method="post" action={`/admin/oidc/entitlements/${r.id}/revoke`} class="inline-form">
                            <Csrf env={env} />
                            <button type="submit" class="link-button" aria-label={o.entRevokeLabel(label, r.email)}>
                              {o.entRevoke}
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
        )}
        <h2>{o.entSubmit}</h2>
        <form method="post" action="/admin/oidc/entitlements" novalidate>
          <Csrf env={env} />
          <TextField env={env} name="email" type="email" label={o.entEmail} value={str(b.email, 254)} errors={opts.errors} spellcheck={false} />
          <TextField env={env} name="scope" label={o.entScope} hint={o.entScopeHint} value={str(b.scope, 40)} errors={opts.errors} width="medium" spellcheck={false} />
          <TextField env={env} name="kind" label={o.entKind} hint={o.entKindHint} value={str(b.kind, 64)} errors={opts.errors} width="medium" spellcheck={false} />
          <TextField env={env} name="value" label={o.entValue} hint={o.entValueHint} value={str(b.value, 200)} errors={opts.errors} />
          <TextField env={env} name="labelFr" label={o.entLabelFr} value={str(b.labelFr, 200)} errors={opts.errors} />
          <TextField env={env} name="labelEn" label={o.entLabelEn} value={str(b.labelEn, 200)} errors={opts.errors} />
          <TextField env={env} name="validUntil" type="date" label={o.entValidUntil} value={str(b.validUntil, 10)} errors={opts.errors} width="short" />
          <button type="submit" class="button">
            {o.entSubmit}
          </button>
        </form>
      </Page>,
      opts.errors ? 400 : 200,
    );
  };

  app.get<{ Querystring: { done?: string } }>('/admin/oidc/entitlements', async (req, reply) => {
    const m = pageEnv(req, reply).m.oidc;
    return entitlementsPage(req, reply, req.query.done === 'created' ? { notice: m.created } : req.query.done === 'revoked' ? { notice: m.revoked } : {});
  });
  app.post('/admin/oidc/entitlements', async (req, reply) => {
    const b = (req.body ?? {}) as Body;
    try {
      strictFields(b, { email: 254, scope: 40, kind: 64, value: 200, labelFr: 200, labelEn: 200 });
      // Empty: no end date. Anything else must be one real calendar date.
      if (b.validUntil !== undefined && b.validUntil !== '') parseBody(z.object({ validUntil: dateField }), { validUntil: b.validUntil });
      await grantEntitlement(deps, req.ctx, {
        email: str(b.email, 254),
        scope: str(b.scope, 40).trim(),
        kind: str(b.kind, 64).trim(),
        value: str(b.value, 200),
        labelFr: str(b.labelFr, 200),
        labelEn: str(b.labelEn, 200),
        validUntil: str(b.validUntil, 10) || null,
      });
    } catch (err) {
      if (err instanceof ValidationError) return entitlementsPage(req, reply, { body: b, errors: err.fields });
      throw err;
    }
    return reply.redirect('/admin/oidc/entitlements?done=created', 303);
  });
  app.post<{ Params: { id: string } }>('/admin/oidc/entitlements/:id/revoke', async (req, reply) => {
    await revokeEntitlement(deps, req.ctx, req.params.id);
    return reply.redirect('/admin/oidc/entitlements?done=revoked', 303);
  });

  /* ----------------------------------------------- the person's own page */
  app.get<{ Querystring: { withdrawn?: string } }>('/account/access-rights', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    const rows = await ownEntitlements(deps, req.ctx);
    const services = await connectedServices(deps, req.ctx);
    const env = pageEnv(req, reply);
    const o = env.m.oidc;
    const today = req.ctx.now.toISOString().slice(0, 10);
    return sendPage(
      reply,
      <Page env={env} title={o.servicesTitle}>
        {req.query.withdrawn && <Notice>{o.withdrawn}</Notice>}
        <h1>{o.servicesTitle}</h1>
        <p class="lead">{o.servicesLead}</p>
        {rows.length === 0 ? (
          <p>{o.servicesNone}</p>
        ) : (
          <div class="table-wrap">
            <table>
              <caption class="visually-hidden">{o.servicesTitle}</caption>
              <thead>
                <tr>
                  <th scope="col">{o.colEntitlement}</th>
                  <th scope="col">{o.colValidUntil}</th>
                  <th scope="col">{o.colState}</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((r) => (
                  <tr>
                    <td>{env.locale === 'fr' ? r.label_fr : r.label_en}</td>
                    <td>{r.valid_until ? formatDate(env.locale, r.valid_until) : o.noLimit}</td>
                    <td>
                      {r.revoked_at ? (
                        <Tag tone="grey">{o.stateRevoked}</Tag>
                      ) : r.valid_until && r.valid_until < today ? (
                        <Tag tone="grey">{o.stateExpired}</Tag>
                      ) : (
                        <Tag tone="green">{o.stateCurrent}</Tag>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        <h2>{o.connectedTitle}</h2>
        {services.length === 0 ? (
          <p>{o.connectedNone}</p>
        ) : (
          <ul>
            {services.map((c) => (
              <li>
                <strong>{c.name}</strong> — {o.connectedShared(c.scopes.join(', '))}{' '}
                <form method="post" action={`/account/access-rights/grants/${c.grantId}/withdraw`} class="inline-form">
                  <Csrf env={env} />
                  <button type="submit" class="link-button" aria-label={o.withdrawLabel(c.name)}>
                    {o.withdraw}
                  </button>
                </form>
              </li>
            ))}
          </ul>
        )}
        <p>
          <a href="/account">{env.m.layout.myFile}</a>
        </p>
      </Page>,
    );
  });

  app.post<{ Params: { grantId: string } }>('/account/access-rights/grants/:grantId/withdraw', async (req, reply) => {
    await withdrawConsent(deps, req.ctx, req.params.grantId);
    return reply.redirect('/account/access-rights?withdrawn=1', 303);
  });
}
