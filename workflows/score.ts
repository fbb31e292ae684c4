import {
  CancellationScope,
  ContinueAsNew,
  continueAsNew,
  isCancellation,
  patched,
  defineQuery,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { defineSearchAttributeKey } from '@temporalio/common';
import type {
  BatchScoreInput,
  BatchScoreResult,
  ScoreChunkResult,
  ScoreProgress,
  ScoreTally,
} from '../activities/types.js';
import { activityProxies } from './retrain.js';
import { rootCause } from './failure.js';

export const scoreProgressQuery = defineQuery<ScoreProgress>('scoreProgress');

const DEFAULT_CHUNK_ROWS = 1_000;

// The same keys retrainWorkflow sets, so batch runs can be filtered by stage and model in the Temporal UI.
const stageKey = defineSearchAttributeKey('CorellaStage', 'KEYWORD');
const modelKey = defineSearchAttributeKey('CorellaModelVersion', 'KEYWORD');

/**
 * Chunks completed per workflow run before it continues as new: each chunk adds a handful of history events,
 * and a long file would otherwise approach Temporal's history limit. Finished chunks are named pointers in
 * the artifact store, so the next run needs only the plan and the tallies.
 */
const CHUNKS_PER_RUN = 500;

function emptyTally(): ScoreTally {
  return {
    routes: { crm: 0, llm: 0, 'crm-fallback': 0 },
    scoredChunks: 0,
    reusedChunks: 0,
    retriedChunks: 0,
  };
}

function add(t: ScoreTally, r: ScoreChunkResult): void {
  for (const k of ['crm', 'llm', 'crm-fallback'] as const) t.routes[k] += r.routes[k];
  if (r.reused) t.reusedChunks++;
  else t.scoredChunks++;
  if (r.attempt > 1) t.retriedChunks++;
}

/**
 * Batch scoring of a JSON-lines artifact: plan (count lines, group a user's consecutive candidates into one
 * request, cut chunks at request boundaries, pin the model version), score each chunk in its own activity on
 * the GPU queue, then join the chunk outputs into the output artifact. Only sha256s and counts pass through
 * history. A worker killed mid-chunk costs that chunk's attempt only: the retry (or a re-run of the whole
 * workflow) finds the chunks already finished under their named pointers and does not score them again.
 */
/**
 * Patch `score-run-row`: a batch score keeps a run row (kind `score`) like retrain and recalibrate, opened
 * by the first run of a continue-as-new chain and closed by the last, so a failure's root cause is in
 * Postgres, not only in Temporal (issue 18). Runs from before the patch replay without the bookkeeping.
 */
export const SCORE_RUN_ROW = 'score-run-row';

export async function scoreWorkflow(input: BatchScoreInput): Promise<BatchScoreResult> {
  if (!patched(SCORE_RUN_ROW)) return scoreChain(input, undefined);
  const { bookkeeping } = activityProxies(input.queues, input.heartbeatTimeout);
  const runId =
    input.resume?.runId ??
    (
      await bookkeeping.startRun({
        workflowId: workflowInfo().workflowId,
        kind: 'score',
        config: { inputSha256: input.inputSha256, inputName: input.inputName, model: input.model },
        datasetLabel: input.inputName ?? input.inputSha256,
      })
    ).runId;
  try {
    const result = await scoreChain(input, runId);
    await bookkeeping.finishRun({ runId, status: 'completed', summary: { ...result } });
    return result;
  } catch (err) {
    // Continuing as new is how a long file goes on, not an end: the next run closes the row.
    if (err instanceof ContinueAsNew) throw err;
    const cancelled = isCancellation(err);
    await CancellationScope.nonCancellable(() =>
      bookkeeping.finishRun({ runId, status: cancelled ? 'cancelled' : 'failed', error: rootCause(err) }),
    );
    throw err;
  }
}

async function scoreChain(input: BatchScoreInput, runId: string | undefined): Promise<BatchScoreResult> {
  const { cpu, gpu } = activityProxies(input.queues, input.heartbeatTimeout);
  const { workflowId } = workflowInfo();
  const progress: ScoreProgress = { stage: 'planning', chunksDone: input.resume?.nextChunk ?? 0 };
  setHandler(scoreProgressQuery, () => progress);

  const plan =
    input.resume?.plan ??
    (await cpu.planScore({
      workflowId,
      inputSha256: input.inputSha256,
      inputName: input.inputName,
      model: input.model,
      chunkRows: input.chunkRows ?? DEFAULT_CHUNK_ROWS,
    }));
  const tally = input.resume?.tally ?? emptyTally();
  Object.assign(progress, { stage: 'scoring', chunks: plan.chunks, rows: plan.rows });
  upsertSearchAttributes([
    { key: stageKey, value: 'scoring' },
    { key: modelKey, value: plan.modelVersion },
  ]);

  const first = input.resume?.nextChunk ?? 0;
  const stop = Math.min(plan.chunks, first + Math.max(1, input.chunksPerRun ?? CHUNKS_PER_RUN));
  let next = first;
  // A small pool: `parallelChunks` chunk activities in flight, taken in order.
  const lane = async (): Promise<void> => {
    while (next < stop) {
      const chunk = next++;
      const r = await gpu.scoreChunk({
        workflowId,
        inputSha256: input.inputSha256,
        planSha256: plan.planSha256,
        chunk,
      });
      add(tally, r);
      progress.chunksDone++;
    }
  };
  const lanes = Math.max(1, Math.min(input.parallelChunks ?? 1, stop - first));
  await Promise.all(Array.from({ length: lanes }, lane));
  if (stop < plan.chunks) {
    await continueAsNew<typeof scoreWorkflow>({
      ...input,
      resume: { plan, nextChunk: stop, tally, ...(runId ? { runId } : {}) },
    });
  }

  progress.stage = 'joining';
  upsertSearchAttributes([{ key: stageKey, value: 'joining' }]);
  const out = await cpu.finishScore({ workflowId, planSha256: plan.planSha256 });
  progress.stage = 'done';
  upsertSearchAttributes([{ key: stageKey, value: 'done' }]);
  return {
    ...tally,
    outputSha256: out.outputSha256,
    rows: out.rows,
    chunks: plan.chunks,
    modelVersion: plan.modelVersion,
    threshold: plan.threshold,
  };
}
