/**
 * Run by fused-infer.test.ts in a child process with CORELLA_TF_NATIVE=off: which path CrmNet.inferInto
 * takes there, and whether predict equals the tfjs forward (sigmoid of the logits on the same batches).
 */
import * as tf from '@tensorflow/tfjs-core';
import { CrmNet } from '../../../ml/crm/model.js';
import { defaultCrmConfig } from '../../../ml/crm/config.js';
import { disposeCrmBatch } from '../../../ml/crm/batch.js';
import { fusedInferAddon } from '../../../ml/crm/fused-infer.js';
import { initTf } from '../../../ml/tf/backend.js';
import { syntheticDataset } from './fixtures.js';

const init = await initTf('wasm', () => undefined);
const ds = syntheticDataset({ rows: 300, dense: 2, maxLen: 5 });
const split = ds.splits.train;
const model = new CrmNet(
  defaultCrmConfig('dcnv2', { embeddingDim: 4, crossLayers: 2, mlp: [16, 8] }),
  ds.featureMap,
);
const rows = Int32Array.from({ length: 100 }, (_, i) => (i * 3) % split.size);
const out = new Float32Array(rows.length);
const path = model.inferInto(split, rows, out);
const predicted = await model.predict(split, rows, 64);
let maxDiff = 0;
for (let start = 0; start < rows.length; start += 64) {
  const batch = model.makeBatch(split, rows.subarray(start, Math.min(rows.length, start + 64)));
  const p = tf.tidy(() => tf.sigmoid(model.forward(batch, { training: false }).logits).dataSync());
  p.forEach((v, i) => (maxDiff = Math.max(maxDiff, Math.abs(v - predicted[start + i]))));
  disposeCrmBatch(batch);
}
const found = fusedInferAddon();
console.log(
  JSON.stringify({
    path,
    accelerator: init.accelerator,
    reason: 'reason' in found ? found.reason : '',
    maxDiff,
  }),
);
