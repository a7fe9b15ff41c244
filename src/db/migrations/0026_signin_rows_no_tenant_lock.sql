-- The rows a sign-in and a counted read write lose their foreign key to
-- tenants, as audit_events did in migration 0025, and for the same reason:
-- each such key looks the tenant's row up and takes a KEY SHARE lock on it,
-- one row shared by every concurrent sign-in of the tenant (and by every
-- attempt of a password-spraying run, which is when the throttle must keep up).
-- With this and 0025, `bench/identity.ts` (four pairs against the code
-- without either): 58.6–64.8 sign-ins a second, 0.50–0.52 of raw argon2id,
-- before; 60.7–67.5, 0.52–0.60, after.
--
-- sessions and known_devices: their key to accounts (tenant_id, account_id)
-- already requires the tenant, through the account's own key to tenants; the
-- key to tenants alone added a second look-up and nothing else.
ALTER TABLE sessions DROP CONSTRAINT sessions_tenant_id_fkey;
ALTER TABLE known_devices DROP CONSTRAINT known_devices_tenant_id_fkey;

-- auth_attempts (one row per sign-in attempt) and detection_hits (one per
-- counted read or signal) are counters, purged after their longest window:
-- the row-level policy's WITH CHECK (tenant_id = app_tenant()) ties each row
-- to the transaction's tenant, which the application sets only from a tenant
-- it has read (enterTenant).
ALTER TABLE auth_attempts DROP CONSTRAINT auth_attempts_tenant_id_fkey;
ALTER TABLE detection_hits DROP CONSTRAINT detection_hits_tenant_id_fkey;
