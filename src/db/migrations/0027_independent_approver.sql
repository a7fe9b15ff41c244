-- Dual control that a single administrator cannot play alone.
--
-- Until now a privileged membership needed an approver who was neither its
-- grantee nor its requester. One administrator could still make a second
-- administrator alone: invite an address they control into a facility
-- (staff need no approval), accept the invitation from that address, ask for
-- the role from that account, and approve the request from their own. The
-- person who brought an account into the tenant vouched for who it is; the
-- approval must come from someone else. So a privileged role is refused when
-- its approver invited the grantee (any invitation membership of the grantee
-- whose granted_by is the approver, revoked or not: revoking the staff role
-- first does not launder the alias).
--
-- A tenant with a single administrator could then never get a second one
-- (every staff member was invited by that administrator). The bootstrap, from
-- the CLI on the server, may therefore name up to two administrators, two
-- different accounts, in one transaction: still one act, once per tenant.
-- Two transactions racing each other were held to one bootstrap by a unique
-- index on the tenant; each bootstrap row now takes a slot (1 or 2, set by the
-- trigger from the rows it sees), unique per tenant, so a racing transaction
-- that saw no administrator collides on slot 1 whatever its isolation level.
ALTER TABLE memberships ADD COLUMN bootstrap_slot smallint;
ALTER TABLE memberships NO FORCE ROW LEVEL SECURITY;
UPDATE memberships SET bootstrap_slot = 1 WHERE source = 'bootstrap';
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
ALTER TABLE memberships ADD CONSTRAINT memberships_bootstrap_slot
  CHECK ((source = 'bootstrap') = (bootstrap_slot IS NOT NULL) AND (bootstrap_slot IS NULL OR bootstrap_slot IN (1, 2)));
DROP INDEX memberships_one_bootstrap;
CREATE UNIQUE INDEX memberships_bootstrap_slots ON memberships (tenant_id, bootstrap_slot) WHERE source = 'bootstrap';

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
  IF EXISTS (
       SELECT 1 FROM memberships m
       WHERE m.tenant_id = NEW.tenant_id AND m.account_id = NEW.account_id
         AND m.source = 'invitation' AND m.granted_by = NEW.approved_by) THEN
    RAISE EXCEPTION 'memberships: the approver invited the grantee; another administrator must approve' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.expires_at IS NULL THEN
    RAISE EXCEPTION 'memberships: a granted privileged role must expire' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NOT EXISTS (
       SELECT 1 FROM memberships m
       WHERE m.tenant_id = NEW.tenant_id AND m.account_id = NEW.approved_by AND m.role = 'tenant_admin'
         AND m.revoked_at IS NULL AND (m.expires_at IS NULL OR m.expires_at > now())) THEN
    RAISE EXCEPTION 'memberships: the approver holds no current administrator role' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
