-- A parent's rank at each chosen facility orders every eligible application
-- there (some 300–600 a facility at ten times Quebec's volume). The order's
-- terms about the child (birth month and desired entry for the age group,
-- seniority, subsidised care, the reference as last tie-break, eligibility)
-- lived only on children: each rank read joined thousands of children rows
-- one random lookup at a time. They are copied onto the application, kept
-- equal by the two triggers below (never written by the application code),
-- and a covering index lets a facility's candidates be ordered from the
-- index alone. Nothing personal is copied: the birth month is already clear
-- on children (migration 0019) and the reference is pseudonymous.
ALTER TABLE applications ADD COLUMN child_birth_month date;
ALTER TABLE applications ADD COLUMN child_desired_entry_date date;
ALTER TABLE applications ADD COLUMN child_seniority_from date;
ALTER TABLE applications ADD COLUMN child_in_subsidised_care boolean;
ALTER TABLE applications ADD COLUMN child_reference text;
-- Live (not deleted, not purged) and active (not inactive for want of confirmation).
ALTER TABLE applications ADD COLUMN child_eligible boolean NOT NULL DEFAULT false;

-- The copy of the rows already there spans every tenant: row-level security is lifted for it alone
-- (the migration's owner owns both tables), and put back before anything else runs.
ALTER TABLE applications NO FORCE ROW LEVEL SECURITY;
ALTER TABLE children NO FORCE ROW LEVEL SECURITY;
UPDATE applications a
   SET child_birth_month = c.birth_month,
       child_desired_entry_date = c.desired_entry_date,
       child_seniority_from = c.seniority_from,
       child_in_subsidised_care = c.in_subsidised_care,
       child_reference = c.reference,
       child_eligible = (c.deleted_at IS NULL AND c.purged_at IS NULL AND c.inactive_since IS NULL)
  FROM children c
 WHERE c.id = a.child_id;
ALTER TABLE applications FORCE ROW LEVEL SECURITY;
ALTER TABLE children FORCE ROW LEVEL SECURITY;

CREATE FUNCTION applications_copy_child_terms() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  SELECT c.birth_month, c.desired_entry_date, c.seniority_from, c.in_subsidised_care, c.reference,
         (c.deleted_at IS NULL AND c.purged_at IS NULL AND c.inactive_since IS NULL)
    INTO NEW.child_birth_month, NEW.child_desired_entry_date, NEW.child_seniority_from, NEW.child_in_subsidised_care, NEW.child_reference, NEW.child_eligible
    FROM children c WHERE c.id = NEW.child_id;
  IF NOT FOUND THEN
    -- No child of this tenant by that id: the foreign key refuses the row; nothing here to copy.
    NEW.child_eligible := false;
  END IF;
  RETURN NEW;
END
$$;
-- Also on any update of the copies themselves: nobody can make them differ from the child.
CREATE TRIGGER applications_child_terms BEFORE INSERT OR UPDATE OF child_id, child_birth_month, child_desired_entry_date, child_seniority_from, child_in_subsidised_care, child_reference, child_eligible ON applications
  FOR EACH ROW EXECUTE FUNCTION applications_copy_child_terms();

CREATE FUNCTION children_share_rank_terms() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  -- Any write to the copies goes through applications_copy_child_terms, which reads this row as it now is.
  UPDATE applications SET child_eligible = child_eligible WHERE child_id = NEW.id;
  RETURN NULL;
END
$$;
CREATE TRIGGER children_rank_terms AFTER UPDATE OF birth_month, desired_entry_date, seniority_from, in_subsidised_care, reference, deleted_at, purged_at, inactive_since ON children
  FOR EACH ROW
  WHEN (OLD.birth_month IS DISTINCT FROM NEW.birth_month
     OR OLD.desired_entry_date IS DISTINCT FROM NEW.desired_entry_date
     OR OLD.seniority_from IS DISTINCT FROM NEW.seniority_from
     OR OLD.in_subsidised_care IS DISTINCT FROM NEW.in_subsidised_care
     OR OLD.reference IS DISTINCT FROM NEW.reference
     OR OLD.deleted_at IS DISTINCT FROM NEW.deleted_at
     OR OLD.purged_at IS DISTINCT FROM NEW.purged_at
     OR OLD.inactive_since IS DISTINCT FROM NEW.inactive_since)
  EXECUTE FUNCTION children_share_rank_terms();

-- A facility's eligible active applications with every term of their order: an index-only scan. The tenant
-- leads: row-level security's condition (tenant_id = app_tenant()) is then an index condition, not a
-- filter that needs every heap row.
CREATE INDEX applications_rank_terms ON applications (tenant_id, facility_id)
  INCLUDE (id, created_at, sibling_attending, parent_is_staff, priorities, child_birth_month, child_desired_entry_date, child_seniority_from, child_in_subsidised_care, child_reference)
  WHERE status = 'active' AND child_eligible;
