-- Passkey sign-in options are given without an address, and each stores a
-- challenge: they are counted per source like sign-ups (src/identity/throttle.ts).
ALTER TABLE auth_attempts DROP CONSTRAINT auth_attempts_kind_check;
ALTER TABLE auth_attempts ADD CONSTRAINT auth_attempts_kind_check CHECK (kind IN ('signin_failure', 'signin_success', 'signup', 'passkey_options'));
