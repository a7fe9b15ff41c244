-- Operator statistics and assisted mode.

-- The first day of the child's birth month, in clear, so that the operator's
-- statistics (and anything else that needs only the age group) aggregate in
-- SQL instead of opening every birth date: at 1,000,000 files that would
-- unwrap hundreds of thousands of family keys for a count. The month says no
-- more than the age group the candidate lists already show; it is written
-- only from src/records/ and no purpose in src/records/views.ts returns it.
-- NULL for files written before this migration: counted as "age unknown".
ALTER TABLE children ADD COLUMN IF NOT EXISTS birth_month date CHECK (birth_month IS NULL OR extract(day FROM birth_month) = 1);

-- Statistics by region read the waiting children through their facilities.
CREATE INDEX IF NOT EXISTS facilities_region ON facilities (tenant_id, region);
CREATE INDEX IF NOT EXISTS applications_active_child ON applications (child_id, facility_id) WHERE status = 'active';

-- Assisted mode: an agent (facility staff, a director, a programme operator)
-- acts for a parent who phones or comes in. One row is one consent: the code
-- e-mailed to the parent (hashed, short-lived, single use, a few tries), then
-- the assisted session it opens, bound to the agent's own session and to the
-- one family, for a limited time.
CREATE TABLE assisted_sessions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  agent_account_id uuid NOT NULL,
  agent_session_id uuid NOT NULL REFERENCES sessions (id),
  -- the capacity the agent acts in, shown to the parent: the role, and the facility for a facility role
  agent_role text NOT NULL CHECK (agent_role IN ('facility_staff', 'facility_director', 'program_operator')),
  agent_facility_id uuid REFERENCES facilities (id),
  parent_account_id uuid NOT NULL,
  channel text NOT NULL CHECK (channel IN ('phone', 'in_person')),
  note text NOT NULL DEFAULT '' CHECK (length(note) <= 500),
  code_hash bytea NOT NULL CHECK (length(code_hash) = 32),
  code_expires_at timestamptz NOT NULL,
  code_attempts integer NOT NULL DEFAULT 0 CHECK (code_attempts >= 0),
  requested_at timestamptz NOT NULL,
  started_at timestamptz,
  expires_at timestamptz,
  ended_at timestamptz,
  end_reason text CHECK (end_reason IN ('agent', 'superseded', 'code_failed')),
  FOREIGN KEY (tenant_id, agent_account_id) REFERENCES accounts (tenant_id, id),
  FOREIGN KEY (tenant_id, parent_account_id) REFERENCES accounts (tenant_id, id),
  CHECK ((started_at IS NULL) = (expires_at IS NULL))
);
CREATE INDEX assisted_sessions_agent_session ON assisted_sessions (agent_session_id) WHERE ended_at IS NULL;
CREATE INDEX assisted_sessions_agent ON assisted_sessions (agent_account_id, requested_at);
CREATE INDEX assisted_sessions_parent ON assisted_sessions (parent_account_id, requested_at);

ALTER TABLE assisted_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE assisted_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON assisted_sessions USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
-- A consent is history: it is used, ended or left to expire, never removed.
GRANT SELECT, INSERT ON assisted_sessions TO guichet_app;
GRANT UPDATE (code_attempts, started_at, expires_at, ended_at, end_reason) ON assisted_sessions TO guichet_app;
