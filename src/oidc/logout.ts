/**
 * Back-channel logout when a person's Guichet sign-ins end other than by
 * their own sign-out in this browser (which routes.tsx handles): an
 * administrator ended their sessions, their roles changed, their account
 * was suspended or closed, detection ended their sessions. Whatever the path,
 * the result is the same in the database — no live session left, or an
 * account no longer active — so the provider's sessions of such a person are
 * found from that, not from each path that can cause it: the database notes
 * each account whose session is revoked or which stops being active
 * (migration 0036, whatever wrote the change), and after a request only those
 * accounts' provider sessions are looked at; the minute's sweep looks at all
 * of them, for sign-ins that merely ran out.
 *
 * Each provider session found is deleted first (one statement, RETURNING):
 * two sweeps at the same instant cannot both claim it, so each relying party
 * is told once. Then each client the person signed into that registered a
 * back-channel address gets a signed logout token naming the pairwise
 * subject and the session; the grants bound to the session are revoked as an
 * RP-initiated logout would; the whole is one audit event.
 */
import { sql } from 'kysely';
import type { Provider } from 'oidc-provider';
import { appendAudit } from '../audit/log.ts';
import type { AuditOrigin } from '../audit/events.ts';
import type { Deps } from '../context.ts';
import { LAST_OF_TRANSACTION } from '../db/held-begin.ts';
import { inTenant } from '../db/tenant.ts';
import { originFields, type Tenant } from '../tenants/service.ts';

type BackchannelClient = { backchannelLogoutUri?: string; backchannelLogout(sub: string, sid: string | undefined): Promise<void> };
type WithClients = Provider & { Client: { find(id: string): Promise<BackchannelClient | undefined> } };

interface SessionPayload {
  accountId?: string;
  authorizations?: Record<string, { sid?: string; grantId?: string; persistsLogout?: boolean }>;
}

export interface EndedSessions {
  sessions: number;
  told: number;
  failed: number;
}

/**
 * Which provider sessions to look at: those of the accounts the database noted
 * as their sign-ins ended (a session revoked, an account no longer active:
 * migration 0036), after a request; or every one of the tenant's, for the
 * minute's sweep, which also finds sign-ins that merely ran out.
 */
export type LogoutScope = 'noted' | 'all';

/**
 * The condition on a provider session (`p`) whose person has no live Guichet
 * session left: among the given accounts' provider sessions, or all of them
 * (null). By the account column (migration 0038): uuid equality reaches its
 * index under row-level security.
 */
export function orphanedProviderSessions(tenantId: string, accounts: readonly string[] | null, now: Date) {
  return sql`p.tenant_id = ${tenantId}
         AND p.model = 'Session'
         AND p.account_id IS NOT NULL
         ${accounts ? sql`AND p.account_id = ANY(${[...accounts]}::uuid[])` : sql``}
         AND NOT EXISTS (
           SELECT 1 FROM sessions s JOIN accounts a ON a.id = s.account_id AND a.tenant_id = s.tenant_id
            WHERE s.tenant_id = p.tenant_id AND s.account_id = p.account_id
              AND s.revoked_at IS NULL AND s.expires_at > ${now} AND a.status = 'active'
              AND s.last_seen_at + s.idle_timeout_seconds * interval '1 second' > ${now})`;
}

/** Ends the tenant's provider sessions whose person has no live Guichet session any more, telling the relying parties. */
export async function endOrphanedProviderSessions(
  deps: Deps,
  tenantId: string,
  providerOf: () => Promise<Provider>,
  origin: AuditOrigin,
  now: Date,
  log?: { warn(o: object, m: string): void },
  scope: LogoutScope = 'noted',
): Promise<EndedSessions> {
  const db = deps.db.db;
  const none: EndedSessions = { sessions: 0, told: 0, failed: 0 };
  // The notes are taken whatever the scope (the sweep looks at every account anyway): a DELETE … RETURNING, so
  // that of two servers taking them at once each account goes to one. Most requests end nobody's sign-in: then
  // this is the whole cost, one statement on an empty table.
  const noted = await inTenant(db, tenantId, (trx) =>
    sql<{ account_id: string }>`DELETE FROM oidc_logout_checks WHERE tenant_id = ${tenantId} RETURNING account_id ${sql.raw(LAST_OF_TRANSACTION)}`.execute(trx),
  );
  const accounts = noted.rows.map((r) => r.account_id);
  if (scope === 'noted' && !accounts.length) return none;
  const orphaned = orphanedProviderSessions(tenantId, scope === 'noted' ? accounts : null, now);
  // A look first: the tenant's provider is built only when there is work.
  const any = await inTenant(db, tenantId, (trx) => sql<{ one: number }>`SELECT 1 AS one FROM oidc_payloads p WHERE ${orphaned} LIMIT 1`.execute(trx));
  if (!any.rows.length) return none;
  const provider = await providerOf();
  const claimed = await inTenant(db, tenantId, async (trx) => {
    const rows = await sql<{ id: string; payload: SessionPayload | string }>`DELETE FROM oidc_payloads p WHERE ${orphaned} RETURNING p.id, p.payload`.execute(trx);
    return rows.rows.map((r) => ({ id: r.id, payload: (typeof r.payload === 'string' ? JSON.parse(r.payload) : r.payload) as SessionPayload }));
  });
  const out: EndedSessions = { sessions: claimed.length, told: 0, failed: 0 };
  for (const s of claimed) {
    const accountId = s.payload.accountId!;
    const auths = Object.entries(s.payload.authorizations ?? {});
    const told: string[] = [];
    const failed: string[] = [];
    for (const [clientId, auth] of auths) {
      const client = await (provider as WithClients).Client.find(clientId).catch(() => undefined);
      if (!client?.backchannelLogoutUri) continue;
      await client.backchannelLogout(accountId, auth.sid).then(
        () => told.push(clientId),
        (err: Error) => {
          failed.push(clientId);
          log?.warn({ err, clientId }, 'back-channel logout failed');
        },
      );
    }
    const grants = auths.map(([, a]) => a).filter((a) => a.grantId && !a.persistsLogout).map((a) => a.grantId!);
    await inTenant(db, tenantId, async (trx) => {
      if (grants.length) await trx.deleteFrom('oidc_payloads').where((eb) => eb.or([eb('grant_id', 'in', grants), eb.and([eb('model', '=', 'Grant'), eb('id', 'in', grants)])])).execute();
      await appendAudit(
        trx,
        tenantId,
        {
          action: 'oidc.logout',
          outcome: failed.length ? 'failure' : 'success',
          ...originFields(origin),
          targetType: 'oidc_client',
          targetIds: auths.map(([c]) => c).slice(0, 50),
          details: { via: 'sessions_ended', account: accountId, backchannel: told.length, failed: failed.length },
        },
        now,
      );
    });
    out.told += told.length;
    out.failed += failed.length;
  }
  return out;
}

const SWEEP_ORIGIN: AuditOrigin = { actorAccountId: null, actorRoles: ['system:oidc-sweep'], ip: null, userAgent: 'guichet serve (session sweep)', requestId: null };

/**
 * endOrphanedProviderSessions for each tenant given, as the server's own work:
 * for people whose Guichet sessions ran out with no request to notice it. One
 * tenant failing (a database error) does not keep the others from their turn.
 */
export async function endLapsedProviderSessions(
  deps: Deps,
  tenants: readonly { tenant: Tenant; issuer: string }[],
  providers: { get(tenant: Tenant, issuer: string): Promise<Provider> },
  log: { warn(o: object, m: string): void; error(o: object, m: string): void },
): Promise<EndedSessions> {
  const total: EndedSessions = { sessions: 0, told: 0, failed: 0 };
  for (const { tenant, issuer } of tenants) {
    try {
      const r = await endOrphanedProviderSessions(deps, tenant.id, () => providers.get(tenant, issuer), SWEEP_ORIGIN, deps.clock(), log, 'all');
      total.sessions += r.sessions;
      total.told += r.told;
      total.failed += r.failed;
    } catch (err) {
      log.error({ err, tenant: tenant.slug }, 'ending the OpenID Connect sessions of lapsed sign-ins failed');
    }
  }
  return total;
}
