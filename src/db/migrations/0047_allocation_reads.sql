-- Which files each coordinated allocation round read, dry runs included, so
-- that a family's « Qui a consulté le dossier » (src/privacy/access-log.ts)
-- shows the rounds that read its children's files.
--
-- A round reads every waiting file and is audited as one event naming the
-- run, not the families (naming 500,000 families in one event would make the
-- log a copy of the table). What ties a family to a round:
--
--  - a real round: its allocation_results (one row a child it read, already
--    written, indexed by child) and, new here, its event's number on the run
--    (allocation_runs.audit_seq), filled in below for the runs stored before;
--  - a dry run stores no results: it now writes one row a file it read,
--    (tenant, file, the round's event), keyed so that a family's files are an
--    index look-up, like audit_event_families (migration 0039). Its event
--    carries the hash of the list (details.filesHash), so these rows can be
--    checked against the sealed log.
--
-- A real round writes no row here: its results already say which files it
-- read, and writing them twice would cost a round at 500,000 files 72 MB and
-- 3.7–20 s more (measured 25 November 2026 on two shared cores, load 6–11).
-- Narrow on purpose (two uuids and a bigint, no foreign key, which would be
-- checked row by row): the event is the record, these rows say where to
-- look; children's rows are never deleted (a purge clears their fields), so
-- none dangles.
CREATE TABLE allocation_reads (
  tenant_id uuid NOT NULL,
  child_id uuid NOT NULL,
  -- The dry run's allocation.run event (audit_events (tenant_id, seq)).
  seq bigint NOT NULL,
  PRIMARY KEY (tenant_id, child_id, seq)
);
ALTER TABLE allocation_reads ENABLE ROW LEVEL SECURITY;
ALTER TABLE allocation_reads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON allocation_reads USING (tenant_id = (SELECT app_tenant())) WITH CHECK (tenant_id = (SELECT app_tenant()));
-- Append-only, like the log it points into.
GRANT SELECT, INSERT ON allocation_reads TO guichet_app;
CREATE TRIGGER allocation_reads_no_update BEFORE UPDATE OR DELETE ON allocation_reads
  FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();
CREATE TRIGGER allocation_reads_no_truncate BEFORE TRUNCATE ON allocation_reads
  FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change();

-- The run's allocation.run event, written with the run in the same
-- transaction. Not covered by the run's signature (id, parameters, hashes):
-- it says where the run's event is, and the event names the run.
ALTER TABLE allocation_runs ADD COLUMN audit_seq bigint;

-- The runs stored before: their event is the one that names the run. Every
-- tenant's, which the policies hide from the owner while they are forced.
ALTER TABLE allocation_runs NO FORCE ROW LEVEL SECURITY;
ALTER TABLE audit_events NO FORCE ROW LEVEL SECURITY;
UPDATE allocation_runs r SET audit_seq = e.seq
  FROM audit_events e
 WHERE e.tenant_id = r.tenant_id AND e.action = 'allocation.run' AND e.target_ids = ARRAY[r.id::text];
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
ALTER TABLE allocation_runs FORCE ROW LEVEL SECURITY;
