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

describe('runs cancel: usage', () => {
  it('without an id, or with two, is a usage error before anything is read', async () => {
    const { runs } = await import('../../../cli/commands/runs.js');
    const { UsageError } = await import('../../../cli/args.js');
    for (const positionals of [['cancel'], ['cancel', 'a', 'b']]) {
      await expect(
        runs({ values: {}, positionals } as unknown as Parameters<typeof runs>[0]),
      ).rejects.toBeInstanceOf(UsageError);
    }
  });
});
