-- Tenant rules as data for the waitlist: the priorities a facility declares,
-- the ones a parent says the child meets, and the periodic confirmation of
-- child files (an unconfirmed file leaves every ranking until confirmed).

-- A facility's declared priorities: one row per kind, with what it is about
-- (the institution, employer or municipality) where the kind needs it.
CREATE TABLE facility_priorities (
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  facility_id uuid NOT NULL REFERENCES facilities (id),
  kind text NOT NULL CHECK (kind IN ('specialNeeds', 'socioEconomic', 'studentAt', 'employeeOf', 'residentOf', 'indigenous')),
  detail text CHECK (detail IS NULL OR length(detail) BETWEEN 1 AND 200),
  declared_at timestamptz NOT NULL,
  declared_by uuid,
  PRIMARY KEY (facility_id, kind),
  FOREIGN KEY (tenant_id, declared_by) REFERENCES accounts (tenant_id, id)
);

ALTER TABLE facility_priorities ENABLE ROW LEVEL SECURITY;
ALTER TABLE facility_priorities FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON facility_priorities USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
GRANT SELECT, INSERT, DELETE ON facility_priorities TO guichet_app;

-- The facility's priorities the parent says the child meets (kinds); checked
-- against the facility's current declaration when ranked, verified at referral.
ALTER TABLE applications ADD COLUMN priorities text[] NOT NULL DEFAULT '{}';

-- Periodic confirmation. confirmed_at: the last time the parent said the file
-- is still wanted (NULL: never, the period counts from the file's creation);
-- reminded_at: the last reminder sent for the current period; inactive_since:
-- set when the grace period ran out; seniority_from: when the rules say a
-- reactivated file loses its seniority, the day it came back.
ALTER TABLE children ADD COLUMN confirmed_at timestamptz;
ALTER TABLE children ADD COLUMN reminded_at timestamptz;
ALTER TABLE children ADD COLUMN inactive_since timestamptz;
ALTER TABLE children ADD COLUMN seniority_from date;
CREATE INDEX children_inactive ON children (tenant_id) WHERE inactive_since IS NOT NULL;

-- The cap counts a facility's admissions over the last months.
CREATE INDEX offers_admissions ON offers (facility_id, offered_at) WHERE status IN ('accepted', 'started');
