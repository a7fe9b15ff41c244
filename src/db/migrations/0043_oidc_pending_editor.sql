-- A pending client's editor becomes its requester.
--
-- An administrator could register a client asking for personal claims, and a
-- second administrator edit it while it waited (its addresses, its scopes,
-- its name) and then approve it: the approval was checked against the first
-- administrator, who never saw that configuration, so one person alone put a
-- client receiving personal claims into service. An edit of a pending client
-- now makes its editor the requester (src/oidc/clients.ts), so that someone
-- else must approve what the editor made it; the guard refuses an edit that
-- does not, when the transaction names its actor (app.actor_id).
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
  -- A pending client is approved as it stands when approved: whoever changes
  -- what it would be becomes the one who asked for it, and may not approve it.
  IF OLD.status = 'pending' AND NEW.status = 'pending'
     AND (NEW.name IS DISTINCT FROM OLD.name OR NEW.redirect_uris IS DISTINCT FROM OLD.redirect_uris
          OR NEW.post_logout_redirect_uris IS DISTINCT FROM OLD.post_logout_redirect_uris
          OR NEW.logo_uri IS DISTINCT FROM OLD.logo_uri OR NEW.backchannel_logout_uri IS DISTINCT FROM OLD.backchannel_logout_uri
          OR NEW.scopes IS DISTINCT FROM OLD.scopes OR NEW.personal IS DISTINCT FROM OLD.personal)
     AND COALESCE(pg_catalog.current_setting('app.actor_id', true), '') <> ''
     AND NEW.requested_by::text <> pg_catalog.current_setting('app.actor_id', true) THEN
    RAISE EXCEPTION 'oidc_clients: whoever edits a pending client becomes its requester' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF OLD.status IN ('refused') AND NEW.status <> OLD.status THEN
    RAISE EXCEPTION 'oidc_clients: a refused request stays refused' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
