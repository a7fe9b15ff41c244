-- A client that receives personal claims gets a new redirect address only
-- with a second administrator's approval, as it gets a new personal scope.
--
-- Otherwise one administrator, once a colleague had approved a client, could
-- add an address of their own to it (and replace its secret): authorization
-- codes, and with them the personal claims, would go where that one person
-- chose. The edit's other changes apply at once; the new addresses wait in
-- pending_redirect_uris, with the scopes in force (or the widened ones) in
-- pending_scopes, for someone other than whoever asked. Removing addresses
-- only narrows and applies at once.
ALTER TABLE oidc_clients ADD COLUMN pending_redirect_uris text[];
ALTER TABLE oidc_clients ADD CONSTRAINT oidc_clients_pending_redirects_whole CHECK (pending_redirect_uris IS NULL OR pending_scopes IS NOT NULL);
GRANT UPDATE (pending_redirect_uris) ON oidc_clients TO guichet_app;

CREATE OR REPLACE FUNCTION oidc_clients_guard() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF NEW.status = 'active' AND NEW.personal AND OLD.status <> 'active' THEN
    IF OLD.status <> 'pending' OR NEW.approved_by IS NULL OR NEW.approved_by = NEW.requested_by THEN
      RAISE EXCEPTION 'oidc_clients: a client receiving personal claims needs a second administrator' USING ERRCODE = 'insufficient_privilege';
    END IF;
  END IF;
  IF OLD.status = 'active' AND NEW.status = 'active'
     AND EXISTS (SELECT 1 FROM unnest(NEW.scopes) s WHERE s NOT IN ('openid', 'offline_access') AND NOT (s = ANY (OLD.scopes))) THEN
    IF NEW.approved_by IS NULL OR NEW.approved_by = NEW.requested_by OR NEW.approved_at IS NOT DISTINCT FROM OLD.approved_at THEN
      RAISE EXCEPTION 'oidc_clients: widening a client to personal claims needs a second administrator' USING ERRCODE = 'insufficient_privilege';
    END IF;
  END IF;
  IF OLD.status = 'active' AND NEW.status = 'active' AND NEW.personal
     AND EXISTS (SELECT 1 FROM unnest(NEW.redirect_uris) u WHERE NOT (u = ANY (OLD.redirect_uris))) THEN
    IF NEW.approved_by IS NULL OR NEW.approved_by = NEW.requested_by OR NEW.approved_at IS NOT DISTINCT FROM OLD.approved_at THEN
      RAISE EXCEPTION 'oidc_clients: a new redirect address for a client receiving personal claims needs a second administrator' USING ERRCODE = 'insufficient_privilege';
    END IF;
  END IF;
  IF OLD.status IN ('refused') AND NEW.status <> OLD.status THEN
    RAISE EXCEPTION 'oidc_clients: a refused request stays refused' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
