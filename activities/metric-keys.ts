/**
 * The names of a run's metrics, in one place. Each stage's activity logs its metrics to Postgres under its
 * prefix and returns them unprefixed; the workflow adds the same prefix to its summary (which the registry
 * and the promotion metric read), so both sides must take the prefix from here. Pure constants and
 * functions: the workflow imports this module, so it must stay deterministic and free of imports.
 */

/** The prefix of each stage's metrics ('dataset.users', 'joint.stage2.loss', 'eval.test.hybrid.auc'). */
export const METRIC_PREFIX = {
  dataset: 'dataset',
  /** Stage 1 metrics carry their model's prefix: the CRM (DCNv2) and the LR baseline side by side. */
  crm: 'crm',
  lr: 'lr',
  llm: 'llm',
  joint: 'joint',
  calibration: 'calibration',
  eval: 'eval',
  recalibration: 'recalibration',
} as const;

export type MetricPrefix = (typeof METRIC_PREFIX)[keyof typeof METRIC_PREFIX];

/** `prefix.key` ('' = the key as it is). */
export function metricKey(prefix: MetricPrefix | '', key: string): string {
  return prefix ? `${prefix}.${key}` : key;
}

/** Every key of `metrics` under `prefix`. */
export function prefixMetrics(
  prefix: MetricPrefix | '',
  metrics: Record<string, number>,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(metrics)) out[metricKey(prefix, k)] = v;
  return out;
}

/** A CTR scorer's three numbers as metrics: `<key>.auc`, `<key>.logloss`, `<key>.acc`. */
export function scoreMetrics(
  key: string,
  s: { auc: number; logLoss: number; acc: number },
): Record<string, number> {
  return { [`${key}.auc`]: s.auc, [`${key}.logloss`]: s.logLoss, [`${key}.acc`]: s.acc };
}
