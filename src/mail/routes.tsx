import type { FastifyInstance } from 'fastify';
import type { Deps } from '../context.ts';
import { inTenant } from '../db/tenant.ts';
import { existsSync, readFileSync } from 'node:fs';
import { demoCredentialsFile, type DemoCredentials } from '../demo/setup.ts';
import { totpCodeAt } from '../identity/factors/totp.ts';
import { Page, SummaryList } from '../web/components.tsx';
import { formatDateTime } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';

/**
 * Demo mode only: the mail outbox as a page, so a visitor can follow the
 * verification and invitation links without an SMTP server. This route is not
 * registered at all outside demo mode, and answers only the machine it runs
 * on: the outbox holds every sign-in link and the page the demo accounts'
 * codes, which a demo reachable from a network would hand to anyone on it.
 */
export function demoMailRoutes(app: FastifyInstance, deps: Deps) {
  if (!deps.config.demo) return;
  app.get('/demo/mail', async (req, reply) => {
    // The peer itself, not a forwarded address: a header cannot make a remote visitor local.
    if (!isLoopback(req.socket.remoteAddress)) return reply.callNotFound();
    const rows = await inTenant(deps.db.db, req.ctx.tenant.id, (trx) =>
      trx.selectFrom('mail_outbox').select(['id', 'to_address', 'subject', 'body_text', 'created_at']).orderBy('created_at', 'desc').limit(30).execute(),
    );
    const env = pageEnv(req, reply);
    const m = env.m.mail;
    const file = demoCredentialsFile(deps.config.dataDir);
    const totp = existsSync(file) ? ((JSON.parse(readFileSync(file, 'utf8')) as DemoCredentials).totp ?? {}) : {};
    const codes = await Promise.all(Object.entries(totp).map(async ([email, secret]) => ({ email, code: await totpCodeAt(secret, deps.clock()) })));
    return sendPage(
      reply,
      <Page env={env} title={m.title}>
        <h1>{m.title}</h1>
        {codes.length > 0 && (
          <section aria-labelledby="demo-codes">
            <h2 id="demo-codes">{m.demoCodesTitle}</h2>
            <p>{m.demoCodesLead}</p>
            <SummaryList rows={codes.map((c) => [c.email, <code>{c.code}</code>])} />
          </section>
        )}
        <p class="lead">{m.lead}</p>
        {rows.length === 0 && <p>{m.none}</p>}
        {rows.map((r) => (
          <article class="mail" aria-labelledby={`mail-${r.id}`}>
            <h2 id={`mail-${r.id}`}>{r.subject}</h2>
            <p class="muted">
              {m.colTo}{env.locale === "fr" ? "\u202f:" : ":"} {r.to_address} — {formatDateTime(env.locale, r.created_at)}
            </p>
            <pre class="mail-body">
              {r.body_text.split(/(https?:\/\/\S+)/).map((part) => (/^https?:\/\//.test(part) ? <a href={part}>{part}</a> : part))}
            </pre>
          </article>
        ))}
      </Page>,
    );
  });
}

function isLoopback(address: string | undefined): boolean {
  return !!address && (address === '::1' || /^(::ffff:)?127\./.test(address));
}
