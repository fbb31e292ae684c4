import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { CorellaError } from '../../../../ml/errors.js';
import { FrozenPrefixCache } from '../../../../ml/llm/tf/frozen-prefix.js';
import { LlamaTf } from '../../../../ml/llm/tf/llama-forward.js';
import { LoraAdapter } from '../../../../ml/llm/tf/lora.js';
import { LoraTrainer, type LoraSample } from '../../../../ml/llm/tf/lora-train.js';
import { useTinyLlamaTf } from '../../../helpers/tiny-llama-tf.js';

let model: LlamaTf;
const YES = 300;
const NO = 301;

/** Deterministic pseudo-prompts: a shared head, then a per-sample tail (so prefixes are shared). */
function prompts(n: number, len: number, seed: number): number[][] {
  const head = [1, 40, 41, 42, 43, 44];
  return Array.from({ length: n }, (_, i) => [
    ...head,
    ...Array.from({ length: len }, (_, j) => 3 + ((i * 31 + j * 17 + seed * 7) % 290)),
  ]);
}

useTinyLlamaTf('corella-lora-', (m) => (model = m));

function withTrainer<T>(
  cfg: Parameters<typeof LoraAdapter.create>[1],
  fn: (t: LoraTrainer) => T,
  lr = 1e-2,
): T {
  const adapter = LoraAdapter.create(model.hp, cfg);
  const trainer = new LoraTrainer(model, adapter, { answerTokens: [YES, NO], learningRate: lr });
  try {
    return fn(trainer);
  } finally {
    trainer.dispose();
    adapter.dispose();
  }
}

/** Gives every B a random value, so gradients of A are not all zero. */
function randomiseB(a: LoraAdapter, seed: number): void {
  a.pairs.forEach((p, i) =>
    tf.tidy(() => p.b.assign(tf.randomNormal(p.b.shape, 0, 0.3, 'float32', seed + i))),
  );
}

describe('LoRA on the tfjs llama', () => {
  it('starts at the base model (B = 0), and the cached-prefix forward equals the full forward', () => {
    withTrainer({ layers: 2, rank: 4, targets: ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] }, (t) => {
      const ps = prompts(3, 8, 1);
      const zero = ps.map((p) => model.forward(p, { logitTokens: [YES, NO] }).tokenLogits!);
      for (let i = 0; i < ps.length; i++) {
        expect(Math.log(t.pYes(ps[i]) / (1 - t.pYes(ps[i])))).toBeCloseTo(zero[i][0] - zero[i][1], 4);
      }
      randomiseB(t.adapter, 9);
      for (const p of ps) {
        const full = model.forward(p, { logitTokens: [YES, NO], lora: t.adapter.layerLora() }).tokenLogits!;
        const z = t.logOdds(p);
        expect(z.dataSync()[0]).toBeCloseTo(full[0] - full[1], 4);
        z.dispose();
      }
      // And the LoRA moved the answer, so the comparison above is not between two base models.
      const moved = model.forward(ps[0], {
        logitTokens: [YES, NO],
        lora: t.adapter.layerLora(),
      }).tokenLogits!;
      expect(Math.abs(moved[0] - moved[1] - (zero[0][0] - zero[0][1]))).toBeGreaterThan(1e-2);
    });
  });

  it('returns the last-token outputs of chosen layers, frozen and adapted, as the full forward does', () => {
    const adapter = LoraAdapter.create(model.hp, { layers: 2, rank: 2 });
    const t = new LoraTrainer(model, adapter, { answerTokens: [YES, NO], hiddenLayers: [0, 1, 2] });
    try {
      randomiseB(adapter, 4);
      const p = prompts(1, 7, 8)[0];
      const full = model.forward(p, { hiddenLayers: [0, 1, 2], lora: adapter.layerLora() });
      const { logOdds, hidden } = t.outputs(p);
      expect(hidden.shape).toEqual([3, model.hp.nEmbd]);
      const h = hidden.arraySync();
      for (const l of [0, 1, 2]) {
        const want = full.hidden.get(l)!;
        for (let j = 0; j < want.length; j++) expect(h[l][j]).toBeCloseTo(want[j], 4);
      }
      tf.dispose([logOdds, hidden]);
      // The adapted layers' rows carry gradients into the LoRA weights (the alignment loss needs them).
      const { grads } = tf.variableGrads(
        () =>
          tf.tidy(() => {
            const o = t.outputs(p);
            return tf.sum(tf.square(tf.slice(o.hidden, [1, 0], [1, -1]))) as tf.Scalar;
          }),
        adapter.variables(),
      );
      const norms = Object.values(grads).map((g) => tf.tidy(() => tf.norm(g).dataSync()[0]));
      expect(Math.max(...norms)).toBeGreaterThan(1e-4);
      tf.dispose(Object.values(grads));
    } finally {
      t.dispose();
      adapter.dispose();
    }
  });

  it('the frozen pass reuses shared prefixes and still equals a pass from scratch', () => {
    const cache = new FrozenPrefixCache(model, 2);
    try {
      const ps = prompts(4, 6, 2);
      // A history-block-like sequence: each prompt extends the previous one.
      const chain = [ps[0], [...ps[0], 7, 8, 9], [...ps[0], 7, 8, 9, 10, 11], ps[1]];
      for (const p of chain) {
        const got = cache.input(p);
        const want = cache.computeFromScratch(p);
        const g = got.dataSync();
        got.dispose();
        let maxDiff = 0;
        for (let i = 0; i < want.length; i++) maxDiff = Math.max(maxDiff, Math.abs(g[i] - want[i]));
        expect(maxDiff).toBeLessThan(1e-5);
      }
      const total = chain.reduce((n, p) => n + p.length, 0);
      expect(cache.stats.evaluatedTokens).toBeLessThan(total - 20);
      cache.input(chain[1]).dispose();
      expect(cache.stats.hits).toBe(1);
    } finally {
      cache.dispose();
    }
  });

  it('evalLogOdds over prompts sharing prefixes equals logOdds prompt by prompt, and leaks no tensor', () => {
    // History-block shaped: each prompt extends the last one's history, then its own target; plus a
    // repeat (the whole prompt is shared), one with nothing shared and a one-token prompt.
    const head = [1, 40, 41, 42, 43, 44, 50, 51, 52];
    const ps: number[][] = [];
    for (let i = 0; i < 4; i++)
      ps.push([...head, ...Array.from({ length: i }, (_, j) => 60 + j), 200 + i, 7, 8, 9]);
    ps.push([...ps[3]]);
    ps.push([2, 90, 91, 92, 93]);
    ps.push([2]);
    ps.push([...head, 77]);
    for (const layers of [2, 3]) {
      withTrainer({ layers, rank: 3, targets: ['q', 'k', 'v', 'o', 'down'] }, (t) => {
        randomiseB(t.adapter, 40 + layers);
        const one = ps.map((p) => {
          const z = t.logOdds(p);
          const v = z.dataSync()[0];
          z.dispose();
          return v;
        });
        const before = tf.memory().numTensors;
        const many = t.evalLogOdds(ps);
        expect(tf.memory().numTensors).toBe(before);
        expect(many).toHaveLength(ps.length);
        ps.forEach((_, i) => expect(many[i]).toBeCloseTo(one[i], 4));
        // The prompts' answers differ, so equal outputs are not one repeated number.
        expect(new Set(one.map((v) => v.toFixed(3))).size).toBeGreaterThan(4);
      });
    }
  });

  it('gradients of A and B match central finite differences', () => {
    withTrainer({ layers: 2, rank: 2, targets: ['q', 'v', 'down'] }, (t) => {
      randomiseB(t.adapter, 3);
      const batch: LoraSample[] = prompts(2, 5, 3).map((tokens, i) => ({ tokens, label: i % 2 }));
      const { grads } = t.gradients(batch);
      const vars = t.adapter.variables();
      let checked = 0;
      const eps = 2e-3;
      for (let vi = 0; vi < vars.length; vi++) {
        const v = vars[vi];
        const base = v.dataSync().slice() as Float32Array;
        // Three entries per variable, spread over it.
        for (const idx of [0, Math.floor(base.length / 2), base.length - 1]) {
          const at = (delta: number): number => {
            const w = base.slice();
            w[idx] += delta;
            tf.tidy(() => v.assign(tf.tensor(w, v.shape)));
            return tf.tidy(() => t.loss(batch).dataSync()[0]);
          };
          const numeric = (at(eps) - at(-eps)) / (2 * eps);
          tf.tidy(() => v.assign(tf.tensor(base, v.shape)));
          const analytic = grads[vi][idx];
          const scale = Math.max(Math.abs(numeric), Math.abs(analytic), 1e-3);
          expect(Math.abs(numeric - analytic) / scale).toBeLessThan(3e-2);
          if (Math.abs(analytic) > 1e-3) checked++;
        }
      }
      // Most checks compared real (non-vanishing) gradients.
      expect(checked).toBeGreaterThan(vars.length);
    });
  });

  it('a few Adam steps on the BCE of p = e^yes/(e^yes+e^no) lower the loss', () => {
    withTrainer(
      { layers: 2, rank: 4 },
      (t) => {
        const batch: LoraSample[] = prompts(6, 6, 4).map((tokens, i) => ({
          tokens,
          label: i % 3 === 0 ? 1 : 0,
        }));
        const first = t.step(batch);
        const tensorsAfterFirst = tf.memory().numTensors;
        let last = first;
        for (let i = 0; i < 8; i++) last = t.step(batch);
        // Steady state: a step leaves no tensors behind (the frozen pass keeps its last prompt's KV only).
        expect(tf.memory().numTensors).toBe(tensorsAfterFirst);
        const after = tf.tidy(() => t.loss(batch).dataSync()[0]);
        expect(after).toBeLessThan(first - 0.05);
        expect(after).toBeLessThanOrEqual(last);
        // The frozen pass ran once per prompt; later steps were cache hits.
        expect(t.frozen.stats.hits).toBeGreaterThanOrEqual(batch.length * 8);
      },
      3e-2,
    );
  });

  it('a run resumed from a checkpoint (weights + Adam state) continues the uninterrupted run', async () => {
    const cfg = { layers: 2, rank: 3, targets: ['q', 'v', 'up'] as const };
    const batch: LoraSample[] = prompts(4, 5, 6).map((tokens, i) => ({ tokens, label: i % 2 }));
    const run = async (stepsBefore: number, stepsAfter: number, resume: boolean): Promise<Float32Array[]> => {
      const a1 = LoraAdapter.create(model.hp, { ...cfg, targets: [...cfg.targets] });
      const t1 = new LoraTrainer(model, a1, { answerTokens: [YES, NO], learningRate: 2e-2 });
      for (let i = 0; i < stepsBefore; i++) t1.step(batch);
      let t = t1;
      let a = a1;
      if (resume) {
        const state = await t1.state();
        t1.dispose();
        a1.dispose();
        // A fresh adapter with another seed: everything must come from the checkpoint.
        a = LoraAdapter.create(model.hp, { ...cfg, targets: [...cfg.targets], seed: 999 });
        t = new LoraTrainer(model, a, { answerTokens: [YES, NO], learningRate: 2e-2 });
        await t.restore(state);
      }
      for (let i = 0; i < stepsAfter; i++) t.step(batch);
      const w = a.variables().map((v) => v.dataSync().slice() as Float32Array);
      t.dispose();
      a.dispose();
      return w;
    };
    const straight = await run(5, 0, false);
    const resumed = await run(3, 2, true);
    const noAdamState = await (async () => {
      const a = LoraAdapter.create(model.hp, { ...cfg, targets: [...cfg.targets] });
      const t = new LoraTrainer(model, a, { answerTokens: [YES, NO], learningRate: 2e-2 });
      for (let i = 0; i < 3; i++) t.step(batch);
      const st = await t.state();
      const t2 = new LoraTrainer(model, a, { answerTokens: [YES, NO], learningRate: 2e-2 });
      await t2.restore({ ...st, adamMoments: [] });
      for (let i = 0; i < 2; i++) t2.step(batch);
      const w = a.variables().map((v) => v.dataSync().slice() as Float32Array);
      t.dispose();
      t2.dispose();
      a.dispose();
      return w;
    })();
    let maxDiff = 0;
    let restartDiff = 0;
    for (let i = 0; i < straight.length; i++) {
      for (let j = 0; j < straight[i].length; j++) {
        maxDiff = Math.max(maxDiff, Math.abs(straight[i][j] - resumed[i][j]));
        restartDiff = Math.max(restartDiff, Math.abs(straight[i][j] - noAdamState[i][j]));
      }
    }
    expect(maxDiff).toBeLessThan(1e-6);
    // Restarting Adam's moments instead would have given other weights: the state matters.
    expect(restartDiff).toBeGreaterThan(1e-4);
  });

  it('bad configs and labels get typed errors naming the field', () => {
    const err = (f: () => unknown): CorellaError => {
      try {
        f();
      } catch (e) {
        return e as CorellaError;
      }
      throw new Error('no error');
    };
    expect(err(() => LoraAdapter.create(model.hp, { layers: 9 })).message).toMatch(/field layers/);
    expect(err(() => LoraAdapter.create(model.hp, { rank: 0 })).message).toMatch(/field rank/);
    expect(err(() => LoraAdapter.create(model.hp, { targets: ['qq' as 'q'] })).message).toMatch(
      /field targets/,
    );
    expect(err(() => LoraAdapter.create(model.hp, { alpha: -1 })).code).toBe('BAD_CONFIG');
    withTrainer({}, (t) => {
      expect(err(() => t.step([{ tokens: [1, 2, 3], label: 0.5 }])).message).toMatch(/field label/);
      expect(err(() => t.step([{ tokens: [1, 99999], label: 1 }])).message).toMatch(/field tokens/);
    });
  });

  it('sample weights give the weighted mean BCE, and label smoothing moves the targets to y(1−ε)+ε/2', () => {
    const ps = prompts(3, 6, 4);
    const base = LoraAdapter.create(model.hp, { layers: 2, rank: 4 });
    randomiseB(base, 21);
    const trainer = (smoothing: number) =>
      new LoraTrainer(model, base, { answerTokens: [YES, NO], labelSmoothing: smoothing });
    const plain = trainer(0);
    const z = ps.map((p) => {
      const t = plain.logOdds(p);
      const v = t.dataSync()[0];
      t.dispose();
      return v;
    });
    const bce = (y: number, v: number) =>
      -(y * Math.log(1 / (1 + Math.exp(-v))) + (1 - y) * Math.log(1 / (1 + Math.exp(v))));
    const labels = [1, 0, 1];
    const weights = [3, 1, 0.5];
    const weighted = plain.loss(ps.map((tokens, i) => ({ tokens, label: labels[i], weight: weights[i] })));
    const expected =
      labels.reduce((a, y, i) => a + weights[i] * bce(y, z[i]), 0) / weights.reduce((a, w) => a + w, 0);
    expect(weighted.dataSync()[0]).toBeCloseTo(expected, 5);
    weighted.dispose();
    const smooth = trainer(0.2);
    const sl = smooth.loss(ps.map((tokens, i) => ({ tokens, label: labels[i] })));
    const soft = labels.map((y) => y * 0.8 + 0.1);
    expect(sl.dataSync()[0]).toBeCloseTo(soft.reduce((a, y, i) => a + bce(y, z[i]), 0) / 3, 5);
    sl.dispose();
    expect(() => trainer(1)).toThrow(/labelSmoothing/);
    expect(() => plain.step([{ tokens: ps[0], label: 1, weight: -1 }])).toThrow(/field weight/);
    [plain, smooth].forEach((t) => t.dispose());
    base.dispose();
  });

  it('trainers share one frozen cache only when it starts at their first adapted block', () => {
    const a2 = LoraAdapter.create(model.hp, { layers: 2, rank: 2 });
    const a1 = LoraAdapter.create(model.hp, { layers: 1, rank: 2 });
    const shared = new FrozenPrefixCache(model, a2.firstLayer);
    const t1 = new LoraTrainer(model, a2, { answerTokens: [YES, NO], frozen: shared });
    const t2 = new LoraTrainer(model, a2, { answerTokens: [YES, NO], frozen: shared, learningRate: 1e-3 });
    expect(t1.frozen).toBe(shared);
    t1.pYes(prompts(1, 4, 2)[0]);
    expect(shared.stats.prompts).toBeGreaterThan(0);
    // A trainer that does not own the cache leaves it usable for the next one.
    t1.dispose();
    expect(t2.pYes(prompts(1, 4, 2)[0])).toBeGreaterThan(0);
    expect(shared.stats.hits).toBeGreaterThan(0);
    expect(() => new LoraTrainer(model, a1, { answerTokens: [YES, NO], frozen: shared })).toThrow(
      /field frozen/,
    );
    t2.dispose();
    shared.dispose();
    [a1, a2].forEach((a) => a.dispose());
  });

  it('serialize/deserialize and clone keep the weights, and clones are independent', () => {
    const a = LoraAdapter.create(model.hp, {
      layers: 2,
      rank: 3,
      alpha: 5,
      targets: ['q', 'v', 'down'],
      seed: 3,
    });
    randomiseB(a, 31);
    const p = prompts(1, 6, 9)[0];
    const z = (ad: LoraAdapter) =>
      model.forward(p, { logitTokens: [YES, NO], lora: ad.layerLora() }).tokenLogits!.reduce((x, y) => x - y);
    const back = LoraAdapter.deserialize(model.hp, a.serialize());
    expect(back.userConfig()).toEqual(a.userConfig());
    expect(z(back)).toBe(z(a));
    const c = a.clone();
    expect(z(c)).toBe(z(a));
    randomiseB(c, 77);
    expect(z(c)).not.toBeCloseTo(z(a), 3);
    const raw = JSON.parse(a.serialize()) as { weights: Record<string, { a: string }> };
    const first = Object.keys(raw.weights)[0];
    raw.weights[first].a = raw.weights[first].a.slice(0, 8);
    expect(() => LoraAdapter.deserialize(model.hp, JSON.stringify(raw))).toThrow(/wrong size/);
    expect(() => LoraAdapter.deserialize(model.hp, '{"format":"x"}')).toThrow(CorellaError);
    [a, back, c].forEach((x) => x.dispose());
  });
});
