import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { Adam } from '../../../ml/crm/adam.js';
import { disposeCrmBatch } from '../../../ml/crm/batch.js';
import { defaultCrmConfig } from '../../../ml/crm/config.js';
import { sigmoidCrossEntropy } from '../../../ml/crm/loss.js';
import { CrmNet } from '../../../ml/crm/model.js';
import { SparseEmbeddingStepper } from '../../../ml/crm/train-step.js';
import { initTf } from '../../../ml/tf/backend.js';
import { syntheticDataset } from './fixtures.js';

const ds = syntheticDataset({ rows: 300, dense: 1, maxLen: 6 });
const config = defaultCrmConfig('dcnv2', {
  embeddingDim: 4,
  crossLayers: 2,
  mlp: [8],
  l2Embedding: 0.05,
  seed: 4,
});

describe('sparse embedding step', () => {
  beforeAll(async () => {
    await initTf('wasm', () => undefined);
  });

  for (const backend of ['wasm', 'cpu'] as const) {
    it(`${backend}: one step equals Adam on the full autograd gradient through the lookup`, async () => {
      await initTf(backend, () => undefined);
      const rows = Array.from({ length: 64 }, (_, i) => i * 3);
      const lr = 0.01;
      const sparse = new CrmNet(config, ds.featureMap);
      const full = new CrmNet(config, ds.featureMap);
      const batch = sparse.makeBatch(ds.splits.train, rows);

      // Reference: gradients of every variable (table included, via the embedding-bag gradient) and
      // Adam's first step written out: m = (1−β1)g, v = (1−β2)g², w −= lr·√(1−β2)/(1−β1) · m/(√v + ε).
      const { grads } = tf.variableGrads(() => {
        const f = full.forward(batch, { training: true });
        return tf.add(sigmoidCrossEntropy(f.logits, batch.labels), full.regularizer(batch)!) as tf.Scalar;
      }, full.trainableVariables());
      const lrT = (lr * Math.sqrt(1 - 0.999)) / (1 - 0.9);
      const expected = new Map<string, Float32Array>();
      for (const { name, variable } of full.namedVariables().filter((v) => v.trainable)) {
        const g = grads[variable.name].dataSync();
        const w = (variable.dataSync() as Float32Array).slice();
        for (let i = 0; i < w.length; i++) {
          const m = 0.1 * g[i];
          const v = 0.001 * g[i] * g[i];
          w[i] -= (lrT * m) / (Math.sqrt(v) + 1e-7);
        }
        expected.set(name, w);
      }
      tf.dispose(grads);

      const before = (sparse.embeddingTable.dataSync() as Float32Array).slice();
      new SparseEmbeddingStepper(sparse, new Adam({ lr })).step(batch);
      let changedRows = 0;
      for (const { name, variable } of sparse.namedVariables().filter((v) => v.trainable)) {
        const got = variable.dataSync();
        const want = expected.get(name)!;
        for (let i = 0; i < want.length; i++)
          expect(Math.abs(got[i] - want[i]), `${name}[${i}]`).toBeLessThan(1e-5);
      }
      const after = sparse.embeddingTable.dataSync();
      for (let r = 0; r < before.length / 4; r++) if (after[r * 4] !== before[r * 4]) changedRows++;
      expect(changedRows).toBeGreaterThan(10);
      disposeCrmBatch(batch);
      sparse.dispose();
      full.dispose();
      await initTf('wasm', () => undefined);
    });
  }

  it('does not leak tensors across steps', () => {
    const model = new CrmNet(config, ds.featureMap);
    const stepper = new SparseEmbeddingStepper(model, new Adam({ lr: 0.01 }));
    const run = () => {
      const b = model.makeBatch(ds.splits.train, [1, 2, 3, 4, 5]);
      stepper.step(b);
      disposeCrmBatch(b);
    };
    run();
    const n = tf.memory().numTensors;
    for (let i = 0; i < 5; i++) run();
    expect(tf.memory().numTensors).toBe(n);
    model.dispose();
  });
});
