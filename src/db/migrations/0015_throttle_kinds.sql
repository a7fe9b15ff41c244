-- Passkey sign-in options (given without an address, each stores a challenge)
-- and password-reset requests (each sends an e-mail) are counted per source
-- like sign-ups (src/identity/throttle.ts).
ALTER TABLE auth_attempts DROP CONSTRAINT auth_attempts_kind_check;
ALTER TABLE auth_attempts ADD CONSTRAINT auth_attempts_kind_check CHECK (kind IN ('signin_failure', 'signin_success', 'signup', 'passkey_options', 'recovery'));
