/**
 * How should the routed rows combine the CRM and the LLM? Scores routing/combination rules offline on the
 * predictions that `bench/lora.ts --out` keeps per seed (`*.preds.seedN.json`: the valid and test pools'
 * labels, CRM probabilities, users and the LLM branch's log-odds), so a rule is compared on exactly the rows
 * and weights that produced the LoRA figures, without retraining anything.
 *
 *   npx tsx bench/hybrid-rules.ts FILE.preds.seed1.json [FILE.preds.seed2.json …]
 *
 * Rules, each with the routed share chosen on the valid pool (5–20%) and fitted on its routed rows only:
 * - `replace`: the paper's rule and calibration's today. A routed row takes the LLM's Platt-scaled p
 *   (must reproduce bench/lora.ts's `hybrid` figures: a check that this file reads the rows right).
 * - `stack`: a routed row takes σ(a·logit(p_crm) + b·z + c), both branches' log-odds in one logistic fit,
 *   so a weak LLM adds to the CRM's signal on the rows where the CRM is unsure instead of replacing it.
 * For each: the valid gain and its user-bootstrap lower bound (the gate), the test gain with its 95%
 * user-bootstrap interval, and the gain at exactly 20% routed. Prints one JSON document.
 */
import { readFile } from 'node:fs/promises';
import { fitPlatt } from '../ml/corella/platt.js';
import { entropies } from '../ml/corella/routing.js';
import { auc } from '../ml/metrics/classification.js';
import { aucDiffInterval, groupBy } from '../ml/report/stats.js';

interface PoolRows {
  y: number[];
  crm: number[];
  user: number[];
  z: number[];
}
interface Preds {
  seed: number;
  valid: PoolRows;
  test: PoolRows;
}

const files = process.argv.slice(2);
if (files.length === 0) {
  throw new Error(
    'usage: bench/hybrid-rules.ts FILE.preds.seedN.json [...] (written by bench/lora.ts --out)',
  );
}

const r4 = (x: number) => Number(x.toFixed(4));
const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));
const EPS = 1e-6;
const logit = (p: number) => {
  const q = Math.min(1 - EPS, Math.max(EPS, p));
  return Math.log(q / (1 - q));
};

/** A rule fitted on valid routed rows, giving the routed rows' probabilities of any pool. */
type Combiner = (crm: number[], z: number[], idx: number[]) => number[];
type Rule = (valid: PoolRows, idx: number[]) => Combiner;

const replace: Rule = (v, idx) => {
  const platt = fitPlatt(
    idx.map((i) => v.z[i]),
    idx.map((i) => v.y[i]),
  );
  return (_crm, z, rows) => rows.map((i) => sigmoid(platt.a * z[i] + platt.b));
};

/**
 * Logistic regression on [logit(p_crm), z, 1] by Newton's method, with a small ridge that pulls the weights
 * towards (1, 0, 0), i.e. towards keeping the CRM's answer, so a handful of routed rows cannot make it worse
 * than the CRM by much.
 */
const stack: Rule = (v, idx) => {
  const x = idx.map((i) => [logit(v.crm[i]), v.z[i], 1]);
  const y = idx.map((i) => v.y[i]);
  const prior = [1, 0, 0];
  const ridge = 1e-2;
  const w = [...prior];
  for (let it = 0; it < 50 && x.length > 0; it++) {
    const g = w.map((wj, j) => ridge * (wj - prior[j]));
    const h = [0, 1, 2].map((a) => [0, 1, 2].map((b) => (a === b ? ridge : 0)));
    for (let r = 0; r < x.length; r++) {
      const p = sigmoid(x[r][0] * w[0] + x[r][1] * w[1] + x[r][2] * w[2]);
      const e = (p - y[r]) / x.length;
      const s = (p * (1 - p)) / x.length;
      for (let a = 0; a < 3; a++) {
        g[a] += e * x[r][a];
        for (let b = 0; b < 3; b++) h[a][b] += s * x[r][a] * x[r][b];
      }
    }
    const d = solve3(h, g);
    if (!d) break;
    for (let j = 0; j < 3; j++) w[j] -= d[j];
    if (Math.hypot(...d) < 1e-10) break;
  }
  return (crm, z, rows) => rows.map((i) => sigmoid(w[0] * logit(crm[i]) + w[1] * z[i] + w[2]));
};

/** Solves the 3×3 system h·d = g (Cramer's rule); undefined when h is singular. */
function solve3(h: number[][], g: number[]): number[] | undefined {
  const det = (m: number[][]) =>
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) -
    m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
    m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
  const d = det(h);
  if (!(Math.abs(d) > 1e-18)) return undefined;
  return [0, 1, 2].map((c) => det(h.map((row, r) => row.map((v, j) => (j === c ? g[r] : v)))) / d);
}

/** Rows of the pool whose CRM entropy is among the top `share`, and the entropy at the cut. */
function topShare(h: Float32Array, share: number) {
  const n = Math.round(share * h.length);
  const idx = Array.from(h, (_, i) => i).sort((a, b) => h[b] - h[a]);
  return { idx: idx.slice(0, n), threshold: n > 0 ? h[idx[n - 1]] : Infinity };
}

function hybrid(pool: PoolRows, h: Float32Array, threshold: number, combine: Combiner): number[] {
  const routed = pool.crm.map((_, i) => i).filter((i) => h[i] >= threshold);
  const out = [...pool.crm];
  combine(pool.crm, pool.z, routed).forEach((p, j) => (out[routed[j]] = p));
  return out;
}

function score(preds: Preds, rule: Rule) {
  const { valid: va, test: te } = preds;
  const hVa = entropies(va.crm);
  const hTe = entropies(te.crm);
  const gVa = groupBy(va.user);
  const gTe = groupBy(te.user);
  const crmVaAuc = auc(va.y, va.crm);
  let best: { share: number; gain: number; threshold: number; combine: Combiner } | undefined;
  for (const share of [0.05, 0.1, 0.15, 0.2]) {
    const { idx, threshold } = topShare(hVa, share);
    const combine = rule(va, idx);
    const gain = auc(va.y, hybrid(va, hVa, threshold, combine)) - crmVaAuc;
    if (!best || gain > best.gain) best = { share, gain, threshold, combine };
  }
  const b = best!;
  const opts = { rounds: 1000, seed: 7, unit: 'user' as const };
  const validIv = aucDiffInterval(va.y, hybrid(va, hVa, b.threshold, b.combine), va.crm, gVa, opts);
  const hyb = hybrid(te, hTe, b.threshold, b.combine);
  const testIv = aucDiffInterval(te.y, hyb, te.crm, gTe, opts);
  const t20 = topShare(hTe, 0.2);
  const c20 = rule(va, topShare(hVa, 0.2).idx);
  const iv20 = aucDiffInterval(te.y, hybrid(te, hTe, t20.threshold, c20), te.crm, gTe, opts);
  const routes = validIv !== undefined && validIv.lo95 > 0;
  const iv = (i: typeof testIv) => i && { point: r4(i.point), lo95: r4(i.lo95), hi95: r4(i.hi95) };
  return {
    validShare: b.share,
    validGain: r4(b.gain),
    validLo95: validIv && r4(validIv.lo95),
    testRouted: r4(hTe.filter((x) => x >= b.threshold).length / hTe.length),
    gain: iv(testIv),
    at20: iv(iv20),
    gated: routes ? { routes: true, gain: testIv && r4(testIv.point) } : { routes: false, gain: 0 },
  };
}

const seeds = [];
for (const file of files) {
  let preds: Preds;
  try {
    preds = JSON.parse(await readFile(file, 'utf8')) as Preds;
  } catch (e) {
    throw new Error(`${file}: not a readable JSON file (${(e as Error).message})`);
  }
  for (const pool of ['valid', 'test'] as const) {
    const p = preds[pool];
    const n = p?.y?.length;
    if (!n || [p.crm, p.user, p.z].some((a) => a?.length !== n)) {
      throw new Error(`${file}: ${pool}.y, .crm, .user and .z must be arrays of one length`);
    }
  }
  seeds.push({
    file,
    seed: preds.seed,
    crmTestAuc: r4(auc(preds.test.y, preds.test.crm)),
    llmTestAuc: r4(auc(preds.test.y, preds.test.z)),
    replace: score(preds, replace),
    stack: score(preds, stack),
  });
}
process.stdout.write(JSON.stringify({ bench: 'hybrid-rules', seeds }, null, 2) + '\n');
