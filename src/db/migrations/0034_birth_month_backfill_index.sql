-- Files written before 0019 have no clear birth month; the first use of a
-- tenant by a process opens each such birth date once, on the record, and
-- stores its month (src/records/legacy.ts). This partial index keeps that
-- check one index probe per tenant and process once none is left.
CREATE INDEX children_without_birth_month ON children (tenant_id, id) WHERE birth_month IS NULL AND birth_date_enc IS NOT NULL AND purged_at IS NULL;
