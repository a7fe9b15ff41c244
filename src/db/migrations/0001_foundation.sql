-- Guichet foundation schema.
--
-- Every tenant-owned table carries tenant_id and a row-level security policy on
-- the transaction-local setting app.tenant_id. FORCE makes the policy apply to
-- the table owner too; only superusers bypass it, and the application never
-- runs as one (on PostgreSQL it logs in as a member of guichet_app; on PGlite
-- each transaction does SET LOCAL ROLE guichet_app).

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'guichet_app') THEN
    CREATE ROLE guichet_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  END IF;
END
$$;

-- An unset tenant is NULL, so a query without a tenant sees no row at all.
CREATE FUNCTION app_tenant() RETURNS uuid
  LANGUAGE sql STABLE
  AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

CREATE TABLE tenants (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  slug text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9-]{2,40}$'),
  name_fr text NOT NULL CHECK (length(name_fr) BETWEEN 1 AND 200),
  name_en text NOT NULL CHECK (length(name_en) BETWEEN 1 AND 200),
  hosts text[] NOT NULL DEFAULT '{}',
  rules jsonb NOT NULL DEFAULT '{}',
  lockdown_level smallint NOT NULL DEFAULT 0 CHECK (lockdown_level BETWEEN 0 AND 4),
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE facilities (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  code text NOT NULL CHECK (length(code) BETWEEN 1 AND 64),
  name text NOT NULL CHECK (length(name) BETWEEN 1 AND 300),
  kind text NOT NULL CHECK (kind IN ('cpe', 'garderie')),
  subsidised boolean NOT NULL,
  address text NOT NULL,
  municipality text NOT NULL,
  postal_code text NOT NULL,
  region text NOT NULL,
  places_total integer NOT NULL CHECK (places_total >= 0),
  places_infant integer NOT NULL CHECK (places_infant >= 0 AND places_infant <= places_total),
  -- lower-case, accents removed: what the directory search matches against
  search_key text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, code)
);
CREATE INDEX facilities_municipality ON facilities (tenant_id, municipality);

CREATE TABLE accounts (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  email text NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
  email_verified_at timestamptz,
  password_hash text,
  locale text NOT NULL DEFAULT 'fr' CHECK (locale IN ('fr', 'en')),
  status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, email),
  UNIQUE (tenant_id, id)
);

CREATE TABLE sessions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  account_id uuid NOT NULL,
  token_hash bytea NOT NULL UNIQUE,
  created_at timestamptz NOT NULL,
  last_seen_at timestamptz NOT NULL,
  idle_timeout_seconds integer NOT NULL CHECK (idle_timeout_seconds > 0),
  expires_at timestamptz NOT NULL,
  revoked_at timestamptz,
  ip text,
  user_agent text,
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX sessions_account ON sessions (account_id);

-- Single-use tokens sent by e-mail (verification, password set-up); only the hash is kept.
CREATE TABLE account_tokens (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  account_id uuid NOT NULL,
  purpose text NOT NULL CHECK (purpose IN ('verify_email', 'set_password')),
  token_hash bytea NOT NULL UNIQUE,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  used_at timestamptz,
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id)
);

-- Facility invitations confer the facility_staff role only: the CHECK makes
-- an invitation to any privileged role impossible, whatever the code above does.
CREATE TABLE invitations (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  email text NOT NULL CHECK (email = lower(email)),
  role text NOT NULL CHECK (role = 'facility_staff'),
  facility_id uuid NOT NULL REFERENCES facilities (id),
  token_hash bytea NOT NULL UNIQUE,
  invited_by uuid NOT NULL,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  accepted_at timestamptz,
  accepted_account_id uuid,
  revoked_at timestamptz,
  FOREIGN KEY (tenant_id, invited_by) REFERENCES accounts (tenant_id, id)
);

CREATE TABLE memberships (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  account_id uuid NOT NULL,
  role text NOT NULL CHECK (role IN ('tenant_admin', 'security_officer', 'program_operator', 'facility_director', 'facility_staff')),
  facility_id uuid REFERENCES facilities (id),
  source text NOT NULL CHECK (source IN ('bootstrap', 'invitation', 'grant')),
  granted_by uuid,
  approved_by uuid,
  created_at timestamptz NOT NULL,
  expires_at timestamptz,
  revoked_at timestamptz,
  CHECK ((role IN ('facility_director', 'facility_staff')) = (facility_id IS NOT NULL)),
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX memberships_account ON memberships (account_id);

-- No single person confers privilege. A privileged membership is either the
-- tenant's very first administrator (source 'bootstrap', only while the tenant
-- has never had one) or carries the approval of a second, different person.
-- Enforced here so that no application path, present or future, can skip it.
CREATE FUNCTION memberships_guard() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF NEW.role IS DISTINCT FROM OLD.role OR NEW.account_id IS DISTINCT FROM OLD.account_id
       OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id OR NEW.facility_id IS DISTINCT FROM OLD.facility_id
       OR NEW.approved_by IS DISTINCT FROM OLD.approved_by OR NEW.granted_by IS DISTINCT FROM OLD.granted_by
       OR NEW.source IS DISTINCT FROM OLD.source THEN
      RAISE EXCEPTION 'memberships: only revocation and expiry may change' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
  END IF;
  IF NEW.role = 'facility_staff' THEN
    IF NEW.source = 'bootstrap' THEN
      RAISE EXCEPTION 'memberships: bootstrap confers tenant_admin only' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
  END IF;
  IF NEW.source = 'bootstrap' THEN
    IF NEW.role <> 'tenant_admin' OR EXISTS (
         SELECT 1 FROM memberships m WHERE m.tenant_id = NEW.tenant_id AND m.role = 'tenant_admin') THEN
      RAISE EXCEPTION 'memberships: tenant already bootstrapped' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
  END IF;
  IF NEW.approved_by IS NULL OR NEW.granted_by IS NULL
     OR NEW.approved_by = NEW.granted_by OR NEW.approved_by = NEW.account_id THEN
    RAISE EXCEPTION 'memberships: a privileged role needs the approval of a second person' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.expires_at IS NULL THEN
    RAISE EXCEPTION 'memberships: a granted privileged role must expire' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER memberships_guard BEFORE INSERT OR UPDATE ON memberships
  FOR EACH ROW EXECUTE FUNCTION memberships_guard();

-- Personal data. Only src/records/ reads or writes these tables (a test checks).
CREATE TABLE families (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  account_id uuid NOT NULL UNIQUE,
  parent_first_name text,
  parent_last_name text,
  phone text,
  postal_code text,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id),
  UNIQUE (tenant_id, id)
);

CREATE TABLE children (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  family_id uuid NOT NULL,
  -- pseudonymous reference shown to facilities before a referral
  reference text NOT NULL CHECK (reference ~ '^[A-Z0-9-]{6,20}$'),
  first_name text NOT NULL,
  last_name text NOT NULL,
  birth_date date NOT NULL,
  nirec text,
  desired_entry_date date NOT NULL,
  -- Monday = 1, Tuesday = 2, Wednesday = 4, Thursday = 8, Friday = 16
  days_of_care smallint NOT NULL CHECK (days_of_care BETWEEN 1 AND 31),
  in_subsidised_care boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  deleted_at timestamptz,
  FOREIGN KEY (tenant_id, family_id) REFERENCES families (tenant_id, id),
  UNIQUE (tenant_id, reference),
  UNIQUE (tenant_id, id)
);
CREATE INDEX children_family ON children (family_id);

CREATE TABLE applications (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  child_id uuid NOT NULL,
  facility_id uuid NOT NULL REFERENCES facilities (id),
  -- declared by the parent, verified by the facility at referral
  sibling_attending boolean NOT NULL DEFAULT false,
  parent_is_staff boolean NOT NULL DEFAULT false,
  status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'withdrawn', 'placed')),
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  FOREIGN KEY (tenant_id, child_id) REFERENCES children (tenant_id, id),
  UNIQUE (child_id, facility_id)
);
CREATE INDEX applications_facility ON applications (facility_id, status);

-- Audit: append-only, hash-chained per tenant.
CREATE TABLE audit_events (
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  seq bigint NOT NULL CHECK (seq > 0),
  id uuid NOT NULL UNIQUE,
  occurred_at timestamptz NOT NULL,
  action text NOT NULL,
  outcome text NOT NULL CHECK (outcome IN ('success', 'denied', 'failure')),
  actor_account_id uuid,
  actor_roles text[] NOT NULL DEFAULT '{}',
  on_behalf_of uuid,
  target_type text,
  target_ids text[] NOT NULL DEFAULT '{}',
  -- the families whose personal data the event touched ("who consulted my file")
  family_ids uuid[] NOT NULL DEFAULT '{}',
  fields text[] NOT NULL DEFAULT '{}',
  purpose text,
  ip text,
  user_agent text,
  request_id text,
  details jsonb NOT NULL DEFAULT '{}',
  prev_hash bytea NOT NULL,
  hash bytea NOT NULL,
  PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_events_actor ON audit_events (tenant_id, actor_account_id, occurred_at);
CREATE INDEX audit_events_families ON audit_events USING gin (family_ids);

CREATE FUNCTION audit_events_refuse_change() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change();

-- The head of each tenant's chain; locked FOR UPDATE while an event is appended,
-- so events of one tenant are sequenced in commit order without gaps.
CREATE TABLE audit_heads (
  tenant_id uuid PRIMARY KEY REFERENCES tenants (id),
  seq bigint NOT NULL,
  hash bytea NOT NULL
);

CREATE TABLE mail_outbox (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  to_address text NOT NULL,
  locale text NOT NULL CHECK (locale IN ('fr', 'en')),
  template text NOT NULL,
  subject text NOT NULL,
  body_text text NOT NULL,
  created_at timestamptz NOT NULL,
  sent_at timestamptz,
  attempts integer NOT NULL DEFAULT 0,
  last_error text
);
CREATE INDEX mail_outbox_pending ON mail_outbox (tenant_id, created_at) WHERE sent_at IS NULL;

-- Row-level security on every tenant-owned table.
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['facilities', 'accounts', 'sessions', 'account_tokens', 'invitations',
                           'memberships', 'families', 'children', 'applications', 'audit_events',
                           'audit_heads', 'mail_outbox']
  LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant())', t);
  END LOOP;
END
$$;

-- What the application role may do. No DELETE anywhere: deletion is soft.
GRANT SELECT ON tenants TO guichet_app;
GRANT UPDATE (lockdown_level) ON tenants TO guichet_app;
GRANT SELECT, INSERT, UPDATE ON facilities TO guichet_app;
GRANT SELECT, INSERT ON accounts TO guichet_app;
GRANT UPDATE (email_verified_at, password_hash, locale, status) ON accounts TO guichet_app;
GRANT SELECT, INSERT ON sessions TO guichet_app;
GRANT UPDATE (last_seen_at, revoked_at) ON sessions TO guichet_app;
GRANT SELECT, INSERT ON account_tokens TO guichet_app;
GRANT UPDATE (used_at) ON account_tokens TO guichet_app;
GRANT SELECT, INSERT ON invitations TO guichet_app;
GRANT UPDATE (accepted_at, accepted_account_id, revoked_at) ON invitations TO guichet_app;
GRANT SELECT, INSERT ON memberships TO guichet_app;
GRANT UPDATE (revoked_at, expires_at) ON memberships TO guichet_app;
GRANT SELECT, INSERT, UPDATE ON families, children, applications TO guichet_app;
GRANT SELECT, INSERT ON audit_events TO guichet_app;
GRANT SELECT, INSERT, UPDATE ON audit_heads TO guichet_app;
GRANT SELECT, INSERT ON mail_outbox TO guichet_app;
GRANT UPDATE (sent_at, attempts, last_error) ON mail_outbox TO guichet_app;
GRANT EXECUTE ON FUNCTION app_tenant() TO guichet_app;
