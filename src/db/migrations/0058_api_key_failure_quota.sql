-- Refused uses of a facility API key are counted per source, so that the
-- audit log records the first ones of a burst and not every junk header a
-- script sends (the log can never be emptied of them).
ALTER TABLE auth_attempts DROP CONSTRAINT IF EXISTS auth_attempts_kind_check;
ALTER TABLE auth_attempts ADD CONSTRAINT auth_attempts_kind_check CHECK (kind IN ('signin_failure', 'signin_success', 'signup', 'passkey_options', 'recovery', 'api_key_failure'));
