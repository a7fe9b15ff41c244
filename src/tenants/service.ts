import type { Kysely } from 'kysely';
import { createChainHead, appendAudit } from '../audit/log.ts';
import type { AuditOrigin } from '../audit/events.ts';
import type { DB } from '../db/schema.ts';
import { enterTenant } from '../db/tenant.ts';
import { parseRules, type TenantRules } from './rules.ts';

export interface Tenant {
  id: string;
  slug: string;
  nameFr: string;
  nameEn: string;
  hosts: string[];
  rules: TenantRules;
  lockdownLevel: number;
}

type TenantRow = DB['tenants'] extends infer T ? { [K in keyof T]: unknown } : never;

function toTenant(r: Record<keyof TenantRow, unknown>): Tenant {
  return {
    id: r.id as string,
    slug: r.slug as string,
    nameFr: r.name_fr as string,
    nameEn: r.name_en as string,
    hosts: r.hosts as string[],
    rules: parseRules(r.rules),
    lockdownLevel: Number(r.lockdown_level),
  };
}

/**
 * Which tenant a request is for, from its Host header. Tenants are few and
 * change rarely; a short cache keeps the per-request cost at a map lookup
 * while a lockdown raised on another instance is seen within two seconds.
 */
/**
 * Where a tenant's pages are, for the links Guichet e-mails outside a request (a job, a command): its first host
 * name — https in production, the server's port otherwise —, or the configured public address for a tenant
 * without one. A request's own links use the host it came in on.
 */
export function tenantBaseUrl(config: { production: boolean; port: number; publicUrl: string | undefined }, hosts: readonly string[]): string {
  const host = hosts[0];
  if (!host) return config.publicUrl ?? `http://localhost:${config.port}`;
  return config.production ? `https://${host}` : `http://${host}:${config.port}`;
}

export class TenantDirectory {
  private cache: { at: number; bySlug: Map<string, Tenant>; byHost: Map<string, Tenant> } | null = null;
  /**
   * `strictHosts` (production): a Host that names no tenant reaches the default tenant only if that tenant names no
   * host of its own (a deployment of one programme that never listed its address). Otherwise a proxy that does not
   * pass the browser's Host on would send every programme's people to the default one, sign-ups and files included.
   */
  constructor(
    private readonly db: Kysely<DB>,
    private readonly defaultSlug: string,
    private readonly ttlMs = 2000,
    private readonly strictHosts = false,
  ) {}

  async all(): Promise<Tenant[]> {
    return [...(await this.load()).bySlug.values()];
  }

  async bySlug(slug: string): Promise<Tenant | undefined> {
    return (await this.load()).bySlug.get(slug);
  }

  async forHost(hostHeader: string | undefined): Promise<Tenant | undefined> {
    const c = await this.load();
    const host = (hostHeader ?? '').toLowerCase().replace(/:\d+$/, '');
    const found = c.byHost.get(host);
    if (found) return found;
    const fallback = c.bySlug.get(this.defaultSlug);
    return this.strictHosts && fallback?.hosts.length ? undefined : fallback;
  }

  invalidate(): void {
    this.cache = null;
  }

  private async load() {
    const now = Date.now();
    if (this.cache && now - this.cache.at < this.ttlMs) return this.cache;
    const rows = await this.db.selectFrom('tenants').selectAll().execute();
    const bySlug = new Map<string, Tenant>();
    const byHost = new Map<string, Tenant>();
    for (const r of rows) {
      const t = toTenant(r as never);
      bySlug.set(t.slug, t);
      for (const h of t.hosts) byHost.set(h.toLowerCase(), t);
    }
    this.cache = { at: now, bySlug, byHost };
    return this.cache;
  }
}

export interface NewTenant {
  slug: string;
  nameFr: string;
  nameEn: string;
  hosts?: string[];
  rules?: Partial<TenantRules>;
}

/** Creates a tenant and its audit chain. Needs the owner connection (CLI). */
export async function createTenant(ownerDb: Kysely<DB>, t: NewTenant, origin: AuditOrigin, now: Date): Promise<Tenant> {
  const rules = parseRules(t.rules ?? {});
  // One transaction: a tenant never exists without its audit chain.
  const row = await ownerDb.transaction().execute(async (trx) => {
    const r = await trx
      .insertInto('tenants')
      .values({
        slug: t.slug,
        name_fr: t.nameFr,
        name_en: t.nameEn,
        // As a request's Host is compared (the database refuses anything else, and a host another tenant has).
        hosts: (t.hosts ?? []).map((h) => h.trim().toLowerCase()),
        rules: JSON.stringify(t.rules ?? {}),
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    await enterTenant(trx, r.id, null);
    await createChainHead(trx, r.id);
    await appendAudit(trx, r.id, { action: 'tenant.create', outcome: 'success', ...originFields(origin), details: { slug: t.slug } }, now);
    return r;
  });
  return { ...toTenant(row as never), rules };
}

export function originFields(o: AuditOrigin) {
  return {
    actorAccountId: o.actorAccountId,
    actorRoles: o.actorRoles,
    ip: o.ip,
    userAgent: o.userAgent,
    requestId: o.requestId,
    ...(o.onBehalfOf ? { onBehalfOf: o.onBehalfOf } : {}),
  };
}
