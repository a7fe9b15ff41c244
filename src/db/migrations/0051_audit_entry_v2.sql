-- The audit log's entry format 2 (src/audit/store.ts, entrySql).
--
-- A leaf is SHA-256(0x00 ‖ entry). Format 1 renders the entry as a JSON array
-- (json_build_array over eighteen columns): the output function of every
-- value, looked up anew for each, the texts escaped, the time formatted —
-- most of what full verification costs the database. Format 2 is the event's
-- columns in PostgreSQL's binary record format (record_send: a column count,
-- then each column's type OID, length and binary value), with the format's
-- name first: no escaping, no formatting, the time as an integer; about half
-- the cost to build and hash, and as exact (every value length-prefixed).
-- The standalone verifier (src/audit/verify-bundle.ts) decodes both.
--
-- Each event says which format its leaf was built from. Events already
-- written keep format 1 (their leaves are sealed and signed under it); new
-- events take format 2. The database chooses, not the writer: the
-- application role has no privilege on the column, and changing an event's
-- format afterwards changes its entry, which verification reports as a
-- changed event.
ALTER TABLE audit_events ADD COLUMN entry_format smallint NOT NULL DEFAULT 1 CHECK (entry_format IN (1, 2));
ALTER TABLE audit_events ALTER COLUMN entry_format SET DEFAULT 2;
