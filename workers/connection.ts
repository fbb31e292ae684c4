import { NativeConnection } from '@temporalio/worker';
import { NAMESPACE_DEFAULT } from '../workflows/search-attributes.js';

export interface TemporalTarget {
  address: string;
  namespace: string;
}

/** TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE when set (a real cluster), otherwise what the caller started. */
export function temporalTargetFromEnv(fallback?: TemporalTarget): TemporalTarget | undefined {
  const address = process.env.TEMPORAL_ADDRESS ?? fallback?.address;
  if (!address) return undefined;
  return { address, namespace: process.env.TEMPORAL_NAMESPACE ?? fallback?.namespace ?? NAMESPACE_DEFAULT };
}

export function connectWorker(target: TemporalTarget): Promise<NativeConnection> {
  return NativeConnection.connect({ address: target.address });
}
