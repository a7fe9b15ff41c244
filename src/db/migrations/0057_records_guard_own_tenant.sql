-- The records gateway's guard judges the transaction's own tenant and a
-- known account only. It took the tenant from its caller and let an account
-- it could not see through (no row under row-level security: another
-- tenant's, or none) pass as if nothing held it: both now refuse, so that a
-- caller's mistake fails closed rather than open.
CREATE OR REPLACE FUNCTION records_guard(p_tenant uuid, p_actor uuid, p_staff boolean, p_write boolean, p_auth_at timestamptz) RETURNS void
  LANGUAGE plpgsql
  SET search_path = public, pg_temp
  AS $$
DECLARE
  r record;
BEGIN
  SELECT t.lockdown_level, t.lockdown_changed_at, a.id AS account, a.status,
         (SELECT max(h.since) FROM detection_holds h WHERE h.account_id = a.id) AS hold_since
    INTO r
    FROM tenants t LEFT JOIN accounts a ON a.id = p_actor
   WHERE t.id = p_tenant AND t.id = (SELECT app_tenant());
  IF NOT FOUND OR r.lockdown_level >= 3 THEN
    RAISE EXCEPTION 'lockdown_closed' USING ERRCODE = 'GR001';
  END IF;
  IF p_actor IS NOT NULL AND (r.account IS NULL OR r.status <> 'active') THEN
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
