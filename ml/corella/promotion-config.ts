import { z } from 'zod';
import { didYouMean } from '../config/did-you-mean.js';

/**
 * Metrics a retrain registers that can gate promotion, by the prefixes the workflow gives them (stage 1
 * `crm.`/`lr.`, `calibration.`, `eval.`). The gate promotes when the candidate's value is above the
 * champion's plus the margin, so only metrics where higher is better qualify: a LogLoss would promote the
 * worse model.
 */
export const PROMOTION_METRICS = [
  ...['crm', 'lr'].flatMap((m) => [`${m}.valid.auc`, `${m}.test.auc`, `${m}.test.userAuc`, `${m}.test.acc`]),
  ...['hybrid', 'crm'].flatMap((b) => [`calibration.${b}.auc`, `calibration.${b}.acc`]),
  ...['hybrid', 'crm', 'llm'].flatMap((b) => [`eval.test.${b}.auc`, `eval.test.${b}.acc`]),
] as const;

function metricError(input: unknown): string {
  if (typeof input !== 'string') return `expected a metric name, got ${JSON.stringify(input)}`;
  if (/logloss/i.test(input))
    return `${input}: lower is better, but promotion needs a metric where higher is better (e.g. ${input.replace(/logloss/i, 'auc')})`;
  const guess = didYouMean(input, PROMOTION_METRICS);
  return `${JSON.stringify(input)} is not a metric the pipeline produces${guess ? `; did you mean ${guess}?` : ` (one of ${PROMOTION_METRICS.join(', ')})`}`;
}

/** The `promotion` section: a candidate becomes champion only when it beats the champion by `margin`. */
export const promotionSchema = z.strictObject({
  metric: z
    .enum(PROMOTION_METRICS, { error: (iss) => metricError(iss.input) })
    .default('calibration.hybrid.auc')
    .describe('The metric a candidate must beat the champion on (higher is better).'),
  margin: z.number().min(0).default(0).describe('How much the candidate must beat the champion by.'),
});

export type PromotionConfig = z.output<typeof promotionSchema>;

export const DEFAULT_PROMOTION: PromotionConfig = promotionSchema.parse({});
