import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError } from '@temporalio/client';
import type { RetrainResult } from '../../activities/types.js';
import { TASK_QUEUE_CPU } from '../../workflows/search-attributes.js';
import type { retrainWorkflow } from '../../workflows/retrain.js';
import { failureMessage } from '../failure.js';
import { EXIT, parse } from '../args.js';
import { connectClient, workflowUiUrl } from '../client.js';
import { configSummary, loadPipelineConfig, retrainInput, retrainWorkflowId } from '../config.js';
import { resolveDataSource } from '../data-source.js';
import { resolveModel } from '../model-source.js';
import { makeOutput } from '../output.js';
import { corellaHome } from '../services/paths.js';
import { summaryTable } from './up.js';

/** `corella retrain`: starts retrainWorkflow on a running stack; a duplicate start joins the running one. */
export async function retrain(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    'data-dir': { type: 'string' },
    source: { type: 'string' },
    name: { type: 'string' },
    config: { type: 'string' },
    model: { type: 'string' },
    wait: { type: 'boolean' },
  });
  const out = makeOutput(Boolean(values.json));
  const home = corellaHome();
  const data = await resolveDataSource({
    dataDir: values['data-dir'],
    source: values.source,
    name: values.name,
    home,
    allowSynthetic: true,
  });
  const config = await loadPipelineConfig(values.config ?? 'default');
  const model = await resolveModel({ model: values.model, home, log: out.info });
  config.llm = { ...(config.llm ?? {}), model: model.path, modelSha256: model.sha256 };
  const { id } = retrainWorkflowId(data.spec, config);
  const tc = await connectClient();
  try {
    let started = true;
    try {
      await tc.client.workflow.start<typeof retrainWorkflow>('retrainWorkflow', {
        taskQueue: TASK_QUEUE_CPU,
        workflowId: id,
        args: [retrainInput(data.spec, config, 'corella retrain')],
        memo: { dataset: data.spec, origin: data.origin, config: configSummary(config) },
      });
    } catch (e) {
      if (!(e instanceof WorkflowExecutionAlreadyStartedError)) throw e;
      started = false;
    }
    const ui = workflowUiUrl(tc.uiBase, tc.namespace, id);
    if (!values.wait) {
      out.result(
        { workflowId: id, started, ui },
        () => `${started ? 'started' : 'already running (not started again)'}: ${id}${ui ? `\n${ui}` : ''}`,
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
        return EXIT.runFailed;
      }
      throw e;
    }
  } finally {
    await tc.close();
  }
}
