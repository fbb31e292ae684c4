import { CancellationScope, isCancellation, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { CorellaActivities, RecalibrateInput, RecalibrateResult } from '../activities/types.js';
import { DEFAULT_HEARTBEAT_TIMEOUT, NON_RETRYABLE } from './retrain.js';
import { TASK_QUEUE_CPU } from './search-attributes.js';
import { rootCause } from './failure.js';

/**
 * Re-derives the champion's entropy threshold on recent data (a dataset window, or with `source: 'served'`
 * the served traffic that received feedback); run on a Temporal Schedule.
 */
export async function recalibrateWorkflow(input: RecalibrateInput = {}): Promise<RecalibrateResult> {
  const acts = proxyActivities<CorellaActivities>({
    taskQueue: input.queues?.cpu ?? TASK_QUEUE_CPU,
    startToCloseTimeout: '2h',
    heartbeatTimeout: DEFAULT_HEARTBEAT_TIMEOUT,
    retry: {
      initialInterval: '1s',
      maximumInterval: '1m',
      maximumAttempts: 5,
      nonRetryableErrorTypes: NON_RETRYABLE,
    },
  });
  const { runId } = await CancellationScope.nonCancellable(() =>
    acts.startRun({
      workflowId: workflowInfo().workflowId,
      kind: 'recalibrate',
      config: input,
      datasetLabel:
        input.source === 'served' ? 'served-window' : (input.datasetVersionId ?? 'champion-window'),
    }),
  );
  try {
    const result = await acts.recalibrate({ ...input, runId });
    await acts.finishRun({ runId, status: 'completed', summary: { ...result } });
    return result;
  } catch (err) {
    const cancelled = isCancellation(err);
    await CancellationScope.nonCancellable(() =>
      acts.finishRun({
        runId,
        status: cancelled ? 'cancelled' : 'failed',
        error: rootCause(err),
      }),
    );
    throw err;
  }
}
