import type { FastifyInstance } from 'fastify';
import type { Deps } from '../context.ts';
import * as records from '../records/gateway.ts';
import { Csrf, Page, type PageEnv } from '../web/components.tsx';
import { pageEnv, sendPage } from '../web/render.tsx';

/**
 * Deleting a child file: a section at the foot of the file that leads to its
 * own confirmation page, which says what happens — off the list now,
 * restorable on request (by a second person) for the tenant's retention
 * window, then destroyed for good, backups included (ui.md: dangerous actions
 * on their own page naming the consequence). Works without JavaScript.
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
    await records.deleteChildFile(deps, req.ctx, req.params.id);
    return reply.redirect('/account?status=deleted', 303);
  });
}
