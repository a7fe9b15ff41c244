import { createHash } from 'node:crypto';
import { isIPv6 } from 'node:net';
import { sql } from 'kysely';
import { appendAudit, appendAuditAlone, appendAuditManyHeld } from '../audit/log.ts';
import type { AuditEventInput } from '../audit/events.ts';
import type { Trx } from '../db/connection.ts';
import { untrustedId } from '../audit/untrusted.ts';
import { decide, refusal } from '../access/decide.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError } from '../errors.ts';
import { enqueueMail } from '../mail/outbox.ts';
import { originFields } from '../tenants/service.ts';
import { formatDateTime, messages, type Locale } from '../web/i18n/index.ts';
import { hashToken, isTokenShaped, newToken } from './tokens.ts';

/** "Firefox on Windows", from a User-Agent header: enough for a person to recognise a device. */
export function describeDevice(userAgent: string | null | undefined): string | null {
  if (!userAgent) return null;
  const browser = /Edg\//.test(userAgent)
    ? 'Edge'
    : /Firefox\//.test(userAgent)
      ? 'Firefox'
      : /Chrome\/|Chromium\//.test(userAgent)
        ? 'Chrome'
        : /Safari\//.test(userAgent)
          ? 'Safari'
          : null;
  const os = /Android/.test(userAgent)
    ? 'Android'
    : /iPhone|iPad|iOS/.test(userAgent)
      ? 'iOS'
      : /Windows/.test(userAgent)
        ? 'Windows'
        : /Mac OS X|Macintosh/.test(userAgent)
          ? 'macOS'
          : /Linux/.test(userAgent)
            ? 'Linux'
            : null;
  if (browser && os) return `${browser} — ${os}`;
  return browser ?? os ?? userAgent.slice(0, 60);
}

export interface SessionView {
  id: string;
  current: boolean;
  device: string | null;
  ip: string | null;
  createdAt: Date;
  lastSeenAt: Date;
}

/** The actor's own live sessions. */
export async function listOwnSessions(deps: Deps, ctx: Ctx): Promise<SessionView[]> {
  const actor = ctx.actor;
  if (!actor) throw new AppError('signInRequired');
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const rows = await trx
      .selectFrom('sessions')
      .select(['id', 'ip', 'user_agent', 'created_at', 'last_seen_at', 'idle_timeout_seconds'])
      .where('account_id', '=', actor.accountId)
      .where('revoked_at', 'is', null)
      .where('expires_at', '>', ctx.now)
      .orderBy('last_seen_at', 'desc')
      .execute();
    return rows
      .filter((r) => r.last_seen_at.getTime() + r.idle_timeout_seconds * 1000 > ctx.now.getTime())
      .map((r) => ({ id: r.id, current: r.id === actor.sessionId, device: describeDevice(r.user_agent), ip: r.ip, createdAt: r.created_at, lastSeenAt: r.last_seen_at }));
  });
}

/** Ends one of the actor's sessions, or all but the current one. Returns how many ended. */
export async function endOwnSessions(deps: Deps, ctx: Ctx, which: { sessionId: string } | 'others'): Promise<number> {
  const actor = ctx.actor;
  if (!actor) throw new AppError('signInRequired');
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    let q = trx.updateTable('sessions').set({ revoked_at: ctx.now }).where('account_id', '=', actor.accountId).where('revoked_at', 'is', null);
    if (which === 'others') {
      if (actor.sessionId) q = q.where('id', '<>', actor.sessionId);
    } else {
      if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(which.sessionId)) throw new AppError('notFound');
      q = q.where('id', '=', which.sessionId);
    }
    const ended = await q.returning('id').execute();
    if (which !== 'others' && !ended.length) throw new AppError('notFound');
    if (ended.length) {
      await appendAudit(trx, ctx.tenant.id, { action: 'identity.session.end', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'session', targetIds: ended.map((e) => e.id), details: { by: 'self', count: ended.length } }, ctx.now);
    }
    return ended.length;
  });
}

/** An administrator ends every session of an account of the tenant. */
export async function endAccountSessions(deps: Deps, ctx: Ctx, accountId: string): Promise<number> {
  const d = decide(ctx.actor, 'identity.sessions.end', { type: 'tenant' }, ctx.now);
  if (!d.allowed) {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action: 'identity.session.end', outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'account', targetIds: [untrustedId(accountId)], details: { reason: d.reason ?? 'denied' } }, ctx.now);
    throw refusal(ctx.actor, d);
  }
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(accountId)) throw new AppError('notFound');
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const account = await trx.selectFrom('accounts').select('id').where('id', '=', accountId).executeTakeFirst();
    if (!account) throw new AppError('notFound');
    const ended = await trx.updateTable('sessions').set({ revoked_at: ctx.now }).where('account_id', '=', accountId).where('revoked_at', 'is', null).returning('id').execute();
    // The facility API keys the account made act as it: they end with its sessions.
    const keys = await trx.updateTable('facility_api_keys').set({ revoked_at: ctx.now, revoked_by: ctx.actor!.accountId }).where('created_by', '=', accountId).where('revoked_at', 'is', null).returning('id').execute();
    await appendAudit(trx, ctx.tenant.id, { action: 'identity.session.end', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'account', targetIds: [accountId, ...ended.map((e) => e.id), ...keys.map((k) => k.id)], details: { by: 'administrator', count: ended.length, apiKeys: keys.length } }, ctx.now);
    return ended.length;
  });
}

/** The stored form of a device cookie: only its hash is kept. */
export function deviceHash(token: string): Buffer {
  return createHash('sha256').update(`device:${token}`).digest();
}

/** The browser's device token: the one its cookie carries, or a new one. */
export function deviceToken(cookie: string | undefined): string {
  return isTokenShaped(cookie) ? cookie : newToken().token;
}

/**
 * Notes the device in the caller's transaction, in one statement: its row is
 * inserted or touched, and the statement says what the account knew before
 * (one snapshot, so two sign-ins racing from a new browser do not collide).
 */
export async function touchDevice(trx: Trx, ctx: Ctx, accountId: string, token: string): Promise<{ known: boolean; others: number }> {
  const hash = deviceHash(token);
  const userAgent = ctx.userAgent?.slice(0, 512) ?? null;
  const { rows } = await sql<{ known: boolean | null; n: string }>`
    WITH d AS (
      INSERT INTO known_devices (tenant_id, account_id, device_hash, first_seen_at, last_seen_at, user_agent)
      VALUES (${ctx.tenant.id}, ${accountId}, ${hash}, ${ctx.now}, ${ctx.now}, ${userAgent})
      ON CONFLICT (account_id, device_hash) DO UPDATE SET last_seen_at = excluded.last_seen_at, user_agent = excluded.user_agent
    )
    SELECT bool_or(device_hash = ${hash}) AS known, count(*) AS n FROM known_devices WHERE account_id = ${accountId}`.execute(trx);
  const r = rows[0];
  return { known: !!r?.known, others: Number(r?.n ?? 0) };
}

/**
 * A device the account had not used, when it had used others: the notice by
 * e-mail, written here, and its audit event, returned for the caller to
 * write with its own.
 */
export async function newDeviceNotice(trx: Trx, ctx: Ctx, account: { id: string; email: string; locale: Locale }): Promise<AuditEventInput> {
  const m = messages(account.locale);
  const device = describeDevice(ctx.userAgent) ?? m.security.unknownDevice;
  await enqueueMail(trx, ctx.tenant.id, { to: account.email, locale: account.locale, template: 'new_device', subject: m.security.newDeviceSubject, body: m.security.newDeviceBody(formatDateTime(account.locale, ctx.now), `${device}${ctx.ip ? ` (${ctx.ip})` : ''}`, `${ctx.baseUrl}/account/sessions`) }, ctx.now);
  return { action: 'identity.device.new', outcome: 'success', ...originFields(originOf(ctx)), actorAccountId: account.id, targetType: 'account', targetIds: [account.id], details: { device } };
}

/**
 * After a successful sign-in: is this browser a device the account has used
 * before? The device token lives in its own long-lived cookie; only its hash
 * is stored. A new device of an account that already had one sends a notice.
 */
export async function noteDevice(deps: Deps, ctx: Ctx, account: { id: string; email: string; locale: Locale }, cookie: string | undefined): Promise<{ token: string; isNew: boolean }> {
  const token = deviceToken(cookie);
  const isNew = await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const d = await touchDevice(trx, ctx, account.id, token);
    if (d.known || d.others === 0) return false;
    await appendAuditManyHeld(trx, ctx.tenant.id, [await newDeviceNotice(trx, ctx, account)], ctx.now);
    return true;
  });
  await noteNetwork(deps, ctx, account.id);
  return { token, isNew };
}

/**
 * The network a sign-in comes from: an IPv4 /24 or an IPv6 /48 (an
 * IPv4-mapped address counts as IPv4). Coarse on purpose: a household's or an
 * office's addresses move within it, an intruder's come from elsewhere.
 */
export function networkPrefix(ip: string | null | undefined): string | null {
  if (!ip) return null;
  const v4 = /^(?:::ffff:)?(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/i.exec(ip);
  if (v4) return v4.slice(1, 4).every((x) => Number(x) <= 255) ? `${v4.slice(1, 4).map(Number).join('.')}.0/24` : null;
  if (!isIPv6(ip)) return null;
  const [head = '', tail] = ip.toLowerCase().split('%')[0]!.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return `${groups.slice(0, 3).map((g) => Number.parseInt(g || '0', 16).toString(16)).join(':')}::/48`;
}

/**
 * Remembers the network a sign-in comes from, in the caller's transaction and
 * in one statement (what the account knew before is the statement's
 * snapshot, as for devices); a new one for an account that had others gives
 * an audit event (identity.network.new), returned for the caller to write
 * with its own, which detection reads from the stream for members of staff.
 */
export async function touchNetwork(trx: Trx, ctx: Ctx, accountId: string): Promise<AuditEventInput | null> {
  const prefix = networkPrefix(ctx.ip);
  if (!prefix) return null;
  const { rows } = await sql<{ known: boolean | null; n: string }>`
    WITH n AS (
      INSERT INTO known_networks (tenant_id, account_id, prefix, first_seen_at, last_seen_at)
      VALUES (${ctx.tenant.id}, ${accountId}, ${prefix}, ${ctx.now}, ${ctx.now})
      ON CONFLICT (account_id, prefix) DO UPDATE SET last_seen_at = excluded.last_seen_at
    )
    SELECT bool_or(prefix = ${prefix}) AS known, count(*) AS n FROM known_networks WHERE account_id = ${accountId}`.execute(trx);
  const r = rows[0];
  if (r?.known || Number(r?.n ?? 0) === 0) return null;
  return { action: 'identity.network.new', outcome: 'success', ...originFields(originOf(ctx)), actorAccountId: accountId, targetType: 'account', targetIds: [accountId], details: { network: prefix } };
}

async function noteNetwork(deps: Deps, ctx: Ctx, accountId: string): Promise<void> {
  if (!networkPrefix(ctx.ip)) return;
  await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const e = await touchNetwork(trx, ctx, accountId);
    if (e) await appendAudit(trx, ctx.tenant.id, e, ctx.now);
  });
}

export function deviceCookieName(secure: boolean): string {
  return `${secure ? '__Host-' : ''}guichet_device`;
}

export { hashToken };
