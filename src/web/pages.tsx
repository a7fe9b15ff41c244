import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ErrorKind } from '../errors.ts';
import { Page } from './components.tsx';
import { pageEnv, sendPage } from './render.tsx';

type ErrorPageKind = ErrorKind | 'server';

export function errorPage(req: FastifyRequest, reply: FastifyReply, kind: ErrorPageKind, status: number) {
  const env = pageEnv(req, reply);
  const e = env.m.errors;
  const [title, body] = (
    {
      notFound: [e.notFoundTitle, e.notFound],
      forbidden: [e.forbiddenTitle, e.forbidden],
      signInRequired: [e.forbiddenTitle, e.signInRequired],
      emailNotVerified: [e.forbiddenTitle, e.emailNotVerified],
      badRequest: [e.badRequestTitle, e.badRequest],
      csrf: [e.csrfTitle, e.csrf],
      tooLarge: [e.badRequestTitle, e.tooLarge],
      unsupportedType: [e.badRequestTitle, e.unsupportedType],
      tooMany: [e.tooManyTitle, e.tooMany],
      coolingOff: [e.coolingOffTitle, e.coolingOff],
      closed: [e.closedTitle, e.closed],
      readOnly: [e.readOnlyTitle, e.readOnly],
      maintenance: [env.m.detection.lockdown.maintenanceTitle, env.m.detection.lockdown.maintenance],
      reasonRequired: [e.forbiddenTitle, env.m.detection.protected.reasonRequired],
      server: [e.serverTitle, e.server],
    } as const
  )[kind];
  if (kind === 'signInRequired' && req.method === 'GET') {
    return reply.redirect(`/signin?return=${encodeURIComponent(env.path)}`, 303);
  }
  return sendPage(
    reply,
    <Page env={env} title={title}>
      <h1>{title}</h1>
      <p>{body}</p>
      {kind === 'signInRequired' && (
        <p>
          <a href="/signin">{env.m.layout.signIn}</a>
        </p>
      )}
      {kind === 'coolingOff' && (
        <p>
          <a href={`/break-glass?return=${encodeURIComponent(req.method === 'GET' ? env.path : '/admin')}`}>{e.coolingOffBreakGlass}</a>
        </p>
      )}
      <p class="muted">{e.requestId(req.id)}</p>
    </Page>,
    status,
  );
}

export function homeRoutes(app: FastifyInstance) {
  app.get('/', async (req, reply) => {
    const env = pageEnv(req, reply);
    const h = env.m.home;
    return sendPage(
      reply,
      <Page env={env} title={h.title}>
        <h1>{h.title}</h1>
        <p class="lead">{h.lead}</p>
        <h2>{h.stepsTitle}</h2>
        <ol class="steps">
          {h.steps.map((s) => (
            <li>{s}</li>
          ))}
        </ol>
        <p class="actions">
          <a class="button" href={env.actor ? '/account' : '/signup'}>
            {h.start}
          </a>
          <a class="button button--secondary" href="/directory">
            {h.browse}
          </a>
        </p>
        <h2>{h.privacyTitle}</h2>
        <p>{h.privacy}</p>
      </Page>,
    );
  });
}
