/**
 * Progress as log lines, for a stderr that is not a terminal (nohup, CI logs, a service manager's journal).
 *
 * Why: on a terminal `up` and `score` redraw a bar from the running activity's heartbeat, but off one they
 * printed only the stage names, so a 15-minute feature extraction looked exactly like a hung process. A line
 * per redraw would flood a log (the follower polls every 2 s), so each activity prints when it first reports,
 * when it crosses another tenth of its total, and otherwise at most once a minute while it moves.
 */
export interface ProgressLogOptions {
  /** The quiet period for an activity that moves without crossing a tenth (or has no total). */
  minIntervalMs?: number;
}

interface Seen {
  tenth: number;
  done: number;
  at: number;
}

export class ProgressLog {
  private readonly seen = new Map<string, Seen>();
  private readonly minIntervalMs: number;

  constructor(opts: ProgressLogOptions = {}) {
    this.minIntervalMs = opts.minIntervalMs ?? 60_000;
  }

  /**
   * The line to print for `label`'s progress now, or undefined to stay quiet. `label` keys the activity, so
   * two activities running at once (the CRM and the LLM features) are throttled apart.
   */
  line(label: string, done: number, total: number | undefined, now = Date.now()): string | undefined {
    if (!Number.isFinite(done)) return undefined;
    const known = total !== undefined && Number.isFinite(total) && total > 0;
    const tenth = known ? Math.floor((Math.min(done, total) / total) * 10) : -1;
    const prev = this.seen.get(label);
    const due =
      prev === undefined || tenth > prev.tenth || (done !== prev.done && now - prev.at >= this.minIntervalMs);
    if (!due) return undefined;
    this.seen.set(label, { tenth, done, at: now });
    if (!known) return `${label}: ${done}`;
    const pct = Math.floor((Math.min(done, total) / total) * 100);
    return `${label}: ${done}/${total} (${pct}%)`;
  }
}
