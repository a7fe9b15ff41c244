/**
 * Retention: a child file is destroyed once it has served its purpose
 * (Law 25, s. 23), by the tenant's rules (rules.retention, data per tenant):
 * a set time after the child reaches school age, or after the last activity
 * on the file. The job deletes such files softly (registrations withdrawn,
 * restorable by a second person for deletedFileRetentionDays), and purges
 * the files deleted longer ago than that (src/records/purge.ts:
 * crypto-shredding). Each deletion and each purge is an audit event naming
 * the rule; each run is one more.
 *
 * It runs in the server process every day at GUICHET_RETENTION_HOUR
 * (Montreal time, 3 by default), and once with `guichet retention run`. Two
 * instances never run it at once: on PostgreSQL a session advisory lock,
 * taken without waiting — the second instance skips the run; on the
 * embedded database only one process opens the data directory.
 */
import { sql } from 'kysely';
import { decide } from '../access/decide.ts';
import type { AuditOrigin } from '../audit/events.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError } from '../errors.ts';
import { isRecentAuth, StepUpRequired } from '../identity/stepup.ts';
import { readRetentionFiles, retireChildFiles, withSession, type RetentionCandidate } from '../records/gateway.ts';
import { eraseAssistedNotes, purgeExpired, type PurgeResult } from '../records/purge.ts';
import { originFields, type Tenant } from '../tenants/service.ts';
import { addMonths, today as localToday } from '../waitlist/dates.ts';
import { accountChildFiles, accountsWithoutLiveChild, filesAwaitingPurge } from '../records/lookups.ts';
import { MAX_MAIL_ATTEMPTS } from '../mail/outbox.ts';
import { cancelPendingRequestsOf } from '../identity/grants.ts';

const DAY = 86_400_000;

export type RetentionReason = 'school_age' | 'inactive';

export interface ScheduledFile {
  childId: string;
  reference: string;
  /** When the rules delete it (softly), and why. */
  deleteOn: string;
  reason: RetentionReason;
}

export interface DeletedFile {
  childId: string;
  reference: string;
  deletedAt: Date;
  purgeOn: Date;
}

/** The day a live file is due, and the rule that makes it due first. */
export function dueDate(tenant: Tenant, f: { birthDate: string; lastActivity: Date }): { on: string; reason: RetentionReason } {
  const r = tenant.rules.retention;
  const school = addMonths(f.birthDate, 12 * r.schoolAgeYears + r.afterSchoolAgeMonths);
  const inactive = addMonths(f.lastActivity.toISOString().slice(0, 10), r.inactiveFileMonths);
  return school <= inactive ? { on: school, reason: 'school_age' } : { on: inactive, reason: 'inactive' };
}

/** What the clear columns say of a file's due date: between `lo` and `hi`, by `reason` when the month settles which rule comes first. */
export interface DueBounds {
  lo: string;
  hi: string;
  reason: RetentionReason | null;
}

/**
 * The bounds of dueDate without the birth date: the school-age date of the
 * birth month's first day and of its last (addMonths keeps the order of its
 * dates, clamping to a month's end), each against the last activity's date,
 * which is exact. Null when the file has no birth month in clear.
 */
export function dueBounds(tenant: Tenant, c: Pick<RetentionCandidate, 'birthMonth' | 'lastActivity'>): DueBounds | null {
  return boundsOf(tenant)(c);
}

/**
 * dueBounds for many files: a programme's files share a few hundred birth
 * months and a few thousand days of last activity, each worked out once.
 */
function boundsOf(tenant: Tenant): (c: Pick<RetentionCandidate, 'birthMonth' | 'lastActivity'>) => DueBounds | null {
  const r = tenant.rules.retention;
  const months = 12 * r.schoolAgeYears + r.afterSchoolAgeMonths;
  const schoolByMonth = new Map<string, readonly [string, string]>();
  const inactiveByDay = new Map<string, string>();
  return (c) => {
    if (!c.birthMonth) return null;
    let school = schoolByMonth.get(c.birthMonth);
    if (!school) {
      const [y, m] = c.birthMonth.split('-').map(Number) as [number, number];
      const first = `${c.birthMonth.slice(0, 8)}01`;
      const last = `${c.birthMonth.slice(0, 8)}${String(new Date(Date.UTC(y, m, 0)).getUTCDate()).padStart(2, '0')}`;
      school = [addMonths(first, months), addMonths(last, months)] as const;
      schoolByMonth.set(c.birthMonth, school);
    }
    const day = c.lastActivity.toISOString().slice(0, 10);
    let inactive = inactiveByDay.get(day);
    if (!inactive) inactiveByDay.set(day, (inactive = addMonths(day, r.inactiveFileMonths)));
    const [schoolLo, schoolHi] = school;
    // dueDate takes the school-age date when it is not later than the inactivity date.
    const reason = inactive < schoolLo ? 'inactive' : schoolHi <= inactive ? 'school_age' : null;
    return { lo: schoolLo < inactive ? schoolLo : inactive, hi: schoolHi < inactive ? schoolHi : inactive, reason };
  };
}

/**
 * The files whose birth date the run opens: those whose month leaves open
 * whether they are due today, or by which rule (the deletion names it). A
 * file due whatever its day of birth, by a rule its month settles, is
 * deleted without its birth date being read.
 */
export function filesToOpenForRun(tenant: Tenant, candidates: readonly RetentionCandidate[], today: string): string[] {
  const bounds = boundsOf(tenant);
  const out: string[] = [];
  for (const c of candidates) {
    const b = bounds(c);
    if (!b || (b.lo <= today && today < b.hi) || (b.hi <= today && !b.reason)) out.push(c.childId);
  }
  return out;
}

/** How many files of each list the page shows: the soonest, by date then reference. */
export const RETENTION_ROWS_SHOWN = 100;

/**
 * The files whose birth date the preview opens: those whose month leaves
 * open which list they are in (due by today, or within the horizon), and
 * those of each list that could be among its `shown` soonest. A list with at
 * least `shown` files certain to be in it has its `shown`-th smallest upper
 * bound T: every file among its soonest is due by T, so its lower bound is
 * at most T — a file whose lower bound is later is only counted.
 */
export function filesToOpenForPreview(tenant: Tenant, candidates: readonly RetentionCandidate[], today: string, horizon: string, shown = RETENTION_ROWS_SHOWN): string[] {
  const bounds = boundsOf(tenant);
  const open = new Set<string>();
  const lists: { id: string; b: DueBounds }[][] = [[], []];
  for (const c of candidates) {
    const b = bounds(c);
    if (!b || (b.lo <= today && today < b.hi) || (b.lo <= horizon && horizon < b.hi)) {
      open.add(c.childId);
      continue;
    }
    // Not undecided at either edge: due by today, or later than today and then by the horizon or after it.
    if (b.hi <= today) lists[0]!.push({ id: c.childId, b });
    else if (b.hi <= horizon) lists[1]!.push({ id: c.childId, b });
  }
  for (const list of lists) {
    const his = list.map((x) => x.b.hi).sort();
    const t = his.length >= shown ? his[shown - 1]! : '9999-12-31';
    for (const { id, b } of list) if (b.lo <= t && !(b.lo === b.hi && b.reason)) open.add(id);
  }
  return [...open];
}

export interface ScheduleList {
  /** Files in the list. */
  count: number;
  /** The soonest RETENTION_ROWS_SHOWN, by date then reference. */
  first: ScheduledFile[];
}

export interface RetentionPreview {
  /** Live files the next run deletes (due today or earlier). */
  dueNow: ScheduleList;
  /** Live files due after today and within `horizonDays`. */
  upcoming: ScheduleList;
  /** Deleted files and the day the purge destroys them. */
  awaitingPurge: DeletedFile[];
  lastRun: { at: Date; summary: Record<string, unknown> } | null;
  horizonDays: number;
  /** Accounts without any child file: closed at the next run, and within the horizon. */
  accounts: { dueNow: number; upcoming: string[] };
}

// ISO dates and references are ASCII: code-point order, several times faster than a collation over 40,000 files.
const cmp = (x: string, y: string) => (x < y ? -1 : x > y ? 1 : 0);
const bySchedule = (a: ScheduledFile, b: ScheduledFile) => cmp(a.deleteOn, b.deleteOn) || cmp(a.reference, b.reference);

async function awaitingPurge(deps: Deps, tenant: Tenant): Promise<DeletedFile[]> {
  const rows = await inTenant(deps.db.db, tenant.id, (trx) =>
    filesAwaitingPurge(trx),
  );
  return rows.map((r) => ({ childId: r.id, reference: r.reference, deletedAt: r.deleted_at!, purgeOn: new Date(r.deleted_at!.getTime() + tenant.rules.deletedFileRetentionDays * DAY) }));
}

/**
 * The preview's two lists from the candidates and the birth dates opened
 * (filesToOpenForPreview's): each file counted in its list, the soonest
 * `shown` listed with their date and rule.
 */
export function scheduleLists(tenant: Tenant, candidates: readonly RetentionCandidate[], birthDates: ReadonlyMap<string, string>, today: string, horizon: string, shown = RETENTION_ROWS_SHOWN): { dueNow: ScheduleList; upcoming: ScheduleList } {
  const bounds = boundsOf(tenant);
  const lists = { dueNow: { count: 0, first: [] as ScheduledFile[] }, upcoming: { count: 0, first: [] as ScheduledFile[] } };
  for (const c of candidates) {
    const birthDate = birthDates.get(c.childId);
    // Opened: its date. Not opened: its bounds, which settle its list, and its date when they meet.
    const d = birthDate ? dueDate(tenant, { birthDate, lastActivity: c.lastActivity }) : null;
    const b = d ? { lo: d.on, hi: d.on, reason: d.reason } : bounds(c);
    if (!b) throw new Error(`retention: file ${c.childId} has no birth month in clear and was not opened`);
    const list = b.hi <= today ? lists.dueNow : b.hi <= horizon ? lists.upcoming : null;
    if (!list) continue;
    list.count++;
    if (b.lo === b.hi && b.reason) list.first.push({ childId: c.childId, reference: c.reference, deleteOn: b.lo, reason: b.reason });
  }
  for (const l of Object.values(lists)) l.first = l.first.sort(bySchedule).slice(0, shown);
  return lists;
}

/** The files the run deletes, and by which rule, from the candidates and the birth dates opened (filesToOpenForRun's). */
export function dueForRun(tenant: Tenant, candidates: readonly RetentionCandidate[], birthDates: ReadonlyMap<string, string>, today: string): { childId: string; reason: RetentionReason }[] {
  const bounds = boundsOf(tenant);
  const due: { childId: string; reason: RetentionReason }[] = [];
  for (const c of candidates) {
    const birthDate = birthDates.get(c.childId);
    if (birthDate) {
      const d = dueDate(tenant, { birthDate, lastActivity: c.lastActivity });
      if (d.on <= today) due.push({ childId: c.childId, reason: d.reason });
      continue;
    }
    // Not opened: due by today whatever the day of birth, by the rule its month settles — or not due.
    const b = bounds(c);
    if (!b || (b.lo <= today && today < b.hi) || (b.hi <= today && !b.reason)) throw new Error(`retention: file ${c.childId} is undecided and was not opened`);
    if (b.hi <= today) due.push({ childId: c.childId, reason: b.reason! });
  }
  return due;
}

/** What comes next, for a programme operator or an administrator: references and dates, no identity. */
export async function retentionPreview(deps: Deps, ctx: Ctx, horizonDays = 90): Promise<RetentionPreview> {
  const tenant = ctx.tenant;
  const today = localToday(ctx.now);
  const horizon = new Date(ctx.now.getTime() + horizonDays * DAY).toISOString().slice(0, 10);
  const { candidates, birthDates } = await readRetentionFiles(deps, ctx, 'retention.preview', horizon, (c) => filesToOpenForPreview(tenant, c, today, horizon));
  const lists = scheduleLists(tenant, candidates, birthDates, today, horizon);
  const last = await inTenant(deps.db.db, ctx.tenant.id, (trx) =>
    trx.selectFrom('audit_events').select(['occurred_at', 'details']).where('action', '=', 'retention.run').where('outcome', '=', 'success').orderBy('seq', 'desc').limit(1).executeTakeFirst(),
  );
  return {
    ...lists,
    awaitingPurge: await awaitingPurge(deps, ctx.tenant),
    lastRun: last ? { at: last.occurred_at, summary: last.details } : null,
    horizonDays,
    accounts: ((due) => ({ dueNow: due.filter((a) => a.closeOn <= today).length, upcoming: due.filter((a) => a.closeOn > today && a.closeOn <= horizon).map((a) => a.closeOn) }))(await accountsWithoutChild(deps, ctx.tenant)),
  };
}

export interface TenantRetentionResult {
  tenant: string;
  deleted: number;
  purge: PurgeResult;
  accountsClosed: number;
  /** Bodies of sent mail emptied (MAIL_BODY_DAYS after sending). */
  mailBodiesEmptied: number;
}

/** How long the outbox keeps the body of a message once sent (or given up): enough to answer "what did you send me?". */
export const MAIL_BODY_DAYS = 30;

/** Empties the bodies of mail sent (or given up) more than MAIL_BODY_DAYS ago; the rows stay as the record of what was sent. */
async function emptyOldMailBodies(deps: Deps, tenant: Tenant, now: Date): Promise<number> {
  const before = new Date(now.getTime() - MAIL_BODY_DAYS * 86_400_000);
  return inTenant(deps.db.db, tenant.id, async (trx) => {
    const rows = await trx
      .updateTable('mail_outbox')
      // The SMTP server's error often quotes the recipient: it goes with the body.
      .set({ body_text: '', last_error: null })
      .where('body_text', '<>', '')
      .where((eb) => eb.or([eb('sent_at', '<', before), eb.and([eb('sent_at', 'is', null), eb('attempts', '>=', MAX_MAIL_ATTEMPTS), eb('created_at', '<', before)])]))
      .returning('id')
      .execute();
    return rows.length;
  });
}

/** A parent's account with no child file left, and the day the rules close it. */
export interface AccountDue {
  accountId: string;
  closeOn: string;
}

/**
 * Accounts that hold no child file (none created, or every one purged) and
 * no role, with the day they are due: their last activity (creation, last
 * use of a session, last purge of a file) plus the tenant's months.
 */
export async function accountsWithoutChild(deps: Deps, tenant: Tenant): Promise<AccountDue[]> {
  const months = tenant.rules.retention.accountWithoutChildMonths;
  const rows = await inTenant(deps.db.db, tenant.id, (trx) => accountsWithoutLiveChild(trx));
  return rows.map((r) => ({ accountId: r.id, closeOn: addMonths(localToday(new Date(r.last)), months) })).sort((a, b) => a.closeOn.localeCompare(b.closeOn));
}

/** Closes one account the rules say is done, if it still is (checked again under lock). */
async function closeAccount(deps: Deps, tenant: Tenant, accountId: string, origin: AuditOrigin, now: Date): Promise<boolean> {
  return inTenant(deps.db.db, tenant.id, async (trx) => {
    const a = await trx.selectFrom('accounts').select(['id', 'email', 'purged_at']).where('id', '=', accountId).forUpdate().executeTakeFirst();
    if (!a || a.purged_at) return false;
    const role = await trx.selectFrom('memberships').select('id').where('account_id', '=', accountId).executeTakeFirst();
    const live = (await accountChildFiles(trx, accountId)).length > 0;
    if (role || live) return false;
    await trx.updateTable('accounts').set({ email: `purged-${accountId}@purged.invalid`, password_hash: null, status: 'suspended', purged_at: now }).where('id', '=', accountId).execute();
    const ended = await trx.updateTable('sessions').set({ revoked_at: now }).where('account_id', '=', accountId).where('revoked_at', 'is', null).returning('id').execute();
    await cancelPendingRequestsOf(trx, tenant.id, accountId, 'account_closed', origin, now);
    // Its address and what was written to it go from the outbox too (mail still waiting is sent first, then emptied by age).
    const mail = await trx
      .updateTable('mail_outbox')
      .set({ to_address: '', body_text: '', last_error: null })
      .where('to_address', '=', a.email)
      .where((eb) => eb.or([eb('sent_at', 'is not', null), eb('attempts', '>=', MAX_MAIL_ATTEMPTS)]))
      .returning('id')
      .execute();
    // A parent assisted before ever filing has no family for the purge to reach: the notes about them go here.
    const notesErased = await eraseAssistedNotes(trx, accountId);
    await appendAudit(
      trx,
      tenant.id,
      { action: 'records.account.purge', outcome: 'success', ...originFields(origin), targetType: 'account', targetIds: [accountId], fields: ['account_email', 'password'], details: { rule: 'account_without_child', months: tenant.rules.retention.accountWithoutChildMonths, sessionsEnded: ended.length, mailErased: mail.length, notesErased } },
      now,
    );
    return true;
  });
}

/** One tenant: delete what the rules say is due, then purge what has waited long enough. */
export async function runTenantRetention(deps: Deps, tenant: Tenant, origin: AuditOrigin, now: Date): Promise<TenantRetentionResult> {
  const ctx: Ctx = { tenant, actor: null, ip: null, userAgent: origin.userAgent, requestId: null, locale: 'fr', now, baseUrl: deps.config.publicUrl ?? '' };
  try {
    const today = localToday(now);
    const { candidates, birthDates } = await readRetentionFiles(deps, ctx, 'retention.run', today, (c) => filesToOpenForRun(tenant, c, today), origin);
    const due = dueForRun(tenant, candidates, birthDates, today);
    let deleted = 0;
    for (const reason of ['school_age', 'inactive'] as const) {
      deleted += await retireChildFiles(deps, ctx, due.filter((f) => f.reason === reason).map((f) => f.childId), `retention_${reason}`, origin);
    }
    const purge = await purgeExpired(deps.db.db, deps.keys, tenant, origin, now);
    let accountsClosed = 0;
    for (const a of await accountsWithoutChild(deps, tenant)) {
      if (a.closeOn <= today && (await closeAccount(deps, tenant, a.accountId, origin, now))) accountsClosed++;
    }
    const mailBodiesEmptied = await emptyOldMailBodies(deps, tenant, now);
    await appendAuditAlone(
      deps.db.db,
      tenant.id,
      {
        action: 'retention.run',
        outcome: 'success',
        ...originFields(origin),
        targetType: 'tenant',
        details: { deleted, filesPurged: purge.filesPurged, familiesPurged: purge.familiesPurged, familiesRekeyed: purge.familiesRekeyed, keysDestroyed: purge.keysDestroyed, accountsClosed, mailBodiesEmptied },
      },
      now,
    );
    return { tenant: tenant.slug, deleted, purge, accountsClosed, mailBodiesEmptied };
  } catch (err) {
    await appendAuditAlone(deps.db.db, tenant.id, { action: 'retention.run', outcome: 'failure', ...originFields(origin), targetType: 'tenant', details: { error: String((err as Error).message).slice(0, 300) } }, now).catch(() => {});
    throw err;
  }
}

/** A lock key of its own, so that the retention job never waits on another use of advisory locks. */
const LOCK = sql`hashtext('guichet.retention')`;
let runningHere: Promise<unknown> | null = null;

/**
 * Every tenant (or one), under the lock. Returns null when another instance
 * is running it (this one skips).
 */
export async function runRetention(deps: Deps, origin: AuditOrigin, now: Date, only?: Tenant): Promise<TenantRetentionResult[] | null> {
  if (runningHere) return null;
  const work = async () => {
    const out: TenantRetentionResult[] = [];
    for (const t of only ? [only] : await deps.tenants.all()) out.push(await runTenantRetention(deps, t, origin, now));
    return out;
  };
  const p = (async () => {
    if (deps.db.kind !== 'postgres') return work();
    // A session lock on a connection of its own, held for the whole run; the work uses the pool's other connections.
    return deps.db.db.connection().execute(async (conn) => {
      const { rows } = await sql<{ ok: boolean }>`SELECT pg_try_advisory_lock(${LOCK}) AS ok`.execute(conn);
      if (!rows[0]?.ok) return null;
      try {
        return await work();
      } finally {
        await sql`SELECT pg_advisory_unlock(${LOCK})`.execute(conn);
      }
    });
  })();
  runningHere = p;
  try {
    return await p;
  } finally {
    runningHere = null;
  }
}

/** GUICHET_RETENTION_HOUR: the hour of the day (Montreal time) the server runs the job; 'off' disables it. */
export function retentionHour(env: NodeJS.ProcessEnv): number | null {
  const v = env.GUICHET_RETENTION_HOUR;
  if (v === undefined || v === '') return 3;
  if (v === 'off') return null;
  if (!/^\d{1,2}$/.test(v) || Number(v) > 23) throw new Error(`GUICHET_RETENTION_HOUR: an hour from 0 to 23, or off (not "${v}")`);
  return Number(v);
}

/** The next instant after `now` at which Montreal's clock shows `hour`:00. */
export function nextRunAt(now: Date, hour: number): Date {
  const fmt = new Intl.DateTimeFormat('en-US', { timeZone: 'America/Toronto', hourCycle: 'h23', hour: '2-digit', minute: '2-digit' });
  // Walk forward a quarter-hour at a time: DST-proof, at most 96 steps.
  const start = Math.ceil((now.getTime() + 1) / (15 * 60_000)) * 15 * 60_000;
  for (let t = start; t < start + 2 * DAY; t += 15 * 60_000) {
    const p = Object.fromEntries(fmt.formatToParts(new Date(t)).map((x) => [x.type, x.value]));
    if (Number(p.hour) === hour && Number(p.minute) === 0) return new Date(t);
  }
  return new Date(start + DAY);
}

/** The daily timer of `guichet serve`; returns the stop function. */
export function startRetentionSchedule(deps: Deps, hour: number | null): () => void {
  if (hour === null) return () => {};
  let timer: NodeJS.Timeout | null = null;
  let stopped = false;
  const origin: AuditOrigin = { actorAccountId: null, actorRoles: ['system:retention'], ip: null, userAgent: 'guichet serve (retention)', requestId: null };
  const arm = () => {
    if (stopped) return;
    const at = nextRunAt(deps.clock(), hour);
    timer = setTimeout(() => void fire(), Math.max(1000, at.getTime() - Date.now()));
    timer.unref();
  };
  const fire = async () => {
    try {
      const r = await runRetention(deps, origin, deps.clock());
      if (r) deps.log.info({ retention: r.map((x) => ({ tenant: x.tenant, deleted: x.deleted, purged: x.purge.filesPurged })) }, 'retention run');
      else deps.log.info('retention: another instance is running it');
    } catch (err) {
      deps.log.error({ err: { message: (err as Error).message } }, 'retention run failed');
    }
    arm();
  };
  arm();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}

/** A parent's request: every live file of the family deleted now (registrations withdrawn), purged later by the rules. */
export async function requestFamilyDeletion(deps: Deps, ctx: Ctx): Promise<DeletedFile[]> {
  const actor = ctx.actor;
  const d = decide(actor, 'privacy.deletion.request', { type: 'family', ownerAccountId: actor?.accountId ?? '' }, ctx.now);
  if (!d.allowed || !actor) {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action: 'privacy.deletion.request', outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'family', details: withSession(ctx, { reason: d.reason ?? 'denied' }) }, ctx.now);
    throw new AppError(actor ? 'forbidden' : 'signInRequired');
  }
  // A stolen session alone does not delete every file of the family at once: as for one file, a fresh authentication.
  if (!isRecentAuth(actor, ctx.now)) {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action: 'privacy.deletion.request', outcome: 'denied', ...originFields(originOf(ctx)), targetType: 'family', details: withSession(ctx, { reason: 'step_up_required' }) }, ctx.now);
    throw new StepUpRequired(false, '/account/privacy/delete');
  }
  const mine = await inTenant(deps.db.db, ctx.tenant.id, (trx) =>
    accountChildFiles(trx, actor.accountId),
  );
  const live = mine.filter((c) => !c.deleted_at).map((c) => c.id);
  await retireChildFiles(deps, ctx, live, 'parent_request');
  await appendAuditAlone(
    deps.db.db,
    ctx.tenant.id,
    { action: 'privacy.deletion.request', outcome: 'success', ...originFields(originOf(ctx)), targetType: 'child', targetIds: live, familyIds: [...new Set(mine.map((c) => c.family_id))], details: withSession(ctx, { files: live.length }) },
    ctx.now,
  );
  return pendingPurges(deps, ctx);
}

/** The signed-in parent's deleted files and the day each is destroyed. */
export async function pendingPurges(deps: Deps, ctx: Ctx): Promise<DeletedFile[]> {
  const actor = ctx.actor;
  if (!actor) return [];
  const rows = (await inTenant(deps.db.db, ctx.tenant.id, (trx) => accountChildFiles(trx, actor.accountId))).filter((r) => r.deleted_at);
  return rows.map((r) => ({ childId: r.id, reference: r.reference, deletedAt: r.deleted_at!, purgeOn: new Date(r.deleted_at!.getTime() + ctx.tenant.rules.deletedFileRetentionDays * DAY) }));
}
