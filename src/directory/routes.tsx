import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { Deps } from '../context.ts';
import { AppError } from '../errors.ts';
import { listChildren } from '../records/gateway.ts';
import { Checkbox, Csrf, ErrorSummary, Fieldset, Notice, Page, Pagination, Select, SummaryList, Tag, TextField, type FieldErrors, type PageEnv } from '../web/components.tsx';
import { pageEnv, sendPage } from '../web/render.tsx';
import type { DeclaredPriority } from '../records/ordering.ts';
import { publicFacilityPriorities } from '../waitlist/priorities.ts';
import { directoryPage, getFacility, type FacilityRow } from './service.ts';

/** Control characters (NUL among them, which PostgreSQL refuses in text) and bidi overrides make a filter void, like any other bad value. */
const filterText = z.string().max(100).regex(/^[^\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*$/).optional().catch(undefined);

const filtersSchema = z.object({
  q: filterText,
  municipality: filterText,
  kind: z.enum(['cpe', 'garderie']).optional().catch(undefined),
  subsidised: z.literal('on').optional().catch(undefined),
  infant: z.literal('on').optional().catch(undefined),
  page: z.coerce.number().int().min(1).max(100000).catch(1),
});

function FundingTag({ env, f }: { env: PageEnv; f: FacilityRow }) {
  return f.subsidised ? <Tag tone="green">{env.m.directory.subsidised}</Tag> : <Tag tone="grey">{env.m.directory.notSubsidised}</Tag>;
}

export function directoryRoutes(app: FastifyInstance, deps: Deps) {
  app.get('/directory', async (req, reply) => {
    // Filters are a search, not a form submission: bad values are ignored, never an error.
    const f = filtersSchema.parse(req.query ?? {});
    const ctx = req.ctx;
    const { total, rows, towns } = await directoryPage(deps, ctx, { q: f.q, municipality: f.municipality || undefined, kind: f.kind, subsidised: !!f.subsidised, infant: !!f.infant }, f.page);
    const env = pageEnv(req, reply);
    const d = env.m.directory;
    const pages = Math.max(1, Math.ceil(total / 25));
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries({ q: f.q, municipality: f.municipality, kind: f.kind, subsidised: f.subsidised, infant: f.infant })) if (v) params.set(k, v);
    const href = (p: number) => `/directory?${new URLSearchParams([...params, ['page', String(p)]]).toString()}`;
    return sendPage(
      reply,
      <Page env={env} title={d.title}>
        <h1>{d.title}</h1>
        <p class="lead">{d.lead}</p>
        <form method="get" action="/directory" class="filters" role="search" aria-label={d.filters}>
          <TextField env={env} name="q" label={d.q} hint={d.qHint} value={f.q} type="search" width="medium" />
          <Select env={env} name="municipality" label={d.municipality} value={f.municipality} options={[{ value: '', label: d.allMunicipalities }, ...towns.map((t) => ({ value: t, label: t }))]} />
          <Select env={env} name="kind" label={d.kind} value={f.kind} options={[{ value: '', label: d.kindAll }, { value: 'cpe', label: d.kindsLong.cpe }, { value: 'garderie', label: d.kindsLong.garderie }]} />
          <Checkbox name="subsidised" label={d.subsidisedOnly} checked={!!f.subsidised} />
          <Checkbox name="infant" label={d.infantOnly} checked={!!f.infant} />
          <p class="actions">
            <button type="submit" class="button">
              {d.apply}
            </button>
            <a href="/directory">{d.reset}</a>
          </p>
        </form>
        <h2 id="results" aria-live="polite">
          {d.results(total)}
        </h2>
        {rows.length > 0 && (
          <div class="table-wrap">
            <table>
              <caption class="visually-hidden">{d.title}</caption>
              <thead>
                <tr>
                  <th scope="col">{d.colName}</th>
                  <th scope="col">{d.colKind}</th>
                  <th scope="col">{d.colMunicipality}</th>
                  <th scope="col" class="num">
                    {d.colPlaces}
                  </th>
                  <th scope="col" class="num">
                    {d.colInfant}
                  </th>
                </tr>
              </thead>
              <tbody>
                {rows.map((r) => (
                  <tr>
                    <td>
                      <a href={`/directory/${r.id}`}>{r.name}</a>
                    </td>
                    <td>
                      {d.kinds[r.kind]} <FundingTag env={env} f={r} />
                    </td>
                    <td>{r.municipality}</td>
                    <td class="num">{r.places_total}</td>
                    <td class="num">{r.places_infant}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        <Pagination env={env} page={Math.min(f.page, pages)} pages={pages} href={href} />
      </Page>,
    );
  });

  app.get<{ Params: { id: string }; Querystring: { status?: string } }>('/directory/:id', async (req, reply) => {
    const ctx = req.ctx;
    const facility = await getFacility(deps, ctx, req.params.id);
    if (!facility) throw new AppError('notFound');
    const isAdmin = !!ctx.actor?.memberships.some((m) => m.role === 'tenant_admin');
    // Under lockdown level 3 personal data is closed but the directory stays up: the page, without the parent's children.
    const children = ctx.actor?.emailVerified
      ? await listChildren(deps, ctx, 'parent.children.choose').catch((err: unknown) => {
          if (err instanceof AppError && err.kind === 'closed') return [];
          throw err;
        })
      : [];
    const priorities = await publicFacilityPriorities(deps, ctx, facility.id);
    return renderFacility(req, reply, facility, children, isAdmin, { priorities });
  });
}

export function renderFacility(
  req: Parameters<typeof pageEnv>[0],
  reply: Parameters<typeof pageEnv>[1],
  f: FacilityRow,
  children: { id: string; firstName: string; reference: string }[],
  isAdmin: boolean,
  state: { applyErrors?: FieldErrors; inviteErrors?: FieldErrors; inviteEmail?: string; invited?: string; priorities?: DeclaredPriority[] },
  status = 200,
) {
  const env = pageEnv(req, reply);
  const d = env.m.directory;
  const errors = { ...state.applyErrors, ...state.inviteErrors };
  return sendPage(
    reply,
    <Page env={env} title={f.name} hasErrors={Object.keys(errors).length > 0}>
      <p>
        <a href="/directory" class="back-link">
          {d.back}
        </a>
      </p>
      <ErrorSummary env={env} errors={errors} />
      {state.invited && <Notice>{env.m.admin.invited(state.invited)}</Notice>}
      <h1>{f.name}</h1>
      <SummaryList
        rows={[
          [d.kind, d.kindsLong[f.kind]],
          [d.funding, <FundingTag env={env} f={f} />],
          [d.address, f.address],
          [d.municipality, f.municipality],
          [d.postalCode, f.postal_code],
          [d.placesTotal, String(f.places_total)],
          [d.placesInfant, String(f.places_infant)],
        ]}
      />
      <section aria-labelledby="apply-title">
        <h2 id="apply-title">{d.applyTitle}</h2>
        {!env.actor && (
          <p>
            <a href={`/signin?return=${encodeURIComponent(`/directory/${f.id}`)}`}>{d.applySignIn}</a>
          </p>
        )}
        {env.actor && children.length === 0 && (
          <p>
            <a href="/children/new">{d.applyNeedChild}</a>
          </p>
        )}
        {env.actor && children.length > 0 && (
          <form method="post" action="/applications" novalidate>
            <Csrf env={env} />
            <input type="hidden" name="facilityId" value={f.id} />
            <Select env={env} name="childId" label={d.applyChild} errors={state.applyErrors} options={children.map((c) => ({ value: c.id, label: `${c.firstName} (${c.reference})` }))} />
            <Fieldset legend={d.applyDeclarations}>
              <Checkbox name="siblingAttending" label={d.siblingAttending} />
              <Checkbox name="parentIsStaff" label={d.parentIsStaff} />
            </Fieldset>
            {state.priorities && state.priorities.length > 0 && (
              <Fieldset legend={env.m.waitlistRules.applyPriorities} hint={env.m.waitlistRules.applyPrioritiesHint} name="priorities" env={env} errors={state.applyErrors}>
                {state.priorities.map((p) => (
                  <Checkbox name={`priority_${p.kind}`} label={p.detail ? `${env.m.waitlistRules.kinds[p.kind]} — ${p.detail}` : env.m.waitlistRules.kinds[p.kind]} />
                ))}
              </Fieldset>
            )}
            <button type="submit" class="button">
              {d.applySubmit}
            </button>
          </form>
        )}
      </section>
      {isAdmin && (
        <section aria-labelledby="invite-title">
          <h2 id="invite-title">{d.inviteTitle}</h2>
          <form method="post" action={`/admin/facilities/${f.id}/invitations`} novalidate>
            <Csrf env={env} />
            <TextField env={env} name="email" type="email" label={d.inviteEmail} value={state.inviteEmail} errors={state.inviteErrors} autocomplete="off" spellcheck={false} />
            <button type="submit" class="button button--secondary">
              {d.inviteSubmit}
            </button>
          </form>
        </section>
      )}
    </Page>,
    status,
  );
}
