import { createHmac, timingSafeEqual } from 'node:crypto';
import { decide } from '../access/decide.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import type { KeyProvider } from '../crypto/keys.ts';
import type { Trx } from '../db/connection.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError, ValidationError } from '../errors.ts';
import { requireRecentAuth } from '../identity/stepup.ts';
import { originFields } from '../tenants/service.ts';
import { PollLoop } from '../jobs/poll.ts';
import { QuietWatch, type PassOutcome } from '../jobs/quiet.ts';

/**
 * Alerts as signed webhooks. Each delivery is a POST of a JSON body with
 *
 *   Guichet-Timestamp: <seconds since 1970>
 *   Guichet-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>
 *
 * so that a receiver can check the body came from Guichet and refuse a
 * replay outside its tolerance (verifyWebhook below does both). The secret
 * is derived per tenant from the root key and never stored; officers read it
 * on the console. Deliveries are rows written with the alert, in its
 * transaction, and sent by every instance's sender (claimed with SKIP
 * LOCKED, so one sends each), retried with a growing delay.
 */

export function webhookSecret(keys: KeyProvider, tenantId: string): string {
  return keys.derive(`detection-webhook:${tenantId}`).toString('base64url');
}

export function signWebhook(secret: string, timestamp: number, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/** For receivers (and tests): the signature matches and the timestamp is within `toleranceSeconds` of now. */
export function verifyWebhook(secret: string, headers: { timestamp: string | undefined; signature: string | undefined }, body: string, now: Date, toleranceSeconds = 300): boolean {
  const ts = Number(headers.timestamp);
  if (!Number.isInteger(ts) || Math.abs(now.getTime() / 1000 - ts) > toleranceSeconds || !headers.signature) return false;
  const expected = Buffer.from(signWebhook(secret, ts, body));
  const given = Buffer.from(headers.signature);
  return expected.length === given.length && timingSafeEqual(expected, given);
}

export interface WebhookPayload {
  type: 'security_alert';
  id: string;
  tenant: string;
  rule: string;
  severity: string;
  response: string;
  lockdownLevel: number | null;
  subjectAccountId: string | null;
  createdAt: string;
  url: string;
}

/** In the alert's transaction: a delivery to the tenant's webhook, if it has one. */
export async function enqueueWebhook(trx: Trx, tenantId: string, alertId: string, payload: WebhookPayload, now: Date): Promise<void> {
  const hook = await trx.selectFrom('detection_webhooks').select('url').executeTakeFirst();
  if (!hook) return;
  await trx.insertInto('detection_webhook_deliveries').values({ tenant_id: tenantId, alert_id: alertId, url: hook.url, body: JSON.stringify(payload), created_at: now, next_attempt_at: now }).execute();
}

function validUrl(raw: unknown, production: boolean): string {
  let u: URL;
  try {
    u = new URL(typeof raw === 'string' ? raw.trim() : '');
  } catch {
    throw new ValidationError({ url: 'webhookUrlInvalid' });
  }
  const local = u.hostname === 'localhost' || u.hostname === '127.0.0.1' || u.hostname === '[::1]';
  // Alerts name accounts: they travel over HTTPS, except to a receiver on this machine outside production.
  if (u.protocol !== 'https:' && !(u.protocol === 'http:' && local && !production)) throw new ValidationError({ url: 'webhookUrlInvalid' });
  if (u.username || u.password || u.href.length > 500) throw new ValidationError({ url: 'webhookUrlInvalid' });
  return u.href;
}

/** A security officer sets (or clears, with an empty URL) where the tenant's alerts are sent. */
export async function setWebhook(deps: Deps, ctx: Ctx, rawUrl: unknown): Promise<void> {
  const d = decide(ctx.actor, 'detection.webhook.update', { type: 'tenant' }, ctx.now);
  if (!d.allowed || !ctx.actor) {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action: 'detection.webhook.update', outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'tenant', targetIds: [ctx.tenant.id], details: { reason: d.reason ?? 'denied' } }, ctx.now);
    throw new AppError(ctx.actor ? 'forbidden' : 'signInRequired');
  }
  requireRecentAuth(ctx);
  const by = ctx.actor.accountId;
  const url = typeof rawUrl === 'string' && rawUrl.trim() === '' ? null : validUrl(rawUrl, deps.config.production);
  await inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      if (url === null) {
        await trx.deleteFrom('detection_webhooks').execute();
      } else {
        await trx
          .insertInto('detection_webhooks')
          .values({ tenant_id: ctx.tenant.id, url, updated_at: ctx.now, updated_by: by })
          .onConflict((oc) => oc.column('tenant_id').doUpdateSet({ url, updated_at: ctx.now, updated_by: by }))
          .execute();
      }
      await appendAudit(trx, ctx.tenant.id, { action: 'detection.webhook.update', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'tenant', targetIds: [ctx.tenant.id], details: { url: url ? new URL(url).origin : null } }, ctx.now);
    },
    by,
  );
}

/** The tenant's webhook and the secret its receiver checks signatures with, for officers. */
export async function webhookSettings(deps: Deps, ctx: Ctx): Promise<{ url: string | null; secret: string; recent: { createdAt: Date; deliveredAt: Date | null; attempts: number; lastStatus: number | null; lastError: string | null }[] }> {
  const d = decide(ctx.actor, 'detection.webhook.update', { type: 'tenant' }, ctx.now);
  if (!d.allowed) throw new AppError(ctx.actor ? 'forbidden' : 'signInRequired');
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const hook = await trx.selectFrom('detection_webhooks').select('url').executeTakeFirst();
    const recent = await trx.selectFrom('detection_webhook_deliveries').select(['created_at', 'delivered_at', 'attempts', 'last_status', 'last_error']).orderBy('created_at', 'desc').limit(10).execute();
    return {
      url: hook?.url ?? null,
      secret: webhookSecret(deps.keys, ctx.tenant.id),
      recent: recent.map((r) => ({ createdAt: r.created_at, deliveredAt: r.delivered_at, attempts: r.attempts, lastStatus: r.last_status, lastError: r.last_error })),
    };
  });
}

const MAX_ATTEMPTS = 12;

/** Sends pending deliveries, on every instance; started by `guichet serve`. */
export class WebhookSender {
  private readonly loop: PollLoop;
  /** Skips the pass over every tenant while no delivery has been queued since the last quiet one, until a retry is due. */
  readonly watch: QuietWatch;

  constructor(
    private readonly deps: Deps,
    private readonly intervalMs = 250,
    private readonly timeoutMs = 5000,
    /** The tenants this sender serves (all by default), as the sealer's tenantFilter. */
    private readonly tenantFilter: (tenant: { id: string }) => boolean = () => true,
    opts: { watchWork?: boolean } = {},
  ) {
    this.watch = new QuietWatch(deps.db.db, 'webhook', opts.watchWork ?? true);
    this.loop = new PollLoop(() => this.pass(), this.intervalMs, this.deps.log, 'webhook delivery failed', this.watch);
  }

  start(): void {
    this.loop.start();
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }

  /** One pass over every tenant's due deliveries. Returns how many were delivered. */
  async runOnce(): Promise<number> {
    return (await this.pass()).delivered;
  }

  private async pass(): Promise<PassOutcome & { delivered: number }> {
    let delivered = 0;
    let quiet = true;
    // The first retry still waiting, in any tenant: a quiet loop wakes for it.
    let wakeAt = Infinity;
    for (const tenant of (await this.deps.tenants.all()).filter(this.tenantFilter)) {
      const now = this.deps.clock();
      // Claim: push the next attempt out, so that another instance leaves these alone while we send.
      const due = await inTenant(this.deps.db.db, tenant.id, async (trx) => {
        const rows = await trx
          .selectFrom('detection_webhook_deliveries')
          .select(['id', 'url', 'body', 'attempts'])
          .where('delivered_at', 'is', null)
          .where('next_attempt_at', '<=', now)
          .where('attempts', '<', MAX_ATTEMPTS)
          .orderBy('next_attempt_at')
          .limit(20)
          .forUpdate()
          .skipLocked()
          .execute();
        for (const r of rows) {
          await trx.updateTable('detection_webhook_deliveries').set({ next_attempt_at: new Date(now.getTime() + 60_000) }).where('id', '=', r.id).execute();
        }
        if (!rows.length) {
          const next = await trx
            .selectFrom('detection_webhook_deliveries')
            .select((eb) => eb.fn.min('next_attempt_at').as('at'))
            .where('delivered_at', 'is', null)
            .where('attempts', '<', MAX_ATTEMPTS)
            .executeTakeFirst();
          if (next?.at) wakeAt = Math.min(wakeAt, new Date(next.at).getTime());
        }
        return rows;
      });
      if (due.length) quiet = false;
      for (const r of due) {
        const ts = Math.floor(this.deps.clock().getTime() / 1000);
        let status: number | null = null;
        let error: string | null = null;
        try {
          const res = await fetch(r.url, {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'guichet-timestamp': String(ts), 'guichet-signature': signWebhook(webhookSecret(this.deps.keys, tenant.id), ts, r.body) },
            body: r.body,
            redirect: 'manual',
            signal: AbortSignal.timeout(this.timeoutMs),
          });
          status = res.status;
          await res.body?.cancel();
          if (res.status < 200 || res.status >= 300) error = `HTTP ${res.status}`;
        } catch (err) {
          error = (err as Error).name === 'TimeoutError' ? 'timeout' : String((err as Error).message).slice(0, 200);
        }
        const attempts = r.attempts + 1;
        await inTenant(this.deps.db.db, tenant.id, (trx) =>
          trx
            .updateTable('detection_webhook_deliveries')
            .set(
              error
                ? { attempts, last_status: status, last_error: error, next_attempt_at: new Date(this.deps.clock().getTime() + Math.min(3600, 2 ** attempts) * 1000) }
                : { attempts, last_status: status, last_error: null, delivered_at: this.deps.clock() },
            )
            .where('id', '=', r.id)
            .execute(),
        );
        if (!error) delivered++;
      }
    }
    return { delivered, quiet, ...(Number.isFinite(wakeAt) ? { wakeInMs: Math.max(0, wakeAt - this.deps.clock().getTime()) } : {}) };
  }
}
