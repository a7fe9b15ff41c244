/**
 * A family's data in one download (Law 25, s. 27 as in force since
 * September 2024: "in a structured, commonly used technological format"):
 * a ZIP holding the whole as JSON and the same as CSV tables (UTF-8 with a
 * byte-order mark, so that a spreadsheet opens accents right), with a
 * README in both languages. Personal data comes through the gateway, which
 * records the export before anything leaves; the access list comes from
 * the audit log.
 */
import type { Ctx, Deps } from '../context.ts';
import { requireRecentAuth } from '../identity/stepup.ts';
import { readFamilyExport, type FamilyExport, type FamilyExportChildCore, type FamilyExportVersion } from '../records/gateway.ts';
import { messages } from '../web/i18n/index.ts';
import { accessLogForExport, type AccessEntry } from './access-log.ts';
import { csvLine } from './breach.ts';
import { zip } from './zip.ts';

export interface FamilyExportDocument {
  format: 'guichet.family-export.v1';
  exportedAt: string;
  tenant: { slug: string; name: string };
  account: { email: string; locale: string; createdAt: string };
  family: FamilyExport['family'];
  children: (FamilyExportChildCore & {
    createdAt: string;
    deletedAt: string | null;
    applications: { id: string; facilityId: string; facilityName: string; municipality: string; status: string; appliedAt: string; siblingAttending: boolean | null; parentIsStaff: boolean | null; priorities: string[] }[];
    offers: { id: string; facilityId: string; facilityName: string; municipality: string; ageGroup: string; status: string; source: string; offeredAt: string; deadline: string; answeredAt: string | null; startDate: string | null }[];
    allocations: { runId: string; runAt: string; ageGroup: string; desiredEntryDate: string; choices: { facilityId: string; facilityName: string; category: number }[]; placedChoice: number | null }[];
    history: { version: number; change: string; changedFields: string[]; changedAt: string; changedBy: string | null; content: FamilyExportVersion['content'] }[];
    confirmation: { confirmedAt: string | null; remindedAt: string | null; inactiveSince: string | null; seniorityFrom: string | null };
  })[];
  assistedSessions: { requestedAt: string; startedAt: string | null; endedAt: string | null; channel: string; agentRole: string; agentOrganisation: string | null; note: string }[];
  accessLog: (Omit<AccessEntry, 'at'> & { at: string })[];
}

const DAYS = ['mon', 'tue', 'wed', 'thu', 'fri'];

function daysOf(mask: number): string {
  return DAYS.filter((_, i) => mask & (1 << i)).join(' ');
}

export async function buildFamilyExport(deps: Deps, ctx: Ctx): Promise<{ document: FamilyExportDocument; zip: Buffer; filename: string }> {
  // An export is a sensitive action: a recent authentication, as for a NIREC change.
  requireRecentAuth(ctx);
  const data = await readFamilyExport(deps, ctx);
  const log = await accessLogForExport(deps, ctx, data.familyIds);
  const doc: FamilyExportDocument = {
    format: 'guichet.family-export.v1',
    exportedAt: ctx.now.toISOString(),
    tenant: { slug: ctx.tenant.slug, name: ctx.locale === 'fr' ? ctx.tenant.nameFr : ctx.tenant.nameEn },
    account: { email: data.account.email, locale: data.account.locale, createdAt: data.account.createdAt.toISOString() },
    family: data.family,
    children: data.children.map(({ applicationDetails, confirmation, ...c }) => ({
      ...c,
      createdAt: c.createdAt.toISOString(),
      deletedAt: c.deletedAt?.toISOString() ?? null,
      applications: c.applications.map((a) => {
        const d = applicationDetails.find((x) => x.id === a.id);
        return { ...a, appliedAt: a.appliedAt.toISOString(), siblingAttending: d?.siblingAttending ?? null, parentIsStaff: d?.parentIsStaff ?? null, priorities: d?.priorities ?? [] };
      }),
      offers: c.offers.map((o) => ({ ...o, offeredAt: o.offeredAt.toISOString(), deadline: o.deadline.toISOString(), answeredAt: o.answeredAt?.toISOString() ?? null })),
      allocations: c.allocations.map((a) => ({ ...a, runAt: a.runAt.toISOString() })),
      history: c.history.map((h) => ({ ...h, changedAt: h.changedAt.toISOString() })),
      confirmation: { confirmedAt: confirmation.confirmedAt?.toISOString() ?? null, remindedAt: confirmation.remindedAt?.toISOString() ?? null, inactiveSince: confirmation.inactiveSince?.toISOString() ?? null, seniorityFrom: confirmation.seniorityFrom },
    })),
    assistedSessions: data.assistedSessions.map((s) => ({ ...s, requestedAt: s.requestedAt.toISOString(), startedAt: s.startedAt?.toISOString() ?? null, endedAt: s.endedAt?.toISOString() ?? null })),
    accessLog: log.map((e) => ({ ...e, at: e.at.toISOString() })),
  };
  const bom = '\ufeff';
  let children = csvLine(['child_id', 'reference', 'first_name', 'last_name', 'birth_date', 'nirec_masked', 'desired_entry_date', 'days_of_care', 'in_subsidised_care', 'created_at', 'deleted_at', 'confirmed_at', 'reminded_at', 'inactive_since', 'seniority_from']);
  let applications = csvLine(['child_id', 'reference', 'application_id', 'facility_id', 'facility_name', 'municipality', 'status', 'applied_at', 'sibling_attending', 'parent_is_staff', 'priorities']);
  let offers = csvLine(['child_id', 'reference', 'offer_id', 'facility_id', 'facility_name', 'municipality', 'age_group', 'status', 'source', 'offered_at', 'deadline', 'answered_at', 'start_date']);
  let allocations = csvLine(['child_id', 'reference', 'run_id', 'run_at', 'age_group', 'desired_entry_date', 'choice', 'facility_id', 'facility_name', 'category', 'placed']);
  let history = csvLine(['child_id', 'reference', 'version', 'change', 'changed_fields', 'changed_at', 'changed_by', 'first_name', 'last_name', 'birth_date', 'nirec_masked', 'desired_entry_date', 'days_of_care', 'in_subsidised_care']);
  for (const c of doc.children) {
    const k = c.confirmation;
    children += csvLine([c.id, c.reference, c.firstName, c.lastName, c.birthDate, c.nirecMasked, c.desiredEntryDate, daysOf(c.daysOfCare), String(c.inSubsidisedCare), c.createdAt, c.deletedAt, k.confirmedAt, k.remindedAt, k.inactiveSince, k.seniorityFrom]);
    for (const a of c.applications) applications += csvLine([c.id, c.reference, a.id, a.facilityId, a.facilityName, a.municipality, a.status, a.appliedAt, a.siblingAttending === null ? null : String(a.siblingAttending), a.parentIsStaff === null ? null : String(a.parentIsStaff), a.priorities.join(' ')]);
    for (const o of c.offers) offers += csvLine([c.id, c.reference, o.id, o.facilityId, o.facilityName, o.municipality, o.ageGroup, o.status, o.source, o.offeredAt, o.deadline, o.answeredAt, o.startDate]);
    for (const a of c.allocations) {
      a.choices.forEach((ch, i) => {
        allocations += csvLine([c.id, c.reference, a.runId, a.runAt, a.ageGroup, a.desiredEntryDate, i + 1, ch.facilityId, ch.facilityName, ch.category, String(a.placedChoice === i + 1)]);
      });
    }
    for (const h of c.history) {
      const v = h.content;
      history += csvLine([c.id, c.reference, h.version, h.change, h.changedFields.join(' '), h.changedAt, h.changedBy, v?.firstName ?? null, v?.lastName ?? null, v?.birthDate ?? null, v?.nirecMasked ?? null, v?.desiredEntryDate ?? null, v ? daysOf(v.daysOfCare) : null, v ? String(v.inSubsidisedCare) : null]);
    }
  }
  let assisted = csvLine(['requested_at', 'started_at', 'ended_at', 'channel', 'agent_role', 'agent_organisation', 'note']);
  for (const s of doc.assistedSessions) assisted += csvLine([s.requestedAt, s.startedAt, s.endedAt, s.channel, s.agentRole, s.agentOrganisation, s.note]);
  let access = csvLine(['occurred_at', 'action', 'kind', 'outcome', 'accessor', 'roles', 'facilities', 'purpose', 'files', 'fields', 'on_your_behalf', 'event_id']);
  for (const e of doc.accessLog) access += csvLine([e.at, e.action, e.kind, e.outcome, e.accessor, e.roles.join(' '), e.facilities.join(' | '), e.purpose, e.files.join(' '), e.fields.join(' '), String(e.onBehalf), e.eventId]);
  const account =
    csvLine(['email', 'locale', 'created_at', 'parent_first_name', 'parent_last_name', 'phone', 'postal_code']) +
    csvLine([doc.account.email, doc.account.locale, doc.account.createdAt, doc.family?.parentFirstName ?? null, doc.family?.parentLastName ?? null, doc.family?.phone ?? null, doc.family?.postalCode ?? null]);
  const readme = `${messages('fr').privacyPages.exportReadme}\n\n---\n\n${messages('en').privacyPages.exportReadme}\n`;
  const stamp = ctx.now.toISOString().slice(0, 10);
  const files = [
    { name: 'LISEZMOI-README.txt', data: readme },
    { name: 'guichet-export.json', data: `${JSON.stringify(doc, null, 2)}\n` },
    { name: 'account.csv', data: bom + account },
    { name: 'children.csv', data: bom + children },
    { name: 'applications.csv', data: bom + applications },
    { name: 'offers.csv', data: bom + offers },
    { name: 'allocations.csv', data: bom + allocations },
    { name: 'history.csv', data: bom + history },
    { name: 'assisted-sessions.csv', data: bom + assisted },
    { name: 'access-log.csv', data: bom + access },
  ];
  return { document: doc, zip: zip(files, ctx.now), filename: `guichet-${ctx.tenant.slug}-${stamp}.zip` };
}
