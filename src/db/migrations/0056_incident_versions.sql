-- The register of incidents is amended, never rewritten: each amendment
-- keeps what the entry said before it, in a table nobody may change. An
-- officer who lowers a risk, clears a notice date or rewrites the
-- circumstances leaves the earlier text in the register's history, for the
-- Commission and for the next officer. Links to audit events and alerts are
-- added, never removed, and a notice date once written stays written.

CREATE TABLE incident_versions (
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  incident_id uuid NOT NULL REFERENCES incidents (id),
  -- 1 is the entry as first written; each amendment keeps the one it replaced
  version integer NOT NULL CHECK (version >= 1),
  content jsonb NOT NULL,
  written_by uuid,
  written_at timestamptz NOT NULL,
  replaced_by uuid,
  replaced_at timestamptz NOT NULL,
  PRIMARY KEY (incident_id, version)
);
CREATE INDEX incident_versions_tenant ON incident_versions (tenant_id, incident_id);

ALTER TABLE incident_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE incident_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON incident_versions USING (tenant_id = (SELECT app_tenant())) WITH CHECK (tenant_id = (SELECT app_tenant()));
GRANT SELECT, INSERT ON incident_versions TO guichet_app;

CREATE FUNCTION incident_versions_refuse_change() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = public, pg_temp
  AS $$
BEGIN
  RAISE EXCEPTION 'incident_versions is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER incident_versions_no_change BEFORE UPDATE OR DELETE ON incident_versions
  FOR EACH ROW EXECUTE FUNCTION incident_versions_refuse_change();
CREATE TRIGGER incident_versions_no_truncate BEFORE TRUNCATE ON incident_versions
  FOR EACH STATEMENT EXECUTE FUNCTION incident_versions_refuse_change();

-- Every amendment, by whatever path: the entry as it was goes to its history first.
CREATE OR REPLACE FUNCTION incidents_guard() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = public, pg_temp
  AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'incidents: the register keeps every entry' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.retain_until < OLD.retain_until THEN
    RAISE EXCEPTION 'incidents: the retention date can only move later' USING ERRCODE = 'check_violation';
  END IF;
  IF NOT (NEW.audit_event_ids @> OLD.audit_event_ids) OR NOT (NEW.linked_alert_ids @> OLD.linked_alert_ids) THEN
    RAISE EXCEPTION 'incidents: a link to an audit event or an alert is never removed' USING ERRCODE = 'check_violation';
  END IF;
  IF (OLD.commission_notified_on IS NOT NULL AND NEW.commission_notified_on IS NULL)
     OR (OLD.persons_notified_on IS NOT NULL AND NEW.persons_notified_on IS NULL) THEN
    RAISE EXCEPTION 'incidents: a notice date, once written, is not cleared' USING ERRCODE = 'check_violation';
  END IF;
  INSERT INTO incident_versions (tenant_id, incident_id, version, content, written_by, written_at, replaced_by, replaced_at)
  SELECT OLD.tenant_id, OLD.id, coalesce(max(v.version), 0) + 1,
         to_jsonb(OLD) - ARRAY['id', 'tenant_id', 'number', 'created_by', 'created_at', 'updated_by', 'updated_at', 'retain_until'],
         OLD.updated_by, OLD.updated_at, NEW.updated_by, NEW.updated_at
    FROM incident_versions v WHERE v.incident_id = OLD.id;
  RETURN NEW;
END
$$;
