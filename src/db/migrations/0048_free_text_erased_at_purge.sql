-- Free text typed about a family, kept in clear, reached by the purge.
--
-- Crypto-shredding (src/records/purge.ts) destroys what the family's key
-- encrypts. Three texts people type about a family or a child were in clear
-- beside it and outlived the file: the note an agent writes when assisting a
-- parent (assisted_sessions.note), why a file was marked protected
-- (protected_files.reason), and the reason a staff member gave to open it
-- (protected_file_openings.reason, copied into the alert's details). The
-- purge now empties them in its own transaction (purge.ts says why emptying
-- rather than encrypting); what the officers need stays: that a protected
-- file was opened, by whom, when, and the alert.

-- An erased reason is NULL: the review says "erased with the file" rather than showing nothing.
ALTER TABLE protected_files ALTER COLUMN reason DROP NOT NULL;
ALTER TABLE protected_files DROP CONSTRAINT protected_files_reason_check;
ALTER TABLE protected_files ADD CONSTRAINT protected_files_reason_check CHECK (reason IS NULL OR length(reason) BETWEEN 1 AND 500);
ALTER TABLE protected_file_openings ALTER COLUMN reason DROP NOT NULL;
ALTER TABLE protected_file_openings DROP CONSTRAINT protected_file_openings_reason_check;
ALTER TABLE protected_file_openings ADD CONSTRAINT protected_file_openings_reason_check CHECK (reason IS NULL OR length(reason) BETWEEN 1 AND 500);

-- The application may erase these texts, never rewrite them: a reason given is what was given, or nothing.
CREATE FUNCTION free_text_erase_only() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF TG_TABLE_NAME = 'assisted_sessions' THEN
    IF NEW.note IS DISTINCT FROM OLD.note AND NEW.note <> '' THEN
      RAISE EXCEPTION 'assisted_sessions: a note may be erased, not rewritten' USING ERRCODE = 'insufficient_privilege';
    END IF;
  ELSIF NEW.reason IS DISTINCT FROM OLD.reason AND NEW.reason IS NOT NULL THEN
    RAISE EXCEPTION '%: a reason may be erased, not rewritten', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER protected_files_reason_erase_only BEFORE UPDATE OF reason ON protected_files
  FOR EACH ROW EXECUTE FUNCTION free_text_erase_only();
CREATE TRIGGER protected_file_openings_reason_erase_only BEFORE UPDATE OF reason ON protected_file_openings
  FOR EACH ROW EXECUTE FUNCTION free_text_erase_only();
CREATE TRIGGER assisted_sessions_note_erase_only BEFORE UPDATE OF note ON assisted_sessions
  FOR EACH ROW EXECUTE FUNCTION free_text_erase_only();

GRANT UPDATE (reason) ON protected_files, protected_file_openings TO guichet_app;
GRANT UPDATE (note) ON assisted_sessions TO guichet_app;

-- What was purged before this migration: row-level security is lifted for these statements alone (the
-- migration's owner owns the tables), and put back before anything else runs.
ALTER TABLE protected_files NO FORCE ROW LEVEL SECURITY;
ALTER TABLE protected_file_openings NO FORCE ROW LEVEL SECURITY;
ALTER TABLE assisted_sessions NO FORCE ROW LEVEL SECURITY;
ALTER TABLE detection_alerts NO FORCE ROW LEVEL SECURITY;
ALTER TABLE children NO FORCE ROW LEVEL SECURITY;
ALTER TABLE families NO FORCE ROW LEVEL SECURITY;
ALTER TABLE accounts NO FORCE ROW LEVEL SECURITY;

UPDATE protected_files p SET reason = NULL FROM children c WHERE c.id = p.child_id AND c.purged_at IS NOT NULL AND p.reason IS NOT NULL;
UPDATE protected_file_openings o SET reason = NULL FROM children c WHERE c.id = o.child_id AND c.purged_at IS NOT NULL AND o.reason IS NOT NULL;
UPDATE assisted_sessions s SET note = ''
 WHERE s.note <> ''
   AND (EXISTS (SELECT 1 FROM accounts a WHERE a.id = s.parent_account_id AND a.purged_at IS NOT NULL)
        OR EXISTS (SELECT 1 FROM families f JOIN children c ON c.family_id = f.id WHERE f.account_id = s.parent_account_id AND c.purged_at IS NOT NULL));
-- The alert no longer keeps a copy of the reason (src/detection/protected.ts): the openings it raised hold it,
-- one place for the purge to erase. The copies already made go; the openings keep theirs.
UPDATE detection_alerts SET details = details - 'reason' WHERE signal = 'protected_file' AND details ? 'reason';

ALTER TABLE protected_files FORCE ROW LEVEL SECURITY;
ALTER TABLE protected_file_openings FORCE ROW LEVEL SECURITY;
ALTER TABLE assisted_sessions FORCE ROW LEVEL SECURITY;
ALTER TABLE detection_alerts FORCE ROW LEVEL SECURITY;
ALTER TABLE children FORCE ROW LEVEL SECURITY;
ALTER TABLE families FORCE ROW LEVEL SECURITY;
ALTER TABLE accounts FORCE ROW LEVEL SECURITY;
