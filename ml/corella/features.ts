import { CorellaError } from '../errors.js';
import type { EncodedSplit, ItemTable } from '../data/types.js';
import type { LlmFeatures, LlmFeatureSource } from '../llm/types.js';
import { throwIfAborted, yieldToEventLoop, type LongRunOptions } from '../progress.js';
import { AFFINITY_FEATURES } from '../llm/item-affinity.js';

/** Item-affinity columns per row of a features set (LlmFeatures.affinity), 0 without them. */
export function affinityWidth(f: LlmFeatures): number {
  return f.affinity ? AFFINITY_FEATURES.length : 0;
}

/**
 * Asks the LLM source for `rows` of `split` in chunks (so progress and cancellation keep flowing while a
 * real LLM works) and returns features row-aligned with `rows`. A source may answer a chunk in any order;
 * a missing sample is an error rather than a silent misalignment of labels and features.
 */
export async function fetchFeatures(
  llm: LlmFeatureSource,
  split: EncodedSplit,
  items: ItemTable,
  rows: ArrayLike<number>,
  opts: LongRunOptions & { chunkSize?: number; stage?: string } = {},
): Promise<LlmFeatures> {
  const chunkSize = Math.max(1, opts.chunkSize ?? 512);
  const n = rows.length;
  let hiddenDim = -1;
  let hidden = new Float32Array(0);
  // Affinity columns per row: fixed by the first chunk, like hiddenDim.
  let affinityDim = -1;
  let affinity: Float32Array | undefined;
  const pYes = new Float32Array(n);
  const logOdds = new Float32Array(n);
  const sampleIds = new Uint32Array(n);
  let modelSha256 = '';
  let template = '';
  const t0 = Date.now();
  for (let s = 0; s < n; s += chunkSize) {
    throwIfAborted(opts.signal);
    const chunk = Array.from({ length: Math.min(chunkSize, n - s) }, (_, i) => rows[s + i]);
    const f = await llm.features(split, items, chunk);
    if (hiddenDim < 0) {
      hiddenDim = f.hiddenDim;
      hidden = new Float32Array(n * hiddenDim);
      modelSha256 = f.modelSha256;
      template = f.template;
      affinityDim = affinityWidth(f);
      if (affinityDim > 0) affinity = new Float32Array(n * affinityDim);
    } else if (f.hiddenDim !== hiddenDim) {
      throw new CorellaError(
        'BAD_CONFIG',
        `LLM source changed hiddenDim from ${hiddenDim} to ${f.hiddenDim} between chunks`,
      );
    }
    const pos = new Map<number, number>();
    for (let i = 0; i < f.sampleIds.length; i++) pos.set(f.sampleIds[i], i);
    for (let i = 0; i < chunk.length; i++) {
      const id = split.sampleIds[chunk[i]];
      const j = f.sampleIds[i] === id ? i : pos.get(id);
      if (j === undefined) {
        throw new CorellaError(
          'DATA_NOT_AVAILABLE',
          `LLM source returned no features for sample ${id} (row ${chunk[i]} of split ${split.name})`,
        );
      }
      const o = s + i;
      sampleIds[o] = id;
      pYes[o] = f.pYes[j];
      logOdds[o] = f.logOdds[j];
      hidden.set(f.hidden.subarray(j * hiddenDim, (j + 1) * hiddenDim), o * hiddenDim);
      if (affinity) {
        if (!f.affinity) {
          throw new CorellaError('BAD_CONFIG', 'LLM source stopped giving affinity features between chunks');
        }
        affinity.set(f.affinity.subarray(j * affinityDim, (j + 1) * affinityDim), o * affinityDim);
      }
    }
    const done = Math.min(n, s + chunkSize);
    const sec = (Date.now() - t0) / 1000;
    await opts.onProgress?.({
      stage: opts.stage ?? 'llm-features',
      done,
      total: n,
      samplesPerSec: sec > 0 ? done / sec : undefined,
    });
    await yieldToEventLoop();
  }
  return {
    modelSha256,
    template,
    hiddenDim: Math.max(0, hiddenDim),
    sampleIds,
    pYes,
    logOdds,
    hidden,
    ...(affinity ? { affinity } : {}),
  };
}
