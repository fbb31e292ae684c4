import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { CorellaError } from '../../../../ml/errors.js';
import type { LlamaTf } from '../../../../ml/llm/tf/llama-forward.js';
import { LoraAdapter, type LoraHostWeights } from '../../../../ml/llm/tf/lora.js';
import { sampleGrads } from '../../../../ml/llm/tf/lora-loss.js';
import {
  LoraTrainer,
  blockWeightBytes,
  tapeBytesPerToken,
  type LoraSample,
} from '../../../../ml/llm/tf/lora-train.js';
import { blocksAndWorkers, useTinyLlamaTf } from '../../../helpers/tiny-llama-tf.js';

/**
 * The data-parallel LoRA step (LoraTrainer `threads`): worker threads with the tiny GGUF's adapted blocks
 * compute the gradients of their parts of each batch. Two and three threads must train like one thread
 * (same losses and weights up to float32 summation order), be deterministic, and leave no thread behind.
 */
let model: LlamaTf;
const YES = 300;
const NO = 301;

useTinyLlamaTf('corella-lora-par-', (m) => (model = m));

function batches(steps: number, size: number): LoraSample[][] {
  return Array.from({ length: steps }, (_, s) =>
    Array.from({ length: size }, (_, i) => ({
      tokens: [
        1,
        40,
        41,
        ...Array.from({ length: 5 + ((i + s) % 4) }, (_, j) => 3 + ((i * 31 + j * 17 + s * 7) % 290)),
      ],
      label: (i + s) % 3 === 0 ? 1 : 0,
      // Unequal weights, so a part summed with the wrong normaliser would show.
      weight: 0.5 + ((i * 7 + s) % 5) / 4,
    })),
  );
}

const CFG = { layers: 2, rank: 4, alpha: 8, targets: ['q', 'v', 'down'] as ('q' | 'v' | 'down')[], seed: 3 };

async function train(
  threads: number,
  bs: LoraSample[][],
  smoothing = 0,
  tapeBytes?: number,
): Promise<{ losses: number[]; weights: LoraHostWeights; moments: Float32Array[] }> {
  const adapter = LoraAdapter.create(model.hp, CFG);
  const t = new LoraTrainer(model, adapter, {
    answerTokens: [YES, NO],
    learningRate: 2e-2,
    labelSmoothing: smoothing,
    threads,
    tapeBytes,
  });
  try {
    const losses = bs.map((b) => t.step(b));
    const st = await t.state();
    return { losses, weights: st.weights, moments: st.adamMoments };
  } finally {
    await t.close();
    t.dispose();
    adapter.dispose();
  }
}

function maxRelDiff(a: LoraHostWeights, b: LoraHostWeights): number {
  let worst = 0;
  for (const k of Object.keys(a)) {
    for (const part of ['a', 'b'] as const) {
      const x = a[k][part];
      const y = b[k][part];
      let scale = 0;
      let diff = 0;
      for (let i = 0; i < x.length; i++) {
        scale = Math.max(scale, Math.abs(x[i]));
        diff = Math.max(diff, Math.abs(x[i] - y[i]));
      }
      worst = Math.max(worst, diff / Math.max(scale, 1e-12));
    }
  }
  return worst;
}

function bitsEqual(a: LoraHostWeights, b: LoraHostWeights): boolean {
  return Object.keys(a).every((k) =>
    (['a', 'b'] as const).every((p) => Buffer.from(a[k][p].buffer).equals(Buffer.from(b[k][p].buffer))),
  );
}

describe('data-parallel LoRA step', () => {
  it('2 and 3 threads train like 1 thread over several steps (losses, weights, Adam moments), and like each other bit for bit', async () => {
    const bs = batches(5, 7);
    const one = await train(1, bs);
    // The LoRA moved (B starts at 0): the comparison is not between untrained adapters.
    const start = LoraAdapter.create(model.hp, CFG);
    const w0 = await start.toHost();
    start.dispose();
    expect(maxRelDiff(one.weights, w0)).toBeGreaterThan(0.05);
    let two: Awaited<ReturnType<typeof train>> | undefined;
    for (const threads of [2, 3]) {
      const par = await train(threads, bs);
      // Who computes a sample does not change its bits: every count above 1 gives the same step.
      two ??= par;
      expect(par.losses).toEqual(two.losses);
      expect(bitsEqual(par.weights, two.weights)).toBe(true);
      for (let s = 0; s < bs.length; s++) expect(Math.abs(par.losses[s] - one.losses[s])).toBeLessThan(1e-5);
      expect(maxRelDiff(par.weights, one.weights)).toBeLessThan(1e-4);
      let mDiff = 0;
      par.moments.forEach((m, i) => {
        for (let j = 0; j < m.length; j++)
          mDiff = Math.max(mDiff, Math.abs(m[j] - one.moments[i][j]) / (Math.abs(one.moments[i][j]) + 1e-6));
      });
      if (process.env.SHOW_DIFF)
        console.log(
          threads,
          maxRelDiff(par.weights, one.weights),
          mDiff,
          Math.max(...par.losses.map((l, s) => Math.abs(l - one.losses[s]))),
        );
      expect(mDiff).toBeLessThan(1e-2);
      // Deterministic: the samples are summed in sample order, not in the order the threads finish.
      const again = await train(threads, bs);
      expect(again.losses).toEqual(par.losses);
      expect(bitsEqual(again.weights, par.weights)).toBe(true);
    }
  }, 180_000);

  it('worker threads compute a sample with the bits of this thread, and every sample comes back once', () => {
    const adapter = LoraAdapter.create(model.hp, CFG);
    adapter.pairs.forEach((p, i) =>
      tf.tidy(() => p.b.assign(tf.randomNormal(p.b.shape, 0, 0.3, 'float32', 11 + i))),
    );
    const { blocks, workers } = blocksAndWorkers(model, adapter, [YES, NO], 0.05);
    try {
      const vars = adapter.variables();
      const lora = adapter.layerLora();
      const samples = batches(1, 9)[0].map((s) => {
        const x = tf.tidy(() => {
          // Some first-adapted-block input: the embedding of the tokens (any [T, nEmbd] will do).
          return model.embed(s.tokens);
        });
        const input = x.dataSync() as Float32Array;
        x.dispose();
        return { input, tokens: s.tokens.length, label: s.label, weight: s.weight! };
      });
      const here = samples.map((s) => sampleGrads(blocks, vars, lora, 0.05, s.input, s));
      workers.waitReady();
      // This thread sleeps on its first sample, so the workers must take the others.
      let first = true;
      const sleep = new Int32Array(new SharedArrayBuffer(4));
      const got = workers.run(adapter.toHostSync(), samples, (s) => {
        if (first) Atomics.wait(sleep, 0, 0, 3000);
        first = false;
        return sampleGrads(blocks, vars, lora, 0.05, s.input, s);
      });
      expect(workers.computed[0]).toBeGreaterThanOrEqual(1);
      expect(workers.computed[1] + workers.computed[2]).toBeGreaterThanOrEqual(1);
      expect(workers.computed.reduce((a, b) => a + b, 0)).toBe(samples.length);
      expect(got.map((r) => r.index)).toEqual(samples.map((_, i) => i));
      got.forEach((r, i) => {
        expect(r.sum).toBe(here[i].sum);
        r.grads.forEach((g, j) =>
          expect(Buffer.from(g.buffer).equals(Buffer.from(here[i].grads[j].buffer))).toBe(true),
        );
      });
      // A failure on this thread mid-batch still collects the workers' answers, so the next batch is clean.
      expect(() =>
        workers.run(adapter.toHostSync(), samples, () => {
          Atomics.wait(sleep, 0, 0, 200);
          throw new Error('this thread failed');
        }),
      ).toThrow('this thread failed');
      const after = workers.run(adapter.toHostSync(), samples, (s) =>
        sampleGrads(blocks, vars, lora, 0.05, s.input, s),
      );
      expect(after.map((r) => r.sum)).toEqual(here.map((r) => r.sum));
    } finally {
      void workers.close();
      blocks.answerRows.dispose();
      adapter.dispose();
    }
  }, 120_000);

  it('one thread with a batch beyond its tape budget steps sample by sample, with the bits of 2 threads', async () => {
    const bs = batches(4, 7);
    const weighted = bs.map((b) => b.map((s, i) => ({ ...s, weight: 1 + (i % 3) })));
    for (const [smoothing, data] of [
      [0, bs],
      [0.1, weighted],
    ] as const) {
      const two = await train(2, data, smoothing);
      // A budget below one sample's tape: every batch goes sample by sample on this one thread.
      const split = await train(1, data, smoothing, 1);
      expect(split.losses).toEqual(two.losses);
      expect(bitsEqual(split.weights, two.weights)).toBe(true);
      split.moments.forEach((m, i) =>
        expect(Buffer.from(m.buffer).equals(Buffer.from(two.moments[i].buffer))).toBe(true),
      );
      // Within the default budget the tiny model's batches take the one tape: other bits, the same training.
      const tape = await train(1, data, smoothing);
      expect(bitsEqual(tape.weights, two.weights)).toBe(false);
      expect(maxRelDiff(tape.weights, two.weights)).toBeLessThan(1e-4);
    }
  }, 180_000);

  it('the one-tape choice follows the estimate: tokens × adapted blocks × tapeBytesPerToken against the budget', () => {
    const adapter = LoraAdapter.create(model.hp, CFG);
    const per = tapeBytesPerToken(model.hp);
    expect(per).toBe(160 * (model.hp.nEmbd + model.hp.nFf));
    const batch = [{ tokens: [1, 2, 3] }, { tokens: [4, 5] }];
    const need = 5 * CFG.layers * per;
    const at = new LoraTrainer(model, adapter, { answerTokens: [YES, NO], tapeBytes: need });
    const below = new LoraTrainer(model, adapter, { answerTokens: [YES, NO], tapeBytes: need - 1 });
    expect(at.oneTape(batch)).toBe(true);
    expect(below.oneTape(batch)).toBe(false);
    expect(below.oneTape(batch.slice(1))).toBe(true);
    for (const bad of [0, -1, Number.NaN])
      expect(() => new LoraTrainer(model, adapter, { answerTokens: [YES, NO], tapeBytes: bad })).toThrow(
        /tapeBytes/,
      );
    at.dispose();
    below.dispose();
    adapter.dispose();
  });

  it('a sample whose own tape would pass the heap is refused, typed and before the step changes anything', async () => {
    const adapter = LoraAdapter.create(model.hp, CFG);
    const batch: LoraSample[] = [
      { tokens: [1, 2, 3], label: 1 },
      { tokens: [4, 5, 6, 7], label: 0 },
    ];
    const need = 4 * CFG.layers * tapeBytesPerToken(model.hp) + CFG.layers * blockWeightBytes(model.hp);
    const fits = new LoraTrainer(model, adapter, { answerTokens: [YES, NO], heapBytes: need, tapeBytes: 1 });
    expect(Number.isFinite(fits.step(batch))).toBe(true);
    fits.dispose();
    const before = await adapter.toHost();
    const over = new LoraTrainer(model, adapter, { answerTokens: [YES, NO], heapBytes: need - 1 });
    expect(() => over.step(batch)).toThrow(
      expect.objectContaining({
        code: 'BAD_CONFIG',
        message: expect.stringMatching(/sample 1 has 4 tokens.*field layers/) as string,
        details: expect.objectContaining({ field: 'layers', sample: 1, tokens: 4 }) as object,
      }) as Error,
    );
    expect(() => over.step(batch)).toThrow(CorellaError);
    expect(bitsEqual(await adapter.toHost(), before)).toBe(true);
    expect(() => new LoraTrainer(model, adapter, { answerTokens: [YES, NO], heapBytes: 0 })).toThrow(
      /heapBytes/,
    );
    over.dispose();
    adapter.dispose();
  });

  it('label smoothing and a batch smaller than the thread count train like 1 thread too', async () => {
    const bs = [...batches(2, 5), batches(1, 1)[0], batches(1, 2)[0]];
    const one = await train(1, bs, 0.1);
    const par = await train(3, bs, 0.1);
    expect(par.losses.length).toBe(bs.length);
    for (let s = 0; s < bs.length; s++) expect(Math.abs(par.losses[s] - one.losses[s])).toBeLessThan(1e-5);
    expect(maxRelDiff(par.weights, one.weights)).toBeLessThan(1e-4);
  }, 120_000);

  it('the workers exit on dispose and on an abort; an aborted trainer refuses to step', async () => {
    const wait = async (t: LoraTrainer) => {
      for (let i = 0; i < 600 && t.liveWorkers > 0; i++) await new Promise((r) => setTimeout(r, 50));
      return t.liveWorkers;
    };
    const a1 = LoraAdapter.create(model.hp, CFG);
    const t1 = new LoraTrainer(model, a1, { answerTokens: [YES, NO], threads: 3 });
    expect(t1.liveWorkers).toBe(2);
    t1.step(batches(1, 4)[0]);
    t1.dispose();
    expect(await wait(t1)).toBe(0);
    expect(() => t1.step(batches(1, 4)[0])).toThrow(/disposed/);
    a1.dispose();

    const ac = new AbortController();
    const a2 = LoraAdapter.create(model.hp, CFG);
    const t2 = new LoraTrainer(model, a2, { answerTokens: [YES, NO], threads: 2, signal: ac.signal });
    t2.step(batches(1, 4)[0]);
    ac.abort(new Error('stop here'));
    expect(await wait(t2)).toBe(0);
    expect(() => t2.step(batches(1, 4)[0])).toThrow('stop here');
    t2.dispose();

    // An abort passed to step() alone also ends the workers.
    const a3 = LoraAdapter.create(model.hp, CFG);
    const t3 = new LoraTrainer(model, a3, { answerTokens: [YES, NO], threads: 2 });
    const ac3 = new AbortController();
    ac3.abort(new Error('cancelled run'));
    expect(() => t3.step(batches(1, 4)[0], ac3.signal)).toThrow('cancelled run');
    expect(await wait(t3)).toBe(0);
    t3.dispose();
    a2.dispose();
    a3.dispose();
    // Nothing left on the main thread's backend beyond the model's own tensors.
    expect(tf.memory().numTensors).toBeGreaterThan(0);
  }, 120_000);

  it.each([0, -1, 1.5, 17, Number.NaN])('threads %s is a BAD_CONFIG naming the field', (threads) => {
    const a = LoraAdapter.create(model.hp, CFG);
    try {
      let err: unknown;
      try {
        new LoraTrainer(model, a, { answerTokens: [YES, NO], threads });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(CorellaError);
      expect((err as CorellaError).code).toBe('BAD_CONFIG');
      expect((err as CorellaError).details.field).toBe('threads');
      expect((err as CorellaError).message).toContain(`threads ${threads}`);
    } finally {
      a.dispose();
    }
  });
});
