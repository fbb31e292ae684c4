import { describe, expect, it } from 'vitest';
import { activitySummaries, currentDetails, grouped } from '../../../workflows/run-details.js';
import { tinyPipelineConfig } from '../../helpers/pipeline-config.js';

describe('what the Temporal UI shows of a retrain', () => {
  it('summarises each activity in one line from the config', () => {
    const s = activitySummaries(
      {
        crm: { epochs: 3 },
        llm: { pools: { valid: 500, test: 700 } },
        joint: { subset: 'hard', stage2: { samples: 1000, epochs: 2 }, stage3: { enabled: false } },
        calibration: { metric: 'logLoss', maxRoutedFraction: 0.2 },
      },
      'movielens-1m',
    );
    expect(s.trainCrm).toBe('train CRM: DCNv2 3 epochs + LR baseline');
    expect(s.extractLlmFeatures).toBe('LLM features: 1,200 rows (valid 500, test 700)');
    expect(s.trainJoint).toBe('joint training: stage 2 1,000 rows × 2 epochs, stage 3 off');
    expect(s.calibrateThreshold).toBe('calibrate threshold: best logLoss within 20% routed');
    expect(s.evaluateAlignment(0.5)).toBe('evaluate on test: CRM, LLM branch, hybrid at threshold 0.500');
    // Random stage-2/3 subsets get their LLM features up front too.
    expect(activitySummaries(tinyPipelineConfig('/m.gguf'), 'x').extractLlmFeatures).toBe(
      'LLM features: 390 rows (valid 80, test 100, train 210)',
    );
  });

  it('writes current details with the stage, live progress, key metrics and the report', () => {
    const md = currentDetails(
      {
        stage: 'joint-training',
        runId: 'r1',
        completed: ['ingest', 'train-crm+llm-features'],
        metrics: { 'crm.test.auc': 0.71234, 'eval.test.routedFraction': 0.25, 'not.shown': 1 },
        live: { trainJoint: { activity: 'trainJoint', stage: 'stage2', epoch: 1, done: 1500, total: 3000 } },
      },
      'synthetic',
    );
    expect(md).toContain('**Stage:** joint-training (3 of 7)  \n**Dataset:** synthetic');
    expect(md).toContain('**Running:** trainJoint · stage2 · epoch 2 · 1,500/3,000 (50%)');
    expect(md).toContain('- crm.test.auc: 0.7123\n- eval.test.routedFraction: 25.0%');
    expect(md).not.toContain('not.shown');
    const done = currentDetails(
      { stage: 'done', completed: [], metrics: {}, reportPath: '/h/reports/run-r1.html' },
      'synthetic',
    );
    expect(done).toContain('**Report:** `/h/reports/run-r1.html`');
    expect(grouped(1234567)).toBe('1,234,567');
  });
});
