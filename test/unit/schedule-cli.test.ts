import { describe, expect, it } from 'vitest';
import { UsageError } from '../../cli/args.js';
import { recalibrateInputFrom } from '../../cli/commands/schedule.js';

describe('corella schedule create flags', () => {
  it('pass --source served and its settings through to recalibrateWorkflow', () => {
    expect(
      recalibrateInputFrom({
        source: 'served',
        model: '7',
        'max-routed': '0.25',
        'window-days': '3',
        'shadow-rows': '100',
        'task-queue': 'q',
      }),
    ).toEqual({
      source: 'served',
      modelVersionId: '7',
      maxRoutedFraction: 0.25,
      windowDays: 3,
      shadowRows: 100,
      queues: { cpu: 'q' },
    });
    // Without flags: today's dataset recalibration of the champion.
    const plain = recalibrateInputFrom({});
    expect(plain.source).toBeUndefined();
    expect(plain.modelVersionId).toBeUndefined();
  });

  it.each([
    [{ source: 'live' }, /--source must be dataset or served/],
    [{ 'shadow-rows': '-1' }, /--shadow-rows/],
    [{ 'shadow-rows': '2.5' }, /--shadow-rows/],
    [{ 'max-routed': '1.5' }, /--max-routed/],
    [{ 'window-days': '0' }, /--window-days/],
    [{ 'window-days': '' }, /--window-days/],
  ])('rejects %o with a usage error naming the flag', (values, message) => {
    expect(() => recalibrateInputFrom(values)).toThrow(UsageError);
    expect(() => recalibrateInputFrom(values)).toThrow(message);
  });
});
