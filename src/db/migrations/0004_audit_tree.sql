-- Audit: each tenant's events sequenced into an RFC 9162 Merkle tree, whose
-- signed heads (Ed25519 checkpoints) are handed to an outside witness.
--
-- Until now each append locked the tenant's chain head (audit_heads) until
-- commit: commit order per tenant, but one commit at a time per tenant, and the
-- application role, which may update that head, could forge a consistent chain.
-- From here on:
--   * writers only INSERT, without any lock; the row is stamped with its
--     transaction id (xid8) and a number from a sequence;
--   * a sealer (src/audit/sealer.ts) later takes, in (xid, seq) order, only the
--     events whose transaction is older than every transaction still running
--     (xid < pg_snapshot_xmin(pg_current_snapshot())): no event can ever appear
--     behind that horizon, so the order never changes once sealed and no
--     committed event is skipped. If transaction A committed before B began, A
--     has the smaller xid: the order respects every "happened before" between
--     transactions; only truly concurrent ones are ordered by xid;
--   * the sealer records leaves, perfect-subtree hashes and signed heads in the
--     append-only tables below. Rewriting history now needs the signing key and
--     still disagrees with the heads the witness already holds.

-- 1. Lock-free appends.
CREATE SEQUENCE audit_events_seq;
SELECT setval('audit_events_seq', COALESCE((SELECT max(seq) FROM audit_events), 0) + 1, false);
GRANT USAGE ON SEQUENCE audit_events_seq TO guichet_app;

-- Events written before this migration all get this transaction's id: they are
-- sealed first, in their old per-tenant order (seq). The hash chain is
-- superseded by the tree: new rows carry none.
ALTER TABLE audit_events
  ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
  ALTER COLUMN seq SET DEFAULT nextval('audit_events_seq'),
  ALTER COLUMN prev_hash DROP NOT NULL,
  ALTER COLUMN hash DROP NOT NULL;

-- The database, not the writer, says which transaction wrote a row: a row
-- claiming an old transaction id would hide behind the sealer's horizon
-- forever. A column privilege, not a trigger: it costs appends nothing. (A
-- writer may still choose seq; it only orders events within its own
-- transaction.) A column added to audit_events later must be granted here too.
REVOKE INSERT ON audit_events FROM guichet_app;
GRANT INSERT (tenant_id, seq, id, occurred_at, action, outcome, actor_account_id, actor_roles, on_behalf_of, target_type,
              target_ids, family_ids, fields, purpose, ip, user_agent, request_id, details, prev_hash, hash)
  ON audit_events TO guichet_app;

-- What the sealer scans: a tenant's events after the last one sealed (with
-- the id, so that choosing the next batch can read the index alone).
CREATE INDEX audit_events_sealing ON audit_events (tenant_id, xid, seq) INCLUDE (id);

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
  -- (xid, seq) of the last event in the tree: the next seal starts after it
  last_xid xid8 NOT NULL,
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
