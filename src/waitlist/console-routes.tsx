import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { decide } from '../access/decide.ts';
import type { Deps } from '../context.ts';
import { AppError, ValidationError } from '../errors.ts';
import * as records from '../records/gateway.ts';
import { Csrf, ErrorSummary, Notice, Page, SummaryList, Tag, TextField, type FieldErrors, type PageEnv } from '../web/components.tsx';
import { formatDate, formatDateTime } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';

/**
 * The programme's console for child files: find a file by NIREC,
 * read its history, ask for a deleted file back, and — for a second
 * administrator — decide those requests. Every read goes through the records
 * gateway, which decides, audits and trims; these pages only lay out what it
 * returns. The NIREC travels in a POST body only: never in an address, so
 * never in a proxy's or a browser's history, nor in the request log.
 */

type Refusal = records.RestoreRefusalReason | 'nirec_duplicate';

/** Each refusal its own status: the reader learns what went wrong, and that nothing changed. */
const REFUSAL_STATUS: Record<Refusal, number> = { malformed_id: 400, same_person: 403, already_decided: 409, retention_expired: 410, nirec_duplicate: 409 };

function refusalOf(err: unknown): Refusal | null {
  if (err instanceof records.RestoreRefused) return err.reason;
  if (err instanceof ValidationError && err.fields.nirec === 'nirecDuplicate') return 'nirec_duplicate';
  return null;
}

function refusedPage(req: FastifyRequest, reply: FastifyReply, reason: Refusal, back: { href: string; label: string } | null) {
  const env = pageEnv(req, reply);
  const c = env.m.console;
  return sendPage(
    reply,
    <Page env={env} title={c.refusedTitle} hasErrors>
      <h1>{c.refusedTitle}</h1>
      <p>{c.refused[reason]}</p>
      <p>{c.nothingChanged}</p>
      {back && (
        <p>
          <a href={back.href}>{back.label}</a>
        </p>
      )}
    </Page>,
    REFUSAL_STATUS[reason],
  );
}

function who(env: PageEnv, w: records.Who): string {
  return w.kind === 'agent' ? w.email : env.m.console.who[w.kind];
}

function daysLabel(env: PageEnv, mask: number): string {
  return env.m.child.days.filter((_, i) => mask & (1 << i)).join(', ') || '—';
}

/** The lookup form; the form page itself opens nothing, but only those who may look up see it. */
function LookupForm(props: { env: PageEnv; value?: string | undefined; errors?: FieldErrors | undefined }) {
  const c = props.env.m.console;
  return (
    <form method="post" action="/admin/files" novalidate>
      <Csrf env={props.env} />
      <TextField env={props.env} name="nirec" label={c.nirec} hint={c.nirecHint} value={props.value} errors={props.errors} autocomplete="off" spellcheck={false} width="medium" />
      <button type="submit" class="button">
        {c.search}
      </button>
    </form>
  );
}

function RestoreRequestButton(props: { env: PageEnv; childId: string; reference: string }) {
  const c = props.env.m.console;
  return (
    <form method="post" action={`/admin/files/${props.childId}/restore-request`} class="inline-form">
      <Csrf env={props.env} />
      <button type="submit" class="link-button" aria-label={c.requestRestoreLabel(props.reference)}>
        {c.requestRestore}
      </button>
    </form>
  );
}

export function fileConsoleRoutes(app: FastifyInstance, deps: Deps) {
  const mayLookUp = (req: FastifyRequest) => {
    const d = decide(req.ctx.actor, 'waitlist.childFile.lookupByNirec', { type: 'tenant' }, req.ctx.now);
    if (!d.allowed) throw new AppError(req.ctx.actor ? 'forbidden' : 'signInRequired');
  };
  const retention = (req: FastifyRequest) => req.ctx.tenant.rules.deletedFileRetentionDays * 86_400_000;

  /* ------------------------------------------------------------- look-up */
  const lookupPage = (req: FastifyRequest, reply: FastifyReply, opts: { value?: string; errors?: FieldErrors; matches?: records.NirecMatch[] } = {}) => {
    const env = pageEnv(req, reply);
    const c = env.m.console;
    const now = req.ctx.now.getTime();
    const isAdmin = !!env.actor?.memberships.some((m) => m.role === 'tenant_admin');
    return sendPage(
      reply,
      <Page env={env} title={c.lookupTitle} hasErrors={!!opts.errors}>
        <ErrorSummary env={env} errors={opts.errors} />
        <h1>{c.lookupTitle}</h1>
        <p class="lead">{c.lookupLead}</p>
        {isAdmin && (
          <p>
            <a href="/admin/restores">{c.restoresLink}</a>
          </p>
        )}
        <LookupForm env={env} value={opts.value} errors={opts.errors} />
        {opts.matches && (
          <>
            <h2>{c.results}</h2>
            <p role="status">{opts.matches.length ? c.matches(opts.matches.length) : c.noMatch}</p>
            {opts.matches.length > 0 && (
              <div class="table-wrap">
                <table>
                  <caption class="visually-hidden">{c.results}</caption>
                  <thead>
                    <tr>
                      <th scope="col">{c.colReference}</th>
                      <th scope="col">{c.colChild}</th>
                      <th scope="col">{c.colBirth}</th>
                      <th scope="col">{c.colNirec}</th>
                      <th scope="col">{c.colStatus}</th>
                      <th scope="col">{c.colDeletedAt}</th>
                      <th scope="col">{c.colRestoreUntil}</th>
                      <th scope="col">{c.colActions}</th>
                    </tr>
                  </thead>
                  <tbody>
                    {opts.matches.map((m) => {
                      const until = m.deletedAt ? new Date(m.deletedAt.getTime() + retention(req)) : null;
                      const restorable = !!until && until.getTime() > now;
                      return (
                        <tr>
                          <td>
                            <code>{m.reference}</code>
                          </td>
                          <td>
                            {m.firstName} {m.lastName}
                          </td>
                          <td>{formatDate(env.locale, m.birthDate)}</td>
                          <td>{m.nirecMasked ?? '—'}</td>
                          <td>{m.status === 'active' ? <Tag tone="green">{c.status.active}</Tag> : <Tag tone={restorable ? 'orange' : 'grey'}>{restorable ? c.status.deleted : c.status.expired}</Tag>}</td>
                          <td>{m.deletedAt ? formatDate(env.locale, m.deletedAt) : '—'}</td>
                          <td>{until ? formatDate(env.locale, until) : '—'}</td>
                          <td>
                            <a href={`/admin/files/${m.id}/history`} aria-label={c.historyLabel(m.reference)}>
                              {c.history}
                            </a>
                            {restorable && (
                              <>
                                {' '}
                                <RestoreRequestButton env={env} childId={m.id} reference={m.reference} />
                              </>
                            )}
                          </td>
                        </tr>
                      );
                    })}
                  </tbody>
                </table>
              </div>
            )}
          </>
        )}
      </Page>,
      opts.errors ? 400 : 200,
    );
  };

  app.get('/admin/files', async (req, reply) => {
    mayLookUp(req);
    return lookupPage(req, reply);
  });

  app.post('/admin/files', async (req, reply) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const raw = typeof body.nirec === 'string' ? body.nirec : '';
    try {
      const matches = await records.lookupChildFileByNirec(deps, req.ctx, raw);
      // The NIREC typed is not written back into the page: the masked one in the results is enough.
      return lookupPage(req, reply, { matches });
    } catch (err) {
      if (err instanceof ValidationError) return lookupPage(req, reply, { value: raw.slice(0, 64), errors: err.fields });
      throw err;
    }
  });

  /* ------------------------------------------------------------- history */
  app.get<{ Params: { id: string }; Querystring: { requested?: string } }>('/admin/files/:id/history', async (req, reply) => {
    const versions = await records.readChildFileHistory(deps, req.ctx, req.params.id);
    const env = pageEnv(req, reply);
    const c = env.m.console;
    const ch = env.m.child;
    const last = versions.at(-1)!;
    const deleted = last.change === 'delete';
    const until = deleted ? new Date(last.changedAt.getTime() + retention(req)) : null;
    const restorable = !!until && until.getTime() > req.ctx.now.getTime();
    const title = c.historyTitle(last.reference);
    return sendPage(
      reply,
      <Page env={env} title={title}>
        <p>
          <a href="/admin/files" class="back-link">
            {c.backToLookup}
          </a>
        </p>
        {req.query.requested === '1' && <Notice>{c.restoreRequested}</Notice>}
        <h1>{title}</h1>
        <p class="lead">{c.historyLead}</p>
        <SummaryList
          rows={[
            [c.currentStatus, deleted ? <Tag tone={restorable ? 'orange' : 'grey'}>{restorable ? c.status.deleted : c.status.expired}</Tag> : <Tag tone="green">{c.status.active}</Tag>],
            ...(deleted ? ([[c.colDeletedAt, formatDate(env.locale, last.changedAt)], [c.colRestoreUntil, formatDate(env.locale, until!)]] as [string, string][]) : []),
          ]}
        />
        {restorable && (
          <p>
            <RestoreRequestButton env={env} childId={req.params.id} reference={last.reference} />
          </p>
        )}
        <h2>{c.versions}</h2>
        <div class="table-wrap">
          <table>
            <caption class="visually-hidden">{c.versions}</caption>
            <thead>
              <tr>
                <th scope="col" class="num">
                  {c.colVersion}
                </th>
                <th scope="col">{c.colWhen}</th>
                <th scope="col">{c.colWho}</th>
                <th scope="col">{c.colChange}</th>
                <th scope="col">{c.colFields}</th>
              </tr>
            </thead>
            <tbody>
              {versions.map((v) => (
                <tr>
                  <td class="num">
                    <a href={`#v${v.version}`}>{v.version}</a>
                  </td>
                  <td>{formatDateTime(env.locale, v.changedAt)}</td>
                  <td>{who(env, v.changedByWho)}</td>
                  <td>{c.changes[v.change]}</td>
                  <td>{v.changedFields.map((f) => c.fields[f] ?? f).join(', ')}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        <h2>{c.contents}</h2>
        {versions.map((v) => (
          <section aria-labelledby={`v${v.version}`}>
            <h3 id={`v${v.version}`} tabindex={-1}>
              {c.versionTitle(v.version, formatDateTime(env.locale, v.changedAt))}
            </h3>
            <SummaryList
              rows={[
                [ch.firstName, v.firstName],
                [ch.lastName, v.lastName],
                [ch.birthDate, formatDate(env.locale, v.birthDate)],
                [ch.nirec, v.nirecMasked ?? '—'],
                [ch.desiredEntryDate, formatDate(env.locale, v.desiredEntryDate)],
                [ch.daysOfCare, daysLabel(env, v.daysOfCare)],
                [ch.inSubsidisedCare, v.inSubsidisedCare ? '✓' : '—'],
              ]}
            />
          </section>
        ))}
      </Page>,
    );
  });

  app.post<{ Params: { id: string } }>('/admin/files/:id/restore-request', async (req, reply) => {
    try {
      await records.requestChildFileRestore(deps, req.ctx, req.params.id);
    } catch (err) {
      const reason = refusalOf(err);
      if (reason) return refusedPage(req, reply, reason, { href: '/admin/files', label: pageEnv(req, reply).m.console.backToLookup });
      throw err;
    }
    return reply.redirect(`/admin/files/${req.params.id}/history?requested=1`, 303);
  });

  /* ------------------------------------------------ restore requests: decide */
  app.get<{ Querystring: { done?: string } }>('/admin/restores', async (req, reply) => {
    const rows = await records.listRestoreRequests(deps, req.ctx);
    const env = pageEnv(req, reply);
    const c = env.m.console;
    const done = req.query.done === 'approved' ? c.approved : req.query.done === 'rejected' ? c.rejected : null;
    return sendPage(
      reply,
      <Page env={env} title={c.restoresTitle}>
        {done && <Notice>{done}</Notice>}
        <h1>{c.restoresTitle}</h1>
        <p class="lead">{c.restoresLead}</p>
        <p>
          <a href="/admin/files">{c.lookupTitle}</a>
        </p>
        {rows.length === 0 ? (
          <p>{c.noRequests}</p>
        ) : (
          <div class="table-wrap">
            <table>
              <caption class="visually-hidden">{c.restoresTitle}</caption>
              <thead>
                <tr>
                  <th scope="col">{c.colReference}</th>
                  <th scope="col">{c.colRequestedBy}</th>
                  <th scope="col">{c.colRequestedAt}</th>
                  <th scope="col">{c.colDeletedAt}</th>
                  <th scope="col">{c.colRestoreUntil}</th>
                  <th scope="col">{c.colActions}</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((r) => (
                  <tr>
                    <td>
                      <code>{r.reference}</code>
                    </td>
                    <td>{who(env, r.requestedByWho)}</td>
                    <td>{formatDateTime(env.locale, r.requestedAt)}</td>
                    <td>{formatDate(env.locale, r.deletedAt)}</td>
                    <td>{formatDate(env.locale, r.restoreUntil)}</td>
                    <td>
                      <a href={`/admin/restores/${r.id}`} aria-label={c.reviewLabel(r.reference)}>
                        {c.review}
                      </a>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Page>,
    );
  });

  const back = (req: FastifyRequest, reply: FastifyReply) => ({ href: '/admin/restores', label: pageEnv(req, reply).m.console.backToRestores });

  app.get<{ Params: { id: string } }>('/admin/restores/:id', async (req, reply) => {
    let r: records.RestoreRequestView;
    try {
      r = await records.readRestoreRequest(deps, req.ctx, req.params.id);
    } catch (err) {
      const reason = refusalOf(err);
      if (reason) return refusedPage(req, reply, reason, back(req, reply));
      throw err;
    }
    const env = pageEnv(req, reply);
    const c = env.m.console;
    const own = r.requestedBy === env.actor?.accountId;
    const title = c.reviewTitle(r.reference);
    return sendPage(
      reply,
      <Page env={env} title={title}>
        <p>
          <a href="/admin/restores" class="back-link">
            {c.backToRestores}
          </a>
        </p>
        <h1>{title}</h1>
        <SummaryList
          rows={[
            [c.colReference, <code>{r.reference}</code>],
            [c.colRequestedBy, who(env, r.requestedByWho)],
            [c.colRequestedAt, formatDateTime(env.locale, r.requestedAt)],
            [c.colDeletedAt, formatDate(env.locale, r.deletedAt)],
            [c.colRestoreUntil, formatDate(env.locale, r.restoreUntil)],
          ]}
        />
        <p>
          <a href={`/admin/files/${r.childId}/history`} aria-label={c.historyLabel(r.reference)}>
            {c.history}
          </a>
        </p>
        {own ? (
          <Notice>{c.ownRequest}</Notice>
        ) : (
          <>
            <p>
              <strong>{c.consequence}</strong>
            </p>
            <div class="actions">
              <form method="post" action={`/admin/restores/${r.id}/approve`} class="inline-form">
                <Csrf env={env} />
                <button type="submit" class="button">
                  {c.approve}
                </button>
              </form>
              <form method="post" action={`/admin/restores/${r.id}/reject`} class="inline-form">
                <Csrf env={env} />
                <button type="submit" class="button button--secondary">
                  {c.reject}
                </button>
              </form>
            </div>
          </>
        )}
      </Page>,
    );
  });

  for (const decision of ['approve', 'reject'] as const) {
    app.post<{ Params: { id: string } }>(`/admin/restores/:id/${decision}`, async (req, reply) => {
      try {
        await records.decideChildFileRestore(deps, req.ctx, req.params.id, decision);
      } catch (err) {
        const reason = refusalOf(err);
        if (reason) return refusedPage(req, reply, reason, back(req, reply));
        throw err;
      }
      return reply.redirect(`/admin/restores?done=${decision === 'approve' ? 'approved' : 'rejected'}`, 303);
    });
  }
}
