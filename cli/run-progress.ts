import {
  decodePendingActivityState,
  type WorkflowExecutionDescription,
  type WorkflowHandle,
} from '@temporalio/client';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';

export interface PendingActivity {
  activity?: string | null;
  attempt?: number | null;
  /** The last heartbeat's details (ml/progress.ts Progress). */
  progress: unknown;
  /**
   * When the attempt was scheduled, while no worker has started it yet. In the future during a retry's
   * backoff; long past when every worker of its queue is busy (another open run holding the one gpu slot).
   */
  scheduledAt?: Date;
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
    const ts = decodePendingActivityState(a.state) === 'SCHEDULED' ? a.scheduledTime : undefined;
    const scheduledAt = ts ? new Date(Number(ts.seconds ?? 0) * 1000 + (ts.nanos ?? 0) / 1e6) : undefined;
    return {
      activity: a.activityType?.name,
      attempt: a.attempt,
      progress,
      ...(scheduledAt ? { scheduledAt } : {}),
    };
  });
}

export async function pendingProgress(handle: Pick<WorkflowHandle, 'describe'>): Promise<PendingActivity[]> {
  return pendingFrom(await handle.describe());
}
