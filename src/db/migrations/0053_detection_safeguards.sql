-- Detection: a change to Guichet's own safeguards is a signal of its own.
-- Weakening detection (a rule, the working hours, the webhook, a declared
-- batch) or what relying services are given (a client registered, approved,
-- changed or given a new secret; an access right handed out) is what an
-- intruder holding one privileged session would do first, without a second
-- person: every officer is alerted at once. The rule cannot be switched off.

ALTER TABLE detection_rules DROP CONSTRAINT IF EXISTS detection_rules_signal_check;
ALTER TABLE detection_rules ADD CONSTRAINT detection_rules_signal_check
  CHECK (signal IN ('files_read', 'privilege', 'deletion', 'new_device', 'off_hours', 'export', 'export_rows', 'name_search', 'break_glass', 'new_network', 'client_tokens', 'client_claims', 'safeguard'));
