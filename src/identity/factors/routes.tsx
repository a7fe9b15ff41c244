import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Actor } from '../../access/actor.ts';
import type { Deps } from '../../context.ts';
import { AppError, ValidationError } from '../../errors.ts';
import { Csrf, ErrorSummary, Notice, Page, Tag, TextField, type FieldErrors } from '../../web/components.tsx';
import { newPasswordField, parseBody, passwordField, text } from '../../web/forms.ts';
import { formatDate, formatDateTime } from '../../web/i18n/index.ts';
import { pageEnv, safeReturnPath, sendPage } from '../../web/render.tsx';
import { home, rememberDevice, setSessionCookie } from '../routes.tsx';
import { contextWords, isGuessable } from '../password-strength.ts';
import { reauthUrl, StepUpRequired } from '../stepup.ts';
import { hashToken } from '../tokens.ts';
import { clearPendingCookie, Field, PasskeyForm, PasskeyScript, pendingCookieName, Problems, setPendingCookie } from './components.tsx';
import { checkPasskeyOptions } from '../throttle.ts';
import { MailboxProofRequired, requestPasskeyLink, usePasskeyLink } from './mailbox.ts';
import * as factors from './service.ts';
import { formatManualKey, qrCodeDataUrl } from './totp.ts';
import { relyingPartyFor, type RelyingParty } from './webauthn.ts';

/**
 * Pages of second factors: account security (passkeys, authenticator app,
 * recovery codes), the second step of a sign-in, passkey sign-in, and the
 * re-authentication page of step-up. Also the gate that sends staff without
 * a second factor to enrolment (the rule itself is in src/access/decide.ts).
 */

/** A path of this site with one query parameter set (replaced if present). */
function withParam(path: string, name: string, value: string): string {
  const u = new URL(path, 'http://guichet.invalid');
  u.searchParams.set(name, value);
  return u.pathname + u.search;
}

const STATUS = z
  .enum(['passwordChanged', 'totpEnabled', 'totpRemoved', 'passkeyAdded', 'passkeyRenamed', 'passkeyRevoked', 'codesSaved', 'recoveryUsed', 'linkSent', 'mailboxProven', 'passkeyVouched', 'required'])
  .optional()
  .catch(undefined);

type Body = Record<string, unknown>;

function bodyOf(req: FastifyRequest): Body {
  return (req.body ?? {}) as Body;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function hasCurrentMembership(actor: Actor, now: Date): boolean {
  return actor.memberships.some((m) => !m.expiresAt || m.expiresAt > now);
}

/** Staff pages where personal data lives: a member without a second factor is sent to enrolment (or to re-authenticate) first. */
function gated(path: string): boolean {
  return path === '/staff' || path.startsWith('/staff/') || path === '/admin' || path === '/account' || path.startsWith('/children/') || path === '/children';
}

const passkeyName = text('invalidValue', 60);

function minutesUntil(now: Date, until: Date | undefined): number {
  return Math.max(1, Math.ceil(((until?.getTime() ?? now.getTime()) - now.getTime()) / 60_000));
}

export function factorRoutes(app: FastifyInstance, deps: Deps) {
  const rpOf = (req: FastifyRequest): RelyingParty | null => {
    const t = req.ctx.tenant;
    return relyingPartyFor(deps.config, t, req.headers.host, req.ctx.locale === 'fr' ? t.nameFr : t.nameEn);
  };
  const pendingToken = (req: FastifyRequest): string | undefined => {
    const v = req.cookies[pendingCookieName(app.guichet.secureCookies)];
    return typeof v === 'string' && /^[A-Za-z0-9_-]{43}$/.test(v) ? v : undefined;
  };
  const sessionHash = (req: FastifyRequest): Buffer => {
    if (!req.sessionToken) throw new AppError('signInRequired');
    return hashToken(req.sessionToken);
  };
  const json = (reply: FastifyReply, status: number, body: unknown) =>
    reply.code(status).header('cache-control', 'no-store').type('application/json; charset=utf-8').send(JSON.stringify(body));

  /* ---------------------------------------------------------------- the gate */
  app.addHook('preHandler', async (req, reply) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return;
    const actor = req.ctx?.actor;
    if (!actor || actor.mfa || !hasCurrentMembership(actor, req.ctx.now)) return;
    const path = req.url.split('?')[0] ?? '';
    if (!gated(path)) return;
    const hasFactor = !!actor.auth && (actor.auth.totp || actor.auth.passkeys > 0);
    return reply.header('cache-control', 'no-store').redirect(hasFactor ? reauthUrl(req.url) : '/account/security?status=required', 303);
  });

  /* ---------------------------------------------------------- account security */
  app.get<{ Querystring: { status?: string } }>('/account/security', async (req, reply) => {
    const ctx = req.ctx;
    const actor = ctx.actor;
    if (!actor) throw new AppError('signInRequired');
    const o = await factors.overview(deps, ctx);
    const status = STATUS.parse(req.query.status);
    const env = pageEnv(req, reply);
    const f = env.m.factors;
    const needsFactor = hasCurrentMembership(actor, ctx.now) && !actor.mfa && !o.totp && o.passkeys.length === 0;
    const rp = rpOf(req);
    const anyFactor = o.totp || o.passkeys.length > 0;
    return sendPage(
      reply,
      <Page env={env} title={f.securityTitle}>
        <p>
          <a href="/account" class="back-link">
            {env.m.child.back}
          </a>
        </p>
        {status && status !== 'required' && (status !== 'passkeyVouched' || o.passkeys.some((p) => p.vouched)) && <Notice>{f.status[status]}</Notice>}
        {needsFactor && (
          <div class="notice notice--warning" role="status">
            <h2>{f.requiredTitle}</h2>
            <p>{f.required}</p>
          </div>
        )}
        <h1>{f.securityTitle}</h1>
        <p class="lead">{f.securityLead}</p>

        <h2>{f.passwordTitle}</h2>
        <p>{f.passwordLead}</p>
        <p>
          <a class="button button--secondary" href="/account/security/password">
            {f.passwordChange}
          </a>
        </p>

        <h2>{f.passkeysTitle}</h2>
        <p>{f.passkeysLead}</p>
        {o.passkeys.length === 0 ? (
          <p>{f.passkeysNone}</p>
        ) : (
          <div class="table-wrap">
            <table>
              <caption class="visually-hidden">{f.passkeysCaption}</caption>
              <thead>
                <tr>
                  <th scope="col">{f.colName}</th>
                  <th scope="col">{f.colAdded}</th>
                  <th scope="col">{f.colLastUsed}</th>
                  <th scope="col">{f.colActions}</th>
                </tr>
              </thead>
              <tbody>
                {o.passkeys.map((p) => (
                  <tr>
                    <td>{p.name}</td>
                    <td>{formatDate(env.locale, p.createdAt)}</td>
                    <td>{p.lastUsedAt ? formatDateTime(env.locale, p.lastUsedAt) : f.never}</td>
                    <td>
                      <span class="actions">
                        <a href={`/account/security/passkeys/${p.id}/rename`} aria-label={f.renameLabel(p.name)}>
                          {f.rename}
                        </a>
                        <a href={`/account/security/passkeys/${p.id}/revoke`} aria-label={f.revokeLabel(p.name)}>
                          {f.revoke}
                        </a>
                      </span>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        {rp && o.mailboxProof === 'needed' ? (
          <form method="post" action="/account/security/passkey-link" novalidate>
            <Csrf env={env} />
            <p>{o.passkeys.length ? f.mailbox.leadUnvouched : f.mailbox.lead}</p>
            <button type="submit" class="button button--secondary">
              {o.passkeys.length ? f.mailbox.requestConfirm : f.mailbox.request}
            </button>
          </form>
        ) : rp ? (
          <>
            {o.mailboxProof === 'proven' && o.passkeys.length > 0 && (
              <>
                <p>{f.mailbox.provenUnvouched}</p>
                <PasskeyForm env={env} ceremony="get" action="/reauth/passkey?level=passkey" options="/reauth/passkey/options" button={f.mailbox.confirmExisting} returnTo="/account/security?status=passkeyVouched" />
              </>
            )}
            <PasskeyForm env={env} ceremony="create" action="/account/security/passkeys" options="/account/security/passkeys/options" button={f.addPasskey}>
              <Field name="name" label={f.passkeyName} hint={f.passkeyNameHint} prefix={env.m.layout.errorTitlePrefix} autocomplete="off" width="medium" maxlength={60} />
            </PasskeyForm>
            <PasskeyScript env={env} />
          </>
        ) : (
          <p class="notice notice--info">{f.passkeyUnavailable}</p>
        )}

        <h2>{f.totpTitle}</h2>
        <p>
          <Tag tone={o.totp ? 'green' : 'grey'}>{o.totp ? f.enabled : f.notConfigured}</Tag>
        </p>
        <p>{f.totpLead}</p>
        <p>
          {o.totp ? (
            <a class="button button--secondary" href="/account/security/totp/remove">
              {f.totpRemove}
            </a>
          ) : (
            <a class="button button--secondary" href="/account/security/totp">
              {f.totpSetup}
            </a>
          )}
        </p>

        {anyFactor && (
          <>
            <h2>{f.recoveryTitle}</h2>
            <p>{f.recoveryLead}</p>
            <p>{f.recoveryLeft(o.recoveryLeft)}</p>
            <p>
              <a class="button button--secondary" href="/account/security/recovery-codes">
                {f.recoveryRegenerate}
              </a>
            </p>
          </>
        )}
      </Page>,
    );
  });

  /* ---------------------------------------------------------- password change */
  const passwordChangeSchema = z
    .object({ currentPassword: passwordField, password: newPasswordField, passwordConfirm: z.string().optional() })
    .refine((v) => v.password === v.passwordConfirm, { path: ['passwordConfirm'], error: 'passwordMismatch' })
    .refine((v) => v.password !== v.currentPassword, { path: ['password'], error: 'passwordUnchanged' });
  const passwordChangePage = (req: FastifyRequest, reply: FastifyReply, errors?: FieldErrors, message?: string, status?: number) => {
    const env = pageEnv(req, reply);
    const f = env.m.factors;
    return sendPage(
      reply,
      <Page env={env} title={f.passwordChangeTitle} hasErrors={!!errors || !!message}>
        <p>
          <a href="/account/security" class="back-link">
            {f.back}
          </a>
        </p>
        <ErrorSummary env={env} errors={errors} />
        {message && <Problems env={env} items={[{ message }]} />}
        <h1>{f.passwordChangeTitle}</h1>
        <p class="lead">{f.passwordChangeLead}</p>
        <form method="post" action="/account/security/password" novalidate>
          <Csrf env={env} />
          <TextField env={env} name="currentPassword" type="password" label={f.currentPassword} errors={errors} autocomplete="current-password" width="medium" />
          <TextField env={env} name="password" type="password" label={f.newPassword} hint={env.m.signUp.passwordHint} errors={errors} autocomplete="new-password" width="medium" />
          <TextField env={env} name="passwordConfirm" type="password" label={f.newPasswordConfirm} errors={errors} autocomplete="new-password" width="medium" />
          <button type="submit" class="button">
            {f.passwordChangeSubmit}
          </button>
        </form>
      </Page>,
      status ?? (errors || message ? 400 : 200),
    );
  };
  app.get('/account/security/password', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    factors.requirePasswordChangeAuth(req.ctx);
    return passwordChangePage(req, reply);
  });
  app.post('/account/security/password', async (req, reply) => {
    const actor = req.ctx.actor;
    if (!actor) throw new AppError('signInRequired');
    factors.requirePasswordChangeAuth(req.ctx);
    let input;
    try {
      input = parseBody(passwordChangeSchema, bodyOf(req));
    } catch (err) {
      if (err instanceof ValidationError) return passwordChangePage(req, reply, err.fields);
      throw err;
    }
    if (await isGuessable(input.password, contextWords(actor.email, req.ctx.tenant))) return passwordChangePage(req, reply, { password: 'passwordGuessable' });
    let r: factors.PasswordChange;
    try {
      r = await factors.changePassword(deps, req.ctx, input.currentPassword, input.password);
    } catch (err) {
      if (err instanceof MailboxProofRequired) return securityError(req, reply, pageEnv(req, reply).m.factors.mailbox.requiredChange, 403);
      throw err;
    }
    if (!r.ok && r.reason === 'locked') return passwordChangePage(req, reply, undefined, pageEnv(req, reply).m.factors.passwordLocked(minutesUntil(req.ctx.now, r.lockedUntil)), 429);
    if (!r.ok) return passwordChangePage(req, reply, { currentPassword: 'currentPasswordWrong' }, undefined, 401);
    setSessionCookie(app, reply, r.session);
    return reply.redirect('/account/security?status=passwordChanged', 303);
  });

  /* ------------------------------------------------------------ recovery codes shown once */
  const codesPage = (req: FastifyRequest, reply: FastifyReply, codes: string[], next: string) => {
    const env = pageEnv(req, reply);
    const f = env.m.factors;
    return sendPage(
      reply,
      <Page env={env} title={f.recoveryShowTitle}>
        <h1>{f.recoveryShowTitle}</h1>
        <p class="lead">{f.recoveryShowLead}</p>
        <ol class="recovery-codes" aria-label={f.recoveryTitle}>
          {codes.map((c) => (
            <li>
              <code>{c}</code>
            </li>
          ))}
        </ol>
        <p>
          <a class="button" href={next}>
            {f.recoveryShowDone}
          </a>
        </p>
      </Page>,
    );
  };

  /* ---------------------------------------------------------- authenticator app */
  const totpPage = async (req: FastifyRequest, reply: FastifyReply, error?: string) => {
    const enrolment = await factors.startTotpEnrolment(deps, req.ctx);
    if (enrolment.state === 'enabled') return reply.redirect('/account/security', 303);
    const env = pageEnv(req, reply);
    const f = env.m.factors;
    const qr = await qrCodeDataUrl(enrolment.uri);
    return sendPage(
      reply,
      <Page env={env} title={f.totpSetup} hasErrors={!!error}>
        <p>
          <a href="/account/security" class="back-link">
            {f.back}
          </a>
        </p>
        <Problems env={env} items={error ? [{ field: 'code', message: error }] : []} />
        <h1>{f.totpSetup}</h1>
        <p class="lead">{f.totpLead}</p>
        <ol class="steps" aria-label={f.totpStepsLabel}>
          <li>{f.totpStep1}</li>
          <li>
            {f.totpStep2}
            <br />
            <img class="qr-code" src={qr} alt={f.qrAlt} width={220} height={220} />
          </li>
          <li>
            {f.totpStep3}
            <br />
            <code class="manual-key">{formatManualKey(enrolment.secret)}</code>
            <br />
            <span class="hint">{f.totpKeyDetails}</span>
          </li>
          <li>{f.totpStep4}</li>
        </ol>
        <form method="post" action="/account/security/totp" novalidate>
          <Csrf env={env} />
          <Field name="code" label={f.codeLabel} error={error} prefix={env.m.layout.errorTitlePrefix} autocomplete="one-time-code" inputmode="numeric" width="short" maxlength={12} />
          <button type="submit" class="button">
            {f.totpActivate}
          </button>
        </form>
      </Page>,
      error ? 400 : 200,
    );
  };

  app.get('/account/security/totp', async (req, reply) => totpPage(req, reply));
  app.post('/account/security/totp', async (req, reply) => {
    const r = await factors.confirmTotpEnrolment(deps, req.ctx, bodyOf(req).code);
    const f = pageEnv(req, reply).m.factors;
    if (!r.ok) return totpPage(req, reply, r.reason === 'missing' ? f.codeRequired : r.reason === 'expired' ? f.totpEnrolExpired : f.codeInvalid);
    if (r.recoveryCodes) return codesPage(req, reply, r.recoveryCodes, '/account/security?status=totpEnabled');
    return reply.redirect('/account/security?status=totpEnabled', 303);
  });

  /** A dangerous action on its own page, naming the consequence. */
  const confirmPage = (req: FastifyRequest, reply: FastifyReply, p: { title: string; consequence: string; warning?: string | undefined; action: string; submit: string }) => {
    const env = pageEnv(req, reply);
    const f = env.m.factors;
    return sendPage(
      reply,
      <Page env={env} title={p.title}>
        <h1>{p.title}</h1>
        <p class="lead">{p.consequence}</p>
        {p.warning && <p class="notice notice--warning">{p.warning}</p>}
        <form method="post" action={p.action}>
          <Csrf env={env} />
          <p class="actions">
            <button type="submit" class="button button--warning">
              {p.submit}
            </button>
            <a href="/account/security">{f.cancel}</a>
          </p>
        </form>
      </Page>,
    );
  };

  /** Whether removing one factor leaves the account without any. */
  const isLastFactor = (o: factors.FactorOverview, removing: 'totp' | 'passkey') => (removing === 'totp' ? o.passkeys.length === 0 : !o.totp && o.passkeys.length === 1);

  app.get('/account/security/totp/remove', async (req, reply) => {
    const o = await factors.overview(deps, req.ctx);
    if (!o.totp) return reply.redirect('/account/security', 303);
    const f = pageEnv(req, reply).m.factors;
    return confirmPage(req, reply, { title: f.totpRemove, consequence: f.totpRemoveConsequence, warning: isLastFactor(o, 'totp') ? f.lastFactorWarning : undefined, action: '/account/security/totp/remove', submit: f.totpRemove });
  });
  app.post('/account/security/totp/remove', async (req, reply) => {
    const removed = await factors.removeTotp(deps, req.ctx);
    return reply.redirect(removed ? '/account/security?status=totpRemoved' : '/account/security', 303);
  });

  /* ------------------------------------------------------------ recovery codes */
  app.get('/account/security/recovery-codes', async (req, reply) => {
    const o = await factors.overview(deps, req.ctx);
    if (!o.totp && !o.passkeys.length) return reply.redirect('/account/security', 303);
    const f = pageEnv(req, reply).m.factors;
    return confirmPage(req, reply, { title: f.recoveryRegenerateTitle, consequence: f.recoveryRegenerateConsequence, action: '/account/security/recovery-codes', submit: f.recoveryRegenerate });
  });
  app.post('/account/security/recovery-codes', async (req, reply) => {
    const codes = await factors.regenerateRecoveryCodes(deps, req.ctx);
    return codesPage(req, reply, codes, '/account/security?status=codesSaved');
  });

  /* ------------------------------------------------------------ passkeys */
  app.post('/account/security/passkeys/options', async (req, reply) => {
    const rp = rpOf(req);
    if (!req.ctx.actor) return json(reply, 401, { redirect: '/signin' });
    if (!rp) return json(reply, 400, { error: 'rp' });
    try {
      return json(reply, 200, { options: await factors.passkeyRegistrationOptions(deps, req.ctx, rp, sessionHash(req)) });
    } catch (err) {
      if (err instanceof StepUpRequired) return json(reply, 401, { redirect: reauthUrl('/account/security', err.phishingResistant) });
      if (err instanceof MailboxProofRequired) return json(reply, 403, { redirect: '/account/security' });
      throw err;
    }
  });

  /* ------------------------------------------------------------ a privileged holder's first passkey: the mailbox */
  const linkPage = (req: FastifyRequest, reply: FastifyReply, message: string, more: string | null, status: number) => {
    const env = pageEnv(req, reply);
    const f = env.m.factors;
    return sendPage(
      reply,
      <Page env={env} title={f.mailbox.linkTitle} hasErrors>
        <Problems env={env} items={[{ message }]} />
        <h1>{f.mailbox.linkTitle}</h1>
        {more && <p>{more}</p>}
        <p>{f.mailbox.again}</p>
        <p>
          <a href="/account/security">{f.back}</a>
        </p>
      </Page>,
      status,
    );
  };
  app.post('/account/security/passkey-link', async (req, reply) => {
    if (!req.ctx.actor) throw new AppError('signInRequired');
    // From the re-authentication page, the person goes back there (the link brings them back too).
    const back = safeReturnPath(bodyOf(req).return, '');
    const returnTo = back.startsWith('/reauth?') ? back : null;
    const r = await requestPasskeyLink(deps, req.ctx, sessionHash(req), returnTo);
    if (r.ok) return reply.redirect(returnTo ? withParam(returnTo, 'link', 'sent') : '/account/security?status=linkSent', 303);
    if (r.reason === 'notNeeded') return reply.redirect(returnTo ?? '/account/security', 303);
    reply.header('retry-after', String(r.retryAfterSeconds));
    const f = pageEnv(req, reply).m.factors;
    return linkPage(req, reply, f.mailbox.throttled(Math.ceil(r.retryAfterSeconds / 60)), null, 429);
  });
  app.get<{ Querystring: { token?: string } }>('/account/security/passkey-link', async (req, reply) => {
    reply.header('cache-control', 'no-store');
    const r = await usePasskeyLink(deps, req.ctx, req.query.token, req.sessionToken);
    if (r.ok) return reply.redirect(r.returnTo ? withParam(r.returnTo, 'link', 'proven') : '/account/security?status=mailboxProven', 303);
    const f = pageEnv(req, reply).m.factors;
    return linkPage(req, reply, f.mailbox.refused[r.reason], r.reason === 'otherSession' ? f.mailbox.otherSessionWarning : null, r.reason === 'otherSession' ? 403 : 400);
  });

  const securityError = (req: FastifyRequest, reply: FastifyReply, message: string, status = 400) => {
    const env = pageEnv(req, reply);
    const f = env.m.factors;
    return sendPage(
      reply,
      <Page env={env} title={f.securityTitle} hasErrors>
        <Problems env={env} items={[{ message }]} />
        <h1>{f.securityTitle}</h1>
        <p>
          <a href="/account/security">{f.back}</a>
        </p>
      </Page>,
      status,
    );
  };

  app.post('/account/security/passkeys', async (req, reply) => {
    const body = bodyOf(req);
    const rp = rpOf(req);
    const f = pageEnv(req, reply).m.factors;
    if (!rp) return securityError(req, reply, f.passkeyUnavailable);
    const rawName = str(body.name)?.trim() ?? '';
    const name = rawName === '' ? null : passkeyName.safeParse(rawName);
    if (name && !name.success) return securityError(req, reply, f.passkeyNameInvalid);
    let r: factors.PasskeyRegistration;
    try {
      r = await factors.registerPasskey(deps, req.ctx, rp, sessionHash(req), body.credential, name ? name.data! : null);
    } catch (err) {
      if (err instanceof MailboxProofRequired) return securityError(req, reply, f.mailbox.required, 403);
      throw err;
    }
    if (!r.ok) return securityError(req, reply, f.passkeyInvalid);
    if (r.recoveryCodes) return codesPage(req, reply, r.recoveryCodes, '/account/security?status=passkeyAdded');
    return reply.redirect('/account/security?status=passkeyAdded', 303);
  });

  const renamePage = async (req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply, error?: string, value?: string) => {
    const p = await factors.getPasskey(deps, req.ctx, req.params.id);
    if (!p) throw new AppError('notFound');
    const env = pageEnv(req, reply);
    const f = env.m.factors;
    return sendPage(
      reply,
      <Page env={env} title={f.renameTitle} hasErrors={!!error}>
        <p>
          <a href="/account/security" class="back-link">
            {f.back}
          </a>
        </p>
        <Problems env={env} items={error ? [{ field: 'name', message: error }] : []} />
        <h1>{f.renameTitle}</h1>
        <form method="post" action={`/account/security/passkeys/${p.id}/rename`} novalidate>
          <Csrf env={env} />
          <Field name="name" label={f.colName} hint={f.passkeyNameHint} error={error} prefix={env.m.layout.errorTitlePrefix} value={value ?? p.name} autocomplete="off" width="medium" maxlength={60} />
          <p class="actions">
            <button type="submit" class="button">
              {f.renameSubmit}
            </button>
            <a href="/account/security">{f.cancel}</a>
          </p>
        </form>
      </Page>,
      error ? 400 : 200,
    );
  };
  app.get<{ Params: { id: string } }>('/account/security/passkeys/:id/rename', async (req, reply) => renamePage(req, reply));
  app.post<{ Params: { id: string } }>('/account/security/passkeys/:id/rename', async (req, reply) => {
    const raw = str(bodyOf(req).name) ?? '';
    const name = passkeyName.safeParse(raw);
    if (!name.success) return renamePage(req, reply, pageEnv(req, reply).m.factors.passkeyNameInvalid, raw.slice(0, 60));
    if (!(await factors.renamePasskey(deps, req.ctx, req.params.id, name.data))) throw new AppError('notFound');
    return reply.redirect('/account/security?status=passkeyRenamed', 303);
  });

  app.get<{ Params: { id: string } }>('/account/security/passkeys/:id/revoke', async (req, reply) => {
    const p = await factors.getPasskey(deps, req.ctx, req.params.id);
    if (!p) throw new AppError('notFound');
    const o = await factors.overview(deps, req.ctx);
    const f = pageEnv(req, reply).m.factors;
    return confirmPage(req, reply, { title: f.revokeTitle, consequence: f.revokeConsequence(p.name), warning: isLastFactor(o, 'passkey') ? f.lastFactorWarning : undefined, action: `/account/security/passkeys/${p.id}/revoke`, submit: f.revokeSubmit });
  });
  app.post<{ Params: { id: string } }>('/account/security/passkeys/:id/revoke', async (req, reply) => {
    let revoked: boolean;
    try {
      revoked = await factors.revokePasskey(deps, req.ctx, req.params.id);
    } catch (err) {
      if (err instanceof MailboxProofRequired) return securityError(req, reply, pageEnv(req, reply).m.factors.mailbox.requiredChange, 403);
      throw err;
    }
    if (!revoked) throw new AppError('notFound');
    return reply.redirect('/account/security?status=passkeyRevoked', 303);
  });

  /* ------------------------------------------------------------ second step of sign-in */
  const signedInNow = async (req: FastifyRequest, reply: FastifyReply, r: Extract<factors.Completion, { ok: true }>, returnTo: string, next?: string) => {
    setSessionCookie(app, reply, r.session);
    clearPendingCookie(app, reply);
    await rememberDevice(req, reply, r.actor);
    return reply.redirect(next ?? (returnTo || home(r.actor)), 303);
  };
  const expired = (req: FastifyRequest, reply: FastifyReply) => {
    clearPendingCookie(app, reply);
    const env = pageEnv(req, reply);
    const f = env.m.factors;
    return sendPage(
      reply,
      <Page env={env} title={f.secondStepTitle} hasErrors>
        <Problems env={env} items={[{ message: f.expired }]} />
        <h1>{f.secondStepTitle}</h1>
        <p>
          <a class="button" href="/signin">
            {env.m.layout.signIn}
          </a>
        </p>
      </Page>,
      401,
    );
  };

  const secondStepPage = async (req: FastifyRequest, reply: FastifyReply, returnTo: string, error?: { message: string; field?: string }, status = 200) => {
    const pending = await factors.pendingSignIn(deps, req.ctx, pendingToken(req));
    if (!pending || pending.purpose !== 'second_factor') return expired(req, reply);
    const env = pageEnv(req, reply);
    const f = env.m.factors;
    const rp = rpOf(req);
    const { totp, passkeys, recoveryLeft } = pending.enrolled;
    const ret = returnTo ? `?return=${encodeURIComponent(returnTo)}` : '';
    return sendPage(
      reply,
      <Page env={env} title={f.secondStepTitle} hasErrors={!!error}>
        <Problems env={env} items={error ? [error] : []} />
        <h1>{f.secondStepTitle}</h1>
        <p class="lead">{f.secondStepLead}</p>
        {passkeys > 0 && rp && (
          <>
            <h2>{f.passkeyTitle}</h2>
            <PasskeyForm env={env} ceremony="get" action="/signin/passkey" options="/signin/second-factor/passkey/options" button={f.usePasskey} returnTo={returnTo} />
            <PasskeyScript env={env} />
          </>
        )}
        {totp && (
          <>
            <h2>{f.codeTitle}</h2>
            <form method="post" action="/signin/second-factor" novalidate>
              <Csrf env={env} />
              {returnTo && <input type="hidden" name="return" value={returnTo} />}
              <Field name="code" label={f.codeLabel} hint={f.codeHint} error={error?.field === 'code' ? error.message : undefined} prefix={env.m.layout.errorTitlePrefix} autocomplete="one-time-code" inputmode="numeric" width="short" maxlength={12} />
              <button type="submit" class="button">
                {f.continue}
              </button>
            </form>
          </>
        )}
        {recoveryLeft > 0 && (
          <p>
            <a href={`/signin/recovery-code${ret}`}>{f.useRecovery}</a>
          </p>
        )}
        <p>
          <a href="/signin">{f.cancelSignIn}</a>
        </p>
      </Page>,
      status,
    );
  };

  app.get<{ Querystring: { return?: string } }>('/signin/second-factor', async (req, reply) => secondStepPage(req, reply, safeReturnPath(req.query.return, '')));
  app.post('/signin/second-factor', async (req, reply) => {
    const body = bodyOf(req);
    const returnTo = safeReturnPath(body.return, '');
    const r = await factors.completeWithTotp(deps, req.ctx, pendingToken(req), body.code);
    if (r.ok) return signedInNow(req, reply, r, returnTo);
    const f = pageEnv(req, reply).m.factors;
    if (r.reason === 'expired') return expired(req, reply);
    if (r.reason === 'locked') return secondStepPage(req, reply, returnTo, { message: f.locked(minutesUntil(req.ctx.now, r.lockedUntil)) }, 429);
    return secondStepPage(req, reply, returnTo, { field: 'code', message: r.reason === 'missing' ? f.codeRequired : f.codeInvalid }, r.reason === 'missing' ? 400 : 401);
  });

  const recoveryPage = async (req: FastifyRequest, reply: FastifyReply, returnTo: string, error?: { message: string; field?: string }, status = 200) => {
    const pending = await factors.pendingSignIn(deps, req.ctx, pendingToken(req));
    if (!pending || pending.purpose !== 'second_factor') return expired(req, reply);
    const env = pageEnv(req, reply);
    const f = env.m.factors;
    return sendPage(
      reply,
      <Page env={env} title={f.recoveryUseTitle} hasErrors={!!error}>
        <p>
          <a href={`/signin/second-factor${returnTo ? `?return=${encodeURIComponent(returnTo)}` : ''}`} class="back-link">
            {f.backToSecondStep}
          </a>
        </p>
        <Problems env={env} items={error ? [error] : []} />
        <h1>{f.recoveryUseTitle}</h1>
        <p class="lead">{f.recoveryUseLead}</p>
        <form method="post" action="/signin/recovery-code" novalidate>
          <Csrf env={env} />
          {returnTo && <input type="hidden" name="return" value={returnTo} />}
          <Field name="code" label={f.recoveryCode} hint={f.recoveryCodeHint} error={error?.field === 'code' ? error.message : undefined} prefix={env.m.layout.errorTitlePrefix} autocomplete="off" width="medium" maxlength={64} />
          <button type="submit" class="button">
            {f.continue}
          </button>
        </form>
      </Page>,
      status,
    );
  };
  app.get<{ Querystring: { return?: string } }>('/signin/recovery-code', async (req, reply) => recoveryPage(req, reply, safeReturnPath(req.query.return, '')));
  app.post('/signin/recovery-code', async (req, reply) => {
    const body = bodyOf(req);
    const returnTo = safeReturnPath(body.return, '');
    const r = await factors.completeWithRecoveryCode(deps, req.ctx, pendingToken(req), body.code);
    // After a recovery code, the security page: it says how many codes are left and how to replace the lost factor.
    if (r.ok) return signedInNow(req, reply, r, returnTo, '/account/security?status=recoveryUsed');
    const f = pageEnv(req, reply).m.factors;
    if (r.reason === 'expired') return expired(req, reply);
    if (r.reason === 'locked') return recoveryPage(req, reply, returnTo, { message: f.locked(minutesUntil(req.ctx.now, r.lockedUntil)) }, 429);
    return recoveryPage(req, reply, returnTo, { field: 'code', message: r.reason === 'missing' ? f.recoveryRequired : f.recoveryInvalid }, r.reason === 'missing' ? 400 : 401);
  });

  /* ------------------------------------------------------------ passkey sign-in */
  app.post('/signin/passkey/options', async (req, reply) => {
    const rp = rpOf(req);
    if (!rp) return json(reply, 400, { error: 'rp' });
    const verdict = await checkPasskeyOptions(deps, req.ctx);
    if (!verdict.ok) {
      reply.header('retry-after', String(verdict.retryAfterSeconds));
      return json(reply, 429, { error: 'throttled', retryAfterSeconds: verdict.retryAfterSeconds });
    }
    const r = await factors.signInPasskeyOptions(deps, req.ctx, rp, 'alone', undefined);
    if (!r) return json(reply, 400, { error: 'pending' });
    if (r.newPending) setPendingCookie(app, reply, r.newPending);
    return json(reply, 200, { options: r.options });
  });
  app.post('/signin/second-factor/passkey/options', async (req, reply) => {
    const rp = rpOf(req);
    if (!rp) return json(reply, 400, { error: 'rp' });
    const r = await factors.signInPasskeyOptions(deps, req.ctx, rp, 'second_factor', pendingToken(req));
    if (!r) return json(reply, 401, { redirect: '/signin' });
    return json(reply, 200, { options: r.options });
  });
  app.post('/signin/passkey', async (req, reply) => {
    const body = bodyOf(req);
    const returnTo = safeReturnPath(body.return, '');
    const rp = rpOf(req);
    const token = pendingToken(req);
    const pending = await factors.pendingSignIn(deps, req.ctx, token);
    const env = pageEnv(req, reply);
    const f = env.m.factors;
    if (!rp) return securityError(req, reply, f.passkeyUnavailable);
    const r = await factors.completeWithPasskey(deps, req.ctx, rp, token, body.credential);
    if (r.ok) return signedInNow(req, reply, r, returnTo);
    // Back where the person was: the second step, or the sign-in page, with the reason.
    if (pending?.purpose === 'second_factor' && r.reason !== 'expired') return secondStepPage(req, reply, returnTo, { message: f.passkeyInvalid }, 401);
    if (pending?.purpose === 'second_factor') return expired(req, reply);
    clearPendingCookie(app, reply);
    return sendPage(
      reply,
      <Page env={env} title={f.signInTitle} hasErrors>
        <Problems env={env} items={[{ message: f.passkeyInvalid }]} />
        <h1>{f.signInTitle}</h1>
        <p>
          <a class="button" href={`/signin${returnTo ? `?return=${encodeURIComponent(returnTo)}` : ''}`}>
            {env.m.layout.signIn}
          </a>
        </p>
      </Page>,
      401,
    );
  });

  /* ------------------------------------------------------------ re-authentication (step-up) */
  const reauthPage = async (req: FastifyRequest, reply: FastifyReply, q: { returnTo: string; passkeyOnly: boolean; link?: 'sent' | 'proven' | null }, error?: { message: string; field?: string }, status = 200) => {
    const actor = req.ctx.actor;
    if (!actor) throw new AppError('signInRequired');
    const o = await factors.overview(deps, req.ctx);
    const env = pageEnv(req, reply);
    const f = env.m.factors;
    const rp = rpOf(req);
    // Only the passkeys registered for this host can sign here (a tenant may have several hosts): with none, the
    // page says so rather than offer a ceremony with nothing to sign with. What counts for privileged actions is
    // still the account's (SessionAuth, ./mailbox.ts), whatever the host.
    const here = rp ? o.passkeys.filter((p) => p.rpId === rp.id).length : 0;
    // A privileged holder whose passkeys are not vouched for proves the mailbox first; the passkey used next is then vouched for.
    const unvouched = q.passkeyOnly && here > 0 && o.mailboxProof !== 'notNeeded';
    const canPasskey = here > 0 && !(unvouched && o.mailboxProof === 'needed');
    const withPassword = !q.passkeyOnly && (o.totp || o.passkeys.length === 0);
    const level = q.passkeyOnly ? '?level=passkey' : '';
    const self = `/reauth?return=${encodeURIComponent(q.returnTo)}&level=passkey`;
    return sendPage(
      reply,
      <Page env={env} title={f.reauthTitle} hasErrors={!!error}>
        {q.link === 'sent' && o.mailboxProof === 'needed' && <Notice>{f.status.linkSent}</Notice>}
        <Problems env={env} items={error ? [error] : []} />
        <h1>{f.reauthTitle}</h1>
        <p class="lead">{f.reauthLead}</p>
        {q.passkeyOnly && <p>{f.reauthPasskeyRequired}</p>}
        {unvouched && o.mailboxProof === 'needed' && rp && (
          <form method="post" action="/account/security/passkey-link" novalidate>
            <Csrf env={env} />
            <input type="hidden" name="return" value={self} />
            <p>{f.mailbox.reauthUnvouched}</p>
            <button type="submit" class="button">
              {f.mailbox.requestConfirm}
            </button>
          </form>
        )}
        {unvouched && o.mailboxProof === 'proven' && <p>{f.mailbox.reauthProven}</p>}
        {canPasskey && (
          <>
            {withPassword && <h2>{f.reauthWithPasskey}</h2>}
            <PasskeyForm env={env} ceremony="get" action={`/reauth/passkey${level}`} options={`/reauth/passkey/options${level}`} button={f.usePasskey} returnTo={q.returnTo} />
            <PasskeyScript env={env} />
          </>
        )}
        {!canPasskey && !withPassword && (
          <p>
            {f.reauthNoPasskey} <a href="/account/security">{f.securityTitle}</a>
          </p>
        )}
        {withPassword && (
          <>
            {canPasskey && <h2>{f.reauthWithPassword}</h2>}
            <form method="post" action="/reauth" novalidate>
              <Csrf env={env} />
              <input type="hidden" name="return" value={q.returnTo} />
              <Field name="password" type="password" label={f.password} error={error?.field === 'password' ? error.message : undefined} prefix={env.m.layout.errorTitlePrefix} autocomplete="current-password" width="medium" />
              {o.totp && (
                <Field name="code" label={f.codeLabel} hint={f.codeHint} error={error?.field === 'code' ? error.message : undefined} prefix={env.m.layout.errorTitlePrefix} autocomplete="one-time-code" inputmode="numeric" width="short" maxlength={12} />
              )}
              <button type="submit" class="button">
                {f.reauthSubmit}
              </button>
            </form>
          </>
        )}
        <p>
          <a href="/">{f.cancel}</a>
        </p>
      </Page>,
      status,
    );
  };
  const reauthQuery = (q: Record<string, unknown>): { returnTo: string; passkeyOnly: boolean; link: 'sent' | 'proven' | null } => ({
    returnTo: safeReturnPath(q.return, '/account'),
    passkeyOnly: q.level === 'passkey',
    link: q.link === 'sent' || q.link === 'proven' ? q.link : null,
  });

  app.get<{ Querystring: Record<string, string> }>('/reauth', async (req, reply) => reauthPage(req, reply, reauthQuery(req.query ?? {})));
  app.post('/reauth', async (req, reply) => {
    const body = bodyOf(req);
    const q = { returnTo: safeReturnPath(body.return, '/account'), passkeyOnly: false };
    const r = await factors.reauthWithPassword(deps, req.ctx, body.password, body.code);
    if (r.ok) {
      setSessionCookie(app, reply, r.session);
      return reply.redirect(q.returnTo, 303);
    }
    const f = pageEnv(req, reply).m.factors;
    if (r.reason === 'locked') return reauthPage(req, reply, q, { message: f.locked(minutesUntil(req.ctx.now, r.lockedUntil)) }, 429);
    if (r.reason === 'passkeyRequired') return reauthPage(req, reply, q, { message: f.reauthNoPasskey }, 400);
    if (r.reason === 'missing') {
      const field = typeof body.password === 'string' && body.password !== '' ? 'code' : 'password';
      return reauthPage(req, reply, q, { field, message: field === 'code' ? f.codeRequired : f.passwordRequired }, 400);
    }
    return reauthPage(req, reply, q, { field: 'password', message: f.reauthInvalid }, 401);
  });
  app.post<{ Querystring: Record<string, string> }>('/reauth/passkey/options', async (req, reply) => {
    const rp = rpOf(req);
    if (!req.ctx.actor) return json(reply, 401, { redirect: '/signin' });
    if (!rp) return json(reply, 400, { error: 'rp' });
    const options = await factors.reauthPasskeyOptions(deps, req.ctx, rp, sessionHash(req), req.query?.level === 'passkey');
    if (!options) return json(reply, 400, { error: 'none' });
    return json(reply, 200, { options });
  });
  app.post<{ Querystring: Record<string, string> }>('/reauth/passkey', async (req, reply) => {
    const body = bodyOf(req);
    const q = { returnTo: safeReturnPath(body.return, '/account'), passkeyOnly: req.query?.level === 'passkey' };
    const rp = rpOf(req);
    const f = pageEnv(req, reply).m.factors;
    if (!rp) return reauthPage(req, reply, q, { message: f.passkeyUnavailable }, 400);
    const r = await factors.reauthWithPasskey(deps, req.ctx, rp, sessionHash(req), body.credential);
    if (r.ok) {
      setSessionCookie(app, reply, r.session);
      return reply.redirect(q.returnTo, 303);
    }
    return reauthPage(req, reply, q, { message: f.passkeyInvalid }, 401);
  });
}

