-- The database checks again what vouches for a passkey (migration 0049,
-- src/identity/factors/mailbox.ts), whatever code path writes: a passkey is
-- vouched for, once, only at a moment when a live session of its account had
-- proved the mailbox in the quarter of an hour before, or had last
-- authenticated, in the five minutes before, with another passkey of the
-- account that is itself vouched for. Nothing else makes a passkey count for
-- privileged actions.
CREATE FUNCTION webauthn_credentials_vouch_guard() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.vouched_at IS NOT NULL THEN
    IF NEW.vouched_at IS DISTINCT FROM OLD.vouched_at THEN
      RAISE EXCEPTION 'webauthn_credentials: a passkey is vouched for once' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
  END IF;
  IF NEW.vouched_at IS NULL THEN
    RETURN NEW;
  END IF;
  IF NOT EXISTS (
       SELECT 1 FROM sessions s
       WHERE s.tenant_id = NEW.tenant_id AND s.account_id = NEW.account_id AND s.revoked_at IS NULL
         AND ((s.mailbox_proven_at <= NEW.vouched_at AND s.mailbox_proven_at > NEW.vouched_at - interval '15 minutes')
              OR (s.authenticated_at <= NEW.vouched_at AND s.authenticated_at > NEW.vouched_at - interval '5 minutes'
                  AND EXISTS (SELECT 1 FROM webauthn_credentials w
                              WHERE w.id = s.auth_passkey_id AND w.id <> NEW.id AND w.account_id = NEW.account_id
                                AND w.vouched_at IS NOT NULL AND w.revoked_at IS NULL)))) THEN
    RAISE EXCEPTION 'webauthn_credentials: nothing vouches for this passkey (no session of the account proved the mailbox or signed with a vouched passkey)' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER webauthn_credentials_vouch_guard BEFORE INSERT OR UPDATE OF vouched_at ON webauthn_credentials
  FOR EACH ROW EXECUTE FUNCTION webauthn_credentials_vouch_guard();
