import { h, type ComponentChildren } from 'preact';
import type { Actor } from '../access/actor.ts';
import { formatDateTime, type FieldErrorKey, type Locale, type Messages } from './i18n/index.ts';

/** What every page needs to render its frame. */
export interface PageEnv {
  m: Messages;
  locale: Locale;
  tenantName: string;
  actor: Actor | null;
  csrf: string;
  /** The current path and query, without the language switch parameter. */
  path: string;
  demo: boolean;
  /** This answer's Content-Security-Policy nonces: a script or style sheet tag without its nonce does not load. */
  nonce: { script: string; style: string };
}

export type FieldErrors = Record<string, FieldErrorKey>;

export function fieldId(name: string): string {
  return `f-${name.replace(/[^a-zA-Z0-9_-]/g, '-')}`;
}

function langHref(path: string, lang: string): string {
  return `${path}${path.includes('?') ? '&' : '?'}lang=${lang}`;
}

export function Page(props: { env: PageEnv; title: string; hasErrors?: boolean; children: ComponentChildren }) {
  const { env } = props;
  const { m, actor } = env;
  const isStaff = !!actor?.memberships.some((x) => x.role === 'facility_staff' || x.role === 'facility_director');
  const isAdmin = !!actor?.memberships.some((x) => x.role === 'tenant_admin');
  const findsFiles = !!actor?.memberships.some((x) => x.role === 'tenant_admin' || x.role === 'program_operator');
  const readsStatistics = findsFiles;
  const assists = !!actor?.memberships.some((x) => x.role === 'facility_staff' || x.role === 'facility_director' || x.role === 'program_operator');
  const fullTitle = `${props.hasErrors ? m.layout.errorTitlePrefix : ''}${props.title} — ${m.service}`;
  return (
    <html lang={env.locale}>
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>{fullTitle}</title>
        <link rel="stylesheet" href="/assets/guichet.css" nonce={env.nonce.style} />
        <script src="/assets/guichet.js" defer nonce={env.nonce.script}></script>
      </head>
      <body>
        <a class="skip-link" href="#main">
          {m.layout.skipLink}
        </a>
        <header class="site-header">
          <div class="container header-inner">
            <a class="brand" href="/">
              <span class="brand-name">{m.service}</span>
              <span class="brand-tenant">{env.tenantName}</span>
            </a>
            <a class="lang-switch" href={langHref(env.path, m.otherLanguage.code)} lang={m.otherLanguage.code} hreflang={m.otherLanguage.code}>
              <span class="visually-hidden">{m.otherLanguage.switchLabel} — </span>
              {m.otherLanguage.label}
            </a>
          </div>
          <nav class="site-nav" aria-label={m.layout.mainNav}>
            <ul class="container nav-list">
              <li>
                <a href="/directory">{m.layout.directory}</a>
              </li>
              {actor && (
                <li>
                  <a href="/account">{m.layout.myFile}</a>
                </li>
              )}
              {isStaff && (
                <li>
                  <a href="/staff">{m.layout.staffSpace}</a>
                </li>
              )}
              {isAdmin && (
                <li>
                  <a href="/admin">{m.layout.admin}</a>
                </li>
              )}
              {findsFiles && (
                <li>
                  <a href="/admin/files">{m.layout.files}</a>
                </li>
              )}
              {readsStatistics && (
                <li>
                  <a href="/operator/statistics">{m.statistics.link}</a>
                </li>
              )}
              {readsStatistics && (
                <li>
                  <a href="/operator/allocation">{m.allocationAdmin.link}</a>
                </li>
              )}
              {assists && (
                <li>
                  <a href="/assist">{m.assisted.link}</a>
                </li>
              )}
              {env.demo && (
                <li>
                  <a href="/demo/mail">{m.layout.demoMail}</a>
                </li>
              )}
              {!actor && (
                <li>
                  <a href="/signin">{m.layout.signIn}</a>
                </li>
              )}
              {!actor && (
                <li>
                  <a href="/signup">{m.layout.signUp}</a>
                </li>
              )}
              {actor && (
                <li class="nav-account">
                  <span class="nav-email">{m.layout.signedInAs(actor.email)}</span>
                  <form method="post" action="/signout" class="inline-form">
                    <Csrf env={env} />
                    <button type="submit" class="link-button">
                      {m.layout.signOut}
                    </button>
                  </form>
                </li>
              )}
            </ul>
          </nav>
        </header>
        {actor?.assisting && (
          <section class="assist-banner" aria-label={m.assisted.bannerLabel}>
            <div class="container">
              <p>
                <strong>{m.assisted.banner(actor.assisting.email, formatDateTime(env.locale, actor.assisting.until))}</strong>
              </p>
              <form method="post" action="/assist/end" class="inline-form">
                <Csrf env={env} />
                <button type="submit" class="button button--secondary">
                  {m.assisted.end}
                </button>
              </form>
            </div>
          </section>
        )}
        <main id="main" class="container" tabindex={-1}>
          {props.children}
        </main>
        <footer class="site-footer">
          <div class="container">
            <p>{m.layout.footer}</p>
          </div>
        </footer>
      </body>
    </html>
  );
}

export function Csrf({ env }: { env: PageEnv }) {
  return <input type="hidden" name="_csrf" value={env.csrf} />;
}

export function ErrorSummary({ env, errors }: { env: PageEnv; errors?: FieldErrors | undefined }) {
  if (!errors || !Object.keys(errors).length) return null;
  return (
    <div class="error-summary" role="alert" tabindex={-1} aria-labelledby="error-summary-title" data-error-summary>
      <h2 id="error-summary-title">{env.m.errors.summaryTitle}</h2>
      <ul>
        {Object.entries(errors).map(([name, key]) => (
          <li>
            <a href={`#${fieldId(name)}`}>{env.m.errors.field[key]}</a>
          </li>
        ))}
      </ul>
    </div>
  );
}

function FieldError({ env, name, errors }: { env: PageEnv; name: string; errors?: FieldErrors | undefined }) {
  const key = errors?.[name];
  if (!key) return null;
  return (
    <p class="field-error" id={`${fieldId(name)}-error`}>
      <span class="visually-hidden">{env.m.layout.errorTitlePrefix}</span>
      {env.m.errors.field[key]}
    </p>
  );
}

function describedBy(name: string, hint?: string, errors?: FieldErrors) {
  const ids = [hint ? `${fieldId(name)}-hint` : '', errors?.[name] ? `${fieldId(name)}-error` : ''].filter(Boolean);
  return ids.length ? ids.join(' ') : undefined;
}

export function TextField(props: {
  env: PageEnv;
  name: string;
  label: string;
  hint?: string;
  value?: string | undefined;
  errors?: FieldErrors | undefined;
  type?: 'text' | 'email' | 'password' | 'date' | 'search';
  autocomplete?: string;
  required?: boolean;
  width?: 'short' | 'medium' | 'long';
  spellcheck?: boolean;
}) {
  const id = fieldId(props.name);
  const invalid = !!props.errors?.[props.name];
  return (
    <div class={`field${invalid ? ' field--error' : ''}`}>
      <label for={id}>{props.label}</label>
      {props.hint && (
        <p class="hint" id={`${id}-hint`}>
          {props.hint}
        </p>
      )}
      <FieldError env={props.env} name={props.name} errors={props.errors} />
      {h('input', {
        id,
        name: props.name,
        type: props.type ?? 'text',
        value: props.type === 'password' ? undefined : props.value,
        autocomplete: props.autocomplete,
        required: props.required,
        spellcheck: props.spellcheck,
        'aria-invalid': invalid ? 'true' : undefined,
        'aria-describedby': describedBy(props.name, props.hint, props.errors),
        class: `input input--${props.width ?? 'long'}`,
        // preact 11 types <input> per `type`; one component serves several types
      } as never)}
    </div>
  );
}

export function Checkbox(props: { name: string; label: string; checked?: boolean; value?: string }) {
  const id = fieldId(props.name);
  return (
    <div class="checkbox">
      <input type="checkbox" id={id} name={props.name} value={props.value ?? 'on'} checked={props.checked} />
      <label for={id}>{props.label}</label>
    </div>
  );
}

export function Fieldset(props: { legend: string; hint?: string; name?: string; env?: PageEnv; errors?: FieldErrors | undefined; children: ComponentChildren }) {
  const invalid = props.name && props.errors?.[props.name];
  return (
    <div class={`field${invalid ? ' field--error' : ''}`} id={props.name ? fieldId(props.name) : undefined} tabindex={props.name ? -1 : undefined}>
      <fieldset aria-describedby={props.name ? describedBy(props.name, props.hint, props.errors) : undefined}>
        <legend>{props.legend}</legend>
        {props.hint && props.name && (
          <p class="hint" id={`${fieldId(props.name)}-hint`}>
            {props.hint}
          </p>
        )}
        {props.name && props.env && <FieldError env={props.env} name={props.name} errors={props.errors} />}
        {props.children}
      </fieldset>
    </div>
  );
}

export function Select(props: {
  env: PageEnv;
  name: string;
  label: string;
  options: { value: string; label: string }[];
  value?: string | undefined;
  errors?: FieldErrors | undefined;
}) {
  const id = fieldId(props.name);
  return (
    <div class={`field${props.errors?.[props.name] ? ' field--error' : ''}`}>
      <label for={id}>{props.label}</label>
      <FieldError env={props.env} name={props.name} errors={props.errors} />
      <select id={id} name={props.name} class="input input--medium" aria-describedby={describedBy(props.name, undefined, props.errors)}>
        {props.options.map((o) => (
          <option value={o.value} selected={o.value === props.value}>
            {o.label}
          </option>
        ))}
      </select>
    </div>
  );
}

export function Notice({ children }: { children: ComponentChildren }) {
  return (
    <div class="notice" role="status">
      {children}
    </div>
  );
}

export function Tag({ tone, children }: { tone: 'blue' | 'green' | 'grey' | 'orange'; children: ComponentChildren }) {
  return <strong class={`tag tag--${tone}`}>{children}</strong>;
}

export function SummaryList({ rows }: { rows: [string, ComponentChildren][] }) {
  return (
    <dl class="summary-list">
      {rows.map(([k, v]) => (
        <div class="summary-row">
          <dt>{k}</dt>
          <dd>{v}</dd>
        </div>
      ))}
    </dl>
  );
}

export function Pagination({ env, page, pages, href }: { env: PageEnv; page: number; pages: number; href: (p: number) => string }) {
  if (pages <= 1) return null;
  return (
    <nav class="pagination" aria-label={env.m.pagination.label}>
      {page > 1 ? (
        <a href={href(page - 1)} rel="prev">
          {env.m.pagination.previous}
        </a>
      ) : (
        <span />
      )}
      <span>{env.m.pagination.pageOf(page, pages)}</span>
      {page < pages ? (
        <a href={href(page + 1)} rel="next">
          {env.m.pagination.next}
        </a>
      ) : (
        <span />
      )}
    </nav>
  );
}
