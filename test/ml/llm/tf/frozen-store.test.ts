import { mkdtempSync, rmSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../../ml/artifacts/store.js';
import { CorellaError } from '../../../../ml/errors.js';
import { warmFrozenParallel } from '../../../../ml/llm/tf/frozen-parallel.js';
import { FrozenPrefixCache } from '../../../../ml/llm/tf/frozen-prefix.js';
import {
  decodeFrozenEntry,
  encodeFrozenEntry,
  FrozenOutputStore,
} from '../../../../ml/llm/tf/frozen-store.js';
import { LlamaTf } from '../../../../ml/llm/tf/llama-forward.js';
import { initTf } from '../../../../ml/tf/backend.js';
import { writeTinyGguf } from '../../../helpers/tiny-gguf.js';

const dir = mkdtempSync(join(tmpdir(), 'corella-frozen-store-'));
const modelPath = join(dir, 'tiny.gguf');
let model: LlamaTf;

/** History-block-like prompts: a shared head, blocks of three extending one another, then a tail. */
function prompts(): number[][] {
  const out: number[][] = [];
  for (let b = 0; b < 4; b++) {
    const head = [1, 40, 41, 42, 50 + b, 51 + b];
    for (let i = 0; i < 3; i++)
      out.push([...head, ...Array.from({ length: i + 2 }, (_, j) => 60 + b + j), 7 + i]);
  }
  return out;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

beforeAll(async () => {
  await initTf(undefined, () => undefined);
  writeTinyGguf(modelPath, { seed: 5, nLayer: 3, nHeadKv: 2 });
  model = await LlamaTf.load(modelPath);
});

afterAll(() => {
  model?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe('frozen-prefix outputs on disk', () => {
  it('encodes and decodes an entry exactly, and refuses another prompt or a damaged one', () => {
    const cache = new FrozenPrefixCache(model, 2, 2 ** 30, [0]);
    const tokens = prompts()[0];
    const e = cache.compute(tokens);
    const E = model.hp.nEmbd;
    const buf = encodeFrozenEntry(tokens, e, E, 2);
    const back = decodeFrozenEntry(buf, tokens, E, 2, 'test');
    expect(Array.from(back.input)).toEqual(Array.from(e.input));
    expect(Array.from(back.lastHidden.get(0)!)).toEqual(Array.from(e.lastHidden.get(0)!));
    const other = [...tokens.slice(0, -1), tokens[tokens.length - 1] + 1];
    expect(() => decodeFrozenEntry(buf, other, E, 2, 'test')).toThrow(/token .* differs/);
    expect(() => decodeFrozenEntry(buf, tokens, E, 1, 'test')).toThrow(CorellaError);
    expect(() => decodeFrozenEntry(buf.subarray(0, buf.length - 4), tokens, E, 2, 'test')).toThrow(/length/);
    cache.dispose();
  });

  it('warm() computes once, then a new cache answers every prompt from the store with equal outputs', async () => {
    const store = new FileArtifactStore(join(dir, 'store-a'));
    const key = { namespace: 'ds1', modelSha256: 'a'.repeat(64), firstLayer: 2, keepLayers: [1] };
    const ps = prompts();
    const first = new FrozenPrefixCache(model, 2, 2 ** 30, [1]);
    const r1 = await first.warm(ps, { store: new FrozenOutputStore(store, key, model.hp.nEmbd) });
    expect(r1).toEqual({ fromStore: 0, computed: ps.length });
    // Prefix reuse inside blocks: fewer tokens run than the prompts hold.
    expect(first.stats.evaluatedTokens).toBeLessThan(ps.reduce((a, p) => a + p.length, 0));
    const second = new FrozenPrefixCache(model, 2, 2 ** 30, [1]);
    const r2 = await second.warm(ps, { store: new FrozenOutputStore(store, key, model.hp.nEmbd) });
    expect(r2).toEqual({ fromStore: ps.length, computed: 0 });
    expect(second.stats.evaluatedTokens).toBe(0);
    for (const p of ps) {
      // Stored outputs are the frozen blocks' outputs from scratch (float32 summation order aside).
      expect(
        maxAbsDiff(second.input(p).dataSync() as Float32Array, first.computeFromScratch(p)),
      ).toBeLessThan(1e-5);
      expect(Array.from(second.lastHidden(p).get(1)!)).toEqual(Array.from(first.lastHidden(p).get(1)!));
    }
    // Another key (first adapted block) shares nothing.
    const third = new FrozenPrefixCache(model, 1, 2 ** 30);
    const r3 = await third.warm(ps, {
      store: new FrozenOutputStore(store, { ...key, firstLayer: 1, keepLayers: [] }, model.hp.nEmbd),
    });
    expect(r3.computed).toBe(ps.length);
    [first, second, third].forEach((c) => c.dispose());
  });

  it('a damaged stored entry is ARTIFACT_CORRUPT, not silently used', async () => {
    const root = join(dir, 'store-b');
    const store = new FileArtifactStore(root);
    const fs = new FrozenOutputStore(
      store,
      { modelSha256: 'b'.repeat(64), firstLayer: 2, keepLayers: [] },
      model.hp.nEmbd,
    );
    const ps = prompts().slice(0, 2);
    const c = new FrozenPrefixCache(model, 2);
    await c.warm(ps, { store: fs });
    c.dispose();
    const files: string[] = [];
    const walk = async (d: string) => {
      for (const e of await readdir(d, { withFileTypes: true })) {
        if (e.isDirectory()) await walk(join(d, e.name));
        else if (e.name.endsWith('.bin')) files.push(join(d, e.name));
      }
    };
    await walk(root);
    expect(files.length).toBe(2);
    await writeFile(files[0], Buffer.from('garbage'));
    const again = new FrozenPrefixCache(model, 2);
    await expect(again.warm(ps, { store: fs })).rejects.toMatchObject({ code: 'ARTIFACT_CORRUPT' });
    again.dispose();
  });

  it('two worker threads give the same outputs as one thread, and write them to the store', async () => {
    const ps = prompts();
    const serial = new FrozenPrefixCache(model, 2, 2 ** 30, [0]);
    await serial.warm(ps);
    const store = new FrozenOutputStore(
      new FileArtifactStore(join(dir, 'store-c')),
      {
        modelSha256: 'c'.repeat(64),
        firstLayer: 2,
        keepLayers: [0],
      },
      model.hp.nEmbd,
    );
    const par = new FrozenPrefixCache(model, 2, 2 ** 30, [0]);
    const seen: number[] = [];
    const r = await warmFrozenParallel(par, ps, {
      modelPath,
      threads: 2,
      store,
      onProgress: (d) => seen.push(d),
    });
    expect(r).toEqual({ fromStore: 0, computed: ps.length });
    expect(seen[seen.length - 1]).toBe(ps.length);
    for (const p of ps) {
      expect(par.has(p)).toBe(true);
      expect(
        maxAbsDiff(par.input(p).dataSync() as Float32Array, serial.input(p).dataSync() as Float32Array),
      ).toBeLessThan(1e-6);
      expect(maxAbsDiff(par.lastHidden(p).get(0)!, serial.lastHidden(p).get(0)!)).toBeLessThan(1e-6);
      expect(await store.get(p)).toBeDefined();
    }
    // A second call finds everything in the store and starts no worker.
    const again = new FrozenPrefixCache(model, 2, 2 ** 30, [0]);
    expect(await warmFrozenParallel(again, ps, { modelPath, threads: 2, store })).toEqual({
      fromStore: ps.length,
      computed: 0,
    });
    [serial, par, again].forEach((c) => c.dispose());
  }, 120_000);
});
