import type { ColumnType, Generated } from 'kysely';

/** Timestamps are written as Date and read back as Date on both drivers. */
type Timestamp = ColumnType<Date, Date | string, Date | string>;
/** DATE columns travel as 'YYYY-MM-DD' strings (type parsers set in connection.ts). */
type DateOnly = ColumnType<string, string, string>;

export interface TenantsTable {
  id: Generated<string>;
  slug: string;
  name_fr: string;
  name_en: string;
  hosts: string[];
  rules: ColumnType<TenantRulesJson, string, string>;
  lockdown_level: Generated<number>;
  lockdown_changed_at: Generated<Date | null>;
  created_at: Generated<Date>;
}

export type TenantRulesJson = Record<string, unknown>;

export interface FacilitiesTable {
  id: Generated<string>;
  tenant_id: string;
  code: string;
  name: string;
  kind: 'cpe' | 'garderie';
  subsidised: boolean;
  address: string;
  municipality: string;
  postal_code: string;
  region: string;
  places_total: number;
  places_infant: number;
  search_key: string;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}

export interface AccountsTable {
  id: Generated<string>;
  tenant_id: string;
  email: string;
  email_verified_at: Timestamp | null;
  password_hash: string | null;
  locale: 'fr' | 'en';
  status: Generated<'active' | 'suspended'>;
  created_at: Generated<Date>;
  /** Migration 0012: closed by the retention rules (no child file left for a set time). */
  purged_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface SessionsTable {
  id: Generated<string>;
  tenant_id: string;
  account_id: string;
  token_hash: Buffer;
  created_at: Timestamp;
  last_seen_at: Timestamp;
  idle_timeout_seconds: number;
  expires_at: Timestamp;
  revoked_at: Timestamp | null;
  ip: string | null;
  user_agent: string | null;
  /** How the session last authenticated (sign-in or step-up); see src/identity/stepup.ts. */
  auth_methods: ColumnType<SessionAuthMethod[], SessionAuthMethod[] | undefined, SessionAuthMethod[]>;
  authenticated_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  /** Migration 0046: when the session followed a link e-mailed to the account (src/identity/factors/mailbox.ts). */
  mailbox_proven_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  /** The passkey of the session's last authentication (sign-in, re-authentication or enrolment); null when it used none. */
  auth_passkey_id: ColumnType<string | null, string | null | undefined, string | null>;
}

export type SessionAuthMethod = 'password' | 'totp' | 'recovery' | 'passkey';

export interface AccountTokensTable {
  id: Generated<string>;
  tenant_id: string;
  account_id: string;
  purpose: 'verify_email' | 'set_password';
  token_hash: Buffer;
  created_at: Timestamp;
  expires_at: Timestamp;
  used_at: Timestamp | null;
}

export interface InvitationsTable {
  id: Generated<string>;
  tenant_id: string;
  email: string;
  role: 'facility_staff';
  facility_id: string;
  token_hash: Buffer;
  invited_by: string;
  created_at: Timestamp;
  expires_at: Timestamp;
  accepted_at: Timestamp | null;
  accepted_account_id: string | null;
  revoked_at: Timestamp | null;
}

export type MembershipRole =
  | 'tenant_admin'
  | 'security_officer'
  | 'program_operator'
  | 'facility_director'
  | 'facility_staff';

export interface MembershipsTable {
  id: Generated<string>;
  tenant_id: string;
  account_id: string;
  role: MembershipRole;
  facility_id: string | null;
  source: 'bootstrap' | 'invitation' | 'grant';
  granted_by: string | null;
  approved_by: string | null;
  created_at: Timestamp;
  expires_at: Timestamp | null;
  revoked_at: Timestamp | null;
  /** 1 or 2 for the tenant's bootstrap administrators, set by memberships_guard; null otherwise. */
  bootstrap_slot: ColumnType<number | null, never, never>;
}

export interface FamiliesTable {
  id: Generated<string>;
  tenant_id: string;
  account_id: string;
  /** Encrypted under the family's data key (src/crypto/envelope.ts); NULL only once purged. */
  parent_first_name_enc: Buffer | null;
  parent_last_name_enc: Buffer | null;
  phone_enc: Buffer | null;
  postal_code_enc: Buffer | null;
  /** The version of the family's data key its rows are encrypted with. */
  key_version: Generated<number>;
  /** Key versions up to this one are to be destroyed in the keyring (a purge that committed here first). */
  key_destroy_pending: number | null;
  purged_at: Timestamp | null;
  /** Written before migration 0006; encrypted and emptied on first use (src/records/legacy.ts). */
  legacy_parent_first_name: string | null;
  legacy_parent_last_name: string | null;
  legacy_phone: string | null;
  legacy_postal_code: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface ChildrenTable {
  id: Generated<string>;
  tenant_id: string;
  family_id: string;
  reference: string;
  /** Encrypted under the family's data key; NULL only once purged. */
  first_name_enc: Buffer | null;
  last_name_enc: Buffer | null;
  birth_date_enc: Buffer | null;
  nirec_enc: Buffer | null;
  /** HMAC-SHA-256 of the NIREC under the tenant's index key: the NIREC itself is never stored in clear. */
  nirec_index: Buffer | null;
  desired_entry_date: DateOnly;
  days_of_care: number;
  in_subsidised_care: boolean;
  created_at: Timestamp;
  updated_at: Timestamp;
  deleted_at: Timestamp | null;
  deleted_by: string | null;
  purged_at: Timestamp | null;
  /** Written before migration 0006; encrypted and emptied on first use (src/records/legacy.ts). */
  legacy_first_name: string | null;
  legacy_last_name: string | null;
  legacy_birth_date: ColumnType<string | null, string | null, string | null>;
  legacy_nirec: string | null;
  /** Migration 0020: first day of the birth month, in clear, for the age group (NULL when unknown). */
  birth_month: ColumnType<string | null, string | null | undefined, string | null>;
  /** Migration 0017: periodic confirmation (NULL: never confirmed, counted from created_at). */
  confirmed_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  reminded_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  inactive_since: ColumnType<Date | null, Date | null | undefined, Date | null>;
  /** Migration 0017: when a reactivated file lost its seniority, the day it came back (seniority is the later of this and the desired entry date). */
  seniority_from: ColumnType<string | null, string | null | undefined, string | null>;
}

/** Migration 0006: every change to a child file, the whole file encrypted. */
export interface ChildFileVersionsTable {
  id: string;
  tenant_id: string;
  child_id: string;
  family_id: string;
  version: number;
  change: 'create' | 'update' | 'delete' | 'restore' | 'legacy';
  changed_fields: string[];
  actor_account_id: string | null;
  created_at: Timestamp;
  snapshot_enc: Buffer | null;
  purged_at: Timestamp | null;
}

/** Migration 0006: restoring a deleted file, asked by one person and decided by a second. */
export interface ChildFileRestoreRequestsTable {
  id: Generated<string>;
  tenant_id: string;
  child_id: string;
  requested_by: string;
  requested_at: Timestamp;
  decided_by: string | null;
  decided_at: Timestamp | null;
  decision: 'approved' | 'rejected' | null;
}

export interface ApplicationsTable {
  id: Generated<string>;
  tenant_id: string;
  child_id: string;
  facility_id: string;
  sibling_attending: boolean;
  parent_is_staff: boolean;
  status: 'active' | 'withdrawn' | 'placed';
  created_at: Timestamp;
  updated_at: Timestamp;
  /** Migration 0020: 1 = the child's first choice; a trigger fills it (next after the child's last) when left out. */
  preference: ColumnType<number, number | undefined, number>;
  /** Migration 0017: the facility's declared priorities the parent says the child meets (kinds). */
  priorities: ColumnType<string[], string[] | undefined, string[]>;
  /** Migration 0024: the child's terms of the order, copied by triggers (never written here): see applications_rank_terms. */
  child_birth_month: ColumnType<string | null, never, never>;
  child_desired_entry_date: ColumnType<string | null, never, never>;
  child_seniority_from: ColumnType<string | null, never, never>;
  child_in_subsidised_care: ColumnType<boolean | null, never, never>;
  child_reference: ColumnType<string | null, never, never>;
  child_eligible: ColumnType<boolean, never, never>;
  /** Its facility's region, kept equal by the database (migration 0045). */
  facility_region: ColumnType<string | null, never, never>;
}

/** Migration 0017: the priorities a facility declares (kinds from the tenant's rules). */
export interface FacilityPrioritiesTable {
  tenant_id: string;
  facility_id: string;
  kind: string;
  detail: string | null;
  declared_at: Timestamp;
  declared_by: string | null;
}

export type AgeGroupValue = 'infant' | 'toddler';

/** Migration 0016: places and vacancies per facility and age group. */
export interface FacilityPlacesTable {
  tenant_id: string;
  facility_id: string;
  age_group: AgeGroupValue;
  places: number;
  vacancies: ColumnType<number, number | undefined, number>;
  updated_at: Timestamp;
  updated_by: string | null;
}

export type OfferStatus = 'pending' | 'accepted' | 'started' | 'refused' | 'expired' | 'cancelled';

/** Migration 0016: a place proposed to one child (a referral, or an allocation round's result). */
export interface OffersTable {
  id: Generated<string>;
  tenant_id: string;
  application_id: string;
  child_id: string;
  facility_id: string;
  age_group: AgeGroupValue;
  status: ColumnType<OfferStatus, OfferStatus | undefined, OfferStatus>;
  source: ColumnType<'referral' | 'allocation', 'referral' | 'allocation' | undefined, never>;
  by_priority: string | null;
  allocation_run_id: string | null;
  offered_at: Timestamp;
  deadline: Timestamp;
  answered_at: Timestamp | null;
  start_date: ColumnType<string | null, string | null | undefined, string | null>;
  start_confirmed_at: Timestamp | null;
  start_confirmed_by: string | null;
}

/** Migration 0018: a key of the facility API (src/api), stored as a hash. */
export interface FacilityApiKeysTable {
  id: string;
  tenant_id: string;
  facility_id: string;
  name: string;
  secret_hash: Buffer;
  created_by: string;
  created_at: Timestamp;
  last_used_at: Timestamp | null;
  revoked_at: Timestamp | null;
  revoked_by: string | null;
}

export interface AuditEventsTable {
  tenant_id: string;
  /** From the sequence audit_events_seq (the column default): orders events within a transaction. */
  seq: ColumnType<string, string | number | undefined, never>;
  id: string;
  occurred_at: Timestamp;
  action: string;
  outcome: 'success' | 'denied' | 'failure';
  actor_account_id: string | null;
  actor_roles: string[];
  on_behalf_of: string | null;
  target_type: string | null;
  target_ids: string[];
  family_ids: string[];
  fields: string[];
  purpose: string | null;
  ip: string | null;
  user_agent: string | null;
  request_id: string | null;
  details: ColumnType<Record<string, unknown>, string, never>;
  /** The hash chain of events written before migration 0004; null since. */
  prev_hash: ColumnType<Buffer | null, Buffer | null | undefined, never>;
  hash: ColumnType<Buffer | null, Buffer | null | undefined, never>;
  /** The appending transaction's ticket (migration 0004; the column default, which the application may not write): the sealer's order. */
  ticket: ColumnType<string, never, never>;
  /** The format of the event's entry (migration 0051; the column default, which the application may not write): 1 JSON, 2 binary. */
  entry_format: ColumnType<number, never, never>;
}

export interface AuditLeavesTable {
  tenant_id: string;
  leaf_index: ColumnType<string, string | number, never>;
  event_id: string;
  leaf_hash: Buffer;
}

export interface AuditTreeNodesTable {
  tenant_id: string;
  level: number;
  node_index: ColumnType<string, string | number, never>;
  hash: Buffer;
}

export interface AuditTreeHeadsTable {
  tenant_id: string;
  tree_size: ColumnType<string, string | number, never>;
  root_hash: Buffer;
  signed_at: Timestamp;
  key_id: string;
  checkpoint: string;
  last_ticket: ColumnType<string, string | number, never>;
  last_seq: ColumnType<string, string | number, never>;
}

export interface AuditHeadsTable {
  tenant_id: string;
  seq: ColumnType<string, string | number, string | number>;
  hash: Buffer;
}

export interface MailOutboxTable {
  id: Generated<string>;
  tenant_id: string;
  to_address: string;
  locale: 'fr' | 'en';
  template: string;
  subject: string;
  body_text: string;
  created_at: Timestamp;
  sent_at: Timestamp | null;
  attempts: Generated<number>;
  last_error: string | null;
}

export interface AuthAttemptsTable {
  id: Generated<string>;
  tenant_id: string;
  kind: 'signin_failure' | 'signin_success' | 'signup' | 'passkey_options' | 'recovery' | 'api_key_failure';
  email_key: Buffer;
  ip: string | null;
  at: Timestamp;
}

export interface KnownDevicesTable {
  tenant_id: string;
  account_id: string;
  device_hash: Buffer;
  first_seen_at: Timestamp;
  last_seen_at: Timestamp;
  user_agent: string | null;
}

/* Second factors (migration 0005). */

export interface TotpFactorsTable {
  id: string;
  tenant_id: string;
  account_id: string;
  /** AES-256-GCM: iv ‖ ciphertext ‖ tag (src/identity/factors/totp.ts). */
  secret_enc: Buffer;
  created_at: Timestamp;
  confirmed_at: Timestamp | null;
  last_used_step: ColumnType<string | null, number | string | null, number | string | null>;
  disabled_at: Timestamp | null;
}

export interface RecoveryCodesTable {
  id: Generated<string>;
  tenant_id: string;
  account_id: string;
  code_hash: Buffer;
  created_at: Timestamp;
  used_at: Timestamp | null;
  revoked_at: Timestamp | null;
}

export interface WebauthnCredentialsTable {
  id: Generated<string>;
  tenant_id: string;
  account_id: string;
  credential_id: string;
  public_key: Buffer;
  sign_count: ColumnType<string, number | string | undefined, number | string>;
  transports: ColumnType<string[], string[] | undefined, string[]>;
  rp_id: string;
  name: string;
  aaguid: string | null;
  backed_up: ColumnType<boolean, boolean | undefined, boolean>;
  created_at: Timestamp;
  last_used_at: Timestamp | null;
  revoked_at: Timestamp | null;
  /** When the passkey was vouched for (migration 0049): until then it does not count for privileged actions. */
  vouched_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface PendingSigninsTable {
  id: Generated<string>;
  tenant_id: string;
  account_id: string | null;
  purpose: 'second_factor' | 'passkey';
  token_hash: Buffer;
  created_at: Timestamp;
  expires_at: Timestamp;
  failures: Generated<number>;
  used_at: Timestamp | null;
}

export interface WebauthnChallengesTable {
  id: Generated<string>;
  tenant_id: string;
  challenge: string;
  purpose: 'register' | 'authenticate';
  account_id: string | null;
  bound_to: Buffer;
  user_verification: 'required' | 'preferred';
  created_at: Timestamp;
  expires_at: Timestamp;
  used_at: Timestamp | null;
}

/** Migration 0046: links that prove a session's hold on the account's mailbox (src/identity/factors/mailbox.ts). */
export interface PasskeyEnrolmentLinksTable {
  id: Generated<string>;
  tenant_id: string;
  account_id: string;
  session_id: string;
  session_token_hash: Buffer;
  token_hash: Buffer;
  created_at: Timestamp;
  expires_at: Timestamp;
  used_at: Timestamp | null;
  return_to: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface FactorFailuresTable {
  id: Generated<string>;
  tenant_id: string;
  account_id: string;
  kind: 'totp' | 'recovery' | 'password';
  at: Timestamp;
}

export interface PrivilegeRequestsTable {
  id: Generated<string>;
  tenant_id: string;
  account_id: string;
  role: Exclude<MembershipRole, 'facility_staff'>;
  facility_id: string | null;
  reason: string;
  duration_minutes: number;
  requested_by: string;
  requested_at: Timestamp;
  expires_at: Timestamp;
  status: Generated<'pending' | 'approved' | 'refused' | 'cancelled'>;
  decided_by: string | null;
  decided_at: Timestamp | null;
  membership_id: string | null;
  /** A request for oneself: the first of the two administrators it needs (migration 0042). */
  endorsed_by: string | null;
  endorsed_at: Timestamp | null;
}

export interface FactorResetRequestsTable {
  id: Generated<string>;
  tenant_id: string;
  account_id: string;
  reason: string;
  requested_by: string;
  requested_at: Timestamp;
  expires_at: Timestamp;
  status: Generated<'pending' | 'approved' | 'refused' | 'cancelled'>;
  decided_by: string | null;
  decided_at: Timestamp | null;
}

export interface BreakGlassTable {
  id: Generated<string>;
  tenant_id: string;
  account_id: string;
  session_id: string;
  reason: string;
  started_at: Timestamp;
  expires_at: Timestamp;
  ended_at: Timestamp | null;
}

/** A relying party of the tenant's OpenID Connect provider (migration 0011). */
export interface OidcClientsTable {
  tenant_id: string;
  client_id: string;
  name: string;
  redirect_uris: string[];
  post_logout_redirect_uris: ColumnType<string[], string[] | undefined, string[]>;
  scopes: string[];
  logo_uri: string | null;
  backchannel_logout_uri: string | null;
  secret_wrapped: Buffer | null;
  subject_type: ColumnType<'pairwise' | 'public', 'pairwise' | 'public' | undefined, never>;
  personal: boolean;
  status: 'pending' | 'active' | 'refused' | 'disabled';
  requested_by: string;
  requested_at: Timestamp;
  approved_by: string | null;
  approved_at: Timestamp | null;
  /** Scopes asked for in an edit that widens to personal claims, waiting for a second administrator (migration 0022). */
  pending_scopes: ColumnType<string[] | null, string[] | null | undefined, string[] | null>;
  pending_requested_by: ColumnType<string | null, string | null | undefined, string | null>;
  pending_requested_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  /** Redirect addresses asked for in an edit that adds one to a personal client, waiting likewise (migration 0028). */
  pending_redirect_uris: ColumnType<string[] | null, string[] | null | undefined, string[] | null>;
  secret_rotated_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

/** oidc-provider's artefacts (src/oidc/adapter.ts). */
export interface OidcPayloadsTable {
  tenant_id: string;
  model: string;
  id: string;
  payload: ColumnType<Record<string, unknown>, string, string>;
  grant_id: string | null;
  uid: string | null;
  user_code: string | null;
  expires_at: Timestamp | null;
  consumed_at: Timestamp | null;
  /** Migration 0038: payload.accountId as a uuid (NULL when absent or not one), kept by the database. */
  account_id: ColumnType<string | null, never, never>;
}

/** Migration 0039: one row per family an audit event names, written by the database with the event (« qui a consulté »). */
export interface AuditEventFamiliesTable {
  tenant_id: string;
  family_id: string;
  seq: ColumnType<string, string | number, never>;
}

/** Accounts whose sign-ins may just have ended, noted by the database for back-channel logout (migration 0036, src/oidc/logout.ts). */
export interface OidcLogoutChecksTable {
  tenant_id: string;
  account_id: string;
  noted_at: Generated<Timestamp>;
}

export interface OidcSigningKeysTable {
  tenant_id: string;
  kid: string;
  alg: 'RS256' | 'ES256';
  public_jwk: ColumnType<Record<string, unknown>, string, never>;
  private_wrapped: Buffer;
  status: 'current' | 'previous' | 'retired';
  created_at: Timestamp;
  retired_at: Timestamp | null;
}

export interface OidcEntitlementsTable {
  id: Generated<string>;
  tenant_id: string;
  account_id: string;
  scope: string;
  kind: string;
  value: string;
  label_fr: string;
  label_en: string;
  valid_until: DateOnly | null;
  created_by: string;
  created_at: Timestamp;
  revoked_at: Timestamp | null;
}

/** Migration 0012: the register of confidentiality incidents (Law 25), kept five years. */
/** Migration 0056: what an incident entry said before each amendment; append-only. */
export interface IncidentVersionsTable {
  tenant_id: string;
  incident_id: string;
  version: number;
  content: ColumnType<Record<string, unknown>, string, never>;
  written_by: string | null;
  written_at: Timestamp;
  replaced_by: string | null;
  replaced_at: Timestamp;
}

export interface IncidentsTable {
  id: Generated<string>;
  tenant_id: string;
  number: number;
  title: string;
  data_concerned: string;
  circumstances: string;
  occurred_from: DateOnly | null;
  occurred_to: DateOnly | null;
  discovered_on: DateOnly;
  persons_count: number | null;
  risk_level: 'undetermined' | 'not_serious' | 'serious';
  risk_assessment: string;
  commission_notified_on: DateOnly | null;
  persons_notified_on: DateOnly | null;
  public_notice: string;
  measures: string;
  audit_event_ids: string[];
  /** Alerts of the detection console, by id (free text until detection lands). */
  alert_ids: string | null;
  /** Alerts of the detection console, checked to be the tenant's (migration 0022). */
  linked_alert_ids: ColumnType<string[], string[] | undefined, string[]>;
  created_by: string | null;
  created_at: Timestamp;
  updated_by: string | null;
  updated_at: Timestamp;
  retain_until: DateOnly;
}

/** Tokens issued and claims released to a client, for the rules that watch clients (migration 0022). */
export interface DetectionClientHitsTable {
  id: Generated<string>;
  tenant_id: string;
  client_id: string;
  signal: 'client_tokens' | 'client_claims';
  at: Timestamp;
}

/** One breach notice per family per incident (migration 0022). */
export interface IncidentNoticesTable {
  tenant_id: string;
  incident_id: string;
  family_id: string;
  locale: 'fr' | 'en';
  report_event_id: string;
  queued_by: string;
  queued_at: Timestamp;
}

export interface SchemaMigrationsTable {
  version: number;
  name: string;
  applied_at: Generated<Date>;
}

export type DetectionSignal = 'files_read' | 'privilege' | 'deletion' | 'new_device' | 'off_hours' | 'export' | 'export_rows' | 'name_search' | 'break_glass' | 'new_network' | 'client_tokens' | 'client_claims' | 'safeguard';
export type DetectionResponse = 'alert' | 'stepup' | 'end_sessions' | 'suspend' | 'lockdown';

export interface DetectionRulesTable {
  tenant_id: string;
  code: string;
  signal: DetectionSignal;
  threshold: number;
  window_seconds: number;
  response: DetectionResponse;
  lockdown_level: number | null;
  except_declared_batch: Generated<boolean>;
  enabled: Generated<boolean>;
  updated_at: Timestamp;
  updated_by: string | null;
}

export interface DetectionHitsTable {
  id: Generated<string>;
  tenant_id: string;
  account_id: string;
  signal: string;
  weight: number;
  at: Timestamp;
}

export interface DetectionBatchesTable {
  id: Generated<string>;
  tenant_id: string;
  account_id: string;
  reason: string;
  starts_at: Timestamp;
  ends_at: Timestamp;
  declared_by: string;
  created_at: Timestamp;
}

export interface DetectionHoldsTable {
  id: Generated<string>;
  tenant_id: string;
  account_id: string;
  kind: 'stepup';
  rule_code: string;
  since: Timestamp;
}

export interface DetectionAlertsTable {
  id: Generated<string>;
  tenant_id: string;
  rule_code: string;
  signal: string;
  severity: 'low' | 'high' | 'critical';
  subject_account_id: string | null;
  response: string;
  lockdown_level: number | null;
  event_ids: string[];
  details: ColumnType<Record<string, unknown>, string, string>;
  status: Generated<'open' | 'acknowledged' | 'closed'>;
  assigned_to: string | null;
  acknowledged_by: string | null;
  acknowledged_at: Timestamp | null;
  created_at: Timestamp;
}

export interface DetectionAlertNotesTable {
  id: Generated<string>;
  tenant_id: string;
  alert_id: string;
  author_account_id: string;
  body: string;
  created_at: Timestamp;
}

export interface LockdownChangesTable {
  id: Generated<string>;
  tenant_id: string;
  from_level: number;
  to_level: number;
  reason: string;
  requested_by: string | null;
  requested_at: Timestamp;
  status: 'pending' | 'applied' | 'refused' | 'superseded';
  decided_by: string | null;
  decided_at: Timestamp | null;
}

/** Migration 0032: a suspended account given back by two security officers (asked by one, approved by another). */
export interface AccountReinstatementsTable {
  id: Generated<string>;
  tenant_id: string;
  alert_id: string;
  account_id: string;
  requested_by: string;
  requested_at: Timestamp;
  status: 'pending' | 'applied' | 'refused';
  decided_by: string | null;
  decided_at: Timestamp | null;
}

export interface DetectionWebhooksTable {
  tenant_id: string;
  url: string;
  updated_at: Timestamp;
  updated_by: string;
}

export interface DetectionWebhookDeliveriesTable {
  id: Generated<string>;
  tenant_id: string;
  alert_id: string;
  url: string;
  body: string;
  created_at: Timestamp;
  next_attempt_at: Timestamp;
  attempts: Generated<number>;
  delivered_at: Timestamp | null;
  last_status: number | null;
  last_error: string | null;
}

export interface ProtectedFilesTable {
  id: Generated<string>;
  tenant_id: string;
  child_id: string;
  /** Null once the file is purged (migration 0048). */
  reason: string | null;
  marked_by: string;
  marked_at: Timestamp;
  unmarked_by: string | null;
  unmarked_at: Timestamp | null;
}

export interface ProtectedFileOpeningsTable {
  id: Generated<string>;
  tenant_id: string;
  child_id: string;
  account_id: string;
  /** Null once the file is purged (migration 0048). */
  reason: string | null;
  action: string;
  audit_event_id: string;
  alert_id: string | null;
  opened_at: Timestamp;
}

export interface DetectionStreamCursorsTable {
  tenant_id: string;
  leaf_index: ColumnType<string, string | number, string | number>;
}

/** Migration 0023: a tenant's declared working hours, and the networks each account signed in from. */
export interface DetectionWorkingHoursTable {
  tenant_id: string;
  time_zone: string;
  days: number[];
  start_minute: number;
  end_minute: number;
  updated_at: Timestamp;
  updated_by: string | null;
}

export interface KnownNetworksTable {
  tenant_id: string;
  account_id: string;
  prefix: string;
  first_seen_at: Timestamp;
  last_seen_at: Timestamp;
}

/** Migration 0020: a coordinated allocation round, signed. */
export interface AllocationRunsTable {
  id: string;
  tenant_id: string;
  started_at: Timestamp;
  finished_at: Timestamp;
  dry_run: boolean;
  parameters: ColumnType<Record<string, unknown>, string, never>;
  children: number;
  applications: number;
  placed: number;
  inputs_hash: Buffer;
  outputs_hash: Buffer;
  inputs_snapshot: Buffer;
  signature: Buffer;
  public_key: Buffer;
  /** Migration 0047: the run's allocation.run event (audit_events.seq), for the families' access lists; NULL only for a run whose event was not found. */
  audit_seq: ColumnType<string | null, string | number | null | undefined, never>;
}

/** Migration 0020: one child's outcome in a run, with its choices as they stood. */
export interface AllocationResultsTable {
  run_id: string;
  tenant_id: string;
  child_id: string;
  age_group: AgeGroupValue;
  category_by_choice: number[];
  facility_by_choice: string[];
  desired_entry_date: DateOnly;
  placed_choice: number | null;
  /** Migration 0021: the points of each choice under the points order, and whether a declared priority lifted it; NULL in older runs. */
  points_by_choice: ColumnType<number[] | null, number[] | null | undefined, never>;
  lifted_by_choice: ColumnType<boolean[] | null, boolean[] | null | undefined, never>;
}

/** Migration 0020: the last candidate a facility admitted in an age group, in a run. */
export interface AllocationCutoffsTable {
  run_id: string;
  tenant_id: string;
  facility_id: string;
  age_group: AgeGroupValue;
  vacancies: number;
  admitted: number;
  last_category: number | null;
  last_desired_entry_date: DateOnly | null;
  /** Migration 0021. */
  last_points: ColumnType<number | null, number | null | undefined, never>;
  last_lifted: ColumnType<boolean | null, boolean | null | undefined, never>;
}

/** Migration 0047: a file a dry run of the allocation read, by its allocation.run event (a real run's files are its results): what a family's access list looks dry runs up by. Append-only. */
export interface AllocationReadsTable {
  tenant_id: string;
  child_id: string;
  seq: ColumnType<string, string | number, never>;
}

export interface DB {
  allocation_runs: AllocationRunsTable;
  allocation_reads: AllocationReadsTable;
  allocation_results: AllocationResultsTable;
  allocation_cutoffs: AllocationCutoffsTable;
  tenants: TenantsTable;
  facilities: FacilitiesTable;
  accounts: AccountsTable;
  sessions: SessionsTable;
  account_tokens: AccountTokensTable;
  invitations: InvitationsTable;
  memberships: MembershipsTable;
  families: FamiliesTable;
  children: ChildrenTable;
  child_file_versions: ChildFileVersionsTable;
  child_file_restore_requests: ChildFileRestoreRequestsTable;
  applications: ApplicationsTable;
  facility_places: FacilityPlacesTable;
  facility_priorities: FacilityPrioritiesTable;
  offers: OffersTable;
  facility_api_keys: FacilityApiKeysTable;
  audit_events: AuditEventsTable;
  audit_heads: AuditHeadsTable;
  audit_leaves: AuditLeavesTable;
  audit_tree_nodes: AuditTreeNodesTable;
  audit_tree_heads: AuditTreeHeadsTable;
  mail_outbox: MailOutboxTable;
  schema_migrations: SchemaMigrationsTable;
  auth_attempts: AuthAttemptsTable;
  assisted_sessions: AssistedSessionsTable;
  known_devices: KnownDevicesTable;
  privilege_requests: PrivilegeRequestsTable;
  factor_reset_requests: FactorResetRequestsTable;
  break_glass: BreakGlassTable;
  totp_factors: TotpFactorsTable;
  recovery_codes: RecoveryCodesTable;
  webauthn_credentials: WebauthnCredentialsTable;
  pending_signins: PendingSigninsTable;
  webauthn_challenges: WebauthnChallengesTable;
  passkey_enrolment_links: PasskeyEnrolmentLinksTable;
  factor_failures: FactorFailuresTable;
  oidc_clients: OidcClientsTable;
  oidc_payloads: OidcPayloadsTable;
  oidc_logout_checks: OidcLogoutChecksTable;
  audit_event_families: AuditEventFamiliesTable;
  oidc_signing_keys: OidcSigningKeysTable;
  oidc_entitlements: OidcEntitlementsTable;
  incidents: IncidentsTable;
  incident_versions: IncidentVersionsTable;
  incident_notices: IncidentNoticesTable;
  detection_rules: DetectionRulesTable;
  detection_hits: DetectionHitsTable;
  detection_client_hits: DetectionClientHitsTable;
  detection_batches: DetectionBatchesTable;
  detection_holds: DetectionHoldsTable;
  detection_alerts: DetectionAlertsTable;
  detection_alert_notes: DetectionAlertNotesTable;
  lockdown_changes: LockdownChangesTable;
  account_reinstatements: AccountReinstatementsTable;
  detection_webhooks: DetectionWebhooksTable;
  detection_webhook_deliveries: DetectionWebhookDeliveriesTable;
  protected_files: ProtectedFilesTable;
  detection_stream_cursors: DetectionStreamCursorsTable;
  detection_working_hours: DetectionWorkingHoursTable;
  known_networks: KnownNetworksTable;
  protected_file_openings: ProtectedFileOpeningsTable;
}

/** Migration 0019: a parent's consent to an agent acting for them (the code), and the assisted session it opens. */
export interface AssistedSessionsTable {
  id: Generated<string>;
  tenant_id: string;
  agent_account_id: string;
  agent_session_id: string;
  agent_role: 'facility_staff' | 'facility_director' | 'program_operator';
  agent_facility_id: string | null;
  parent_account_id: string;
  channel: 'phone' | 'in_person';
  /** Emptied when the parent's family loses a file to the purge, or the account is closed (migration 0048). */
  note: string;
  code_hash: Buffer;
  code_expires_at: Timestamp;
  code_attempts: Generated<number>;
  requested_at: Timestamp;
  started_at: Timestamp | null;
  expires_at: Timestamp | null;
  ended_at: Timestamp | null;
  end_reason: 'agent' | 'superseded' | 'code_failed' | null;
}
