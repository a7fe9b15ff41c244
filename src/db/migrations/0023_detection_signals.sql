-- Detection: more signals read from the audit stream and weighed on the read
-- path (exports and their size, searches by name, break-glass, a new
-- network), a fifth response grade that raises the tenant's lockdown level
-- by one, each tenant's declared working hours, and the networks each
-- account has signed in from.

ALTER TABLE detection_rules DROP CONSTRAINT IF EXISTS detection_rules_signal_check;
ALTER TABLE detection_rules ADD CONSTRAINT detection_rules_signal_check
  CHECK (signal IN ('files_read', 'privilege', 'deletion', 'new_device', 'off_hours', 'export', 'export_rows', 'name_search', 'break_glass', 'new_network', 'client_tokens', 'client_claims'));
ALTER TABLE detection_rules DROP CONSTRAINT IF EXISTS detection_rules_response_check;
ALTER TABLE detection_rules ADD CONSTRAINT detection_rules_response_check
  CHECK (response IN ('alert', 'stepup', 'end_sessions', 'suspend', 'lockdown'));

-- A tenant's working hours: activity by staff outside them is a signal.
-- Without a row the defaults apply (Monday to Friday, 7 h to 19 h, Eastern
-- time). Days are ISO weekdays (1 = Monday … 7 = Sunday); minutes count from
-- midnight in the tenant's time zone.
CREATE TABLE detection_working_hours (
  tenant_id uuid PRIMARY KEY REFERENCES tenants (id),
  time_zone text NOT NULL CHECK (length(time_zone) BETWEEN 1 AND 64),
  days smallint[] NOT NULL CHECK (days <@ ARRAY[1, 2, 3, 4, 5, 6, 7]::smallint[]),
  start_minute integer NOT NULL CHECK (start_minute BETWEEN 0 AND 1439),
  end_minute integer NOT NULL CHECK (end_minute BETWEEN 1 AND 1440 AND end_minute > start_minute),
  updated_at timestamptz NOT NULL,
  updated_by uuid,
  FOREIGN KEY (tenant_id, updated_by) REFERENCES accounts (tenant_id, id)
);

-- The networks (an IPv4 /24, an IPv6 /48) each account has signed in from,
-- so that a sign-in from a new one is noticed. Only the prefix is kept.
CREATE TABLE known_networks (
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  account_id uuid NOT NULL,
  prefix text NOT NULL CHECK (length(prefix) BETWEEN 1 AND 64),
  first_seen_at timestamptz NOT NULL,
  last_seen_at timestamptz NOT NULL,
  PRIMARY KEY (account_id, prefix),
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id)
);

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['detection_working_hours', 'known_networks']
  LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant())', t);
  END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE ON detection_working_hours TO guichet_app;
GRANT SELECT, INSERT ON known_networks TO guichet_app;
GRANT UPDATE (last_seen_at) ON known_networks TO guichet_app;
