-- A passkey counts for privileged actions only once it is vouched for.
--
-- Migration 0046 made a privileged holder's *first* passkey take proof of
-- the mailbox. A passkey enrolled before its holder was granted a privileged
-- role — with a password and an app code, both relayable by a phishing
-- proxy — still passed every privileged step-up afterwards. Now a credential
-- is vouched (vouched_at) when it was enrolled, or used to re-authenticate,
-- by a session that had just proved the mailbox, or enrolled by a session
-- authenticated with a vouched passkey; the session remembers which passkey
-- it last authenticated with (auth_passkey_id), and a privileged step-up
-- asks for a vouched one (src/identity/stepup.ts).
--
-- Passkeys enrolled before this migration are not vouched: nothing recorded
-- says how they were enrolled. Their holders confirm each once, with a link
-- e-mailed to them, at their next privileged action.
ALTER TABLE webauthn_credentials ADD COLUMN vouched_at timestamptz;
GRANT UPDATE (vouched_at) ON webauthn_credentials TO guichet_app;

-- No foreign key: a credential's row may go with its account while the
-- session's row is kept as history; the lookup also matches the account.
ALTER TABLE sessions ADD COLUMN auth_passkey_id uuid;
GRANT UPDATE (auth_passkey_id) ON sessions TO guichet_app;

-- Where the person was going when they asked for the link (a path of this
-- site, validated by the application), so that following it brings them back.
ALTER TABLE passkey_enrolment_links ADD COLUMN return_to text CHECK (return_to IS NULL OR (length(return_to) <= 2048 AND return_to LIKE '/%' AND return_to NOT LIKE '//%'));
