import { WorkflowFailedError } from '@temporalio/client';

/** The innermost message of a failed workflow: the activity's own error, not the wrappers around it. */
export function failureMessage(e: WorkflowFailedError): string {
  let cur: unknown = e;
  let msg = e.message;
  while (cur instanceof Error) {
    if (cur.message) msg = cur.message;
    cur = cur.cause;
  }
  return msg;
}
