import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../../ml/artifacts/store.js';
import { CorellaError } from '../../../../ml/errors.js';
import { FrozenPrefixCache } from '../../../../ml/llm/tf/frozen-prefix.js';
import { FrozenOutputStore, type FrozenStoreKey } from '../../../../ml/llm/tf/frozen-store.js';
import { LlamaTf } from '../../../../ml/llm/tf/llama-forward.js';
import { LoraAdapter } from '../../../../ml/llm/tf/lora.js';
import { LoraTrainer, type LoraSample } from '../../../../ml/llm/tf/lora-train.js';
import { initTf } from '../../../../ml/tf/backend.js';
import { writeTinyGguf } from '../../../helpers/tiny-gguf.js';

/**
 * The frozen cache under a memory budget smaller than the run's entries: evicted entries come back from
 * the store, so training is bit for bit what it is with every entry in memory, and the resident bytes
 * never pass the budget.
 */
const dir = mkdtempSync(join(tmpdir(), 'corella-frozen-memory-'));
const modelPath = join(dir, 'tiny.gguf');
let model: LlamaTf;
const YES = 300;
const NO = 301;
const FIRST = 2;

/** History-block-like prompts: blocks of four extending one another (prefix sharing inside a block). */
function prompts(): number[][] {
  const out: number[][] = [];
  for (let b = 0; b < 6; b++) {
    const head = [1, 40, 41, 42, 50 + b, 51 + b];
    for (let i = 0; i < 4; i++)
      out.push([...head, ...Array.from({ length: i + 2 }, (_, j) => 60 + b + j), 7 + i]);
  }
  return out;
}

function storeOf(name: string, key: Partial<FrozenStoreKey> = {}): FrozenOutputStore {
  return new FrozenOutputStore(
    new FileArtifactStore(join(dir, name)),
    { namespace: 'ds', modelSha256: 'b'.repeat(64), firstLayer: FIRST, keepLayers: [], ...key },
    model.hp.nEmbd,
  );
}

function entryBytes(tokens: readonly number[]): number {
  return tokens.length * model.hp.nEmbd * 4;
}

beforeAll(async () => {
  await initTf(undefined, () => undefined);
  writeTinyGguf(modelPath, { seed: 9, nLayer: 3, nHeadKv: 2 });
  model = await LlamaTf.load(modelPath);
});

afterAll(() => {
  model?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** Three epochs of batches of 4 in a fixed shuffled order; the losses, the final LoRA and the peak bytes. */
async function train(frozen: FrozenPrefixCache, threads = 1) {
  const ps = prompts();
  const samples: LoraSample[] = ps.map((tokens, i) => ({ tokens, label: (i * 7) % 3 === 0 ? 1 : 0 }));
  const adapter = LoraAdapter.create(model.hp, { layers: 1, rank: 2, seed: 4 });
  const trainer = new LoraTrainer(model, adapter, {
    answerTokens: [YES, NO],
    learningRate: 2e-2,
    frozen,
    threads,
  });
  const losses: number[] = [];
  let maxResident = 0;
  try {
    // Not the prompts' order, so the LRU keeps missing (a block's prompts are apart in a batch).
    const order = Array.from({ length: ps.length }, (_, i) => (i * 5) % ps.length);
    for (let epoch = 0; epoch < 3; epoch++) {
      for (let s = 0; s < order.length; s += 4) {
        losses.push(trainer.step(order.slice(s, s + 4).map((i) => samples[i])));
        maxResident = Math.max(maxResident, frozen.residentBytes);
      }
    }
    const weights = await adapter.toHost();
    return { losses, weights, maxResident };
  } finally {
    await trainer.close();
    trainer.dispose();
    adapter.dispose();
  }
}

describe('frozen cache under a memory budget', () => {
  it('trains bit for bit as the unlimited cache, reading evicted entries back, within its budget', async () => {
    const ps = prompts();
    const all = ps.reduce((a, p) => a + entryBytes(p), 0);
    const unlimited = new FrozenPrefixCache(model, FIRST, 2 ** 30);
    await unlimited.warm(ps, { store: storeOf('unlimited') });
    const ref = await train(unlimited);
    expect(unlimited.stats.storeReads).toBe(0);
    expect(unlimited.peakResidentBytes).toBe(all);

    // About a sixth of the entries fit: every step of every epoch reads most of its batch from the store.
    const budget = Math.ceil(all / 6);
    const bounded = new FrozenPrefixCache(model, FIRST, budget);
    const store = storeOf('bounded');
    bounded.attachStore(store);
    expect(await bounded.warm(ps, { store })).toEqual({ fromStore: 0, computed: ps.length });
    expect(bounded.peakResidentBytes).toBeLessThanOrEqual(budget);
    const got = await train(bounded);
    expect(got.losses).toEqual(ref.losses);
    expect(got.weights).toEqual(ref.weights);
    expect(got.maxResident).toBeLessThanOrEqual(budget);
    expect(bounded.peakResidentBytes).toBeLessThanOrEqual(budget);
    expect(bounded.residentEntries).toBeLessThan(ps.length);
    expect(bounded.stats.storeReads).toBeGreaterThan(ps.length);
    unlimited.dispose();
    bounded.dispose();
  }, 120_000);

  it('with 2 training threads as well (the parallel step reads its inputs through the same cache)', async () => {
    const ps = prompts();
    const all = ps.reduce((a, p) => a + entryBytes(p), 0);
    const unlimited = new FrozenPrefixCache(model, FIRST, 2 ** 30);
    await unlimited.warm(ps);
    const ref = await train(unlimited, 2);
    const bounded = new FrozenPrefixCache(model, FIRST, Math.ceil(all / 5));
    const store = storeOf('bounded-threads');
    bounded.attachStore(store);
    await bounded.warm(ps, { store });
    const got = await train(bounded, 2);
    expect(got.losses).toEqual(ref.losses);
    expect(got.weights).toEqual(ref.weights);
    expect(bounded.peakResidentBytes).toBeLessThanOrEqual(Math.ceil(all / 5));
    expect(bounded.stats.storeReads).toBeGreaterThan(0);
    unlimited.dispose();
    bounded.dispose();
  }, 120_000);

  it('an entry in neither memory nor the store is a typed error, not a fresh pass or zeros', async () => {
    const ps = prompts();
    const cache = new FrozenPrefixCache(model, FIRST, 4 * entryBytes(ps[ps.length - 1]));
    const store = storeOf('missing');
    cache.attachStore(store);
    await cache.warm(ps, { store });
    const never = [1, 2, 3, 4, 5];
    const err = (() => {
      try {
        cache.input(never);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(CorellaError);
    expect((err as CorellaError).code).toBe('ARTIFACT_NOT_FOUND');
    expect((err as CorellaError).message).toContain(store.name(never));
    expect(cache.has(never)).toBe(false);
    cache.dispose();
  });

  it('refuses a budget it cannot honour, naming the field, and leaves the cache as it was', async () => {
    for (const bad of [-1, Number.NaN])
      expect(() => new FrozenPrefixCache(model, FIRST, bad)).toThrow(/field maxBytes/);
    const ps = prompts();
    // No store: the entries would have to be dropped, and they cannot be read back.
    const noStore = new FrozenPrefixCache(model, FIRST, 3 * entryBytes(ps[0]));
    await expect(noStore.warm(ps)).rejects.toThrow(/no store is attached.*field maxBytes/);
    expect(noStore.residentBytes).toBeLessThanOrEqual(3 * entryBytes(ps[0]));
    noStore.dispose();
    // Below one entry, even with a store.
    const tiny = new FrozenPrefixCache(model, FIRST, entryBytes(ps[0]) - 1);
    const store = storeOf('tiny');
    tiny.attachStore(store);
    await expect(tiny.warm(ps, { store })).rejects.toThrow(/below one entry.*field maxBytes/);
    expect(tiny.residentBytes).toBe(0);
    tiny.dispose();
    // A store of other frozen blocks.
    expect(() =>
      new FrozenPrefixCache(model, FIRST, 2 ** 20).attachStore(storeOf('other', { firstLayer: 1 })),
    ).toThrow(/field store/);
  });
});
