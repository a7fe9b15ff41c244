import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Deps } from '../context.ts';
import { getFacility } from '../directory/service.ts';
import { AppError, ValidationError } from '../errors.ts';
import { confirmChildFile, type ConfirmationState } from '../records/confirmation.ts';
import type { DeclaredPriority } from '../records/ordering.ts';
import type { ChildRank } from '../records/ranks.ts';
import { PRIORITY_DETAIL, type PriorityKind } from '../tenants/rules.ts';
import { Checkbox, Csrf, ErrorSummary, Fieldset, Notice, Page, Tag, TextField, type FieldErrors, type PageEnv } from '../web/components.tsx';
import { formatDate } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';
import { declareFacilityPriorities, parsePrioritiesForm, readFacilityPriorities } from './priorities.ts';

/** The parent's rank at each chosen facility, and why, on the child's page. */
export function RankSection(props: { env: PageEnv; ranks: ChildRank[] }) {
  const { env, ranks } = props;
  const w = env.m.waitlistRules;
  if (!ranks.length) return null;
  const why = (r: ChildRank) => {
    const parts: string[] = [];
    if (r.ordering === 'points' && r.points) {
      const p = r.points;
      const bits = (Object.keys(w.pointsParts) as (keyof typeof w.pointsParts)[]).filter((k) => p[k] > 0).map((k) => `${w.pointsParts[k]} ${p[k]}`);
      parts.push(`${w.points(p.total)}${bits.length ? ` (${bits.join(', ')})` : ''}`);
    } else {
      parts.push(w.category(env.m.staff.categories[r.category]));
    }
    parts.push(w.seniority(formatDate(env.locale, r.seniorityDate)));
    if (r.prioritiesMet.length) {
      parts.push(w.prioritiesMet(r.prioritiesMet.map((k) => w.kinds[k]).join(', ')));
      if (!r.priorityOpen) parts.push(w.prioritiesCapped);
    }
    return parts.join(env.locale === 'fr' ? '\u202f; ' : '; ');
  };
  return (
    <section aria-labelledby="rank-title">
      <h2 id="rank-title">{w.rankTitle}</h2>
      <p>{w.rankLead}</p>
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">{env.m.child.colFacility}</th>
              <th scope="col">{w.colRank}</th>
              <th scope="col">{w.colWhy}</th>
            </tr>
          </thead>
          <tbody>
            {ranks.map((r) => (
              <tr>
                <td>{r.facilityName}</td>
                <td>{r.rank === null ? <Tag tone="grey">{w.rankNone}</Tag> : w.rankOf(r.rank, r.total)}</td>
                <td>{why(r)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}

/** The periodic confirmation on the child's page: when it is due, or that the file is inactive, with the button. */
export function ConfirmSection(props: { env: PageEnv; childId: string; state: ConfirmationState }) {
  const { env, state } = props;
  const w = env.m.waitlistRules;
  if (!state.enabled) return null;
  return (
    <section aria-labelledby="confirm-title">
      <h2 id="confirm-title">{w.confirmTitle}</h2>
      {state.inactiveSince ? (
        <p>
          <Tag tone="orange">{w.rankNone}</Tag> {w.confirmInactive(formatDate(env.locale, state.inactiveSince))} {state.keepsSeniority ? w.confirmKeeps : w.confirmLoses}
        </p>
      ) : state.asked ? (
        <p>{w.confirmDue(formatDate(env.locale, state.dueOn))}</p>
      ) : (
        <p>{w.confirmOk(formatDate(env.locale, state.dueOn))}</p>
      )}
      {(state.asked || state.inactiveSince) && (
        <form method="post" action={`/children/${props.childId}/confirm`}>
          <Csrf env={env} />
          <button type="submit" class="button">
            {w.confirmButton}
          </button>
        </form>
      )}
    </section>
  );
}

type PriorityFormValues = Record<string, string | undefined>;

function valuesOf(priorities: DeclaredPriority[]): PriorityFormValues {
  const v: PriorityFormValues = {};
  for (const p of priorities) {
    v[`kind_${p.kind}`] = 'on';
    if (p.detail) v[`detail_${p.kind}`] = p.detail;
  }
  return v;
}

function formValues(body: unknown): PriorityFormValues {
  const b = (body ?? {}) as Record<string, unknown>;
  const out: PriorityFormValues = {};
  for (const [k, v] of Object.entries(b)) if (/^(kind|detail)_[a-zA-Z]{1,20}$/.test(k) && typeof v === 'string') out[k] = v.slice(0, 200);
  return out;
}

export function waitlistRulesRoutes(app: FastifyInstance, deps: Deps) {
  const prioritiesPage = async (req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply, values?: PriorityFormValues, errors?: FieldErrors, saved = false) => {
    const ctx = req.ctx;
    if (!ctx.actor) throw new AppError('signInRequired');
    const facility = await getFacility(deps, ctx, req.params.id);
    // Only those who may declare see the page; anyone else reads "not found", as for a file.
    if (!facility || !ctx.actor.memberships.some((m) => (m.role === 'facility_director' && m.facilityId === facility.id) || m.role === 'tenant_admin')) throw new AppError('notFound');
    const view = await readFacilityPriorities(deps, ctx, facility.id);
    const env = pageEnv(req, reply);
    const w = env.m.waitlistRules;
    const rules = ctx.tenant.rules.priorities;
    const v = values ?? valuesOf(view.priorities);
    const title = w.prioritiesTitle(facility.name);
    return sendPage(
      reply,
      <Page env={env} title={title} hasErrors={!!errors}>
        <p>
          <a href="/staff" class="back-link">
            {env.m.staff.back}
          </a>
        </p>
        <ErrorSummary env={env} errors={errors} />
        {saved && <Notice>{w.prioritiesSaved}</Notice>}
        <h1>{title}</h1>
        <p class="lead">{w.prioritiesLead(rules.maxKinds, Math.round(rules.capShare * 100))}</p>
        <p>
          {w.admissions(view.admissions.total, view.admissions.byPriority)} {view.priorities.length > 0 && (view.priorityOpen ? w.capOpen : w.capReached)}
        </p>
        <form method="post" action={`/staff/facilities/${facility.id}/priorities`} novalidate>
          <Csrf env={env} />
          <input type="hidden" name="form" value="priorities" />
          <Fieldset legend={w.prioritiesLegend} name="kinds" env={env} errors={errors}>
            {rules.kinds.map((k: PriorityKind) => (
              <>
                <Checkbox name={`kind_${k}`} label={w.kinds[k]} checked={v[`kind_${k}`] === 'on'} />
                {PRIORITY_DETAIL[k] && <TextField env={env} name={`detail_${k}`} label={`${w.detailLabel} — ${w.kinds[k]}`} hint={w.detailHint} value={v[`detail_${k}`]} errors={errors} width="medium" />}
              </>
            ))}
          </Fieldset>
          <p class="actions">
            <button type="submit" class="button">
              {w.prioritiesSave}
            </button>
          </p>
        </form>
      </Page>,
      errors ? 400 : 200,
    );
  };

  app.get<{ Params: { id: string }; Querystring: { status?: string } }>('/staff/facilities/:id/priorities', async (req, reply) => prioritiesPage(req, reply, undefined, undefined, req.query.status === 'saved'));

  app.post<{ Params: { id: string } }>('/staff/facilities/:id/priorities', async (req, reply) => {
    const ctx = req.ctx;
    if (!ctx.actor) throw new AppError('signInRequired');
    try {
      const priorities = parsePrioritiesForm(req.body, ctx);
      await declareFacilityPriorities(deps, ctx, req.params.id, priorities);
      return reply.redirect(`/staff/facilities/${req.params.id}/priorities?status=saved`, 303);
    } catch (err) {
      if (err instanceof ValidationError) return prioritiesPage(req, reply, formValues(req.body), err.fields);
      throw err;
    }
  });

  app.post<{ Params: { id: string } }>('/children/:id/confirm', async (req, reply) => {
    const { reactivated } = await confirmChildFile(deps, req.ctx, req.params.id);
    return reply.redirect(`/children/${req.params.id}?status=${reactivated ? 'reactivated' : 'confirmed'}`, 303);
  });
}
