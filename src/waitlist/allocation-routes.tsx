import type { FastifyInstance } from 'fastify';
import type { Deps } from '../context.ts';
import { LAST_ADMITTED_MIN_GROUP, readAllocationExplanation, type ChoiceExplanation } from '../records/allocation.ts';
import { Notice, Page, SummaryList, Tag, type PageEnv } from '../web/components.tsx';
import { formatDate } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';

function categoryName(env: PageEnv, n: number | null): string {
  const names = env.m.allocation.categories as Record<number, string>;
  return n === null ? '—' : `${n} — ${names[n] ?? ''}`;
}

function outcomeTag(env: PageEnv, c: ChoiceExplanation) {
  const tone = c.outcome === 'placed' ? 'green' : c.outcome === 'notNeeded' ? 'grey' : 'orange';
  return <Tag tone={tone}>{env.m.allocation.outcome[c.outcome]}</Tag>;
}

function why(env: PageEnv, c: ChoiceExplanation, desiredEntryDate: string): string {
  const w = env.m.allocation.why;
  if (c.outcome !== 'ahead') return w[c.outcome];
  if (c.why === 'priority') return w.priority;
  // Too few admitted to show the last one's terms: the decisive term and the family's own value, and why no more.
  const withheld = ` ${w.withheld(LAST_ADMITTED_MIN_GROUP)}`;
  if (c.why === 'points') return c.lastWithheld ? w.pointsWithheld(c.points ?? 0) + withheld : w.points(c.lastPoints ?? 0, c.points ?? 0);
  if (c.why === 'category') return c.lastWithheld ? w.categoryWithheld(categoryName(env, c.category)) + withheld : w.category(categoryName(env, c.lastCategory), categoryName(env, c.category));
  if (c.why === 'date') return c.lastWithheld ? w.dateWithheld(formatDate(env.locale, desiredEntryDate)) + withheld : w.date(c.lastDesiredEntryDate ? formatDate(env.locale, c.lastDesiredEntryDate) : '—');
  return w.registration;
}

/**
 * A family's explanation of a coordinated allocation round: the choice it
 * got, and for each choice it preferred, what the facility's last admitted
 * candidate in the child's age group had over it (a declared priority,
 * points, category or date). Only the terms of the order are shown, never
 * who that candidate was, and that candidate's own terms only where the
 * facility admitted enough children for them not to point at one.
 */
export function allocationRoutes(app: FastifyInstance, deps: Deps) {
  app.get<{ Params: { id: string } }>('/children/:id/allocation', async (req, reply) => {
    const x = await readAllocationExplanation(deps, req.ctx, req.params.id);
    const env = pageEnv(req, reply);
    const a = env.m.allocation;
    const title = a.title(x?.firstName ?? '');
    return sendPage(
      reply,
      <Page env={env} title={title}>
        <p>
          <a href={`/children/${encodeURIComponent(req.params.id)}`} class="back-link">
            {a.back}
          </a>
        </p>
        <h1>{title}</h1>
        {!x ? (
          <p>{a.none}</p>
        ) : (
          <>
            <p>{a.ranOn(formatDate(env.locale, x.runAt.toISOString().slice(0, 10)))}</p>
            <Notice>{x.placedChoice !== null ? a.placed(x.placedChoice) : a.notPlaced}</Notice>
            <SummaryList
              rows={[
                [env.m.child.reference, <code>{x.reference}</code>],
                [a.ageGroup, a.ageGroups[x.ageGroup]],
                [env.m.child.desiredEntryDate, formatDate(env.locale, x.desiredEntryDate)],
              ]}
            />
            <div class="table-wrap">
              <table>
                <caption>{a.caption}</caption>
                <thead>
                  <tr>
                    <th scope="col">{a.colChoice}</th>
                    <th scope="col">{a.colFacility}</th>
                    <th scope="col">{a.colOutcome}</th>
                    <th scope="col">{a.colWhy}</th>
                  </tr>
                </thead>
                <tbody>
                  {x.choices.map((c) => (
                    <tr>
                      <td>{c.preference}</td>
                      <th scope="row">
                        {c.facilityName}
                        {c.municipality && <span class="hint"> — {c.municipality}</span>}
                      </th>
                      <td>{outcomeTag(env, c)}</td>
                      <td>{why(env, c, x.desiredEntryDate)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
            <p>{a.how}</p>
          </>
        )}
      </Page>,
    );
  });
}
