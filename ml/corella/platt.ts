/**
 * Platt scaling: fits p = σ(a·z + b) to labels by maximum likelihood (Newton's method on two parameters).
 * The LLM branch's logits are fitted on the uncertain validation rows, where routing will use them, so its
 * probabilities there land on the CRM's scale instead of interleaving wrongly with the CRM's confident
 * rows in the hybrid's ranking.
 */
export interface PlattScale {
  a: number;
  b: number;
}

const RIDGE = 1e-3;

export function fitPlatt(z: ArrayLike<number>, y: ArrayLike<number>, iterations = 50): PlattScale {
  const n = z.length;
  let a = 1;
  let b = 0;
  if (n === 0) return { a, b };
  for (let it = 0; it < iterations; it++) {
    // Gradient and Hessian of the mean log-loss plus a small ridge pulling a towards 1 (identity).
    let ga = RIDGE * (a - 1);
    let gb = 0;
    let haa = RIDGE;
    let hab = 0;
    let hbb = 1e-9;
    for (let i = 0; i < n; i++) {
      const p = 1 / (1 + Math.exp(-(a * z[i] + b)));
      const e = (p - y[i]) / n;
      const w = (p * (1 - p)) / n;
      ga += e * z[i];
      gb += e;
      haa += w * z[i] * z[i];
      hab += w * z[i];
      hbb += w;
    }
    const det = haa * hbb - hab * hab;
    if (!(Math.abs(det) > 1e-18)) break;
    const da = (hbb * ga - hab * gb) / det;
    const db = (haa * gb - hab * ga) / det;
    a -= da;
    b -= db;
    if (Math.abs(da) < 1e-9 && Math.abs(db) < 1e-9) break;
  }
  // A negative slope would invert the branch's ranking: rather than claim that, predict the rows' base rate.
  if (!(a >= 0) || !Number.isFinite(b)) {
    let pos = 0;
    for (let i = 0; i < n; i++) pos += y[i];
    const rate = Math.min(1 - 1e-6, Math.max(1e-6, pos / n));
    return { a: 0, b: Math.log(rate / (1 - rate)) };
  }
  return { a, b };
}
