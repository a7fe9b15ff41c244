-- A security officer does not declare a batch for their own account: lifting
-- one's own volume limits is the step an insider would take before reading in
-- bulk. Another officer declares it (src/detection/rules.ts refuses it first).
-- NOT VALID: a batch declared before this rule existed stays as it was
-- recorded; every new row is checked.
ALTER TABLE detection_batches ADD CONSTRAINT detection_batches_not_self CHECK (account_id <> declared_by) NOT VALID;
