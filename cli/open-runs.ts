import type { Client } from '@temporalio/client';
import { defineSearchAttributeKey } from '@temporalio/common';

const stageKey = defineSearchAttributeKey('CorellaStage', 'KEYWORD');

export interface OpenRun {
  workflowId: string;
  type: string;
  startTime: Date;
  /** The CorellaStage search attribute, when the workflow has set one. */
  stage?: string;
}

/**
 * The other open workflows of the namespace. They share the workers of a new run, and the gpu worker takes
 * one activity at a time, so a run that an earlier `corella up` left open (stopped, never resumed) is
 * finished first: measured once, a retrain waited 16 minutes for its CRM stage behind a six-hour-old run,
 * with nothing on the screen to say why.
 */
export async function otherOpenRuns(client: Client, exceptId: string, limit = 5): Promise<OpenRun[]> {
  const runs: OpenRun[] = [];
  for await (const w of client.workflow.list({ query: "ExecutionStatus = 'Running'" })) {
    if (w.workflowId === exceptId) continue;
    const stage = w.typedSearchAttributes.get(stageKey);
    runs.push({
      workflowId: w.workflowId,
      type: w.type,
      startTime: w.startTime,
      ...(typeof stage === 'string' ? { stage } : {}),
    });
    if (runs.length >= limit) break;
  }
  return runs;
}

/**
 * The lines `corella up` and `corella retrain` print about them (none when there are none); `limit` is the
 * one otherOpenRuns was given, so a full list says there may be more.
 */
export function openRunsNote(
  runs: OpenRun[],
  uiUrl: (id: string) => string | undefined,
  limit = 5,
): string[] {
  if (runs.length === 0) return [];
  const count = runs.length >= limit ? `at least ${runs.length}` : String(runs.length);
  const head =
    runs.length === 1
      ? 'note: another run is open in this namespace; it shares the workers and may hold them first:'
      : `note: ${count} other runs are open in this namespace; they share the workers and may hold them first:`;
  return [
    head,
    ...runs.map((r) => {
      const ui = uiUrl(r.workflowId);
      const stage = r.stage ? `, stage ${r.stage}` : '';
      return `  ${r.workflowId} (${r.type}, started ${r.startTime.toISOString()}${stage})${ui ? ` ${ui}` : ''}`;
    }),
    '  cancel one that is not wanted: corella runs cancel WORKFLOW_ID',
  ];
}

/**
 * otherOpenRuns and openRunsNote together, for a command that has just started (or joined) `workflowId`. A
 * visibility query that fails costs the note, never the run.
 */
export async function noteOpenRuns(
  client: Client,
  workflowId: string,
  uiUrl: (id: string) => string | undefined,
): Promise<string[]> {
  try {
    return openRunsNote(await otherOpenRuns(client, workflowId), uiUrl);
  } catch {
    return [];
  }
}
