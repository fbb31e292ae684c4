import type { RetrainResult } from '../activities/types.js';
import { table } from './output.js';

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
    `routed to LLM: ${((pick('calibration.routedFraction') ?? NaN) * 100).toFixed(1)}%   threshold: ${result.threshold.toFixed(4)}`,
    `model version: ${result.modelVersionId} (${result.alias})`,
    ...(result.reportPath ? [`report: ${result.reportPath}`] : []),
  ].join('\n');
}
