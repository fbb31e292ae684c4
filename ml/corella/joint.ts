/**
 * CoReLLa stages 2 and 3 (stage 1 — the CRM on all training samples — is the CRM trainer's job; the CRM
 * handed in here is its result, or a fresh CRM for the "no stage 1" ablation).
 *
 * Stage 2: CRM + LLM branch trained together on a sampled subset with α·L_llm + β·L_crm + γ·L_align.
 * Stage 3: the LLM branch alone on a second, disjoint subset.
 * The CRM is updated in place by stage 2 (it is the CRM the hybrid serves afterwards).
 */
import type { ArtifactRef, ArtifactStore } from '../artifacts/store.js';
import type { CrmModel } from '../crm/types.js';
import type { CtrDataset } from '../data/types.js';
import { CorellaError } from '../errors.js';
import type { FinetuneConfig } from '../llm/tf/finetune-config.js';
import type { LlmFeatureSource } from '../llm/types.js';
import type { LongRunOptions } from '../progress.js';
import { validateAdapterConfig, type LlmAdapter } from './adapter.js';
import { AlignmentProjections, defaultPairs, validatePairs, type AlignPair } from './alignment.js';
import { boundaryShift, type BoundaryShift } from './boundary.js';
import { openAdapterBranch } from './joint-adapter-branch.js';
import {
  loraBranchShapes,
  openLoraBranch,
  type FrozenPassReport,
  type LoraBranchSource,
} from './joint-lora-branch.js';
import { exportLoraBranch } from './joint-lora-export.js';
import type { LoraBranch } from '../llm/tf/lora-branch.js';
import type { LoraHead } from './llm-branch-model.js';
import {
  epochsAlreadyDone,
  findCheckpoint,
  jointConfigHash,
  JointCheckpointer,
  loadRows,
  type CheckpointRows,
} from './joint-checkpoint.js';
import { resolveJointConfig, type JointConfig, type JointConfigInput } from './joint-config.js';
import { validationAlignLoss, type EpochLoss } from './joint-epochs.js';
import type { JointLlmBranch, JointPart } from './joint-llm-branch.js';
import { calibrateBranchOutput, type OutputCalibration } from './joint-output-calibration.js';
import { referenceBoundary, trainStage2, trainStage3 } from './joint-stages.js';
import { entropies } from './routing.js';
import { jointSubsets, jointValidationRows } from './row-plan.js';
import { ctrScores, pick, type CtrScores } from './score.js';
import { restoreVariables, type StoredTensor } from './weights.js';

// The joint trainer's public surface: its config and row plan live in their own modules, re-exported here.
export {
  DEFAULT_JOINT_CONFIG,
  resolveJointConfig,
  type JointConfig,
  type JointConfigInput,
  type StageConfig,
} from './joint-config.js';
export { jointSubsets, jointValidationRows } from './row-plan.js';
export type { EpochLoss } from './joint-epochs.js';
export type { JointLlmBranch, JointPart, OpenJointBranch } from './joint-llm-branch.js';
export type { FrozenPassReport, LoraBranchSource } from './joint-lora-branch.js';

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

export interface JointResult<M extends LlmAdapter | LoraHead = LlmAdapter | LoraHead> {
  config: JointConfig;
  /**
   * The branch as calibration, evaluation and serving use it, on llama.cpp's LLM features: the LlmAdapter
   * (finetune none) or the LoraHead (finetune lora, whose features must come from the base model run with
   * the exported LoRA, artifacts.lora).
   */
  adapter: M;
  /** LoRA mode: the trained tfjs branch (its LoRA is what artifacts.lora holds), for checks against llama.cpp. */
  lora?: LoraBranch<JointPart>;
  projections: AlignmentProjections;
  /** adapter: the adapter artifact, or in LoRA mode the branch artifact (LoraHeadFile); lora: its GGUF. */
  artifacts: { adapter: ArtifactRef; projections: ArtifactRef; lora?: ArtifactRef };
  pairs: AlignPair[];
  llm: { modelSha256: string; template: string; hiddenDim: number };
  stage2: StageReport;
  stage3: StageReport;
  /** before = stage-1 CRM vs an adapter trained alone on the stage-2 subset; after = both after stage 2. */
  boundaryShift?: { before: BoundaryShift; after: BoundaryShift };
  /** The Platt scale folded into the adapter (calibrateOutput > 0), with the LLM branch's scores on those rows. */
  outputCalibration?: OutputCalibration;
  resumedFrom?: string;
  /** LoRA mode: what the one-time frozen pass cost (the largest part of a LoRA run on a CPU). */
  frozenPass?: FrozenPassReport;
}

export interface TrainJointArgs extends LongRunOptions {
  crm: CrmModel;
  dataset: CtrDataset;
  /** The frozen LLM's features (the adapter branch reads them; the LoRA branch does not). */
  llm: LlmFeatureSource;
  config?: JointConfigInput;
  store: ArtifactStore;
  /** `llm.finetune`: which branch trains (default none: the frozen-LLM adapter). */
  finetune?: FinetuneConfig;
  /** Required with finetune lora: the tfjs model and the pipeline's prompts. */
  lora?: LoraBranchSource;
}

/** The LoRA source when the finetune method asks for it (BAD_CONFIG when the caller gave none). */
function loraSourceOf(args: TrainJointArgs): LoraBranchSource | undefined {
  if (args.finetune?.method !== 'lora') return undefined;
  if (!args.lora)
    throw new CorellaError('BAD_CONFIG', 'llm.finetune.method is "lora" but no LoRA model was opened', {
      details: { field: 'llm.finetune.method' },
    });
  return args.lora;
}

/**
 * Checks that cost nothing and write nothing, before any work: the alignment pairs, the adapter's form (its
 * input width is checked against the real features later) and that the two subsets fit disjointly.
 */
function checkBeforeWork(
  cfg: JointConfig,
  crm: CrmModel,
  trainSize: number,
  lora: LoraBranchSource | undefined,
): AlignPair[] {
  const branchShapes = lora
    ? loraBranchShapes(lora)
    : cfg.adapter.layers.map((w, i) => ({ name: `adapter_${i}`, width: w }));
  const pairs = cfg.alignment.pairs ?? defaultPairs(crm.activationShapes, branchShapes);
  validatePairs(pairs, crm.activationShapes, branchShapes);
  validateAdapterConfig({ hiddenDim: 1e9, ...cfg.adapter, seed: cfg.seed }, 'joint config adapter');
  const n2 = cfg.stage2.enabled ? cfg.stage2.samples : 0;
  const n3 = cfg.stage3.enabled ? cfg.stage3.samples : 0;
  if (n2 + n3 > trainSize) {
    throw new CorellaError(
      'BAD_CONFIG',
      `joint config: stage2.samples (${n2}) + stage3.samples (${n3}) exceed the ${trainSize} training samples; the subsets must be disjoint`,
    );
  }
  return pairs;
}

/** A fresh run's rows ('hard' subsets score every training row with the stage-1 CRM first). */
async function drawRows(
  cfg: JointConfig,
  crm: CrmModel,
  dataset: CtrDataset,
  onProgress: LongRunOptions['onProgress'],
): Promise<CheckpointRows> {
  const train = dataset.splits.train;
  const n = (cfg.stage2.enabled ? cfg.stage2.samples : 0) + (cfg.stage3.enabled ? cfg.stage3.samples : 0);
  let h: Float32Array | undefined;
  if (cfg.subset === 'hard' && n > 0) {
    await onProgress?.({
      stage: 'subset-selection',
      done: 0,
      total: train.size,
      message: 'scoring train with the stage-1 CRM',
    });
    h = entropies(await crm.predict(train));
  }
  const plan = jointSubsets(train, cfg, h);
  return { stage2: plan.stage2, stage3: plan.stage3, valid: jointValidationRows(dataset.splits.valid, cfg) };
}

async function meanEntropy(crm: CrmModel, train: CtrDataset['splits']['train'], rows: Int32Array) {
  if (rows.length === 0) return NaN;
  const h = entropies(await crm.predict(train, rows));
  return h.reduce((a, b) => a + b, 0) / h.length;
}

/** Restores a checkpoint's CRM weights and projections (the branch restores its own state). */
async function restoreFromCheckpoint(
  store: ArtifactStore,
  ckpt: { projections: string; crm: string },
  crm: CrmModel,
): Promise<AlignmentProjections> {
  const proj = AlignmentProjections.deserialize(await store.get(ckpt.projections));
  const crmSnap = JSON.parse((await store.get(ckpt.crm)).toString('utf8')) as StoredTensor[];
  restoreVariables(crm.trainableVariables(), crmSnap, 'CRM checkpoint');
  return proj;
}

async function validScores(
  crm: CrmModel,
  branch: JointLlmBranch,
  valid: CtrDataset['splits']['valid'],
  rows: Int32Array,
) {
  if (rows.length === 0) return undefined;
  const pc = await crm.predict(valid, rows);
  const pl = branch.predict('valid');
  const labels = pick(valid.labels, rows);
  return { crm: ctrScores(pc, labels), llm: ctrScores(pl, labels), pc, pl, labels };
}

function stageReport(
  enabled: boolean,
  rows: Int32Array,
  ent: number,
  epochs: EpochLoss[],
  sec: number,
  epochCount: number,
  v: Awaited<ReturnType<typeof validScores>>,
): StageReport {
  return {
    enabled,
    samples: rows.length,
    meanCrmEntropy: ent,
    epochs,
    seconds: sec,
    samplesPerSec: sec > 0 ? (rows.length * epochCount) / sec : 0,
    validation: v ? { crm: v.crm, llm: v.llm } : undefined,
  };
}

/**
 * The final branch and projections, and the named pointer `<checkpointName>/final` to them. A LoRA branch
 * is stored as served: its GGUF LoRA and the head artifact (joint-lora-export.ts), not its tfjs state.
 */
async function saveFinal(
  store: ArtifactStore,
  cfg: JointConfig,
  branch: JointLlmBranch,
  proj: AlignmentProjections,
  configHash: string,
  checkpoint: string | undefined,
  lora: { branch: LoraBranch<JointPart>; modelSha256: string; template: string } | undefined,
): Promise<{ artifacts: JointResult['artifacts']; head?: LoraHead }> {
  const exported = lora ? await exportLoraBranch(store, lora.branch, lora) : undefined;
  const adapter = exported ? exported.head : await store.put(branch.serialize());
  const projections = await store.put(proj.serialize());
  await store.putNamed(
    `${cfg.checkpointName}/final`,
    JSON.stringify({
      adapter: adapter.sha256,
      projections: projections.sha256,
      ...(exported ? { lora: exported.gguf.sha256 } : {}),
      configHash,
      checkpoint,
    }),
  );
  return {
    artifacts: { adapter, projections, ...(exported ? { lora: exported.gguf } : {}) },
    head: exported?.model,
  };
}

/** Without a LoRA finetune the branch is the frozen-LLM adapter, as before issue 19. */
export async function trainJoint(
  args: TrainJointArgs & { finetune?: { method: 'none' } },
): Promise<JointResult<LlmAdapter>>;
export async function trainJoint(args: TrainJointArgs): Promise<JointResult>;
export async function trainJoint(args: TrainJointArgs): Promise<JointResult> {
  const { crm, dataset, store, signal, onProgress } = args;
  const cfg = resolveJointConfig(args.config);
  const { train, valid } = dataset.splits;
  const loraSrc = loraSourceOf(args);
  const pairs = checkBeforeWork(cfg, crm, train.size, loraSrc);
  // The branch kind is part of what a checkpoint belongs to: a LoRA run never resumes an adapter's state.
  const configHash = jointConfigHash(
    cfg,
    dataset.manifest.versionId,
    crm,
    // The frozen pass's memory budget and threads change no bit of the result, so they do not void a checkpoint.
    loraSrc && args.finetune
      ? {
          finetune: { ...args.finetune, frozenMemoryMb: undefined, frozenThreads: undefined },
          model: loraSrc.modelSha256,
        }
      : undefined,
  );

  // Resume: a checkpoint for the same config, dataset and starting CRM continues where it stopped.
  const ckpt = cfg.resume ? await findCheckpoint(store, cfg.checkpointName, configHash) : undefined;
  const rows = ckpt ? await loadRows(store, ckpt) : await drawRows(cfg, crm, dataset, onProgress);
  const stage2Entropy = await meanEntropy(crm, train, rows.stage2);
  const stage3Entropy = await meanEntropy(crm, train, rows.stage3);
  if (rows.stage2.length + rows.stage3.length + rows.valid.length === 0) {
    throw new CorellaError(
      'BAD_CONFIG',
      'joint config: no stage-2/3 samples and no validation samples: nothing to train the LLM branch on',
    );
  }

  // The LLM branch (the adapter on features fetched once for every row, or the LoRA on the tfjs model
  // after its one-time frozen pass) and the alignment projections.
  const saved = ckpt ? await store.get(ckpt.adapter) : undefined;
  const opened =
    loraSrc && args.finetune?.method === 'lora'
      ? await openLoraBranch({
          ...loraSrc,
          finetune: args.finetune,
          dataset,
          rows,
          store,
          signal,
          onProgress,
          saved,
        })
      : await openAdapterBranch({ llm: args.llm, dataset, rows, cfg, signal, onProgress, saved });
  const { llm } = opened;
  const branch: JointLlmBranch = opened.branch;
  const loraBranch = 'frozen' in opened ? opened.branch : undefined;
  const adapterModel = 'frozen' in opened ? undefined : opened.branch.adapter;
  const proj = ckpt
    ? await restoreFromCheckpoint(store, ckpt, crm)
    : AlignmentProjections.create(
        { pairs, sharedDim: cfg.alignment.sharedDim, seed: cfg.seed + 1 },
        crm.activationShapes,
        branch.activationShapes,
      );

  const lossHistory = ckpt?.lossHistory ?? { stage2: [], stage3: [] };
  let before = ckpt?.before;
  // A LoRA run keeps Adam's state in its checkpoints (small beside the LoRA's epochs of compute), so a
  // resumed run equals an uninterrupted one; the adapter mode keeps its checkpoints as they always were.
  const checkpointer = new JointCheckpointer(
    store,
    cfg.checkpointName,
    configHash,
    rows,
    () => ({ branch, projections: proj, crm, lossHistory, before }),
    { optimizers: loraBranch !== undefined, resume: ckpt },
  );
  const loop = { cfg, crm, branch, proj, train, signal, onProgress, checkpointer };
  const n2 = cfg.stage2.enabled ? cfg.stage2.samples : 0;
  const n3 = cfg.stage3.enabled ? cfg.stage3.samples : 0;

  // "Before" boundary: the stage-1 CRM against a branch trained alone on the same stage-2 subset.
  const wantShift = cfg.boundaryShift && cfg.stage2.enabled && n2 > 0 && rows.valid.length > 0;
  if (wantShift && !before) {
    before = await referenceBoundary({ ...loop, valid, stage2Rows: rows.stage2, validRows: rows.valid });
    await checkpointer.save('reference', 0);
  }

  // Stage 2.
  const t2 = Date.now();
  const s2Done = Math.min(epochsAlreadyDone(ckpt, 'stage2'), cfg.stage2.epochs);
  if (cfg.stage2.enabled && n2 > 0 && s2Done < cfg.stage2.epochs) {
    await trainStage2({
      ...loop,
      rows: rows.stage2,
      startEpoch: s2Done,
      history: lossHistory.stage2,
      pairCount: pairs.length,
    });
  }
  const sec2 = (Date.now() - t2) / 1000;
  const v2 = await validScores(crm, branch, valid, rows.valid);
  const after =
    wantShift && v2
      ? boundaryShift(v2.pc, v2.pl, validationAlignLoss(crm, branch, proj, valid, rows.valid, 1024))
      : undefined;

  // Stage 3.
  const t3 = Date.now();
  const s3Done = Math.min(epochsAlreadyDone(ckpt, 'stage3'), cfg.stage3.epochs);
  if (cfg.stage3.enabled && n3 > 0 && s3Done < cfg.stage3.epochs) {
    await trainStage3({ ...loop, rows: rows.stage3, startEpoch: s3Done, history: lossHistory.stage3 });
  }
  const sec3 = (Date.now() - t3) / 1000;
  const v3 = await validScores(crm, branch, valid, rows.valid);

  // Output calibration, then the final artifacts.
  const outputCalibration =
    cfg.calibrateOutput > 0 && v3 ? calibrateBranchOutput(branch, v3, cfg.calibrateOutput) : undefined;
  const { artifacts, head } = await saveFinal(
    store,
    cfg,
    branch,
    proj,
    configHash,
    checkpointer.last,
    loraBranch && { branch: loraBranch, modelSha256: llm.modelSha256, template: llm.template },
  );

  return {
    config: cfg,
    adapter: (head ?? adapterModel)!,
    lora: loraBranch,
    projections: proj,
    artifacts,
    pairs,
    llm,
    stage2: stageReport(
      cfg.stage2.enabled,
      rows.stage2,
      stage2Entropy,
      lossHistory.stage2,
      sec2,
      cfg.stage2.epochs - s2Done,
      v2,
    ),
    stage3: stageReport(
      cfg.stage3.enabled,
      rows.stage3,
      stage3Entropy,
      lossHistory.stage3,
      sec3,
      cfg.stage3.epochs - s3Done,
      v3,
    ),
    boundaryShift: before && after ? { before, after } : undefined,
    outputCalibration,
    resumedFrom: ckpt ? `${ckpt.phase}:${ckpt.epochsDone}` : undefined,
    frozenPass: 'frozen' in opened ? opened.frozen : undefined,
  };
}
