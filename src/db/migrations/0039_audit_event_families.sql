-- « Qui a consulté le dossier » (src/privacy/access-log.ts): the events that
-- name a family, by an index that row-level security lets PostgreSQL use.
--
-- Under a policy PostgreSQL uses an index only through leakproof operators,
-- and array overlap (family_ids && …) is not one: the GIN index on family_ids
-- is out of reach, and each parent's page read every event of the tenant
-- (1.5 s a look-up at 3 million events). Migration 0037's function, run as
-- the tables' owner, did not escape it either: audit_events forces row-level
-- security on its owner too, so it helped only an owner that is a superuser
-- (as on the machine it was measured on). It is dropped.
--
-- Instead each event's families are also kept one row per family, keyed by
-- (tenant, family, event), filled by the database itself from every insert
-- into audit_events (whatever wrote it), and
-- append-only like the log. Looking up a family is then uuid equality, which
-- is leakproof. The log stays the record: these rows only say where to look.
DROP FUNCTION audit_family_event_seqs(uuid[], uuid);

CREATE TABLE audit_event_families (
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  family_id uuid NOT NULL,
  seq bigint NOT NULL,
  PRIMARY KEY (tenant_id, family_id, seq)
);
ALTER TABLE audit_event_families ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_event_families FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_event_families USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
GRANT SELECT, INSERT ON audit_event_families TO guichet_app;

CREATE FUNCTION audit_event_families_add() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = public, pg_temp
  AS $$
BEGIN
  INSERT INTO audit_event_families (tenant_id, family_id, seq)
  SELECT DISTINCT n.tenant_id, f, n.seq FROM new_events n CROSS JOIN LATERAL unnest(n.family_ids) AS f;
  RETURN NULL;
END
$$;
CREATE TRIGGER audit_event_families_add AFTER INSERT ON audit_events
  REFERENCING NEW TABLE AS new_events
  FOR EACH STATEMENT EXECUTE FUNCTION audit_event_families_add();
CREATE TRIGGER audit_event_families_no_update BEFORE UPDATE OR DELETE ON audit_event_families
  FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();
CREATE TRIGGER audit_event_families_no_truncate BEFORE TRUNCATE ON audit_event_families
  FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change();

-- The GIN index on family_ids served only that look-up, which could not use it: each append paid for it.
DROP INDEX audit_events_families;

-- The events written before: every tenant's, which the policies hide from the owner while they are forced.
ALTER TABLE audit_events NO FORCE ROW LEVEL SECURITY;
ALTER TABLE audit_event_families NO FORCE ROW LEVEL SECURITY;
INSERT INTO audit_event_families (tenant_id, family_id, seq)
SELECT DISTINCT e.tenant_id, f, e.seq FROM audit_events e CROSS JOIN LATERAL unnest(e.family_ids) AS f;
ALTER TABLE audit_event_families FORCE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
