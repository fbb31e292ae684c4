/**
 * Test doubles for the CoReLLa unit tests: a tiny embedding + MLP CRM implementing CrmModel, a fake
 * LlmFeatureSource that serves constructed features and records every row it is asked for, and a
 * synthetic dataset builder. All seeded, all in memory.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import type { CrmBatch, CrmConfig, CrmForward, CrmModel } from '../../../ml/crm/types.js';
import type { CtrDataset, EncodedSplit, FeatureMap, ItemTable, SplitName } from '../../../ml/data/types.js';
import type { LlmFeatures, LlmFeatureSource } from '../../../ml/llm/types.js';
import { glorotUniform, mulberry32, permutation } from '../../../ml/random.js';
import { bceWithLogits, column } from '../../../ml/corella/ops.js';
import { dense } from '../../../ml/tf/dense.js';
import type { ArtifactStore } from '../../../ml/artifacts/store.js';
import { AlignmentProjections, defaultPairs } from '../../../ml/corella/alignment.js';
import { JointCheckpointer, type CheckpointRows } from '../../../ml/corella/joint-checkpoint.js';
import { resolveJointConfig, type JointConfigInput } from '../../../ml/corella/joint-config.js';
import type { EpochLoss } from '../../../ml/corella/joint-epochs.js';
import type { JointLlmBranch } from '../../../ml/corella/joint-llm-branch.js';

export async function useCpu(): Promise<void> {
  await tf.setBackend('cpu');
  await tf.ready();
}

/**
 * One-hot categorical fields, concatenated, through ReLU layers `mlp_<i>`, to a logit. (A one-hot times a
 * weight matrix is an embedding lookup; it keeps the test CRM on ops whose gradients ml/tf provides.)
 */
export class TinyCrm implements CrmModel {
  readonly config: CrmConfig;
  readonly featureMapId = 'test-feature-map';
  readonly activationShapes: { name: string; width: number }[];
  private readonly vocabSizes: number[];
  private readonly layers: { w: tf.Variable; b: tf.Variable }[];
  private readonly out: { w: tf.Variable; b: tf.Variable };

  constructor(vocabSizes: number[], opts: { mlp?: number[]; seed?: number } = {}) {
    const mlp = opts.mlp ?? [16, 8];
    const seed = opts.seed ?? 1;
    this.vocabSizes = vocabSizes.slice();
    this.config = {
      kind: 'dcnv2',
      embeddingDim: 0,
      crossLayers: 0,
      crossStructure: 'stacked',
      mlp,
      dropout: 0,
      batchNorm: false,
      l2Embedding: 0,
      seed,
    };
    const rng = mulberry32(seed);
    const mat = (r: number, c: number) => tf.variable(tf.tensor2d(glorotUniform(rng, r, c), [r, c]));
    let fanIn = vocabSizes.reduce((a, b) => a + b, 0);
    this.layers = mlp.map((w) => {
      const l = { w: mat(fanIn, w), b: tf.variable(tf.zeros([w])) };
      fanIn = w;
      return l;
    });
    this.out = { w: mat(fanIn, 1), b: tf.variable(tf.zeros([1])) };
    this.activationShapes = mlp.map((w, i) => ({ name: `mlp_${i}`, width: w }));
  }

  makeBatch(split: EncodedSplit, rows: ArrayLike<number>): CrmBatch {
    const nCat = this.vocabSizes.length;
    const cat = new Int32Array(rows.length * nCat);
    const labels = new Float32Array(rows.length);
    for (let i = 0; i < rows.length; i++) {
      cat.set(split.categorical.subarray(rows[i] * nCat, (rows[i] + 1) * nCat), i * nCat);
      labels[i] = split.labels[rows[i]];
    }
    return {
      categorical: tf.tensor2d(cat, [rows.length, nCat], 'int32'),
      sequences: [],
      labels: tf.tensor1d(labels),
    };
  }

  forward(batch: CrmBatch, opts: { training: boolean; activations?: boolean }): CrmForward {
    const cols = tf.split(batch.categorical, this.vocabSizes.length, 1);
    const hot = cols.map((c, f) => tf.oneHot(tf.reshape(c, [-1]) as tf.Tensor1D, this.vocabSizes[f]));
    let h = tf.cast(tf.concat(hot, 1), 'float32') as tf.Tensor2D;
    const activations: CrmForward['activations'] = [];
    this.layers.forEach((l, i) => {
      h = dense(h, l.w, l.b, 'relu');
      if (opts.activations) activations.push({ name: `mlp_${i}`, value: h });
    });
    return { logits: column(dense(h, this.out.w, this.out.b)), activations };
  }

  regularizer(): tf.Scalar | undefined {
    return undefined;
  }

  trainableVariables(): tf.Variable[] {
    return [...this.layers.flatMap((l) => [l.w, l.b]), this.out.w, this.out.b];
  }

  async predict(split: EncodedSplit, rows?: ArrayLike<number>, batchSize = 2048): Promise<Float32Array> {
    const all = rows ?? Int32Array.from({ length: split.size }, (_, i) => i);
    const out = new Float32Array(all.length);
    for (let s = 0; s < all.length; s += batchSize) {
      const part = Array.from({ length: Math.min(batchSize, all.length - s) }, (_, i) => all[s + i]);
      const b = this.makeBatch(split, part);
      out.set(
        tf.tidy(() => tf.sigmoid(this.forward(b, { training: false }).logits).dataSync()),
        s,
      );
      b.categorical.dispose();
      b.labels.dispose();
    }
    return out;
  }

  dispose(): void {
    this.trainableVariables().forEach((v) => v.dispose());
  }
}

/** Plain Adam on BCE: the "stage 1" of the tests. */
export async function trainTinyCrm(
  crm: TinyCrm,
  split: EncodedSplit,
  epochs = 4,
  lr = 0.02,
  batch = 256,
): Promise<void> {
  const opt = tf.train.adam(lr);
  const rng = mulberry32(99);
  for (let e = 0; e < epochs; e++) {
    const order = Array.from(permutation(rng, split.size));
    for (let s = 0; s < order.length; s += batch) {
      const b = crm.makeBatch(split, order.slice(s, s + batch));
      tf.tidy(() => {
        opt.minimize(
          () => bceWithLogits(crm.forward(b, { training: true }).logits, b.labels),
          false,
          crm.trainableVariables(),
        );
      });
      b.categorical.dispose();
      b.labels.dispose();
    }
  }
  opt.dispose();
}

/** Serves per-sample features constructed by the test and records every row asked for. */
export class FakeLlm implements LlmFeatureSource {
  readonly calls: { split: SplitName; rows: number[] }[] = [];

  constructor(
    readonly hiddenDim: number,
    private readonly byId: Map<number, { hidden: number[]; logOdds: number }>,
  ) {}

  get requestedRows(): number {
    return this.calls.reduce((a, c) => a + c.rows.length, 0);
  }

  async features(split: EncodedSplit, _items: ItemTable, rows: ArrayLike<number>): Promise<LlmFeatures> {
    const list = Array.from(rows);
    this.calls.push({ split: split.name, rows: list });
    const n = list.length;
    const f: LlmFeatures = {
      modelSha256: 'fake-model',
      template: 'fake',
      hiddenDim: this.hiddenDim,
      sampleIds: new Uint32Array(n),
      pYes: new Float32Array(n),
      logOdds: new Float32Array(n),
      hidden: new Float32Array(n * this.hiddenDim),
    };
    list.forEach((r, i) => {
      const id = split.sampleIds[r];
      const v = this.byId.get(id);
      if (!v) throw new Error(`fake LLM has no features for sample ${id}`);
      f.sampleIds[i] = id;
      f.logOdds[i] = v.logOdds;
      f.pYes[i] = 1 / (1 + Math.exp(-v.logOdds));
      f.hidden.set(v.hidden, i * this.hiddenDim);
    });
    return f;
  }
}

export interface SyntheticRow {
  cat: number[];
  label: number;
  hidden: number[];
  logOdds: number;
  /** Free-form tag the test uses to slice results (e.g. the segment). */
  tag: number;
}

export function makeSplit(name: SplitName, rows: SyntheticRow[], firstId: number): EncodedSplit {
  const n = rows.length;
  const nCat = rows[0]?.cat.length ?? 0;
  const categorical = new Int32Array(n * nCat);
  rows.forEach((r, i) => categorical.set(r.cat, i * nCat));
  return {
    name,
    size: n,
    labels: Float32Array.from(rows, (r) => r.label),
    sampleIds: Uint32Array.from(rows, (_, i) => firstId + i),
    timestamps: Float64Array.from(rows, (_, i) => firstId + i),
    userRows: new Int32Array(n),
    categorical,
    sequences: [],
    dense: new Float32Array(0),
    targetItemRows: new Int32Array(n),
    historyItemRows: new Int32Array(0),
    historyRatings: new Float32Array(0),
    historyLen: 0,
  };
}

export function makeDataset(
  splits: Record<SplitName, SyntheticRow[]>,
  vocabSizes: number[],
  hiddenDim: number,
): { dataset: CtrDataset; llm: FakeLlm; tags: Record<SplitName, Int32Array> } {
  const byId = new Map<number, { hidden: number[]; logOdds: number }>();
  let next = 1;
  const built = {} as Record<SplitName, EncodedSplit>;
  const tags = {} as Record<SplitName, Int32Array>;
  for (const name of ['train', 'valid', 'test'] as const) {
    built[name] = makeSplit(name, splits[name], next);
    splits[name].forEach((r, i) => byId.set(next + i, { hidden: r.hidden, logOdds: r.logOdds }));
    tags[name] = Int32Array.from(splits[name], (r) => r.tag);
    next += splits[name].length;
  }
  const featureMap: FeatureMap = {
    id: 'test-feature-map',
    categorical: vocabSizes.map((v, i) => ({ name: `f${i}`, kind: 'categorical' as const, vocabSize: v })),
    sequences: [],
    dense: [],
    vocabularies: {},
  };
  const stats = (s: EncodedSplit) => {
    const positives = s.labels.reduce((a, b) => a + b, 0);
    return { size: s.size, positives, positiveRate: positives / Math.max(1, s.size) };
  };
  const dataset: CtrDataset = {
    manifest: {
      versionId: 'synthetic-test',
      source: 'synthetic-movielens',
      params: {},
      inputs: [],
      featureMapArtifact: '',
      itemTableArtifact: '',
      splitArtifacts: { train: '', valid: '', test: '' },
      stats: { train: stats(built.train), valid: stats(built.valid), test: stats(built.test) },
      dropped: {},
      userCount: 1,
      itemCount: 1,
    },
    featureMap,
    items: { ids: ['i0'], titles: ['item'], genres: [''] },
    splits: built,
  };
  return { dataset, llm: new FakeLlm(hiddenDim, byId), tags };
}

/**
 * The acceptance world. Field 0 = segment (1 = plain, 2 = special), field 1 = a visible level x.
 * Plain segment: the label follows x, and the LLM features are noise.
 * Special segment: "strong" x levels decide the label as on the plain segment, but on the "neutral" level the
 * label follows a hidden z that only the LLM features carry — the CRM sees 50/50 there.
 * tag: 0 = plain, 1 = special/strong, 2 = special/neutral.
 */
export function acceptanceWorld(seed: number, sizes: Record<SplitName, number>, hiddenDim = 6) {
  const rng = mulberry32(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(Math.max(rng(), 1e-12))) * Math.cos(2 * Math.PI * rng());
  const sig = (z: number) => 1 / (1 + Math.exp(-z));
  const strong = [-2, -1, 1, 2];
  const make = (n: number): SyntheticRow[] =>
    Array.from({ length: n }, () => {
      const special = rng() < 0.3;
      const neutral = special && rng() < 0.5;
      const z = rng() < 0.5 ? -1 : 1;
      const xi = neutral ? 4 : Math.floor(rng() * 4);
      const p = neutral ? sig(3.5 * z) : sig(2 * strong[xi]);
      const label = rng() < p ? 1 : 0;
      const hidden = Array.from({ length: hiddenDim }, () => gauss());
      hidden[0] = special ? z + 0.3 * gauss() : gauss();
      hidden[1] = special ? 1 : 0;
      return {
        cat: [special ? 2 : 1, xi + 1],
        label,
        hidden,
        logOdds: 0.3 * gauss(),
        tag: special ? (neutral ? 2 : 1) : 0,
      };
    });
  return makeDataset(
    { train: make(sizes.train), valid: make(sizes.valid), test: make(sizes.test) },
    [3, 6],
    hiddenDim,
  );
}

/**
 * What stage 2 and stage 3 need around a CRM and a branch, as trainJoint builds it: the resolved config, the
 * default CRM↔LLM layer pairs with their projections (seed 2), the loss history that the checkpoints store,
 * and a checkpointer under `name`. `loop` is the part every stage call shares.
 */
export function jointStageLoop(a: {
  crm: TinyCrm;
  branch: JointLlmBranch;
  train: EncodedSplit;
  store: ArtifactStore;
  name: string;
  rows: CheckpointRows;
  joint: JointConfigInput;
  sharedDim: number;
}) {
  const cfg = resolveJointConfig({ ...a.joint, alignment: { sharedDim: a.sharedDim } });
  const pairs = defaultPairs(a.crm.activationShapes, a.branch.activationShapes);
  const proj = AlignmentProjections.create(
    { pairs, sharedDim: a.sharedDim, seed: 2 },
    a.crm.activationShapes,
    a.branch.activationShapes,
  );
  const lossHistory: { stage2: EpochLoss[]; stage3: EpochLoss[] } = { stage2: [], stage3: [] };
  const checkpointer = new JointCheckpointer(a.store, a.name, 'hash-1', a.rows, () => ({
    branch: a.branch,
    projections: proj,
    crm: a.crm,
    lossHistory,
  }));
  const loop = { cfg, crm: a.crm, branch: a.branch, proj, train: a.train, checkpointer };
  return { cfg, pairs, proj, lossHistory, checkpointer, loop };
}
