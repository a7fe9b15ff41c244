-- The records gateway's guard (src/detection/lockdown.ts) as a function that
-- refuses by raising, rather than a row the process reads and then judges:
-- a statement whose answer nobody waits for can travel with the
-- transaction's first statement in one message (src/db/held-begin.ts), and
-- when it raises, PostgreSQL runs nothing after it in that message — the
-- personal data the next statement would have read is never read.
--
-- Invoker's rights: the tenant's row, the account and its holds are read
-- under the caller's row-level security, as the query it replaces was.
-- The reasons are the gateway's (its Refusal); SQLSTATE GR001 marks them.
CREATE FUNCTION records_guard(p_tenant uuid, p_actor uuid, p_staff boolean, p_write boolean, p_auth_at timestamptz) RETURNS void
  LANGUAGE plpgsql
  SET search_path = public, pg_temp
  AS $$
DECLARE
  r record;
BEGIN
  SELECT t.lockdown_level, t.lockdown_changed_at, a.status,
         (SELECT max(h.since) FROM detection_holds h WHERE h.account_id = a.id) AS hold_since
    INTO r
    FROM tenants t LEFT JOIN accounts a ON a.id = p_actor
   WHERE t.id = p_tenant;
  IF NOT FOUND OR r.lockdown_level >= 3 THEN
    RAISE EXCEPTION 'lockdown_closed' USING ERRCODE = 'GR001';
  END IF;
  IF p_actor IS NOT NULL AND r.status IS NOT NULL AND r.status <> 'active' THEN
    RAISE EXCEPTION 'account_suspended' USING ERRCODE = 'GR001';
  END IF;
  IF p_staff AND r.lockdown_level >= 2 AND p_write THEN
    RAISE EXCEPTION 'lockdown_read_only' USING ERRCODE = 'GR001';
  END IF;
  IF p_staff AND r.lockdown_level >= 1 AND r.lockdown_changed_at IS NOT NULL AND p_auth_at < r.lockdown_changed_at THEN
    RAISE EXCEPTION 'lockdown_stepup' USING ERRCODE = 'GR001';
  END IF;
  IF p_actor IS NOT NULL AND r.hold_since IS NOT NULL AND p_auth_at <= r.hold_since THEN
    RAISE EXCEPTION 'detection_stepup' USING ERRCODE = 'GR001';
  END IF;
END
$$;
REVOKE ALL ON FUNCTION records_guard(uuid, uuid, boolean, boolean, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION records_guard(uuid, uuid, boolean, boolean, timestamptz) TO guichet_app;
