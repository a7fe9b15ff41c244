-- The beneficiary of a privileged role is never one of the two people who
-- confer it.
--
-- A staff member could ask for a privileged role for themselves and a single
-- administrator approve it. The request's "first person" was then the
-- grantee, so one administrator alone decided: an administrator who controls
-- a second account (signed up under another address, then invited as staff
-- by a colleague who suspected nothing, or made a facility's director by a
-- request the colleague approved) asked for the administrator role from that
-- account and approved it from their own. No record ties the two accounts, so
-- no rule about who invited whom can see it.
--
-- Now a request for oneself needs two administrators, neither of them the
-- grantee: the first endorses it (privilege_requests.endorsed_by), a
-- different one approves, and the membership records the endorser as the
-- person who granted it. memberships_guard refuses any privileged membership
-- whose granted_by is its own account, or whose account is not active, and
-- locks the approver's administrator membership (FOR SHARE) so that an
-- approval cannot slip past a revocation committing at the same moment; the
-- requests' guard holds endorsements to the same rules.
ALTER TABLE privilege_requests ADD COLUMN endorsed_by uuid;
ALTER TABLE privilege_requests ADD COLUMN endorsed_at timestamptz;
ALTER TABLE privilege_requests ADD CONSTRAINT privilege_requests_endorser
  FOREIGN KEY (tenant_id, endorsed_by) REFERENCES accounts (tenant_id, id);
ALTER TABLE privilege_requests ADD CONSTRAINT privilege_requests_endorsed
  CHECK ((endorsed_by IS NULL) = (endorsed_at IS NULL)
         AND (endorsed_by IS NULL OR (endorsed_by <> account_id AND requested_by = account_id))
         AND (endorsed_by IS NULL OR decided_by IS NULL OR decided_by <> endorsed_by OR status <> 'approved'));
GRANT UPDATE (endorsed_by, endorsed_at) ON privilege_requests TO guichet_app;

CREATE OR REPLACE FUNCTION privilege_requests_guard() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF OLD.status <> 'pending' THEN
    RAISE EXCEPTION 'privilege_requests: already decided' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.endorsed_by IS DISTINCT FROM OLD.endorsed_by OR NEW.endorsed_at IS DISTINCT FROM OLD.endorsed_at THEN
    IF OLD.endorsed_by IS NOT NULL THEN
      RAISE EXCEPTION 'privilege_requests: already endorsed' USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM 1 FROM memberships m
      WHERE m.tenant_id = NEW.tenant_id AND m.account_id = NEW.endorsed_by AND m.role = 'tenant_admin'
        AND m.revoked_at IS NULL AND (m.expires_at IS NULL OR m.expires_at > now())
      FOR SHARE;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'privilege_requests: the endorser holds no current administrator role' USING ERRCODE = 'insufficient_privilege';
    END IF;
  END IF;
  IF NEW.status = 'approved' AND NEW.requested_by = NEW.account_id AND NEW.endorsed_by IS NULL THEN
    RAISE EXCEPTION 'privilege_requests: a request for oneself is approved only after another administrator endorsed it' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION memberships_guard() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF NEW.role IS DISTINCT FROM OLD.role OR NEW.account_id IS DISTINCT FROM OLD.account_id
       OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id OR NEW.facility_id IS DISTINCT FROM OLD.facility_id
       OR NEW.approved_by IS DISTINCT FROM OLD.approved_by OR NEW.granted_by IS DISTINCT FROM OLD.granted_by
       OR NEW.source IS DISTINCT FROM OLD.source OR NEW.created_at IS DISTINCT FROM OLD.created_at
       OR NEW.bootstrap_slot IS DISTINCT FROM OLD.bootstrap_slot THEN
      RAISE EXCEPTION 'memberships: only revocation and expiry may change' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
      RAISE EXCEPTION 'memberships: a revocation is final' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.expires_at IS NOT NULL AND (NEW.expires_at IS NULL OR NEW.expires_at > OLD.expires_at) THEN
      RAISE EXCEPTION 'memberships: an expiry may only be brought forward' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
  END IF;
  NEW.bootstrap_slot := NULL;
  IF NEW.role = 'facility_staff' THEN
    IF NEW.source = 'bootstrap' THEN
      RAISE EXCEPTION 'memberships: bootstrap confers tenant_admin only' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
  END IF;
  IF NEW.source = 'bootstrap' THEN
    -- Every administrator membership already there must be a bootstrap of this
    -- same transaction (xmin), for another account, and at most one.
    IF NEW.role <> 'tenant_admin' OR EXISTS (
         SELECT 1 FROM memberships m
         WHERE m.tenant_id = NEW.tenant_id AND m.role = 'tenant_admin'
           AND (m.source <> 'bootstrap' OR m.xmin <> pg_catalog.pg_current_xact_id()::xid OR m.account_id = NEW.account_id))
       OR (SELECT pg_catalog.count(*) FROM memberships m WHERE m.tenant_id = NEW.tenant_id AND m.role = 'tenant_admin') >= 2 THEN
      RAISE EXCEPTION 'memberships: tenant already bootstrapped' USING ERRCODE = 'insufficient_privilege';
    END IF;
    NEW.bootstrap_slot := 1 + (SELECT pg_catalog.count(*) FROM memberships m WHERE m.tenant_id = NEW.tenant_id AND m.source = 'bootstrap');
    RETURN NEW;
  END IF;
  IF NEW.approved_by IS NULL OR NEW.granted_by IS NULL
     OR NEW.approved_by = NEW.granted_by OR NEW.approved_by = NEW.account_id THEN
    RAISE EXCEPTION 'memberships: a privileged role needs the approval of a second person' USING ERRCODE = 'insufficient_privilege';
  END IF;
  -- The person a role is for is never one of the two who confer it.
  IF NEW.granted_by = NEW.account_id THEN
    RAISE EXCEPTION 'memberships: the grantee cannot be one of the two people who confer the role' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM accounts a WHERE a.tenant_id = NEW.tenant_id AND a.id = NEW.account_id AND a.status = 'active') THEN
    RAISE EXCEPTION 'memberships: the grantee''s account is not active' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF EXISTS (
       SELECT 1 FROM memberships m
       WHERE m.tenant_id = NEW.tenant_id AND m.account_id = NEW.account_id
         AND m.source = 'invitation' AND m.granted_by = NEW.approved_by) THEN
    RAISE EXCEPTION 'memberships: the approver invited the grantee; another administrator must approve' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.expires_at IS NULL THEN
    RAISE EXCEPTION 'memberships: a granted privileged role must expire' USING ERRCODE = 'insufficient_privilege';
  END IF;
  -- FOR SHARE: a revocation of the approver's role still in flight is waited
  -- for, then seen; without the lock the approval would read the row as it
  -- was and both would commit.
  PERFORM 1 FROM memberships m
    WHERE m.tenant_id = NEW.tenant_id AND m.account_id = NEW.approved_by AND m.role = 'tenant_admin'
      AND m.revoked_at IS NULL AND (m.expires_at IS NULL OR m.expires_at > now())
    FOR SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'memberships: the approver holds no current administrator role' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
