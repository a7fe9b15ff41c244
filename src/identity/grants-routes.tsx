import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Deps } from '../context.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError, ValidationError } from '../errors.ts';
import { Csrf, ErrorSummary, Notice, Page, Select, SummaryList, Tag, TextField, type FieldErrors, type PageEnv } from '../web/components.tsx';
import { emailField, parseBody, text } from '../web/forms.ts';
import { formatDateTime } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';
import { findFacilities } from '../directory/service.ts';
import { decideGrant, getGrantRequest, listGrantRequests, PRIVILEGED_ROLES, requestGrant, revokeMembership, type GrantRequestView } from './grants.ts';

const DURATIONS = [60, 240, 480, 720] as const;

const requestSchema = z.object({
  email: emailField,
  role: z.enum(PRIVILEGED_ROLES, { error: 'grantRoleRequired' }),
  facilityId: z.string().max(64).optional(),
  reason: text('grantReasonRequired', 500, 'grantReasonRequired'),
  durationMinutes: z.coerce.number({ error: 'grantDuration' }).int({ error: 'grantDuration' }),
});

function hours(env: PageEnv, minutes: number): string {
  return env.m.grants.durations[minutes] ?? `${minutes} min`;
}

function statusTag(env: PageEnv, s: GrantRequestView['status'], endorsed = false) {
  return <Tag tone={s === 'pending' ? 'orange' : s === 'approved' ? 'green' : 'grey'}>{s === 'pending' && endorsed ? env.m.grants.awaitingSecond : env.m.grants.status[s]}</Tag>;
}

/** Up to this many facilities, the form lists them all; beyond, it lists those a search finds. */
export const FACILITY_CHOICES_MAX = 200;
/** Facilities a search puts in the form's list. */
export const FACILITY_MATCHES_SHOWN = 50;

/**
 * Facilities to choose from for a director role (names only: public data):
 * every one in a programme of a few hundred; in a larger one (30,000
 * facilities made a page of 3.9 MB) those that match the search, and the one
 * already chosen. `searching` tells the page to show the search.
 */
async function facilityOptions(deps: Deps, req: FastifyRequest, query: string, chosen: string | undefined) {
  return inTenant(deps.db.db, req.ctx.tenant.id, async (trx) => {
    const all = trx.selectFrom('facilities').select(['id', 'name', 'municipality']);
    const first = await all.orderBy('municipality').orderBy('name').limit(FACILITY_CHOICES_MAX + 1).execute();
    if (first.length <= FACILITY_CHOICES_MAX) return { searching: false, facilities: first, matches: first.length };
    const found = query.trim() ? await findFacilities(trx, query, FACILITY_MATCHES_SHOWN) : { total: 0, rows: [] };
    const facilities = found.rows.map((f) => ({ id: f.id, name: f.name, municipality: f.municipality }));
    if (chosen && UUID.test(chosen) && !facilities.some((f) => f.id === chosen)) {
      const c = await all.where('id', '=', chosen).executeTakeFirst();
      if (c) facilities.unshift(c);
    }
    return { searching: true, facilities, matches: found.total };
  });
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function grantRoutes(app: FastifyInstance, deps: Deps) {
  const newPage = async (req: FastifyRequest, reply: FastifyReply, values: Record<string, string | undefined>, errors?: FieldErrors) => {
    const env = pageEnv(req, reply);
    const g = env.m.grants;
    const query = (values.facilityQuery ?? '').slice(0, 100);
    const { searching, facilities, matches } = await facilityOptions(deps, req, query, values.facilityId);
    return sendPage(
      reply,
      <Page env={env} title={g.newTitle} hasErrors={!!errors}>
        <ErrorSummary env={env} errors={errors} />
        <h1>{g.newTitle}</h1>
        <p class="lead">{g.lead}</p>
        {searching && (
          <form method="get" action="/grants/new" role="search" class="facility-search">
            <TextField env={env} name="facilityQuery" type="search" label={g.facilitySearch} hint={g.facilitySearchHint} value={query} />
            <button type="submit" class="button button--secondary">
              {g.facilitySearchSubmit}
            </button>
            {query.trim() && <p>{g.facilityMatches(matches, Math.min(matches, FACILITY_MATCHES_SHOWN))}</p>}
          </form>
        )}
        <form method="post" action="/grants/new" novalidate>
          <Csrf env={env} />
          {searching && <input type="hidden" name="facilityQuery" value={query} />}
          <TextField env={env} name="email" type="email" label={g.email} hint={g.emailHint} value={values.email ?? env.actor?.email} errors={errors} autocomplete="off" spellcheck={false} />
          <Select env={env} name="role" label={g.role} value={values.role} errors={errors} options={PRIVILEGED_ROLES.map((r) => ({ value: r, label: env.m.admin.roles[r] }))} />
          <Select
            env={env}
            name="facilityId"
            label={g.facility}
            value={values.facilityId}
            errors={errors}
            options={[{ value: '', label: g.facilityNone }, ...facilities.map((f) => ({ value: f.id, label: `${f.name} — ${f.municipality}` }))]}
          />
          <TextField env={env} name="reason" label={g.reason} hint={g.reasonHint} value={values.reason} errors={errors} />
          <Select env={env} name="durationMinutes" label={g.duration} value={values.durationMinutes ?? '240'} errors={errors} options={DURATIONS.map((d) => ({ value: String(d), label: hours(env, d) }))} />
          <button type="submit" class="button">
            {g.submit}
          </button>
        </form>
      </Page>,
      errors ? 400 : 200,
    );
  };

  app.get<{ Querystring: { facilityQuery?: string } }>('/grants/new', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    const q = req.query?.facilityQuery;
    return newPage(req, reply, { facilityQuery: typeof q === 'string' ? q : undefined });
  });

  app.post('/grants/new', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    const body = (req.body ?? {}) as Record<string, unknown>;
    const values = Object.fromEntries(['email', 'role', 'facilityId', 'reason', 'durationMinutes', 'facilityQuery'].map((k) => [k, typeof body[k] === 'string' ? (body[k] as string).slice(0, 500) : undefined]));
    let forSelf: boolean;
    try {
      const input = parseBody(requestSchema, body);
      await requestGrant(deps, req.ctx, { ...input, facilityId: input.facilityId || null });
      // The address as parsed, as requestGrant compares it: a request for oneself needs two administrators.
      forSelf = input.email === req.ctx.actor.email;
    } catch (err) {
      if (err instanceof ValidationError) return newPage(req, reply, values, err.fields);
      throw err;
    }
    const isAdmin = req.ctx.actor.memberships.some((m) => m.role === 'tenant_admin');
    const requested = forSelf ? 'self' : '1';
    return reply.redirect(isAdmin ? `/admin/grants?requested=${requested}` : `/staff?requested=${requested}`, 303);
  });

  app.get<{ Querystring: Record<string, string> }>('/admin/grants', async (req, reply) => {
    const rows = await listGrantRequests(deps, req.ctx);
    const env = pageEnv(req, reply);
    const g = env.m.grants;
    const q = req.query ?? {};
    const table = (list: GrantRequestView[], caption: string) => (
      <div class="table-wrap">
        <table>
          <caption class="visually-hidden">{caption}</caption>
          <thead>
            <tr>
              <th scope="col">{g.colWho}</th>
              <th scope="col">{g.colRole}</th>
              <th scope="col">{g.colDuration}</th>
              <th scope="col">{g.colRequestedBy}</th>
              <th scope="col">{g.colWhen}</th>
              <th scope="col">{g.colStatus}</th>
            </tr>
          </thead>
          <tbody>
            {list.map((r) => (
              <tr>
                <td>
                  <a href={`/admin/grants/${r.id}`} aria-label={g.openLabel(r.email)}>
                    {r.email}
                  </a>
                </td>
                <td>
                  {env.m.admin.roles[r.role]}
                  {r.facilityName ? ` — ${r.facilityName}` : ''}
                </td>
                <td>{hours(env, r.durationMinutes)}</td>
                <td>{r.requestedBy}</td>
                <td>{formatDateTime(env.locale, r.requestedAt)}</td>
                <td>{statusTag(env, r.status, !!r.endorsedBy)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    );
    const pending = rows.filter((r) => r.status === 'pending' && r.expiresAt > req.ctx.now);
    const decided = rows.filter((r) => !pending.includes(r));
    return sendPage(
      reply,
      <Page env={env} title={g.title}>
        {q.requested && <Notice>{q.requested === 'self' ? g.requestedForSelf : g.requested}</Notice>}
        {q.endorsed && <Notice>{g.endorsedDone}</Notice>}
        {q.approved && <Notice>{g.approved}</Notice>}
        {q.refused && <Notice>{g.refusedDone}</Notice>}
        {q.revoked && <Notice>{g.revoked}</Notice>}
        <h1>{g.title}</h1>
        <p class="lead">{g.lead}</p>
        <p>
          <a class="button button--secondary" href="/grants/new">
            {g.newLink}
          </a>
        </p>
        <h2>{g.pending}</h2>
        {pending.length ? table(pending, g.pending) : <p>{g.none}</p>}
        <h2>{g.history}</h2>
        {decided.length ? table(decided, g.history) : <p>{g.none}</p>}
      </Page>,
    );
  });

  app.get<{ Params: { id: string } }>('/admin/grants/:id', async (req, reply) => {
    const r = await getGrantRequest(deps, req.ctx, req.params.id);
    const env = pageEnv(req, reply);
    const g = env.m.grants;
    const own = r.requestedById === env.actor?.accountId || r.accountId === env.actor?.accountId;
    const endorser = !own && !!env.actor && r.endorsedById === env.actor.accountId;
    const inviter = !own && !endorser && !!env.actor && r.invitedBy.includes(env.actor.accountId);
    const open = r.status === 'pending' && r.expiresAt > req.ctx.now;
    // A request for oneself: the first administrator to approve endorses it, a second one grants it.
    const toEndorse = r.requestedById === r.accountId && !r.endorsedById;
    return sendPage(
      reply,
      <Page env={env} title={g.reviewTitle}>
        <p>
          <a href="/admin/grants" class="back-link">
            {g.title}
          </a>
        </p>
        <h1>{g.reviewTitle}</h1>
        <SummaryList
          rows={[
            [g.colWho, r.email],
            [g.colRole, `${env.m.admin.roles[r.role]}${r.facilityName ? ` — ${r.facilityName}` : ''}`],
            [g.colDuration, hours(env, r.durationMinutes)],
            [g.reason, r.reason],
            [g.colRequestedBy, r.requestedBy],
            [g.colWhen, formatDateTime(env.locale, r.requestedAt)],
            ...(r.endorsedBy ? [[g.colEndorsedBy, r.endorsedBy] as [string, string]] : []),
            [g.colStatus, statusTag(env, open ? 'pending' : r.status === 'pending' ? 'cancelled' : r.status, !!r.endorsedBy)],
          ]}
        />
        {open && own && <Notice>{g.ownRequest}</Notice>}
        {open && !own && (
          <>
            {endorser ? (
              <Notice>{g.endorsedByYou}</Notice>
            ) : inviter ? (
              <Notice>{g.invitedByYou}</Notice>
            ) : (
              <p>
                <strong>{toEndorse ? g.endorseConsequence(r.email, env.m.admin.roles[r.role]) : g.consequence(r.email, env.m.admin.roles[r.role], hours(env, r.durationMinutes))}</strong>
              </p>
            )}
            <div class="actions">
              {!inviter && !endorser && (
                <form method="post" action={`/admin/grants/${r.id}/approve`} class="inline-form">
                  <Csrf env={env} />
                  <button type="submit" class="button">
                    {toEndorse ? g.endorse : g.approve}
                  </button>
                </form>
              )}
              <form method="post" action={`/admin/grants/${r.id}/refuse`} class="inline-form">
                <Csrf env={env} />
                <button type="submit" class="button button--secondary">
                  {g.refuse}
                </button>
              </form>
            </div>
          </>
        )}
      </Page>,
    );
  });

  for (const decision of ['approve', 'refuse'] as const) {
    app.post<{ Params: { id: string } }>(`/admin/grants/:id/${decision}`, async (req, reply) => {
      const outcome = await decideGrant(deps, req.ctx, req.params.id, decision);
      return reply.redirect(`/admin/grants?${outcome}=1`, 303);
    });
  }

  app.post<{ Params: { id: string } }>('/admin/memberships/:id/revoke', async (req, reply) => {
    await revokeMembership(deps, req.ctx, req.params.id);
    return reply.redirect('/admin/grants?revoked=1', 303);
  });
}
