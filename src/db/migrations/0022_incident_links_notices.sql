-- Incidents linked to what they rest on, and breach notices sent from them.
--
-- An entry links to the tenant's detection alerts by id (checked, not free
-- text), beside the audit events it already names.
ALTER TABLE incidents ADD COLUMN linked_alert_ids uuid[] NOT NULL DEFAULT '{}';
GRANT UPDATE (linked_alert_ids) ON incidents TO guichet_app;

-- One notice per family per incident: sending the notices twice queues
-- nothing new (the primary key settles two officers at the same instant).
-- The address and the body are in the mail outbox; this says which family
-- was told, when, in which language, from which breach report.
CREATE TABLE incident_notices (
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  incident_id uuid NOT NULL REFERENCES incidents (id),
  family_id uuid NOT NULL,
  locale text NOT NULL CHECK (locale IN ('fr', 'en')),
  report_event_id uuid NOT NULL,
  queued_by uuid NOT NULL,
  queued_at timestamptz NOT NULL,
  PRIMARY KEY (incident_id, family_id),
  FOREIGN KEY (tenant_id, queued_by) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX incident_notices_tenant ON incident_notices (tenant_id, incident_id);

ALTER TABLE incident_notices ENABLE ROW LEVEL SECURITY;
ALTER TABLE incident_notices FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON incident_notices USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
-- A notice sent stays sent: kept with the register's entry.
GRANT SELECT, INSERT ON incident_notices TO guichet_app;

-- OpenID Connect clients edited after registration. Widening a client's
-- scopes to personal claims waits, like a new personal client, for a second
-- administrator: the requested scopes sit apart until approved (the client
-- keeps working with the scopes it had). A rotated secret replaces the old
-- one at once.
ALTER TABLE oidc_clients ADD COLUMN pending_scopes text[];
ALTER TABLE oidc_clients ADD COLUMN pending_requested_by uuid;
ALTER TABLE oidc_clients ADD COLUMN pending_requested_at timestamptz;
ALTER TABLE oidc_clients ADD COLUMN secret_rotated_at timestamptz;
ALTER TABLE oidc_clients ADD CONSTRAINT oidc_clients_pending_by FOREIGN KEY (tenant_id, pending_requested_by) REFERENCES accounts (tenant_id, id);
ALTER TABLE oidc_clients ADD CONSTRAINT oidc_clients_pending_whole CHECK ((pending_scopes IS NULL) = (pending_requested_by IS NULL) AND (pending_scopes IS NULL) = (pending_requested_at IS NULL));
GRANT UPDATE (scopes, personal, secret_wrapped, pending_scopes, pending_requested_by, pending_requested_at, secret_rotated_at) ON oidc_clients TO guichet_app;
-- On approval of widened scopes, the requester of the scopes in force becomes
-- the one who asked for the widening (so that the approver is checked
-- against them).
GRANT UPDATE (requested_by, requested_at) ON oidc_clients TO guichet_app;

-- The database's own check: an active client gains a personal scope only
-- with a fresh approval by someone other than whoever asked for it.
CREATE OR REPLACE FUNCTION oidc_clients_guard() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF NEW.status = 'active' AND NEW.personal AND OLD.status <> 'active' THEN
    IF OLD.status <> 'pending' OR NEW.approved_by IS NULL OR NEW.approved_by = NEW.requested_by THEN
      RAISE EXCEPTION 'oidc_clients: a client receiving personal claims needs a second administrator' USING ERRCODE = 'insufficient_privilege';
    END IF;
  END IF;
  IF OLD.status = 'active' AND NEW.status = 'active'
     AND EXISTS (SELECT 1 FROM unnest(NEW.scopes) s WHERE s NOT IN ('openid', 'offline_access') AND NOT (s = ANY (OLD.scopes))) THEN
    IF NEW.approved_by IS NULL OR NEW.approved_by = NEW.requested_by OR NEW.approved_at IS NOT DISTINCT FROM OLD.approved_at THEN
      RAISE EXCEPTION 'oidc_clients: widening a client to personal claims needs a second administrator' USING ERRCODE = 'insufficient_privilege';
    END IF;
  END IF;
  IF OLD.status IN ('refused') AND NEW.status <> OLD.status THEN
    RAISE EXCEPTION 'oidc_clients: a refused request stays refused' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;

-- Detection rules that watch an OpenID Connect client rather than a person:
-- tokens issued to it, claims released to it, counted per client over the
-- rule's sliding window (src/detection/clients.ts).
ALTER TABLE detection_rules DROP CONSTRAINT detection_rules_signal_check;
ALTER TABLE detection_rules ADD CONSTRAINT detection_rules_signal_check
  CHECK (signal IN ('files_read', 'privilege', 'deletion', 'new_device', 'off_hours', 'client_tokens', 'client_claims'));

CREATE TABLE detection_client_hits (
  id bigserial PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  client_id text NOT NULL,
  signal text NOT NULL CHECK (signal IN ('client_tokens', 'client_claims')),
  at timestamptz NOT NULL
);
CREATE INDEX detection_client_hits_window ON detection_client_hits (tenant_id, client_id, signal, at);
ALTER TABLE detection_client_hits ENABLE ROW LEVEL SECURITY;
ALTER TABLE detection_client_hits FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON detection_client_hits USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
GRANT SELECT, INSERT, DELETE ON detection_client_hits TO guichet_app;
GRANT USAGE ON SEQUENCE detection_client_hits_id_seq TO guichet_app;
