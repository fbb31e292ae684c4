import * as tf from '@tensorflow/tfjs-core';
import { parentPort, workerData } from 'node:worker_threads';
import { initTf } from '../tf/backend.js';
import { hasHostMemory, liveData } from '../tf/memory.js';
import { disposeCrmBatch } from './batch.js';
import { CrmNet } from './model.js';
import type { FromWorker, ToWorker, WorkerInit } from './parallel-protocol.js';
import { batchGradients, denseVariables } from './train-step.js';

const init = workerData as WorkerInit;
const port = parentPort!;
const send = (m: FromWorker) => port.postMessage(m);

await initTf(init.backend, () => undefined);
const model = new CrmNet(init.config, init.featureMap);
const dense = denseVariables(model);
const weights = new Float32Array(init.weights);
const grads = new Float32Array(init.grads);
const touched = new Int32Array(init.touched);
const denseTotal = init.denseSizes.reduce((a, b) => a + b, 0);
const D = model.config.embeddingDim;

function syncDense(): void {
  let off = 0;
  tf.tidy(() => {
    dense.forEach(({ variable }, i) => {
      variable.assign(tf.tensor(weights.slice(off, off + init.denseSizes[i]), variable.shape, 'float32'));
      off += init.denseSizes[i];
    });
  });
}

function syncTable(all: boolean): void {
  const table = model.embeddingTable;
  if (all || !hasHostMemory()) {
    tf.tidy(() =>
      table.assign(tf.tensor(weights.slice(denseTotal, denseTotal + table.size), table.shape, 'float32')),
    );
    return;
  }
  const live = liveData(table);
  const count = touched[0];
  for (let k = 0; k < count; k++) {
    const r = touched[1 + k];
    live.set(weights.subarray(denseTotal + r * D, denseTotal + (r + 1) * D), r * D);
  }
}

syncDense();
syncTable(true);

port.on('message', (msg: ToWorker) => {
  try {
    if (msg.type === 'sync-all') {
      syncDense();
      syncTable(true);
      send({ type: 'ready' });
      return;
    }
    // Phase wall times, only when the trainer profiles (a benchmark); otherwise no clock reads.
    const profile: Record<string, number> | undefined = msg.profile ? {} : undefined;
    let t = profile ? performance.now() : 0;
    const lap = (phase: string) => {
      if (!profile) return;
      const now = performance.now();
      profile[phase] = now - t;
      t = now;
    };
    syncDense();
    syncTable(false);
    lap('sync');
    model.setDropoutStep(msg.dropoutStep);
    const batch = model.makeBatch(init.split, msg.rows);
    lap('makeBatch');
    const g = batchGradients(model, dense, batch);
    lap('gradients');
    disposeCrmBatch(batch);
    let off = 0;
    g.dense.forEach((a) => {
      grads.set(a, off);
      off += a.length;
    });
    grads.set(g.dx0, denseTotal);
    lap('write');
    send({ type: 'done', loss: g.loss, width: g.width, profile });
  } catch (e) {
    send({
      type: 'error',
      message: e instanceof Error ? e.message : String(e),
      stack: e instanceof Error ? e.stack : undefined,
    });
  }
});
send({ type: 'ready' });
