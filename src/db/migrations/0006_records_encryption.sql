-- Personal data encrypted at rest; NIREC as a blind index; history; soft
-- deletion with a second person to restore; crypto-shredding.
-- The keys are not here: see src/crypto/README.md.
--
-- ENCRYPTED (AES-256-GCM under the family's data key; the associated data
-- names tenant, table, column, row id and key version, so a ciphertext moved
-- to another row or column does not decrypt):
--   children.first_name, last_name, birth_date, nirec   → *_enc
--   families.parent_first_name, parent_last_name, phone, postal_code → *_enc
--   child_file_versions.snapshot                          → snapshot_enc
-- NIREC is never stored in clear: nirec_index is HMAC-SHA-256 under the
-- tenant's index key, for duplicate detection and look-up by an authorised agent.
--
-- IN CLEAR, because SQL orders, counts, filters or joins on them, and none
-- names or identifies a person by itself:
--   children.reference          pseudonymous; what facilities see; the ranking's last tie-break
--   children.desired_entry_date seniority: the ORDER BY over every candidate of a facility
--   children.days_of_care, in_subsidised_care, applications.*   the category's inputs
--   ids, family_id, families.account_id (ownership checks), timestamps.
-- The age group staff see needs the birth date: the gateway decrypts it for
-- the rows of the page shown only (ranking never reads it).
--
-- Rows written before this migration keep their values in the legacy_*
-- columns until the application encrypts them (src/records/legacy.ts, on the
-- first use of each tenant) and empties them. The NOT VALID constraints hold
-- every new or changed row to the encrypted form without checking the old
-- ones; a later migration validates them and drops the legacy columns.

ALTER TABLE children RENAME COLUMN first_name TO legacy_first_name;
ALTER TABLE children RENAME COLUMN last_name TO legacy_last_name;
ALTER TABLE children RENAME COLUMN birth_date TO legacy_birth_date;
ALTER TABLE children RENAME COLUMN nirec TO legacy_nirec;
ALTER TABLE children
  ALTER COLUMN legacy_first_name DROP NOT NULL,
  ALTER COLUMN legacy_last_name DROP NOT NULL,
  ALTER COLUMN legacy_birth_date DROP NOT NULL;
ALTER TABLE children
  ADD COLUMN first_name_enc bytea,
  ADD COLUMN last_name_enc bytea,
  ADD COLUMN birth_date_enc bytea,
  ADD COLUMN nirec_enc bytea,
  ADD COLUMN nirec_index bytea CHECK (octet_length(nirec_index) = 32),
  ADD COLUMN deleted_by uuid,
  ADD COLUMN purged_at timestamptz;
ALTER TABLE children ADD CONSTRAINT children_deleted_by_account
  FOREIGN KEY (tenant_id, deleted_by) REFERENCES accounts (tenant_id, id);
ALTER TABLE children ADD CONSTRAINT children_personal_data_encrypted CHECK (
  legacy_first_name IS NULL AND legacy_last_name IS NULL AND legacy_birth_date IS NULL AND legacy_nirec IS NULL
  AND CASE WHEN purged_at IS NULL
    THEN first_name_enc IS NOT NULL AND last_name_enc IS NOT NULL AND birth_date_enc IS NOT NULL AND nirec_enc IS NOT NULL
    -- a purged file keeps no ciphertext and no index, and was deleted first
    ELSE first_name_enc IS NULL AND last_name_enc IS NULL AND birth_date_enc IS NULL AND nirec_enc IS NULL
         AND nirec_index IS NULL AND deleted_at IS NOT NULL
  END
) NOT VALID;
-- One live file per child and tenant; a deleted one does not block a new registration.
CREATE UNIQUE INDEX children_nirec_live ON children (tenant_id, nirec_index) WHERE nirec_index IS NOT NULL AND deleted_at IS NULL;
-- Look-up by an authorised agent also finds deleted (restorable) files.
CREATE INDEX children_nirec_lookup ON children (tenant_id, nirec_index) WHERE nirec_index IS NOT NULL;
-- What the purge walks: deleted, not yet purged.
CREATE INDEX children_deleted ON children (tenant_id, deleted_at) WHERE deleted_at IS NOT NULL AND purged_at IS NULL;
-- What legacy encryption walks: rows not yet encrypted.
CREATE INDEX children_unencrypted ON children (tenant_id) WHERE first_name_enc IS NULL AND purged_at IS NULL;

ALTER TABLE families RENAME COLUMN parent_first_name TO legacy_parent_first_name;
ALTER TABLE families RENAME COLUMN parent_last_name TO legacy_parent_last_name;
ALTER TABLE families RENAME COLUMN phone TO legacy_phone;
ALTER TABLE families RENAME COLUMN postal_code TO legacy_postal_code;
ALTER TABLE families
  ADD COLUMN parent_first_name_enc bytea,
  ADD COLUMN parent_last_name_enc bytea,
  ADD COLUMN phone_enc bytea,
  ADD COLUMN postal_code_enc bytea,
  -- the version of the family's data key its rows are encrypted with
  ADD COLUMN key_version integer NOT NULL DEFAULT 1 CHECK (key_version > 0),
  -- a purge committed here whose keys up to this version are still to be destroyed in the keyring
  ADD COLUMN key_destroy_pending integer CHECK (key_destroy_pending > 0),
  ADD COLUMN purged_at timestamptz;
ALTER TABLE families ADD CONSTRAINT families_personal_data_encrypted CHECK (
  legacy_parent_first_name IS NULL AND legacy_parent_last_name IS NULL AND legacy_phone IS NULL AND legacy_postal_code IS NULL
  AND CASE WHEN purged_at IS NULL
    THEN parent_first_name_enc IS NOT NULL AND parent_last_name_enc IS NOT NULL AND phone_enc IS NOT NULL AND postal_code_enc IS NOT NULL
    ELSE parent_first_name_enc IS NULL AND parent_last_name_enc IS NULL AND phone_enc IS NULL AND postal_code_enc IS NULL
  END
) NOT VALID;
CREATE INDEX families_unencrypted ON families (tenant_id) WHERE parent_first_name_enc IS NULL AND purged_at IS NULL;
CREATE INDEX families_key_destroy_pending ON families (tenant_id) WHERE key_destroy_pending IS NOT NULL;

-- History: every change to a child file is a version, the whole file as it
-- became, encrypted under the family's key like the file itself. Only the
-- ciphertext may change afterwards (re-encryption when the family is
-- re-keyed, emptied when it is purged); nothing may be deleted.
CREATE TABLE child_file_versions (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  child_id uuid NOT NULL,
  family_id uuid NOT NULL,
  version integer NOT NULL CHECK (version > 0),
  change text NOT NULL CHECK (change IN ('create', 'update', 'delete', 'restore', 'legacy')),
  changed_fields text[] NOT NULL DEFAULT '{}',
  actor_account_id uuid,
  created_at timestamptz NOT NULL,
  snapshot_enc bytea,
  purged_at timestamptz,
  CHECK ((snapshot_enc IS NULL) = (purged_at IS NOT NULL)),
  UNIQUE (child_id, version),
  FOREIGN KEY (tenant_id, child_id) REFERENCES children (tenant_id, id),
  FOREIGN KEY (tenant_id, family_id) REFERENCES families (tenant_id, id)
);
CREATE INDEX child_file_versions_family ON child_file_versions (family_id);

CREATE FUNCTION child_file_versions_guard() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF NEW.id IS DISTINCT FROM OLD.id OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id OR NEW.child_id IS DISTINCT FROM OLD.child_id
     OR NEW.family_id IS DISTINCT FROM OLD.family_id OR NEW.version IS DISTINCT FROM OLD.version OR NEW.change IS DISTINCT FROM OLD.change
     OR NEW.changed_fields IS DISTINCT FROM OLD.changed_fields OR NEW.actor_account_id IS DISTINCT FROM OLD.actor_account_id
     OR NEW.created_at IS DISTINCT FROM OLD.created_at THEN
    RAISE EXCEPTION 'child_file_versions: history is not rewritten (only re-encrypted or purged)' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF OLD.purged_at IS NOT NULL AND (NEW.purged_at IS DISTINCT FROM OLD.purged_at OR NEW.snapshot_enc IS NOT NULL) THEN
    RAISE EXCEPTION 'child_file_versions: a purge is final' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER child_file_versions_guard BEFORE UPDATE ON child_file_versions
  FOR EACH ROW EXECUTE FUNCTION child_file_versions_guard();

-- Restoring a deleted file takes two people: one asks, a current
-- administrator who is not the same person approves. Enforced here as well
-- as in the gateway, so that no path can skip it.
CREATE TABLE child_file_restore_requests (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  child_id uuid NOT NULL,
  requested_by uuid NOT NULL,
  requested_at timestamptz NOT NULL,
  decided_by uuid,
  decided_at timestamptz,
  decision text CHECK (decision IN ('approved', 'rejected')),
  CHECK ((decided_by IS NULL) = (decided_at IS NULL) AND (decided_at IS NULL) = (decision IS NULL)),
  CHECK (decided_by IS NULL OR decided_by <> requested_by),
  FOREIGN KEY (tenant_id, child_id) REFERENCES children (tenant_id, id),
  FOREIGN KEY (tenant_id, requested_by) REFERENCES accounts (tenant_id, id),
  FOREIGN KEY (tenant_id, decided_by) REFERENCES accounts (tenant_id, id)
);
CREATE UNIQUE INDEX child_file_restore_requests_open ON child_file_restore_requests (child_id) WHERE decided_at IS NULL;

CREATE FUNCTION child_file_restore_requests_guard() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF NEW.id IS DISTINCT FROM OLD.id OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id OR NEW.child_id IS DISTINCT FROM OLD.child_id
       OR NEW.requested_by IS DISTINCT FROM OLD.requested_by OR NEW.requested_at IS DISTINCT FROM OLD.requested_at THEN
      RAISE EXCEPTION 'child_file_restore_requests: only the decision may be written' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.decided_at IS NOT NULL THEN
      RAISE EXCEPTION 'child_file_restore_requests: a decision is final' USING ERRCODE = 'insufficient_privilege';
    END IF;
  ELSIF NEW.decided_at IS NOT NULL THEN
    RAISE EXCEPTION 'child_file_restore_requests: a request is decided by a second person, not filed decided' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.decision = 'approved' AND NOT EXISTS (
       SELECT 1 FROM memberships m
       WHERE m.tenant_id = NEW.tenant_id AND m.account_id = NEW.decided_by AND m.role = 'tenant_admin'
         AND m.revoked_at IS NULL AND (m.expires_at IS NULL OR m.expires_at > now())) THEN
    RAISE EXCEPTION 'child_file_restore_requests: the approver holds no current administrator role' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER child_file_restore_requests_guard BEFORE INSERT OR UPDATE ON child_file_restore_requests
  FOR EACH ROW EXECUTE FUNCTION child_file_restore_requests_guard();

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['child_file_versions', 'child_file_restore_requests']
  LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant())', t);
  END LOOP;
END
$$;

-- No DELETE: history is kept, deletion is soft, a purge empties ciphertexts.
GRANT SELECT, INSERT ON child_file_versions TO guichet_app;
GRANT UPDATE (snapshot_enc, purged_at) ON child_file_versions TO guichet_app;
GRANT SELECT, INSERT ON child_file_restore_requests TO guichet_app;
GRANT UPDATE (decided_by, decided_at, decision) ON child_file_restore_requests TO guichet_app;
