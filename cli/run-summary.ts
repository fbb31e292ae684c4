import type { RetrainResult } from '../activities/types.js';
import { table } from './output.js';

const percent = (v: number | undefined): string => `${((v ?? NaN) * 100).toFixed(1)}%`;

/**
 * The routed fraction of the split the table's metrics come from. The table shows test metrics, so it is the
 * test's (cold-item rows included, as calibration and evaluation route them); the validation split's alone
 * once said 0.0% beside a hybrid AUC that differed from the CRM's on test.
 */
function routedLine(test: number | undefined, validation: number | undefined): string {
  if (test === undefined) return `routed to LLM: ${percent(validation)} (validation)`;
  return `routed to LLM: ${percent(test)} of the test rows (validation ${percent(validation)})`;
}

/** The table `up` and `retrain --wait` print when a retrain finishes: test metrics when there are some. */
export function summaryTable(result: RetrainResult): string {
  const m = result.metrics;
  const pick = (k: string): number | undefined => (k in m ? m[k] : undefined);
  const rows = ['crm', 'llm', 'hybrid'].map((who) => [
    who === 'crm' ? 'CRM (DCNv2)' : who === 'llm' ? 'LLM branch' : 'hybrid',
    pick(`eval.test.${who}.auc`) ?? pick(`calibration.${who}.auc`),
    pick(`eval.test.${who}.logloss`) ?? pick(`calibration.${who}.logloss`),
    pick(`eval.test.${who}.acc`) ?? pick(`calibration.${who}.acc`),
  ]);
  return [
    table(rows, ['model', 'AUC', 'LogLoss', 'ACC']),
    '',
    `${routedLine(pick('eval.test.routedFraction'), pick('calibration.routedFraction'))}   threshold: ${result.threshold.toFixed(4)}`,
    `model version: ${result.modelVersionId} (${result.alias})`,
    ...(result.reportPath ? [`report: ${result.reportPath}`] : []),
  ].join('\n');
}
