import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { CorellaError } from '../../../ml/errors.js';
import { LlmFeatureExtractor } from '../../../ml/llm/features.js';
import type { LlmConfig } from '../../../ml/llm/config.js';
import type { LlmFeatures } from '../../../ml/llm/types.js';
import type { Progress } from '../../../ml/progress.js';
import { writeTinyGguf } from '../../helpers/tiny-gguf.js';
import { ITEMS, makeSplit } from './fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'corella-llm-features-'));
const modelPath = join(dir, 'tiny.gguf');
const config: LlmConfig = { model: modelPath, threads: 1, contextSize: 512, targetReserveTokens: 16 };
const split = makeSplit(3, 4);
const allRows = Array.from({ length: split.size }, (_, i) => i);
let reference: LlmFeatures;

beforeAll(async () => {
  writeTinyGguf(modelPath, { seed: 11 });
  const ex = await LlmFeatureExtractor.open(config, new FileArtifactStore(join(dir, 'ref-store')));
  try {
    reference = await ex.extract(split, ITEMS, allRows, { chunkSize: 5 });
  } finally {
    await ex.dispose();
  }
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function expectClose(a: LlmFeatures, b: LlmFeatures, tol = 1e-3): void {
  expect(Array.from(a.sampleIds)).toEqual(Array.from(b.sampleIds));
  expect(a.hiddenDim).toBe(b.hiddenDim);
  for (let i = 0; i < a.pYes.length; i++) expect(Math.abs(a.pYes[i] - b.pYes[i])).toBeLessThan(tol);
  for (let i = 0; i < a.hidden.length; i++) expect(Math.abs(a.hidden[i] - b.hidden[i])).toBeLessThan(tol);
}

async function withExtractor<T>(
  storeDir: string,
  fn: (ex: LlmFeatureExtractor) => Promise<T>,
  cfg: LlmConfig = config,
): Promise<T> {
  const ex = await LlmFeatureExtractor.open(cfg, new FileArtifactStore(storeDir));
  try {
    return await fn(ex);
  } finally {
    await ex.dispose();
  }
}

describe('LlmFeatureExtractor', () => {
  it('returns row-aligned features for the requested rows (duplicates included)', async () => {
    expect(reference.hiddenDim).toBe(32);
    expect(reference.pYes.length).toBe(split.size);
    expect(reference.hidden.length).toBe(split.size * 32);
    expect(Array.from(reference.sampleIds)).toEqual(Array.from(split.sampleIds));
    for (let i = 0; i < split.size; i++) {
      expect(reference.pYes[i]).toBeGreaterThan(0);
      expect(reference.pYes[i]).toBeLessThan(1);
      expect(1 / (1 + Math.exp(-reference.logOdds[i]))).toBeCloseTo(reference.pYes[i], 4);
    }
    const rows = [7, 2, 7];
    const f = await withExtractor(join(dir, 'ref-store'), (ex) => ex.features(split, ITEMS, rows));
    expect(Array.from(f.sampleIds)).toEqual(rows.map((r) => split.sampleIds[r]));
    expect(f.pYes[0]).toBe(reference.pYes[7]);
    expect(f.pYes[2]).toBe(reference.pYes[7]);
    expect(Array.from(f.hidden.subarray(32, 64))).toEqual(
      Array.from(reference.hidden.subarray(2 * 32, 3 * 32)),
    );
  });

  it('a rerun reuses the cache and does no LLM work (the model is not even loaded)', async () => {
    const store = join(dir, 'rerun');
    const first = await withExtractor(store, async (ex) => {
      const f = await ex.extract(split, ITEMS, allRows, { chunkSize: 4 });
      expect(ex.stats.prompts).toBe(split.size);
      expect(ex.lastReport!.chunksWritten).toBe(3);
      return f;
    });
    expectClose(first, reference);
    const second = await withExtractor(store, async (ex) => {
      const f = await ex.extract(split, ITEMS, allRows);
      expect(ex.stats.prompts).toBe(0);
      expect(ex.modelLoaded).toBe(false);
      expect(ex.lastReport!.fromCache).toBe(split.size);
      return f;
    });
    expect(Array.from(second.pYes)).toEqual(Array.from(first.pYes));
    expect(Array.from(second.hidden)).toEqual(Array.from(first.hidden));
  });

  it('itemAffinity adds the three affinity features beside the unchanged hidden state, from cached item vectors', async () => {
    const store = join(dir, 'affinity');
    const cfg: LlmConfig = { ...config, itemAffinity: { referenceItems: 4 } };
    const distinctItems = new Set<number>();
    for (let r = 0; r < split.size; r++) {
      distinctItems.add(split.targetItemRows[r]);
      for (let j = 0; j < split.historyLen; j++) {
        const it = split.historyItemRows[r * split.historyLen + j];
        if (it >= 0) distinctItems.add(it);
      }
    }
    for (const it of [0, 2, 4, 6]) distinctItems.add(it); // the reference rows of an 8-item table
    const first = await withExtractor(
      store,
      async (ex) => {
        const f = await ex.extract(split, ITEMS, allRows);
        // One prompt per sample plus one per distinct item (targets, history items, reference items).
        expect(ex.stats.prompts).toBe(split.size + distinctItems.size);
        return f;
      },
      cfg,
    );
    expect(first.hiddenDim).toBe(32);
    expect(first.affinity).toHaveLength(split.size * 3);
    const affinity = first.affinity!;
    for (let i = 0; i < split.size; i++) {
      const head = Array.from(first.hidden.subarray(i * 32, (i + 1) * 32));
      const ref = Array.from(reference.hidden.subarray(i * 32, (i + 1) * 32));
      head.forEach((x, k) => expect(Math.abs(x - ref[k])).toBeLessThan(1e-3));
      const [liked, disliked, weighted] = affinity.subarray(i * 3, i * 3 + 3);
      for (const x of [liked, disliked]) {
        expect(x).toBeGreaterThanOrEqual(-1 - 1e-6);
        expect(x).toBeLessThanOrEqual(1 + 1e-6);
      }
      expect(Number.isFinite(weighted)).toBe(true);
    }
    // The features vary with the sample (they are not a constant that standardisation would erase).
    const likedCol = Array.from({ length: split.size }, (_, i) => affinity[i * 3]);
    expect(new Set(likedCol.map((x) => x.toFixed(5))).size).toBeGreaterThan(2);
    // A rerun (another process) needs no model: sample features and item vectors both come from the cache.
    const second = await withExtractor(
      store,
      async (ex) => {
        const f = await ex.extract(split, ITEMS, [5, 1]);
        expect(ex.modelLoaded).toBe(false);
        return f;
      },
      cfg,
    );
    expect(Array.from(second.hidden.subarray(0, 32))).toEqual(
      Array.from(first.hidden.subarray(5 * 32, 6 * 32)),
    );
    expect(Array.from(second.affinity!.subarray(0, 3))).toEqual(Array.from(affinity.subarray(5 * 3, 6 * 3)));
    // Other titles are another item table: its vectors are computed anew, never taken from the first one's.
    const renamed = { ...ITEMS, titles: ITEMS.titles.map((t) => `${t} redux`) };
    const third = await withExtractor(
      store,
      async (ex) => {
        const f = await ex.extract(split, renamed, [5]);
        expect(ex.stats.prompts).toBeGreaterThan(0);
        return f;
      },
      cfg,
    );
    expect(Array.from(third.affinity!.subarray(0, 3))).not.toEqual(
      Array.from(affinity.subarray(5 * 3, 6 * 3)),
    );
  });

  it('keys the cache by template: another template computes anew', async () => {
    const store = join(dir, 'templates');
    await withExtractor(store, (ex) => ex.extract(split, ITEMS, [0, 1]));
    const n = await withExtractor(
      store,
      async (ex) => {
        await ex.extract(split, ITEMS, [0, 1]);
        return ex.stats.prompts;
      },
      { ...config, template: 'compact' },
    );
    expect(n).toBe(2);
  });

  it('keys the cache by namespace (dataset version): another namespace computes anew', async () => {
    const storeDir = join(dir, 'namespaces');
    const run = async (namespace: string): Promise<number> => {
      const ex = await LlmFeatureExtractor.open(config, new FileArtifactStore(storeDir), { namespace });
      try {
        await ex.extract(split, ITEMS, [0, 1, 2]);
        return ex.stats.prompts;
      } finally {
        await ex.dispose();
      }
    };
    expect(await run('dataset-a')).toBe(3);
    expect(await run('dataset-a')).toBe(0);
    expect(await run('dataset-b')).toBe(3);
  });

  it('resumes after a cancelled run from the last complete chunk', async () => {
    const store = join(dir, 'resume');
    const ac = new AbortController();
    const seen: Progress[] = [];
    await expect(
      withExtractor(store, (ex) =>
        ex.extract(split, ITEMS, allRows, {
          chunkSize: 3,
          signal: ac.signal,
          onProgress: (p) => {
            seen.push(p);
            if (p.checkpoint && seen.filter((q) => q.checkpoint).length === 2)
              ac.abort(new Error('cancelled by test'));
          },
        }),
      ),
    ).rejects.toThrow('cancelled by test');
    const last = seen[seen.length - 1];
    expect(last.done).toBe(6);
    expect(last.total).toBe(split.size);
    expect(last.tokensPerSec).toBeGreaterThan(0);
    expect(last.etaSec).toBeGreaterThan(0);
    const resumed = await withExtractor(store, async (ex) => {
      expect(ex.cache.size).toBe(6);
      const f = await ex.extract(split, ITEMS, allRows, { chunkSize: 3 });
      expect(ex.stats.prompts).toBe(split.size - 6);
      return f;
    });
    expectClose(resumed, reference);
  });

  it('a crash while writing a chunk keeps only whole chunks; the rerun completes the rest', async () => {
    const storeDir = join(dir, 'crash');
    // A store whose second blob write dies (disk full, killed process): chunk 2 never becomes visible.
    const failing = new FileArtifactStore(storeDir);
    const put = failing.put.bind(failing);
    let puts = 0;
    failing.put = async (data) => {
      if (++puts === 2) throw new Error('simulated crash while writing');
      return put(data);
    };
    const ex = await LlmFeatureExtractor.open(config, failing);
    await expect(ex.extract(split, ITEMS, allRows, { chunkSize: 5 })).rejects.toThrow('simulated crash');
    await ex.dispose();
    const resumed = await withExtractor(storeDir, async (ex2) => {
      expect(ex2.cache.size).toBe(5);
      expect(ex2.cache.chunkCount).toBe(1);
      const f = await ex2.extract(split, ITEMS, allRows, { chunkSize: 5 });
      expect(ex2.stats.prompts).toBe(split.size - 5);
      return f;
    });
    expectClose(resumed, reference);
  });

  it('the naive path (no prefix reuse) gives the same features', async () => {
    const naive = await withExtractor(join(dir, 'naive'), (ex) =>
      ex.extract(split, ITEMS, allRows, { reusePrefix: false }),
    );
    expectClose(naive, reference);
  });

  it('anchored history blocks make consecutive prompts of a user share their prefix', async () => {
    // Real timelines: each sample's history is its user's earlier targets, most recent last.
    const users = 2;
    const per = 8;
    const L = 12;
    const t = makeSplit(users, per, L, 0);
    for (let r = 0; r < t.size; r++) {
      const u = t.userRows[r];
      const k = Math.round((t.timestamps[r] - 1e9 - u) / 60); // the sample's index in its user's timeline
      const timeline = Array.from({ length: L + per }, (_, i) => (u * 5 + i) % ITEMS.ids.length);
      t.targetItemRows[r] = timeline[L + k];
      for (let j = 0; j < L; j++) {
        t.historyItemRows[r * L + j] = timeline[k + j];
        t.historyRatings[r * L + j] = 1 + ((u + k + j) % 5);
      }
    }
    const rows = Array.from({ length: t.size }, (_, i) => i);
    const run = (historyBlock: number, reusePrefix = true) =>
      withExtractor(
        join(dir, `blocks-${historyBlock}-${reusePrefix}`),
        async (ex) => {
          const f = await ex.extract(t, ITEMS, rows, { reusePrefix });
          return { f, report: ex.lastReport! };
        },
        { ...config, maxHistoryItems: 3, historyBlock },
      );
    const sliding = await run(1);
    const anchored = await run(4);
    const naive = await run(4, false);
    const ratio = (x: { report: { evaluatedTokens: number; promptTokens: number } }) =>
      x.report.evaluatedTokens / x.report.promptTokens;
    expect(ratio(anchored)).toBeLessThan(0.6);
    expect(ratio(anchored)).toBeLessThan(ratio(sliding) * 0.75);
    expect(ratio(naive)).toBe(1);
    expectClose(anchored.f, naive.f);
    // Same rows, other windows: the features differ (and are cached under another key).
    let differs = false;
    for (let i = 0; i < t.size; i++) differs ||= Math.abs(anchored.f.pYes[i] - sliding.f.pYes[i]) > 1e-4;
    expect(differs).toBe(true);
  });

  it('PROMPT_TOO_LONG before any work, leaving the cache untouched', async () => {
    const store = join(dir, 'toolong');
    const err = await withExtractor(
      store,
      (ex) =>
        ex.extract(split, ITEMS, allRows).then(
          () => undefined,
          (e: unknown) => e,
        ),
      { ...config, contextSize: 48, targetReserveTokens: 0 },
    );
    expect(err).toBeInstanceOf(CorellaError);
    expect((err as CorellaError).code).toBe('PROMPT_TOO_LONG');
    expect((err as CorellaError).message).toMatch(/sample \d+ needs \d+ tokens even with an empty history/);
    const left = await withExtractor(store, async (ex) => ex.cache.size, {
      ...config,
      contextSize: 48,
      targetReserveTokens: 0,
    });
    expect(left).toBe(0);
  });

  it('truncates long histories by tokens to fit a small context', async () => {
    const long = makeSplit(1, 1, 40, 40);
    const ctx = 160;
    const [full, cut] = await withExtractor(
      join(dir, 'trunc'),
      async (ex) => [await ex.prompt(long, ITEMS, 0), await ex.prompt(long, ITEMS, 0)],
      { ...config, contextSize: ctx },
    );
    expect(full.tokens).toEqual(cut.tokens);
    expect(full.tokens.length).toBeLessThan(ctx);
    expect(full.historyItemsUsed).toBeGreaterThan(0);
    expect(full.historyItemsUsed).toBeLessThan(40);
    // The most recent history item is kept, the oldest is dropped.
    expect(full.text).toContain(ITEMS.titles[long.historyItemRows[39]]);
    const f = await withExtractor(join(dir, 'trunc'), (ex) => ex.extract(long, ITEMS, [0]), {
      ...config,
      contextSize: ctx,
    });
    expect(f.pYes[0]).toBeGreaterThan(0);
  });

  it('rejects rows outside the split', async () => {
    await expect(
      withExtractor(join(dir, 'rows'), (ex) => ex.extract(split, ITEMS, [split.size])),
    ).rejects.toThrow(/outside split/);
  });
});
