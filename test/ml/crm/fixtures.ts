import type { CtrDataset, EncodedSplit, FeatureMap, SplitName } from '../../../ml/data/types.js';

/** Deterministic PRNG for fixtures (independent of the code under test). */
function lcg(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

export interface SyntheticOptions {
  users?: number;
  items?: number;
  rows?: number;
  maxLen?: number;
  dense?: number;
  seed?: number;
  featureMapId?: string;
}

/**
 * A small CTR dataset with a learnable signal: clicks follow user·item latent factors plus an
 * interaction between user group and item genre (which the cross network can use) and a history term.
 * Fields: user_id, item_id, user_group, item_genre (categorical), history (sequence sharing item_id).
 */
export function syntheticDataset(opts: SyntheticOptions = {}): CtrDataset {
  const users = opts.users ?? 40;
  const items = opts.items ?? 50;
  const rows = opts.rows ?? 3000;
  const L = opts.maxLen ?? 6;
  const nDense = opts.dense ?? 0;
  const rand = lcg(opts.seed ?? 7);
  const k = 4;
  const uf = Array.from({ length: users }, () => Array.from({ length: k }, () => rand() * 2 - 1));
  const vf = Array.from({ length: items }, () => Array.from({ length: k }, () => rand() * 2 - 1));
  const group = Array.from({ length: users }, () => Math.floor(rand() * 3));
  const genre = Array.from({ length: items }, () => Math.floor(rand() * 4));
  const fm: FeatureMap = {
    id: opts.featureMapId ?? 'fm-synthetic-1',
    categorical: [
      { name: 'user_id', kind: 'categorical', vocabSize: users + 1 },
      { name: 'item_id', kind: 'categorical', vocabSize: items + 1 },
      { name: 'user_group', kind: 'categorical', vocabSize: 4 },
      { name: 'item_genre', kind: 'categorical', vocabSize: 5 },
    ],
    sequences: [
      { name: 'history', kind: 'sequence', vocabSize: items + 1, maxLen: L, sharesVocabWith: 'item_id' },
    ],
    dense: Array.from({ length: nDense }, (_, i) => ({ name: `d${i}`, kind: 'dense' as const })),
    vocabularies: {},
  };
  const all = Array.from({ length: rows }, (_, r) => {
    const u = Math.floor(rand() * users);
    const it = Math.floor(rand() * items);
    const hlen = Math.floor(rand() * (L + 1));
    const hist = Array.from({ length: hlen }, () => 1 + Math.floor(rand() * items));
    const dense = Array.from({ length: nDense }, () => rand());
    let z = 0;
    for (let j = 0; j < k; j++) z += uf[u][j] * vf[it][j];
    z *= 1.5;
    z += group[u] === genre[it] % 3 ? 1.2 : -0.6;
    if (hlen > 0) z += (0.3 * hist.filter((h) => genre[h - 1] === genre[it]).length) / hlen;
    if (nDense) z += dense[0] - 0.5;
    const label = rand() < 1 / (1 + Math.exp(-z)) ? 1 : 0;
    return { u, it, hist, dense, label, ts: 1_000_000 + r };
  });
  const make = (name: SplitName, part: typeof all): EncodedSplit => {
    const n = part.length;
    const s: EncodedSplit = {
      name,
      size: n,
      labels: new Float32Array(n),
      sampleIds: new Uint32Array(n),
      timestamps: new Float64Array(n),
      userRows: new Int32Array(n),
      categorical: new Int32Array(n * 4),
      sequences: [new Int32Array(n * L)],
      dense: new Float32Array(n * nDense),
      targetItemRows: new Int32Array(n),
      historyItemRows: new Int32Array(n * L).fill(-1),
      historyRatings: new Float32Array(n * L).fill(NaN),
      historyLen: L,
    };
    part.forEach((p, i) => {
      s.labels[i] = p.label;
      s.sampleIds[i] = p.ts;
      s.timestamps[i] = p.ts;
      s.userRows[i] = p.u;
      s.categorical.set([p.u + 1, p.it + 1, group[p.u] + 1, genre[p.it] + 1], i * 4);
      s.sequences[0].set(p.hist, i * L);
      s.dense.set(p.dense, i * nDense);
      s.targetItemRows[i] = p.it;
      p.hist.forEach((h, j) => (s.historyItemRows[i * L + j] = h - 1));
    });
    return s;
  };
  const a = Math.floor(rows * 0.8);
  const b = Math.floor(rows * 0.9);
  const splits = {
    train: make('train', all.slice(0, a)),
    valid: make('valid', all.slice(a, b)),
    test: make('test', all.slice(b)),
  };
  const stats = Object.fromEntries(
    Object.entries(splits).map(([n, s]) => {
      const pos = s.labels.reduce((x, y) => x + y, 0);
      return [n, { size: s.size, positives: pos, positiveRate: pos / Math.max(1, s.size) }];
    }),
  ) as CtrDataset['manifest']['stats'];
  return {
    manifest: {
      versionId: 'synthetic',
      source: 'synthetic-movielens',
      params: {},
      inputs: [],
      featureMapArtifact: '',
      itemTableArtifact: '',
      splitArtifacts: { train: '', valid: '', test: '' },
      stats,
      dropped: {},
      userCount: users,
      itemCount: items,
    },
    featureMap: fm,
    items: { ids: [], titles: [], genres: [] },
    splits,
  };
}
