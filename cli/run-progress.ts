import type { WorkflowExecutionDescription, WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';

export interface PendingActivity {
  activity?: string | null;
  attempt?: number | null;
  /** The last heartbeat's details (ml/progress.ts Progress). */
  progress: unknown;
}

/** Running activities of a workflow with their last heartbeat decoded. */
export function pendingFrom(desc: WorkflowExecutionDescription): PendingActivity[] {
  return (desc.raw.pendingActivities ?? []).map((a) => {
    const payload = a.heartbeatDetails?.payloads?.[0];
    let progress: unknown;
    try {
      progress = payload ? defaultPayloadConverter.fromPayload(payload as Payload) : undefined;
    } catch {
      progress = undefined;
    }
    return { activity: a.activityType?.name, attempt: a.attempt, progress };
  });
}

export async function pendingProgress(handle: Pick<WorkflowHandle, 'describe'>): Promise<PendingActivity[]> {
  return pendingFrom(await handle.describe());
}
