import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { probeFigures, stalledWithin, type ProbeReport } from '../../bench/stall-attribution.js';

const PROBE = fileURLToPath(new URL('../../bench/stall-probe.ts', import.meta.url));

describe('bench/stall-probe.ts', () => {
  it('records a stop of its process as one stall of that length, at that moment', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', PROBE, '--seconds', '1.5'], {
      env: { ...process.env, NODE_OPTIONS: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise<void>((ready, fail) => {
      child.stderr.on('data', (d: Buffer) => {
        err += d.toString();
        if (err.includes('stall-probe ready')) ready();
      });
      child.once('exit', (code) => fail(new Error(`probe exited ${code}: ${err}`)));
    });
    await new Promise((r) => setTimeout(r, 200));
    // The CPU taken away from the probe, as a hypervisor would: it cannot run until SIGCONT.
    const stoppedAt = performance.timeOrigin + performance.now();
    child.kill('SIGSTOP');
    await new Promise((r) => setTimeout(r, 120));
    child.kill('SIGCONT');
    const resumedAt = performance.timeOrigin + performance.now();
    const code = await new Promise((r) => child.once('exit', r));
    expect(code).toBe(0);
    const report = JSON.parse(out) as ProbeReport;
    expect(report.wakeups).toBeGreaterThan(300);
    // The longest stall that touches the stop (a loaded machine may add others elsewhere in the run).
    const during = report.stalls.filter(([t, d]) => t < resumedAt + 10 && t + d > stoppedAt - 10);
    expect(during.length).toBeGreaterThan(0);
    const [at, ms] = during.reduce((a, b) => (b[1] > a[1] ? b : a));
    expect(ms).toBeGreaterThanOrEqual(100);
    expect(ms).toBeLessThan(resumedAt - stoppedAt + 50);
    // The stall's window lies around the stop (clocks of two processes: allow a few ms).
    expect(at).toBeGreaterThan(stoppedAt - 10);
    expect(at + ms).toBeLessThan(resumedAt + 50);
    expect(report.lateMs.max).toBeGreaterThanOrEqual(ms);
  }, 30_000);
});

describe('probeFigures', () => {
  const report = (stalls: [number, number][]): ProbeReport => ({
    wakeups: 1000,
    lateMs: { p50: 0, p99: 1, max: Math.max(0, ...stalls.map(([, d]) => d)) },
    stallMs: 2,
    stalls,
  });

  it('counts overlap only inside the window', () => {
    expect(stalledWithin([[100, 10]], 105, 200)).toBe(5);
    expect(stalledWithin([[100, 10]], 90, 105)).toBe(5);
    expect(stalledWithin([[100, 10]], 110, 120)).toBe(0);
    expect(
      stalledWithin(
        [
          [100, 10],
          [150, 4],
        ],
        0,
        1000,
      ),
    ).toBe(14);
  });

  it('explains an answer only when the stalls cover its time over the target', () => {
    // Answers of 30 ms (20 over a 10 ms target) starting at 0, 100 and 200.
    const slow: [number, number][] = [
      [0, 30],
      [100, 130],
      [200, 230],
    ];
    const cpu0 = report([
      [5, 25], // covers all 20 ms over the target: explained
      [110, 5], // touches the second answer but accounts for 5 of its 20 ms: overlapping only
    ]);
    const cpu1 = report([[105, 16]]); // with cpu0's 5 ms the second would be covered, but each probe counts alone
    const f = probeFigures(
      [
        { cpu: 0, report: cpu0 },
        { cpu: 1, report: cpu1 },
      ],
      slow,
      10,
    );
    expect(f.slowAnswers).toBe(3);
    expect(f.slowAnswersExplainedByAnyProbe).toBe(1);
    expect(f.probes[0]).toMatchObject({
      cpu: 0,
      slowAnswersOverlapping: 2,
      slowAnswersExplained: 1,
      stalledMs: 30,
    });
    expect(f.probes[1]).toMatchObject({ cpu: 1, slowAnswersOverlapping: 1, slowAnswersExplained: 0 });
    expect(f.probes[0].stallsOver5ms).toBe(2);
  });
});
