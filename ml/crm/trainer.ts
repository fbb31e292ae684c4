import type { ArtifactStore } from '../artifacts/store.js';
import type { CtrDataset } from '../data/types.js';
import { CorellaError } from '../errors.js';
import { auc, logLoss } from '../metrics/classification.js';
import { throwIfAborted, yieldToEventLoop } from '../progress.js';
import type { LongRunOptions } from '../progress.js';
import { ensureTf } from '../tf/backend.js';
import { activeNativeAddon } from '../tf/kernels/native-kernels.js';
import { Adam } from './adam.js';
import { loadCheckpoint, saveCheckpoint } from './checkpoint.js';
import type { CheckpointState } from './checkpoint.js';
import { resolveCrmConfig } from './config.js';
import { CrmNet } from './model.js';
import { mixSeed, mulberry32, permutation } from '../random.js';
import { LocalStepper, ParallelStepper } from './parallel.js';
import type { Stepper } from './parallel.js';
import type { TensorEntry } from './tensor-file.js';
import { chooseCrmThreads } from './threads.js';
import type { CrmThreads } from './threads.js';
import type { CrmConfig } from './types.js';
import { readWeights, writeWeights } from './weights.js';

export interface TrainCrmOptions extends LongRunOptions {
  store: ArtifactStore;
  /** Named store entry pointing at the latest checkpoint; rewritten after every epoch. */
  checkpointKey?: string;
  /**
   * Where to resume: a checkpoint artifact sha256, a named key, or 'latest' (the checkpointKey entry if it
   * exists, else a fresh start — what a retried activity wants).
   */
  resumeFrom?: string;
  epochs: number;
  batchSize: number;
  lr: number;
  /** Epochs without a validation-AUC improvement before stopping. */
  patience: number;
  /** Factor applied to the learning rate after each epoch without improvement (1 = no decay). */
  lrDecay: number;
  /** Smallest AUC gain that counts as an improvement. */
  minDelta?: number;
  /** Progress is reported at most this often (ms) during an epoch. */
  progressIntervalMs?: number;
  evalBatchSize?: number;
  /**
   * Threads the native kernels' intra-op pool splits each step over (wasm with the addon), or 'auto':
   * the cores this process may use, at most 4 (see chooseCrmThreads). Results are bit-identical at any count.
   * Default 1.
   */
  threads?: CrmThreads;
  /**
   * With threads ≥ 2: data-parallel over this thread and a gradient worker (wasm/cpu backends, no batch
   * norm) instead of the pool. Slower than the pool where the addon is built (docs/crm-speed.md); the way
   * to a second core without it.
   */
  dataParallel?: boolean;
}

export interface EpochRecord {
  epoch: number;
  trainLoss: number;
  validAuc: number;
  validLogLoss: number;
  lr: number;
  samplesPerSec: number;
  seconds: number;
  /** Process CPU time (user + system) of the epoch's training loop: a throughput measure less sensitive to other load. */
  cpuSeconds: number;
}

export interface TrainCrmResult {
  /** The model with the weights of its best validation epoch. */
  model: CrmNet;
  config: CrmConfig;
  history: EpochRecord[];
  bestEpoch: number;
  bestValidAuc: number;
  epochsRun: number;
  stoppedEarly: boolean;
  /** sha256 of the last checkpoint written. */
  checkpoint?: string;
  backend: string;
  /** Mean training throughput over the epochs this call ran. */
  trainSamplesPerSec: number;
  /** Threads the step ran on, and why (for 'auto', what the machine looked like when training started). */
  threads: number;
  threadsReason: string;
}

function checkOptions(o: TrainCrmOptions): void {
  const bad = (field: string, msg: string) => {
    throw new CorellaError('BAD_CONFIG', `trainCrm option ${field}: ${msg}`, { details: { field } });
  };
  if (!Number.isInteger(o.epochs) || o.epochs < 1) bad('epochs', `expected an integer ≥ 1, got ${o.epochs}`);
  if (!Number.isInteger(o.batchSize) || o.batchSize < 1)
    bad('batchSize', `expected an integer ≥ 1, got ${o.batchSize}`);
  if (!(o.lr > 0)) bad('lr', `expected > 0, got ${o.lr}`);
  if (!Number.isInteger(o.patience) || o.patience < 1)
    bad('patience', `expected an integer ≥ 1, got ${o.patience}`);
  if (!(o.lrDecay > 0 && o.lrDecay <= 1)) bad('lrDecay', `expected 0 < lrDecay ≤ 1, got ${o.lrDecay}`);
}

/**
 * Trains a CRM with Adam, evaluating validation AUC after each epoch (early stopping with patience,
 * learning-rate decay on plateau) and checkpointing after each epoch. Shuffling and dropout depend only
 * on (seed, epoch, step), so resuming from a checkpoint retraces the uninterrupted run.
 */
export async function trainCrm(
  dataset: CtrDataset,
  config: CrmConfig,
  opts: TrainCrmOptions,
): Promise<TrainCrmResult> {
  checkOptions(opts);
  const resolved = resolveCrmConfig(config);
  const train = dataset.splits.train;
  const valid = dataset.splits.valid;
  if (train.size === 0) throw new CorellaError('BAD_DATASET', 'the training split is empty');
  const backend = (await ensureTf()).backend;
  const threads = chooseCrmThreads(opts.threads ?? 1);
  const dataParallel =
    opts.dataParallel === true &&
    threads.threads >= 2 &&
    (backend === 'wasm' || backend === 'cpu') &&
    !resolved.batchNorm;
  // The pool is the process's: this run sizes it and puts back what it found.
  const addon = dataParallel ? undefined : activeNativeAddon();
  const poolBefore = addon?.threads();

  const model = new CrmNet(resolved, dataset.featureMap);
  const adam = new Adam({ lr: opts.lr });
  let state: CheckpointState = {
    nextEpoch: 0,
    step: 0,
    lr: opts.lr,
    bestValidAuc: -Infinity,
    bestEpoch: -1,
    badEpochs: 0,
    history: [],
  };
  let best: TensorEntry[] | undefined;
  let lastCheckpoint: string | undefined;
  let stepper: Stepper | undefined;
  try {
    const resumed = await loadCheckpoint(opts, model, adam, resolved, dataset.featureMap.id);
    if (resumed) {
      state = resumed.state;
      best = resumed.best;
      lastCheckpoint = resumed.sha256;
      adam.lr = state.lr;
    }

    const evalRows = valid.size > 0 ? valid : train;
    const B = opts.batchSize;
    const interval = opts.progressIntervalMs ?? 2000;
    let samplesThisCall = 0;
    let secondsThisCall = 0;
    let stoppedEarly = state.badEpochs >= opts.patience;
    const stepsPerEpoch = Math.ceil(train.size / B);
    addon?.setThreads(threads.threads);
    const how = dataParallel ? 'data-parallel' : addon ? 'native pool' : `${backend}, one thread`;
    await opts.onProgress?.({
      stage: 'train-crm',
      done: state.nextEpoch * train.size,
      total: opts.epochs * train.size,
      message: `${threads.reason}; ${how}`,
    });
    stepper = dataParallel
      ? await ParallelStepper.start(model, adam, train, dataset.featureMap, backend, B)
      : new LocalStepper(model, adam, train);
    const rowsBuf = new Int32Array(B);

    while (!stoppedEarly && state.nextEpoch < opts.epochs) {
      const epoch = state.nextEpoch;
      const order = permutation(mulberry32(mixSeed(resolved.seed, epoch, 0x5f1e)), train.size);
      const t0 = performance.now();
      const cpu0 = process.cpuUsage();
      let lastReport = t0;
      let lossSum = 0;
      for (let s = 0; s < stepsPerEpoch; s++) {
        throwIfAborted(opts.signal);
        const start = s * B;
        const end = Math.min(train.size, start + B);
        const rows = rowsBuf.subarray(0, end - start);
        for (let i = start; i < end; i++) rows[i - start] = order[i];
        lossSum += (await stepper.step(rows, state.step)) * (end - start);
        state.step++;
        const now = performance.now();
        if (opts.onProgress && now - lastReport >= interval) {
          lastReport = now;
          const done = end;
          await opts.onProgress({
            stage: 'train-crm',
            epoch,
            step: state.step,
            done: epoch * train.size + done,
            total: opts.epochs * train.size,
            samplesPerSec: done / ((now - t0) / 1000),
          });
        }
        await yieldToEventLoop();
      }
      const seconds = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      const cpuSeconds = (cpu.user + cpu.system) / 1e6;
      samplesThisCall += train.size;
      secondsThisCall += seconds;

      const preds = await model.predict(evalRows, undefined, opts.evalBatchSize);
      const validAuc = auc(evalRows.labels, preds);
      const rec: EpochRecord = {
        epoch,
        trainLoss: lossSum / train.size,
        validAuc,
        validLogLoss: logLoss(evalRows.labels, preds),
        lr: adam.lr,
        samplesPerSec: train.size / seconds,
        seconds,
        cpuSeconds,
      };
      state.history.push(rec);
      if (validAuc > state.bestValidAuc + (opts.minDelta ?? 0) || state.bestEpoch < 0) {
        state.bestValidAuc = validAuc;
        state.bestEpoch = epoch;
        state.badEpochs = 0;
        best = readWeights(model);
      } else {
        state.badEpochs++;
        adam.lr *= opts.lrDecay;
      }
      state.lr = adam.lr;
      state.nextEpoch = epoch + 1;
      stoppedEarly = state.badEpochs >= opts.patience;
      lastCheckpoint = await saveCheckpoint(
        opts,
        model,
        adam,
        resolved,
        dataset.featureMap.id,
        state,
        best!,
        backend,
      );
      await opts.onProgress?.({
        stage: 'train-crm',
        epoch,
        step: state.step,
        done: (epoch + 1) * train.size,
        total: opts.epochs * train.size,
        samplesPerSec: rec.samplesPerSec,
        checkpoint: lastCheckpoint,
        message: `epoch ${epoch}: loss ${rec.trainLoss.toFixed(4)} valid AUC ${validAuc.toFixed(4)} lr ${adam.lr.toExponential(2)}`,
      });
    }

    if (best) writeWeights(model, new Map(best.map((t) => [t.name, t])), 'best weights');
    const result: TrainCrmResult = {
      model,
      config: resolved,
      history: state.history,
      bestEpoch: state.bestEpoch,
      bestValidAuc: state.bestValidAuc,
      epochsRun: state.nextEpoch,
      stoppedEarly,
      backend,
      trainSamplesPerSec: secondsThisCall > 0 ? samplesThisCall / secondsThisCall : 0,
      threads: dataParallel || addon ? threads.threads : 1,
      threadsReason: threads.reason,
    };
    if (lastCheckpoint) result.checkpoint = lastCheckpoint;
    return result;
  } catch (e) {
    model.dispose();
    throw e;
  } finally {
    await stepper?.close();
    adam.dispose();
    if (poolBefore !== undefined) addon?.setThreads(poolBefore);
  }
}
