import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import type { LlamaTf } from '../../../../ml/llm/tf/llama-forward.js';
import { LoraAdapter } from '../../../../ml/llm/tf/lora.js';
import { chainLogOdds, EVAL_GROUP, evalGroups } from '../../../../ml/llm/tf/lora-eval.js';
import { LoraTrainer } from '../../../../ml/llm/tf/lora-train.js';
import { blocksAndWorkers, useTinyLlamaTf } from '../../../helpers/tiny-llama-tf.js';

/**
 * The evaluation pass (LoraTrainer.evalLogOdds) on several threads: groups of prompts that reuse shared
 * prefixes, claimed by the trainer's thread and its workers. Every thread count must give the same bits,
 * equal to scoring each prompt alone up to float32 rounding.
 */
let model: LlamaTf;
const YES = 300;
const NO = 301;
const CFG = { layers: 2, rank: 4, alpha: 8, targets: ['q', 'v', 'down'] as ('q' | 'v' | 'down')[], seed: 5 };

useTinyLlamaTf('corella-lora-eval-', (m) => (model = m));

/** History-block shaped: users of 1–6 prompts, each prompt extending the user's history by one item. */
function prompts(n: number): number[][] {
  const out: number[][] = [];
  for (let u = 0; out.length < n; u++) {
    const head = [1, 40, 41, 10 + (u % 50), 60 + ((u * 7) % 40)];
    for (let i = 0; i < 1 + (u % 6) && out.length < n; i++)
      out.push([...head, ...Array.from({ length: i }, (_, j) => 100 + ((u * 13 + j * 5) % 150)), 250 + i, 7]);
  }
  return out;
}

function randomiseB(a: LoraAdapter, seed: number): void {
  a.pairs.forEach((p, i) =>
    tf.tidy(() => p.b.assign(tf.randomNormal(p.b.shape, 0, 0.3, 'float32', seed + i))),
  );
}

function bits(a: Float32Array): string {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('hex');
}

describe('LoRA evaluation on several threads', () => {
  it('groups cut the prompts into fixed runs, whatever the thread count', () => {
    expect(evalGroups(0)).toEqual([]);
    expect(evalGroups(EVAL_GROUP)).toEqual([[0, EVAL_GROUP]]);
    expect(evalGroups(2 * EVAL_GROUP + 3)).toEqual([
      [0, EVAL_GROUP],
      [EVAL_GROUP, 2 * EVAL_GROUP],
      [2 * EVAL_GROUP, 2 * EVAL_GROUP + 3],
    ]);
  });

  it('workers compute a group with the bits of this thread, and every group comes back once, in order', () => {
    const adapter = LoraAdapter.create(model.hp, CFG);
    randomiseB(adapter, 21);
    const { blocks, workers } = blocksAndWorkers(model, adapter, [YES, NO], 0);
    try {
      const ps = prompts(40);
      const groups: [number, number][] = [
        [0, 7],
        [7, 15],
        [15, 22],
        [22, 31],
        [31, 40],
      ];
      // Some first-adapted-block input for each prompt: its embedding (any [T, nEmbd] will do).
      const inputs = ps.map((t) => {
        const x = model.embed(t);
        const d = x.dataSync() as Float32Array;
        x.dispose();
        return d;
      });
      const lora = adapter.layerLora();
      const here = (g: number) =>
        chainLogOdds(blocks, lora, ps.slice(...groups[g]), (i) =>
          tf.tensor2d(inputs[groups[g][0] + i], [ps[groups[g][0] + i].length, model.hp.nEmbd]),
        );
      const want = groups.map((_, g) => here(g));
      workers.waitReady();
      // This thread sleeps on its first group, so the workers must take the others.
      let first = true;
      const sleep = new Int32Array(new SharedArrayBuffer(4));
      const got = workers.evaluate(adapter.toHostSync(), ps, inputs, groups, (g) => {
        if (first) Atomics.wait(sleep, 0, 0, 3000);
        first = false;
        return here(g);
      });
      expect(workers.evaluated[0]).toBeGreaterThanOrEqual(1);
      expect(workers.evaluated[1] + workers.evaluated[2]).toBeGreaterThanOrEqual(1);
      expect(workers.evaluated.reduce((a, b) => a + b, 0)).toBe(groups.length);
      // Evaluation does not count as training samples.
      expect(workers.computed).toEqual([0, 0, 0]);
      expect(got.map(bits)).toEqual(want.map(bits));
      // The workers score with the weights they are sent: B back to 0 is the base model, which differs.
      const zero = LoraAdapter.create(model.hp, CFG);
      const base = workers.evaluate(zero.toHostSync(), ps, inputs, groups, (g) =>
        chainLogOdds(blocks, zero.layerLora(), ps.slice(...groups[g]), (i) =>
          tf.tensor2d(inputs[groups[g][0] + i], [ps[groups[g][0] + i].length, model.hp.nEmbd]),
        ),
      );
      zero.dispose();
      expect(Math.abs(base[4][0] - want[4][0])).toBeGreaterThan(1e-3);
    } finally {
      void workers.close();
      blocks.answerRows.dispose();
      adapter.dispose();
    }
  }, 120_000);

  it('evalLogOdds gives the same bits at 1, 2 and 3 threads, equal to each prompt alone, before and after a step', async () => {
    const ps = prompts(3 * EVAL_GROUP + 11);
    const batch = ps.slice(0, 6).map((tokens, i) => ({ tokens, label: i % 2 }));
    const runs: { before: Float32Array; after: Float32Array }[] = [];
    for (const threads of [1, 2, 3]) {
      const adapter = LoraAdapter.create(model.hp, CFG);
      randomiseB(adapter, 31);
      const t = new LoraTrainer(model, adapter, { answerTokens: [YES, NO], learningRate: 2e-2, threads });
      try {
        t.waitForWorkers();
        const reads = t.frozen.stats.prompts;
        const before = t.evalLogOdds(ps);
        // Each prompt's input is read from the frozen cache once, however many threads score it.
        expect(t.frozen.stats.prompts - reads).toBe(ps.length);
        // Warm now (the frozen pass keeps its last prefix), a second pass leaks nothing and repeats itself.
        const tensors = tf.memory().numTensors;
        expect(bits(t.evalLogOdds(ps))).toBe(bits(before));
        expect(tf.memory().numTensors).toBe(tensors);
        if (threads === 1) {
          ps.forEach((p, i) => {
            const z = t.logOdds(p);
            expect(before[i]).toBeCloseTo(z.dataSync()[0], 4);
            z.dispose();
          });
          expect(new Set(Array.from(before, (v) => v.toFixed(3))).size).toBeGreaterThan(20);
        }
        t.step(batch);
        runs.push({ before, after: t.evalLogOdds(ps) });
      } finally {
        await t.close();
        t.dispose();
        adapter.dispose();
      }
    }
    for (const r of runs.slice(1)) {
      expect(bits(r.before)).toBe(bits(runs[0].before));
      // After a step the trainers' LoRAs differ from the start but agree with each other to float32
      // summation order (the parallel step's); each thread count evaluates its own current weights.
      r.after.forEach((v, i) => expect(v).toBeCloseTo(runs[0].after[i], 4));
    }
    // Two and three threads step with the same bits, so they evaluate with the same bits too.
    expect(bits(runs[2].after)).toBe(bits(runs[1].after));
    expect(Math.max(...runs[0].after.map((v, i) => Math.abs(v - runs[0].before[i])))).toBeGreaterThan(1e-3);
  }, 180_000);
});
