/**
 * The joint trainer's checkpoint: after every epoch (and after the boundary-shift reference fit) the branch,
 * the projections, the CRM and the drawn rows are stored, and a named pointer `<checkpointName>/latest`
 * names them. A retry with the same config, dataset and starting CRM continues from there; any other run
 * ignores it (the config hash differs).
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { ArtifactStore } from '../artifacts/store.js';
import { sha256Hex } from '../artifacts/store.js';
import type { CrmModel } from '../crm/types.js';
import type { BoundaryShift } from './boundary.js';
import type { JointConfig } from './joint-config.js';
import type { EpochLoss } from './joint-epochs.js';
import type { JointLlmBranch } from './joint-llm-branch.js';
import type { AlignmentProjections } from './alignment.js';
import { encodeFloat32, restoreTensor, snapshotVariables, type StoredTensor } from './weights.js';

export type JointPhase = 'reference' | 'stage2' | 'stage3';

export interface JointCheckpoint {
  kind: 'corella-joint-checkpoint';
  configHash: string;
  /** The phase in progress and how many of its epochs are finished. */
  phase: JointPhase;
  epochsDone: number;
  subsets: string;
  /** The LLM branch's serialized state (the field keeps its first name, so older checkpoints still load). */
  adapter: string;
  projections: string;
  crm: string;
  lossHistory: { stage2: EpochLoss[]; stage3: EpochLoss[] };
  before?: BoundaryShift;
  /**
   * sha256 of the Adam state of the phase in progress (OptimizerSnapshot), when the run keeps it (LoRA
   * mode): a resumed run then continues the same optimiser instead of a fresh one, and equals an
   * uninterrupted run.
   */
  optimizers?: string;
}

/** The optimisers of one phase, by the stage loop's name for each, as tf's getWeights() lists them. */
interface OptimizerSnapshot {
  phase: JointPhase;
  states: Record<string, StoredTensor[]>;
}

/** The rows a run drew, stored with the checkpoint: after stage 2 the CRM's entropies (and 'hard' draws) change. */
export interface CheckpointRows {
  stage2: Int32Array;
  stage3: Int32Array;
  valid: Int32Array;
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

export function encodeRows(r: CheckpointRows): string {
  return JSON.stringify({
    stage2: int32ToB64(r.stage2),
    stage3: int32ToB64(r.stage3),
    valid: int32ToB64(r.valid),
  });
}

export async function loadRows(store: ArtifactStore, ckpt: JointCheckpoint): Promise<CheckpointRows> {
  const s = JSON.parse((await store.get(ckpt.subsets)).toString('utf8')) as Record<string, string>;
  return { stage2: b64ToInt32(s.stage2), stage3: b64ToInt32(s.stage3), valid: b64ToInt32(s.valid) };
}

/**
 * The checkpoint belongs to this config, dataset and starting CRM (a resumed run must be handed the same
 * stage-1 CRM again; its stage-2 progress is restored from the checkpoint).
 */
export function jointConfigHash(
  cfg: JointConfig,
  datasetVersionId: string,
  crm: CrmModel,
  /** What else decides the branch (the LoRA's finetune config and base model); absent = the adapter. */
  branch?: unknown,
): string {
  const crmStart = sha256Hex(JSON.stringify(snapshotVariables(crm.trainableVariables())));
  // An absent `branch` drops out of the JSON, so the adapter's hash is what it was before LoRA existed.
  return sha256Hex(
    JSON.stringify({ cfg: { ...cfg, resume: undefined }, dataset: datasetVersionId, crmStart, branch }),
  );
}

/** The latest checkpoint under `name` when it was written for `configHash`. */
export async function findCheckpoint(
  store: ArtifactStore,
  name: string,
  configHash: string,
): Promise<JointCheckpoint | undefined> {
  const raw = await store.getNamed(`${name}/latest`);
  if (!raw) return undefined;
  const parsed = JSON.parse(raw.toString('utf8')) as JointCheckpoint;
  return parsed.kind === 'corella-joint-checkpoint' && parsed.configHash === configHash ? parsed : undefined;
}

const phaseOrder = { reference: 0, stage2: 1, stage3: 2 } as const;

/** Epochs of `phase` a checkpoint already finished (all of them when it is past that phase). */
export function epochsAlreadyDone(ckpt: JointCheckpoint | undefined, phase: JointPhase): number {
  if (!ckpt) return 0;
  if (phaseOrder[ckpt.phase] > phaseOrder[phase]) return Number.POSITIVE_INFINITY;
  return ckpt.phase === phase ? ckpt.epochsDone : 0;
}

/** What a checkpoint captures; read at each save, so it sees the training state of that moment. */
export interface CheckpointState {
  branch: JointLlmBranch;
  projections: AlignmentProjections;
  crm: CrmModel;
  lossHistory: JointCheckpoint['lossHistory'];
  before?: BoundaryShift;
}

export interface CheckpointerOptions {
  /** Store the stage loops' Adam state with each checkpoint (LoRA mode; the adapter mode never has). */
  optimizers?: boolean;
  /** The checkpoint being resumed: its Adam state goes back into the optimisers of its phase. */
  resume?: JointCheckpoint;
}

/**
 * Adam's running bias-correction powers β^t. setWeights recomputes them as pow(β, t + 1), which differs from
 * the product the optimiser accumulated by an ulp, enough for a resumed run to drift from an uninterrupted
 * one; so they are stored beside getWeights() and put back exactly.
 */
const ADAM_POWERS = ['accBeta1', 'accBeta2'] as const;

function adamPowers(opt: tf.Optimizer): tf.Variable[] {
  const o = opt as unknown as Record<string, unknown>;
  return ADAM_POWERS.flatMap((k) => {
    const v = o[k] as tf.Variable | undefined;
    return v && typeof v.assign === 'function' ? [v] : [];
  });
}

async function storeOptimizer(opt: tf.Optimizer): Promise<StoredTensor[]> {
  const weights = [
    ...(await opt.getWeights()),
    ...adamPowers(opt).map((v, i) => ({ name: `corella:${ADAM_POWERS[i]}`, tensor: v as tf.Tensor })),
  ];
  // getWeights' first entry (the iteration count) is a fresh scalar; the rest are the optimiser's own.
  const out = await Promise.all(
    weights.map(async (w) => ({
      name: w.name,
      shape: w.tensor.shape.slice(),
      data: encodeFloat32(Float32Array.from(await w.tensor.data())),
    })),
  );
  weights[0]?.tensor.dispose();
  return out;
}

export class JointCheckpointer {
  /** sha256 of the last checkpoint body written. */
  last: string | undefined;
  private readonly subsetsJson: string;
  private tracked: { phase: JointPhase; opts: Record<string, tf.Optimizer> } | undefined;

  constructor(
    private readonly store: ArtifactStore,
    private readonly name: string,
    private readonly configHash: string,
    rows: CheckpointRows,
    private readonly state: () => CheckpointState,
    private readonly options: CheckpointerOptions = {},
  ) {
    this.subsetsJson = encodeRows(rows);
  }

  /**
   * The optimisers of `phase` (called by its stage loop once it made them): when the run keeps Adam state,
   * the resumed checkpoint's state for this phase goes back into them, and later saves of the phase store
   * theirs. Without the option it does nothing, so a run that does not keep it behaves as before.
   */
  async useOptimizers(phase: JointPhase, opts: Record<string, tf.Optimizer>): Promise<void> {
    if (!this.options.optimizers) return;
    this.tracked = { phase, opts };
    const from = this.options.resume;
    if (!from?.optimizers || from.phase !== phase) return;
    const snap = JSON.parse((await this.store.get(from.optimizers)).toString('utf8')) as OptimizerSnapshot;
    if (snap.phase !== phase) return;
    for (const [key, opt] of Object.entries(opts)) {
      const stored = snap.states[key];
      if (!stored) continue;
      const tensors = stored.map((t) => ({
        name: t.name,
        tensor: restoreTensor(t, t.shape, 'optimiser state'),
      }));
      const powers = tensors.filter((t) => t.name.startsWith('corella:'));
      await opt.setWeights(tensors.filter((t) => !t.name.startsWith('corella:')));
      const own = adamPowers(opt);
      powers.forEach((p, i) => own[i]?.assign(p.tensor));
      // setWeights made variables of its own from them (tf.variable shares the data by reference count).
      tensors.forEach((t) => t.tensor.dispose());
    }
  }

  private async optimizerBlob(phase: JointPhase): Promise<string | undefined> {
    if (!this.options.optimizers || this.tracked?.phase !== phase) return undefined;
    const states: Record<string, StoredTensor[]> = {};
    for (const [key, opt] of Object.entries(this.tracked.opts)) states[key] = await storeOptimizer(opt);
    const snap: OptimizerSnapshot = { phase, states };
    return (await this.store.put(JSON.stringify(snap))).sha256;
  }

  async save(phase: JointPhase, epochsDone: number): Promise<string> {
    const s = this.state();
    const [sub, a, p, c, o] = await Promise.all([
      this.store.put(this.subsetsJson),
      this.store.put(s.branch.serialize()),
      this.store.put(s.projections.serialize()),
      this.store.put(JSON.stringify(snapshotVariables(s.crm.trainableVariables()))),
      this.optimizerBlob(phase),
    ]);
    const body: JointCheckpoint = {
      kind: 'corella-joint-checkpoint',
      configHash: this.configHash,
      phase,
      epochsDone,
      subsets: sub.sha256,
      adapter: a.sha256,
      projections: p.sha256,
      crm: c.sha256,
      lossHistory: s.lossHistory,
      before: s.before,
      ...(o ? { optimizers: o } : {}),
    };
    const ref = await this.store.put(JSON.stringify(body));
    await this.store.putNamed(`${this.name}/latest`, JSON.stringify(body));
    this.last = ref.sha256;
    return ref.sha256;
  }
}
