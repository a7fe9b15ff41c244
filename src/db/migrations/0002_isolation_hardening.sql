-- Hardening found by the isolation tests.

-- 1. A tenant may read every tenant's public row (name, hosts) but change only
--    its own (lockdown level). The owner is not subject to these policies.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenants_read ON tenants FOR SELECT TO guichet_app USING (true);
CREATE POLICY tenants_update_own ON tenants FOR UPDATE TO guichet_app
  USING (id = app_tenant()) WITH CHECK (id = app_tenant());

-- 2. Rows that name a facility must name one of their own tenant's.
ALTER TABLE facilities ADD CONSTRAINT facilities_tenant_id_id_key UNIQUE (tenant_id, id);
ALTER TABLE applications ADD CONSTRAINT applications_facility_same_tenant
  FOREIGN KEY (tenant_id, facility_id) REFERENCES facilities (tenant_id, id);
ALTER TABLE memberships ADD CONSTRAINT memberships_facility_same_tenant
  FOREIGN KEY (tenant_id, facility_id) REFERENCES facilities (tenant_id, id);
ALTER TABLE invitations ADD CONSTRAINT invitations_facility_same_tenant
  FOREIGN KEY (tenant_id, facility_id) REFERENCES facilities (tenant_id, id);

-- 3. One bootstrap per tenant, even for two transactions racing each other.
CREATE UNIQUE INDEX memberships_one_bootstrap ON memberships (tenant_id) WHERE source = 'bootstrap';

-- 4. Whoever grants or approves is a real account of the same tenant...
ALTER TABLE memberships ADD CONSTRAINT memberships_granted_by_account
  FOREIGN KEY (tenant_id, granted_by) REFERENCES accounts (tenant_id, id);
ALTER TABLE memberships ADD CONSTRAINT memberships_approved_by_account
  FOREIGN KEY (tenant_id, approved_by) REFERENCES accounts (tenant_id, id);

-- ...who holds a current administrator role; a revocation is final, and an
-- expiry may be brought forward but never removed or pushed back.
CREATE OR REPLACE FUNCTION memberships_guard() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF NEW.role IS DISTINCT FROM OLD.role OR NEW.account_id IS DISTINCT FROM OLD.account_id
       OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id OR NEW.facility_id IS DISTINCT FROM OLD.facility_id
       OR NEW.approved_by IS DISTINCT FROM OLD.approved_by OR NEW.granted_by IS DISTINCT FROM OLD.granted_by
       OR NEW.source IS DISTINCT FROM OLD.source OR NEW.created_at IS DISTINCT FROM OLD.created_at THEN
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
  IF NEW.role = 'facility_staff' THEN
    IF NEW.source = 'bootstrap' THEN
      RAISE EXCEPTION 'memberships: bootstrap confers tenant_admin only' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
  END IF;
  IF NEW.source = 'bootstrap' THEN
    IF NEW.role <> 'tenant_admin' OR EXISTS (
         SELECT 1 FROM memberships m WHERE m.tenant_id = NEW.tenant_id AND m.role = 'tenant_admin') THEN
      RAISE EXCEPTION 'memberships: tenant already bootstrapped' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
  END IF;
  IF NEW.approved_by IS NULL OR NEW.granted_by IS NULL
     OR NEW.approved_by = NEW.granted_by OR NEW.approved_by = NEW.account_id THEN
    RAISE EXCEPTION 'memberships: a privileged role needs the approval of a second person' USING ERRCODE = 'insufficient_privilege';
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
