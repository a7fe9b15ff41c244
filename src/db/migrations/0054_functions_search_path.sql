-- Every function of the schema names where it looks tables up, temporary
-- tables last. A function without it looks in pg_temp first: the
-- application's role may create temporary tables, and one named like a
-- table a guard reads (memberships, accounts…) would answer in its place —
-- a dual-control trigger would then approve what no second administrator
-- approved. The functions written since migration 0021 already say so;
-- this gives every other one the same path, and a test holds new ones to it
-- (app_tenant() alone reads no table).
DO $$
DECLARE
  f regprocedure;
BEGIN
  FOR f IN
    SELECT p.oid::regprocedure
      FROM pg_catalog.pg_proc p
     WHERE p.pronamespace = 'public'::regnamespace
       AND p.prokind = 'f'
       -- Reads a setting, no table; a path of its own would stop PostgreSQL inlining it in every policy.
       AND p.proname <> 'app_tenant'
       -- Guichet's own: not an extension's (pg_stat_statements and the like belong to someone else).
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
       AND pg_catalog.pg_has_role(p.proowner, 'USAGE')
       AND NOT EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) c WHERE c LIKE 'search_path=%')
  LOOP
    EXECUTE format('ALTER FUNCTION %s SET search_path = public, pg_temp', f);
  END LOOP;
END
$$;
