-- An account suspended (by detection, or closed by retention) comes back to
-- 'active' only in the transaction that applies a reinstatement two security
-- officers agreed on (0032): whatever the code, no single statement, person
-- or forgotten path gives it back. The reinstatement row is updated first, in
-- the same transaction; xmin tells that it was this transaction's doing.
CREATE FUNCTION accounts_reinstatement_guard() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF OLD.status = 'suspended' AND NEW.status = 'active' AND NOT EXISTS (
    SELECT 1 FROM account_reinstatements r
     WHERE r.account_id = NEW.id AND r.tenant_id = NEW.tenant_id AND r.status = 'applied'
       AND r.xmin = pg_catalog.pg_current_xact_id()::xid
  ) THEN
    RAISE EXCEPTION 'accounts: a suspended account is reinstated only by two security officers' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER accounts_reinstatement_guard BEFORE UPDATE OF status ON accounts FOR EACH ROW EXECUTE FUNCTION accounts_reinstatement_guard();
