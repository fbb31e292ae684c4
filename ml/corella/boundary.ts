/**
 * Decision-boundary shift between the CRM and the LLM branch: how similarly the two decide on the same
 * validation samples. Measured before and after stage 2 to show what joint training + alignment did.
 */
export interface BoundaryShift {
  n: number;
  /** Fraction of samples where both make the same decision (p ≥ 0.5 ⇒ click). */
  agreement: number;
  /** Pearson correlation of the two logits. */
  logitCorrelation: number;
  /** Mean |p_crm − p_llm|. */
  meanAbsDiff: number;
  /** L_align on the validation samples (NaN when no pairs are configured). */
  alignLoss: number;
}

const EPS = 1e-7;

export function logit(p: number): number {
  const q = Math.min(1 - EPS, Math.max(EPS, p));
  return Math.log(q / (1 - q));
}

export function pearson(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = a.length;
  if (n < 2) return NaN;
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < n; i++) {
    ma += a[i];
    mb += b[i];
  }
  ma /= n;
  mb /= n;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    const da = a[i] - ma;
    const db = b[i] - mb;
    sab += da * db;
    saa += da * da;
    sbb += db * db;
  }
  return saa > 0 && sbb > 0 ? sab / Math.sqrt(saa * sbb) : NaN;
}

export function boundaryShift(
  pCrm: ArrayLike<number>,
  pLlm: ArrayLike<number>,
  alignLoss: number,
): BoundaryShift {
  const n = pCrm.length;
  let agree = 0;
  let diff = 0;
  const la = new Float64Array(n);
  const lb = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    if (pCrm[i] >= 0.5 === pLlm[i] >= 0.5) agree++;
    diff += Math.abs(pCrm[i] - pLlm[i]);
    la[i] = logit(pCrm[i]);
    lb[i] = logit(pLlm[i]);
  }
  return {
    n,
    agreement: n > 0 ? agree / n : NaN,
    logitCorrelation: pearson(la, lb),
    meanAbsDiff: n > 0 ? diff / n : NaN,
    alignLoss,
  };
}
