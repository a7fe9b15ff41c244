-- Detection and response (src/detection). Everything that must be shared by
-- several instances lives here, not in a process's memory: the windows of
-- the counters, the alerts, the demands for step-up, the lockdown changes.

-- A tenant's own rules. The defaults are in src/detection/rules.ts; a row
-- with the same code replaces a default, a row with a new code adds a rule.
CREATE TABLE detection_rules (
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  code text NOT NULL CHECK (code ~ '^[a-z0-9_.-]{1,64}$'),
  signal text NOT NULL CHECK (signal IN ('files_read', 'privilege', 'deletion', 'new_device', 'off_hours')),
  threshold integer NOT NULL CHECK (threshold >= 0),
  window_seconds integer NOT NULL CHECK (window_seconds BETWEEN 1 AND 604800),
  response text NOT NULL CHECK (response IN ('alert', 'stepup', 'end_sessions', 'suspend')),
  lockdown_level smallint CHECK (lockdown_level BETWEEN 1 AND 4),
  except_declared_batch boolean NOT NULL DEFAULT false,
  enabled boolean NOT NULL DEFAULT true,
  updated_at timestamptz NOT NULL,
  updated_by uuid,
  PRIMARY KEY (tenant_id, code)
);

-- One row per counted event, summed over each rule's window. Rows older than
-- the longest window are purged.
CREATE TABLE detection_hits (
  id bigserial PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  account_id uuid NOT NULL,
  signal text NOT NULL,
  weight integer NOT NULL CHECK (weight > 0),
  at timestamptz NOT NULL
);
CREATE INDEX detection_hits_window ON detection_hits (tenant_id, account_id, signal, at);

-- How far each tenant's audit stream has been read by detection (src/detection/stream.ts):
-- the Merkle leaf index, which orders events as the sealer committed them.
CREATE TABLE detection_stream_cursors (
  tenant_id uuid PRIMARY KEY REFERENCES tenants (id),
  leaf_index bigint NOT NULL
);

-- A declared batch: an account may read beyond the daily volume rules that
-- allow it (except_declared_batch), for a stated reason and a bounded time.
CREATE TABLE detection_batches (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  account_id uuid NOT NULL,
  reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
  starts_at timestamptz NOT NULL,
  ends_at timestamptz NOT NULL CHECK (ends_at > starts_at),
  declared_by uuid NOT NULL,
  created_at timestamptz NOT NULL,
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id),
  FOREIGN KEY (tenant_id, declared_by) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX detection_batches_account ON detection_batches (tenant_id, account_id, ends_at);

-- What a rule's response demands of an account until it re-authenticates.
CREATE TABLE detection_holds (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  account_id uuid NOT NULL,
  kind text NOT NULL CHECK (kind IN ('stepup')),
  rule_code text NOT NULL,
  since timestamptz NOT NULL,
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX detection_holds_account ON detection_holds (tenant_id, account_id, since);

CREATE TABLE detection_alerts (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  rule_code text NOT NULL,
  signal text NOT NULL,
  severity text NOT NULL CHECK (severity IN ('low', 'high', 'critical')),
  -- whom the alert is about
  subject_account_id uuid,
  -- what was done automatically: alert, stepup, end_sessions, suspend, with lockdown_level when raised
  response text NOT NULL,
  lockdown_level smallint,
  -- the audit events that caused it (ids of audit_events)
  event_ids text[] NOT NULL DEFAULT '{}',
  details jsonb NOT NULL DEFAULT '{}',
  status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'closed')),
  assigned_to uuid,
  acknowledged_by uuid,
  acknowledged_at timestamptz,
  created_at timestamptz NOT NULL,
  FOREIGN KEY (tenant_id, subject_account_id) REFERENCES accounts (tenant_id, id),
  FOREIGN KEY (tenant_id, assigned_to) REFERENCES accounts (tenant_id, id),
  FOREIGN KEY (tenant_id, acknowledged_by) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX detection_alerts_list ON detection_alerts (tenant_id, created_at DESC);

CREATE TABLE detection_alert_notes (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  alert_id uuid NOT NULL REFERENCES detection_alerts (id),
  author_account_id uuid NOT NULL,
  body text NOT NULL CHECK (length(body) BETWEEN 1 AND 2000),
  created_at timestamptz NOT NULL,
  FOREIGN KEY (tenant_id, author_account_id) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX detection_alert_notes_alert ON detection_alert_notes (alert_id, created_at);

-- Lockdown: raising takes one security officer and applies at once;
-- lowering is a request that a different officer approves.
ALTER TABLE tenants ADD COLUMN lockdown_changed_at timestamptz;

CREATE TABLE lockdown_changes (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  from_level smallint NOT NULL CHECK (from_level BETWEEN 0 AND 4),
  to_level smallint NOT NULL CHECK (to_level BETWEEN 0 AND 4 AND to_level <> from_level),
  reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
  -- null when detection raised it on its own
  requested_by uuid,
  requested_at timestamptz NOT NULL,
  status text NOT NULL CHECK (status IN ('pending', 'applied', 'refused', 'superseded')),
  decided_by uuid,
  decided_at timestamptz,
  CHECK (to_level > from_level OR requested_by IS NOT NULL),
  -- lowering needs two different people
  CHECK (decided_by IS NULL OR requested_by IS NULL OR decided_by <> requested_by),
  CHECK (to_level > from_level OR status <> 'applied' OR decided_by IS NOT NULL),
  FOREIGN KEY (tenant_id, requested_by) REFERENCES accounts (tenant_id, id),
  FOREIGN KEY (tenant_id, decided_by) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX lockdown_changes_tenant ON lockdown_changes (tenant_id, requested_at DESC);

-- A decided change stays decided.
CREATE FUNCTION lockdown_changes_guard() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF OLD.status <> 'pending' THEN
    RAISE EXCEPTION 'lockdown_changes: a decided change is final' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.from_level IS DISTINCT FROM OLD.from_level OR NEW.to_level IS DISTINCT FROM OLD.to_level
     OR NEW.requested_by IS DISTINCT FROM OLD.requested_by OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id THEN
    RAISE EXCEPTION 'lockdown_changes: only the decision may change' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER lockdown_changes_guard BEFORE UPDATE ON lockdown_changes FOR EACH ROW EXECUTE FUNCTION lockdown_changes_guard();

-- A tenant's webhook for alerts. The signing secret is not stored: it is
-- derived from the root key for the tenant (src/detection/webhook.ts).
CREATE TABLE detection_webhooks (
  tenant_id uuid PRIMARY KEY REFERENCES tenants (id),
  url text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 500),
  updated_at timestamptz NOT NULL,
  updated_by uuid NOT NULL,
  FOREIGN KEY (tenant_id, updated_by) REFERENCES accounts (tenant_id, id)
);

-- Deliveries are written with the alert, in its transaction, and sent after.
CREATE TABLE detection_webhook_deliveries (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  alert_id uuid NOT NULL REFERENCES detection_alerts (id),
  url text NOT NULL,
  body text NOT NULL,
  created_at timestamptz NOT NULL,
  next_attempt_at timestamptz NOT NULL,
  attempts integer NOT NULL DEFAULT 0,
  delivered_at timestamptz,
  last_status integer,
  last_error text
);
CREATE INDEX detection_webhook_deliveries_pending ON detection_webhook_deliveries (tenant_id, next_attempt_at) WHERE delivered_at IS NULL;

-- Protected files (a public figure, a staff member's child): opening one
-- needs a stated reason, raises an alert, and is listed for the daily review.
CREATE TABLE protected_files (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  child_id uuid NOT NULL REFERENCES children (id),
  reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
  marked_by uuid NOT NULL,
  marked_at timestamptz NOT NULL,
  unmarked_by uuid,
  unmarked_at timestamptz,
  FOREIGN KEY (tenant_id, marked_by) REFERENCES accounts (tenant_id, id),
  FOREIGN KEY (tenant_id, unmarked_by) REFERENCES accounts (tenant_id, id)
);
CREATE UNIQUE INDEX protected_files_current ON protected_files (child_id) WHERE unmarked_at IS NULL;

CREATE TABLE protected_file_openings (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  child_id uuid NOT NULL REFERENCES children (id),
  account_id uuid NOT NULL,
  reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
  action text NOT NULL,
  audit_event_id uuid NOT NULL,
  alert_id uuid REFERENCES detection_alerts (id),
  opened_at timestamptz NOT NULL,
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX protected_file_openings_day ON protected_file_openings (tenant_id, opened_at);

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['detection_stream_cursors', 'protected_files', 'protected_file_openings', 'detection_rules', 'detection_hits', 'detection_batches', 'detection_holds',
                           'detection_alerts', 'detection_alert_notes', 'lockdown_changes',
                           'detection_webhooks', 'detection_webhook_deliveries']
  LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant())', t);
  END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE ON detection_rules TO guichet_app;
GRANT SELECT, INSERT, DELETE ON detection_hits TO guichet_app;
GRANT USAGE ON SEQUENCE detection_hits_id_seq TO guichet_app;
GRANT SELECT, INSERT ON detection_batches TO guichet_app;
GRANT SELECT, INSERT ON detection_holds TO guichet_app;
GRANT SELECT, INSERT ON detection_alerts TO guichet_app;
GRANT UPDATE (status, assigned_to, acknowledged_by, acknowledged_at) ON detection_alerts TO guichet_app;
GRANT SELECT, INSERT ON detection_alert_notes TO guichet_app;
GRANT SELECT, INSERT ON lockdown_changes TO guichet_app;
GRANT UPDATE (status, decided_by, decided_at) ON lockdown_changes TO guichet_app;
GRANT UPDATE (lockdown_changed_at) ON tenants TO guichet_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON detection_webhooks TO guichet_app;
GRANT SELECT, INSERT, UPDATE ON detection_stream_cursors TO guichet_app;
GRANT SELECT, INSERT ON protected_files, protected_file_openings TO guichet_app;
GRANT UPDATE (unmarked_by, unmarked_at) ON protected_files TO guichet_app;
GRANT SELECT, INSERT ON detection_webhook_deliveries TO guichet_app;
GRANT UPDATE (next_attempt_at, attempts, delivered_at, last_status, last_error) ON detection_webhook_deliveries TO guichet_app;
