-- Row-level security's tenant, read once a statement instead of once a row.
--
-- Every policy compared the row's tenant with app_tenant(), a STABLE SQL
-- function that PostgreSQL inlines as NULLIF(current_setting(...), '')::uuid.
-- In an index condition that is computed once; in the filter of a sequential
-- scan, once for every row: on the programme's statistics at ten times
-- Quebec (3 million applications), counting the active applications took
-- 1.7–2.2 s through the policy against 0.34 s with the tenant as a constant.
-- Written as a sub-select, the tenant is an InitPlan, computed once, and it
-- is still an index condition wherever one applies (tenant_id = $0).
--
-- Every policy that names app_tenant() is rewritten, whatever its table;
-- test/db/rls.test.ts holds every policy, now and in later migrations, to
-- this form.
DO $$
DECLARE
  p record;
BEGIN
  FOR p IN
    SELECT schemaname, tablename, policyname, qual, with_check
      FROM pg_catalog.pg_policies
     WHERE schemaname = 'public' AND (qual LIKE '%app_tenant()%' OR with_check LIKE '%app_tenant()%')
  LOOP
    EXECUTE pg_catalog.format('ALTER POLICY %I ON %I.%I%s%s', p.policyname, p.schemaname, p.tablename,
      CASE WHEN p.qual IS NULL THEN '' ELSE pg_catalog.format(' USING (%s)', pg_catalog.replace(p.qual, 'app_tenant()', '(SELECT app_tenant())')) END,
      CASE WHEN p.with_check IS NULL THEN '' ELSE pg_catalog.format(' WITH CHECK (%s)', pg_catalog.replace(p.with_check, 'app_tenant()', '(SELECT app_tenant())')) END);
  END LOOP;
END
$$;
