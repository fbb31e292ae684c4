/**
 * Acceptance: a world where, on one segment, the label follows a signal only the LLM features carry. After
 * stage 1 (the CRM), stages 2 and 3, and calibration on validation, the hybrid must beat both the CRM and
 * the LLM branch on that segment of the test split (and overall).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { calibrateThreshold } from '../../../ml/corella/calibration.js';
import { evaluateAlignment } from '../../../ml/corella/evaluation.js';
import { trainJoint } from '../../../ml/corella/joint.js';
import { ctrScores, pick } from '../../../ml/corella/score.js';
import { acceptanceWorld, TinyCrm, trainTinyCrm, useCpu } from './fixtures.js';

let dir: string;
beforeAll(async () => {
  await useCpu();
  dir = await mkdtemp(join(tmpdir(), 'corella-accept-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('CoReLLa on a segment the CRM cannot see', () => {
  it('the calibrated hybrid beats both the CRM and the LLM branch there', async () => {
    const { dataset, llm, tags } = acceptanceWorld(2024, { train: 6000, valid: 2000, test: 3000 });
    const crm = new TinyCrm([3, 6], { mlp: [16, 8], seed: 5 });
    await trainTinyCrm(crm, dataset.splits.train, 4);

    const joint = await trainJoint({
      crm,
      dataset,
      llm,
      store: new FileArtifactStore(dir),
      config: {
        stage2: { samples: 2000, epochs: 3, batchSize: 128, learningRate: 0.01, crmLearningRate: 1e-3 },
        stage3: { samples: 2000, epochs: 4, batchSize: 128, learningRate: 0.01 },
        adapter: { layers: [16, 8] },
        alignment: { sharedDim: 8 },
        validationSamples: 1000,
      },
    });
    const cal = await calibrateThreshold({
      crm,
      adapter: joint.adapter,
      llm,
      split: dataset.splits.valid,
      items: dataset.items,
      config: { maxRoutedFraction: 0.2 },
    });
    expect(cal.chosen.routedFraction).toBeGreaterThan(0);
    expect(cal.chosen.routedFraction).toBeLessThanOrEqual(0.2);

    const ev = await evaluateAlignment({
      crm,
      adapter: joint.adapter,
      llm,
      split: dataset.splits.test,
      items: dataset.items,
      threshold: cal.threshold,
    });
    const segment = Array.from(tags.test.keys()).filter((i) => tags.test[i] > 0);
    const y = pick(ev.predictions.labels, segment);
    const onSegment = {
      crm: ctrScores(pick(ev.predictions.pCrm, segment), y),
      llm: ctrScores(pick(ev.predictions.pLlm, segment), y),
      hybrid: ctrScores(pick(ev.predictions.pHybrid, segment), y),
    };
    expect(onSegment.hybrid.auc).toBeGreaterThan(onSegment.crm.auc + 0.03);
    expect(onSegment.hybrid.auc).toBeGreaterThan(onSegment.llm.auc + 0.03);
    expect(onSegment.hybrid.logLoss).toBeLessThan(Math.min(onSegment.crm.logLoss, onSegment.llm.logLoss));
    expect(ev.overall.hybrid.auc).toBeGreaterThan(Math.max(ev.overall.crm.auc, ev.overall.llm.auc));
    joint.adapter.dispose();
    joint.projections.dispose();
    crm.dispose();
  });
});
