-- A person who has lost every second factor gets them removed only by two
-- administrators: one asks (after checking who the person is, out of band),
-- a different current administrator approves. Recovery by e-mail never
-- removes a factor: a stolen mailbox must not be enough to take an account.
CREATE TABLE factor_reset_requests (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  account_id uuid NOT NULL,
  reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
  requested_by uuid NOT NULL,
  requested_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'refused')),
  decided_by uuid,
  decided_at timestamptz,
  CHECK (requested_by <> account_id),
  CHECK (decided_by IS NULL OR (decided_by <> requested_by AND decided_by <> account_id)),
  CHECK ((status = 'pending') = (decided_by IS NULL)),
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id),
  FOREIGN KEY (tenant_id, requested_by) REFERENCES accounts (tenant_id, id),
  FOREIGN KEY (tenant_id, decided_by) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX factor_reset_requests_recent ON factor_reset_requests (tenant_id, requested_at);

ALTER TABLE factor_reset_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE factor_reset_requests FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON factor_reset_requests USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());

GRANT SELECT, INSERT ON factor_reset_requests TO guichet_app;
GRANT UPDATE (status, decided_by, decided_at) ON factor_reset_requests TO guichet_app;

-- Whatever code path writes, the database checks again: a request is decided
-- once, and only by someone who holds a current administrator role; the one
-- who asks must hold one too.
CREATE FUNCTION factor_reset_requests_guard() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
DECLARE
  checked uuid;
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF OLD.status <> 'pending' THEN
      RAISE EXCEPTION 'factor_reset_requests: already decided' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.account_id <> OLD.account_id OR NEW.requested_by <> OLD.requested_by THEN
      RAISE EXCEPTION 'factor_reset_requests: a request cannot change hands' USING ERRCODE = 'insufficient_privilege';
    END IF;
    checked := NEW.decided_by;
  ELSE
    IF NEW.status <> 'pending' THEN
      RAISE EXCEPTION 'factor_reset_requests: a request starts pending' USING ERRCODE = 'insufficient_privilege';
    END IF;
    checked := NEW.requested_by;
  END IF;
  IF NOT EXISTS (
       SELECT 1 FROM memberships m
       WHERE m.tenant_id = NEW.tenant_id AND m.account_id = checked AND m.role = 'tenant_admin'
         AND m.revoked_at IS NULL AND (m.expires_at IS NULL OR m.expires_at > now())) THEN
    RAISE EXCEPTION 'factor_reset_requests: % holds no current administrator role', checked USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER factor_reset_requests_guard BEFORE INSERT OR UPDATE ON factor_reset_requests
  FOR EACH ROW EXECUTE FUNCTION factor_reset_requests_guard();
