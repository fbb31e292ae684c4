/**
 * Where a training step's wall time goes, phase by phase, summed over the steps it saw. Opt-in (the
 * benchmark passes one; the trainer does not), so an unprofiled step pays one `undefined` check per phase.
 * Wall time, not CPU time: Node 20 has no per-thread CPU clock, and the phases of the two-thread stepper
 * run on different threads; the benchmark reports the process's CPU time beside it.
 */
export class StepProfile {
  readonly ms: Record<string, number> = {};
  steps = 0;

  /** Runs f, adding its wall time to phase. */
  time<T>(phase: string, f: () => T): T {
    const t0 = performance.now();
    try {
      return f();
    } finally {
      this.add(phase, performance.now() - t0);
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
