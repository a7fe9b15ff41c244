-- OpenID Connect provider per tenant (src/oidc): the relying parties a tenant
-- registers, the provider's own state (codes, tokens, sessions, grants), its
-- signing keys (wrapped by the key provider, never in clear) and the access
-- rights it may release (entitlements). All tenant-owned, all under RLS.

-- A relying party. A client that may receive personal claims (any scope but
-- openid/offline_access) starts 'pending' and needs a second administrator.
CREATE TABLE oidc_clients (
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  client_id text NOT NULL CHECK (client_id ~ '^[A-Za-z0-9_-]{16,64}$'),
  name text NOT NULL CHECK (length(name) BETWEEN 1 AND 120),
  redirect_uris text[] NOT NULL CHECK (cardinality(redirect_uris) BETWEEN 1 AND 10),
  post_logout_redirect_uris text[] NOT NULL DEFAULT '{}',
  scopes text[] NOT NULL,
  logo_uri text,
  backchannel_logout_uri text,
  -- null: a public client (PKCE, no secret); else the secret wrapped by the key provider.
  secret_wrapped bytea,
  subject_type text NOT NULL DEFAULT 'pairwise' CHECK (subject_type IN ('pairwise', 'public')),
  personal boolean NOT NULL,
  status text NOT NULL CHECK (status IN ('pending', 'active', 'refused', 'disabled')),
  requested_by uuid NOT NULL,
  requested_at timestamptz NOT NULL,
  approved_by uuid,
  approved_at timestamptz,
  PRIMARY KEY (tenant_id, client_id),
  CHECK (status <> 'active' OR NOT personal OR (approved_by IS NOT NULL AND approved_by <> requested_by)),
  FOREIGN KEY (tenant_id, requested_by) REFERENCES accounts (tenant_id, id),
  FOREIGN KEY (tenant_id, approved_by) REFERENCES accounts (tenant_id, id)
);

-- What oidc-provider stores (one row per artefact: Session, Grant,
-- AuthorizationCode, RefreshToken, AccessToken, Interaction, …).
CREATE TABLE oidc_payloads (
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  model text NOT NULL,
  id text NOT NULL,
  payload jsonb NOT NULL,
  grant_id text,
  uid text,
  user_code text,
  expires_at timestamptz,
  consumed_at timestamptz,
  PRIMARY KEY (tenant_id, model, id)
);
CREATE INDEX oidc_payloads_grant ON oidc_payloads (tenant_id, grant_id) WHERE grant_id IS NOT NULL;
CREATE INDEX oidc_payloads_uid ON oidc_payloads (tenant_id, model, uid) WHERE uid IS NOT NULL;
CREATE INDEX oidc_payloads_expiry ON oidc_payloads (expires_at);

-- Signing keys: the private JWK wrapped by the key provider; the public one in
-- clear for the JWKS. 'current' signs, 'previous' is still published so that
-- tokens signed before a rotation verify, 'retired' is neither.
CREATE TABLE oidc_signing_keys (
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  kid text NOT NULL,
  alg text NOT NULL CHECK (alg IN ('RS256', 'ES256')),
  public_jwk jsonb NOT NULL,
  private_wrapped bytea NOT NULL,
  status text NOT NULL CHECK (status IN ('current', 'previous', 'retired')),
  created_at timestamptz NOT NULL,
  retired_at timestamptz,
  PRIMARY KEY (tenant_id, kid)
);
CREATE UNIQUE INDEX oidc_signing_keys_current ON oidc_signing_keys (tenant_id, alg) WHERE status = 'current';

-- Access rights as data: "patron of library network X until Y". Released in
-- the claim `entitlements` to a client only under the scope the person consented to.
CREATE TABLE oidc_entitlements (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  account_id uuid NOT NULL,
  scope text NOT NULL CHECK (scope ~ '^[a-z][a-z0-9_]{1,39}$' AND scope NOT IN ('openid', 'email', 'profile', 'offline_access')),
  kind text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_.-]{1,63}$'),
  value text NOT NULL CHECK (length(value) BETWEEN 1 AND 200),
  label_fr text NOT NULL CHECK (length(label_fr) BETWEEN 1 AND 200),
  label_en text NOT NULL CHECK (length(label_en) BETWEEN 1 AND 200),
  valid_until date,
  created_by uuid NOT NULL,
  created_at timestamptz NOT NULL,
  revoked_at timestamptz,
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id),
  FOREIGN KEY (tenant_id, created_by) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX oidc_entitlements_account ON oidc_entitlements (tenant_id, account_id);

ALTER TABLE oidc_clients ENABLE ROW LEVEL SECURITY;
ALTER TABLE oidc_clients FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON oidc_clients USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
ALTER TABLE oidc_payloads ENABLE ROW LEVEL SECURITY;
ALTER TABLE oidc_payloads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON oidc_payloads USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
ALTER TABLE oidc_signing_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE oidc_signing_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON oidc_signing_keys USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
ALTER TABLE oidc_entitlements ENABLE ROW LEVEL SECURITY;
ALTER TABLE oidc_entitlements FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON oidc_entitlements USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());

GRANT SELECT, INSERT ON oidc_clients TO guichet_app;
GRANT UPDATE (name, redirect_uris, post_logout_redirect_uris, logo_uri, backchannel_logout_uri, status, approved_by, approved_at) ON oidc_clients TO guichet_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON oidc_payloads TO guichet_app;
GRANT SELECT, INSERT ON oidc_signing_keys TO guichet_app;
GRANT UPDATE (status, retired_at) ON oidc_signing_keys TO guichet_app;
GRANT SELECT, INSERT ON oidc_entitlements TO guichet_app;
GRANT UPDATE (revoked_at) ON oidc_entitlements TO guichet_app;

-- A personal client is approved by someone other than who asked, once: the
-- database refuses it too, whatever the code above does.
CREATE FUNCTION oidc_clients_guard() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF NEW.status = 'active' AND NEW.personal AND OLD.status <> 'active' THEN
    IF OLD.status <> 'pending' OR NEW.approved_by IS NULL OR NEW.approved_by = NEW.requested_by THEN
      RAISE EXCEPTION 'oidc_clients: a client receiving personal claims needs a second administrator' USING ERRCODE = 'insufficient_privilege';
    END IF;
  END IF;
  IF OLD.status IN ('refused') AND NEW.status <> OLD.status THEN
    RAISE EXCEPTION 'oidc_clients: a refused request stays refused' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER oidc_clients_guard BEFORE UPDATE ON oidc_clients
  FOR EACH ROW EXECUTE FUNCTION oidc_clients_guard();
