-- A host name serves one tenant. Guichet finds the tenant of a request by
-- its Host header; two tenants naming the same host would each get the
-- other's sign-ups and files, whichever row the directory read last. Host
-- names are kept as a request's Host is compared: lower case, a name and
-- perhaps a port, nothing else.
CREATE FUNCTION tenants_hosts_guard() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = public, pg_temp
  AS $$
DECLARE
  taken text;
BEGIN
  IF EXISTS (SELECT 1 FROM unnest(NEW.hosts) h WHERE h IS NULL OR h !~ '^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?$') THEN
    RAISE EXCEPTION 'tenants: a host name is written in lower case, a name and perhaps a port, without scheme or path'
      USING ERRCODE = '23514';
  END IF;
  IF (SELECT count(*) FROM unnest(NEW.hosts)) <> (SELECT count(DISTINCT h) FROM unnest(NEW.hosts) h) THEN
    RAISE EXCEPTION 'tenants: a host name is listed twice' USING ERRCODE = '23505';
  END IF;
  -- Two tenants created at once with the same host: one waits for the other, then sees it.
  PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('guichet.tenant.hosts'));
  SELECT h INTO taken FROM tenants t, unnest(t.hosts) h WHERE t.id <> NEW.id AND h = ANY (NEW.hosts) LIMIT 1;
  IF taken IS NOT NULL THEN
    RAISE EXCEPTION 'tenants: the host % already serves another tenant', taken USING ERRCODE = '23505';
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER tenants_hosts_guard BEFORE INSERT OR UPDATE OF hosts ON tenants
  FOR EACH ROW EXECUTE FUNCTION tenants_hosts_guard();
