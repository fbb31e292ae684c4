import { describe, expect, it } from 'vitest';
import { entropy } from '../../../ml/corella/routing.js';
import { mulberry32 } from '../../../ml/random.js';
import {
  calibrateOnServed,
  shadowCandidates,
  type ServedRows,
} from '../../../ml/corella/served-calibration.js';
import { CorellaError } from '../../../ml/errors.js';

/**
 * Served rows of a version calibrated to route `threshold`: the CRM is right about confident rows and
 * unreliable about uncertain ones; the LLM branch answered the routed rows well. `uncertainShare` of the
 * rows have CRM probabilities near 0.5 (high entropy).
 */
function served(n: number, uncertainShare: number, threshold: number, seed = 3): ServedRows {
  const rng = mulberry32(seed);
  const pServed = new Float32Array(n);
  const pCrm = new Float32Array(n);
  const h = new Float32Array(n);
  const pLlm = new Float32Array(n).fill(NaN);
  const labels = new Float32Array(n);
  const routedLive = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const y = rng() < 0.5 ? 1 : 0;
    labels[i] = y;
    const uncertain = rng() < uncertainShare;
    // Confident rows: the CRM is right 9 times in 10. Uncertain ones: near 0.5, a coin flip.
    const seen = rng() < 0.9 ? y : 1 - y;
    const p = uncertain ? 0.4 + 0.2 * rng() : seen ? 0.75 + 0.2 * rng() : 0.05 + 0.2 * rng();
    pCrm[i] = p;
    h[i] = entropy(p);
    pServed[i] = p;
    if (h[i] > threshold) {
      routedLive[i] = 1;
      pLlm[i] = y ? 0.6 + 0.3 * rng() : 0.1 + 0.3 * rng();
      pServed[i] = pLlm[i];
    }
  }
  return { pServed, pCrm, entropy: h, pLlm, labels, routedLive };
}

describe('calibrateOnServed', () => {
  it('a planted shift towards uncertain traffic: the old threshold routes far over budget, the new one is within it', () => {
    // Calibrated when 15% of traffic was uncertain: a threshold just below the uncertain rows' entropies.
    const t0 = entropy(0.3);
    const calm = served(3_000, 0.15, t0, 1);
    const before = calibrateOnServed(calm, { maxRoutedFraction: 0.2, currentThreshold: t0 });
    expect(before.drift.liveRoutedFraction).toBeLessThan(0.2);
    expect(before.drift.overBudget).toBe(false);

    // Now 60% of traffic is uncertain, and the same threshold routes all of it.
    const shifted = served(3_000, 0.6, t0, 2);
    const cal = calibrateOnServed(shifted, {
      maxRoutedFraction: 0.2,
      currentThreshold: t0,
      calibratedRoutedFraction: before.drift.liveRoutedFraction,
    });
    expect(cal.drift.liveRoutedFraction).toBeGreaterThan(0.55);
    expect(cal.drift.overBudget).toBe(true);
    expect(cal.drift.delta).toBeCloseTo(cal.drift.liveRoutedFraction - before.drift.liveRoutedFraction, 10);
    expect(cal.current?.routedFraction).toBeCloseTo(cal.drift.liveRoutedFraction, 10);
    expect(cal.threshold).toBeGreaterThan(t0);
    expect(cal.chosen.routedFraction).toBeLessThanOrEqual(0.2);
    expect(cal.chosen.routedFraction).toBeGreaterThan(0.1); // uses the budget rather than routing nothing
    // Within budget it costs metric: the budget is a constraint, so the change is applied anyway.
    expect(cal.apply).toBe(true);
    expect(cal.served.auc).toBeCloseTo(cal.current!.auc, 5);
    expect(cal.n).toBe(3_000);
  });

  it('keeps a current threshold that is within budget and scores best', () => {
    const t0 = entropy(0.3);
    const rows = served(2_000, 0.15, t0, 4);
    const cal = calibrateOnServed(rows, { maxRoutedFraction: 0.2, currentThreshold: t0 });
    // Lower thresholds would route rows without an LLM answer; higher ones route fewer good LLM answers.
    expect(cal.curve.every((p) => p.threshold >= t0 - 1e-6 || p.threshold === Infinity)).toBe(true);
    expect(cal.apply).toBe(false);
  });

  it('shadow-scored rows open thresholds below the current one', () => {
    const t0 = entropy(0.4);
    const rows = served(2_000, 0.3, t0, 5);
    const without = calibrateOnServed(rows, { maxRoutedFraction: 0.5, currentThreshold: t0 });
    const lowest = Math.min(...without.curve.map((p) => p.threshold));
    expect(lowest).toBeGreaterThanOrEqual(t0 - 1e-6);
    const want = shadowCandidates(rows.entropy, rows.pLlm, 400);
    expect(want).toHaveLength(400);
    const pLlm = Float32Array.from(rows.pLlm);
    // The LLM reads every uncertain row well: scoring the next 400 below the threshold helps.
    for (const i of want) pLlm[i] = rows.labels[i] ? 0.8 : 0.2;
    const withShadow = calibrateOnServed({ ...rows, pLlm }, { maxRoutedFraction: 0.5, currentThreshold: t0 });
    expect(Math.min(...withShadow.curve.map((p) => p.threshold))).toBeLessThan(t0);
    expect(withShadow.threshold).toBeLessThan(t0);
    expect(withShadow.chosen.auc).toBeGreaterThan(withShadow.current!.auc);
    expect(withShadow.apply).toBe(true);
  });

  it('shadowCandidates takes rows without an LLM answer, highest entropy first', () => {
    const h = [0.1, 0.6, 0.3, 0.5, 0.69];
    const p = [NaN, NaN, NaN, 0.3, 0.4];
    expect(Array.from(shadowCandidates(h, p, 2))).toEqual([1, 2]);
    expect(Array.from(shadowCandidates(h, p, 10))).toEqual([1, 2, 0]);
    expect(Array.from(shadowCandidates(h, p, 0))).toEqual([]);
  });

  it('no rows is DATA_NOT_AVAILABLE; misaligned columns name the column', () => {
    const empty = new Float32Array(0);
    const none = {
      pServed: empty,
      pCrm: empty,
      entropy: empty,
      pLlm: empty,
      labels: empty,
      routedLive: empty,
    };
    expect(() => calibrateOnServed(none, { maxRoutedFraction: 0.2, currentThreshold: 0.5 })).toThrow(
      expect.objectContaining({ code: 'DATA_NOT_AVAILABLE' }),
    );
    const rows = served(10, 0.5, 0.5);
    let error: unknown;
    try {
      calibrateOnServed(
        { ...rows, labels: new Float32Array(9) },
        { maxRoutedFraction: 0.2, currentThreshold: 0.5 },
      );
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(CorellaError);
    expect((error as CorellaError).details.field).toBe('labels');
  });
});
