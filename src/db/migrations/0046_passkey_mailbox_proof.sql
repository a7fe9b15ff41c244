-- A privileged holder's first passkey needs proof of the mailbox.
--
-- A holder of a privileged role who had no passkey yet enrolled the first one
-- after a password and an authenticator-app code: both can be relayed by a
-- phishing proxy, so whoever phished them could enrol their own passkey and
-- pass every "passkey required" step from then on. That first enrolment now
-- also takes a link e-mailed to the account's address, followed from the very
-- session that asked for it (src/identity/factors/mailbox.ts): the session
-- records when it did, and enrols within a quarter of an hour of it.
ALTER TABLE sessions ADD COLUMN mailbox_proven_at timestamptz;
GRANT UPDATE (mailbox_proven_at) ON sessions TO guichet_app;

-- The links: only the SHA-256 of the token is kept, with the hash of the
-- token of the session that asked (a copy of the session's cookie from
-- before a re-authentication does not match it). Single use, short-lived,
-- and only the latest of an account's links is good.
CREATE TABLE passkey_enrolment_links (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  account_id uuid NOT NULL,
  session_id uuid NOT NULL REFERENCES sessions (id),
  session_token_hash bytea NOT NULL CHECK (length(session_token_hash) = 32),
  token_hash bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  used_at timestamptz,
  CHECK (expires_at > created_at),
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX passkey_enrolment_links_account ON passkey_enrolment_links (account_id, created_at);

ALTER TABLE passkey_enrolment_links ENABLE ROW LEVEL SECURITY;
ALTER TABLE passkey_enrolment_links FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON passkey_enrolment_links USING (tenant_id = (SELECT app_tenant())) WITH CHECK (tenant_id = (SELECT app_tenant()));

-- Kept as history (each is an audit event too): never deleted, only used.
GRANT SELECT, INSERT ON passkey_enrolment_links TO guichet_app;
GRANT UPDATE (used_at) ON passkey_enrolment_links TO guichet_app;
