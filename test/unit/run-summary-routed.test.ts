import { describe, expect, it } from 'vitest';
import type { RetrainResult } from '../../activities/types.js';
import { summaryTable } from '../../cli/run-summary.js';

function result(metrics: Record<string, number>): RetrainResult {
  return {
    runId: 'r',
    datasetVersionId: 'd',
    modelVersionId: '1',
    alias: 'champion',
    threshold: 0.5,
    metrics,
  } as RetrainResult;
}

describe('the summary reports the routed fraction of the split its metrics come from', () => {
  it('test metrics: the test split routed fraction, with the validation one beside it', () => {
    const text = summaryTable(
      result({
        'eval.test.crm.auc': 0.7,
        'eval.test.hybrid.auc': 0.72,
        'eval.test.routedFraction': 0.05,
        'calibration.routedFraction': 0,
      }),
    );
    expect(text).toContain('routed to LLM: 5.0% of the test rows (validation 0.0%)');
  });

  it('calibration metrics only: the validation routed fraction, labelled as such', () => {
    const text = summaryTable(result({ 'calibration.hybrid.auc': 0.7, 'calibration.routedFraction': 0.1 }));
    expect(text).toContain('routed to LLM: 10.0% (validation)');
  });
});
