/**
 * CoReLLa stages 2 and 3 (stage 1 — the CRM on all training samples — is the CRM trainer's job; the CRM
 * handed in here is its result, or a fresh CRM for the "no stage 1" ablation).
 *
 * Stage 2: CRM + LLM branch trained together on a sampled subset with α·L_llm + β·L_crm + γ·L_align.
 * Stage 3: the LLM branch alone on a second, disjoint subset.
 * The CRM is updated in place by stage 2 (it is the CRM the hybrid serves afterwards).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ArtifactRef, ArtifactStore } from '../artifacts/store.js';
import { sha256Hex } from '../artifacts/store.js';
import type { CrmModel } from '../crm/types.js';
import type { CtrDataset, EncodedSplit } from '../data/types.js';
import { CorellaError } from '../errors.js';
import type { LlmFeatures, LlmFeatureSource } from '../llm/types.js';
import { throwIfAborted, yieldToEventLoop, type LongRunOptions } from '../progress.js';
import { LlmAdapter, validateAdapterConfig } from './adapter.js';
import { AlignmentProjections, defaultPairs, validatePairs, type AlignPair } from './alignment.js';
import { boundaryShift, logit, type BoundaryShift } from './boundary.js';
import { fetchFeatures } from './features.js';
import { makeRng, permutation, samplePool } from './random.js';
import { userBlocks } from '../data/user-blocks.js';
import { entropies } from './routing.js';
import { ctrScores, pick, type CtrScores } from './score.js';
import { selectSubsets, type SubsetPlan } from './subsets.js';
import { fitPlatt } from './platt.js';
import { bceWithLogits, weightedSum } from './ops.js';
import { restoreVariables, snapshotVariables, type StoredTensor } from './weights.js';

export {
  DEFAULT_JOINT_CONFIG,
  resolveJointConfig,
  type JointConfig,
  type JointConfigInput,
  type StageConfig,
} from './joint-config.js';
import {
  resolveJointConfig,
  type JointConfig,
  type JointConfigInput,
  type StageConfig,
} from './joint-config.js';

/** The validation rows trainJoint uses (for precomputing their LLM features). */
export function jointValidationRows(valid: EncodedSplit, cfg: JointConfig): Int32Array {
  if (cfg.validationSamples === 0) return new Int32Array(0);
  return samplePool(valid, cfg.validationSamples, cfg.validationSeed, cfg.poolBlock);
}

/** The stage-2 and stage-3 rows for a config ('hard' needs the stage-1 CRM's entropy of every train row). */
export function jointSubsets(train: EncodedSplit, cfg: JointConfig, entropy?: Float32Array): SubsetPlan {
  return selectSubsets({
    size: train.size,
    n2: cfg.stage2.enabled ? cfg.stage2.samples : 0,
    n3: cfg.stage3.enabled ? cfg.stage3.samples : 0,
    selection: cfg.subset,
    seed: cfg.seed,
    entropy,
    hardPower: cfg.hardPower,
    units: cfg.poolBlock > 1 ? userBlocks(train, cfg.poolBlock) : undefined,
  });
}

export interface EpochLoss {
  epoch: number;
  total: number;
  llm: number;
  crm: number;
  align: number;
}

export interface StageReport {
  enabled: boolean;
  samples: number;
  /** Mean stage-1 CRM entropy of the subset (shows what 'hard' selection did). */
  meanCrmEntropy: number;
  epochs: EpochLoss[];
  seconds: number;
  samplesPerSec: number;
  /** On the validation samples after this stage (absent when validationSamples = 0). */
  validation?: { crm: CtrScores; llm: CtrScores };
}

export interface JointResult {
  config: JointConfig;
  adapter: LlmAdapter;
  projections: AlignmentProjections;
  artifacts: { adapter: ArtifactRef; projections: ArtifactRef };
  pairs: AlignPair[];
  llm: { modelSha256: string; template: string; hiddenDim: number };
  stage2: StageReport;
  stage3: StageReport;
  /** before = stage-1 CRM vs an adapter trained alone on the stage-2 subset; after = both after stage 2. */
  boundaryShift?: { before: BoundaryShift; after: BoundaryShift };
  /** The Platt scale folded into the adapter (calibrateOutput > 0), with the LLM branch's scores on those rows. */
  outputCalibration?: { a: number; b: number; rows: number; before: CtrScores; after: CtrScores };
  resumedFrom?: string;
}

export interface TrainJointArgs extends LongRunOptions {
  crm: CrmModel;
  dataset: CtrDataset;
  llm: LlmFeatureSource;
  config?: JointConfigInput;
  store: ArtifactStore;
}

interface Checkpoint {
  kind: 'corella-joint-checkpoint';
  configHash: string;
  /** The phase in progress and how many of its epochs are finished. */
  phase: 'reference' | 'stage2' | 'stage3';
  epochsDone: number;
  subsets: string;
  adapter: string;
  projections: string;
  crm: string;
  lossHistory: { stage2: EpochLoss[]; stage3: EpochLoss[] };
  before?: BoundaryShift;
}

function int32ToB64(a: Int32Array): string {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
}

function b64ToInt32(s: string): Int32Array {
  const buf = Buffer.from(s, 'base64');
  const out = new Int32Array(buf.byteLength / 4);
  new Uint8Array(out.buffer).set(buf);
  return out;
}

/** Rows [s, e) of a features set, as a new, smaller features set (same order). */
function sliceFeatures(f: LlmFeatures, s: number, e: number): LlmFeatures {
  const d = f.hiddenDim;
  return {
    ...f,
    sampleIds: f.sampleIds.slice(s, e),
    pYes: f.pYes.slice(s, e),
    logOdds: f.logOdds.slice(s, e),
    hidden: f.hidden.slice(s * d, e * d),
  };
}

/**
 * Frees every tensor of a CRM batch, including any a CRM adds beyond the CrmBatch fields (ml/crm's
 * prepared batches carry extra id/weight tensors), without depending on a CRM's internals.
 */
function disposeBatch(b: ReturnType<CrmModel['makeBatch']>): void {
  const walk = (v: unknown, depth: number): void => {
    if (v instanceof tf.Tensor) v.dispose();
    else if (Array.isArray(v)) v.forEach((x) => walk(x, depth + 1));
    else if (v && typeof v === 'object' && depth < 3) Object.values(v).forEach((x) => walk(x, depth + 1));
  };
  walk(b, 0);
}

/** Mean of a scalar over batches of validation rows: L_align with both networks in inference mode. */
function validationAlignLoss(
  crm: CrmModel,
  adapter: LlmAdapter,
  proj: AlignmentProjections,
  split: EncodedSplit,
  rows: Int32Array,
  f: LlmFeatures,
  batchSize: number,
): number {
  if (proj.config.pairs.length === 0 || rows.length === 0) return NaN;
  let sum = 0;
  for (let s = 0; s < rows.length; s += batchSize) {
    const e = Math.min(rows.length, s + batchSize);
    const batch = crm.makeBatch(split, rows.subarray(s, e));
    const v = tf.tidy(() => {
      const cf = crm.forward(batch, { training: false, activations: true });
      const local = Array.from({ length: e - s }, (_, i) => s + i);
      const af = adapter.forward(adapter.inputTensor(f, local), { activations: true });
      return proj.loss(cf.activations, af.activations).dataSync()[0];
    });
    disposeBatch(batch);
    sum += v * (e - s);
  }
  return sum / rows.length;
}

export async function trainJoint(args: TrainJointArgs): Promise<JointResult> {
  const { crm, dataset, llm, store, signal } = args;
  const cfg = resolveJointConfig(args.config);
  const report = async (p: Parameters<NonNullable<LongRunOptions['onProgress']>>[0]) => args.onProgress?.(p);
  const train = dataset.splits.train;
  const valid = dataset.splits.valid;
  const n2 = cfg.stage2.enabled ? cfg.stage2.samples : 0;
  const n3 = cfg.stage3.enabled ? cfg.stage3.samples : 0;
  // Pairs are checked before any work so a bad config costs nothing and writes nothing.
  const adapterShapes = cfg.adapter.layers.map((w, i) => ({ name: `adapter_${i}`, width: w }));
  const pairs = cfg.alignment.pairs ?? defaultPairs(crm.activationShapes, adapterShapes);
  validatePairs(pairs, crm.activationShapes, adapterShapes);
  // The skip width is checked against the real input width once features exist; here only its form.
  validateAdapterConfig({ hiddenDim: 1e9, ...cfg.adapter, seed: cfg.seed }, 'joint config adapter');
  if (n2 + n3 > train.size) {
    throw new CorellaError(
      'BAD_CONFIG',
      `joint config: stage2.samples (${n2}) + stage3.samples (${n3}) exceed the ${train.size} training samples; the subsets must be disjoint`,
    );
  }
  // The checkpoint belongs to this config, dataset and starting CRM (a resumed run must be handed the same
  // stage-1 CRM again; its stage-2 progress is restored from the checkpoint).
  const crmStart = sha256Hex(JSON.stringify(snapshotVariables(crm.trainableVariables())));
  const configHash = sha256Hex(
    JSON.stringify({ cfg: { ...cfg, resume: undefined }, dataset: dataset.manifest.versionId, crmStart }),
  );

  // Resume: a checkpoint for the same config and dataset continues where it stopped.
  let ckpt: Checkpoint | undefined;
  if (cfg.resume) {
    const raw = await store.getNamed(`${cfg.checkpointName}/latest`);
    if (raw) {
      const parsed = JSON.parse(raw.toString('utf8')) as Checkpoint;
      if (parsed.kind === 'corella-joint-checkpoint' && parsed.configHash === configHash) ckpt = parsed;
    }
  }

  // Subsets (stored with the checkpoint: after stage 2 the CRM's entropies, and so 'hard' draws, change).
  let stage2Rows: Int32Array;
  let stage3Rows: Int32Array;
  let validRows: Int32Array;
  if (ckpt) {
    const s = JSON.parse((await store.get(ckpt.subsets)).toString('utf8')) as Record<string, string>;
    stage2Rows = b64ToInt32(s.stage2);
    stage3Rows = b64ToInt32(s.stage3);
    validRows = b64ToInt32(s.valid);
  } else {
    let h: Float32Array | undefined;
    if (cfg.subset === 'hard' && n2 + n3 > 0) {
      await report({
        stage: 'subset-selection',
        done: 0,
        total: train.size,
        message: 'scoring train with the stage-1 CRM',
      });
      h = entropies(await crm.predict(train));
    }
    const plan = jointSubsets(train, cfg, h);
    stage2Rows = plan.stage2;
    stage3Rows = plan.stage3;
    validRows = jointValidationRows(valid, cfg);
  }
  const subsetsJson = JSON.stringify({
    stage2: int32ToB64(stage2Rows),
    stage3: int32ToB64(stage3Rows),
    valid: int32ToB64(validRows),
  });

  const meanEntropy = async (rows: Int32Array) => {
    if (rows.length === 0) return NaN;
    const h = entropies(await crm.predict(train, rows));
    return h.reduce((a, b) => a + b, 0) / h.length;
  };
  const stage2Entropy = await meanEntropy(stage2Rows);
  const stage3Entropy = await meanEntropy(stage3Rows);

  // LLM features for every row the stages and validation need, fetched once.
  const trainRows = new Int32Array(stage2Rows.length + stage3Rows.length);
  trainRows.set(stage2Rows, 0);
  trainRows.set(stage3Rows, stage2Rows.length);
  const chunk = { chunkSize: cfg.featureChunkSize, signal, onProgress: args.onProgress };
  if (trainRows.length + validRows.length === 0) {
    throw new CorellaError(
      'BAD_CONFIG',
      'joint config: no stage-2/3 samples and no validation samples: nothing to train the LLM branch on',
    );
  }
  const trainF = await fetchFeatures(llm, train, dataset.items, trainRows, {
    ...chunk,
    stage: 'llm-features-train',
  });
  const validF = await fetchFeatures(llm, valid, dataset.items, validRows, {
    ...chunk,
    stage: 'llm-features-valid',
  });
  const hiddenDim = trainRows.length > 0 ? trainF.hiddenDim : validF.hiddenDim;
  const f2 = sliceFeatures(trainF, 0, stage2Rows.length);
  const f3 = sliceFeatures(trainF, stage2Rows.length, trainRows.length);

  let adapter: LlmAdapter;
  let proj: AlignmentProjections;
  if (ckpt) {
    adapter = LlmAdapter.deserialize(await store.get(ckpt.adapter));
    proj = AlignmentProjections.deserialize(await store.get(ckpt.projections));
    const crmSnap = JSON.parse((await store.get(ckpt.crm)).toString('utf8')) as StoredTensor[];
    restoreVariables(crm.trainableVariables(), crmSnap, 'CRM checkpoint');
  } else {
    adapter = LlmAdapter.create({
      hiddenDim,
      layers: cfg.adapter.layers,
      skipInputs: cfg.adapter.skipInputs,
      inputTail: cfg.adapter.inputTail,
      seed: cfg.seed,
    });
    if (trainRows.length > 0) adapter.fitNormalization(trainF);
    proj = AlignmentProjections.create(
      { pairs, sharedDim: cfg.alignment.sharedDim, seed: cfg.seed + 1 },
      crm.activationShapes,
      adapter.activationShapes,
    );
  }

  const lossHistory = ckpt?.lossHistory ?? { stage2: [], stage3: [] };
  let before = ckpt?.before;
  let lastCheckpoint: string | undefined;
  const checkpoint = async (phase: Checkpoint['phase'], epochsDone: number) => {
    const [sub, a, p, c] = await Promise.all([
      store.put(subsetsJson),
      store.put(adapter.serialize()),
      store.put(proj.serialize()),
      store.put(JSON.stringify(snapshotVariables(crm.trainableVariables()))),
    ]);
    const body: Checkpoint = {
      kind: 'corella-joint-checkpoint',
      configHash,
      phase,
      epochsDone,
      subsets: sub.sha256,
      adapter: a.sha256,
      projections: p.sha256,
      crm: c.sha256,
      lossHistory,
      before,
    };
    const ref = await store.put(JSON.stringify(body));
    await store.putNamed(`${cfg.checkpointName}/latest`, JSON.stringify(body));
    lastCheckpoint = ref.sha256;
    return ref.sha256;
  };
  const phaseOrder = { reference: 0, stage2: 1, stage3: 2 } as const;
  const epochsAlreadyDone = (phase: Checkpoint['phase']): number => {
    if (!ckpt) return 0;
    if (phaseOrder[ckpt.phase] > phaseOrder[phase]) return Number.POSITIVE_INFINITY;
    return ckpt.phase === phase ? ckpt.epochsDone : 0;
  };

  const validScores = async () => {
    if (validRows.length === 0) return undefined;
    const pc = await crm.predict(valid, validRows);
    const pl = adapter.predict(validF);
    const labels = pick(valid.labels, validRows);
    return { crm: ctrScores(pc, labels), llm: ctrScores(pl, labels), pc, pl };
  };

  /** One adapter-only epoch (the reference fit and stage 3 share it). */
  const adapterEpoch = async (
    a: LlmAdapter,
    opt: tf.Optimizer,
    rows: Int32Array,
    f: LlmFeatures,
    st: StageConfig,
    epoch: number,
    stage: string,
  ): Promise<EpochLoss> => {
    const order = permutation(makeRng(cfg.seed * 31 + epoch + (stage === 'stage3' ? 1000 : 0)), rows.length);
    const vars = a.trainableVariables();
    let sum = 0;
    for (let s = 0; s < order.length; s += st.batchSize) {
      throwIfAborted(signal);
      const local = order.subarray(s, Math.min(order.length, s + st.batchSize));
      const v = tf.tidy(() => {
        const x = a.inputTensor(f, local);
        const y = tf.tensor1d(
          pick(
            train.labels,
            Array.from(local, (i) => rows[i]),
          ),
        );
        const cost = opt.minimize(() => bceWithLogits(a.forward(x).logits, y), true, vars);
        return cost!.dataSync()[0];
      });
      sum += v * local.length;
      await yieldToEventLoop();
    }
    const l = sum / Math.max(1, order.length);
    return { epoch, total: l, llm: l, crm: NaN, align: NaN };
  };

  // "Before" boundary: the stage-1 CRM against an adapter trained alone on the same stage-2 subset.
  const wantShift = cfg.boundaryShift && cfg.stage2.enabled && n2 > 0 && validRows.length > 0;
  if (wantShift && !before) {
    const ref = adapter.clone();
    const opt = tf.train.adam(cfg.stage2.learningRate);
    for (let e = 0; e < cfg.stage2.epochs; e++)
      await adapterEpoch(ref, opt, stage2Rows, f2, cfg.stage2, e, 'reference');
    opt.dispose();
    const pc = await crm.predict(valid, validRows);
    before = boundaryShift(
      pc,
      ref.predict(validF),
      validationAlignLoss(crm, ref, proj, valid, validRows, validF, 1024),
    );
    ref.dispose();
    await checkpoint('reference', 0);
  }

  // Stage 2.
  const t2 = Date.now();
  const s2Done = Math.min(epochsAlreadyDone('stage2'), cfg.stage2.epochs);
  if (cfg.stage2.enabled && n2 > 0 && s2Done < cfg.stage2.epochs) {
    const useAlign = cfg.gamma > 0 && pairs.length > 0;
    const crmVars = crm.trainableVariables();
    const otherVars = [...adapter.trainableVariables(), ...(useAlign ? proj.trainableVariables() : [])];
    const crmNames = new Set(crmVars.map((v) => v.name));
    const optCrm = tf.train.adam(cfg.stage2.crmLearningRate);
    const optOther = tf.train.adam(cfg.stage2.learningRate);
    for (let epoch = s2Done; epoch < cfg.stage2.epochs; epoch++) {
      const order = permutation(makeRng(cfg.seed * 17 + epoch), stage2Rows.length);
      const acc = { total: 0, llm: 0, crm: 0, align: 0 };
      const e0 = Date.now();
      for (let s = 0; s < order.length; s += cfg.stage2.batchSize) {
        throwIfAborted(signal);
        const local = order.subarray(s, Math.min(order.length, s + cfg.stage2.batchSize));
        const rows = Int32Array.from(local, (i) => stage2Rows[i]);
        const batch = crm.makeBatch(train, rows);
        const parts = tf.tidy(() => {
          const x = adapter.inputTensor(f2, local);
          let kept: tf.Scalar[] = [];
          const { value, grads } = tf.variableGrads(() => {
            const cf = crm.forward(batch, { training: true, activations: useAlign });
            const af = adapter.forward(x, { activations: useAlign });
            const lCrm = bceWithLogits(cf.logits, batch.labels);
            const reg = crm.regularizer(batch);
            const lLlm = bceWithLogits(af.logits, batch.labels);
            const lAlign = useAlign ? proj.loss(cf.activations, af.activations) : tf.scalar(0);
            kept = [tf.keep(lLlm), tf.keep(lCrm), tf.keep(lAlign)];
            const terms = [lLlm, lCrm, lAlign];
            const weights = [cfg.alpha, cfg.beta, cfg.gamma];
            if (reg) {
              terms.push(reg);
              weights.push(cfg.beta);
            }
            return weightedSum(terms, weights);
          }, [...crmVars, ...otherVars]);
          const gCrm: { name: string; tensor: tf.Tensor }[] = [];
          const gOther: { name: string; tensor: tf.Tensor }[] = [];
          for (const [name, tensor] of Object.entries(grads)) {
            // Variables the loss does not reach (e.g. projections when γ = 0) have no gradient.
            if (tensor) (crmNames.has(name) ? gCrm : gOther).push({ name, tensor });
          }
          if (cfg.beta > 0 || useAlign) optCrm.applyGradients(gCrm);
          optOther.applyGradients(gOther);
          const out = [value.dataSync()[0], ...kept.map((k) => k.dataSync()[0])];
          kept.forEach((k) => k.dispose());
          return out;
        });
        disposeBatch(batch);
        acc.total += parts[0] * local.length;
        acc.llm += parts[1] * local.length;
        acc.crm += parts[2] * local.length;
        acc.align += parts[3] * local.length;
        await yieldToEventLoop();
      }
      const m = Math.max(1, order.length);
      lossHistory.stage2.push({
        epoch,
        total: acc.total / m,
        llm: acc.llm / m,
        crm: acc.crm / m,
        align: acc.align / m,
      });
      const ck = await checkpoint('stage2', epoch + 1);
      const sec = (Date.now() - e0) / 1000;
      await report({
        stage: 'stage2',
        epoch,
        done: epoch + 1,
        total: cfg.stage2.epochs,
        samplesPerSec: sec > 0 ? order.length / sec : undefined,
        checkpoint: ck,
        message: `loss ${(acc.total / m).toFixed(4)}`,
      });
    }
    optCrm.dispose();
    optOther.dispose();
  }
  const sec2 = (Date.now() - t2) / 1000;
  const v2 = await validScores();
  let after: BoundaryShift | undefined;
  if (wantShift && v2) {
    after = boundaryShift(
      v2.pc,
      v2.pl,
      validationAlignLoss(crm, adapter, proj, valid, validRows, validF, 1024),
    );
  }

  // Stage 3.
  const t3 = Date.now();
  const s3Done = Math.min(epochsAlreadyDone('stage3'), cfg.stage3.epochs);
  if (cfg.stage3.enabled && n3 > 0 && s3Done < cfg.stage3.epochs) {
    const opt = tf.train.adam(cfg.stage3.learningRate);
    for (let epoch = s3Done; epoch < cfg.stage3.epochs; epoch++) {
      const e0 = Date.now();
      lossHistory.stage3.push(await adapterEpoch(adapter, opt, stage3Rows, f3, cfg.stage3, epoch, 'stage3'));
      const ck = await checkpoint('stage3', epoch + 1);
      const sec = (Date.now() - e0) / 1000;
      await report({
        stage: 'stage3',
        epoch,
        done: epoch + 1,
        total: cfg.stage3.epochs,
        samplesPerSec: sec > 0 ? stage3Rows.length / sec : undefined,
        checkpoint: ck,
      });
    }
    opt.dispose();
  }
  const sec3 = (Date.now() - t3) / 1000;
  const v3 = await validScores();

  let outputCalibration: JointResult['outputCalibration'];
  if (cfg.calibrateOutput > 0 && v3) {
    const h = entropies(v3.pc);
    const k = Math.max(1, Math.round(cfg.calibrateOutput * validRows.length));
    const top = Int32Array.from({ length: h.length }, (_, i) => i)
      .sort((x, y) => h[y] - h[x])
      .slice(0, k);
    const labels = pick(valid.labels, validRows);
    const z = Float32Array.from(top, (i) => logit(v3.pl[i]));
    const y = Float32Array.from(top, (i) => labels[i]);
    const { a, b } = fitPlatt(z, y);
    const before = ctrScores(
      Float32Array.from(top, (i) => v3.pl[i]),
      y,
    );
    adapter.rescaleOutput(a, b);
    const after = ctrScores(
      Float32Array.from(z, (zi) => 1 / (1 + Math.exp(-(a * zi + b)))),
      y,
    );
    outputCalibration = { a, b, rows: k, before, after };
  }

  const adapterRef = await store.put(adapter.serialize());
  const projRef = await store.put(proj.serialize());
  await store.putNamed(
    `${cfg.checkpointName}/final`,
    JSON.stringify({
      adapter: adapterRef.sha256,
      projections: projRef.sha256,
      configHash,
      checkpoint: lastCheckpoint,
    }),
  );

  const stageReport = (
    enabled: boolean,
    rows: Int32Array,
    ent: number,
    epochs: EpochLoss[],
    sec: number,
    epochCount: number,
    v: Awaited<ReturnType<typeof validScores>>,
  ): StageReport => ({
    enabled,
    samples: rows.length,
    meanCrmEntropy: ent,
    epochs,
    seconds: sec,
    samplesPerSec: sec > 0 ? (rows.length * epochCount) / sec : 0,
    validation: v ? { crm: v.crm, llm: v.llm } : undefined,
  });

  return {
    config: cfg,
    adapter,
    projections: proj,
    artifacts: { adapter: adapterRef, projections: projRef },
    pairs,
    llm: {
      modelSha256: trainF.modelSha256 || validF.modelSha256,
      template: trainF.template || validF.template,
      hiddenDim,
    },
    stage2: stageReport(
      cfg.stage2.enabled,
      stage2Rows,
      stage2Entropy,
      lossHistory.stage2,
      sec2,
      cfg.stage2.epochs - s2Done,
      v2,
    ),
    stage3: stageReport(
      cfg.stage3.enabled,
      stage3Rows,
      stage3Entropy,
      lossHistory.stage3,
      sec3,
      cfg.stage3.epochs - s3Done,
      v3,
    ),
    boundaryShift: before && after ? { before, after } : undefined,
    outputCalibration,
    resumedFrom: ckpt ? `${ckpt.phase}:${ckpt.epochsDone}` : undefined,
  };
}
