-- Background work that looks at every tenant only when there may be something
-- to do (src/jobs/quiet.ts).
--
-- The sealer, the detection stream, the webhook sender and the mail sender
-- each opened a transaction in every tenant several times a second to find,
-- almost always, nothing: with thirty tenants and nothing happening, a tenth
-- of two cores. Row-level security (forced on the tables' owner too) keeps
-- any one query from looking at every tenant's rows at once, and it should.
-- What may be seen across tenants is that *something* was written, and
-- whether a transaction that wrote it is still running: neither names a
-- tenant, a person or a row.
--
-- A writer of work, in its own transaction, takes a shared advisory lock on
-- the kind of work, then moves that kind's sequence on (sequences are not
-- transactional: the move is seen at once). A poller reads the sequence,
-- then whether anyone holds the lock (work_signal_read, in that order). If
-- the sequence has not moved since a pass that found nothing to do and saw
-- no writer running, nothing has been committed since that pass could not
-- see: a writer that moved it earlier either had ended before the lock was
-- looked at, and so before the pass read, or held the lock then, and the
-- pass was not counted as quiet. The audit log already works so for the
-- sealer: each appending transaction holds the shared append lock from
-- before it takes its ticket until it ends (migration 0004).
CREATE SEQUENCE work_mail_seq;
CREATE SEQUENCE work_webhook_seq;
CREATE SEQUENCE work_sealed_seq;
GRANT USAGE, SELECT ON SEQUENCE work_mail_seq, work_webhook_seq, work_sealed_seq TO guichet_app;

CREATE FUNCTION work_signal() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = public, pg_temp
  AS $$
BEGIN
  -- The lock first: from the moment the sequence moves, a poller either sees it moved or sees this transaction running.
  PERFORM pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('guichet.work'), pg_catalog.hashtext(TG_ARGV[0]));
  PERFORM pg_catalog.nextval(('work_' || TG_ARGV[0] || '_seq')::regclass);
  RETURN NULL;
END
$$;

CREATE TRIGGER mail_outbox_work AFTER INSERT ON mail_outbox
  FOR EACH STATEMENT EXECUTE FUNCTION work_signal('mail');
CREATE TRIGGER detection_webhook_deliveries_work AFTER INSERT ON detection_webhook_deliveries
  FOR EACH STATEMENT EXECUTE FUNCTION work_signal('webhook');
-- The detection stream follows the tree's leaves, which a seal writes with its head.
CREATE TRIGGER audit_tree_heads_work AFTER INSERT ON audit_tree_heads
  FOR EACH STATEMENT EXECUTE FUNCTION work_signal('sealed');

-- A kind's mark, then whether a writer of it is still running: two reads, in
-- that order, which one statement would not promise. 'audit' is the audit
-- log's ticket sequence and append lock, any tenant's.
CREATE FUNCTION work_signal_read(kind text, OUT mark bigint, OUT in_flight boolean)
  LANGUAGE plpgsql
  SET search_path = public, pg_temp
  AS $$
DECLARE
  seq regclass;
  cls integer;
  key integer;
BEGIN
  IF kind = 'audit' THEN
    seq := 'audit_ticket_seq'::regclass;
    cls := pg_catalog.hashtext('guichet.audit.append');
    key := NULL;
  ELSIF kind IN ('mail', 'webhook', 'sealed') THEN
    seq := ('work_' || kind || '_seq')::regclass;
    cls := pg_catalog.hashtext('guichet.work');
    key := pg_catalog.hashtext(kind);
  ELSE
    RAISE EXCEPTION 'unknown kind of work: %', kind USING ERRCODE = 'invalid_parameter_value';
  END IF;
  EXECUTE pg_catalog.format('SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM %s', seq) INTO mark;
  SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_locks l
     WHERE l.locktype = 'advisory' AND l.objsubid = 2
       AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
       AND l.classid = cls::oid AND (key IS NULL OR l.objid = key::oid))
    INTO in_flight;
END
$$;
GRANT EXECUTE ON FUNCTION work_signal_read(text) TO guichet_app;
