-- Brute-force defence. Attempts are rows, not counters: every instance sees
-- the same windows, and a count is a query. The e-mail address is kept only
-- as a keyed hash (it may name an account that does not exist).
CREATE TABLE auth_attempts (
  id bigserial PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  kind text NOT NULL CHECK (kind IN ('signin_failure', 'signin_success', 'signup')),
  email_key bytea NOT NULL,
  ip text,
  at timestamptz NOT NULL
);
CREATE INDEX auth_attempts_email ON auth_attempts (tenant_id, email_key, at);
CREATE INDEX auth_attempts_ip ON auth_attempts (tenant_id, ip, at);

-- A browser is a device once it has signed in: a sign-in from a device the
-- account has not used before sends a notice by e-mail.
CREATE TABLE known_devices (
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  account_id uuid NOT NULL,
  device_hash bytea NOT NULL,
  first_seen_at timestamptz NOT NULL,
  last_seen_at timestamptz NOT NULL,
  user_agent text,
  PRIMARY KEY (account_id, device_hash),
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id)
);

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['auth_attempts', 'known_devices']
  LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant())', t);
  END LOOP;
END
$$;

-- Old attempts are purged (they hold no personal data beyond a keyed hash and an address).
GRANT SELECT, INSERT, DELETE ON auth_attempts TO guichet_app;
GRANT USAGE ON SEQUENCE auth_attempts_id_seq TO guichet_app;
GRANT SELECT, INSERT ON known_devices TO guichet_app;
GRANT UPDATE (last_seen_at, user_agent) ON known_devices TO guichet_app;
