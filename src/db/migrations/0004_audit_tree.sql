-- Audit: each tenant's events sequenced into an RFC 9162 Merkle tree, whose
-- signed heads (Ed25519 checkpoints) are handed to an outside witness.
--
-- Until now each append locked the tenant's chain head (audit_heads) until
-- commit: commit order per tenant, but one commit at a time per tenant, and the
-- application role, which may update that head, could forge a consistent chain.
-- From here on writers only INSERT, without waiting for one another, and a
-- sealer (src/audit/sealer.ts) puts the events into the tree afterwards:
--
--   * the first audit event of a transaction takes the tenant's append lock
--     (shared: appenders never wait for each other), then a ticket from a
--     sequence, then a second shared lock that publishes the ticket; all its
--     events carry that ticket, and a number (seq) for their order within it;
--   * the sealer reads the highest ticket handed out, then the tenant's
--     appenders still running and their tickets (pg_locks): the smallest of
--     those, or else the high mark plus one, is the cutoff. Every event below
--     it belongs to a transaction that has ended, and every event to come has
--     a larger ticket: sealing in (ticket, seq) order below the cutoff never
--     skips a committed event and never has to insert one before another;
--   * if transaction A committed before B appended, A's ticket is the smaller:
--     the order respects every "happened before"; only transactions appending
--     concurrently are ordered by when they first appended;
--   * only the tenant's own appending transactions hold its sealing back,
--     and only from their first audit event to their commit: not other
--     tenants, not long transactions that write no audit event;
--   * the sealer records leaves, perfect-subtree hashes and signed heads in the
--     append-only tables below. Rewriting history now needs the signing key,
--     and still disagrees with the heads the witness already holds.

-- 1. Appends that wait for nothing.
CREATE SEQUENCE audit_events_seq;
SELECT setval('audit_events_seq', COALESCE((SELECT max(seq) FROM audit_events), 0) + 1, false);
CREATE SEQUENCE audit_ticket_seq;
GRANT USAGE ON SEQUENCE audit_events_seq, audit_ticket_seq TO guichet_app;
-- The sealer reads the high mark (last_value).
GRANT SELECT ON SEQUENCE audit_ticket_seq TO guichet_app;

-- The slow path of the ticket default (the first event of a transaction). The
-- lock keys are those of src/audit/store.ts (sealCutoff); the ticket lock
-- holds the ticket modulo 2^31, which the sealer completes from the high mark.
CREATE FUNCTION audit_take_ticket() RETURNS bigint
  LANGUAGE plpgsql
  AS $$
DECLARE t bigint;
BEGIN
  PERFORM pg_advisory_xact_lock_shared(hashtext('guichet.audit.append'), hashtext(app_tenant()::text));
  t := nextval('audit_ticket_seq');
  PERFORM pg_advisory_xact_lock_shared(hashtext('guichet.audit.ticket'), (t % 2147483648)::int);
  PERFORM set_config('guichet.audit_ticket', t::text, true);
  RETURN t;
END
$$;
GRANT EXECUTE ON FUNCTION audit_take_ticket() TO guichet_app;

-- Events written before this migration get ticket 0: they are sealed first, in
-- their old per-tenant order (seq). The hash chain is superseded by the tree:
-- new rows carry none.
ALTER TABLE audit_events
  ADD COLUMN ticket bigint NOT NULL DEFAULT 0,
  ALTER COLUMN seq SET DEFAULT nextval('audit_events_seq'),
  ALTER COLUMN prev_hash DROP NOT NULL,
  ALTER COLUMN hash DROP NOT NULL;
-- Every event after the first of a transaction reads its ticket back from a
-- transaction-local setting: one function call per transaction, not per row.
ALTER TABLE audit_events
  ALTER COLUMN ticket SET DEFAULT COALESCE(NULLIF(current_setting('guichet.audit_ticket', true), '')::bigint, audit_take_ticket());

-- The database, not the writer, gives the ticket: the column is not the
-- application's to write (a column privilege costs appends nothing). A writer
-- may still choose seq, which only orders events within its own transaction.
-- A column added to audit_events later must be granted here too. (A writer
-- that forges the setting above can make its events sort behind the sealer:
-- they then show in `guichet audit verify` as events missing from the tree.)
REVOKE INSERT ON audit_events FROM guichet_app;
GRANT INSERT (tenant_id, seq, id, occurred_at, action, outcome, actor_account_id, actor_roles, on_behalf_of, target_type,
              target_ids, family_ids, fields, purpose, ip, user_agent, request_id, details, prev_hash, hash)
  ON audit_events TO guichet_app;

-- What the sealer scans: a tenant's events after the last one sealed (with
-- the id, so that choosing the next batch can read the index alone).
CREATE INDEX audit_events_sealing ON audit_events (tenant_id, ticket, seq) INCLUDE (id);

-- The old chain head is kept for the record; nothing may move it any more.
REVOKE UPDATE ON audit_heads FROM guichet_app;

-- 2. The tree.
CREATE FUNCTION audit_refuse_change() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Leaf i of a tenant's tree: which event, and SHA-256(0x00 ‖ entry) as sealed.
-- No foreign key to tenants here or on the subtree hashes: the row-level
-- policy already pins tenant_id to the transaction's tenant, and a per-row
-- foreign-key check would be most of the sealer's write cost.
CREATE TABLE audit_leaves (
  tenant_id uuid NOT NULL,
  leaf_index bigint NOT NULL CHECK (leaf_index >= 0),
  event_id uuid NOT NULL UNIQUE,
  leaf_hash bytea NOT NULL CHECK (length(leaf_hash) = 32),
  PRIMARY KEY (tenant_id, leaf_index)
);

-- Hashes of the perfect subtrees of 16, 256, 4096… leaves (levels 4, 8, 12…):
-- any subtree hash is at most 8 stored hashes folded, so a proof in a tree of
-- a million leaves reads about 150 small rows, while the table holds one row
-- per 15 leaves.
CREATE TABLE audit_tree_nodes (
  tenant_id uuid NOT NULL,
  level smallint NOT NULL CHECK (level > 0 AND level % 4 = 0 AND level < 64),
  node_index bigint NOT NULL CHECK (node_index >= 0),
  hash bytea NOT NULL CHECK (length(hash) = 32),
  PRIMARY KEY (tenant_id, level, node_index)
);

-- Signed tree heads: the checkpoint as signed (c2sp.org/tlog-checkpoint, an
-- Ed25519 signed note) and its parts, for queries.
CREATE TABLE audit_tree_heads (
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  tree_size bigint NOT NULL CHECK (tree_size > 0),
  root_hash bytea NOT NULL CHECK (length(root_hash) = 32),
  signed_at timestamptz NOT NULL,
  -- hex of the signed note's 4-byte key ID; the trusted key is never read from here
  key_id text NOT NULL,
  checkpoint text NOT NULL,
  -- (ticket, seq) of the last event in the tree: the next seal starts after it
  last_ticket bigint NOT NULL,
  last_seq bigint NOT NULL,
  PRIMARY KEY (tenant_id, tree_size)
);

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['audit_leaves', 'audit_tree_nodes', 'audit_tree_heads']
  LOOP
    EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()', t || '_no_update', t);
    EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()', t || '_no_truncate', t);
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant())', t);
    EXECUTE format('GRANT SELECT, INSERT ON %I TO guichet_app', t);
  END LOOP;
END
$$;
