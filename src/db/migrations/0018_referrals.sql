-- Automatic referral (src/records/offers.ts): a facility's places follow its
-- permit from the moment it enters the directory, whoever inserts it (the
-- directory import, the demo, a test), so that a vacancy can always be
-- declared; and the lookups the referral and the expiry job make often.

CREATE FUNCTION facility_places_follow_permit() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO facility_places (tenant_id, facility_id, age_group, places, vacancies, updated_at)
    VALUES (NEW.tenant_id, NEW.id, 'infant', LEAST(GREATEST(NEW.places_infant, 0), 1000), 0, now()),
           (NEW.tenant_id, NEW.id, 'toddler', LEAST(GREATEST(NEW.places_total - NEW.places_infant, 0), 1000), 0, now())
    ON CONFLICT (facility_id, age_group) DO NOTHING;
  ELSIF NEW.places_total IS DISTINCT FROM OLD.places_total OR NEW.places_infant IS DISTINCT FROM OLD.places_infant THEN
    -- A smaller permit closes the vacancies it no longer holds; offers already made stand.
    UPDATE facility_places p
       SET places = x.places, vacancies = LEAST(p.vacancies, x.places), updated_at = now()
      FROM (VALUES ('infant', LEAST(GREATEST(NEW.places_infant, 0), 1000)),
                   ('toddler', LEAST(GREATEST(NEW.places_total - NEW.places_infant, 0), 1000))) AS x (age_group, places)
     WHERE p.facility_id = NEW.id AND p.age_group = x.age_group;
  END IF;
  RETURN NEW;
END $$;

CREATE TRIGGER facility_places_follow_permit
  AFTER INSERT OR UPDATE OF places_total, places_infant ON facilities
  FOR EACH ROW EXECUTE FUNCTION facility_places_follow_permit();

-- Facilities inserted between 0016 and now.
INSERT INTO facility_places (tenant_id, facility_id, age_group, places, vacancies, updated_at)
SELECT tenant_id, id, 'infant', LEAST(GREATEST(places_infant, 0), 1000), 0, now() FROM facilities
UNION ALL
SELECT tenant_id, id, 'toddler', LEAST(GREATEST(places_total - places_infant, 0), 1000), 0, now() FROM facilities
ON CONFLICT (facility_id, age_group) DO NOTHING;

-- A child's answered offers, counted against the tenant's refusals allowed.
CREATE INDEX offers_child ON offers (child_id, status);

-- Keys of the facility API (src/api): one facility each, created by its
-- director, shown once; only a hash of the secret is kept (the secret is 256
-- random bits, so a plain SHA-256 is enough). Revoked, never removed.
CREATE TABLE facility_api_keys (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  facility_id uuid NOT NULL REFERENCES facilities (id),
  name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  secret_hash bytea NOT NULL CHECK (length(secret_hash) = 32),
  created_by uuid NOT NULL,
  created_at timestamptz NOT NULL,
  last_used_at timestamptz,
  revoked_at timestamptz,
  revoked_by uuid,
  FOREIGN KEY (tenant_id, created_by) REFERENCES accounts (tenant_id, id),
  FOREIGN KEY (tenant_id, revoked_by) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX facility_api_keys_facility ON facility_api_keys (facility_id);

ALTER TABLE facility_api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE facility_api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON facility_api_keys USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
GRANT SELECT, INSERT ON facility_api_keys TO guichet_app;
GRANT UPDATE (last_used_at, revoked_at, revoked_by) ON facility_api_keys TO guichet_app;
