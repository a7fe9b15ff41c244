-- The programme's statistics count the children waiting, in all and by
-- region. At ten times Quebec (3 million applications) each count read every
-- application, joined every live child and every facility, and deduplicated
-- children, or (region, child) pairs, in a hash that spilled to disk: 4–5 s
-- for the children waiting and 6–8 s by region, on every view of the page.
--
-- The application already carries the child's terms that matter here (birth
-- month, desired entry, whether the file is live and active: migration 0024).
-- It now carries its facility's region as well, kept equal by triggers like
-- those terms (never written by the application code), and two indexes hold
-- what the counts read, in the order they count it: by child for the children
-- waiting, by region then child for the regions. Both counts are then one
-- index-only scan each, deduplicated as they are read, with no join.
ALTER TABLE applications ADD COLUMN facility_region text;

-- The copy of the rows already there spans every tenant: row-level security is lifted for it alone
-- (the migration's owner owns both tables), and put back before anything else runs.
ALTER TABLE applications NO FORCE ROW LEVEL SECURITY;
ALTER TABLE facilities NO FORCE ROW LEVEL SECURITY;
UPDATE applications a SET facility_region = f.region FROM facilities f WHERE f.id = a.facility_id;
ALTER TABLE applications FORCE ROW LEVEL SECURITY;
ALTER TABLE facilities FORCE ROW LEVEL SECURITY;

CREATE FUNCTION applications_copy_facility_region() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  NEW.facility_region := (SELECT f.region FROM facilities f WHERE f.id = NEW.facility_id);
  RETURN NEW;
END
$$;
-- Also on an update of the copy itself: nobody can make it differ from the facility.
CREATE TRIGGER applications_facility_region BEFORE INSERT OR UPDATE OF facility_id, facility_region ON applications
  FOR EACH ROW EXECUTE FUNCTION applications_copy_facility_region();

CREATE FUNCTION facilities_share_region() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  -- The write goes through applications_copy_facility_region, which reads this row as it now is.
  UPDATE applications SET facility_region = facility_region WHERE facility_id = NEW.id;
  RETURN NULL;
END
$$;
CREATE TRIGGER facilities_region AFTER UPDATE OF region ON facilities
  FOR EACH ROW WHEN (OLD.region IS DISTINCT FROM NEW.region)
  EXECUTE FUNCTION facilities_share_region();

GRANT UPDATE (facility_region) ON applications TO guichet_app;

-- A child's active applications, by child: the children waiting are read from it alone (the tenant leads, so
-- that row-level security's condition is the index's).
DROP INDEX applications_active_child;
CREATE INDEX applications_active_child ON applications (tenant_id, child_id, facility_id)
  INCLUDE (child_eligible, child_birth_month, child_desired_entry_date)
  WHERE status = 'active';
-- The children waiting in each region, region by region.
CREATE INDEX applications_waiting_by_region ON applications (tenant_id, facility_region, child_id)
  INCLUDE (child_birth_month, child_desired_entry_date)
  WHERE status = 'active' AND child_eligible;
