import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Deps } from '../context.ts';
import { renderFacility } from '../directory/routes.tsx';
import { getFacility, staffFacilities } from '../directory/service.ts';
import { AppError, ValidationError } from '../errors.ts';
import * as records from '../records/gateway.ts';
import { Checkbox, Csrf, ErrorSummary, Fieldset, Notice, Page, Pagination, SummaryList, Tag, TextField, type FieldErrors, type PageEnv } from '../web/components.tsx';
import { checkbox, parseBody } from '../web/forms.ts';
import { formatDate } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';
import { requireRecentAuth } from '../identity/stepup.ts';
import { DAYS, parseChildInput } from './child-file.ts';
import { readChildPage } from '../records/child-page.ts';
import { publicFacilityPriorities } from './priorities.ts';
import { ConfirmSection, RankSection, waitlistRulesRoutes } from './rules-routes.tsx';
import { childFileDeletionRoutes, DeletedFilesSection, DeleteFileSection } from './delete-routes.tsx';
import { listParentOffers } from '../records/offers.ts';
import { OffersSection } from './offer-routes.tsx';

type ChildFormValues = Record<string, string | undefined>;

function daysLabel(env: PageEnv, mask: number): string {
  return env.m.child.days.filter((_, i) => mask & (1 << i)).join(', ');
}

function statusTag(env: PageEnv, s: 'active' | 'withdrawn' | 'placed') {
  const tone = s === 'active' ? 'blue' : s === 'placed' ? 'green' : 'grey';
  return <Tag tone={tone}>{env.m.child.status[s]}</Tag>;
}

function ChildForm(props: { env: PageEnv; action: string; values: ChildFormValues; errors?: FieldErrors | undefined; mode: 'create' | 'update'; cancel: string }) {
  const { env, values, errors } = props;
  const c = env.m.child;
  return (
    <form method="post" action={props.action} novalidate>
      <Csrf env={env} />
      <Fieldset legend={c.identity}>
        <TextField env={env} name="firstName" label={c.firstName} value={values.firstName} errors={errors} autocomplete="off" spellcheck={false} />
        <TextField env={env} name="lastName" label={c.lastName} value={values.lastName} errors={errors} autocomplete="off" spellcheck={false} />
        <TextField env={env} name="birthDate" type="date" label={c.birthDate} hint={c.dateHint} value={values.birthDate} errors={errors} width="short" />
        <TextField env={env} name="nirec" label={c.nirec} hint={props.mode === 'update' ? `${c.nirecHint} ${c.nirecKeep}` : c.nirecHint} value={values.nirec} errors={errors} autocomplete="off" spellcheck={false} width="medium" />
      </Fieldset>
      <Fieldset legend={c.needs}>
        <TextField env={env} name="desiredEntryDate" type="date" label={c.desiredEntryDate} hint={c.desiredEntryHint} value={values.desiredEntryDate} errors={errors} width="short" />
        <Fieldset legend={c.daysOfCare} name="daysOfCare" env={env} errors={errors}>
          {DAYS.map((d, i) => (
            <Checkbox name={`day_${d}`} label={c.days[i] ?? d} checked={values[`day_${d}`] === 'on'} />
          ))}
        </Fieldset>
        <Checkbox name="inSubsidisedCare" label={c.inSubsidisedCare} checked={values.inSubsidisedCare === 'on'} />
      </Fieldset>
      <p class="actions">
        <button type="submit" class="button">
          {props.mode === 'create' ? c.create : c.save}
        </button>
        <a href={props.cancel}>{c.cancel}</a>
      </p>
    </form>
  );
}

/** Keeps what the person typed, so nothing is lost when the form comes back with errors. */
function formValues(body: unknown): ChildFormValues {
  const b = (body ?? {}) as Record<string, unknown>;
  const out: ChildFormValues = {};
  for (const k of ['firstName', 'lastName', 'birthDate', 'nirec', 'desiredEntryDate', 'inSubsidisedCare', ...DAYS.map((d) => `day_${d}`)]) {
    if (typeof b[k] === 'string') out[k] = (b[k] as string).slice(0, 200);
  }
  return out;
}

const STATUS_PARAM = z.enum(['created', 'updated', 'applied', 'withdrawn']).optional().catch(undefined);
const CONFIRM_STATUS = z.enum(['confirmed', 'reactivated']).optional().catch(undefined);

export function waitlistRoutes(app: FastifyInstance, deps: Deps) {
  childFileDeletionRoutes(app, deps);
  waitlistRulesRoutes(app, deps);
  /* ----------------------------------------------------------- parent: account */
  app.get<{ Querystring: { status?: string } }>('/account', async (req, reply) => {
    const ctx = req.ctx;
    const status = req.query.status;
    if (!ctx.actor) throw new AppError('signInRequired');
    const children = ctx.actor.emailVerified ? await records.listChildren(deps, ctx, 'parent.children.list') : [];
    const deletedFiles = ctx.actor.emailVerified ? await records.listDeletedChildren(deps, ctx) : [];
    const offers = ctx.actor.emailVerified ? await listParentOffers(deps, ctx) : [];
    const env = pageEnv(req, reply);
    const a = env.m.account;
    return sendPage(
      reply,
      <Page env={env} title={a.title}>
        <h1>{a.title}</h1>
        <p class="lead">{a.lead}</p>
        {status === 'deleted' && <Notice>{env.m.records.deleted(ctx.tenant.rules.deletedFileRetentionDays)}</Notice>}
        {status === 'restoreRequested' && <Notice>{env.m.records.restoreRequested}</Notice>}
        {status === 'restoreExpired' && <Notice>{env.m.console.refused.retention_expired}</Notice>}
        {status === 'assisted' && ctx.actor.assisting && <Notice>{env.m.assisted.started}</Notice>}
        {!ctx.actor.emailVerified && <Notice>{a.unverified}</Notice>}
        <p>
          <a href="/account/access-rights">{env.m.oidc.servicesLink}</a>
        </p>
        <OffersSection env={env} offers={offers} />
        <h2>{a.children}</h2>
        {children.length === 0 ? (
          <p>{a.none}</p>
        ) : (
          <div class="table-wrap">
            <table>
              <thead>
                <tr>
                  <th scope="col">{a.colChild}</th>
                  <th scope="col">{a.colReference}</th>
                  <th scope="col">{a.colBirth}</th>
                  <th scope="col">{a.colEntry}</th>
                  <th scope="col" class="num">
                    {a.colApplications}
                  </th>
                </tr>
              </thead>
              <tbody>
                {children.map((c) => (
                  <tr>
                    <td>
                      <a href={`/children/${c.id}`}>
                        {c.firstName} {c.lastName}
                      </a>
                    </td>
                    <td>
                      <code>{c.reference}</code>
                    </td>
                    <td>{formatDate(env.locale, c.birthDate)}</td>
                    <td>{formatDate(env.locale, c.desiredEntryDate)}</td>
                    <td class="num">{c.applicationsCount}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        {ctx.actor.emailVerified && (
          <p>
            <a class="button" href="/children/new">
              {a.addChild}
            </a>
          </p>
        )}
        <DeletedFilesSection env={env} files={deletedFiles} />
        <h2>{env.m.privacyPages.hubTitle}</h2>
        <p>
          <a href="/account/privacy/access">{env.m.privacyPages.accessLink}</a>
        </p>
        <p>
          <a href="/account/privacy">{env.m.privacyPages.exportTitle}</a>
        </p>
        <h2>{env.m.security.sessionsTitle}</h2>
        <p>
          <a href="/account/sessions">{env.m.security.sessionsLead}</a>
        </p>
        <h2>{env.m.factors.securityTitle}</h2>
        <p>
          <a href="/account/security">{env.m.factors.securityLink}</a>
        </p>
      </Page>,
    );
  });

  /* ------------------------------------------------------- parent: new child */
  const newChildPage = (req: FastifyRequest, reply: FastifyReply, values: ChildFormValues, errors?: FieldErrors) => {
    const env = pageEnv(req, reply);
    const c = env.m.child;
    return sendPage(
      reply,
      <Page env={env} title={c.newTitle} hasErrors={!!errors}>
        <ErrorSummary env={env} errors={errors} />
        <h1>{c.newTitle}</h1>
        <p class="lead">{c.newLead}</p>
        <ChildForm env={env} action="/children/new" values={values} errors={errors} mode="create" cancel="/account" />
      </Page>,
      errors ? 400 : 200,
    );
  };
  app.get('/children/new', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    if (!req.ctx.actor.emailVerified) throw new AppError('emailNotVerified');
    return newChildPage(req, reply, { day_mon: 'on', day_tue: 'on', day_wed: 'on', day_thu: 'on', day_fri: 'on' });
  });
  app.post('/children/new', async (req, reply) => {
    const ctx = req.ctx;
    if (!ctx.actor) throw new AppError('signInRequired');
    try {
      const input = parseChildInput(req.body, ctx.tenant.rules, ctx.now, 'create');
      const { id } = await records.createChildFile(deps, ctx, input);
      return reply.redirect(`/children/${id}?status=created`, 303);
    } catch (err) {
      if (err instanceof ValidationError) return newChildPage(req, reply, formValues(req.body), err.fields);
      throw err;
    }
  });

  /* ------------------------------------------------------ parent: child file */
  app.get<{ Params: { id: string }; Querystring: { status?: string } }>('/children/:id', async (req, reply) => {
    const ctx = req.ctx;
    // The file, its ranks (computed live, read and recorded each time they are shown) and its offers: one gateway transaction.
    const { child, ranks, confirmation, offers } = await readChildPage(deps, ctx, req.params.id);
    const status = STATUS_PARAM.parse(req.query.status);
    const confirmStatus = CONFIRM_STATUS.parse(req.query.status);
    const env = pageEnv(req, reply);
    const c = env.m.child;
    const title = `${child.firstName} ${child.lastName}`;
    return sendPage(
      reply,
      <Page env={env} title={title}>
        <p>
          <a href="/account" class="back-link">
            {c.back}
          </a>
        </p>
        {status && <Notice>{c[status]}</Notice>}
        {confirmStatus && <Notice>{env.m.waitlistRules[confirmStatus]}</Notice>}
        <h1>{title}</h1>
        <ConfirmSection env={env} childId={child.id} state={confirmation} />
        <h2>{c.summary}</h2>
        <SummaryList
          rows={[
            [c.reference, <><code>{child.reference}</code> <span class="hint">{c.referenceHint}</span></>],
            [c.firstName, child.firstName],
            [c.lastName, child.lastName],
            [c.birthDate, formatDate(env.locale, child.birthDate)],
            [c.nirec, child.nirecMasked ?? '—'],
            [c.desiredEntryDate, formatDate(env.locale, child.desiredEntryDate)],
            [c.daysOfCare, daysLabel(env, child.daysOfCare)],
            [c.inSubsidisedCare, child.inSubsidisedCare ? '✓' : '—'],
          ]}
        />
        <p>
          <a href={`/children/${child.id}/edit`}>
            {c.edit}
            <span class="visually-hidden"> — {title}</span>
          </a>
        </p>
        <OffersSection env={env} offers={offers} />
        <h2>{c.applications}</h2>
        <p>
          <a href={`/children/${child.id}/allocation`}>{env.m.allocation.link}</a>
        </p>
        {child.applications.length === 0 ? (
          <p>{c.noApplications}</p>
        ) : (
          <div class="table-wrap">
            <table>
              <thead>
                <tr>
                  <th scope="col">{c.colFacility}</th>
                  <th scope="col">{c.colMunicipality}</th>
                  <th scope="col">{c.colAppliedAt}</th>
                  <th scope="col">{c.colStatus}</th>
                  <th scope="col">{c.colAction}</th>
                </tr>
              </thead>
              <tbody>
                {child.applications.map((a) => (
                  <tr>
                    <td>
                      <a href={`/directory/${a.facilityId}`}>{a.facilityName}</a>
                    </td>
                    <td>{a.municipality}</td>
                    <td>{formatDate(env.locale, a.appliedAt)}</td>
                    <td>{statusTag(env, a.status)}</td>
                    <td>
                      {a.status === 'active' && (
                        <form method="post" action={`/children/${child.id}/applications/${a.id}/withdraw`} class="inline-form">
                          <Csrf env={env} />
                          <button type="submit" class="link-button" aria-label={c.withdrawLabel(a.facilityName)}>
                            {c.withdraw}
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
        <RankSection env={env} ranks={ranks} />
        <p>
          <a class="button button--secondary" href="/directory">
            {c.chooseFacilities}
          </a>
        </p>
        <DeleteFileSection env={env} childId={child.id} title={title} />
      </Page>,
    );
  });

  const editPage = (req: FastifyRequest, reply: FastifyReply, id: string, values: ChildFormValues, errors?: FieldErrors) => {
    const env = pageEnv(req, reply);
    const c = env.m.child;
    return sendPage(
      reply,
      <Page env={env} title={c.editTitle} hasErrors={!!errors}>
        <ErrorSummary env={env} errors={errors} />
        <h1>{c.editTitle}</h1>
        <ChildForm env={env} action={`/children/${id}/edit`} values={values} errors={errors} mode="update" cancel={`/children/${id}`} />
      </Page>,
      errors ? 400 : 200,
    );
  };
  app.get<{ Params: { id: string } }>('/children/:id/edit', async (req, reply) => {
    const child = await records.readChildFile(deps, req.ctx, req.params.id, 'parent.childFile.edit');
    const values: ChildFormValues = {
      firstName: child.firstName,
      lastName: child.lastName,
      birthDate: child.birthDate,
      desiredEntryDate: child.desiredEntryDate,
      inSubsidisedCare: child.inSubsidisedCare ? 'on' : undefined,
    };
    DAYS.forEach((d, i) => {
      if (child.daysOfCare & (1 << i)) values[`day_${d}`] = 'on';
    });
    return editPage(req, reply, child.id, values);
  });
  app.post<{ Params: { id: string } }>('/children/:id/edit', async (req, reply) => {
    const ctx = req.ctx;
    try {
      const input = parseChildInput(req.body, ctx.tenant.rules, ctx.now, 'update');
      // Changing the NIREC is sensitive: a fresh authentication first (step-up), then back to this form.
      if (input.nirec !== null) requireRecentAuth(ctx, undefined, { returnTo: `/children/${req.params.id}/edit` });
      await records.updateChildFile(deps, ctx, req.params.id, input);
      return reply.redirect(`/children/${req.params.id}?status=updated`, 303);
    } catch (err) {
      if (err instanceof ValidationError) {
        // Re-check access before showing the form again: errors must not reveal another family's file.
        await records.readChildFile(deps, ctx, req.params.id, 'parent.childFile.edit');
        return editPage(req, reply, req.params.id, formValues(req.body), err.fields);
      }
      throw err;
    }
  });

  /* ----------------------------------------------------- parent: applications */
  const applySchema = z.object({ childId: z.string({ error: 'childRequired' }).min(1, { error: 'childRequired' }), facilityId: z.string({ error: 'facilityUnknown' }).max(64, { error: 'facilityUnknown' }), siblingAttending: checkbox, parentIsStaff: checkbox });
  app.post('/applications', async (req, reply) => {
    const ctx = req.ctx;
    if (!ctx.actor) throw new AppError('signInRequired');
    const body = (req.body ?? {}) as Record<string, unknown>;
    try {
      const input = parseBody(applySchema, body);
      // One checkbox per declared priority (priority_<kind>); the gateway checks them against the facility's declaration.
      const priorities = Object.entries(body)
        .filter(([k, v]) => k.startsWith('priority_') && v === 'on')
        .map(([k]) => k.slice('priority_'.length, 'priority_'.length + 40));
      await records.addApplication(deps, ctx, input.childId, { facilityId: input.facilityId, siblingAttending: input.siblingAttending, parentIsStaff: input.parentIsStaff, priorities });
      return reply.redirect(`/children/${input.childId}?status=applied`, 303);
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      const facility = typeof body.facilityId === 'string' ? await getFacility(deps, ctx, body.facilityId) : undefined;
      if (!facility) throw err;
      const children = await records.listChildren(deps, ctx, 'parent.children.choose');
      const isAdmin = ctx.actor.memberships.some((m) => m.role === 'tenant_admin');
      const fields = { ...err.fields };
      if (fields.facilityId) {
        fields.childId = fields.facilityId;
        delete fields.facilityId;
      }
      const priorities = await publicFacilityPriorities(deps, ctx, facility.id);
      return renderFacility(req, reply, facility, children, isAdmin, { applyErrors: fields, priorities }, 400);
    }
  });

  app.post<{ Params: { id: string; appId: string } }>('/children/:id/applications/:appId/withdraw', async (req, reply) => {
    await records.withdrawApplication(deps, req.ctx, req.params.id, req.params.appId);
    return reply.redirect(`/children/${req.params.id}?status=withdrawn`, 303);
  });

  /* ------------------------------------------------------------------- staff */
  app.get<{ Querystring: { requested?: string } }>('/staff', async (req, reply) => {
    const ctx = req.ctx;
    if (!ctx.actor) throw new AppError('signInRequired');
    const facilities = await staffFacilities(deps, ctx);
    const env = pageEnv(req, reply);
    const s = env.m.staff;
    return sendPage(
      reply,
      <Page env={env} title={s.title}>
        {req.query.requested && <Notice>{req.query.requested === 'self' ? env.m.grants.requestedForSelf : env.m.grants.requested}</Notice>}
        <h1>{s.title}</h1>
        <p class="lead">{s.lead}</p>
        {facilities.length === 0 ? (
          <p>{s.none}</p>
        ) : (
          <ul class="card-list">
            {facilities.map((f) => (
              <li class="card">
                <h2>{f.name}</h2>
                <p>
                  {env.m.directory.kinds[f.kind]} — {f.municipality}
                </p>
                <p>
                  <a href={`/staff/facilities/${f.id}/candidates`}>
                    {s.candidates}
                    <span class="visually-hidden"> — {f.name}</span>
                  </a>
                </p>
                {ctx.actor!.memberships.some((m) => (m.role === 'facility_director' && m.facilityId === f.id) || m.role === 'tenant_admin') && (
                  <p>
                    <a href={`/staff/facilities/${f.id}/priorities`}>
                      {env.m.waitlistRules.prioritiesLink}
                      <span class="visually-hidden"> — {f.name}</span>
                    </a>
                  </p>
                )}
                <p>
                  <a href={`/staff/facilities/${f.id}/places`}>
                    {env.m.offers.staffPlaces}
                    <span class="visually-hidden"> — {f.name}</span>
                  </a>
                </p>
                <p>
                  <a href={`/staff/facilities/${f.id}/referrals`}>
                    {env.m.offers.staffReferrals}
                    <span class="visually-hidden"> — {f.name}</span>
                  </a>
                </p>
              </li>
            ))}
          </ul>
        )}
        <p>
          <a href="/grants/new">{env.m.grants.newLink}</a>
        </p>
      </Page>,
    );
  });

  app.get<{ Params: { id: string }; Querystring: { page?: string } }>('/staff/facilities/:id/candidates', async (req, reply) => {
    const ctx = req.ctx;
    const page = z.coerce.number().int().min(1).max(100000).catch(1).parse(req.query.page);
    const result = await records.listCandidates(deps, ctx, req.params.id, page);
    const facility = await getFacility(deps, ctx, req.params.id);
    if (!facility) throw new AppError('notFound');
    const env = pageEnv(req, reply);
    const s = env.m.staff;
    const pages = Math.max(1, Math.ceil(result.total / 50));
    return sendPage(
      reply,
      <Page env={env} title={s.candidatesTitle(facility.name)}>
        <p>
          <a href="/staff" class="back-link">
            {s.back}
          </a>
        </p>
        <h1>{s.candidatesTitle(facility.name)}</h1>
        <p class="lead">{s.candidatesLead}</p>
        {result.rows.length === 0 ? (
          <p>{s.noCandidates}</p>
        ) : (
          <div class="table-wrap">
            <table>
              <caption class="visually-hidden">{s.candidatesTitle(facility.name)}</caption>
              <thead>
                <tr>
                  <th scope="col" class="num">
                    {s.colRank}
                  </th>
                  <th scope="col">{s.colReference}</th>
                  <th scope="col">{s.colAgeGroup}</th>
                  <th scope="col">{s.colEntry}</th>
                  <th scope="col">{s.colCategory}</th>
                  <th scope="col">{s.colAppliedAt}</th>
                </tr>
              </thead>
              <tbody>
                {result.rows.map((r) => (
                  <tr>
                    <td class="num">{r.rank}</td>
                    <td>
                      <code>{r.reference}</code>
                    </td>
                    <td>{s.ageGroups[r.ageGroup]}</td>
                    <td>{formatDate(env.locale, r.desiredEntryDate)}</td>
                    <td>{s.categories[r.category]}</td>
                    <td>{formatDate(env.locale, r.appliedAt)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        <Pagination env={env} page={Math.min(page, pages)} pages={pages} href={(p) => `/staff/facilities/${facility.id}/candidates?page=${p}`} />
      </Page>,
    );
  });
}
