import type { Logger } from 'pino';
import type { Actor } from './access/actor.ts';
import { rolesOf } from './access/actor.ts';
import { assistedFamily } from './access/decide.ts';
import type { AuditOrigin } from './audit/events.ts';
import type { Config } from './config/config.ts';
import type { KeyProvider } from './crypto/keys.ts';
import type { Database } from './db/connection.ts';
import type { Tenant, TenantDirectory } from './tenants/service.ts';
import type { Locale } from './web/i18n/index.ts';

/** Everything a service needs from the outside world; the clock is injected so tests set the time. */
export interface Deps {
  db: Database;
  config: Config;
  clock: () => Date;
  log: Logger;
  tenants: TenantDirectory;
  keys: KeyProvider;
}

/** One request (or CLI run): for which tenant, by whom, from where, when. */
export interface Ctx {
  tenant: Tenant;
  actor: Actor | null;
  ip: string | null;
  userAgent: string | null;
  requestId: string | null;
  locale: Locale;
  now: Date;
  /** Base URL for links sent by e-mail. */
  baseUrl: string;
}

export function originOf(ctx: Ctx): AuditOrigin {
  return {
    actorAccountId: ctx.actor?.accountId ?? null,
    actorRoles: rolesOf(ctx.actor, ctx.now),
    ip: ctx.ip,
    userAgent: ctx.userAgent,
    requestId: ctx.requestId,
    onBehalfOf: assistedFamily(ctx.actor, ctx.now),
  };
}
