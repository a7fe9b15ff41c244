import { sql } from 'kysely';
import { appendAuditHeld } from '../audit/log.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import { WRITE_HELD_UNTIL_NEXT } from '../db/held-begin.ts';
import { inTenant } from '../db/tenant.ts';
import { enqueueMail } from '../mail/outbox.ts';
import { originFields } from '../tenants/service.ts';
import { messages } from '../web/i18n/index.ts';
import { hashToken, newToken } from './tokens.ts';

/**
 * "Forgot your password": a link by e-mail to choose a new one (one hour,
 * once). The answer is the same whether or not the address has an account,
 * and so is the work behind it — one look-up, one token-shaped row or hash,
 * one message in the outbox (to an unknown address, a notice that it has no
 * account) — so neither the page nor its timing tells a stranger anything.
 * A new password never removes a second factor: sign-in still asks for it.
 * Losing every factor is a reset by two administrators (factor-resets.ts).
 */
export const RESET_LINK_MS = 3600_000;

/**
 * On PostgreSQL both paths also take the same round trips (src/db/held-begin.ts):
 * the look-up with BEGIN, the message with the token's writes before it, the
 * event with COMMIT — the holder's two extra writes add no round trip.
 */
export async function requestPasswordReset(deps: Deps, ctx: Ctx, email: string): Promise<void> {
  const { token, hash } = newToken();
  const held = sql.raw(` ${WRITE_HELD_UNTIL_NEXT}`);
  await inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const account = await trx.selectFrom('accounts').select(['id', 'locale', 'status']).where('email', '=', email).executeTakeFirst();
    if (!account || account.status !== 'active') {
      // The same amount of work as below: a hash, a message, an event.
      hashToken(token);
      const m = messages(ctx.locale);
      await enqueueMail(trx, ctx.tenant.id, { to: email, locale: ctx.locale, template: 'password_reset_unknown', subject: m.recovery.unknownSubject, body: m.recovery.unknownBody(`${ctx.baseUrl}/signup`) }, ctx.now);
      await appendAuditHeld(trx, ctx.tenant.id, { action: 'identity.password.reset', outcome: 'failure', ...originFields(originOf(ctx)), targetType: 'account', targetIds: account ? [account.id] : [], details: { reason: account ? 'inactive' : 'unknown' } }, ctx.now);
      return;
    }
    // Older links of the account stop working: only the latest is good.
    await trx.updateTable('account_tokens').set({ used_at: ctx.now }).where('account_id', '=', account.id).where('purpose', '=', 'set_password').where('used_at', 'is', null).modifyEnd(held).execute();
    await trx
      .insertInto('account_tokens')
      .values({ tenant_id: ctx.tenant.id, account_id: account.id, purpose: 'set_password', token_hash: hash, created_at: ctx.now, expires_at: new Date(ctx.now.getTime() + RESET_LINK_MS) })
      .modifyEnd(held)
      .execute();
    const m = messages(account.locale);
    await enqueueMail(trx, ctx.tenant.id, { to: email, locale: account.locale, template: 'password_reset', subject: m.recovery.linkSubject, body: m.recovery.linkBody(`${ctx.baseUrl}/set-password?token=${token}`) }, ctx.now);
    await appendAuditHeld(trx, ctx.tenant.id, { action: 'identity.password.reset', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'account', targetIds: [account.id], details: {} }, ctx.now);
  });
}
