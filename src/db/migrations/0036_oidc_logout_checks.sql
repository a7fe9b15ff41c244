-- Back-channel logout when a person's sign-ins end (src/oidc/logout.ts).
--
-- After every POST of the application, the server looked for provider
-- sessions whose person had no live Guichet session left, over every provider
-- session of the tenant: with the account compared as text, PostgreSQL could
-- use no index and joined each provider session with every live session —
-- 4.6 seconds a POST with 5,000 provider sessions and 20,000 people signed in.
--
-- Now the database notes each account whose sign-ins may just have ended,
-- whatever ended them (an administrator, a role withdrawn, detection, a
-- suspension written by anything): a session revoked, an account no longer
-- active. After a POST the server takes the tenant's notes (DELETE …
-- RETURNING: two servers cannot both take one) and looks only at those
-- accounts' provider sessions. The minute's sweep still looks at them all —
-- sessions that merely run out change no row — now by index.
CREATE TABLE oidc_logout_checks (
  tenant_id uuid NOT NULL REFERENCES tenants(id),
  account_id uuid NOT NULL,
  noted_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, account_id)
);
ALTER TABLE oidc_logout_checks ENABLE ROW LEVEL SECURITY;
ALTER TABLE oidc_logout_checks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON oidc_logout_checks USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
GRANT SELECT, INSERT, DELETE ON oidc_logout_checks TO guichet_app;

-- Invoker's rights: the row that changed is one the caller could change, in
-- the tenant its row-level security is set to, so the note passes the same
-- policy.
CREATE FUNCTION note_oidc_logout_check() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = public, pg_temp
  AS $$
BEGIN
  -- Two statements: PL/pgSQL resolves NEW's fields when a statement first runs, and an account has no account_id.
  IF TG_TABLE_NAME = 'sessions' THEN
    INSERT INTO oidc_logout_checks (tenant_id, account_id) VALUES (NEW.tenant_id, NEW.account_id) ON CONFLICT (tenant_id, account_id) DO NOTHING;
  ELSE
    INSERT INTO oidc_logout_checks (tenant_id, account_id) VALUES (NEW.tenant_id, NEW.id) ON CONFLICT (tenant_id, account_id) DO NOTHING;
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER sessions_note_oidc_logout AFTER UPDATE OF revoked_at ON sessions
  FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
  EXECUTE FUNCTION note_oidc_logout_check();
CREATE TRIGGER accounts_note_oidc_logout AFTER UPDATE OF status ON accounts
  FOR EACH ROW WHEN (OLD.status = 'active' AND NEW.status <> 'active')
  EXECUTE FUNCTION note_oidc_logout_check();

-- A provider session's person, for both looks.
CREATE INDEX oidc_payloads_session_account ON oidc_payloads (tenant_id, (payload->>'accountId')) WHERE model = 'Session';
