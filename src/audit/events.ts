/**
 * The closed vocabulary of audit events. Every event Guichet writes has one of
 * these actions; the type system refuses any other.
 */
export const AUDIT_ACTIONS = [
  // identity
  'identity.signup',
  'identity.email.verify',
  'identity.signin',
  'identity.signout',
  'identity.password.set',
  'identity.password.reset',
  'identity.password.change',
  'identity.invitation.create',
  'identity.invitation.list',
  'identity.staff.list',
  'identity.invitation.accept',
  'identity.membership.bootstrap',
  'identity.grant.request',
  'identity.grant.endorse',
  'identity.grant.approve',
  'identity.grant.refuse',
  'identity.grant.cancel',
  'identity.grant.revoke',
  'identity.grant.list',
  'identity.factorReset.request',
  'identity.factorReset.approve',
  'identity.factorReset.refuse',
  'identity.factorReset.cancel',
  'identity.factorReset.list',
  'identity.breakGlass.start',
  'identity.breakGlass.end',
  'identity.account.locked',
  'identity.signin.spraying',
  'identity.signin.throttled',
  'identity.session.end',
  'identity.device.new',
  'identity.network.new',
  // personal data
  'waitlist.childFile.create',
  'waitlist.childFile.read',
  'waitlist.childFile.list',
  'waitlist.childFile.update',
  'waitlist.application.create',
  'waitlist.application.withdraw',
  'waitlist.candidates.list',
  'family.profile.read',
  'family.profile.update',
  // operations
  'tenant.create',
  'directory.import',
  'demo.seed',
  // second factors and step-up (src/identity/factors, src/identity/stepup.ts)
  'identity.signin.challenge',
  'identity.totp.enrol',
  'identity.totp.remove',
  'identity.totp.verify',
  'identity.recovery.generate',
  'identity.recovery.use',
  'identity.passkey.register',
  'identity.passkey.rename',
  'identity.passkey.revoke',
  'identity.passkey.verify',
  // a passkey vouched for, so that it counts for privileged actions (src/identity/factors/mailbox.ts)
  'identity.passkey.vouch',
  // a privileged holder's first passkey: the e-mailed link that proves the mailbox (src/identity/factors/mailbox.ts)
  'identity.passkeyLink.request',
  'identity.passkeyLink.use',
  'identity.stepup',
  // the audit log itself (src/audit): the security console read, exports for auditors
  'audit.head.read',
  'audit.export',
  // records encryption, deletion, history, keys (src/records, src/crypto)
  'waitlist.childFile.delete',
  'waitlist.childFile.restore.request',
  'waitlist.childFile.restore.approve',
  'waitlist.childFile.restore.list',
  'waitlist.childFile.lookupByNirec',
  'waitlist.childFile.history',
  // tenant rules on the waitlist: declared priorities, periodic confirmation (src/records/ranks.ts, src/records/confirmation.ts)
  'waitlist.facility.priorities.update',
  'waitlist.childFile.confirm',
  'waitlist.confirmation.remind',
  'waitlist.confirmation.inactivate',
  'records.childFile.purge',
  'records.family.purge',
  'records.legacy.encrypt',
  'records.legacy.birthMonth',
  'keys.tenant.rotate',
  'keys.master.rotate',
  // OpenID Connect provider (src/oidc): relying parties, sign-ins for them, tokens, claims released
  'oidc.client.create',
  'oidc.client.list',
  'oidc.client.approve',
  'oidc.client.refuse',
  'oidc.client.disable',
  'oidc.client.update',
  'oidc.client.secret.rotate',
  'oidc.client.scopes.request',
  'oidc.authorization',
  'oidc.consent',
  'oidc.consent.withdraw',
  'oidc.token',
  'oidc.userinfo',
  'oidc.claims.release',
  'oidc.refresh.reuse',
  'oidc.logout',
  'oidc.revocation',
  'oidc.keys.rotate',
  'oidc.entitlement.create',
  'oidc.entitlement.revoke',
  'oidc.entitlement.list',
  // privacy rights, incidents and retention (src/privacy)
  'privacy.accessLog.read',
  'privacy.export',
  'privacy.deletion.request',
  'privacy.breachReport.create',
  'privacy.breach.recipients',
  'incident.create',
  'incident.update',
  'incident.list',
  'incident.export',
  'incident.link',
  'privacy.breachNotices.send',
  'retention.preview',
  'retention.run',
  'records.account.purge',
  // detection and response, lockdown (src/detection)
  'detection.alert',
  'detection.response',
  'detection.alert.list',
  'detection.alert.read',
  'detection.alert.update',
  'detection.rules.update',
  'detection.hours.update',
  'detection.batch.declare',
  'detection.webhook.update',
  'records.childFile.protect',
  'records.childFile.unprotect',
  'detection.protected.review',
  'detection.lockdown.raise',
  'detection.lockdown.lower.request',
  'detection.lockdown.lower.approve',
  'detection.lockdown.lower.refuse',
  // coordinated allocation (src/records/allocation.ts): the round's one bulk read, its replay, a family's explanation
  'allocation.run',
  'allocation.replay',
  'waitlist.allocation.read',
  'allocation.settings.read',
  'allocation.settings.update',
  // the programme's statistics: aggregates, no family named (src/records/statistics.ts)
  'statistics.read',
  'statistics.export',
  // assisted mode: an agent acts for a parent who consented (src/assisted)
  'assisted.code.request',
  'assisted.session.start',
  'assisted.session.end',
  // places, referrals and offers (src/records/offers.ts)
  'waitlist.places.read',
  'waitlist.vacancy.declare',
  'waitlist.offer.create',
  'waitlist.offer.read',
  'waitlist.offer.accept',
  'waitlist.offer.refuse',
  'waitlist.offer.expire',
  'waitlist.offer.cancel',
  'waitlist.offer.confirmStart',
  'waitlist.referral.list',
  // the facility API and its keys (src/api)
  'api.key.create',
  'api.key.list',
  'api.key.revoke',
  'api.key.use',
  // a refused request naming an object (src/web/refusals.ts): recorded when the route's own service recorded nothing
  'web.object.refused',
] as const;

export type AuditAction = (typeof AUDIT_ACTIONS)[number];

export type AuditOutcome = 'success' | 'denied' | 'failure';

/** What the caller supplies; sequence, time and hashes are added by the log. */
export interface AuditEventInput {
  action: AuditAction;
  outcome: AuditOutcome;
  actorAccountId?: string | null;
  actorRoles?: readonly string[];
  onBehalfOf?: string | null;
  targetType?: string | null;
  targetIds?: readonly string[];
  familyIds?: readonly string[];
  fields?: readonly string[];
  purpose?: string | null;
  ip?: string | null;
  userAgent?: string | null;
  requestId?: string | null;
  details?: Record<string, string | number | boolean | null>;
}

/** Where an event comes from: the request (or CLI run) that caused it. */
export interface AuditOrigin {
  actorAccountId: string | null;
  actorRoles: readonly string[];
  ip: string | null;
  userAgent: string | null;
  requestId: string | null;
  /** The parent an assisted session acts for (src/assisted): every event it causes carries it. */
  onBehalfOf?: string | null;
}
