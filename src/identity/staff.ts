import { sql } from 'kysely';
import { decide, refusal } from '../access/decide.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import type { MembershipRole } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError } from '../errors.ts';
import { originFields } from '../tenants/service.ts';

export interface StaffRow {
  membershipId: string;
  accountId: string;
  email: string;
  role: MembershipRole;
  facilityName: string | null;
  expiresAt: Date | null;
  liveSessions: number;
}

/** The tenant's current memberships, for administrators; the read is recorded (staff e-mails are personal data). */
export async function listStaff(deps: Deps, ctx: Ctx): Promise<StaffRow[]> {
  const d = decide(ctx.actor, 'identity.staff.list', { type: 'tenant' }, ctx.now);
  if (!d.allowed) {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action: 'identity.staff.list', outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'membership', details: { reason: d.reason ?? 'denied' } }, ctx.now);
    throw refusal(ctx.actor, d);
  }
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const rows = await trx
      .selectFrom('memberships as m')
      .innerJoin('accounts as a', 'a.id', 'm.account_id')
      .leftJoin('facilities as f', 'f.id', 'm.facility_id')
      .select((eb) => [
        'm.id',
        'm.account_id',
        'a.email',
        'm.role',
        'f.name as facility_name',
        'm.expires_at',
        eb
          .selectFrom('sessions as s')
          .select(sql<string>`count(*)`.as('n'))
          .whereRef('s.account_id', '=', 'm.account_id')
          .where('s.revoked_at', 'is', null)
          .where('s.expires_at', '>', ctx.now)
          .as('live_sessions'),
      ])
      .where('m.revoked_at', 'is', null)
      .where((eb) => eb.or([eb('m.expires_at', 'is', null), eb('m.expires_at', '>', ctx.now)]))
      .orderBy('m.role')
      .orderBy('a.email')
      .limit(500)
      .execute();
    if (rows.length) {
      await appendAudit(trx, ctx.tenant.id, { action: 'identity.staff.list', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'membership', targetIds: rows.map((r) => r.id), fields: ['email', 'role', 'facility', 'expires_at', 'live_sessions'], purpose: 'admin.staff.list' }, ctx.now);
    }
    return rows.map((r) => ({ membershipId: r.id, accountId: r.account_id, email: r.email, role: r.role, facilityName: r.facility_name, expiresAt: r.expires_at, liveSessions: Number(r.live_sessions ?? 0) }));
  });
}
