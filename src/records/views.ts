/**
 * What each purpose may see. A screen or API declares its purpose; the
 * gateway returns only these fields, and the audit event lists exactly them.
 * This table is the written minimisation policy that tests check answers against.
 */
export const PURPOSE_FIELDS = {
  /** A parent looks at the list of their own children. */
  'parent.children.list': ['reference', 'first_name', 'last_name', 'birth_date', 'desired_entry_date', 'applications_count'],
  /** A parent opens their child's file. */
  'parent.childFile.view': [
    'reference',
    'first_name',
    'last_name',
    'birth_date',
    'nirec_masked',
    'desired_entry_date',
    'days_of_care',
    'in_subsidised_care',
    'applications',
  ],
  /** A parent edits the file: the same, the NIREC still masked (it is re-entered, never shown). */
  'parent.childFile.edit': [
    'reference',
    'first_name',
    'last_name',
    'birth_date',
    'nirec_masked',
    'desired_entry_date',
    'days_of_care',
    'in_subsidised_care',
  ],
  /** A parent sees the child's rank at each chosen facility, and why (no other child's data leaves). */
  'parent.childFile.rank': ['application_id', 'facility_id', 'facility_name', 'age_group', 'rank', 'total', 'ordering', 'category', 'points', 'seniority_date', 'priorities_met', 'priority_open'],
  /** The server orders a facility's eligible applications (referral, allocation): references and order, no identity. */
  'system.ranking': [
    'rank',
    'application_id',
    'child_id',
    'family_id',
    'reference',
    'age_group',
    'category',
    'points',
    'seniority_date',
    'applied_at',
    'priorities_met',
    'by_priority',
    'sibling_attending',
    'parent_is_staff',
    'in_subsidised_care',
  ],
  /** A parent chooses which child to register with a facility. */
  'parent.children.choose': ['reference', 'first_name'],
  /** Facility staff see their candidates without identities before a referral. */
  'facility.candidates': ['rank', 'reference', 'age_group', 'desired_entry_date', 'category', 'applied_at'],
  /** A parent (or an operator) confirms deleting a file: whose it is, and how many registrations go with it. */
  'parent.childFile.delete': ['reference', 'first_name', 'last_name', 'applications_count'],
  /** A parent sees their deleted files that can still come back: whose, until when, and whether a restore was asked. */
  'parent.children.deleted': ['reference', 'first_name', 'last_name', 'deleted_at', 'restore_until', 'restore_requested'],
  /** An administrator reviews open restore requests: the reference and who asked, no identity of the child. */
  'admin.childFile.restoreRequests': ['child_id', 'reference', 'requested_by', 'requested_by_who', 'requested_at', 'deleted_at', 'restore_until'],
  /** A programme operator or administrator finds a child's files by NIREC: who, the NIREC still masked, and whether deleted. */
  'operator.childFile.lookup': ['reference', 'first_name', 'last_name', 'birth_date', 'nirec_masked', 'desired_entry_date', 'status', 'deleted_at'],
  /** A programme operator or administrator reads the history of a file (every version, NIREC masked). */
  'operator.childFile.history': [
    'reference',
    'version',
    'change',
    'changed_fields',
    'changed_at',
    'changed_by',
    'changed_by_who',
    'first_name',
    'last_name',
    'birth_date',
    'nirec_masked',
    'desired_entry_date',
    'days_of_care',
    'in_subsidised_care',
  ],
} as const;

export type Purpose = keyof typeof PURPOSE_FIELDS;

export function fieldsFor(purpose: Purpose): string[] {
  return [...PURPOSE_FIELDS[purpose]];
}
