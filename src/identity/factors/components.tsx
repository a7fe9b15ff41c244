import type { FastifyInstance, FastifyReply } from 'fastify';
import { h, type ComponentChildren } from 'preact';
import { Csrf, fieldId, type PageEnv } from '../../web/components.tsx';

/**
 * Pieces of the second-factor pages that other pages use too: the passkey
 * form (the sign-in page shows one), the cookie of a pending sign-in, and
 * form fields whose messages are whole sentences.
 */

/** The cookie that holds a pending sign-in (second step, or passkey sign-in in progress). */
export function pendingCookieName(secureCookies: boolean): string {
  return `${secureCookies ? '__Host-' : ''}guichet_pending`;
}

export function setPendingCookie(app: FastifyInstance, reply: FastifyReply, p: { token: string; expiresAt: Date }): void {
  const secure = app.guichet.secureCookies;
  reply.setCookie(pendingCookieName(secure), p.token, { path: '/', httpOnly: true, sameSite: 'lax', secure, expires: p.expiresAt });
}

export function clearPendingCookie(app: FastifyInstance, reply: FastifyReply): void {
  const secure = app.guichet.secureCookies;
  reply.clearCookie(pendingCookieName(secure), { path: '/', httpOnly: true, sameSite: 'lax', secure });
}

/** After a right password on an account with a second factor: keep the pending sign-in in a cookie, go to the second step. */
export function startSecondStep(app: FastifyInstance, reply: FastifyReply, pending: { token: string; expiresAt: Date }, returnTo: string): FastifyReply {
  setPendingCookie(app, reply, pending);
  return reply.redirect(`/signin/second-factor${returnTo ? `?return=${encodeURIComponent(returnTo)}` : ''}`, 303);
}

/** The page script that runs passkey ceremonies; one per page, after the forms. */
export function PasskeyScript({ env }: { env: PageEnv }) {
  return <script src="/assets/passkeys.js" defer nonce={env.nonce.script}></script>;
}

/**
 * A passkey ceremony as a form. Without JavaScript the button stays hidden
 * and the person reads that passkeys need JavaScript; with it, the script
 * (src/web/assets/passkeys.js) asks `options` for the WebAuthn options, runs
 * the ceremony, puts credential.toJSON() in the `credential` field and
 * submits the form to `action` like any other.
 */
export function PasskeyForm(props: {
  env: PageEnv;
  ceremony: 'create' | 'get';
  action: string;
  options: string;
  button: string;
  returnTo?: string | undefined;
  /** Fields shown with the button (only when passkeys can work). */
  children?: ComponentChildren;
}) {
  const f = props.env.m.factors;
  return (
    <form method="post" action={props.action} class="passkey-form" data-passkey={props.ceremony} data-passkey-options={props.options} novalidate>
      <Csrf env={props.env} />
      {props.returnTo && <input type="hidden" name="return" value={props.returnTo} />}
      <input type="hidden" name="credential" value="" />
      <noscript>
        <p class="notice notice--info">{f.needsJs}</p>
      </noscript>
      <p class="notice notice--info" data-passkey-unsupported hidden>
        {f.unsupported}
      </p>
      <div data-passkey-controls hidden>
        {props.children}
        <button type="submit" class="button button--secondary">
          {props.button}
        </button>
      </div>
      <p class="field-error" data-passkey-error role="alert" hidden>
        {f.passkeyFailed}
      </p>
    </form>
  );
}

/** "Se connecter avec une clé d'accès", on the sign-in page. */
export function PasskeySignIn({ env, returnTo }: { env: PageEnv; returnTo?: string | undefined }) {
  const f = env.m.factors;
  return (
    <section aria-labelledby="passkey-signin-title">
      <h2 id="passkey-signin-title">{f.signInTitle}</h2>
      <p>{f.signInLead}</p>
      <PasskeyForm env={env} ceremony="get" action="/signin/passkey" options="/signin/passkey/options" button={f.usePasskey} returnTo={returnTo} />
      <PasskeyScript env={env} />
    </section>
  );
}

/** A text field whose error is a sentence of the factors catalogue (same markup as components.tsx TextField). */
export function Field(props: {
  name: string;
  label: string;
  hint?: string;
  error?: string | undefined;
  prefix: string;
  value?: string | undefined;
  type?: 'text' | 'password';
  autocomplete?: string;
  inputmode?: 'numeric' | 'text';
  width?: 'short' | 'medium' | 'long';
  maxlength?: number;
}) {
  const id = fieldId(props.name);
  const described = [props.hint ? `${id}-hint` : '', props.error ? `${id}-error` : ''].filter(Boolean).join(' ') || undefined;
  return (
    <div class={`field${props.error ? ' field--error' : ''}`}>
      <label for={id}>{props.label}</label>
      {props.hint && (
        <p class="hint" id={`${id}-hint`}>
          {props.hint}
        </p>
      )}
      {props.error && (
        <p class="field-error" id={`${id}-error`}>
          <span class="visually-hidden">{props.prefix}</span>
          {props.error}
        </p>
      )}
      {h('input', {
        id,
        name: props.name,
        type: props.type ?? 'text',
        value: props.type === 'password' ? undefined : props.value,
        autocomplete: props.autocomplete,
        inputmode: props.inputmode,
        maxlength: props.maxlength,
        spellcheck: false,
        autocapitalize: 'none',
        'aria-invalid': props.error ? 'true' : undefined,
        'aria-describedby': described,
        class: `input input--${props.width ?? 'long'}`,
      } as never)}
    </div>
  );
}

/** The error summary for messages that are sentences: each links to its field. */
export function Problems({ env, items }: { env: PageEnv; items: { field?: string; message: string }[] }) {
  if (!items.length) return null;
  return (
    <div class="error-summary" role="alert" tabindex={-1} aria-labelledby="error-summary-title" data-error-summary>
      <h2 id="error-summary-title">{env.m.errors.summaryTitle}</h2>
      <ul>
        {items.map((i) => (
          <li>{i.field ? <a href={`#${fieldId(i.field)}`}>{i.message}</a> : i.message}</li>
        ))}
      </ul>
    </div>
  );
}
