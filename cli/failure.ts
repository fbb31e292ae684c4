import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { EXIT } from './args.js';

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

/** Failure types that mean the input was bad (README: exit 4), as ml/errors.ts names them. */
const BAD_INPUT_TYPES = new Set([
  'BAD_DATASET',
  'BAD_CONFIG',
  'BAD_MODEL_FILE',
  'FEATURE_MAP_MISMATCH',
  'PROMPT_TOO_LONG',
  'BAD_ARTIFACT_NAME',
  'BAD_REQUEST',
]);
/** Failure types that mean a service was gone (README: exit 3). */
const UNAVAILABLE_TYPES = new Set(['SERVICE_UNAVAILABLE', 'DB_UNAVAILABLE', 'GPU_UNAVAILABLE']);

/**
 * The activity's error code: the first ApplicationFailure in the cause chain typed with a code
 * (`BAD_DATASET`). Deeper ones carry class names (`DatasetError`: the converted cause of the typed failure).
 */
export function failureType(e: unknown): string | undefined {
  for (let cur: unknown = e, depth = 0; cur instanceof Error && depth < 16; cur = cur.cause, depth++) {
    if (cur instanceof ApplicationFailure && cur.type && /^[A-Z][A-Z0-9_]*$/.test(cur.type)) return cur.type;
  }
  return undefined;
}

/** README's exit codes for a failed run: 4 for bad input, 3 for a service that vanished, else 1. */
export function failureExitCode(e: WorkflowFailedError): number {
  const type = failureType(e);
  if (type !== undefined && BAD_INPUT_TYPES.has(type)) return EXIT.badInput;
  if (type !== undefined && UNAVAILABLE_TYPES.has(type)) return EXIT.unavailable;
  return EXIT.runFailed;
}

/** gRPC status 14 (UNAVAILABLE): the Temporal frontend is not reachable (gone, restarting, wrong address). */
const GRPC_UNAVAILABLE = 14;

/**
 * A Temporal server that cannot be reached, however the SDK wraps it: a ServiceError or a grpc-js error
 * carrying status 14, the client's own ConnectionError, or Connection.connect's deadline. Counted as "unavailable" (exit 3), not internal.
 */
export function isUnavailable(e: unknown): boolean {
  for (let cur: unknown = e, depth = 0; cur instanceof Error && depth < 16; cur = cur.cause, depth++) {
    const code = (cur as { code?: unknown }).code;
    if (code === GRPC_UNAVAILABLE) return true;
    if (cur.name === 'ConnectionError' || cur.name === 'TransportError') return true;
    // grpc-js's text for status 14, and the SDK's when the first connection never came up.
    if (/\b14 UNAVAILABLE\b|Failed to connect before the deadline/.test(cur.message)) return true;
  }
  return false;
}
