/**
 * Where a training step's wall time goes, phase by phase, summed over the steps it saw. Opt-in (the
 * benchmark passes one; the trainer does not), so an unprofiled step pays one `undefined` check per phase.
 * Wall time, and the process's CPU time beside it (`cpu.` phases): on a loaded machine wall time mostly
 * measures waiting for a core, CPU time the work. Node 20 has no per-thread CPU clock, so with the
 * two-thread stepper a main-thread phase's CPU also counts the worker's work in the same interval.
 */
export class StepProfile {
  readonly ms: Record<string, number> = {};
  steps = 0;

  /** Runs f, adding its wall and process CPU time to phase. */
  time<T>(phase: string, f: () => T): T {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    try {
      return f();
    } finally {
      const c = process.cpuUsage(c0);
      this.add(phase, performance.now() - t0);
      this.add(`cpu.${phase}`, (c.user + c.system) / 1000);
    }
  }

  add(phase: string, ms: number): void {
    this.ms[phase] = (this.ms[phase] ?? 0) + ms;
  }

  /** Milliseconds per step of each phase, rounded to µs. */
  perStep(): Record<string, number> {
    const n = Math.max(1, this.steps);
    return Object.fromEntries(Object.entries(this.ms).map(([k, v]) => [k, Number((v / n).toFixed(3))]));
  }
}

/** Runs f under profile's phase when there is a profile. */
export function timed<T>(profile: StepProfile | undefined, phase: string, f: () => T): T {
  return profile ? profile.time(phase, f) : f();
}
