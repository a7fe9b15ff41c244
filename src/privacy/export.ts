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
import { readFamilyExport, type FamilyExport, type FamilyExportChildCore } from '../records/gateway.ts';
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
    applications: { id: string; facilityId: string; facilityName: string; municipality: string; status: string; appliedAt: string }[];
    offers: { id: string; facilityId: string; facilityName: string; municipality: string; ageGroup: string; status: string; source: string; offeredAt: string; deadline: string; answeredAt: string | null; startDate: string | null }[];
    allocations: { runId: string; runAt: string; ageGroup: string; desiredEntryDate: string; choices: { facilityId: string; facilityName: string; category: number }[]; placedChoice: number | null }[];
    history: { version: number; change: string; changedFields: string[]; changedAt: string; changedBy: string | null }[];
  })[];
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
    children: data.children.map((c) => ({
      ...c,
      createdAt: c.createdAt.toISOString(),
      deletedAt: c.deletedAt?.toISOString() ?? null,
      applications: c.applications.map((a) => ({ ...a, appliedAt: a.appliedAt.toISOString() })),
      offers: c.offers.map((o) => ({ ...o, offeredAt: o.offeredAt.toISOString(), deadline: o.deadline.toISOString(), answeredAt: o.answeredAt?.toISOString() ?? null })),
      allocations: c.allocations.map((a) => ({ ...a, runAt: a.runAt.toISOString() })),
      history: c.history.map((h) => ({ ...h, changedAt: h.changedAt.toISOString() })),
    })),
    accessLog: log.map((e) => ({ ...e, at: e.at.toISOString() })),
  };
  const bom = '\ufeff';
  let children = csvLine(['child_id', 'reference', 'first_name', 'last_name', 'birth_date', 'nirec_masked', 'desired_entry_date', 'days_of_care', 'in_subsidised_care', 'created_at', 'deleted_at']);
  let applications = csvLine(['child_id', 'reference', 'application_id', 'facility_id', 'facility_name', 'municipality', 'status', 'applied_at']);
  let offers = csvLine(['child_id', 'reference', 'offer_id', 'facility_id', 'facility_name', 'municipality', 'age_group', 'status', 'source', 'offered_at', 'deadline', 'answered_at', 'start_date']);
  let allocations = csvLine(['child_id', 'reference', 'run_id', 'run_at', 'age_group', 'desired_entry_date', 'choice', 'facility_id', 'facility_name', 'category', 'placed']);
  let history = csvLine(['child_id', 'reference', 'version', 'change', 'changed_fields', 'changed_at', 'changed_by']);
  for (const c of doc.children) {
    children += csvLine([c.id, c.reference, c.firstName, c.lastName, c.birthDate, c.nirecMasked, c.desiredEntryDate, daysOf(c.daysOfCare), String(c.inSubsidisedCare), c.createdAt, c.deletedAt]);
    for (const a of c.applications) applications += csvLine([c.id, c.reference, a.id, a.facilityId, a.facilityName, a.municipality, a.status, a.appliedAt]);
    for (const o of c.offers) offers += csvLine([c.id, c.reference, o.id, o.facilityId, o.facilityName, o.municipality, o.ageGroup, o.status, o.source, o.offeredAt, o.deadline, o.answeredAt, o.startDate]);
    for (const a of c.allocations) {
      a.choices.forEach((ch, i) => {
        allocations += csvLine([c.id, c.reference, a.runId, a.runAt, a.ageGroup, a.desiredEntryDate, i + 1, ch.facilityId, ch.facilityName, ch.category, String(a.placedChoice === i + 1)]);
      });
    }
    for (const h of c.history) history += csvLine([c.id, c.reference, h.version, h.change, h.changedFields.join(' '), h.changedAt, h.changedBy]);
  }
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
    { name: 'access-log.csv', data: bom + access },
  ];
  return { document: doc, zip: zip(files, ctx.now), filename: `guichet-${ctx.tenant.slug}-${stamp}.zip` };
}
