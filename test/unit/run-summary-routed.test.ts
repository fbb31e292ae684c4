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

  it('the wide test pool: its hybrid − CRM with the interval, and nothing when there is none', () => {
    const base = { 'eval.test.crm.auc': 0.7, 'eval.test.hybrid.auc': 0.72, 'eval.test.routedFraction': 0.05 };
    const text = summaryTable(
      result({
        ...base,
        'eval.wide.rows': 10000,
        'eval.wide.routedFraction': 0.167,
        'eval.wide.crm.auc': 0.8,
        'eval.wide.hybrid.auc': 0.8042,
        'eval.wide.gainLo': 0.0011,
        'eval.wide.gainHi': 0.0075,
      }),
    );
    expect(text).toContain(
      'hybrid − CRM on 10000 test rows (LLM on the 16.7% routed): AUC 0.8000 → 0.8042, +0.0042 [+0.0011, +0.0075]',
    );
    expect(summaryTable(result(base))).not.toContain('hybrid − CRM');
    const none = summaryTable(
      result({
        ...base,
        'eval.wide.rows': 10000,
        'eval.wide.llmRows': 0,
        'eval.wide.routedFraction': 0,
        'eval.wide.crm.auc': 0.7705,
        'eval.wide.hybrid.auc': 0.7705,
      }),
    );
    expect(none).toContain('hybrid on 10000 test rows: nothing routed, so it is the CRM (AUC 0.7705)');
  });
});
