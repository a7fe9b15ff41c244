-- Giving a suspended account back takes two security officers: one asks
-- (on the alert that suspended it), a different one approves, and neither
-- may be the account itself. An intruder who holds one officer's session
-- cannot bring back the account detection cut off. The table says so again
-- whatever the code does; a decided request stays decided.
CREATE TABLE account_reinstatements (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  alert_id uuid NOT NULL REFERENCES detection_alerts (id),
  account_id uuid NOT NULL,
  requested_by uuid NOT NULL,
  requested_at timestamptz NOT NULL,
  status text NOT NULL CHECK (status IN ('pending', 'applied', 'refused')),
  decided_by uuid,
  decided_at timestamptz,
  CHECK (requested_by <> account_id),
  CHECK (decided_by IS NULL OR (decided_by <> account_id AND (status = 'refused' OR decided_by <> requested_by))),
  CHECK ((status = 'pending') = (decided_by IS NULL AND decided_at IS NULL)),
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id),
  FOREIGN KEY (tenant_id, requested_by) REFERENCES accounts (tenant_id, id),
  FOREIGN KEY (tenant_id, decided_by) REFERENCES accounts (tenant_id, id)
);
CREATE UNIQUE INDEX account_reinstatements_pending ON account_reinstatements (account_id) WHERE status = 'pending';
CREATE INDEX account_reinstatements_alert ON account_reinstatements (alert_id);

CREATE FUNCTION account_reinstatements_guard() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF OLD.status <> 'pending' THEN
    RAISE EXCEPTION 'account_reinstatements: a decided request is final' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.account_id IS DISTINCT FROM OLD.account_id OR NEW.requested_by IS DISTINCT FROM OLD.requested_by
     OR NEW.alert_id IS DISTINCT FROM OLD.alert_id OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id THEN
    RAISE EXCEPTION 'account_reinstatements: only the decision may change' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER account_reinstatements_guard BEFORE UPDATE ON account_reinstatements FOR EACH ROW EXECUTE FUNCTION account_reinstatements_guard();

ALTER TABLE account_reinstatements ENABLE ROW LEVEL SECURITY;
ALTER TABLE account_reinstatements FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON account_reinstatements USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());

GRANT SELECT, INSERT ON account_reinstatements TO guichet_app;
GRANT UPDATE (status, decided_by, decided_at) ON account_reinstatements TO guichet_app;
