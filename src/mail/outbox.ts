import type { Trx } from '../db/connection.ts';
import type { Locale } from '../web/i18n/index.ts';

/** A message is tried this many times, then given up (it stays in the outbox with its last error). */
export const MAX_MAIL_ATTEMPTS = 10;

export interface Mail {
  to: string;
  locale: Locale;
  template: 'verify_email' | 'signup_exists' | 'invitation' | 'set_password' | 'password_reset' | 'password_reset_unknown' | 'password_changed' | 'account_locked' | 'new_device' | 'factor_changed' | 'passkey_link' | 'factor_reset' | 'break_glass' | 'privilege_notice' | 'security_alert' | 'file_confirmation' | 'file_inactive' | 'assisted_code' | 'assisted_notice' | 'offer' | 'breach_notice';
  subject: string;
  body: string;
}

/**
 * Mail is written to the outbox in the same transaction as the change that
 * causes it (an account created, an invitation sent), so a message is never
 * sent for a change that rolled back, nor lost for one that committed. The
 * sender delivers it afterwards; in demo mode it stays there to be read.
 */
export async function enqueueMail(trx: Trx, tenantId: string, mail: Mail, now: Date): Promise<void> {
  await trx
    .insertInto('mail_outbox')
    .values({
      tenant_id: tenantId,
      to_address: mail.to,
      locale: mail.locale,
      template: mail.template,
      subject: mail.subject,
      body_text: mail.body,
      created_at: now,
    })
    .execute();
}
