/**
 * Thin glue between ml/corella and ml/metrics: argument order (predictions first, as everywhere in
 * ml/corella), the metric a calibration optimises, and row picking.
 */
import { ctrMetrics, type CtrMetrics } from '../metrics/index.js';

export type CtrScores = CtrMetrics;

export type MetricName = 'auc' | 'logLoss' | 'acc';

export const METRIC_NAMES: readonly MetricName[] = ['auc', 'logLoss', 'acc'];

/** True when a larger value of the metric is better. */
export function higherIsBetter(m: MetricName): boolean {
  return m !== 'logLoss';
}

export function ctrScores(p: ArrayLike<number>, labels: ArrayLike<number>): CtrScores {
  return ctrMetrics(labels, p);
}

export function pick<T extends ArrayLike<number>>(a: T, rows: ArrayLike<number>): Float32Array {
  const out = new Float32Array(rows.length);
  for (let i = 0; i < rows.length; i++) out[i] = a[rows[i]];
  return out;
}
