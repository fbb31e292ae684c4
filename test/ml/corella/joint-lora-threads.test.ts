import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { AlignmentProjections, defaultPairs } from '../../../ml/corella/alignment.js';
import { resolveJointConfig, type JointConfig } from '../../../ml/corella/joint-config.js';
import { jointEpoch, stage2Step, type EpochLoss } from '../../../ml/corella/joint-epochs.js';
import type { EncodedSplit } from '../../../ml/data/types.js';
import type { LlamaTf } from '../../../ml/llm/tf/llama-forward.js';
import { LoraAdapter } from '../../../ml/llm/tf/lora.js';
import { LoraBranch } from '../../../ml/llm/tf/lora-branch.js';
import { useTinyLlamaTf } from '../../helpers/tiny-llama-tf.js';
import { acceptanceWorld, TinyCrm } from './fixtures.js';

/**
 * Stage 2 with the LoRA branch on two threads (llm.finetune.threads = 2): the step is split between the CRM's
 * tape on this thread and the LoRA's per-sample gradients on the branch's threads, and must give what the
 * one-tape step gives: the same losses and, after the optimisers' steps, the same LoRA factors, alignment
 * projections and CRM weights, up to float32 summation order.
 */
let model: LlamaTf;
useTinyLlamaTf('corella-joint-lora-threads-', (m) => (model = m));
const YES = 300;
const NO = 301;

function promptOf(split: EncodedSplit, row: number): number[] {
  const [seg, level] = [split.categorical[2 * row], split.categorical[2 * row + 1]];
  return [1, 40, 41, 42, 50 + seg, 60 + level, 70 + (split.labels[row] > 0.5 ? 1 : 0), 43];
}

const world = acceptanceWorld(5, { train: 80, valid: 10, test: 10 });
const train = world.dataset.splits.train;
const stage2Rows = Int32Array.from({ length: 24 }, (_, i) => i);

/** A fresh CRM, LoRA branch and projections, the same weights whatever `threads` is. */
function setup(
  threads: number,
  cfg: JointConfig,
  signal?: AbortSignal,
  output?: { a: number; b: number },
  tapeBytes?: number,
) {
  const crm = new TinyCrm([3, 6], { seed: 3 });
  const adapter = LoraAdapter.create(model.hp, {
    layers: 2,
    rank: 2,
    alpha: 4,
    targets: ['q', 'v'],
    seed: 3,
  });
  // Non-zero B, so every factor has a gradient from the first step.
  adapter.variables().forEach((v, i) => v.assign(tf.randomUniform(v.shape, -0.1, 0.1, 'float32', 11 + i)));
  const branch = new LoraBranch<'stage2'>({
    model,
    adapter,
    answerTokens: [YES, NO],
    prompts: { stage2: Array.from(stage2Rows, (r) => promptOf(train, r)) },
    // Block 0 is frozen (its row comes from the frozen cache), block 2 is adapted (differentiable).
    alignLayers: [0, 2],
    threads,
    signal,
    output,
    tapeBytes,
  });
  const pairs = defaultPairs(crm.activationShapes, branch.activationShapes);
  const proj = AlignmentProjections.create({ pairs, sharedDim: 4, seed: 2 }, crm.activationShapes, [
    ...branch.activationShapes,
  ]);
  const step = stage2Step(cfg, crm, branch, proj, pairs.length);
  const state = () => ({
    lora: adapter.variables().map((v) => v.dataSync() as Float32Array),
    proj: proj.trainableVariables().map((v) => v.dataSync() as Float32Array),
    crm: crm.trainableVariables().map((v) => v.dataSync() as Float32Array),
  });
  const dispose = () => {
    step.optCrm.dispose();
    step.optOther.dispose();
    branch.dispose();
    proj.dispose();
    crm.dispose();
  };
  return { crm, branch, proj, step, state, dispose };
}

async function run(
  threads: number,
  cfg: JointConfig,
  epochs: number,
  output?: { a: number; b: number },
  tapeBytes?: number,
) {
  const s = setup(threads, cfg, undefined, output, tapeBytes);
  // Every thread takes part from the first step (a worker still loading leaves the batch to this thread).
  s.branch.waitForWorkers();
  const before = s.state();
  const losses: EpochLoss[] = [];
  for (let epoch = 0; epoch < epochs; epoch++)
    losses.push(await jointEpoch({ cfg, ...s, train, rows: stage2Rows, epoch }));
  const after = s.state();
  const workers = s.branch.liveWorkers;
  const byThread = [...s.branch.samplesByThread];
  s.dispose();
  return { before, after, losses, workers, byThread };
}

/**
 * max |Δ| between the two runs' weights, over the largest change any weight made (Adam moves a weight by
 * about the learning rate per step, whatever its gradient's size, so that is the scale a difference is
 * judged against).
 */
function relativeGap(
  one: Awaited<ReturnType<typeof run>>,
  two: Awaited<ReturnType<typeof run>>,
  key: 'lora' | 'proj' | 'crm',
) {
  let gap = 0;
  let moved = 0;
  one.after[key].forEach((a, j) => {
    const b = two.after[key][j];
    const a0 = one.before[key][j];
    expect(two.before[key][j]).toEqual(a0);
    for (let i = 0; i < a.length; i++) {
      gap = Math.max(gap, Math.abs(a[i] - b[i]));
      moved = Math.max(moved, Math.abs(a[i] - a0[i]));
    }
  });
  return { gap, moved };
}

function compare(
  one: Awaited<ReturnType<typeof run>>,
  two: Awaited<ReturnType<typeof run>>,
  trained: ('lora' | 'proj' | 'crm')[],
) {
  one.losses.forEach((l, e) => {
    const t = two.losses[e];
    for (const k of ['total', 'llm', 'crm', 'align'] as const) expect(t[k]).toBeCloseTo(l[k], 5);
  });
  const gaps = {
    lora: relativeGap(one, two, 'lora'),
    proj: relativeGap(one, two, 'proj'),
    crm: relativeGap(one, two, 'crm'),
  };
  for (const [key, g] of Object.entries(gaps)) {
    // The two runs agree to 1e-4 of the largest step a weight took. Measured: 2e-6 after one step, 3e-6
    // after three epochs, 2.5e-5 with the output affine (two steps); float32 summation order changes a
    // gradient by about 1e-7 of its size, and Adam passes that on to the step. The bits do not depend on
    // timing, so the figures are the same every run. Dropping the worker's γ term, the CRM side's alignment
    // gradient or the worker's output affine fails the losses by 6e-3 to 0.12.
    if (trained.includes(key as 'lora')) expect(g.moved).toBeGreaterThan(0);
    else expect(g.moved).toBe(0);
    expect(g.gap).toBeLessThan(1e-4 * g.moved + 1e-9);
  }
  return gaps;
}

const joint = (gamma: number, batchSize: number) =>
  resolveJointConfig({
    gamma,
    stage2: { samples: 24, epochs: 3, batchSize, learningRate: 0.01, crmLearningRate: 0.005 },
    alignment: { sharedDim: 4 },
  });

describe('stage 2 with the LoRA branch on two threads', () => {
  it('one step equals the one-tape step (γ > 0: the alignment gradient split between the threads)', async () => {
    const cfg = joint(0.5, 24);
    const one = await run(1, cfg, 1);
    const two = await run(2, cfg, 1);
    expect(one.workers).toBe(0);
    expect(two.workers).toBe(1);
    expect(one.losses[0].align).toBeGreaterThan(0);
    expect(two.byThread[0]).toBeGreaterThan(0);
    expect(two.byThread[1]).toBeGreaterThan(0);
    console.log('one step, γ = 0.5', JSON.stringify(compare(one, two, ['lora', 'proj', 'crm'])));
  }, 120_000);

  it('three epochs of batches of 8 equal the one-tape epochs, γ > 0 and γ = 0', async () => {
    for (const gamma of [0.5, 0]) {
      const cfg = joint(gamma, 8);
      const one = await run(1, cfg, 3);
      const two = await run(2, cfg, 3);
      if (gamma === 0) expect(one.losses[0].align).toBe(0);
      // Both threads computed samples.
      expect(two.byThread).toHaveLength(2);
      expect(two.byThread[0]).toBeGreaterThan(0);
      expect(two.byThread[1]).toBeGreaterThan(0);
      expect(two.byThread[0] + two.byThread[1]).toBe(3 * stage2Rows.length);
      // γ = 0: the projections are not stage 2's variables at all (stage2Step), on either path.
      const trained: ('lora' | 'proj' | 'crm')[] = gamma > 0 ? ['lora', 'proj', 'crm'] : ['lora', 'crm'];
      console.log(`3 epochs, γ = ${gamma}`, JSON.stringify(compare(one, two, trained)));
    }
  }, 240_000);

  it('an output affine a·z + b other than the identity is part of the split step too', async () => {
    const cfg = joint(0.5, 12);
    const output = { a: 1.7, b: -0.4 };
    const one = await run(1, cfg, 1, output);
    const two = await run(2, cfg, 1, output);
    expect(two.byThread[1]).toBeGreaterThan(0);
    console.log('one epoch, a·z + b', JSON.stringify(compare(one, two, ['lora', 'proj', 'crm'])));
  }, 120_000);

  it('one thread with batches beyond its tape budget splits the step on this thread, with the bits of two threads', async () => {
    for (const output of [undefined, { a: 1.7, b: -0.4 }]) {
      const cfg = joint(0.5, 8);
      const two = await run(2, cfg, 2, output);
      // A budget below one sample's tape: every stage-2 batch is split, its LLM side sample by sample here.
      const split = await run(1, cfg, 2, output, 1);
      expect(split.workers).toBe(0);
      expect(split.losses).toEqual(two.losses);
      for (const key of ['lora', 'proj', 'crm'] as const)
        split.after[key].forEach((w, j) =>
          expect(Buffer.from(w.buffer).equals(Buffer.from(two.after[key][j].buffer))).toBe(true),
        );
      // The one-tape run moved the same weights by other bits (float32 summation order).
      const tape = await run(1, cfg, 2, output);
      expect(
        tape.after.lora.some((w, j) => !Buffer.from(w.buffer).equals(Buffer.from(two.after.lora[j].buffer))),
      ).toBe(true);
      compare(tape, two, ['lora', 'proj', 'crm']);
    }
  }, 240_000);

  it('an abort mid-epoch stops the epoch and the workers', async () => {
    const ac = new AbortController();
    const cfg = joint(0.5, 8);
    const s = setup(2, cfg, ac.signal);
    expect(s.branch.liveWorkers).toBe(1);
    // The first batch runs synchronously up to the epoch's first yield to the event loop; the abort lands there.
    setImmediate(() => ac.abort(new Error('cancelled')));
    await expect(
      jointEpoch({ cfg, ...s, train, rows: stage2Rows, epoch: 0, signal: ac.signal }),
    ).rejects.toThrow();
    // Mid-epoch: the first of its three batches ran (on the branch's threads), the second did not start.
    expect(s.branch.samplesByThread.reduce((x, y) => x + y, 0)).toBe(8);
    const end = Date.now() + 30_000;
    while (s.branch.liveWorkers > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    expect(s.branch.liveWorkers).toBe(0);
    s.dispose();
  }, 60_000);
});
