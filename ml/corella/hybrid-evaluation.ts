/**
 * The hybrid against the CRM on a test pool larger than the one the LLM branch is evaluated on.
 *
 * The alignment evaluation runs the LLM on every row of its pool, because its LLM-branch columns need it;
 * that keeps the pool small (1,500 rows in config/ml-1m-cpu.json), and on 1,500 rows a gain of +0.003 AUC
 * cannot be told from noise. But the hybrid differs from the CRM only on routed rows, so its gain needs the
 * LLM only there: this scores a large pool the way the server does (HybridPredictor), the CRM on every row
 * and the LLM on the ~17% the threshold routes, and bootstraps the gain over whole users.
 */
import type { EncodedSplit } from '../data/types.js';
import type { LongRunOptions } from '../progress.js';
import { aucDiffInterval, groupBy } from '../report/stats.js';
import { HybridPredictor, type HybridPredictorOptions } from './routing.js';
import { ctrScores, pick, type CtrScores } from './score.js';

export interface HybridEvaluation {
  split: string;
  n: number;
  /** Rows the threshold routed, i.e. the only rows the LLM branch was run on. */
  routed: number;
  routedFraction: number;
  threshold: number;
  crm: CtrScores;
  hybrid: CtrScores;
  /** hybrid − CRM AUC with its 95% percentile interval (whole users resampled); undefined without two users. */
  gain?: { auc: number; lo95: number; hi95: number; rounds: number; unit: 'user' | 'row' };
}

export interface HybridEvaluationArgs extends LongRunOptions, HybridPredictorOptions {
  split: EncodedSplit;
  rows: ArrayLike<number>;
  /** Bootstrap resamples of the gain (default 1,000) and their seed. */
  rounds?: number;
  seed?: number;
}

export async function evaluateHybrid(args: HybridEvaluationArgs): Promise<HybridEvaluation> {
  const { split, rows, signal, onProgress, rounds = 1000, seed = 1, ...predictor } = args;
  const out = await new HybridPredictor(predictor).predict(split, rows, { signal, onProgress });
  const labels = pick(split.labels, out.rows);
  const users = pick(split.userRows, out.rows);
  const groups = groupBy(users);
  const unit = groups.length >= 2 ? 'user' : 'row';
  const iv = aucDiffInterval(
    labels,
    out.p,
    out.pCrm,
    unit === 'user' ? groups : Array.from({ length: labels.length }, (_, i) => [i]),
    { rounds, seed, unit },
  );
  return {
    split: split.name,
    n: out.rows.length,
    routed: out.routedRows.length,
    routedFraction: out.routedFraction,
    threshold: predictor.threshold,
    crm: ctrScores(out.pCrm, labels),
    hybrid: ctrScores(out.p, labels),
    ...(iv
      ? { gain: { auc: iv.point, lo95: iv.lo95, hi95: iv.hi95, rounds: iv.rounds, unit: iv.unit } }
      : {}),
  };
}
