-- The account an OpenID Connect payload is for, as a column of its own.
--
-- Back-channel logout (src/oidc/logout.ts) and a person's connected services
-- (src/oidc/entitlements.ts) look payloads up by account. Migration 0036
-- indexed the expression payload->>'accountId' for that, but under
-- row-level security (oidc_payloads forces it) PostgreSQL may use an index
-- only through leakproof operators, and jsonb's ->> is not one: the look-up
-- read every provider session of the tenant (4 ms for 20,000 of them, on
-- each POST that ended someone's sign-in, and the minute's sweep compared
-- each with the live sessions through a cast). A stored column compared with
-- uuid equality, which is leakproof, is reached by its index under the policy.
ALTER TABLE oidc_payloads
  ADD COLUMN account_id uuid GENERATED ALWAYS AS (
    CASE WHEN payload->>'accountId' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
         THEN (payload->>'accountId')::uuid END) STORED;
DROP INDEX oidc_payloads_session_account;
CREATE INDEX oidc_payloads_account ON oidc_payloads (tenant_id, account_id, model) WHERE account_id IS NOT NULL;
