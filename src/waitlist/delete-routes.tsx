import type { FastifyInstance } from 'fastify';
import type { Deps } from '../context.ts';
import { requireRecentAuth } from '../identity/stepup.ts';
import * as records from '../records/gateway.ts';
import { Csrf, Page, Tag, type PageEnv } from '../web/components.tsx';
import { formatDate } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';

/**
 * Deleting a child file: a section at the foot of the file that leads to its
 * own confirmation page, which says what happens — off the list now,
 * restorable on request (by a second person) for the tenant's retention
 * window, then destroyed for good, backups included (ui.md: dangerous actions
 * on their own page naming the consequence). Works without JavaScript.
 *
 * Deleting is sensitive (whoever holds a stolen session could empty a
 * family's list): the confirmation asks for a fresh authentication (step-up,
 * at most five minutes old) before it is shown and again when it is sent,
 * for parents and staff alike, and brings the person back to it.
 */
export function DeleteFileSection(props: { env: PageEnv; childId: string; title: string }) {
  const r = props.env.m.records;
  return (
    <section aria-labelledby="delete-file">
      <h2 id="delete-file">{r.deleteHeading}</h2>
      <p>{r.deleteLead}</p>
      <p>
        <a class="button button--warning" href={`/children/${props.childId}/delete`}>
          {r.deleteLink}
          <span class="visually-hidden"> — {props.title}</span>
        </a>
      </p>
    </section>
  );
}

export function childFileDeletionRoutes(app: FastifyInstance, deps: Deps) {
  app.get<{ Params: { id: string } }>('/children/:id/delete', async (req, reply) => {
    const ctx = req.ctx;
    const file = await records.readChildFileForDeletion(deps, ctx, req.params.id);
    // After the access check, so that a refusal is the gateway's (audited "not found"), not a re-authentication page.
    requireRecentAuth(ctx, undefined, { returnTo: `/children/${file.id}/delete` });
    const env = pageEnv(req, reply);
    const r = env.m.records;
    const days = ctx.tenant.rules.deletedFileRetentionDays;
    const title = r.deleteTitle(`${file.firstName} ${file.lastName}`);
    return sendPage(
      reply,
      <Page env={env} title={title}>
        <p>
          <a href={`/children/${file.id}`} class="back-link">
            {r.cancel}
          </a>
        </p>
        <h1>{title}</h1>
        <h2>{r.consequencesTitle}</h2>
        <ul>
          <li>{r.consequenceNow(file.reference)}</li>
          <li>{r.consequenceApplications(file.applicationsCount)}</li>
          <li>{r.consequenceRestore(days)}</li>
          <li>{r.consequencePurge(days)}</li>
        </ul>
        <div class="warning-text">
          <span class="warning-text__icon" aria-hidden="true">
            !
          </span>
          <p>
            <span class="visually-hidden">{r.warningLabel} — </span>
            {r.warning}
          </p>
        </div>
        <form method="post" action={`/children/${file.id}/delete`}>
          <Csrf env={env} />
          <p class="actions">
            <button type="submit" class="button button--warning">
              {r.confirm}
            </button>
            <a href={`/children/${file.id}`}>{r.cancel}</a>
          </p>
        </form>
      </Page>,
    );
  });

  app.post<{ Params: { id: string } }>('/children/:id/delete', async (req, reply) => {
    // Back to the confirmation page after re-authenticating: the person sees again what they are about to do.
    requireRecentAuth(req.ctx, undefined, { returnTo: `/children/${encodeURIComponent(req.params.id.slice(0, 64))}/delete` });
    await records.deleteChildFile(deps, req.ctx, req.params.id);
    return reply.redirect('/account?status=deleted', 303);
  });

  app.post<{ Params: { id: string } }>('/children/:id/restore-request', async (req, reply) => {
    try {
      await records.requestChildFileRestore(deps, req.ctx, req.params.id);
    } catch (err) {
      // Past the window the file is no longer the family's to ask for: the account page says so in words.
      if (err instanceof records.RestoreRefused && err.reason === 'retention_expired') return reply.redirect('/account?status=restoreExpired', 303);
      throw err;
    }
    return reply.redirect('/account?status=restoreRequested', 303);
  });
}

/** The family's deleted files on its account page: until when each can come back, and a button to ask. */
export function DeletedFilesSection(props: { env: PageEnv; files: records.DeletedChildView[] }) {
  const { env, files } = props;
  const r = env.m.records;
  if (!files.length) return null;
  return (
    <section aria-labelledby="deleted-files">
      <h2 id="deleted-files">{r.deletedTitle}</h2>
      <p>{r.deletedLead}</p>
      <div class="table-wrap">
        <table>
          <caption class="visually-hidden">{r.deletedTitle}</caption>
          <thead>
            <tr>
              <th scope="col">{r.colChild}</th>
              <th scope="col">{r.colReference}</th>
              <th scope="col">{r.colDeletedAt}</th>
              <th scope="col">{r.colRestoreUntil}</th>
              <th scope="col">{r.colRestore}</th>
            </tr>
          </thead>
          <tbody>
            {files.map((f) => (
              <tr>
                <td>
                  {f.firstName} {f.lastName}
                </td>
                <td>
                  <code>{f.reference}</code>
                </td>
                <td>{formatDate(env.locale, f.deletedAt)}</td>
                <td>{formatDate(env.locale, f.restoreUntil)}</td>
                <td>
                  {f.restoreRequested ? (
                    <Tag tone="blue">{r.restoreAsked}</Tag>
                  ) : (
                    <form method="post" action={`/children/${f.id}/restore-request`} class="inline-form">
                      <Csrf env={env} />
                      <button type="submit" class="link-button" aria-label={r.askRestoreLabel(`${f.firstName} ${f.lastName}`)}>
                        {r.askRestore}
                      </button>
                    </form>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}
