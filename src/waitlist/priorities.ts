import { z } from 'zod';
import { decide } from '../access/decide.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError, ValidationError } from '../errors.ts';
import type { FieldErrorKey } from '../web/i18n/index.ts';
import { declaredPriorities, facilityOrdering, type DeclaredPriority } from '../records/ordering.ts';
import { PRIORITY_DETAIL, PRIORITY_KINDS, type PriorityKind } from '../tenants/rules.ts';
import { originFields } from '../tenants/service.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const detailText = z
  .string()
  .transform((s) => s.trim())
  .pipe(z.string().max(200).regex(/^[^\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*$/));

/** What a facility's priorities page shows: the declaration, and where the facility stands against the cap. */
export interface FacilityPrioritiesView {
  priorities: DeclaredPriority[];
  admissions: { total: number; byPriority: number };
  priorityOpen: boolean;
}

export async function readFacilityPriorities(deps: Deps, ctx: Ctx, facilityId: string): Promise<FacilityPrioritiesView> {
  if (!UUID.test(facilityId)) throw new AppError('notFound');
  return inTenant(deps.db.db, ctx.tenant.id, async (trx) => {
    const o = await facilityOrdering(trx, ctx.tenant, facilityId, ctx.now);
    return { priorities: o.priorities, admissions: o.admissions, priorityOpen: o.priorityOpen };
  });
}

/** The priorities a facility declared, for the parent's application form (public information, like the directory). */
export async function publicFacilityPriorities(deps: Deps, ctx: Ctx, facilityId: string): Promise<DeclaredPriority[]> {
  if (!UUID.test(facilityId)) return [];
  return inTenant(deps.db.db, ctx.tenant.id, (trx) => declaredPriorities(trx, ctx.tenant, facilityId));
}

/**
 * Reads the form: one checkbox per kind (`kind_<kind>`), a detail field per
 * kind that needs one (`detail_<kind>`). Kinds the tenant does not allow,
 * more kinds than allowed, a missing detail: a ValidationError, nothing saved.
 */
export function parsePrioritiesForm(body: unknown, ctx: Ctx): DeclaredPriority[] {
  const b = (body ?? {}) as Record<string, unknown>;
  // The form says what it is: a body without its marker is no declaration (an empty one would clear every priority).
  if (b.form !== 'priorities') throw new AppError('badRequest');
  const allowed = new Set<string>(ctx.tenant.rules.priorities.kinds);
  const fields: Record<string, FieldErrorKey> = {};
  const out: DeclaredPriority[] = [];
  for (const [k, v] of Object.entries(b)) {
    // A detail must be text; a detail without its box ticked is ignored (the form keeps what was typed).
    if (k.startsWith('detail_') && typeof v !== 'string') fields[k] = 'priorityDetailRequired';
    if (!k.startsWith('kind_')) continue;
    const kind = k.slice(5);
    if (v !== 'on' || !(PRIORITY_KINDS as readonly string[]).includes(kind) || !allowed.has(kind)) {
      fields.kinds = 'priorityUnknown';
      continue;
    }
    const needs = PRIORITY_DETAIL[kind as PriorityKind];
    const raw = b[`detail_${kind}`];
    const d = typeof raw === 'string' ? detailText.safeParse(raw) : null;
    if (needs ? !d?.success || !d.data : d !== null && !d.success) {
      fields[`detail_${kind}`] = 'priorityDetailRequired';
      continue;
    }
    out.push({ kind: kind as PriorityKind, detail: needs ? d!.data! : null });
  }
  if (out.length > ctx.tenant.rules.priorities.maxKinds) fields.kinds = 'priorityTooMany';
  if (Object.keys(fields).length) throw new ValidationError(fields);
  return out.sort((a, c) => a.kind.localeCompare(c.kind));
}

/**
 * Replaces the facility's declared priorities, in one transaction, audited.
 * Someone who may not: recorded as denied, answered "not found".
 */
export async function declareFacilityPriorities(deps: Deps, ctx: Ctx, facilityId: string, priorities: DeclaredPriority[]): Promise<void> {
  const action = 'waitlist.facility.priorities.update';
  const d = UUID.test(facilityId) ? decide(ctx.actor, action, { type: 'facility', facilityId }, ctx.now) : null;
  if (!d?.allowed) {
    await appendAuditAlone(
      deps.db.db,
      ctx.tenant.id,
      { action, outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'facility', targetIds: [facilityId.slice(0, 64).replace(/[\u0000-\u001f\u007f-\u009f]/g, '\ufffd')], details: { reason: d?.reason ?? 'malformed_id' } },
      ctx.now,
    );
    throw new AppError(d?.reason === 'not_signed_in' ? 'signInRequired' : 'notFound');
  }
  await inTenant(
    deps.db.db,
    ctx.tenant.id,
    async (trx) => {
      const f = await trx.selectFrom('facilities').select('id').where('id', '=', facilityId).forUpdate().executeTakeFirst();
      if (!f) throw new AppError('notFound');
      await trx.deleteFrom('facility_priorities').where('facility_id', '=', facilityId).execute();
      if (priorities.length) {
        await trx
          .insertInto('facility_priorities')
          .values(priorities.map((p) => ({ tenant_id: ctx.tenant.id, facility_id: facilityId, kind: p.kind, detail: p.detail, declared_at: ctx.now, declared_by: ctx.actor!.accountId })))
          .execute();
      }
      await appendAudit(
        trx,
        ctx.tenant.id,
        { action, outcome: 'success', ...originFields(originOf(ctx)), targetType: 'facility', targetIds: [facilityId], details: { priorities: priorities.map((p) => (p.detail ? `${p.kind}: ${p.detail}` : p.kind)).join('; ') } },
        ctx.now,
      );
    },
    ctx.actor?.accountId,
  );
}
