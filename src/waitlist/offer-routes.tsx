import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { decide } from '../access/decide.ts';
import { accessReason } from '../detection/protected.ts';
import type { Deps } from '../context.ts';
import { getFacility } from '../directory/service.ts';
import { AppError, ValidationError } from '../errors.ts';
import * as offers from '../records/offers.ts';
import { Csrf, ErrorSummary, Notice, Page, SummaryList, Tag, TextField, type FieldErrors, type PageEnv } from '../web/components.tsx';
import { dateField, parseBody } from '../web/forms.ts';
import { formatDate, formatDateTime } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';

/**
 * The referral's pages. Facility staff: places and vacancies per age group
 * (declaring refers at once), the facility's referrals (identities for
 * accepted offers only), and — the director — the start of care. Parents:
 * their offers on the account and child pages, and the page where they
 * accept or refuse one. Every read and change goes through
 * src/records/offers.ts, which decides, audits and trims.
 */

/** Each refusal its own status: the reader learns what went wrong, and that nothing changed. */
const REFUSAL_STATUS: Record<offers.OfferRefusalReason, number> = { deadline_passed: 410, already_answered: 409, not_accepted: 409 };

function refusedPage(req: FastifyRequest, reply: FastifyReply, reason: offers.OfferRefusalReason, back: { href: string; label: string }) {
  const env = pageEnv(req, reply);
  const o = env.m.offers;
  return sendPage(
    reply,
    <Page env={env} title={o.refusedTitle} hasErrors>
      <h1>{o.refusedTitle}</h1>
      <p>{o.refusedReason[reason]}</p>
      <p>{o.nothingChanged}</p>
      <p>
        <a href={back.href}>{back.label}</a>
      </p>
    </Page>,
    REFUSAL_STATUS[reason],
  );
}

function statusTag(env: PageEnv, s: offers.ParentOfferView['status']) {
  const tone = s === 'pending' ? 'orange' : s === 'accepted' || s === 'started' ? 'green' : 'grey';
  return <Tag tone={tone}>{env.m.offers.status[s]}</Tag>;
}

/** The parent's offers, on the account page and on the child's page. */
export function OffersSection(props: { env: PageEnv; offers: offers.ParentOfferView[] }) {
  const { env } = props;
  const o = env.m.offers;
  if (!props.offers.length) return null;
  return (
    <section aria-labelledby="offers-title">
      <h2 id="offers-title">{o.parentTitle}</h2>
      <p>{o.parentLead}</p>
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">{o.colReference}</th>
              <th scope="col">{o.colFacility}</th>
              <th scope="col">{o.colStatus}</th>
              <th scope="col">{o.colDeadline}</th>
              <th scope="col">{env.m.child.colAction}</th>
            </tr>
          </thead>
          <tbody>
            {props.offers.map((x) => (
              <tr>
                <td>
                  <code>{x.reference}</code>
                </td>
                <td>
                  {x.facilityName} ({x.municipality})
                </td>
                <td>{statusTag(env, x.status)}</td>
                <td>{x.status === 'pending' ? formatDateTime(env.locale, x.deadline) : '—'}</td>
                <td>
                  <a href={`/offers/${x.id}`} aria-label={o.seeLabel(x.facilityName)}>
                    {o.see}
                  </a>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}

const count = (key: 'vacanciesInvalid') =>
  z
    .string({ error: key })
    .regex(/^\d{1,4}$/, { error: key })
    .transform(Number);

const vacanciesSchema = z.object({ infant: count('vacanciesInvalid'), toddler: count('vacanciesInvalid') });
const startSchema = z.object({ startDate: dateField });
const DONE = z.enum(['declared', 'started']).optional().catch(undefined);

export function offerRoutes(app: FastifyInstance, deps: Deps) {
  /* ------------------------------------------------- staff: places */
  const placesPage = async (req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply, opts: { values?: Record<string, string>; errors?: FieldErrors; notice?: string } = {}) => {
    const rows = await offers.readPlaces(deps, req.ctx, req.params.id);
    const facility = await getFacility(deps, req.ctx, req.params.id);
    if (!facility) throw new AppError('notFound');
    const env = pageEnv(req, reply);
    const o = env.m.offers;
    const groups = env.m.staff.ageGroups;
    const title = o.placesTitle(facility.name);
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
        <p class="lead">{o.placesLead}</p>
        <div class="table-wrap">
          <table>
            <caption class="visually-hidden">{title}</caption>
            <thead>
              <tr>
                <th scope="col">{o.colAgeGroup}</th>
                <th scope="col" class="num">
                  {o.colPlaces}
                </th>
                <th scope="col" class="num">
                  {o.colPending}
                </th>
                <th scope="col" class="num">
                  {o.colVacancies}
                </th>
                <th scope="col">{o.colUpdated}</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r) => (
                <tr>
                  <th scope="row">{groups[r.ageGroup]}</th>
                  <td class="num">{r.places}</td>
                  <td class="num">{r.pending}</td>
                  <td class="num">{r.vacancies}</td>
                  <td>{r.updatedAt.getTime() > 0 ? formatDateTime(env.locale, r.updatedAt) : '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        <h2>{o.vacancies}</h2>
        <form method="post" action={`/staff/facilities/${facility.id}/vacancies`} novalidate>
          <Csrf env={env} />
          {rows.map((r) => (
            <TextField env={env} name={r.ageGroup} label={`${o.vacancies} — ${groups[r.ageGroup]}`} hint={o.vacanciesHint} value={opts.values?.[r.ageGroup] ?? String(r.vacancies)} errors={opts.errors} width="short" autocomplete="off" />
          ))}
          <button type="submit" class="button">
            {o.declare}
          </button>
        </form>
        <p>
          <a href={`/staff/facilities/${facility.id}/referrals`}>{o.staffReferrals}</a>
        </p>
      </Page>,
      opts.errors ? 400 : 200,
    );
  };

  app.get<{ Params: { id: string }; Querystring: { offered?: string; open?: string } }>('/staff/facilities/:id/places', async (req, reply) => {
    const offered = z.coerce.number().int().min(0).max(10000).optional().catch(undefined).parse(req.query.offered);
    const open = z.coerce.number().int().min(0).max(10000).optional().catch(undefined).parse(req.query.open);
    const notice = offered !== undefined && open !== undefined ? pageEnv(req, reply).m.offers.declared(offered, open) : undefined;
    return placesPage(req, reply, notice ? { notice } : {});
  });

  app.post<{ Params: { id: string } }>('/staff/facilities/:id/vacancies', async (req, reply) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    try {
      const input = parseBody(vacanciesSchema, body);
      const r = await offers.declareVacancies(deps, req.ctx, req.params.id, input);
      return reply.redirect(`/staff/facilities/${req.params.id}/places?offered=${r.offered}&open=${r.open}`, 303);
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      const values: Record<string, string> = {};
      for (const k of ['infant', 'toddler']) if (typeof body[k] === 'string') values[k] = (body[k] as string).slice(0, 20);
      // The page reads the places again, so an error never shows another facility's.
      return placesPage(req, reply, { values, errors: err.fields });
    }
  });

  /* ---------------------------------------------- staff: referrals */
  const referralsPage = async (req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply, opts: { errors?: FieldErrors; notice?: string; open?: { offerId: string; reason: string } } = {}) => {
    const rows = await offers.listReferrals(deps, req.ctx, req.params.id, opts.open);
    const facility = await getFacility(deps, req.ctx, req.params.id);
    if (!facility) throw new AppError('notFound');
    const env = pageEnv(req, reply);
    const o = env.m.offers;
    const isDirector = decide(req.ctx.actor, 'waitlist.offer.confirmStart', { type: 'facility', facilityId: facility.id }, req.ctx.now).allowed;
    const title = o.referralsTitle(facility.name);
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
        <p class="lead">{o.referralsLead}</p>
        {!isDirector && <p>{o.directorOnly}</p>}
        <p>
          <a href={`/staff/facilities/${facility.id}/places`}>{o.staffPlaces}</a>
        </p>
        {isDirector && (
          <p>
            <a href={`/staff/facilities/${facility.id}/api-keys`}>{env.m.apiKeys.link}</a>
          </p>
        )}
        {rows.length === 0 ? (
          <p>{o.noReferrals}</p>
        ) : (
          <div class="table-wrap">
            <table>
              <caption class="visually-hidden">{title}</caption>
              <thead>
                <tr>
                  <th scope="col">{o.colReference}</th>
                  <th scope="col">{o.colAgeGroup}</th>
                  <th scope="col">{o.colStatus}</th>
                  <th scope="col">{o.colOffered}</th>
                  <th scope="col">{o.colDeadline}</th>
                  <th scope="col">{o.colChild}</th>
                  <th scope="col">{o.colParent}</th>
                  <th scope="col">{o.colStart}</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((r) => (
                  <tr>
                    <td>
                      <code>{r.reference}</code>
                    </td>
                    <td>{env.m.staff.ageGroups[r.ageGroup]}</td>
                    <td>{statusTag(env, r.status)}</td>
                    <td>{formatDateTime(env.locale, r.offeredAt)}</td>
                    <td>{r.status === 'pending' ? formatDateTime(env.locale, r.deadline) : '—'}</td>
                    <td>
                      {r.identity ? (
                        <>
                          {r.identity.firstName} {r.identity.lastName}
                          <br />
                          <span class="hint">{o.born(formatDate(env.locale, r.identity.birthDate))}</span>
                        </>
                      ) : r.deleted ? (
                        <span class="hint">{o.fileDeleted}</span>
                      ) : r.protected ? (
                        <form method="post" action={`/staff/facilities/${facility.id}/referrals/${r.id}/identity`} class="inline-form" novalidate>
                          <Csrf env={env} />
                          <p class="hint">{o.protectedFile}</p>
                          <TextField env={env} name={`reason-${r.id}`} label={o.protectedReason} errors={opts.errors} width="medium" />
                          <button type="submit" class="button button--secondary" aria-label={o.protectedOpenLabel(r.reference)}>
                            {o.protectedOpen}
                          </button>
                        </form>
                      ) : (
                        <span class="hint">{o.hidden}</span>
                      )}
                    </td>
                    <td>
                      {r.identity ? (
                        <>
                          {[r.identity.parentFirstName, r.identity.parentLastName].filter(Boolean).join(' ')}
                          {(r.identity.parentFirstName || r.identity.parentLastName) && <br />}
                          <a href={`mailto:${r.identity.email}`}>{r.identity.email}</a>
                          {r.identity.phone && (
                            <>
                              <br />
                              {r.identity.phone}
                            </>
                          )}
                        </>
                      ) : (
                        '—'
                      )}
                    </td>
                    <td>
                      {r.startDate ? (
                        formatDate(env.locale, r.startDate)
                      ) : r.status === 'accepted' && isDirector && !r.deleted ? (
                        <form method="post" action={`/staff/facilities/${facility.id}/referrals/${r.id}/start`} class="inline-form" novalidate>
                          <Csrf env={env} />
                          <TextField env={env} name={`startDate-${r.id}`} type="date" label={o.startDate} width="short" />
                          <button type="submit" class="button button--secondary" aria-label={o.confirmStartLabel(r.reference)}>
                            {o.confirmStart}
                          </button>
                        </form>
                      ) : (
                        '—'
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Page>,
      opts.errors ? 400 : 200,
    );
  };

  app.get<{ Params: { id: string }; Querystring: { done?: string } }>('/staff/facilities/:id/referrals', async (req, reply) => {
    const done = DONE.parse(req.query.done);
    return referralsPage(req, reply, done === 'started' ? { notice: pageEnv(req, reply).m.offers.started } : {});
  });

  // A protected file's identity, for one accepted offer, with a reason: the page again, that identity shown (and alerted).
  app.post<{ Params: { id: string; offerId: string } }>('/staff/facilities/:id/referrals/:offerId/identity', async (req, reply) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const field = `reason-${req.params.offerId}`;
    const reason = accessReason(body[field] ?? body.reason);
    if (!reason) {
      // Only someone who may see the referrals learns that a reason was missing: the page is read (and checked) again.
      return referralsPage(req, reply, { errors: { [/^[0-9a-f-]{36}$/i.test(req.params.offerId) ? field : 'reason']: 'reasonRequired' } });
    }
    return referralsPage(req, reply, { open: { offerId: req.params.offerId, reason } });
  });

  app.post<{ Params: { id: string; offerId: string } }>('/staff/facilities/:id/referrals/:offerId/start', async (req, reply) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    // Each row's field carries its offer's id (one page, many forms): read it under the common name.
    const field = `startDate-${req.params.offerId}`;
    try {
      const input = parseBody(startSchema, { startDate: body[field] ?? body.startDate });
      await offers.confirmStart(deps, req.ctx, req.params.id, req.params.offerId, input.startDate);
      return reply.redirect(`/staff/facilities/${req.params.id}/referrals?done=started`, 303);
    } catch (err) {
      if (err instanceof offers.OfferRefused) return refusedPage(req, reply, err.reason, { href: `/staff/facilities/${encodeURIComponent(req.params.id)}/referrals`, label: pageEnv(req, reply).m.offers.staffReferrals });
      if (!(err instanceof ValidationError)) throw err;
      // Only someone who may confirm learns that the date was wrong: the page is checked again first.
      const d = decide(req.ctx.actor, 'waitlist.offer.confirmStart', { type: 'facility', facilityId: req.params.id }, req.ctx.now);
      if (!d.allowed) throw new AppError(req.ctx.actor ? 'forbidden' : 'signInRequired');
      return referralsPage(req, reply, { errors: { [/^[0-9a-f-]{36}$/i.test(req.params.offerId) ? field : 'startDate']: err.fields.startDate ?? 'dateInvalid' } });
    }
  });

  /* ------------------------------------------------- parent: one offer */
  app.get<{ Params: { id: string }; Querystring: { done?: string } }>('/offers/:id', async (req, reply) => {
    const x = await offers.readOffer(deps, req.ctx, req.params.id);
    const env = pageEnv(req, reply);
    const o = env.m.offers;
    const rules = req.ctx.tenant.rules.offers;
    const done = z.enum(['accepted', 'refused']).optional().catch(undefined).parse(req.query.done);
    const title = o.offerTitle(x.facilityName);
    const open = x.status === 'pending' && x.deadline > req.ctx.now;
    // An agent helping the parent reads the offer with them; the answer is the parent's own (access/actions.ts).
    const byAgent = !!req.ctx.actor?.assisting;
    return sendPage(
      reply,
      <Page env={env} title={title}>
        <p>
          <a href="/account" class="back-link">
            {o.back}
          </a>
        </p>
        {done && <Notice>{o[done]}</Notice>}
        <h1>{title}</h1>
        {open && <p class="lead">{o.offerLead(x.childFirstName, formatDateTime(env.locale, x.deadline))}</p>}
        <SummaryList
          rows={[
            [o.offerFor, <>{x.childFirstName} (<code>{x.reference}</code>)</>],
            [o.colFacility, <a href={`/directory/${x.facilityId}`}>{`${x.facilityName} (${x.municipality})`}</a>],
            [o.ageGroup, env.m.staff.ageGroups[x.ageGroup]],
            [o.colStatus, statusTag(env, x.status)],
            [o.colOffered, formatDateTime(env.locale, x.offeredAt)],
            [o.colDeadline, formatDateTime(env.locale, x.deadline)],
            ...(x.startDate ? ([[o.colStart, formatDate(env.locale, x.startDate)]] as [string, string][]) : []),
          ]}
        />
        {open && byAgent && <p>{o.answerIsTheParents}</p>}
        {open && !byAgent && (
          <>
            <h2>{o.accept}</h2>
            <p>{o.acceptConsequence(rules.otherApplicationsOnAcceptance === 'keep')}</p>
            <form method="post" action={`/offers/${x.id}/accept`}>
              <Csrf env={env} />
              <button type="submit" class="button">
                {o.accept}
              </button>
            </form>
            <h2>{o.refuse}</h2>
            <p>{o.refuseConsequence(rules.refusalsAllowed ?? -1)}</p>
            <form method="post" action={`/offers/${x.id}/refuse`}>
              <Csrf env={env} />
              <button type="submit" class="button button--secondary">
                {o.refuse}
              </button>
            </form>
          </>
        )}
      </Page>,
    );
  });

  for (const answer of ['accept', 'refuse'] as const) {
    app.post<{ Params: { id: string } }>(`/offers/:id/${answer}`, async (req, reply) => {
      try {
        await offers.answerOffer(deps, req.ctx, req.params.id, answer);
      } catch (err) {
        if (err instanceof offers.OfferRefused) return refusedPage(req, reply, err.reason, { href: '/account', label: pageEnv(req, reply).m.offers.back });
        throw err;
      }
      return reply.redirect(`/offers/${req.params.id}?done=${answer === 'accept' ? 'accepted' : 'refused'}`, 303);
    });
  }
}
