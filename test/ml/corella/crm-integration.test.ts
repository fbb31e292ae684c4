/**
 * The CoReLLa stages on the real CRM (ml/crm's DCNv2 trained by trainCrm) on the wasm backend, with the
 * fake LLM source: the joint step must back-propagate through the CRM's cross/MLP activations, and the
 * calibrated hybrid must still win on the segment only the LLM features can see.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { calibrateThreshold } from '../../../ml/corella/calibration.js';
import { evaluateAlignment } from '../../../ml/corella/evaluation.js';
import { trainJoint } from '../../../ml/corella/joint.js';
import { ctrScores, pick } from '../../../ml/corella/score.js';
import { snapshotVariables } from '../../../ml/corella/weights.js';
import { defaultCrmConfig, trainCrm } from '../../../ml/crm/index.js';
import { initTf } from '../../../ml/tf/backend.js';
import { acceptanceWorld } from './fixtures.js';

let dir: string;
beforeAll(async () => {
  await initTf('wasm', () => undefined);
  dir = await mkdtemp(join(tmpdir(), 'corella-dcn-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('CoReLLa with the DCNv2 CRM', () => {
  it('trains stages 2 and 3 through the real CRM and the hybrid wins on the hidden segment', async () => {
    const { dataset, llm, tags } = acceptanceWorld(77, { train: 5000, valid: 1500, test: 2000 });
    const store = new FileArtifactStore(dir);
    const config = defaultCrmConfig('dcnv2', { embeddingDim: 4, crossLayers: 2, mlp: [16, 8], seed: 3 });
    const s1 = await trainCrm(dataset, config, {
      store,
      epochs: 6,
      batchSize: 64,
      lr: 0.02,
      patience: 6,
      lrDecay: 1,
    });
    const crm = s1.model;
    expect(crm.activationShapes.map((a) => a.name)).toEqual(['cross_0', 'cross_1', 'mlp_0', 'mlp_1']);
    const before = JSON.stringify(snapshotVariables(crm.trainableVariables()).map((s) => s.data));

    const tensorsBefore = tf.memory().numTensors;
    const joint = await trainJoint({
      crm,
      dataset,
      llm,
      store,
      config: {
        stage2: { samples: 1500, epochs: 2, batchSize: 128, learningRate: 0.01, crmLearningRate: 1e-3 },
        stage3: { samples: 1500, epochs: 4, batchSize: 128, learningRate: 0.01 },
        adapter: { layers: [16, 8] },
        alignment: { sharedDim: 8 },
        validationSamples: 500,
      },
    });
    // Batches (with ml/crm's extra prepared tensors), optimizer state and intermediates are all freed: what
    // remains is the adapter and the projections.
    const kept = [...joint.adapter.trainableVariables(), ...joint.projections.trainableVariables()].length;
    expect(tf.memory().numTensors - tensorsBefore).toBe(kept);
    expect(joint.pairs).toEqual([
      { crm: 'cross_1', llm: 'adapter_0' },
      { crm: 'mlp_1', llm: 'adapter_1' },
    ]);
    expect(JSON.stringify(snapshotVariables(crm.trainableVariables()).map((s) => s.data))).not.toBe(before);
    for (const e of joint.stage2.epochs) expect(Number.isFinite(e.align)).toBe(true);
    expect(joint.boundaryShift!.after.alignLoss).toBeLessThan(joint.boundaryShift!.before.alignLoss);

    const cal = await calibrateThreshold({
      crm,
      adapter: joint.adapter,
      llm,
      split: dataset.splits.valid,
      items: dataset.items,
    });
    const ev = await evaluateAlignment({
      crm,
      adapter: joint.adapter,
      llm,
      split: dataset.splits.test,
      items: dataset.items,
      threshold: cal.threshold,
    });
    const seg = Array.from(tags.test.keys()).filter((i) => tags.test[i] > 0);
    const y = pick(ev.predictions.labels, seg);
    const hybrid = ctrScores(pick(ev.predictions.pHybrid, seg), y);
    expect(hybrid.auc).toBeGreaterThan(ctrScores(pick(ev.predictions.pCrm, seg), y).auc + 0.03);
    expect(hybrid.auc).toBeGreaterThan(ctrScores(pick(ev.predictions.pLlm, seg), y).auc + 0.03);
    expect(cal.chosen.routedFraction).toBeLessThanOrEqual(0.2);
    joint.adapter.dispose();
    joint.projections.dispose();
    crm.dispose();
  });
});
