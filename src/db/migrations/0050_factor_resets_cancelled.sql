-- A request to reset someone's second factors goes with an account that is
-- suspended or closed, as privilege requests do (src/identity/grants.ts):
-- whether the account is the one who asked (an administrator's account taken
-- over, caught by detection) or the person concerned. Such a request is
-- cancelled by nobody in particular (decided_by stays empty), and an approval
-- also needs the one who asked to be, still, a current administrator on an
-- active account: a request left by an administrator who has since lost the
-- role is not approvable either, whatever code path tries.
DO $$
DECLARE
  c record;
BEGIN
  FOR c IN
    SELECT conname FROM pg_constraint
    WHERE conrelid = 'factor_reset_requests'::regclass AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%status%'
  LOOP
    EXECUTE format('ALTER TABLE factor_reset_requests DROP CONSTRAINT %I', c.conname);
  END LOOP;
END
$$;
ALTER TABLE factor_reset_requests ADD CONSTRAINT factor_reset_requests_status_check CHECK (status IN ('pending', 'approved', 'refused', 'cancelled'));
ALTER TABLE factor_reset_requests ADD CONSTRAINT factor_reset_requests_decided_check CHECK ((status IN ('pending', 'cancelled')) = (decided_by IS NULL));

CREATE OR REPLACE FUNCTION factor_reset_requests_guard() RETURNS trigger
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
    IF NEW.status = 'cancelled' THEN
      RETURN NEW;
    END IF;
    IF NEW.status = 'approved' AND NOT EXISTS (
         SELECT 1 FROM memberships m JOIN accounts a ON a.id = m.account_id
         WHERE m.tenant_id = NEW.tenant_id AND m.account_id = NEW.requested_by AND m.role = 'tenant_admin' AND a.status = 'active'
           AND m.revoked_at IS NULL AND (m.expires_at IS NULL OR m.expires_at > now())) THEN
      RAISE EXCEPTION 'factor_reset_requests: % who asked holds no current administrator role', NEW.requested_by USING ERRCODE = 'insufficient_privilege';
    END IF;
    checked := NEW.decided_by;
  ELSE
    IF NEW.status <> 'pending' THEN
      RAISE EXCEPTION 'factor_reset_requests: a request starts pending' USING ERRCODE = 'insufficient_privilege';
    END IF;
    checked := NEW.requested_by;
  END IF;
  IF NOT EXISTS (
       SELECT 1 FROM memberships m JOIN accounts a ON a.id = m.account_id
       WHERE m.tenant_id = NEW.tenant_id AND m.account_id = checked AND m.role = 'tenant_admin' AND a.status = 'active'
         AND m.revoked_at IS NULL AND (m.expires_at IS NULL OR m.expires_at > now())) THEN
    RAISE EXCEPTION 'factor_reset_requests: % holds no current administrator role', checked USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
