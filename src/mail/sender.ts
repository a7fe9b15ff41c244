import nodemailer, { type Transporter } from 'nodemailer';
import type { Deps } from '../context.ts';
import { inTenant } from '../db/tenant.ts';
import { MAX_MAIL_ATTEMPTS } from './outbox.ts';
import { PollLoop } from '../jobs/poll.ts';
import { QuietWatch } from '../jobs/quiet.ts';

/**
 * Delivers the outbox over SMTP. Each tenant's pending mail is read under that
 * tenant's row-level security; a message is marked sent only after the SMTP
 * server accepted it, and failures are retried with the attempt count kept.
 */
export class MailSender {
  private transport: Transporter;
  private loop: PollLoop | null = null;
  private running = false;
  /** Skips the pass over every tenant while no mail has been queued since the last quiet one (src/jobs/quiet.ts). */
  readonly watch: QuietWatch;

  constructor(
    private readonly deps: Deps,
    smtpUrl: string,
    opts: { watchWork?: boolean } = {},
  ) {
    this.transport = nodemailer.createTransport(smtpUrl);
    this.watch = new QuietWatch(deps.db.db, 'mail', opts.watchWork ?? true);
  }

  start(intervalMs = 1000): void {
    this.loop = new PollLoop(() => this.run(), intervalMs, this.deps.log, 'mail sender failed', this.watch);
    this.loop.start();
  }

  async stop(): Promise<void> {
    await this.loop?.stop();
    this.transport.close();
  }

  /** Sends what is pending, for every tenant or only the ones named. */
  async tick(onlyTenantIds?: readonly string[]): Promise<number> {
    return (await this.run(onlyTenantIds)).sent;
  }

  /** Quiet: nothing was pending (a message that failed is pending still, and tried again next tick). */
  private async run(onlyTenantIds?: readonly string[]): Promise<{ sent: number; quiet: boolean }> {
    if (this.running) return { sent: 0, quiet: false };
    this.running = true;
    let sent = 0;
    let quiet = true;
    try {
      for (const tenant of await this.deps.tenants.all()) {
        if (onlyTenantIds && !onlyTenantIds.includes(tenant.id)) continue;
        sent += await inTenant(this.deps.db.db, tenant.id, async (trx) => {
          const pending = await trx
            .selectFrom('mail_outbox')
            .selectAll()
            .where('sent_at', 'is', null)
            .where('attempts', '<', MAX_MAIL_ATTEMPTS)
            .orderBy('created_at')
            .limit(50)
            .forUpdate()
            .skipLocked()
            .execute();
          if (pending.length) quiet = false;
          let n = 0;
          for (const m of pending) {
            try {
              await this.transport.sendMail({
                from: this.deps.config.mailFrom,
                to: m.to_address,
                subject: m.subject,
                text: m.body_text,
                headers: { 'Content-Language': m.locale },
              });
              await trx.updateTable('mail_outbox').set({ sent_at: this.deps.clock(), attempts: m.attempts + 1 }).where('id', '=', m.id).execute();
              n++;
            } catch (err) {
              await trx
                .updateTable('mail_outbox')
                .set({ attempts: m.attempts + 1, last_error: String((err as Error).message).slice(0, 500) })
                .where('id', '=', m.id)
                .execute();
            }
          }
          return n;
        });
      }
    } catch (err) {
      quiet = false;
      this.deps.log.error({ err }, 'mail sender failed');
    } finally {
      this.running = false;
    }
    return { sent, quiet };
  }
}
