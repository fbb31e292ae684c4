/**
 * The CRM speed benchmarks' data shape (the PyTorch peer's, ../shared/peer/dcnv2_torch.py): categorical
 * fields only, ids drawn uniformly per field and coin-flip labels, from one LCG as the peer draws them.
 * Speed does not depend on what the data means, and the same seed gives the same split everywhere
 * (benchmarks and the equivalence tests that run on the benchmark's shape).
 */
import type { EncodedSplit, FeatureMap } from './types.js';

export function uniformCategoricalSplit(
  id: string,
  vocabs: readonly number[],
  rows: number,
  seed = 42,
): { featureMap: FeatureMap; split: EncodedSplit } {
  let s = seed >>> 0;
  const rnd = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296;
  const labels = Float32Array.from({ length: rows }, () => (rnd() < 0.5 ? 1 : 0));
  return {
    featureMap: {
      id,
      categorical: vocabs.map((v, i) => ({ name: `f${i}`, kind: 'categorical' as const, vocabSize: v })),
      sequences: [],
      dense: [],
      vocabularies: {},
    },
    split: {
      name: 'train',
      size: rows,
      labels,
      sampleIds: Uint32Array.from({ length: rows }, (_, i) => i),
      timestamps: new Float64Array(rows),
      userRows: new Int32Array(rows),
      categorical: Int32Array.from({ length: rows * vocabs.length }, (_, i) =>
        Math.floor(rnd() * vocabs[i % vocabs.length]),
      ),
      sequences: [],
      dense: new Float32Array(0),
      targetItemRows: new Int32Array(rows),
      historyItemRows: new Int32Array(0),
      historyRatings: new Float32Array(0),
      historyLen: 0,
    },
  };
}
