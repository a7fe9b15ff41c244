import { sql, type Kysely, type RawBuilder } from 'kysely';
import { AGENT_ROLES } from '../access/actions.ts';
import { activeAssistingSql, assistingOfJson } from '../assisted/store.ts';
import type { Actor, AuthMethod, Membership } from '../access/actor.ts';
import { SECOND_FACTOR_METHODS } from '../access/actor.ts';
import { COOLING_OFF_MINUTES, decide, refusal } from '../access/decide.ts';
import { appendAudit, appendAuditAlone, appendAuditManyHeld } from '../audit/log.ts';
import type { AuditAction, AuditEventInput, AuditOrigin } from '../audit/events.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import type { Trx } from '../db/connection.ts';
import type { DB } from '../db/schema.ts';
import { LAST_OF_TRANSACTION } from '../db/held-begin.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError, ValidationError } from '../errors.ts';
import { enqueueMail } from '../mail/outbox.ts';
import type { Tenant } from '../tenants/service.ts';
import { originFields } from '../tenants/service.ts';
import { messages, type Locale } from '../web/i18n/index.ts';
import { beginSecondFactor, createPending, enrolledFactors, hasSecondFactor, passkeyCountSql, passkeyVouchedSql, totpEnabledSql, vouchedPasskeyCountSql } from './factors/store.ts';
import { deviceHash, deviceToken, newDeviceNotice, touchNetwork } from './sessions.ts';
import * as throttle from './throttle.ts';
import { activeBreakGlassSql, breakGlassOfJson } from './break-glass.ts';
import { hashPassword, verifyPassword } from './passwords.ts';
import { requireRecentAuth } from './stepup.ts';
import { hashToken, newToken } from './tokens.ts';

const HOUR = 3600_000;
const DAY = 24 * HOUR;

/** Session lifetimes: staff and administrators get shorter ones than parents. */
export function sessionPolicy(memberships: readonly Membership[]): { idleSeconds: number; absoluteMs: number } {
  return memberships.length ? { idleSeconds: 15 * 60, absoluteMs: 8 * HOUR } : { idleSeconds: 30 * 60, absoluteMs: 12 * HOUR };
}

export async function loadMemberships(trx: Trx, accountId: string, now: Date): Promise<Membership[]> {
  const rows = await trx
    .selectFrom('memberships')
    .select(['id', 'role', 'facility_id', 'expires_at', 'source', 'created_at'])
    .where('account_id', '=', accountId)
    .where('revoked_at', 'is', null)
    .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]))
    .execute();
  return rows.map(membershipOf);
}

/**
 * The same memberships as loadMemberships, as a JSON array inside another
 * statement (the session's look-up reads them in its own round trip).
 */
function membershipsJsonSql(accountId: RawBuilder<unknown>, now: Date) {
  return sql<MembershipJson[]>`COALESCE((SELECT pg_catalog.json_agg(pg_catalog.json_build_object('id', msh.id, 'role', msh.role, 'facility_id', msh.facility_id,
      'expires_at', msh.expires_at, 'source', msh.source, 'created_at', msh.created_at))
    FROM memberships msh WHERE msh.account_id = ${accountId} AND msh.revoked_at IS NULL AND (msh.expires_at IS NULL OR msh.expires_at > ${now})), '[]'::json)`;
}

type MembershipJson = { id: string; role: Membership['role']; facility_id: string | null; expires_at: string | null; source: string; created_at: string };

function membershipOfJson(r: MembershipJson): Membership {
  return membershipOf({ ...r, expires_at: r.expires_at === null ? null : new Date(r.expires_at), created_at: new Date(r.created_at) });
}

function membershipOf(r: { id: string; role: Membership['role']; facility_id: string | null; expires_at: Date | null; source: string; created_at: Date }): Membership {
  return {
    id: r.id,
    role: r.role,
    facilityId: r.facility_id,
    expiresAt: r.expires_at,
    // Only roles granted by dual control cool off: the bootstrap administrator of an empty tenant and invited staff do not.
    coolingUntil: r.source === 'grant' ? new Date(r.created_at.getTime() + COOLING_OFF_MINUTES * 60_000) : null,
  };
}

function audit(trx: Trx, ctx: Ctx, action: AuditAction, outcome: 'success' | 'denied' | 'failure', extra: { targetIds?: string[]; details?: Record<string, string | number | boolean | null>; actorAccountId?: string } = {}) {
  const origin = originOf(ctx);
  return appendAudit(
    trx,
    ctx.tenant.id,
    { action, outcome, ...originFields(origin), ...(extra.actorAccountId ? { actorAccountId: extra.actorAccountId } : {}), targetType: 'account', targetIds: extra.targetIds ?? [], details: extra.details ?? {} },
    ctx.now,
  );
}

export interface SessionResult {
  token: string;
  expiresAt: Date;
}

/** A new session; `methods` records how the person authenticated (a password alone unless told otherwise). */
export async function createSession(trx: Trx, ctx: Ctx, accountId: string, memberships: readonly Membership[], methods: readonly AuthMethod[] = ['password'], passkeyId: string | null = null): Promise<SessionResult> {
  const s = newSession(ctx, accountId, memberships, methods);
  await trx
    .insertInto('sessions')
    .values(passkeyId ? { ...s.row, auth_passkey_id: passkeyId } : s.row)
    .execute();
  return s.result;
}

function newSession(ctx: Ctx, accountId: string, memberships: readonly Membership[], methods: readonly AuthMethod[]) {
  const { token, hash } = newToken();
  const policy = sessionPolicy(memberships);
  const expiresAt = new Date(ctx.now.getTime() + policy.absoluteMs);
  const row = {
    tenant_id: ctx.tenant.id,
    account_id: accountId,
    token_hash: hash,
    created_at: ctx.now,
    last_seen_at: ctx.now,
    idle_timeout_seconds: policy.idleSeconds,
    expires_at: expiresAt,
    ip: ctx.ip,
    user_agent: ctx.userAgent?.slice(0, 512) ?? null,
    auth_methods: [...methods],
    authenticated_at: ctx.now,
  };
  return { row, result: { token, expiresAt } };
}

/**
 * A password sign-in's session and the browser's device row (inserted or
 * touched) in one statement. It answers what the account's devices were
 * before (one snapshot): whether this one was among them, and how many
 * there were.
 */
async function openSession(trx: Trx, ctx: Ctx, accountId: string, memberships: readonly Membership[], deviceToken: string) {
  const s = newSession(ctx, accountId, memberships, ['password']);
  const hash = deviceHash(deviceToken);
  const userAgent = ctx.userAgent?.slice(0, 512) ?? null;
  const prior = await trx
    .with('s', (db) => db.insertInto('sessions').values(s.row))
    .with('d', (db) =>
      db
        .insertInto('known_devices')
        .values({ tenant_id: ctx.tenant.id, account_id: accountId, device_hash: hash, first_seen_at: ctx.now, last_seen_at: ctx.now, user_agent: userAgent })
        .onConflict((oc) => oc.columns(['account_id', 'device_hash']).doUpdateSet((eb) => ({ last_seen_at: eb.ref('excluded.last_seen_at'), user_agent: eb.ref('excluded.user_agent') }))),
    )
    .selectFrom('known_devices')
    .select([sql<boolean | null>`bool_or(device_hash = ${hash})`.as('known'), sql<string>`count(*)`.as('n')])
    .where('account_id', '=', accountId)
    .executeTakeFirst();
  return { session: s.result, known: !!prior?.known, others: Number(prior?.n ?? 0) };
}

/**
 * The actor behind a session cookie, or null if the session is unknown, ended
 * or expired. One statement, which is the whole transaction (on PostgreSQL one
 * round trip with its BEGIN and COMMIT, src/db/held-begin.ts): the session and
 * its account, factors, memberships, break-glass and assisted session, and
 * last_seen_at touched when it is more than a minute old (a touch on every
 * request would write on every read; a minute is precise enough for idle
 * timeouts) — only for a session still good, whose checks read the row as it
 * was before the touch.
 */
export async function resolveSession(deps: Deps, tenant: Tenant, token: string, now: Date): Promise<Actor | null> {
  const hash = hashToken(token);
  return inTenant(deps.db.db, tenant.id, async (trx) => {
    const s = await trx
      .with('touched', (db) =>
        db
          .updateTable('sessions')
          .set({ last_seen_at: now })
          .where('token_hash', '=', hash)
          .where('revoked_at', 'is', null)
          .where('expires_at', '>', now)
          .where(sql<boolean>`last_seen_at + idle_timeout_seconds * interval '1 second' > ${now}`)
          .where(sql<boolean>`last_seen_at < ${now}::timestamptz - interval '1 minute'`)
          .where(sql<boolean>`EXISTS (SELECT 1 FROM accounts ta WHERE ta.id = sessions.account_id AND ta.status = 'active')`)
          .returning('id'),
      )
      .selectFrom('sessions as s')
      .innerJoin('accounts as a', 'a.id', 's.account_id')
      .select(['s.id', 's.account_id', 's.last_seen_at', 's.idle_timeout_seconds', 's.expires_at', 's.created_at', 's.auth_methods', 's.authenticated_at', 'a.email', 'a.email_verified_at', 'a.locale', 'a.status'])
      .select([
        totpEnabledSql(sql.ref('s.account_id')).as('has_totp'),
        passkeyCountSql(sql.ref('s.account_id')).as('passkeys'),
        vouchedPasskeyCountSql(sql.ref('s.account_id')).as('vouched_passkeys'),
        passkeyVouchedSql(sql.ref('s.auth_passkey_id'), sql.ref('s.account_id')).as('passkey_vouched'),
      ])
      .select(membershipsJsonSql(sql.ref('s.account_id'), now).as('memberships'))
      .select([activeBreakGlassSql(sql.ref('s.id'), now).as('break_glass'), activeAssistingSql(sql.ref('s.id'), now).as('assisting')])
      .where('s.token_hash', '=', hash)
      .where('s.revoked_at', 'is', null)
      .modifyEnd(sql.raw(` ${LAST_OF_TRANSACTION}`))
      .executeTakeFirst();
    if (!s || s.status !== 'active') return null;
    if (s.expires_at <= now) return null;
    if (s.last_seen_at.getTime() + s.idle_timeout_seconds * 1000 <= now.getTime()) return null;
    const memberships = s.memberships.map(membershipOfJson);
    // Break-glass matters only while a role cools off.
    const breakGlass = memberships.some((m) => m.coolingUntil && m.coolingUntil > now) ? breakGlassOfJson(s.break_glass) : null;
    // Assisted mode is for agents only.
    const agentRoles: readonly string[] = AGENT_ROLES;
    const assisting = memberships.some((m) => agentRoles.includes(m.role)) ? assistingOfJson(s.assisting) : null;
    const methods = (s.auth_methods ?? ['password']) as AuthMethod[];
    const passkeys = Number(s.passkeys);
    const totp = !!s.has_totp;
    return {
      accountId: s.account_id,
      tenantId: tenant.id,
      sessionId: s.id,
      email: s.email,
      emailVerified: !!s.email_verified_at,
      locale: s.locale,
      memberships,
      // A second factor counts while the account still has one (removing the last one ends it).
      mfa: (totp || passkeys > 0) && methods.some((m) => SECOND_FACTOR_METHODS.includes(m)),
      auth: { methods, at: s.authenticated_at ?? s.created_at, totp, passkeys, vouchedPasskeys: Number(s.vouched_passkeys), vouchedPasskey: methods.includes('passkey') && !!s.passkey_vouched },
      breakGlass,
      assisting,
    };
  });
}

function link(ctx: Ctx, path: string): string {
  return `${ctx.baseUrl}${path}`;
}

export interface SignUpInput {
  email: string;
  password: string;
}

/**
 * Creates an account and sends a verification link. The answer, and the time
 * it takes, are the same when the address already has an account: that person
 * gets a notice by e-mail instead, so sign-up reveals nothing to a stranger.
 */
export async function signUp(deps: Deps, ctx: Ctx, input: SignUpInput): Promise<void> {
  const passwordHash = await hashPassword(input.password);
  const m = messages(ctx.locale);
  await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const existing = await trx.selectFrom('accounts').select(['id', 'locale']).where('email', '=', input.email).executeTakeFirst();
    if (existing) {
      const em = messages(existing.locale);
      await enqueueMail(trx, ctx.tenant.id, { to: input.email, locale: existing.locale, template: 'signup_exists', subject: em.mail.existsSubject, body: em.mail.existsBody(link(ctx, '/signin')) }, ctx.now);
      await audit(trx, ctx, 'identity.signup', 'failure', { targetIds: [existing.id], details: { reason: 'exists' } });
      return;
    }
    const account = await trx
      .insertInto('accounts')
      .values({ tenant_id: ctx.tenant.id, email: input.email, password_hash: passwordHash, locale: ctx.locale, email_verified_at: null })
      .returning('id')
      .executeTakeFirstOrThrow();
    const { token, hash } = newToken();
    await trx
      .insertInto('account_tokens')
      .values({ tenant_id: ctx.tenant.id, account_id: account.id, purpose: 'verify_email', token_hash: hash, created_at: ctx.now, expires_at: new Date(ctx.now.getTime() + DAY) })
      .execute();
    await enqueueMail(trx, ctx.tenant.id, { to: input.email, locale: ctx.locale, template: 'verify_email', subject: m.mail.verifySubject, body: m.mail.verifyBody(link(ctx, `/verify-email?token=${token}`)) }, ctx.now);
    await audit(trx, ctx, 'identity.signup', 'success', { targetIds: [account.id], actorAccountId: account.id });
  });
}

async function findToken(trx: Trx, token: string, purpose: 'verify_email' | 'set_password', now: Date) {
  return trx
    .selectFrom('account_tokens')
    .selectAll()
    .where('token_hash', '=', hashToken(token))
    .where('purpose', '=', purpose)
    .where('used_at', 'is', null)
    .where('expires_at', '>', now)
    .executeTakeFirst();
}

export async function checkToken(deps: Deps, ctx: Ctx, token: string, purpose: 'verify_email' | 'set_password'): Promise<boolean> {
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => !!(await findToken(trx, token, purpose, ctx.now)));
}

/** The address of the account a live link was sent to (the context a new password must not lean on), or null. */
export async function tokenHolder(deps: Deps, ctx: Ctx, token: string, purpose: 'verify_email' | 'set_password'): Promise<{ email: string } | null> {
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const t = await findToken(trx, token, purpose, ctx.now);
    if (!t) return null;
    return (await trx.selectFrom('accounts').select('email').where('id', '=', t.account_id).executeTakeFirst()) ?? null;
  });
}

export async function verifyEmail(deps: Deps, ctx: Ctx, token: string): Promise<boolean> {
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const t = await findToken(trx, token, 'verify_email', ctx.now);
    if (!t) return false;
    await trx.updateTable('account_tokens').set({ used_at: ctx.now }).where('id', '=', t.id).execute();
    await trx.updateTable('accounts').set({ email_verified_at: ctx.now }).where('id', '=', t.account_id).where('email_verified_at', 'is', null).execute();
    await audit(trx, ctx, 'identity.email.verify', 'success', { targetIds: [t.account_id], actorAccountId: t.account_id });
    return true;
  });
}

export async function setPassword(deps: Deps, ctx: Ctx, token: string, password: string): Promise<boolean> {
  const passwordHash = await hashPassword(password);
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const t = await findToken(trx, token, 'set_password', ctx.now);
    if (!t) return false;
    await trx.updateTable('account_tokens').set({ used_at: ctx.now }).where('id', '=', t.id).execute();
    // The link came by e-mail, so following it proves the address too.
    await trx.updateTable('accounts').set({ password_hash: passwordHash, email_verified_at: ctx.now }).where('id', '=', t.account_id).execute();
    await trx.updateTable('sessions').set({ revoked_at: ctx.now }).where('account_id', '=', t.account_id).where('revoked_at', 'is', null).execute();
    const account = await trx.selectFrom('accounts').select(['email', 'locale']).where('id', '=', t.account_id).executeTakeFirstOrThrow();
    const m = messages(account.locale);
    await enqueueMail(trx, ctx.tenant.id, { to: account.email, locale: account.locale, template: 'password_changed', subject: m.recovery.changedSubject, body: m.recovery.changedBody(link(ctx, '/password/forgot')) }, ctx.now);
    await audit(trx, ctx, 'identity.password.set', 'success', { targetIds: [t.account_id], actorAccountId: t.account_id });
    return true;
  });
}

export type SignInResult =
  | { ok: true; session: SessionResult; actor: Actor }
  | { ok: false; reason: 'invalid' | 'unverified' }
  /** The password was right and the account has a second factor: the second step comes next (src/identity/factors). */
  | { ok: false; reason: 'second_factor'; pending: { token: string; expiresAt: Date } };

export type PasswordSignIn =
  | { throttled: { retryAfterSeconds: number; reason: 'account' | 'source' | 'spraying' } }
  | { throttled: null; result: SignInResult; device: { token: string; isNew: boolean } | null };

/**
 * Password sign-in, throttling included. Unknown address, wrong password and
 * suspended account all give the same answer after one argon2 verification
 * each, and the same work around it.
 *
 * Argon2 is the cost by design; what surrounds it is kept to two
 * transactions: before the check, the throttle's totals and the account in
 * one; after it, everything the outcome writes (the attempt, the audit
 * events, the session and the device, or the failure and what its totals
 * call for) in one, so it commits once.
 */
export async function passwordSignIn(deps: Deps, ctx: Ctx, email: string, password: string, deviceCookie: string | undefined): Promise<PasswordSignIn> {
  const before = await inTenant(deps.db.db, ctx.tenant.id, (trx) => throttle.signInVerdict(deps, ctx, email, trx));
  if (!before.verdict.ok) return { throttled: { retryAfterSeconds: before.verdict.retryAfterSeconds, reason: before.verdict.reason } };
  const account = before.account;
  const valid = await verifyPassword(account?.password_hash, password);
  if (!account || !valid || account.status !== 'active') {
    await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
      const failure: AuditEventInput = {
        action: 'identity.signin',
        outcome: 'failure',
        ...originFields(originOf(ctx)),
        targetType: 'account',
        targetIds: account ? [account.id] : [],
        details: { reason: !account ? 'unknown_account' : !valid ? 'bad_password' : 'suspended' },
      };
      const counts = await throttle.countSignIn(deps, ctx, email, false, trx);
      // The failure's event first, then what its totals call for (lock, spraying), in one statement.
      await throttle.actOnCounts(trx, ctx, email, counts!, account ? { id: account.id, locale: account.locale } : null, [failure]);
    });
    return { throttled: null, result: { ok: false, reason: 'invalid' }, device: null };
  }
  // The password was right: only a wrong password counts as a failure, whatever comes next.
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    if (!account.email_verified_at) {
      await throttle.countSignIn(deps, ctx, email, true, trx);
      const { token, hash } = newToken();
      const m = messages(account.locale);
      await trx
        .insertInto('account_tokens')
        .values({ tenant_id: ctx.tenant.id, account_id: account.id, purpose: 'verify_email', token_hash: hash, created_at: ctx.now, expires_at: new Date(ctx.now.getTime() + DAY) })
        .execute();
      await enqueueMail(trx, ctx.tenant.id, { to: email, locale: account.locale, template: 'verify_email', subject: m.mail.verifySubject, body: m.mail.verifyBody(link(ctx, `/verify-email?token=${token}`)) }, ctx.now);
      await audit(trx, ctx, 'identity.signin', 'failure', { targetIds: [account.id], details: { reason: 'unverified' } });
      return { throttled: null, result: { ok: false, reason: 'unverified' }, device: null } as const;
    }
    const state = await signInState(trx, account.id, ctx.now, await throttle.countSuccess(deps, ctx, email));
    if (state.secondFactor) {
      const p = await createPending(trx, ctx.tenant.id, 'second_factor', account.id, ctx.now);
      await audit(trx, ctx, 'identity.signin.challenge', 'success', { targetIds: [account.id], actorAccountId: account.id });
      return { throttled: null, result: { ok: false, reason: 'second_factor', pending: { token: p.token, expiresAt: p.expiresAt } }, device: null } as const;
    }
    const token = deviceToken(deviceCookie);
    const signedIn: AuditEventInput = { action: 'identity.signin', outcome: 'success', ...originFields(originOf(ctx)), actorAccountId: account.id, targetType: 'account', targetIds: [account.id], details: {} };
    const { session, known, others } = await openSession(trx, ctx, account.id, state.memberships, token);
    // A device the account had not used, when it had used others: a notice, and its event after the sign-in's.
    const isNew = !known && others > 0;
    // The network too, as a sign-in with a second factor notes it (noteDevice).
    const network = await touchNetwork(trx, ctx, account.id);
    const events = [signedIn, ...(isNew ? [await newDeviceNotice(trx, ctx, { id: account.id, email, locale: account.locale })] : []), ...(network ? [network] : [])];
    await appendAuditManyHeld(trx, ctx.tenant.id, events, ctx.now);
    const actor: Actor = { accountId: account.id, tenantId: ctx.tenant.id, sessionId: null, email, emailVerified: true, locale: account.locale, memberships: state.memberships };
    return { throttled: null, result: { ok: true, session, actor }, device: { token, isNew } } as const;
  });
}

/** Has the account a second factor, and what are its memberships: one statement, which also writes the attempt's row when there is one. */
async function signInState(trx: Trx, accountId: string, now: Date, attempt: Awaited<ReturnType<typeof throttle.countSuccess>>): Promise<{ secondFactor: boolean; memberships: Membership[] }> {
  const account = sql<string>`cast(${accountId} as uuid)`;
  const write = attempt
    ? sql`with attempt as (insert into auth_attempts (tenant_id, kind, email_key, ip, at) values (${attempt.tenant_id}, ${attempt.kind}, ${attempt.email_key}, ${attempt.ip}, ${attempt.at})) `
    : sql``;
  const { rows } = await sql<{ totp: boolean; passkeys: string; memberships: { id: string; role: Membership['role']; facility_id: string | null; expires_ms: number | null; source: string; created_ms: number }[] }>`
    ${write}select ${totpEnabledSql(account)} as totp,
           ${passkeyCountSql(account)} as passkeys,
           coalesce((select json_agg(json_build_object('id', m.id, 'role', m.role, 'facility_id', m.facility_id, 'source', m.source,
                                                      'expires_ms', (extract(epoch from m.expires_at) * 1000)::float8,
                                                      'created_ms', (extract(epoch from m.created_at) * 1000)::float8))
                     from memberships m
                     where m.account_id = ${account} and m.revoked_at is null and (m.expires_at is null or m.expires_at > ${now})), '[]'::json) as memberships`.execute(trx);
  const r = rows[0]!;
  const list = typeof r.memberships === 'string' ? (JSON.parse(r.memberships) as typeof r.memberships) : r.memberships;
  return {
    secondFactor: !!r.totp || Number(r.passkeys) > 0,
    memberships: list.map((m) => membershipOf({ id: m.id, role: m.role, facility_id: m.facility_id, expires_at: m.expires_ms === null ? null : new Date(m.expires_ms), source: m.source, created_at: new Date(m.created_ms) })),
  };
}

export async function signOut(deps: Deps, ctx: Ctx, token: string): Promise<void> {
  await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const r = await trx
      .updateTable('sessions')
      .set({ revoked_at: ctx.now })
      .where('token_hash', '=', hashToken(token))
      .where('revoked_at', 'is', null)
      .returning('account_id')
      .executeTakeFirst();
    if (r) await audit(trx, ctx, 'identity.signout', 'success', { targetIds: [r.account_id] });
  });
}

/* ------------------------------------------------------------------ invitations */

export async function inviteStaff(deps: Deps, ctx: Ctx, facilityId: string, email: string): Promise<void> {
  const d = decide(ctx.actor, 'identity.invitation.create', { type: 'tenant' }, ctx.now);
  if (!d.allowed || !ctx.actor) {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action: 'identity.invitation.create', outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'facility', targetIds: [facilityId], details: { reason: d.reason ?? 'denied' } }, ctx.now);
    throw refusal(ctx.actor, d);
  }
  // Conferring a role is sensitive: a fresh authentication (step-up), then back to the facility's page.
  requireRecentAuth(ctx, undefined, { returnTo: `/directory/${facilityId}` });
  const inviter = ctx.actor;
  await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const facility = await trx.selectFrom('facilities').select(['id', 'name']).where('id', '=', facilityId).executeTakeFirst();
    if (!facility) throw new ValidationError({ facilityId: 'facilityUnknown' });
    const { token, hash } = newToken();
    const inv = await trx
      .insertInto('invitations')
      .values({ tenant_id: ctx.tenant.id, email, role: 'facility_staff', facility_id: facility.id, token_hash: hash, invited_by: inviter.accountId, created_at: ctx.now, expires_at: new Date(ctx.now.getTime() + 7 * DAY) })
      .returning('id')
      .executeTakeFirstOrThrow();
    const m = messages(ctx.locale);
    await enqueueMail(trx, ctx.tenant.id, { to: email, locale: ctx.locale, template: 'invitation', subject: m.mail.inviteSubject(facility.name), body: m.mail.inviteBody(facility.name, link(ctx, `/invitations/accept?token=${token}`)) }, ctx.now);
    await appendAudit(trx, ctx.tenant.id, { action: 'identity.invitation.create', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'invitation', targetIds: [inv.id, facility.id], details: { role: 'facility_staff' } }, ctx.now);
  });
}

export async function listPendingInvitations(deps: Deps, ctx: Ctx) {
  const d = decide(ctx.actor, 'identity.invitation.list', { type: 'tenant' }, ctx.now);
  if (!d.allowed) {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action: 'identity.invitation.list', outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'invitation', details: { reason: d.reason ?? 'denied' } }, ctx.now);
    throw refusal(ctx.actor, d);
  }
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const rows = await trx
      .selectFrom('invitations as i')
      .innerJoin('facilities as f', 'f.id', 'i.facility_id')
      .select(['i.id', 'i.email', 'i.expires_at', 'f.name as facility_name'])
      .where('i.accepted_at', 'is', null)
      .where('i.revoked_at', 'is', null)
      .where('i.expires_at', '>', ctx.now)
      .orderBy('i.created_at', 'desc')
      .limit(200)
      .execute();
    // Invitees' e-mail addresses are personal data too: the read is recorded.
    if (rows.length) {
      await appendAudit(trx, ctx.tenant.id, { action: 'identity.invitation.list', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'invitation', targetIds: rows.map((r) => r.id), fields: ['email', 'facility', 'expires_at'], purpose: 'admin.invitations.list' }, ctx.now);
    }
    return rows;
  });
}

export async function findInvitation(deps: Deps, ctx: Ctx, token: string) {
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const inv = await trx
      .selectFrom('invitations as i')
      .innerJoin('facilities as f', 'f.id', 'i.facility_id')
      .select(['i.id', 'i.email', 'i.facility_id', 'i.invited_by', 'f.name as facility_name'])
      .where('i.token_hash', '=', hashToken(token))
      .where('i.accepted_at', 'is', null)
      .where('i.revoked_at', 'is', null)
      .where('i.expires_at', '>', ctx.now)
      .executeTakeFirst();
    if (!inv) return null;
    const account = await trx.selectFrom('accounts').select(['id']).where('email', '=', inv.email).executeTakeFirst();
    return { ...inv, accountExists: !!account };
  });
}

/**
 * Accepting an invitation confers facility_staff, and nothing else: the
 * invitations table cannot hold another role, and the membership row names
 * who granted it.
 */
export async function acceptInvitation(deps: Deps, ctx: Ctx, token: string, password: string): Promise<SignInResult | null> {
  const inv = await findInvitation(deps, ctx, token);
  if (!inv) return null;
  const newHash = inv.accountExists ? null : await hashPassword(password);
  const existing = inv.accountExists
    ? await inTenant(deps.db.db, ctx.tenant.id, (trx) => trx.selectFrom('accounts').select(['id', 'password_hash', 'status']).where('email', '=', inv.email).executeTakeFirstOrThrow())
    : null;
  if (existing && (!(await verifyPassword(existing.password_hash, password)) || existing.status !== 'active')) {
    return { ok: false, reason: 'invalid' };
  }
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const accountId =
      existing?.id ??
      (
        await trx
          .insertInto('accounts')
          .values({ tenant_id: ctx.tenant.id, email: inv.email, password_hash: newHash, locale: ctx.locale, email_verified_at: ctx.now })
          .returning('id')
          .executeTakeFirstOrThrow()
      ).id;
    if (existing) await trx.updateTable('accounts').set({ email_verified_at: ctx.now }).where('id', '=', accountId).where('email_verified_at', 'is', null).execute();
    const claimed = await trx
      .updateTable('invitations')
      .set({ accepted_at: ctx.now, accepted_account_id: accountId })
      .where('id', '=', inv.id)
      .where('accepted_at', 'is', null)
      .returning('id')
      .executeTakeFirst();
    if (!claimed) throw new AppError('notFound');
    await trx
      .insertInto('memberships')
      .values({ tenant_id: ctx.tenant.id, account_id: accountId, role: 'facility_staff', facility_id: inv.facility_id, source: 'invitation', granted_by: inv.invited_by, approved_by: null, created_at: ctx.now, expires_at: null })
      .execute();
    // A change of roles ends the account's other sessions.
    await trx.updateTable('sessions').set({ revoked_at: ctx.now }).where('account_id', '=', accountId).where('revoked_at', 'is', null).execute();
    await appendAudit(trx, ctx.tenant.id, { action: 'identity.invitation.accept', outcome: 'success', ...originFields(originOf(ctx)), actorAccountId: accountId, targetType: 'invitation', targetIds: [inv.id, inv.facility_id], details: { role: 'facility_staff' } }, ctx.now);
    if (existing && hasSecondFactor(await enrolledFactors(trx, accountId))) {
      // The password alone opens no session of an account with a second factor, here as at the sign-in page: the
      // invitation is accepted, and the second step comes next.
      const p = await createPending(trx, ctx.tenant.id, 'second_factor', accountId, ctx.now);
      return { ok: false, reason: 'second_factor', pending: { token: p.token, expiresAt: p.expiresAt } } as const;
    }
    const memberships = await loadMemberships(trx, accountId, ctx.now);
    const session = await createSession(trx, ctx, accountId, memberships);
    const actor: Actor = { accountId, tenantId: ctx.tenant.id, sessionId: null, email: inv.email, emailVerified: true, locale: ctx.locale, memberships };
    return { ok: true, session, actor } as const;
  });
}

/* ------------------------------------------------------------------ bootstrap */

/**
 * The tenant's first administrator, from the CLI on the server. The database
 * refuses a second bootstrap (memberships_guard), whatever calls this.
 * Returns a one-time link to choose a password.
 */
export async function bootstrapAdmin(db: Kysely<DB>, tenant: Tenant, email: string, baseUrl: string, origin: AuditOrigin, now: Date, locale: Locale = 'fr'): Promise<{ accountId: string; link: string }> {
  return (await bootstrapAdmins(db, tenant, [email], baseUrl, origin, now, locale))[0]!;
}

/**
 * The tenant's first administrators — one, or two different people — in one
 * transaction: the bootstrap happens once (memberships_guard). Name two: every
 * further privileged role takes two administrators besides its grantee
 * (migration 0042), so with one the tenant can grant none.
 */
export async function bootstrapAdmins(db: Kysely<DB>, tenant: Tenant, emails: string[], baseUrl: string, origin: AuditOrigin, now: Date, locale: Locale = 'fr'): Promise<{ accountId: string; link: string }[]> {
  if (emails.length < 1 || emails.length > 2 || new Set(emails).size !== emails.length) throw new Error('bootstrap: one or two different e-mail addresses');
  return inTenant(db, tenant.id, async (trx) => {
    const out: { accountId: string; link: string }[] = [];
    for (const email of emails) {
      const existing = await trx.selectFrom('accounts').select(['id', 'email_verified_at']).where('email', '=', email).executeTakeFirst();
      const accountId =
        existing?.id ??
        (await trx.insertInto('accounts').values({ tenant_id: tenant.id, email, password_hash: null, locale, email_verified_at: null }).returning('id').executeTakeFirstOrThrow()).id;
      if (existing && !existing.email_verified_at) {
        // Nobody has shown they hold this address: whoever signed up with it may not be the person named here. Their
        // password and their pending links stop working, and only the link below opens the account.
        await trx.updateTable('accounts').set({ password_hash: null }).where('id', '=', accountId).execute();
        await trx.updateTable('account_tokens').set({ used_at: now }).where('account_id', '=', accountId).where('used_at', 'is', null).execute();
        await trx.updateTable('sessions').set({ revoked_at: now }).where('account_id', '=', accountId).where('revoked_at', 'is', null).execute();
      }
      await trx
        .insertInto('memberships')
        .values({ tenant_id: tenant.id, account_id: accountId, role: 'tenant_admin', facility_id: null, source: 'bootstrap', granted_by: null, approved_by: null, created_at: now, expires_at: null })
        .execute();
      const { token, hash } = newToken();
      await trx
        .insertInto('account_tokens')
        .values({ tenant_id: tenant.id, account_id: accountId, purpose: 'set_password', token_hash: hash, created_at: now, expires_at: new Date(now.getTime() + DAY) })
        .execute();
      const url = `${baseUrl}/set-password?token=${token}`;
      const m = messages(locale);
      await enqueueMail(trx, tenant.id, { to: email, locale, template: 'set_password', subject: m.mail.setPasswordSubject, body: m.mail.setPasswordBody(url) }, now);
      await appendAudit(trx, tenant.id, { action: 'identity.membership.bootstrap', outcome: 'success', ...originFields(origin), targetType: 'account', targetIds: [accountId], details: { role: 'tenant_admin', administrators: emails.length } }, now);
      out.push({ accountId, link: url });
    }
    return out;
  });
}

/** Sets a password directly: demo accounts only (the CLI seeds them). */
export async function createDemoAccount(trx: Trx, tenantId: string, email: string, password: string, now: Date): Promise<string> {
  const hash = await hashPassword(password);
  const r = await trx
    .insertInto('accounts')
    .values({ tenant_id: tenantId, email, password_hash: hash, locale: 'fr', email_verified_at: now })
    .returning('id')
    .executeTakeFirstOrThrow();
  return r.id;
}
