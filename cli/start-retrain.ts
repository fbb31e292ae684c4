import { WorkflowExecutionAlreadyStartedError, type Client, type WorkflowHandle } from '@temporalio/client';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import { TASK_QUEUE_CPU } from '../workflows/search-attributes.js';
import type { retrainWorkflow } from '../workflows/retrain.js';
import { configSummary, retrainInput, retrainWorkflowId } from './config.js';
import { workflowMetadata, type PreparedRun } from './prepare-run.js';

export interface StartedRetrain {
  workflowId: string;
  /** False when a run of the same dataset and config was already running or had completed. */
  started: boolean;
  handle: WorkflowHandle<typeof retrainWorkflow>;
}

/**
 * Starts retrainWorkflow for a prepared dataset + config, the one way every CLI command starts a retrain.
 * The workflow id is the business key (one run per dataset + config), so a duplicate trigger joins the
 * existing run instead of starting a second.
 */
export async function startRetrain(
  client: Client,
  { data, config }: PreparedRun,
  trigger: string,
): Promise<StartedRetrain> {
  const { id } = retrainWorkflowId(data.spec, config);
  try {
    const handle = await client.workflow.start<typeof retrainWorkflow>('retrainWorkflow', {
      taskQueue: TASK_QUEUE_CPU,
      workflowId: id,
      // A completed retrain of the same data and config is not run again (its result is shown); a failed
      // or cancelled one may be.
      workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
      args: [retrainInput(data.spec, config, trigger)],
      memo: { dataset: data.spec, origin: data.origin, config: configSummary(config) },
      ...workflowMetadata(data, config, trigger),
    });
    return { workflowId: id, started: true, handle };
  } catch (e) {
    if (!(e instanceof WorkflowExecutionAlreadyStartedError)) throw e;
    return { workflowId: id, started: false, handle: client.workflow.getHandle(id) };
  }
}
