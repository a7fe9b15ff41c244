import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Deps } from '../context.ts';
import { renderFacility } from '../directory/routes.tsx';
import { getFacility } from '../directory/service.ts';
import { AppError, ValidationError } from '../errors.ts';
import { listChildren } from '../records/gateway.ts';
import { Csrf, ErrorSummary, Notice, Page, SummaryList, TextField, type FieldErrors } from '../web/components.tsx';
import { emailField, newPasswordField, parseBody, passwordField } from '../web/forms.ts';
import { formatDate } from '../web/i18n/index.ts';
import { CLEAR_SITE_DATA, pageEnv, safeReturnPath, sendPage } from '../web/render.tsx';
import { PasskeySignIn, startSecondStep } from './factors/components.tsx';
import { requestPasswordReset } from './recovery.ts';
import * as identity from './service.ts';
import * as throttle from './throttle.ts';
import { listStaff } from './staff.ts';
import { deviceCookieName, noteDevice } from './sessions.ts';
import { appendAuditAlone } from '../audit/log.ts';
import { originOf } from '../context.ts';
import { originFields } from '../tenants/service.ts';
import { isTokenShaped } from './tokens.ts';
import { contextWords, isGuessable } from './password-strength.ts';

const signUpSchema = z
  .object({ email: emailField, password: newPasswordField, passwordConfirm: z.string().optional() })
  .refine((v) => v.password === v.passwordConfirm, { path: ['passwordConfirm'], error: 'passwordMismatch' });

const signInSchema = z.object({ email: emailField, password: passwordField, return: z.string().optional() });

export function setSessionCookie(app: FastifyInstance, reply: FastifyReply, s: identity.SessionResult) {
  const { cookies, secureCookies } = app.guichet;
  reply.setCookie(cookies.session, s.token, { path: '/', httpOnly: true, sameSite: 'lax', secure: secureCookies, expires: s.expiresAt });
}

/** Notes the browser as a device of the account (a notice goes out for a new one) and keeps its cookie. */
export async function rememberDevice(req: FastifyRequest, reply: FastifyReply, actor: { accountId: string; email: string; locale: 'fr' | 'en' }) {
  const { secureCookies } = req.server.guichet;
  const name = deviceCookieName(secureCookies);
  const d = await noteDevice(req.server.guichet, req.ctx, { id: actor.accountId, email: actor.email, locale: actor.locale }, req.cookies[name]);
  reply.setCookie(name, d.token, { path: '/', httpOnly: true, sameSite: 'lax', secure: secureCookies, maxAge: 400 * 86400 });
}

export function home(actor: { memberships: readonly { role: string }[] }): string {
  if (actor.memberships.some((m) => m.role === 'facility_staff' || m.role === 'facility_director')) return '/staff';
  if (actor.memberships.some((m) => m.role === 'tenant_admin')) return '/admin';
  return '/account';
}

/** Throttled: the same page whether or not the account exists, with Retry-After (RFC 9110 §10.2.3). */
async function throttledPage(req: FastifyRequest, reply: FastifyReply, v: { retryAfterSeconds: number; reason: string }) {
  const deps = req.server.guichet;
  await appendAuditAlone(deps.db.db, req.ctx.tenant.id, { action: 'identity.signin.throttled', outcome: 'denied', ...originFields(originOf(req.ctx)), targetType: 'source', targetIds: req.ctx.ip ? [req.ctx.ip] : [], details: { reason: v.reason, retryAfterSeconds: v.retryAfterSeconds } }, req.ctx.now);
  const env = pageEnv(req, reply);
  reply.header('retry-after', String(v.retryAfterSeconds));
  return sendPage(
    reply,
    <Page env={env} title={env.m.security.throttledTitle}>
      <h1>{env.m.security.throttledTitle}</h1>
      <p>{env.m.security.throttled(Math.max(1, Math.ceil(v.retryAfterSeconds / 60)))}</p>
    </Page>,
    429,
  );
}

export function identityRoutes(app: FastifyInstance, deps: Deps) {
  /* ---------------------------------------------------------------- sign-up */
  const signUpPage = (req: FastifyRequest, reply: FastifyReply, errors?: FieldErrors, email?: string) => {
    const env = pageEnv(req, reply);
    const s = env.m.signUp;
    return sendPage(
      reply,
      <Page env={env} title={s.title} hasErrors={!!errors}>
        <ErrorSummary env={env} errors={errors} />
        <h1>{s.title}</h1>
        <p class="lead">{s.lead}</p>
        <form method="post" action="/signup" novalidate>
          <Csrf env={env} />
          <TextField env={env} name="email" type="email" label={s.email} hint={s.emailHint} value={email} errors={errors} autocomplete="email" spellcheck={false} />
          <TextField env={env} name="password" type="password" label={s.password} hint={s.passwordHint} errors={errors} autocomplete="new-password" width="medium" />
          <TextField env={env} name="passwordConfirm" type="password" label={s.passwordConfirm} errors={errors} autocomplete="new-password" width="medium" />
          <button type="submit" class="button">
            {s.submit}
          </button>
        </form>
        <p>
          {s.haveAccount} <a href="/signin">{env.m.layout.signIn}</a>
        </p>
      </Page>,
      errors ? 400 : 200,
    );
  };

  app.get('/signup', async (req, reply) => signUpPage(req, reply));
  app.post('/signup', async (req, reply) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    let input;
    try {
      input = parseBody(signUpSchema, body);
    } catch (err) {
      if (err instanceof ValidationError) return signUpPage(req, reply, err.fields, typeof body.email === 'string' ? body.email.slice(0, 254) : undefined);
      throw err;
    }
    const allowed = await throttle.checkSignUp(deps, req.ctx, input.email);
    if (!allowed.ok) return throttledPage(req, reply, allowed);
    // Weighed after the throttle (it costs a few milliseconds of this thread), the same for a known address as for a new one.
    if (await isGuessable(input.password, contextWords(input.email, req.ctx.tenant))) return signUpPage(req, reply, { password: 'passwordGuessable' }, input.email);
    await identity.signUp(deps, req.ctx, { email: input.email, password: input.password });
    const env = pageEnv(req, reply);
    return sendPage(
      reply,
      <Page env={env} title={env.m.signUp.sentTitle}>
        <h1>{env.m.signUp.sentTitle}</h1>
        <p>{env.m.signUp.sent(input.email)}</p>
        <p>{env.m.signUp.sentNext}</p>
      </Page>,
    );
  });

  /* ------------------------------------------------------- forgotten password */
  const forgotPage = (req: FastifyRequest, reply: FastifyReply, email?: string, errors?: FieldErrors) => {
    const env = pageEnv(req, reply);
    const r = env.m.recovery;
    return sendPage(
      reply,
      <Page env={env} title={r.title} hasErrors={!!errors}>
        <ErrorSummary env={env} errors={errors} />
        <h1>{r.title}</h1>
        <p class="lead">{r.lead}</p>
        <form method="post" action="/password/forgot" novalidate>
          <Csrf env={env} />
          <TextField env={env} name="email" type="email" label={env.m.signIn.email} value={email} errors={errors} autocomplete="username" spellcheck={false} />
          <button type="submit" class="button">
            {r.submit}
          </button>
        </form>
      </Page>,
      errors ? 400 : 200,
    );
  };
  app.get('/password/forgot', async (req, reply) => forgotPage(req, reply));
  app.post('/password/forgot', async (req, reply) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    let input;
    try {
      input = parseBody(z.object({ email: emailField }), body);
    } catch (err) {
      if (err instanceof ValidationError) return forgotPage(req, reply, typeof body.email === 'string' ? body.email.slice(0, 254) : undefined, err.fields);
      throw err;
    }
    const allowed = await throttle.checkRecovery(deps, req.ctx, input.email);
    if (!allowed.ok) return throttledPage(req, reply, allowed);
    const env = pageEnv(req, reply);
    const sent = sendPage(
      reply,
      <Page env={env} title={env.m.recovery.sentTitle}>
        <h1>{env.m.recovery.sentTitle}</h1>
        <p>{env.m.recovery.sent(input.email)}</p>
        <p>{env.m.recovery.sentNext}</p>
      </Page>,
    );
    // The work differs with an account (a link) and without (a notice): it starts once the answer has
    // left, so that the answer's time says nothing about the address (on the embedded database a
    // statement runs on this thread: started sooner, it would delay the answer still being written).
    const ctx = req.ctx;
    const work = () => setImmediate(() => void requestPasswordReset(deps, ctx, input.email).catch((err: unknown) => req.log.error({ err }, 'password reset request failed')));
    if (reply.raw.writableFinished) work();
    else reply.raw.once('close', work);
    return sent;
  });

  /* ------------------------------------------------------- e-mail verification */
  const invalidLink = (req: FastifyRequest, reply: FastifyReply) => {
    const env = pageEnv(req, reply);
    return sendPage(
      reply,
      <Page env={env} title={env.m.verify.invalidTitle}>
        <h1>{env.m.verify.invalidTitle}</h1>
        <p>{env.m.verify.invalid}</p>
        <p>
          <a href="/signin">{env.m.layout.signIn}</a>
        </p>
      </Page>,
      404,
    );
  };

  // GET only shows a button: mail scanners that follow links must not confirm an address.
  app.get<{ Querystring: { token?: string } }>('/verify-email', async (req, reply) => {
    const token = req.query.token;
    if (!isTokenShaped(token) || !(await identity.checkToken(deps, req.ctx, token, 'verify_email'))) return invalidLink(req, reply);
    const env = pageEnv(req, reply);
    return sendPage(
      reply,
      <Page env={env} title={env.m.verify.title}>
        <h1>{env.m.verify.title}</h1>
        <p>{env.m.verify.lead}</p>
        <form method="post" action="/verify-email">
          <Csrf env={env} />
          <input type="hidden" name="token" value={token} />
          <button type="submit" class="button">
            {env.m.verify.submit}
          </button>
        </form>
      </Page>,
    );
  });
  app.post('/verify-email', async (req, reply) => {
    const token = (req.body as Record<string, unknown> | undefined)?.token;
    if (!isTokenShaped(token) || !(await identity.verifyEmail(deps, req.ctx, token))) return invalidLink(req, reply);
    const env = pageEnv(req, reply);
    return sendPage(
      reply,
      <Page env={env} title={env.m.verify.doneTitle}>
        <h1>{env.m.verify.doneTitle}</h1>
        <Notice>{env.m.verify.done}</Notice>
        <p>
          <a class="button" href="/signin">
            {env.m.layout.signIn}
          </a>
        </p>
      </Page>,
    );
  });

  /* ---------------------------------------------------------------- sign-in */
  const signInPage = (req: FastifyRequest, reply: FastifyReply, state: { errors?: FieldErrors; message?: string; email?: string; returnTo?: string; info?: string }, status = 200) => {
    const env = pageEnv(req, reply);
    const s = env.m.signIn;
    return sendPage(
      reply,
      <Page env={env} title={s.title} hasErrors={!!state.errors || !!state.message}>
        <ErrorSummary env={env} errors={state.errors} />
        {state.message && (
          <div class="error-summary" role="alert" tabindex={-1} data-error-summary>
            <h2>{env.m.errors.summaryTitle}</h2>
            <p>{state.message}</p>
          </div>
        )}
        {state.info && <Notice>{state.info}</Notice>}
        <h1>{s.title}</h1>
        <form method="post" action="/signin" novalidate>
          <Csrf env={env} />
          {state.returnTo && <input type="hidden" name="return" value={state.returnTo} />}
          <TextField env={env} name="email" type="email" label={s.email} value={state.email} errors={state.errors} autocomplete="username" spellcheck={false} />
          <TextField env={env} name="password" type="password" label={s.password} errors={state.errors} autocomplete="current-password" width="medium" />
          <button type="submit" class="button">
            {s.submit}
          </button>
        </form>
        <p>
          <a href="/password/forgot">{env.m.recovery.forgot}</a>
        </p>
        <p>
          {s.noAccount} <a href="/signup">{env.m.layout.signUp}</a>
        </p>
        <PasskeySignIn env={env} returnTo={state.returnTo} />
      </Page>,
      status,
    );
  };

  app.get<{ Querystring: { return?: string; signedOut?: string } }>('/signin', async (req, reply) => {
    if (req.ctx.actor) return reply.redirect(safeReturnPath(req.query.return, home(req.ctx.actor)), 303);
    const returnTo = safeReturnPath(req.query.return, '');
    return signInPage(req, reply, { returnTo, ...(req.query.signedOut ? { info: pageEnv(req, reply).m.signIn.signedOut } : {}) });
  });
  app.post('/signin', async (req, reply) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const returnTo = safeReturnPath(body.return, '');
    const email = typeof body.email === 'string' ? body.email.slice(0, 254) : undefined;
    let input;
    try {
      input = parseBody(signInSchema, body);
    } catch (err) {
      if (err instanceof ValidationError) return signInPage(req, reply, { errors: err.fields, email, returnTo }, 400);
      throw err;
    }
    const { secureCookies } = app.guichet;
    const deviceCookie = deviceCookieName(secureCookies);
    const s = await identity.passwordSignIn(deps, req.ctx, input.email, input.password, req.cookies[deviceCookie]);
    if (s.throttled) return throttledPage(req, reply, s.throttled);
    const r = s.result;
    if (!r.ok && r.reason === 'second_factor') return startSecondStep(app, reply, r.pending, returnTo);
    if (!r.ok) {
      const m = pageEnv(req, reply).m;
      return signInPage(req, reply, { message: r.reason === 'unverified' ? m.signIn.unverified : m.signIn.failed, email, returnTo }, 401);
    }
    setSessionCookie(app, reply, r.session);
    reply.setCookie(deviceCookie, s.device!.token, { path: '/', httpOnly: true, sameSite: 'lax', secure: secureCookies, maxAge: 400 * 86400 });
    return reply.redirect(returnTo || home(r.actor), 303);
  });

  app.post('/signout', async (req, reply) => {
    if (req.sessionToken) await identity.signOut(deps, req.ctx, req.sessionToken);
    // Cleared with the attributes it was set with: a __Host- cookie without Secure is ignored by browsers.
    reply.clearCookie(app.guichet.cookies.session, { path: '/', httpOnly: true, sameSite: 'lax', secure: app.guichet.secureCookies });
    reply.header('clear-site-data', CLEAR_SITE_DATA);
    return reply.redirect('/signin?signedOut=1', 303);
  });

  /* ------------------------------------------------------------ set password */
  const setPasswordPage = (req: FastifyRequest, reply: FastifyReply, token: string, errors?: FieldErrors) => {
    const env = pageEnv(req, reply);
    return sendPage(
      reply,
      <Page env={env} title={env.m.setPassword.title} hasErrors={!!errors}>
        <ErrorSummary env={env} errors={errors} />
        <h1>{env.m.setPassword.title}</h1>
        <form method="post" action="/set-password" novalidate>
          <Csrf env={env} />
          <input type="hidden" name="token" value={token} />
          <TextField env={env} name="password" type="password" label={env.m.signUp.password} hint={env.m.signUp.passwordHint} errors={errors} autocomplete="new-password" width="medium" />
          <TextField env={env} name="passwordConfirm" type="password" label={env.m.signUp.passwordConfirm} errors={errors} autocomplete="new-password" width="medium" />
          <button type="submit" class="button">
            {env.m.setPassword.submit}
          </button>
        </form>
      </Page>,
      errors ? 400 : 200,
    );
  };
  const passwordPair = z
    .object({ token: z.string(), password: newPasswordField, passwordConfirm: z.string().optional() })
    .refine((v) => v.password === v.passwordConfirm, { path: ['passwordConfirm'], error: 'passwordMismatch' });

  app.get<{ Querystring: { token?: string } }>('/set-password', async (req, reply) => {
    const token = req.query.token;
    if (!isTokenShaped(token) || !(await identity.checkToken(deps, req.ctx, token, 'set_password'))) return invalidLink(req, reply);
    return setPasswordPage(req, reply, token);
  });
  app.post('/set-password', async (req, reply) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const token = body.token;
    if (!isTokenShaped(token)) return invalidLink(req, reply);
    let input;
    try {
      input = parseBody(passwordPair, body);
    } catch (err) {
      if (err instanceof ValidationError) return setPasswordPage(req, reply, token, err.fields);
      throw err;
    }
    const holder = await identity.tokenHolder(deps, req.ctx, token, 'set_password');
    if (!holder) return invalidLink(req, reply);
    if (await isGuessable(input.password, contextWords(holder.email, req.ctx.tenant))) return setPasswordPage(req, reply, token, { password: 'passwordGuessable' });
    if (!(await identity.setPassword(deps, req.ctx, token, input.password))) return invalidLink(req, reply);
    return reply.redirect('/signin', 303);
  });

  /* ------------------------------------------------------------- invitations */
  const invitationPage = async (req: FastifyRequest, reply: FastifyReply, token: string, errors?: FieldErrors, message?: string) => {
    const inv = await identity.findInvitation(deps, req.ctx, token);
    const env = pageEnv(req, reply);
    if (!inv) {
      return sendPage(
        reply,
        <Page env={env} title={env.m.invitation.invalidTitle}>
          <h1>{env.m.invitation.invalidTitle}</h1>
          <p>{env.m.invitation.invalid}</p>
        </Page>,
        404,
      );
    }
    const i = env.m.invitation;
    return sendPage(
      reply,
      <Page env={env} title={i.title} hasErrors={!!errors || !!message}>
        <ErrorSummary env={env} errors={errors} />
        {message && (
          <div class="error-summary" role="alert" tabindex={-1} data-error-summary>
            <h2>{env.m.errors.summaryTitle}</h2>
            <p>{message}</p>
          </div>
        )}
        <h1>{i.title}</h1>
        <p class="lead">{i.lead(inv.facility_name)}</p>
        <form method="post" action="/invitations/accept" novalidate>
          <Csrf env={env} />
          <input type="hidden" name="token" value={token} />
          <SummaryList rows={[[env.m.signIn.email, inv.email]]} />
          {inv.accountExists ? (
            <TextField env={env} name="password" type="password" label={i.existingPassword} errors={errors} autocomplete="current-password" width="medium" />
          ) : (
            <>
              <TextField env={env} name="password" type="password" label={i.newPassword} hint={env.m.signUp.passwordHint} errors={errors} autocomplete="new-password" width="medium" />
              <TextField env={env} name="passwordConfirm" type="password" label={env.m.signUp.passwordConfirm} errors={errors} autocomplete="new-password" width="medium" />
            </>
          )}
          <button type="submit" class="button">
            {i.submit}
          </button>
        </form>
      </Page>,
      errors || message ? 400 : 200,
    );
  };
  app.get<{ Querystring: { token?: string } }>('/invitations/accept', async (req, reply) => {
    const token = req.query.token;
    if (!isTokenShaped(token)) return invalidLink(req, reply);
    return invitationPage(req, reply, token);
  });
  app.post('/invitations/accept', async (req, reply) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const token = body.token;
    if (!isTokenShaped(token)) return invalidLink(req, reply);
    const inv = await identity.findInvitation(deps, req.ctx, token);
    if (!inv) return invitationPage(req, reply, token);
    let password: string;
    try {
      password = inv.accountExists ? parseBody(z.object({ password: passwordField }), body).password : parseBody(passwordPair, body).password;
    } catch (err) {
      if (err instanceof ValidationError) return invitationPage(req, reply, token, err.fields);
      throw err;
    }
    // A new account chooses its password here; an existing one only proves it.
    if (!inv.accountExists && (await isGuessable(password, contextWords(inv.email, req.ctx.tenant)))) return invitationPage(req, reply, token, { password: 'passwordGuessable' });
    const r = await identity.acceptInvitation(deps, req.ctx, token, password);
    if (!r) return invitationPage(req, reply, token);
    if (!r.ok && r.reason === 'second_factor') return startSecondStep(app, reply, r.pending, '/staff');
    if (!r.ok) return invitationPage(req, reply, token, undefined, pageEnv(req, reply).m.signIn.failed);
    setSessionCookie(app, reply, r.session);
    return reply.redirect('/staff', 303);
  });

  /* ------------------------------------------------------------------- admin */
  app.get<{ Querystring: { sessionsEnded?: string } }>('/admin', async (req, reply) => {
    const invitations = await identity.listPendingInvitations(deps, req.ctx);
    const staff = await listStaff(deps, req.ctx);
    const ended = z.coerce.number().int().min(0).max(100000).optional().catch(undefined).parse(req.query.sessionsEnded);
    const env = pageEnv(req, reply);
    const a = env.m.admin;
    return sendPage(
      reply,
      <Page env={env} title={a.title}>
        {ended !== undefined && <Notice>{a.sessionsEnded(ended)}</Notice>}
        <h1>{a.title}</h1>
        <p class="lead">{a.lead}</p>
        <ul>
          <li>
            <a href="/admin/grants">{env.m.grants.title}</a>
          </li>
          <li>
            <a href="/admin/factor-resets">{env.m.factorResets.title}</a>
          </li>
          <li>
            <a href="/admin/files">{env.m.console.lookupTitle}</a>
          </li>
          <li>
            <a href="/admin/restores">{env.m.console.restoresTitle}</a>
          </li>
          <li>
            <a href="/admin/oidc/clients">{env.m.oidc.clientsTitle}</a>
          </li>
          <li>
            <a href="/admin/oidc/entitlements">{env.m.oidc.entTitle}</a>
          </li>
        </ul>
        <h2>{a.staffTitle}</h2>
        {staff.length === 0 ? (
          <p>{a.staffNone}</p>
        ) : (
          <div class="table-wrap">
            <table>
              <caption class="visually-hidden">{a.staffTitle}</caption>
              <thead>
                <tr>
                  <th scope="col">{a.colEmail}</th>
                  <th scope="col">{a.colRole}</th>
                  <th scope="col">{a.colFacility}</th>
                  <th scope="col" class="num">
                    {a.colSessions}
                  </th>
                  <th scope="col">{a.colAction}</th>
                </tr>
              </thead>
              <tbody>
                {staff.map((p) => (
                  <tr>
                    <td>{p.email}</td>
                    <td>{a.roles[p.role]}</td>
                    <td>{p.facilityName ?? '—'}</td>
                    <td class="num">{p.liveSessions}</td>
                    <td>
                      {p.liveSessions > 0 && p.accountId !== env.actor?.accountId && (
                        <form method="post" action={`/admin/accounts/${p.accountId}/sessions/end`} class="inline-form">
                          <Csrf env={env} />
                          <button type="submit" class="link-button" aria-label={a.endSessionsLabel(p.email)}>
                            {a.endSessions}
                          </button>
                        </form>
                      )}{' '}
                      {p.accountId !== env.actor?.accountId && (
                        <form method="post" action={`/admin/memberships/${p.membershipId}/revoke`} class="inline-form">
                          <Csrf env={env} />
                          <button type="submit" class="link-button" aria-label={env.m.grants.revokeLabel(p.email)}>
                            {env.m.grants.revoke}
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
        <h2>{a.invitations}</h2>
        <p>
          {a.inviteHow} <a href="/directory">{env.m.layout.directory}</a>
        </p>
        {invitations.length === 0 ? (
          <p>{a.noInvitations}</p>
        ) : (
          <div class="table-wrap">
            <table>
              <caption class="visually-hidden">{a.invitations}</caption>
              <thead>
                <tr>
                  <th scope="col">{a.colEmail}</th>
                  <th scope="col">{a.colFacility}</th>
                  <th scope="col">{a.colExpires}</th>
                </tr>
              </thead>
              <tbody>
                {invitations.map((i) => (
                  <tr>
                    <td>{i.email}</td>
                    <td>{i.facility_name}</td>
                    <td>{formatDate(env.locale, i.expires_at)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Page>,
    );
  });

  app.post<{ Params: { id: string } }>('/admin/facilities/:id/invitations', async (req, reply) => {
    const ctx = req.ctx;
    const facility = await getFacility(deps, ctx, req.params.id);
    if (!facility) throw new AppError('notFound');
    const body = (req.body ?? {}) as Record<string, unknown>;
    const children = ctx.actor?.emailVerified ? await listChildren(deps, ctx, 'parent.children.choose') : [];
    let email: string;
    try {
      email = parseBody(z.object({ email: emailField }), body).email;
    } catch (err) {
      if (err instanceof ValidationError) {
        return renderFacility(req, reply, facility, children, true, { inviteErrors: err.fields, inviteEmail: typeof body.email === 'string' ? body.email.slice(0, 254) : '' }, 400);
      }
      throw err;
    }
    await identity.inviteStaff(deps, ctx, facility.id, email);
    return renderFacility(req, reply, facility, children, true, { invited: email });
  });
}
