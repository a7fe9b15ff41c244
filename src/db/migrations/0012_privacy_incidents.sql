-- Issue 8: the register of confidentiality incidents (Quebec, Règlement sur
-- les incidents de confidentialité, s. 11: what it must hold; kept five years
-- from the date the organisation learned of the incident).

CREATE TABLE incidents (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  -- a number per tenant, for people to cite ("incident 2026-3")
  number integer NOT NULL,
  title text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
  -- (1) the personal information concerned, or why it cannot be described
  data_concerned text NOT NULL CHECK (length(data_concerned) BETWEEN 1 AND 4000),
  -- (2) the circumstances
  circumstances text NOT NULL CHECK (length(circumstances) BETWEEN 1 AND 4000),
  -- (3) when it happened (a date or a period, possibly approximate)
  occurred_from date,
  occurred_to date,
  -- (4) when the organisation learned of it
  discovered_on date NOT NULL,
  -- (5) how many persons (null: not yet known)
  persons_count integer CHECK (persons_count IS NULL OR persons_count >= 0),
  -- (6) the assessment of the risk of serious injury
  risk_level text NOT NULL DEFAULT 'undetermined' CHECK (risk_level IN ('undetermined', 'not_serious', 'serious')),
  risk_assessment text NOT NULL DEFAULT '' CHECK (length(risk_assessment) <= 4000),
  -- (7) notices, when the risk is serious
  commission_notified_on date,
  persons_notified_on date,
  public_notice text NOT NULL DEFAULT '' CHECK (length(public_notice) <= 2000),
  -- (8) the measures taken
  measures text NOT NULL DEFAULT '' CHECK (length(measures) <= 4000),
  -- what it is linked to: audit events (ids), and alerts of the detection console (free text until it lands)
  audit_event_ids uuid[] NOT NULL DEFAULT '{}',
  alert_ids text,
  created_by uuid,
  created_at timestamptz NOT NULL,
  updated_by uuid,
  updated_at timestamptz NOT NULL,
  -- five years after the organisation learned of it (s. 11, last paragraph)
  retain_until date NOT NULL,
  CHECK (occurred_to IS NULL OR occurred_from IS NULL OR occurred_from <= occurred_to),
  CHECK (retain_until >= discovered_on + interval '5 years'),
  UNIQUE (tenant_id, number),
  FOREIGN KEY (tenant_id, created_by) REFERENCES accounts (tenant_id, id),
  FOREIGN KEY (tenant_id, updated_by) REFERENCES accounts (tenant_id, id)
);
CREATE INDEX incidents_by_date ON incidents (tenant_id, discovered_on DESC);

ALTER TABLE incidents ENABLE ROW LEVEL SECURITY;
ALTER TABLE incidents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON incidents USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());

-- Entries are amended, never removed: no DELETE for the application, and the
-- retention date can only move later.
GRANT SELECT, INSERT ON incidents TO guichet_app;
GRANT UPDATE (title, data_concerned, circumstances, occurred_from, occurred_to, discovered_on, persons_count, risk_level, risk_assessment,
  commission_notified_on, persons_notified_on, public_notice, measures, audit_event_ids, alert_ids, updated_by, updated_at, retain_until)
  ON incidents TO guichet_app;

CREATE FUNCTION incidents_guard() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'incidents: the register keeps every entry' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.retain_until < OLD.retain_until THEN
    RAISE EXCEPTION 'incidents: the retention date can only move later' USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER incidents_guard BEFORE UPDATE OR DELETE ON incidents
  FOR EACH ROW EXECUTE FUNCTION incidents_guard();

-- Retention of accounts: a parent's account with no child file
-- left is closed after the tenant's rules.retention.accountWithoutChildMonths.
-- Closing empties what identifies the person (the address becomes a
-- placeholder, the password goes); the row stays for the audit log's
-- references. Nothing reopens a purged account.
ALTER TABLE accounts ADD COLUMN purged_at timestamptz;
GRANT UPDATE (email, purged_at) ON accounts TO guichet_app;
ALTER TABLE accounts ADD CONSTRAINT accounts_purged_closed CHECK (purged_at IS NULL OR (status = 'suspended' AND password_hash IS NULL AND email LIKE 'purged-%@purged.invalid'));
