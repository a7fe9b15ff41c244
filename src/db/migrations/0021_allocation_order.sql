-- The coordinated allocation follows each tenant's own order (the points
-- order, and the lift of a facility's declared priorities under its cap), so a
-- family's explanation needs those terms beside the category and the date:
-- the points each choice had and whether a declared priority lifted it, and
-- the same for the last candidate each facility admitted. NULL in runs
-- stored before (their order was the categories alone).
ALTER TABLE allocation_results ADD COLUMN points_by_choice integer[];
ALTER TABLE allocation_results ADD COLUMN lifted_by_choice boolean[];
ALTER TABLE allocation_cutoffs ADD COLUMN last_points integer;
ALTER TABLE allocation_cutoffs ADD COLUMN last_lifted boolean;

-- An administrator turns the programme's coordinated allocation on or off
-- from its page (src/waitlist/allocation-admin-routes.tsx). The application
-- role may change no rule: the rules are the programme's, set by its owner.
-- This function changes that one key, of the caller's own tenant only, and
-- nothing else of the rules; the page decides who may call it (decide(),
-- audited). SECURITY DEFINER: it runs as the migration's owner, with a fixed
-- search path so that no schema of the caller's can stand in for tenants.
CREATE FUNCTION set_coordinated_allocation(enabled boolean) RETURNS boolean
  LANGUAGE plpgsql
  SECURITY DEFINER
  SET search_path = public, pg_temp
  AS $$
DECLARE
  before boolean;
BEGIN
  IF app_tenant() IS NULL THEN
    RAISE EXCEPTION 'set_coordinated_allocation: no tenant in this transaction';
  END IF;
  SELECT COALESCE((rules ->> 'coordinatedAllocation')::boolean, false) INTO before FROM tenants WHERE id = app_tenant() FOR UPDATE;
  UPDATE tenants SET rules = jsonb_set(rules, '{coordinatedAllocation}', to_jsonb(enabled)) WHERE id = app_tenant();
  RETURN before;
END
$$;
REVOKE ALL ON FUNCTION set_coordinated_allocation(boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION set_coordinated_allocation(boolean) TO guichet_app;
