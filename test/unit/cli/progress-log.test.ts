import { describe, expect, it } from 'vitest';
import { ProgressLog } from '../../../cli/progress-log.js';

describe('ProgressLog: progress lines for a stderr that is not a terminal', () => {
  it('prints the first report, each new tenth, and nothing for polls in between', () => {
    const log = new ProgressLog({ minIntervalMs: 60_000 });
    const lines: (string | undefined)[] = [];
    // A follower polling every 2 s while an activity goes from 0 to 1,000 in steps of 25.
    for (let done = 0, t = 0; done <= 1000; done += 25, t += 2_000)
      lines.push(log.line('    llm-features', done, 1000, t));
    const printed = lines.filter((l): l is string => l !== undefined);
    expect(printed[0]).toBe('    llm-features: 0/1000 (0%)');
    // 0%, then one line per tenth crossed: 10%, 20%, …, 100%.
    expect(printed.map((l) => /\((\d+)%\)/.exec(l)?.[1])).toEqual([
      '0',
      '10',
      '20',
      '30',
      '40',
      '50',
      '60',
      '70',
      '80',
      '90',
      '100',
    ]);
    expect(log.line('    llm-features', 1000, 1000, 1e9)).toBeUndefined(); // finished, nothing moves
  });

  it('a slow activity still prints once a minute while it moves, never while it stands still', () => {
    const log = new ProgressLog({ minIntervalMs: 60_000 });
    expect(log.line('train', 1, 100, 0)).toBe('train: 1/100 (1%)');
    expect(log.line('train', 2, 100, 59_999)).toBeUndefined();
    expect(log.line('train', 3, 100, 60_000)).toBe('train: 3/100 (3%)');
    expect(log.line('train', 3, 100, 600_000)).toBeUndefined();
  });

  it('keys by label, so two activities running at once are throttled apart, and copes with no total', () => {
    const log = new ProgressLog();
    expect(log.line('crm', 5, 10, 0)).toBe('crm: 5/10 (50%)');
    expect(log.line('llm', 51, 100, 0)).toBe('llm: 51/100 (51%)');
    expect(log.line('llm', 52, 100, 1)).toBeUndefined(); // same tenth, within the minute
    expect(log.line('crm', 6, 10, 1)).toBe('crm: 6/10 (60%)');
    expect(log.line('rows', 42, undefined, 0)).toBe('rows: 42');
    expect(log.line('rows', 43, undefined, 1)).toBeUndefined();
    expect(log.line('rows', 43, 0, 120_000)).toBe('rows: 43');
    expect(log.line('bad', Number.NaN, 10, 0)).toBeUndefined();
    // done beyond total (a retried activity re-reporting) reads as 100%, not 130%.
    expect(log.line('over', 13, 10, 0)).toBe('over: 13/10 (100%)');
  });
});
