/**
 * After stage 3, Platt-scale the LLM branch's logit on the validation rows routing would send it (the top
 * fraction by CRM entropy) and fold the scale into the branch's output layer, so the served branch carries
 * it. The paper uses the branch's probabilities as they are; this is opt-in (joint.calibrateOutput > 0).
 */
import { logit } from './boundary.js';
import type { JointLlmBranch } from './joint-llm-branch.js';
import { fitPlatt } from './platt.js';
import { entropies } from './routing.js';
import { ctrScores, type CtrScores } from './score.js';

export interface OutputCalibration {
  a: number;
  b: number;
  rows: number;
  before: CtrScores;
  after: CtrScores;
}

/**
 * `pc`/`pl`: the CRM's and the branch's probabilities on the validation rows, `labels` theirs; `fraction` of
 * those rows (at least one) with the highest CRM entropy are fitted.
 */
export function calibrateBranchOutput(
  branch: JointLlmBranch,
  v: { pc: Float32Array; pl: Float32Array; labels: Float32Array },
  fraction: number,
): OutputCalibration {
  const h = entropies(v.pc);
  const k = Math.max(1, Math.round(fraction * v.pc.length));
  const top = Int32Array.from({ length: h.length }, (_, i) => i)
    .sort((x, y) => h[y] - h[x])
    .slice(0, k);
  const z = Float32Array.from(top, (i) => logit(v.pl[i]));
  const y = Float32Array.from(top, (i) => v.labels[i]);
  const { a, b } = fitPlatt(z, y);
  const before = ctrScores(
    Float32Array.from(top, (i) => v.pl[i]),
    y,
  );
  branch.rescaleOutput(a, b);
  const after = ctrScores(
    Float32Array.from(z, (zi) => 1 / (1 + Math.exp(-(a * zi + b)))),
    y,
  );
  return { a, b, rows: k, before, after };
}
