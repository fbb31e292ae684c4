import { ActivityFailure, ApplicationFailure, ChildWorkflowFailure } from '@temporalio/workflow';

/** Longest root cause a run row keeps (activities bound their failures too; this is the last guard). */
const MAX_ROOT_CAUSE = 2_000;

/**
 * The root cause of a failed workflow for its run row: the activity's own typed error (`BAD_DATASET:
 * ratings.dat:3 …`), not the "Activity task failed" wrapper Temporal puts around it.
 */
export function rootCause(err: unknown): string {
  let text: string;
  if ((err instanceof ActivityFailure || err instanceof ChildWorkflowFailure) && err.cause)
    return rootCause(err.cause);
  if (err instanceof ApplicationFailure)
    text = err.type && !err.message.startsWith(`${err.type}:`) ? `${err.type}: ${err.message}` : err.message;
  else text = err instanceof Error ? err.message : String(err);
  return text.length > MAX_ROOT_CAUSE ? `${text.slice(0, MAX_ROOT_CAUSE)}…` : text;
}
