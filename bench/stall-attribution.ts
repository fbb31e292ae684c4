/**
 * Which slow answers of a bench/serve.ts run the stall probes (bench/stall-probe.ts) account for. Apart from
 * the bench so that a unit test can hold it to its definition.
 */

/** What bench/stall-probe.ts prints: stalls as [start epoch ms, duration ms]. */
export interface ProbeReport {
  wakeups: number;
  lateMs: { p50: number; p99: number; max: number };
  stallMs: number;
  stalls: [number, number][];
}

/** How long a probe's stalls overlapped the window [from, to], ms. */
export function stalledWithin(stalls: [number, number][], from: number, to: number): number {
  let ms = 0;
  for (const [at, d] of stalls) ms += Math.max(0, Math.min(to, at + d) - Math.max(from, at));
  return ms;
}

/**
 * The probes' view of a run. A slow answer "overlaps" a stall when any stall touches its window, and is
 * "explained" by a probe when that probe's stalls inside its window add up to at least its time over the
 * target: the CPU was away for as long as the answer was late, so the server could not have been on time.
 */
export function probeFigures(
  reports: { cpu: number | null; report: ProbeReport }[],
  slow: [number, number][],
  slowMs: number,
) {
  const explainedBy = (stalls: [number, number][]) =>
    slow.filter(([from, to]) => stalledWithin(stalls, from, to) >= to - from - slowMs).length;
  const overlapping = (stalls: [number, number][]) =>
    slow.filter(([from, to]) => stalledWithin(stalls, from, to) > 0).length;
  return {
    slowAnswers: slow.length,
    slowAnswersExplainedByAnyProbe: slow.filter(([from, to]) =>
      reports.some(({ report }) => stalledWithin(report.stalls, from, to) >= to - from - slowMs),
    ).length,
    probes: reports.map(({ cpu, report }) => ({
      cpu,
      lateMs: report.lateMs,
      stallsOver2ms: report.stalls.length,
      stallsOver5ms: report.stalls.filter(([, d]) => d >= 5).length,
      stalledMs: Math.round(report.stalls.reduce((a, [, d]) => a + d, 0)),
      slowAnswersOverlapping: overlapping(report.stalls),
      slowAnswersExplained: explainedBy(report.stalls),
    })),
  };
}
