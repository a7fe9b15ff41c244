import type { KoaContextWithOIDC } from 'oidc-provider';
import { render } from 'preact-render-to-string';
import { Csrf, Fieldset, Notice, Page, type PageEnv } from '../web/components.tsx';
import { formatDate } from '../web/i18n/index.ts';
import { pageEnv } from '../web/render.tsx';
import { bridgeOf } from './provider.ts';

/**
 * Pages the provider itself answers (logout confirmation, signed out, protocol
 * errors shown to the person), in Guichet's frame and language. The provider's
 * logout form carries its own anti-forgery token; it is copied, not trusted as HTML
 * from elsewhere: oidc-provider builds it from its own values.
 */
export async function renderProviderPage(ctx: KoaContextWithOIDC, page: { kind: 'logout'; form: string } | { kind: 'loggedOut' } | { kind: 'error'; error: string; description: string }): Promise<void> {
  const bridge = bridgeOf(ctx);
  ctx.type = 'html';
  if (!bridge) {
    ctx.body = '<!doctype html><title>Guichet</title><p>Guichet</p>';
    return;
  }
  const env = pageEnv(bridge.req, bridge.reply);
  const o = env.m.oidc;
  let node;
  if (page.kind === 'logout') {
    const xsrf = /name="xsrf" value="([^"]*)"/.exec(page.form)?.[1] ?? '';
    const action = /action="([^"]*)"/.exec(page.form)?.[1] ?? '';
    node = (
      <Page env={env} title={o.logoutTitle}>
        <h1>{o.logoutTitle}</h1>
        <p>{o.logoutLead(env.tenantName)}</p>
        <form method="post" action={new URL(action, 'http://x').pathname}>
          <input type="hidden" name="xsrf" value={xsrf} />
          <div class="actions">
            <button type="submit" class="button" name="logout" value="yes">
              {o.logoutYes}
            </button>
            <button type="submit" class="button button--secondary">
              {o.logoutNo}
            </button>
          </div>
        </form>
      </Page>
    );
  } else if (page.kind === 'loggedOut') {
    node = (
      <Page env={{ ...env, actor: null }} title={o.loggedOutTitle}>
        <h1>{o.loggedOutTitle}</h1>
        <Notice>{o.loggedOut}</Notice>
      </Page>
    );
  } else {
    // A sign-in that took too long (its interaction or session cookie expired) is not the service's fault.
    const expired = page.error === 'invalid_request' && /interaction|session/i.test(page.description);
    node = (
      <Page env={env} title={expired ? o.expiredTitle : o.errorTitle}>
        <h1>{expired ? o.expiredTitle : o.errorTitle}</h1>
        <p>{expired ? o.expired : o.error(page.error.replace(/[^a-z_]/g, ''))}</p>
        <p class="muted">{env.m.errors.requestId(bridge.req.id)}</p>
      </Page>
    );
  }
  ctx.body = `<!doctype html>\n${render(node)}`;
}

export interface ConsentView {
  uid: string;
  clientName: string;
  logoUri: string | null;
  /** Scopes asked for and not yet granted, in the order shown. */
  scopes: string[];
  /** The person's entitlements under each entitlement scope asked for. */
  entitlements: Record<string, { label: string; validUntil: string | null }[]>;
}

const STANDARD_LABELS = { openid: 'scopeOpenid', email: 'scopeEmail', profile: 'scopeProfile', offline_access: 'scopeOfflineAccess' } as const;

export function ConsentPage({ env, view }: { env: PageEnv; view: ConsentView }) {
  const o = env.m.oidc;
  return (
    <Page env={env} title={o.consentTitle(view.clientName)}>
      {/* The name is in the heading: the logo adds nothing for a screen reader. */}
      {view.logoUri && <img src={view.logoUri} alt="" width={64} height={64} />}
      <h1>{o.consentTitle(view.clientName)}</h1>
      <p class="lead">{o.consentLead(view.clientName, env.tenantName)}</p>
      {env.actor && <p>{o.signedInAs(env.actor.email)}</p>}
      <form method="post" action={`/oidc/interaction/${view.uid}/consent`}>
        <Csrf env={env} />
        <Fieldset legend={o.consentLegend}>
          <p class="hint">{o.consentHint}</p>
          <div>
            {view.scopes.map((s) => {
              const std = (STANDARD_LABELS as Record<string, keyof typeof o>)[s];
              const label = std ? (o[std] as string) : o.scopeEntitlements(s);
              const id = `scope-${s}`;
              return (
                <div class="checkbox">
                  {s === 'openid' ? (
                    <input type="checkbox" id={id} name="scope" value="openid" checked disabled />
                  ) : (
                    <input type="checkbox" id={id} name="scope" value={s} checked />
                  )}
                  <label for={id}>
                    {label}
                    {view.entitlements[s] && (
                      <span class="hint">
                        {' — '}
                        {view.entitlements[s]!.length
                          ? view.entitlements[s]!.map((e) => (e.validUntil ? `${e.label} (${o.validUntil(formatDate(env.locale, e.validUntil))})` : e.label)).join(', ')
                          : o.scopeEntitlementsNone}
                      </span>
                    )}
                  </label>
                </div>
              );
            })}
          </div>
        </Fieldset>
        <div class="actions">
          <button type="submit" class="button" name="decision" value="allow">
            {o.allow}
          </button>
          <button type="submit" class="button button--secondary" name="decision" value="deny">
            {o.deny}
          </button>
        </div>
      </form>
      <p class="muted">{o.notYou}</p>
    </Page>
  );
}

export function ExpiredPage({ env }: { env: PageEnv }) {
  return (
    <Page env={env} title={env.m.oidc.expiredTitle}>
      <h1>{env.m.oidc.expiredTitle}</h1>
      <p>{env.m.oidc.expired}</p>
    </Page>
  );
}
