import { describe, expect, it } from 'vitest';
import { describePending } from '../../../cli/commands/runs.js';

describe('runs show: pending activities', () => {
  const at = (msFromNow: number) => new Date(Date.now() + msFromNow);
  it('a started activity is running, a scheduled one is waiting, one scheduled ahead is a retry', () => {
    expect(describePending({ activity: 'trainCrm', attempt: 1, progress: { done: 3, total: 9 } })).toBe(
      'running: trainCrm (attempt 1) 3/9',
    );
    expect(
      describePending({ activity: 'trainCrm', attempt: 1, progress: undefined, scheduledAt: at(-65_000) }),
    ).toBe(
      "waiting for a worker: trainCrm (attempt 1), scheduled 65 s ago (its queue's workers are busy or absent)",
    );
    expect(
      describePending({ activity: 'trainJoint', attempt: 3, progress: undefined, scheduledAt: at(30_000) }),
    ).toBe('retrying: trainJoint (attempt 3) in 30 s');
  });
});
