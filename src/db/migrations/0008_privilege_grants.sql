-- Privileged roles are granted by request and approval: one person asks, a
-- different current administrator approves, and the grant expires. The
-- membership itself is still checked by memberships_guard (0002): this table
-- keeps the request's life (who asked, why, who decided, when).
CREATE TABLE privilege_requests (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  account_id uuid NOT NULL,
  role text NOT NULL CHECK (role IN ('tenant_admin', 'security_officer', 'program_operator', 'facility_director')),
  facility_id uuid,
  reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
  duration_minutes integer NOT NULL CHECK (duration_minutes BETWEEN 15 AND 720),
  requested_by uuid NOT NULL,
  requested_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'refused', 'cancelled')),
  decided_by uuid,
  decided_at timestamptz,
  membership_id uuid REFERENCES memberships (id),
  CHECK ((role = 'facility_director') = (facility_id IS NOT NULL)),
  CHECK (decided_by IS NULL OR decided_by <> requested_by),
  CHECK (decided_by IS NULL OR decided_by <> account_id OR status = 'cancelled'),
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id),
  FOREIGN KEY (tenant_id, requested_by) REFERENCES accounts (tenant_id, id),
  FOREIGN KEY (tenant_id, decided_by) REFERENCES accounts (tenant_id, id),
  FOREIGN KEY (tenant_id, facility_id) REFERENCES facilities (tenant_id, id)
);
CREATE INDEX privilege_requests_pending ON privilege_requests (tenant_id, status, requested_at);

ALTER TABLE privilege_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE privilege_requests FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON privilege_requests USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());

GRANT SELECT, INSERT ON privilege_requests TO guichet_app;
GRANT UPDATE (status, decided_by, decided_at, membership_id) ON privilege_requests TO guichet_app;

-- A decided request stays decided: no replay, no second approval.
CREATE FUNCTION privilege_requests_guard() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF OLD.status <> 'pending' THEN
    RAISE EXCEPTION 'privilege_requests: already decided' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER privilege_requests_guard BEFORE UPDATE ON privilege_requests
  FOR EACH ROW EXECUTE FUNCTION privilege_requests_guard();
