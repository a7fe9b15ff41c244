-- « Qui a consulté le dossier » (src/privacy/access-log.ts): the events that
-- name a family, found through the GIN index on family_ids.
--
-- Under row-level security PostgreSQL may not use that index: a user's
-- condition runs before the policy's only if its operator is leakproof, and
-- array overlap (&&) is not. So each parent's page read every event of the
-- tenant — 1.5 s a look-up with 3 million events, twice a page. This function
-- finds the events by the index as the table's owner, limited to the
-- caller's own tenant (app_tenant(), as the policy would), and returns only
-- their sequence numbers: the rows themselves are then read by the
-- application under row-level security, by primary key. Which families may be
-- asked for is decided by the application (a parent's own), as for any read.
-- SECURITY DEFINER with a fixed search path, as set_coordinated_allocation.
CREATE FUNCTION audit_family_event_seqs(families uuid[], except_actor uuid) RETURNS SETOF bigint
  LANGUAGE sql
  STABLE
  SECURITY DEFINER
  SET search_path = public, pg_temp
  AS $$
    SELECT e.seq FROM audit_events e
     WHERE e.tenant_id = app_tenant()
       AND e.family_ids && families
       AND e.outcome <> 'denied'
       AND (except_actor IS NULL OR e.actor_account_id IS NULL OR e.actor_account_id <> except_actor)
     ORDER BY e.seq DESC
  $$;
REVOKE ALL ON FUNCTION audit_family_event_seqs(uuid[], uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_family_event_seqs(uuid[], uuid) TO guichet_app;
