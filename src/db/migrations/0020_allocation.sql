-- Coordinated allocation: the child's order of preference among its
-- applications, a coarse clear birth month for the age group, signed and
-- replayable allocation runs with each child's outcome and each facility's
-- last admitted candidate (the explanations parents read), and the indexes
-- that keep a facility's ranked list fast at ten times Quebec.

-- 1 = first choice. Filled from the order of creation for existing rows, and by
-- the trigger below for any insert that does not say (the parent pages today).
ALTER TABLE applications ADD COLUMN preference smallint CHECK (preference BETWEEN 1 AND 100);
UPDATE applications a SET preference = o.n
  FROM (SELECT id, row_number() OVER (PARTITION BY child_id ORDER BY created_at, id) AS n FROM applications) o
  WHERE o.id = a.id;

CREATE FUNCTION applications_default_preference() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF NEW.preference IS NULL THEN
    SELECT COALESCE(max(preference), 0) + 1 INTO NEW.preference FROM applications WHERE child_id = NEW.child_id;
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER applications_preference BEFORE INSERT ON applications
  FOR EACH ROW EXECUTE FUNCTION applications_default_preference();

-- The first day of the child's birth month, in clear (the column comes with
-- migration 0019, for the statistics; the allocation uses it too). Why not decrypt the
-- birth date: an allocation round needs every waiting child's age group, and
-- opening 1,000,000 birth dates means unwrapping ~870,000 family keys and
-- 1,000,000 AES-GCM openings (about 20 µs each, measured in
-- docs/benchmarks.md) — tens of seconds per run, and every run would spread
-- every family key through one process's memory. Minimisation: the month
-- alone says no more than the age group the candidate lists already show, is
-- never returned by any purpose in src/records/views.ts, and is written only
-- from src/records/. NULL where unknown (files written before this
-- migration): the allocation's loader then opens that child's birth date.

-- A facility's ranked list reads its active applications with the clear
-- columns of the order; an index on (facility, status) alone leaves a sort of
-- thousands of rows per page at a large seed.
CREATE INDEX applications_facility_active ON applications (facility_id, created_at, child_id) WHERE status = 'active';
CREATE INDEX applications_child_preference ON applications (child_id, preference);
CREATE INDEX offers_allocation_run ON offers (allocation_run_id) WHERE allocation_run_id IS NOT NULL;

-- One allocation round. The inputs snapshot holds no names or birth dates:
-- ids, categories, desired entry dates, registration times, vacancies (see
-- src/waitlist/allocation.ts for its layout), enough to run the round again.
-- The signature (Ed25519, the tenant's allocation key derived from the master
-- key like the audit log's) covers the id, the parameters and both hashes, so
-- any change to the stored run shows at replay.
CREATE TABLE allocation_runs (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  started_at timestamptz NOT NULL,
  finished_at timestamptz NOT NULL,
  dry_run boolean NOT NULL,
  parameters jsonb NOT NULL,
  children integer NOT NULL CHECK (children >= 0),
  applications integer NOT NULL CHECK (applications >= 0),
  placed integer NOT NULL CHECK (placed >= 0),
  inputs_hash bytea NOT NULL CHECK (length(inputs_hash) = 32),
  outputs_hash bytea NOT NULL CHECK (length(outputs_hash) = 32),
  -- gzip of the binary inputs
  inputs_snapshot bytea NOT NULL,
  signature bytea NOT NULL CHECK (length(signature) = 64),
  public_key bytea NOT NULL CHECK (length(public_key) = 32),
  UNIQUE (tenant_id, id)
);
CREATE INDEX allocation_runs_tenant ON allocation_runs (tenant_id, started_at);

-- Each child's outcome in a run, and its choices as they stood: what its
-- explanation page reads.
CREATE TABLE allocation_results (
  run_id uuid NOT NULL,
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  child_id uuid NOT NULL,
  age_group text NOT NULL CHECK (age_group IN ('infant', 'toddler')),
  category_by_choice smallint[] NOT NULL,
  facility_by_choice uuid[] NOT NULL,
  desired_entry_date date NOT NULL,
  -- 1-based choice obtained, NULL when none
  placed_choice smallint,
  PRIMARY KEY (run_id, child_id),
  FOREIGN KEY (tenant_id, run_id) REFERENCES allocation_runs (tenant_id, id),
  FOREIGN KEY (tenant_id, child_id) REFERENCES children (tenant_id, id)
);
CREATE INDEX allocation_results_child ON allocation_results (child_id);

-- The last candidate each facility admitted in each age group: the bar a child
-- had to clear. No identity, only the order's terms.
CREATE TABLE allocation_cutoffs (
  run_id uuid NOT NULL,
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  facility_id uuid NOT NULL REFERENCES facilities (id),
  age_group text NOT NULL CHECK (age_group IN ('infant', 'toddler')),
  vacancies integer NOT NULL CHECK (vacancies >= 0),
  admitted integer NOT NULL CHECK (admitted >= 0),
  last_category smallint,
  last_desired_entry_date date,
  PRIMARY KEY (run_id, facility_id, age_group),
  FOREIGN KEY (tenant_id, run_id) REFERENCES allocation_runs (tenant_id, id)
);

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['allocation_runs', 'allocation_results', 'allocation_cutoffs']
  LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant())', t);
    -- A run is a record: written once, never changed.
    EXECUTE format('GRANT SELECT, INSERT ON %I TO guichet_app', t);
  END LOOP;
END
$$;
