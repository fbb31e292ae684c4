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

const signed = (v: number): string => `${v >= 0 ? '+' : '−'}${Math.abs(v).toFixed(4)}`;

/**
 * The hybrid against the CRM on the wide test pool (llm.pools.hybridTest), where the LLM ran on routed rows
 * only; the table's pool is small because the LLM-branch column needs the LLM on every row.
 */
function wideLine(pick: (k: string) => number | undefined): string[] {
  const rows = pick('eval.wide.rows');
  const crm = pick('eval.wide.crm.auc');
  const hybrid = pick('eval.wide.hybrid.auc');
  if (rows === undefined || crm === undefined || hybrid === undefined) return [];
  if (pick('eval.wide.llmRows') === 0)
    return [`hybrid on ${rows} test rows: nothing routed, so it is the CRM (AUC ${crm.toFixed(4)})`];
  const lo = pick('eval.wide.gainLo');
  const hi = pick('eval.wide.gainHi');
  const interval = lo !== undefined && hi !== undefined ? ` [${signed(lo)}, ${signed(hi)}]` : '';
  return [
    `hybrid − CRM on ${rows} test rows (LLM on the ${percent(pick('eval.wide.routedFraction'))} routed): ` +
      `AUC ${crm.toFixed(4)} → ${hybrid.toFixed(4)}, ${signed(hybrid - crm)}${interval}`,
  ];
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
    ...wideLine(pick),
    `model version: ${result.modelVersionId} (${result.alias})`,
    ...(result.reportPath ? [`report: ${result.reportPath}`] : []),
  ].join('\n');
}
