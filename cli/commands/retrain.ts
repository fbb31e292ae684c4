import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError } from '@temporalio/client';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import type { RetrainResult } from '../../activities/types.js';
import { TASK_QUEUE_CPU } from '../../workflows/search-attributes.js';
import type { retrainWorkflow } from '../../workflows/retrain.js';
import { failureExitCode, failureMessage } from '../failure.js';
import { EXIT, parse } from '../args.js';
import { connectClient, workflowUiUrl } from '../client.js';
import { configSummary, retrainInput, retrainWorkflowId } from '../config.js';
import { prepareRun, RUN_OPTIONS, workflowMetadata } from '../prepare-run.js';
import { makeOutput } from '../output.js';
import { corellaHome } from '../services/paths.js';
import { summaryTable } from './up.js';

/** `corella retrain`: starts retrainWorkflow on a running stack; a duplicate start joins the running one. */
export async function retrain(argv: string[]): Promise<number> {
  const { values } = parse(argv, { ...RUN_OPTIONS, wait: { type: 'boolean' } });
  const out = makeOutput(Boolean(values.json));
  const { data, config } = await prepareRun(values, corellaHome(), out.info);
  const { id } = retrainWorkflowId(data.spec, config);
  const tc = await connectClient();
  try {
    let started = true;
    try {
      await tc.client.workflow.start<typeof retrainWorkflow>('retrainWorkflow', {
        taskQueue: TASK_QUEUE_CPU,
        workflowId: id,
        // A completed retrain of the same data and config is not run again (its result is shown); a failed
        // or cancelled one may be.
        workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        args: [retrainInput(data.spec, config, 'corella retrain')],
        memo: { dataset: data.spec, origin: data.origin, config: configSummary(config) },
        ...workflowMetadata(data, config, 'corella retrain'),
      });
    } catch (e) {
      if (!(e instanceof WorkflowExecutionAlreadyStartedError)) throw e;
      started = false;
    }
    const ui = workflowUiUrl(tc.uiBase, tc.namespace, id);
    if (!values.wait) {
      out.result(
        { workflowId: id, started, ui },
        () =>
          `${started ? 'started' : 'already running or completed (not started again)'}: ${id}${ui ? `\n${ui}` : ''}`,
      );
      return EXIT.ok;
    }
    try {
      const result = await tc.client.workflow.getHandle<typeof retrainWorkflow>(id).result();
      out.result({ workflowId: id, started, ...result }, () => summaryTable(result as RetrainResult));
      return EXIT.ok;
    } catch (e) {
      if (e instanceof WorkflowFailedError) {
        const cause = failureMessage(e);
        out.result({ workflowId: id, failed: cause }, () => `run ${id} failed: ${cause}`);
        return failureExitCode(e);
      }
      throw e;
    }
  } finally {
    await tc.close();
  }
}
