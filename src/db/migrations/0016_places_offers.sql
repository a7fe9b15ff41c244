-- The waitlist's moving parts (issue 4): places and vacancies per facility and
-- age group, and the offers (referrals) Guichet makes from the list. Shared by
-- the facility pages, the facility API, the automatic referral and the
-- coordinated allocation, so that each reads the same vacancies.

CREATE TABLE facility_places (
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  facility_id uuid NOT NULL REFERENCES facilities (id),
  age_group text NOT NULL CHECK (age_group IN ('infant', 'toddler')),
  -- places the permit allows for this age group
  places integer NOT NULL CHECK (places >= 0 AND places <= 1000),
  -- places open now, not yet offered to anyone
  vacancies integer NOT NULL DEFAULT 0 CHECK (vacancies >= 0 AND vacancies <= places),
  updated_at timestamptz NOT NULL,
  updated_by uuid,
  PRIMARY KEY (facility_id, age_group),
  FOREIGN KEY (tenant_id, updated_by) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX facility_places_open ON facility_places (tenant_id, age_group) WHERE vacancies > 0;

ALTER TABLE facility_places ENABLE ROW LEVEL SECURITY;
ALTER TABLE facility_places FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON facility_places USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
GRANT SELECT, INSERT, UPDATE ON facility_places TO guichet_app;

-- One offer is one place proposed to one child at one facility. A child has at
-- most one pending offer at a time (the unique index), whoever makes it: the
-- automatic referral or a coordinated allocation round.
CREATE TABLE offers (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  application_id uuid NOT NULL REFERENCES applications (id),
  child_id uuid NOT NULL,
  facility_id uuid NOT NULL REFERENCES facilities (id),
  age_group text NOT NULL CHECK (age_group IN ('infant', 'toddler')),
  -- pending: waiting for the parent; accepted: placement recorded; started: the
  -- director confirmed the start of care; refused / expired: the place went
  -- to the next child; cancelled: withdrawn by the facility or the programme
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'started', 'refused', 'expired', 'cancelled')),
  -- how the child came to be offered the place: the tenant's order, a
  -- priority the facility declared (its kind), or an allocation round
  source text NOT NULL DEFAULT 'referral' CHECK (source IN ('referral', 'allocation')),
  by_priority text,
  allocation_run_id uuid,
  offered_at timestamptz NOT NULL,
  deadline timestamptz NOT NULL CHECK (deadline > offered_at),
  answered_at timestamptz,
  start_date date,
  start_confirmed_at timestamptz,
  start_confirmed_by uuid,
  FOREIGN KEY (tenant_id, child_id) REFERENCES children (tenant_id, id),
  FOREIGN KEY (tenant_id, start_confirmed_by) REFERENCES accounts (tenant_id, id),
  UNIQUE (tenant_id, id)
);
CREATE UNIQUE INDEX offers_one_pending_per_child ON offers (child_id) WHERE status = 'pending';
CREATE INDEX offers_facility ON offers (facility_id, status);
CREATE INDEX offers_application ON offers (application_id);
CREATE INDEX offers_deadline ON offers (deadline) WHERE status = 'pending';

ALTER TABLE offers ENABLE ROW LEVEL SECURITY;
ALTER TABLE offers FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON offers USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
-- Offers are history: answered, expired or cancelled, never removed.
GRANT SELECT, INSERT ON offers TO guichet_app;
GRANT UPDATE (status, answered_at, start_date, start_confirmed_at, start_confirmed_by) ON offers TO guichet_app;

-- Every facility's places, from its permit, with nothing open yet.
INSERT INTO facility_places (tenant_id, facility_id, age_group, places, vacancies, updated_at)
SELECT tenant_id, id, 'infant', LEAST(places_infant, 1000), 0, now() FROM facilities
UNION ALL
SELECT tenant_id, id, 'toddler', LEAST(places_total - places_infant, 1000), 0, now() FROM facilities;
