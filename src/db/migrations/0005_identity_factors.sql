-- Second factors (TOTP, recovery codes, passkeys), the second step of a
-- sign-in, and how each session was authenticated (for step-up).

-- How the session last authenticated, and when: a sign-in or a re-authentication
-- (step-up) sets both. Sessions created before this migration, or by a path
-- that does not say, count as a password sign-in at their creation.
ALTER TABLE sessions
  ADD COLUMN auth_methods text[] NOT NULL DEFAULT '{password}'
    CHECK (auth_methods <@ ARRAY['password', 'totp', 'recovery', 'passkey']::text[] AND cardinality(auth_methods) >= 1),
  ADD COLUMN authenticated_at timestamptz;
UPDATE sessions SET authenticated_at = created_at WHERE authenticated_at IS NULL;

-- RFC 6238 authenticator app. The secret is encrypted by the application
-- (AES-256-GCM under a key derived from the key provider, bound to tenant,
-- account and factor), so a copy of the database alone cannot make codes.
-- A row without confirmed_at is an enrolment in progress. last_used_step is
-- the time step of the last accepted code: a code is accepted once.
CREATE TABLE totp_factors (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  account_id uuid NOT NULL,
  secret_enc bytea NOT NULL,
  created_at timestamptz NOT NULL,
  confirmed_at timestamptz,
  last_used_step bigint,
  disabled_at timestamptz,
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id)
);
-- At most one live (pending or confirmed) authenticator app per account.
CREATE UNIQUE INDEX totp_factors_one_live ON totp_factors (account_id) WHERE disabled_at IS NULL;

-- Single-use recovery codes: 80 random bits each, stored as an HMAC-SHA-256
-- under a key that is not in the database.
CREATE TABLE recovery_codes (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  account_id uuid NOT NULL,
  code_hash bytea NOT NULL CHECK (length(code_hash) = 32),
  created_at timestamptz NOT NULL,
  used_at timestamptz,
  revoked_at timestamptz,
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id),
  UNIQUE (account_id, code_hash)
);

-- Passkeys (WebAuthn public-key credentials).
CREATE TABLE webauthn_credentials (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  account_id uuid NOT NULL,
  credential_id text NOT NULL CHECK (credential_id ~ '^[A-Za-z0-9_-]+$' AND length(credential_id) BETWEEN 16 AND 1400),
  public_key bytea NOT NULL,
  sign_count bigint NOT NULL DEFAULT 0 CHECK (sign_count >= 0),
  transports text[] NOT NULL DEFAULT '{}',
  rp_id text NOT NULL,
  name text NOT NULL CHECK (length(name) BETWEEN 1 AND 60),
  aaguid text,
  backed_up boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL,
  last_used_at timestamptz,
  revoked_at timestamptz,
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id),
  UNIQUE (tenant_id, credential_id)
);
CREATE INDEX webauthn_credentials_account ON webauthn_credentials (account_id);

-- A sign-in whose password was right and whose second step is awaited, or a
-- passkey sign-in in progress (no account yet). The browser holds the token
-- in a short-lived cookie; only its SHA-256 is stored.
CREATE TABLE pending_signins (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  account_id uuid,
  purpose text NOT NULL CHECK (purpose IN ('second_factor', 'passkey')),
  token_hash bytea NOT NULL UNIQUE,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  failures smallint NOT NULL DEFAULT 0,
  used_at timestamptz,
  CHECK ((purpose = 'second_factor') = (account_id IS NOT NULL)),
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX pending_signins_expiry ON pending_signins (tenant_id, expires_at);

-- WebAuthn challenges: single-use, short-lived, and bound to the cookie (a
-- session's or a pending sign-in's token, by its SHA-256) of the browser that
-- asked for them.
CREATE TABLE webauthn_challenges (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  challenge text NOT NULL UNIQUE CHECK (challenge ~ '^[A-Za-z0-9_-]{43}$'),
  purpose text NOT NULL CHECK (purpose IN ('register', 'authenticate')),
  account_id uuid,
  bound_to bytea NOT NULL CHECK (length(bound_to) = 32),
  user_verification text NOT NULL CHECK (user_verification IN ('required', 'preferred')),
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  used_at timestamptz,
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX webauthn_challenges_expiry ON webauthn_challenges (tenant_id, expires_at);

-- Wrong codes (TOTP, recovery) and wrong passwords at re-authentication, per
-- account: past a few in a window, code entry is closed for a while, so a
-- stolen password cannot be followed by a million guesses.
CREATE TABLE factor_failures (
  id bigserial PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  account_id uuid NOT NULL,
  kind text NOT NULL CHECK (kind IN ('totp', 'recovery', 'password')),
  at timestamptz NOT NULL,
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX factor_failures_account ON factor_failures (account_id, at);

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['totp_factors', 'recovery_codes', 'webauthn_credentials', 'pending_signins',
                           'webauthn_challenges', 'factor_failures']
  LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant())', t);
  END LOOP;
END
$$;

GRANT UPDATE (auth_methods, authenticated_at) ON sessions TO guichet_app;
-- Factors are never deleted: they are disabled, used or revoked, and stay as history.
GRANT SELECT, INSERT ON totp_factors TO guichet_app;
GRANT UPDATE (confirmed_at, last_used_step, disabled_at) ON totp_factors TO guichet_app;
GRANT SELECT, INSERT ON recovery_codes TO guichet_app;
GRANT UPDATE (used_at, revoked_at) ON recovery_codes TO guichet_app;
GRANT SELECT, INSERT ON webauthn_credentials TO guichet_app;
GRANT UPDATE (sign_count, name, backed_up, last_used_at, revoked_at) ON webauthn_credentials TO guichet_app;
-- Ceremony state is ephemeral: expired rows are purged.
GRANT SELECT, INSERT, DELETE ON pending_signins, webauthn_challenges TO guichet_app;
GRANT UPDATE (failures, used_at) ON pending_signins TO guichet_app;
GRANT UPDATE (used_at) ON webauthn_challenges TO guichet_app;
GRANT SELECT, INSERT, DELETE ON factor_failures TO guichet_app;
GRANT USAGE ON SEQUENCE factor_failures_id_seq TO guichet_app;
