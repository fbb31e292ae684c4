import { WorkflowFailedError } from '@temporalio/client';
import type { RetrainResult } from '../../activities/types.js';
import { failureExitCode, failureMessage } from '../failure.js';
import { resultThroughOutages } from '../await-result.js';
import { EXIT, type ArgsOf } from '../args.js';
import { connectClient, workflowUiUrl } from '../client.js';
import { prepareRun } from '../prepare-run.js';
import { makeOutput } from '../output.js';
import { summaryTable } from '../run-summary.js';
import { corellaHome } from '../services/paths.js';
import type { retrainSpec } from '../specs/retrain.js';
import { startRetrain } from '../start-retrain.js';
import { noteOpenRuns } from '../open-runs.js';

/** `corella retrain`: starts retrainWorkflow on a running stack; a duplicate start joins the running one. */
export async function retrain({ values }: ArgsOf<typeof retrainSpec>): Promise<number> {
  const out = makeOutput(Boolean(values.json));
  const prepared = await prepareRun(values, corellaHome(), out.info);
  const tc = await connectClient();
  try {
    const { workflowId: id, started, handle } = await startRetrain(tc.client, prepared, 'corella retrain');
    const ui = workflowUiUrl(tc.uiBase, tc.namespace, id);
    for (const l of await noteOpenRuns(tc.client, id, (w) => workflowUiUrl(tc.uiBase, tc.namespace, w)))
      out.info(l);
    if (!values.wait) {
      out.result(
        { workflowId: id, started, ui },
        () =>
          `${started ? 'started' : 'already running or completed (not started again)'}: ${id}${ui ? `\n${ui}` : ''}`,
      );
      return EXIT.ok;
    }
    try {
      // A dev server that `up` is restarting comes back within seconds; an external cluster gone for two
      // minutes is an outage to report (exit 3).
      const result = await resultThroughOutages<RetrainResult>(handle, { log: out.info, giveUpMs: 120_000 });
      out.result({ workflowId: id, started, ...result }, () => summaryTable(result));
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
