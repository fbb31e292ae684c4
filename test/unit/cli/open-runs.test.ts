import { describe, expect, it } from 'vitest';
import { openRunsNote } from '../../../cli/open-runs.js';

const run = (id: string, stage?: string) => ({
  workflowId: id,
  type: 'retrainWorkflow',
  startTime: new Date('2026-12-03T06:34:25Z'),
  ...(stage ? { stage } : {}),
});

describe('openRunsNote', () => {
  it('says nothing when no other run is open', () => {
    expect(openRunsNote([], () => undefined)).toEqual([]);
  });

  it('names each open run with its type, start, stage and UI link, and how to cancel one', () => {
    const lines = openRunsNote([run('retrain-a', 'train-crm'), run('retrain-b')], (id) => `http://ui/${id}`);
    expect(lines[0]).toBe(
      'note: 2 other runs are open in this namespace; they share the workers and may hold them first:',
    );
    expect(lines[1]).toBe(
      '  retrain-a (retrainWorkflow, started 2026-12-03T06:34:25.000Z, stage train-crm) http://ui/retrain-a',
    );
    expect(lines[2]).toBe(
      '  retrain-b (retrainWorkflow, started 2026-12-03T06:34:25.000Z) http://ui/retrain-b',
    );
    expect(lines.at(-1)).toBe('  cancel one that is not wanted: corella runs cancel WORKFLOW_ID');
  });

  it('a full list says there may be more', () => {
    const lines = openRunsNote([run('a'), run('b')], () => undefined, 2);
    expect(lines[0]).toMatch(/^note: at least 2 other runs are open/);
  });
});
