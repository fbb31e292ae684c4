/** What a stop request looks like to a long-running command. */
export interface StopSignal {
  /** Whether SIGINT or SIGTERM has arrived. */
  readonly requested: boolean;
  /** Resolves on the first SIGINT or SIGTERM. */
  readonly stopped: Promise<void>;
  /** Removes the handlers (the command is done). */
  dispose(): void;
}

/**
 * Listens for SIGINT and SIGTERM from now on. Why a command installs this before it starts anything: until a
 * handler exists, either signal has its default action, which kills the process on the spot. A signal during
 * startup (initdb, migrations, loading a model) then left the embedded Postgres running with nobody to stop
 * it, and one that arrived just after the ready line (a script or test that answers that line with SIGTERM)
 * ended a healthy server with 143 instead of a clean 0. The first signal asks for a clean stop; a second one
 * exits at once, so a startup stuck on something still answers a second Ctrl-C.
 *
 * "A second one" means one that comes at least `repeatWindowMs` after the first. One Ctrl-C often arrives
 * more than once: the terminal signals the whole foreground process group, and a parent that forwards
 * signals (serve's young-generation re-exec, `npm exec`, `timeout`, a service manager's group kill) sends
 * its copy milliseconds later. Counting that copy as the second press made `npx corella serve` + Ctrl-C exit
 * 130 at once and leave its embedded Postgres running. A person pressing Ctrl-C twice is far slower than that.
 */
export const REPEAT_WINDOW_MS = 500;

export function listenForStop(
  onFirst?: (signal: NodeJS.Signals) => void,
  repeatWindowMs = REPEAT_WINDOW_MS,
): StopSignal {
  let requested = false;
  let firstAt = 0;
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((resolve) => (resolveStopped = resolve));
  const onSignal = (signal: NodeJS.Signals): void => {
    if (requested) {
      if (performance.now() - firstAt < repeatWindowMs) return; // the same stop, delivered again
      process.exit(signal === 'SIGINT' ? 130 : 143);
    }
    requested = true;
    firstAt = performance.now();
    onFirst?.(signal);
    resolveStopped();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    get requested() {
      return requested;
    },
    stopped,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}
