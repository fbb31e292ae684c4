import { describe, expect, it } from 'vitest';
import { StepProfile, timed } from '../../../ml/crm/step-profile.js';

function spin(ms: number): number {
  const end = performance.now() + ms;
  let x = 0;
  while (performance.now() < end) x++;
  return x;
}

describe('StepProfile', () => {
  it('adds each phase its wall and CPU time and divides by the steps it saw', () => {
    const p = new StepProfile();
    for (let i = 0; i < 2; i++) {
      p.time('work', () => spin(20));
      p.add('wait', 3);
      p.steps++;
    }
    const per = p.perStep();
    expect(per.work).toBeGreaterThanOrEqual(20);
    // A busy loop burns CPU while it runs (some of it, on a loaded machine), a recorded wait none.
    expect(per['cpu.work']).toBeGreaterThan(0);
    expect(per.wait).toBe(3);
    expect(per['cpu.wait']).toBeUndefined();
  });

  it('timed runs the function alone, without a profile, and passes its result and errors through', () => {
    expect(timed(undefined, 'x', () => 7)).toBe(7);
    const p = new StepProfile();
    expect(() =>
      timed(p, 'boom', () => {
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(p.ms.boom).toBeGreaterThanOrEqual(0);
  });
});
