-- A host name serves one tenant. Guichet finds the tenant of a request by
-- its Host header; two tenants naming the same host would each get the
-- other's sign-ups and files, whichever row the directory read last. Host
-- names are kept as a request's Host is compared: lower case, a name
-- without a port (the port is not part of what a request is matched on),
-- nothing else. Hosts already written are brought to that form, and two
-- tenants already sharing one stop the migration with the host named.
CREATE FUNCTION tenants_hosts_guard() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = public, pg_temp
  AS $$
DECLARE
  taken text;
BEGIN
  IF EXISTS (SELECT 1 FROM unnest(NEW.hosts) h WHERE h IS NULL OR h !~ '^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$') THEN
    RAISE EXCEPTION 'tenants: a host name is written in lower case, without scheme, port or path'
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

DO $$
DECLARE
  shared text;
BEGIN
  SELECT h INTO shared FROM (SELECT lower(regexp_replace(h, ':[0-9]+$', '')) AS h FROM tenants, unnest(hosts) h) x GROUP BY h HAVING count(*) > 1 LIMIT 1;
  IF shared IS NOT NULL THEN
    RAISE EXCEPTION 'tenants: the host % is named by two tenants: keep it on one (UPDATE tenants SET hosts = …) and migrate again', shared;
  END IF;
END
$$;
UPDATE tenants SET hosts = ARRAY(SELECT DISTINCT lower(regexp_replace(h, ':[0-9]+$', '')) FROM unnest(hosts) h)
 WHERE hosts IS DISTINCT FROM ARRAY(SELECT lower(regexp_replace(h, ':[0-9]+$', '')) FROM unnest(hosts) h);

CREATE TRIGGER tenants_hosts_guard BEFORE INSERT OR UPDATE OF hosts ON tenants
  FOR EACH ROW EXECUTE FUNCTION tenants_hosts_guard();
