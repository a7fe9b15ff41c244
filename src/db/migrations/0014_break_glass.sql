-- Break-glass: a newly granted role cools off before it opens personal data;
-- in an emergency its holder breaks the glass for one session — a stated
-- reason, 30 minutes at most, every privileged holder alerted. The row is the
-- record of it: who, which session, why, from when to when.
CREATE TABLE break_glass (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  account_id uuid NOT NULL,
  session_id uuid NOT NULL REFERENCES sessions (id),
  reason text NOT NULL CHECK (length(reason) BETWEEN 10 AND 500),
  started_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  ended_at timestamptz,
  CHECK (expires_at > started_at AND expires_at <= started_at + interval '30 minutes'),
  CHECK (ended_at IS NULL OR ended_at >= started_at),
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX break_glass_session ON break_glass (session_id, expires_at);
CREATE INDEX break_glass_recent ON break_glass (tenant_id, started_at);

ALTER TABLE break_glass ENABLE ROW LEVEL SECURITY;
ALTER TABLE break_glass FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON break_glass USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());

-- It can be ended early; nothing else about it changes, and it is never deleted.
GRANT SELECT, INSERT ON break_glass TO guichet_app;
GRANT UPDATE (ended_at) ON break_glass TO guichet_app;
