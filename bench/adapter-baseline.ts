/**
 * The "frozen LLM + adapter" row of issue 19's ablation, on the same pools as bench/lora.ts: the pipeline's
 * LLM features (llama.cpp on the same GGUF, the same paper prompts: config/ml-1m-cpu.json llm) for the
 * bench's train, valid and test rows, and the pipeline's LlmAdapter (joint.adapter: layers 64/32) trained
 * on the train rows alone with L_llm, as stage 3 trains it. It returns the adapter's log-odds for the valid
 * and test pools, so bench/lora.ts scores them exactly as it scores a LoRA (terciles, hybrid, gate).
 *
 * Why train it alone rather than through stage 2: bench/lora.ts trains the LoRA alone too, and the row is
 * meant to compare the two branches, not the joint loss.
 */
import { loadavg } from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import type { ArtifactStore } from '../ml/artifacts/store.js';
import { LlmAdapter } from '../ml/corella/adapter.js';
import { affinityWidth } from '../ml/corella/features.js';
import { bceWithLogits } from '../ml/corella/ops.js';
import type { CtrDataset, EncodedSplit } from '../ml/data/types.js';
import { LlmFeatureExtractor } from '../ml/llm/features.js';
import type { LlmFeatures } from '../ml/llm/types.js';
import { auc } from '../ml/metrics/classification.js';
import { mixSeed, mulberry32, permutation } from '../ml/random.js';

export interface AdapterBaselineOptions {
  dataset: CtrDataset;
  store: ArtifactStore;
  /** Separates the feature cache by dataset version (sample ids are unique only within one). */
  namespace: string;
  modelPath: string;
  rows: { train: number[]; valid: number[]; test: number[] };
  seed: number;
  epochs: number;
  patience: number;
  /** The pipeline's joint.stage3 defaults: batch 128, lr 1e-3. */
  batchSize?: number;
  learningRate?: number;
  layers?: number[];
  log: (m: string) => void;
}

export interface AdapterBaselineResult {
  zVa: number[];
  zTe: number[];
  bestEpoch: number;
  bestValidAuc: number;
  history: { epoch: number; trainLoss?: number; validAuc: number; seconds?: number }[];
  cost: { featureSeconds: number; computedPrompts: number; trainSeconds: number; loadAverage: number };
}

/** The pipeline's LLM settings (config/ml-1m-cpu.json llm), so the features are the ones the adapter reads there. */
function pipelineLlmConfig(model: string) {
  return {
    model,
    template: 'paper',
    threads: 1,
    contextSize: 1024,
    maxHistoryItems: 6,
    hidden: true,
    gpu: false,
    historyBlock: 8,
    sequences: 2,
  } as const;
}

export async function adapterBaseline(o: AdapterBaselineOptions): Promise<AdapterBaselineResult> {
  const { train, valid, test } = o.dataset.splits;
  const items = o.dataset.items;
  const t0 = performance.now();
  const extractor = await LlmFeatureExtractor.open(pipelineLlmConfig(o.modelPath), o.store, {
    namespace: o.namespace,
  });
  let computed = 0;
  const features = async (split: EncodedSplit, rows: number[], name: string): Promise<LlmFeatures> => {
    const f = await extractor.features(split, items, rows);
    computed += extractor.lastReport?.computed ?? 0;
    o.log(`adapter baseline: ${name} features for ${rows.length} rows (${computed} computed so far)`);
    return f;
  };
  let trF: LlmFeatures;
  let vaF: LlmFeatures;
  let teF: LlmFeatures;
  try {
    trF = await features(train, o.rows.train, 'train');
    vaF = await features(valid, o.rows.valid, 'valid');
    teF = await features(test, o.rows.test, 'test');
  } finally {
    await extractor.dispose();
  }
  const featureSeconds = (performance.now() - t0) / 1000;

  const adapter = LlmAdapter.create({
    hiddenDim: trF.hiddenDim,
    affinityDim: affinityWidth(trF),
    layers: o.layers ?? [64, 32],
    seed: o.seed,
  });
  adapter.fitNormalization(trF);
  const opt = tf.train.adam(o.learningRate ?? 1e-3);
  const vars = adapter.trainableVariables();
  const yTr = o.rows.train.map((r) => train.labels[r]);
  const yVa = o.rows.valid.map((r) => valid.labels[r]);
  const batch = o.batchSize ?? 128;
  const z0 = Array.from(adapter.predictLogits(vaF));
  const history: AdapterBaselineResult['history'] = [{ epoch: 0, validAuc: auc(yVa, z0) }];
  let best = { epoch: 0, validAuc: history[0].validAuc, weights: adapter.serialize() };
  let bad = 0;
  const tTrain = performance.now();
  for (let e = 1; e <= o.epochs; e++) {
    const te = performance.now();
    const order = permutation(mulberry32(mixSeed(o.seed, e)), o.rows.train.length);
    let sum = 0;
    for (let s = 0; s < order.length; s += batch) {
      const local = order.subarray(s, Math.min(order.length, s + batch));
      sum +=
        tf.tidy(() => {
          const y = tf.tensor1d(Array.from(local, (i) => yTr[i]));
          const cost = opt.minimize(
            () => bceWithLogits(adapter.forward(adapter.inputTensor(trF, local)).logits, y),
            true,
            vars,
          );
          return cost!.dataSync()[0];
        }) * local.length;
    }
    const validAuc = auc(yVa, Array.from(adapter.predictLogits(vaF)));
    history.push({
      epoch: e,
      trainLoss: sum / order.length,
      validAuc,
      seconds: (performance.now() - te) / 1000,
    });
    if (validAuc > best.validAuc) {
      best = { epoch: e, validAuc, weights: adapter.serialize() };
      bad = 0;
    } else if (++bad > o.patience) break;
  }
  const trainSeconds = (performance.now() - tTrain) / 1000;
  opt.dispose();
  adapter.dispose();
  // The best epoch's weights give the figures, as bench/lora.ts restores the LoRA's best epoch.
  const bestAdapter = LlmAdapter.deserialize(best.weights);
  const zVa = Array.from(bestAdapter.predictLogits(vaF));
  const zTe = Array.from(bestAdapter.predictLogits(teF));
  bestAdapter.dispose();
  o.log(`adapter baseline: best epoch ${best.epoch}, valid AUC ${best.validAuc.toFixed(4)}`);
  return {
    zVa,
    zTe,
    bestEpoch: best.epoch,
    bestValidAuc: best.validAuc,
    history,
    cost: { featureSeconds, computedPrompts: computed, trainSeconds, loadAverage: loadavg()[0] },
  };
}
