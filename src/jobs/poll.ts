import type { Logger } from 'pino';
import type { PassOutcome, QuietWatch } from './quiet.ts';

/**
 * A pass run again `intervalMs` after the previous one ends (never two at
 * once), until stopped; stop() waits for the pass under way. The detection
 * stream, the webhook sender and the mail sender each run one. With a watch,
 * a tick whose kind of work nobody has written since the last quiet pass is
 * skipped.
 */
export class PollLoop {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(
    private readonly pass: () => Promise<PassOutcome>,
    private readonly intervalMs: number,
    private readonly log: Logger,
    private readonly failure: string,
    private readonly watch: QuietWatch | null = null,
  ) {}

  private async tick(): Promise<void> {
    const done = this.watch ? await this.watch.begin() : () => {};
    if (done) done(await this.pass());
  }

  start(): void {
    const tick = () => {
      this.running = this.tick()
        .catch((err) => this.log.error({ err }, this.failure))
        .finally(() => {
          this.running = null;
          if (this.timer) this.timer = setTimeout(tick, this.intervalMs);
        });
    };
    this.timer = setTimeout(tick, 0);
    this.timer.unref?.();
  }

  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running;
  }
}
