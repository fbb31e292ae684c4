import { describe, expect, it } from 'vitest';
import { FrozenPrefixCache } from '../../../../ml/llm/tf/frozen-prefix.js';
import { hostFrozenAvailable } from '../../../../ml/llm/tf/host-frozen.js';
import type { LlamaTf } from '../../../../ml/llm/tf/llama-forward.js';
import { buildPromptTrie, groupPrompts, trieSegment } from '../../../../ml/llm/tf/prompt-trie.js';
import { loadNative } from '../../../../ml/tf/native.js';
import { useTinyLlamaTf } from '../../../helpers/tiny-llama-tf.js';

let model: LlamaTf;
useTinyLlamaTf('corella-frozen-batch-', (m) => (model = m));

/**
 * History-block shaped prompts (each extends the last one's history by an item, then asks about its own
 * target), then the awkward cases: a repeat, a prompt that is a prefix of an earlier one, one sharing
 * nothing, a one-token prompt, and a second block.
 */
function prompts(): number[][] {
  const head = [1, 40, 41, 42, 43, 44, 50, 51, 52];
  const ps: number[][] = [];
  for (let i = 0; i < 5; i++)
    ps.push([...head, ...Array.from({ length: 2 * i }, (_, j) => 60 + j), 200 + i, 7, 8, 9]);
  ps.push([...ps[3]]);
  ps.push(ps[4].slice(0, 12));
  ps.push([2, 90, 91, 92, 93]);
  ps.push([2]);
  const head2 = [1, 40, 41, 80, 81];
  for (let i = 0; i < 3; i++) ps.push([...head2, ...Array.from({ length: i + 1 }, (_, j) => 100 + j), 7]);
  return ps;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('prompt trie', () => {
  it('stores each distinct prefix once, with positions, parents, paths and the new nodes per prompt', () => {
    const ps = [
      [5, 6, 7],
      [5, 6, 8, 9],
      [5, 6],
      [4, 6],
    ];
    const t = buildPromptTrie(ps);
    expect(t.tokens).toEqual([5, 6, 7, 8, 9, 4, 6]);
    expect(t.positions).toEqual([0, 1, 2, 2, 3, 0, 1]);
    expect(Array.from(t.parents)).toEqual([-1, 0, 1, 1, 3, -1, 5]);
    expect(t.paths.map((p) => Array.from(p))).toEqual([
      [0, 1, 2],
      [0, 1, 3, 4],
      [0, 1],
      [5, 6],
    ]);
    expect(t.firstNew).toEqual([0, 3, 5, 5]);
    expect(trieSegment(t, 0)).toEqual({ start: 0, from: 0 });
    expect(trieSegment(t, 1)).toEqual({ start: 3, from: 2 });
    expect(trieSegment(t, 2)).toBeUndefined();
    expect(trieSegment(t, 3)).toEqual({ start: 5, from: 0 });
  });

  it('groups stay within the node budget, keep order, and cut where a history block starts', () => {
    const ps = prompts();
    for (const budget of [1, 12, 30, 1000]) {
      const groups = groupPrompts(ps, budget);
      expect(groups.flat()).toEqual(ps.map((_, i) => i));
      for (const g of groups) {
        const nodes = buildPromptTrie(g.map((i) => ps[i])).tokens.length;
        if (g.length > 1) expect(nodes).toBeLessThanOrEqual(budget);
      }
    }
    // Budget 45: prompts 0..6 count 41 nodes (more than half), so the unrelated prompt 7 starts a group.
    expect(groupPrompts(ps, 45)[0]).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(groupPrompts(ps, 45)[1][0]).toBe(7);
  });
});

describe('batched frozen pass', () => {
  it('computeBatch equals compute prompt by prompt (inputs and kept last-token rows)', () => {
    const ps = prompts();
    const one = new FrozenPrefixCache(model, 2, 0, [0, 1]);
    const batch = new FrozenPrefixCache(model, 2, 0, [0, 1]);
    try {
      const want = ps.map((p) => one.compute(p));
      for (const budget of [1000, 20]) {
        const got = groupPrompts(ps, budget).flatMap((g) => batch.computeBatch(g.map((i) => ps[i])));
        ps.forEach((_, i) => {
          // Same sums in the same order except for the softmax and sgemm blocking of other row counts.
          expect(maxAbsDiff(got[i].input, want[i].input)).toBeLessThan(1e-5);
          for (const l of [0, 1])
            expect(maxAbsDiff(got[i].lastHidden.get(l)!, want[i].lastHidden.get(l)!)).toBeLessThan(1e-5);
        });
      }
      // The whole list in one trie runs each distinct prefix once.
      const before = batch.stats.evaluatedTokens;
      batch.computeBatch(ps);
      const nodes = buildPromptTrie(ps).tokens.length;
      expect(batch.stats.evaluatedTokens - before).toBe(nodes);
      expect(nodes).toBeLessThan(ps.reduce((n, p) => n + p.length, 0) / 2);
    } finally {
      one.dispose();
      batch.dispose();
    }
  });

  it('warm() batched fills the cache with the same entries as warm() prompt by prompt', async () => {
    const ps = prompts();
    const serial = new FrozenPrefixCache(model, 2);
    const batched = new FrozenPrefixCache(model, 2);
    try {
      const progress: number[] = [];
      expect(await serial.warm(ps, { batchNodes: 0 })).toEqual({ fromStore: 0, computed: ps.length - 1 });
      expect(await batched.warm(ps, { batchNodes: 24, onProgress: (d, n) => progress.push(d / n) })).toEqual({
        fromStore: 0,
        computed: ps.length - 1,
      });
      expect(progress.at(-1)).toBe(1);
      expect(progress.every((p, i) => i === 0 || p >= progress[i - 1])).toBe(true);
      for (const p of ps) {
        const a = serial.input(p);
        const b = batched.input(p);
        expect(maxAbsDiff(b.dataSync() as Float32Array, a.dataSync() as Float32Array)).toBeLessThan(1e-5);
        a.dispose();
        b.dispose();
      }
      expect(batched.stats.hits).toBe(ps.length);
    } finally {
      serial.dispose();
      batched.dispose();
    }
  });

  // CI builds the native addon (test/ml/tf/native-kernels.test.ts fails there without it), so this runs in CI.
  it.runIf(loadNative().addon !== undefined)(
    'the host pass (native sgemm and JS loops) equals the tfjs ops within float32 rounding',
    () => {
      expect(hostFrozenAvailable()).toBe(true);
      const ps = prompts();
      const c = new FrozenPrefixCache(model, 2, 0, [0, 1]);
      try {
        for (const budget of [1000, 20]) {
          for (const g of groupPrompts(ps, budget)) {
            const group = g.map((i) => ps[i]);
            const a = c.computeBatch(group, { host: true });
            const b = c.computeBatch(group, { host: false });
            group.forEach((_, j) => {
              // The tiny model's outputs are of order 1: a few float32 ulps of summation order.
              expect(maxAbsDiff(a[j].input, b[j].input)).toBeLessThan(1e-5);
              for (const l of [0, 1])
                expect(maxAbsDiff(a[j].lastHidden.get(l)!, b[j].lastHidden.get(l)!)).toBeLessThan(1e-5);
            });
          }
        }
        // Not the same code: the host pass does not just call the tfjs one.
        const a = c.computeBatch(ps, { host: true });
        const b = c.computeBatch(ps, { host: false });
        expect(a.some((e, i) => maxAbsDiff(e.input, b[i].input) > 0)).toBe(true);
      } finally {
        c.dispose();
      }
    },
  );
});
