/**
 * A progress bar for long commands (seed, allocate). On a terminal it redraws
 * one line on stderr; otherwise (a pipe, a log file, CI) it prints a plain
 * line at each tenth and at each new phase, so logs stay readable.
 */
export interface Progress {
  /** Share done in the current phase, 0..1. */
  update(done: number, total: number): void;
  phase(name: string): void;
  done(summary?: string): void;
}

export function progress(stream: NodeJS.WriteStream = process.stderr, width = 30): Progress {
  const tty = !!stream.isTTY;
  let name = '';
  let lastTenth = -1;
  let lastDraw = 0;
  const started = Date.now();
  const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;
  return {
    phase(next) {
      if (tty && name) stream.write('\n');
      name = next;
      lastTenth = -1;
      if (!tty) stream.write(`${name}…\n`);
    },
    update(done, total) {
      const share = total > 0 ? Math.min(1, done / total) : 1;
      if (tty) {
        const now = Date.now();
        if (now - lastDraw < 100 && share < 1) return;
        lastDraw = now;
        const filled = Math.round(share * width);
        stream.write(`\r${name.padEnd(24)} [${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${String(Math.floor(share * 100)).padStart(3)} % ${done.toLocaleString('fr-CA')}/${total.toLocaleString('fr-CA')}  ${elapsed()}`);
      } else {
        const tenth = Math.floor(share * 10);
        if (tenth > lastTenth) {
          lastTenth = tenth;
          stream.write(`${name}: ${tenth * 10} % (${done}/${total}, ${elapsed()})\n`);
        }
      }
    },
    done(summary) {
      if (tty) stream.write('\n');
      if (summary) stream.write(`${summary}\n`);
    },
  };
}
