/**
 * The breach impact report: for one actor, one session or one network
 * address, and a window of time, the exact persons, files and fields that
 * were read, exported, changed or deleted — taken from the audit log, and
 * only after the log has been verified against its signed heads, so that
 * the answer does not rest on rows an intruder could have rewritten. It
 * produces a notice to each family in the family's language and the summary
 * for the Commission d'accès à l'information.
 *
 * Which fields: every personal-data event names the fields its purpose
 * released (the gateway writes them from views.ts). An event without them
 * (written by an older version, or one that releases nothing by name) gets
 * the fields of its purpose from the purpose tables, which are code and
 * versioned (views.ts, purposes.ts); the report says which source each
 * access used. Only successful events count: a refused or failed attempt
 * released nothing, and is counted apart.
 *
 * Which files: an event's target ids that are child files of the families it
 * touched. An event that touched a family without naming a file (the
 * parent's own data) is listed against the family. A coordinated allocation
 * round's reads (its event names the run; its files are its results, or a
 * dry run's allocation_reads) are not counted: it runs from the server's command line, with no account,
 * session or address a selector could name, and releases no file's content
 * to whoever starts it, only counts and hashes. Families see it in their
 * access lists.
 */
import { isIP } from 'node:net';
import { sql } from 'kysely';
import pino from 'pino';
import { decide } from '../access/decide.ts';
import type { AuditEventInput, AuditOrigin } from '../audit/events.ts';
import { appendAudit, appendAuditAlone } from '../audit/log.ts';
import { Sealer } from '../audit/sealer.ts';
import { verifyTenant } from '../audit/verify.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import { inTenant } from '../db/tenant.ts';
import { isRecentAuth, StepUpRequired } from '../identity/stepup.ts';
import { readBreachNoticeRecipients, withSession, type NoticeRecipient } from '../records/gateway.ts';
import { originFields, type Tenant } from '../tenants/service.ts';
import { formatDateTime, messages, type Locale } from '../web/i18n/index.ts';
import { fieldsOfPurpose } from './purposes.ts';
import { childrenOfFamilies } from '../records/lookups.ts';

export type AccessKind = 'read' | 'exported' | 'changed' | 'deleted';

/** What each personal-data action did to the data it touched. An action not listed counts as a read: a report may say too much, never too little. */
const KIND_OF: Record<string, AccessKind> = {
  'waitlist.childFile.read': 'read',
  'waitlist.childFile.list': 'read',
  'waitlist.candidates.list': 'read',
  'waitlist.childFile.lookupByNirec': 'read',
  'waitlist.childFile.history': 'read',
  'family.profile.read': 'read',
  'privacy.accessLog.read': 'read',
  'privacy.breach.recipients': 'read',
  'privacy.export': 'exported',
  'waitlist.childFile.create': 'changed',
  'waitlist.childFile.update': 'changed',
  'waitlist.application.create': 'changed',
  'waitlist.application.withdraw': 'changed',
  'waitlist.childFile.restore.request': 'changed',
  'waitlist.childFile.restore.approve': 'changed',
  'family.profile.update': 'changed',
  'privacy.deletion.request': 'changed',
  'waitlist.childFile.delete': 'deleted',
  'records.childFile.purge': 'deleted',
  'records.family.purge': 'deleted',
};

export function kindOf(action: string): AccessKind {
  return KIND_OF[action] ?? 'read';
}

/**
 * The forms an address is written in the log: as the server saw it (Node writes IPv6 in lower case, compressed,
 * and an IPv4 client of a dual-stack socket as ::ffff:a.b.c.d), whatever form a firewall's log typed it in.
 */
export function addressForms(typed: string): string[] {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(typed);
  const v4 = mapped ? mapped[1]! : isIP(typed) === 4 ? typed : null;
  if (v4) return [v4, `::ffff:${v4}`];
  const compressed = new URL(`http://[${typed}]/`).hostname.slice(1, -1);
  return [...new Set([compressed, typed.toLowerCase()])];
}

export type Selector = { kind: 'actor'; value: string } | { kind: 'session'; value: string } | { kind: 'ip'; value: string };

export interface BreachInput {
  selector: Selector;
  from: string;
  to: string;
}

export type BreachErrorCode = 'window_invalid' | 'window_order' | 'selector_missing' | 'unknown_actor' | 'unknown_session' | 'bad_ip' | 'forbidden' | 'log_unverified';

/** Bad input or a refusal: nothing was produced, and the attempt is in the audit log. */
export class BreachReportError extends Error {
  constructor(
    readonly code: BreachErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface BreachAccess {
  eventId: string;
  leafIndex: number;
  at: string;
  action: string;
  kind: AccessKind;
  purpose: string | null;
  fields: string[];
  /** Where the fields come from: the event itself, or the purpose tables of this version. */
  fieldsFrom: 'event' | 'purpose' | 'none';
  onBehalfOf: string | null;
}

export interface BreachFile {
  childId: string;
  reference: string;
  fields: string[];
  kinds: AccessKind[];
  accesses: BreachAccess[];
}

export interface BreachPerson {
  familyId: string;
  accountId: string | null;
  email: string | null;
  locale: Locale;
  files: BreachFile[];
  /** Events that touched the family's own data (no file named). */
  familyAccesses: BreachAccess[];
}

export interface BreachNotice {
  familyId: string;
  to: string;
  locale: Locale;
  subject: string;
  body: string;
}

export interface BreachReport {
  format: 'guichet.breach-report.v1';
  /** The audit event that records this report: what an incident entry links to. */
  eventId: string;
  tenant: { id: string; slug: string };
  selector: Selector & { accountId?: string };
  window: { from: string; to: string };
  generatedAt: string;
  /** The log as verified before anything was read from it. */
  verification: { treeSize: number; rootHash: string; signedAt: string; signaturesChecked: true };
  /** Events of the selector in the window, in the verified tree. */
  events: number;
  /** Of which refused or failed: they released nothing. */
  refused: number;
  /** Events of the selector in the window committed after the verified head (none, unless the window reaches the present). */
  unsealed: number;
  persons: BreachPerson[];
  totals: { families: number; files: number; read: number; exported: number; changed: number; deleted: number };
  notices: BreachNotice[];
  commission: { fr: string; en: string };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ISO = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2}))?$/;

/** An ISO 8601 date or date-time with a zone; a bare date is midnight UTC. */
export function parseInstant(v: string): Date | null {
  if (typeof v !== 'string' || !ISO.test(v.trim())) return null;
  const s = v.trim();
  const d = new Date(/T/.test(s) ? s : `${s}T00:00:00Z`);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** Who asks: a security officer in the console, or the operator on the server (the CLI). */
export type Requester = { kind: 'web'; ctx: Ctx } | { kind: 'cli'; tenant: Tenant; origin: AuditOrigin; now: Date };

function bounded(v: string): string {
  return String(v).slice(0, 120).replace(/[\u0000-\u001f\u007f-\u009f]/g, '\ufffd');
}

export async function createBreachReport(deps: Deps, who: Requester, input: BreachInput): Promise<BreachReport> {
  const tenant = who.kind === 'web' ? who.ctx.tenant : who.tenant;
  const now = who.kind === 'web' ? who.ctx.now : who.now;
  const origin = who.kind === 'web' ? originOf(who.ctx) : who.origin;
  const db = deps.db.db;
  const logAttempt = (outcome: 'denied' | 'failure' | 'success', details: Record<string, string | number | boolean | null>, extra: Partial<AuditEventInput> = {}) =>
    appendAuditAlone(
      db,
      tenant.id,
      {
        action: 'privacy.breachReport.create',
        outcome,
        ...originFields(origin),
        targetType: 'audit_log',
        ...extra,
        details: who.kind === 'web' ? withSession(who.ctx, details) : details,
      },
      now,
    );
  // What was typed stays out of the log, which nothing can erase: an e-mail address, an address or any text in a
  // field is personal data or may be. The kind of selector and the window, when it parses, say what was asked.
  const typedWindow = (v: string | undefined) => (v ? (parseInstant(v)?.toISOString() ?? 'invalid') : null);
  const what = { selector: input.selector?.kind ?? null, from: typedWindow(input.from), to: typedWindow(input.to) };
  const refuse = async (code: BreachErrorCode, message: string, outcome: 'denied' | 'failure' = 'failure'): Promise<never> => {
    await logAttempt(outcome, { reason: code, ...what });
    throw new BreachReportError(code, message);
  };

  if (who.kind === 'web') {
    const ctx = who.ctx;
    const d = decide(ctx.actor, 'privacy.breachReport.create', { type: 'tenant' }, ctx.now);
    if (!d.allowed) await refuse('forbidden', 'a breach report needs the security officer role', 'denied');
    if (!isRecentAuth(ctx.actor, ctx.now)) {
      await logAttempt('denied', { reason: 'step_up_required', ...what });
      throw new StepUpRequired(false, undefined);
    }
  }

  const from = parseInstant(input.from);
  const to = parseInstant(input.to);
  if (!from || !to) return refuse('window_invalid', '--from and --to must be ISO 8601 dates or date-times with a time zone (e.g. 2026-05-15 or 2026-05-15T19:32:00-04:00)');
  if (!(from < to)) return refuse('window_order', `the window is empty: --from (${from.toISOString()}) must be before --to (${to.toISOString()})`);
  if (!input.selector || !input.selector.value) return refuse('selector_missing', 'name exactly one of --actor ACCOUNT, --session ID or --ip ADDR');

  // Who the selector names must exist (an address need only be one).
  const sel = input.selector;
  let accountId: string | undefined;
  if (sel.kind === 'actor') {
    const v = sel.value.trim();
    const found = await inTenant(db, tenant.id, (trx) => {
      const q = trx.selectFrom('accounts').select('id');
      return (UUID.test(v) ? q.where('id', '=', v) : q.where('email', '=', v.toLowerCase())).executeTakeFirst();
    });
    if (!found) return refuse('unknown_actor', `--actor: no account "${bounded(v)}" in tenant ${tenant.slug} (an account id or an e-mail address)`);
    accountId = found.id;
  } else if (sel.kind === 'session') {
    const v = sel.value.trim();
    // A sign-in session, or a facility's API key: a key's requests carry its id as their session (src/api/keys.ts),
    // so a leaked key's reads are selected alone, not with everything its creator did in a browser.
    const found = UUID.test(v)
      ? await inTenant(db, tenant.id, async (trx) => {
          const s = await trx.selectFrom('sessions').select(['account_id']).where('id', '=', v).executeTakeFirst();
          return s ?? (await trx.selectFrom('facility_api_keys').select(['created_by as account_id']).where('id', '=', v).executeTakeFirst());
        })
      : undefined;
    if (!found) return refuse('unknown_session', `--session: no session or API key "${bounded(v)}" in tenant ${tenant.slug}`);
    accountId = found.account_id;
  } else if (!isIP(sel.value.trim()) || sel.value.includes('%')) {
    // A zone (fe80::1%eth0) names an interface of one machine: never an address the server recorded.
    return refuse('bad_ip', `--ip: "${bounded(sel.value)}" is not an IPv4 or IPv6 address`);
  }

  // Seal what is waiting, then verify the whole log against the signed heads with the tenant's key.
  const sealer = new Sealer(db, deps.keys, pino({ level: 'silent' }));
  for (let tries = 0; tries < 100; tries++) {
    const r = await sealer.sealTenant(tenant.id);
    if (r.busy) {
      await new Promise((res) => setTimeout(res, 100));
      continue;
    }
    if (!r.more) break;
  }
  const verified = await verifyTenant(db, tenant.id, { key: sealer.signer(tenant.id).verifier });
  if (!verified.ok || !verified.latestHead) {
    const problem = verified.firstBad ? `${verified.firstBad.problem}${verified.firstBad.leafIndex !== null ? ` (leaf ${verified.firstBad.leafIndex})` : ''}` : 'no signed head';
    return refuse('log_unverified', `the audit log of ${tenant.slug} does not verify against its signed heads, so no report can rest on it: ${problem}`);
  }
  const treeSize = verified.latestHead.size;

  const matches = (trx: Parameters<Parameters<typeof inTenant>[2]>[0]) => {
    let q = trx.selectFrom('audit_events as e').where('e.tenant_id', '=', tenant.id).where('e.occurred_at', '>=', from).where('e.occurred_at', '<', to);
    if (sel.kind === 'actor') q = q.where('e.actor_account_id', '=', accountId!);
    // A session's events are its account's (withSession names only the acting session): the account's index finds
    // them, and the session narrows them, instead of every event of the window read for its details.
    else if (sel.kind === 'session') q = q.where('e.actor_account_id', '=', accountId!).where(sql<string>`e.details->>'session'`, '=', sel.value.trim());
    else q = q.where('e.ip', 'in', addressForms(sel.value.trim()));
    return q;
  };
  const { events, unsealed } = await inTenant(db, tenant.id, async (trx) => {
    const events = await matches(trx)
      .innerJoin('audit_leaves as l', (j) => j.onRef('l.event_id', '=', 'e.id').onRef('l.tenant_id', '=', 'e.tenant_id'))
      .where('l.leaf_index', '<', String(treeSize))
      .select(['e.id', 'l.leaf_index', 'e.occurred_at', 'e.action', 'e.outcome', 'e.target_ids', 'e.family_ids', 'e.fields', 'e.purpose', 'e.on_behalf_of'])
      .orderBy('l.leaf_index')
      .execute();
    const all = await matches(trx).select(sql<string>`count(*)`.as('n')).executeTakeFirst();
    return { events, unsealed: Number(all?.n ?? 0) - events.length };
  });

  // The families touched, their files, and who they are.
  const successes = events.filter((e) => e.outcome === 'success' && e.family_ids.length);
  const familyIds = [...new Set(successes.flatMap((e) => e.family_ids))];
  const kids = familyIds.length
    ? await inTenant(db, tenant.id, (trx) => childrenOfFamilies(trx, familyIds))
    : [];
  const childById = new Map(kids.map((k) => [k.id, k]));
  const persons = new Map<string, BreachPerson>();
  const person = (familyId: string) => {
    let p = persons.get(familyId);
    if (!p) persons.set(familyId, (p = { familyId, accountId: null, email: null, locale: 'fr', files: [], familyAccesses: [] }));
    return p;
  };
  for (const e of successes) {
    const own = e.fields.length ? { fields: [...e.fields], from: 'event' as const } : null;
    const derived = own ?? (fieldsOfPurpose(e.purpose) ? { fields: fieldsOfPurpose(e.purpose)!, from: 'purpose' as const } : { fields: [] as string[], from: 'none' as const });
    const access: BreachAccess = {
      eventId: e.id,
      leafIndex: Number(e.leaf_index),
      at: e.occurred_at.toISOString(),
      action: e.action,
      kind: kindOf(e.action),
      purpose: e.purpose,
      fields: derived.fields,
      fieldsFrom: derived.from,
      onBehalfOf: e.on_behalf_of,
    };
    const fams = new Set(e.family_ids);
    const files = [...new Set(e.target_ids)].map((id) => childById.get(id)).filter((k): k is NonNullable<typeof k> => !!k && fams.has(k.family_id));
    const named = new Set(files.map((k) => k.family_id));
    for (const k of files) {
      const p = person(k.family_id);
      let f = p.files.find((x) => x.childId === k.id);
      if (!f) p.files.push((f = { childId: k.id, reference: k.reference, fields: [], kinds: [], accesses: [] }));
      f.accesses.push(access);
    }
    for (const fam of fams) if (!named.has(fam)) person(fam).familyAccesses.push(access);
  }
  for (const p of persons.values()) {
    for (const f of p.files) {
      f.fields = [...new Set(f.accesses.flatMap((a) => a.fields))].sort();
      f.kinds = (['read', 'exported', 'changed', 'deleted'] as const).filter((k) => f.accesses.some((a) => a.kind === k));
    }
    p.files.sort((a, b) => a.reference.localeCompare(b.reference));
  }

  // The notices' addresses: a read of those files by whoever asks for the report, recorded as such.
  const childIds = [...persons.values()].flatMap((p) => p.files.map((f) => f.childId));
  const ctx: Ctx =
    who.kind === 'web' ? who.ctx : { tenant, actor: null, ip: null, userAgent: who.origin.userAgent, requestId: null, locale: 'fr', now, baseUrl: deps.config.publicUrl ?? '' };
  const recipients = persons.size ? await readBreachNoticeRecipients(deps, ctx, [...persons.keys()], childIds, who.kind === 'cli' ? who.origin : undefined) : [];
  const byFamily = new Map(recipients.map((r) => [r.familyId, r]));
  for (const p of persons.values()) {
    const r = byFamily.get(p.familyId);
    if (r) Object.assign(p, { accountId: r.accountId, email: r.email, locale: r.locale });
  }
  const ordered = [...persons.values()].sort((a, b) => (a.email ?? '').localeCompare(b.email ?? '') || a.familyId.localeCompare(b.familyId));
  const count = (k: AccessKind) => ordered.reduce((n, p) => n + p.files.filter((f) => f.kinds.includes(k)).length + (p.familyAccesses.some((a) => a.kind === k) ? 1 : 0), 0);
  const report: BreachReport = {
    format: 'guichet.breach-report.v1',
    tenant: { id: tenant.id, slug: tenant.slug },
    selector: { ...sel, value: sel.value.trim(), ...(accountId ? { accountId } : {}) },
    window: { from: from.toISOString(), to: to.toISOString() },
    generatedAt: now.toISOString(),
    verification: { treeSize, rootHash: verified.latestHead.root, signedAt: verified.latestHead.signedAt, signaturesChecked: true },
    events: events.length,
    refused: events.filter((e) => e.outcome !== 'success').length,
    unsealed,
    persons: ordered,
    totals: { families: ordered.length, files: childIds.length, read: count('read'), exported: count('exported'), changed: count('changed'), deleted: count('deleted') },
    notices: [],
    commission: { fr: '', en: '' },
    eventId: '',
  };
  report.notices = ordered.flatMap((p) => {
    const r = byFamily.get(p.familyId);
    return r ? [noticeFor(tenant, p, r)] : [];
  });
  report.commission = { fr: commissionSummary(tenant, report, 'fr'), en: commissionSummary(tenant, report, 'en') };
  const made = await inTenant(
    db,
    tenant.id,
    (trx) =>
      appendAudit(
        trx,
        tenant.id,
        {
          action: 'privacy.breachReport.create',
          outcome: 'success',
          ...originFields(origin),
          targetType: 'audit_log',
          familyIds: ordered.map((p) => p.familyId),
          targetIds: childIds,
          details: ((d: Record<string, string | number | boolean | null>) => (who.kind === 'web' ? withSession(who.ctx, d) : d))({
            selector: sel.kind,
            from: report.window.from,
            to: report.window.to,
            events: report.events,
            families: report.totals.families,
            files: report.totals.files,
            tree_size: treeSize,
          }),
        },
        now,
      ),
    origin.actorAccountId,
  );
  report.eventId = made.id;
  return report;
}

/** A field's name as a person reads it; the technical name when the catalogue has none. */
export function fieldLabel(locale: Locale, field: string): string {
  const labels = messages(locale).privacy.fieldLabels as Record<string, string>;
  return Object.hasOwn(labels, field) ? labels[field]! : field;
}

/**
 * A family's notice, in French then in English (threats.md: bilingual notices), whatever the account's language:
 * a notice of this weight must be read, and the account's language setting may be a default nobody chose.
 */
function noticeFor(tenant: Tenant, p: BreachPerson, r: NoticeRecipient): BreachNotice {
  const fr = noticeIn('fr', tenant, p, r);
  const en = noticeIn('en', tenant, p, r);
  return { familyId: p.familyId, to: r.email, locale: r.locale, subject: `${fr.subject} / ${en.subject}`, body: `${fr.body}\n\n---------- English version ----------\n\n${en.body}` };
}

function noticeIn(locale: Locale, tenant: Tenant, p: BreachPerson, r: NoticeRecipient): { subject: string; body: string } {
  const m = messages(locale).privacy.notice;
  const org = locale === 'fr' ? tenant.nameFr : tenant.nameEn;
  const kindWords = messages(locale).privacy.kinds;
  const lines: string[] = [];
  for (const f of p.files) {
    const name = r.children.find((c) => c.id === f.childId)?.firstName ?? null;
    const first = f.accesses[0]!.at;
    const last = f.accesses[f.accesses.length - 1]!.at;
    lines.push(
      m.fileLine(
        name,
        f.reference,
        f.kinds.map((k) => kindWords[k]).join(', '),
        f.fields.map((x) => fieldLabel(locale, x)).join(', '),
        formatDateTime(locale, new Date(first)),
        formatDateTime(locale, new Date(last)),
      ),
    );
  }
  if (p.familyAccesses.length) {
    const fields = [...new Set(p.familyAccesses.flatMap((a) => a.fields))].sort();
    const kinds = (['read', 'exported', 'changed', 'deleted'] as const).filter((k) => p.familyAccesses.some((a) => a.kind === k));
    lines.push(m.familyLine(kinds.map((k) => kindWords[k]).join(', '), fields.map((x) => fieldLabel(locale, x)).join(', ')));
  }
  return { subject: m.subject(org), body: m.body(org, lines.join('\n')) };
}

function commissionSummary(tenant: Tenant, r: BreachReport, locale: Locale): string {
  const m = messages(locale).privacy.commission;
  const org = locale === 'fr' ? tenant.nameFr : tenant.nameEn;
  const fields = [...new Set(r.persons.flatMap((p) => [...p.files.flatMap((f) => f.fields), ...p.familyAccesses.flatMap((a) => a.fields)]))].sort();
  return m.body({
    org,
    generatedAt: formatDateTime(locale, new Date(r.generatedAt)),
    selector: m.selector[r.selector.kind](r.selector.value),
    from: formatDateTime(locale, new Date(r.window.from)),
    to: formatDateTime(locale, new Date(r.window.to)),
    families: r.totals.families,
    files: r.totals.files,
    read: r.totals.read,
    exported: r.totals.exported,
    changed: r.totals.changed,
    deleted: r.totals.deleted,
    fields: fields.map((f) => fieldLabel(locale, f)).join(', '),
    refused: r.refused,
    treeSize: r.verification.treeSize,
    signedAt: formatDateTime(locale, new Date(r.verification.signedAt)),
    root: r.verification.rootHash,
    notices: r.notices.length,
  });
}

function csvCell(v: string | number | null): string {
  const s = v === null ? '' : String(v);
  // A cell a spreadsheet would run as a formula is quoted and prefixed (OWASP CSV injection).
  const safe = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s;
  return /[",\n\r;']/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

export function csvLine(cells: (string | number | null)[]): string {
  return `${cells.map(csvCell).join(',')}\r\n`;
}

/** One line per access to a file or a family: what a spreadsheet needs to sort and count. */
export function breachReportCsv(r: BreachReport): string {
  let out = csvLine(['family_id', 'account_email', 'locale', 'child_id', 'reference', 'occurred_at', 'action', 'kind', 'purpose', 'fields', 'fields_from', 'event_id', 'leaf_index']);
  for (const p of r.persons) {
    for (const f of p.files) {
      for (const a of f.accesses) out += csvLine([p.familyId, p.email, p.locale, f.childId, f.reference, a.at, a.action, a.kind, a.purpose, a.fields.join(' '), a.fieldsFrom, a.eventId, a.leafIndex]);
    }
    for (const a of p.familyAccesses) out += csvLine([p.familyId, p.email, p.locale, null, null, a.at, a.action, a.kind, a.purpose, a.fields.join(' '), a.fieldsFrom, a.eventId, a.leafIndex]);
  }
  return out;
}
