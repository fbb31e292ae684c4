import { describe, expect, it } from 'vitest';
import { CorellaError } from '../../../ml/errors.js';
import { buildReport, compareRuns, renderRunReport } from '../../../ml/report/index.js';
import { aucDiffInterval, reliabilityBins, weightedAuc } from '../../../ml/report/stats.js';
import { auc } from '../../../ml/metrics/index.js';
import { mulberry32 } from '../../../ml/random.js';
import { fixtureSource } from './fixture.js';

/** The children of the SVG mark group whose class ends with `name` (Vega writes a mark's name there). */
function marks(html: string, name: string): number {
  const m = new RegExp(`<g class="[^"]*\\b${name}"[^>]*>(.*?)</g>`, 's').exec(html);
  if (!m) return -1;
  return (m[1].match(/<path\b/g) ?? []).length;
}

describe('the run report', () => {
  it('summarises overall and per bucket, with bootstrap intervals around the point difference', () => {
    const src = fixtureSource();
    const r = buildReport(src);
    expect(r.summary!.sections.map((s) => s.scheme)).toEqual(['overall', 'q5', 'paper3']);
    const overall = r.summary!.sections[0].rows[0];
    expect(overall.crm.auc).toBe(src.alignment!.overall.crm.auc);
    expect(overall.hybridMinusCrm!.unit).toBe('user');
    expect(overall.hybridMinusCrm!.point).toBeCloseTo(overall.hybrid.auc - overall.crm.auc, 5);
    for (const sec of r.summary!.sections.slice(1)) {
      expect(sec.rows.reduce((s, x) => s + x.n, 0)).toBe(src.alignment!.n);
      for (const row of sec.rows) {
        const i = row.llmMinusCrm!;
        expect(i, row.key).toBeDefined();
        expect(i.lo95).toBeLessThanOrEqual(i.point + 1e-9);
        expect(i.hi95).toBeGreaterThanOrEqual(i.point - 1e-9);
      }
    }
    expect(r.reliability!.map((x) => x.bins.reduce((s, b) => s + b.n, 0))).toEqual([300, 300]);
    expect(r.training.map((t) => t.key)).toEqual([
      'crm.train.loss',
      'crm.valid.auc',
      'joint.stage2.loss',
      'joint.stage2.valid.crm.auc',
      'joint.stage3.loss',
      'joint.stage3.valid.llm.auc',
    ]);
    // Joint stages store validation AUC once: drawn at the stage's last epoch.
    expect(r.training.find((t) => t.key === 'joint.stage2.valid.crm.auc')!.points).toEqual([
      { epoch: 2, value: 0.71 },
    ]);
    expect(r.notes.some((n) => n.includes('no champion'))).toBe(true);
  });

  it('compares with the champion that was in place when the run started', () => {
    const r = buildReport(fixtureSource({ champion: true }));
    const row = r.champion!.rows.find((x) => x.metric === 'eval.test.hybrid.auc')!;
    expect(row).toEqual({ metric: 'eval.test.hybrid.auc', run: 0.72, champion: 0.7, diff: 0.72 - 0.7 });
  });

  it('renders one self-contained page whose SVG charts have one mark per data point', async () => {
    const src = fixtureSource({ champion: true });
    const { html, charts } = await renderRunReport(src);
    expect(charts).toEqual(['calibration', 'buckets', 'boundary-shift', 'training', 'reliability']);
    expect(html).not.toMatch(/<script|<link|src="http|href="http/);
    const curve = src.calibration!.curve.length;
    expect(marks(html, 'curve_auc_points_marks')).toBe(curve);
    expect(marks(html, 'curve_logLoss_points_marks')).toBe(curve);
    expect(marks(html, 'curve_auc_chosen_layer_0_marks')).toBe(1);
    expect(marks(html, 'buckets_auc_marks')).toBe(5 * 3);
    expect(marks(html, 'buckets_logLoss_marks')).toBe(5 * 3);
    const bins = buildReport(src).reliability!.reduce((s, x) => s + x.bins.length, 0);
    expect(marks(html, 'reliability_points_marks')).toBe(bins);
    // The summary table's cells carry the stored value they show.
    const cell = /data-key="overall\.hybrid\.auc" data-value="([^"]+)">([^<]+)</.exec(html)!;
    expect(Number(cell[1])).toBe(src.alignment!.overall.hybrid.auc);
    expect(cell[2]).toBe(src.alignment!.overall.hybrid.auc.toFixed(4));
    expect(html).toContain('abc1234');
    expect(html).toContain('a'.repeat(64));
  });

  it("puts the calibration's reason for its threshold under the curve, escaped, and nothing when none was stored", async () => {
    const src = fixtureSource();
    src.calibration!.reason = "no threshold's hybrid gain cleared its noise: best +0.0100 AUC at 5% <routed>";
    const { html } = await renderRunReport(src);
    expect(html).toContain(
      'Why this threshold: no threshold&#39;s hybrid gain cleared its noise: best +0.0100 AUC at 5% &#60;routed&#62;.',
    );
    delete src.calibration!.reason;
    expect((await renderRunReport(src)).html).not.toContain('Why this threshold');
  });

  it("states the wide test pool's hybrid gain under the summary, nothing routed included, and nothing without one", async () => {
    const src = fixtureSource();
    const scores = (a: number) => ({ auc: a, logLoss: 0.6, acc: 0.7 });
    const gain = { auc: 0.0042, lo95: 0.0011, hi95: 0.0075, rounds: 1000, unit: 'user' as const };
    src.alignment!.wide = {
      n: 10000,
      routed: 1670,
      routedFraction: 0.167,
      crm: scores(0.8),
      hybrid: scores(0.8042),
      gain,
    };
    const { html } = await renderRunReport(src);
    expect(html).toContain('On a wider pool of <b>10000</b> test rows');
    expect(html).toContain('only on the 1670 routed, 16.7%');
    expect(html).toMatch(
      /data-value="0.0042">\+0.0042<\/b> \[\+0.0011, \+0.0075\] \(95%, 1000 user resamples\)/,
    );
    src.alignment!.wide = { ...src.alignment!.wide, routed: 0, routedFraction: 0, hybrid: scores(0.8) };
    expect((await renderRunReport(src)).html).toContain(
      'the threshold routes nothing, so the hybrid is the CRM there (AUC 0.8000)',
    );
    delete src.alignment!.wide;
    expect((await renderRunReport(src)).html).not.toContain('wide-hybrid');
  });

  it('refuses predictions that do not match the evaluation, naming the field', () => {
    const src = fixtureSource();
    src.predictions = { ...src.predictions!, pLlm: Array.from(src.predictions!.pLlm).slice(0, 10) };
    expect(() => buildReport(src)).toThrow(CorellaError);
    expect(() => buildReport(src)).toThrow(/predictions\.pLlm has 10 rows but the evaluation has 300/);
  });

  it('still renders a report of a run that stopped early, saying what is missing', async () => {
    const src = fixtureSource();
    const { html, charts, report } = await renderRunReport({
      run: { ...src.run, status: 'failed' },
      metrics: src.metrics,
    });
    expect(charts).toEqual(['training']);
    expect(report.notes.join(' ')).toMatch(/No alignment evaluation/);
    expect(html).toContain('status-failed');
  });
});

describe('report statistics', () => {
  it('reliability bins hold the mean prediction and the observed rate', () => {
    expect(reliabilityBins([0.05, 0.15, 0.12, 0.95], [0, 1, 0, 1], 10)).toEqual([
      { lo: 0, hi: 0.1, n: 1, predicted: 0.05, observed: 0 },
      { lo: 0.1, hi: 0.2, n: 2, predicted: expect.closeTo(0.135, 9), observed: 0.5 },
      { lo: 0.9, hi: 1, n: 1, predicted: 0.95, observed: 1 },
    ]);
  });

  it('the resample AUC equals the AUC of the rows repeated by their counts, ties included', () => {
    const rng = mulberry32(3);
    const n = 200;
    const y = Array.from({ length: n }, () => (rng() < 0.3 ? 1 : 0));
    // Rounded scores: many ties.
    const p = Array.from({ length: n }, (_, i) => Math.round((0.3 * y[i] + rng()) * 10) / 10);
    const w = Array.from({ length: n }, () => Math.floor(rng() * 3));
    const rows = w.flatMap((c, i) => Array.from({ length: c }, () => i));
    const order = Uint32Array.from(Array.from({ length: n }, (_, i) => i).sort((a, b) => p[a] - p[b]));
    const groupEnd = new Uint32Array(n);
    for (let k = n - 1; k >= 0; k--)
      groupEnd[k] = k + 1 < n && p[order[k + 1]] === p[order[k]] ? groupEnd[k + 1] : k + 1;
    const expected = auc(
      rows.map((i) => y[i]),
      rows.map((i) => p[i]),
    );
    expect(weightedAuc(y, { order, groupEnd }, w)).toBeCloseTo(expected, 12);
  });

  it('a predictor compared with itself has a zero-width interval at 0', () => {
    const y = [0, 1, 0, 1, 1, 0];
    const p = [0.1, 0.8, 0.3, 0.6, 0.4, 0.5];
    const i = aucDiffInterval(
      y,
      p,
      p,
      y.map((_, k) => [k]),
      { rounds: 50, seed: 1, unit: 'row' },
    )!;
    expect([i.point, i.lo95, i.hi95]).toEqual([0, 0, 0]);
  });
});

describe('compareRuns', () => {
  it('lists metric differences and only the config keys that differ', () => {
    const c = compareRuns(
      {
        metrics: { 'eval.test.hybrid.auc': 0.7, only: 1 },
        config: { crm: { epochs: 2, mlp: [32] }, seed: 1 },
      },
      {
        metrics: { 'eval.test.hybrid.auc': 0.75 },
        config: { crm: { epochs: 3, mlp: [32] }, seed: 1, x: true },
      },
    );
    expect(c.metrics).toEqual([
      { key: 'eval.test.hybrid.auc', a: 0.7, b: 0.75, diff: expect.closeTo(0.05, 9) },
      { key: 'only', a: 1, b: null, diff: null },
    ]);
    expect(c.config).toEqual([
      { key: 'crm.epochs', a: 2, b: 3 },
      { key: 'x', a: null, b: true },
    ]);
  });
});

describe('the report of a recalibration run', () => {
  it('adds the served routed fraction over time and the threshold history', async () => {
    const base = fixtureSource();
    const { html, charts, report } = await renderRunReport({
      run: { ...base.run, kind: 'recalibrate' },
      metrics: [{ key: 'threshold', step: 0, value: 0.55 }],
      calibration: base.calibration,
      serving: {
        modelVersionId: 2,
        routed: [
          { at: '2026-12-01T08:00:00.000Z', rows: 40, routed: 10, threshold: 0.6 },
          { at: '2026-12-01T09:00:00.000Z', rows: 0, routed: 0, threshold: null },
          { at: '2026-12-01T10:00:00.000Z', rows: 20, routed: 2, threshold: 0.55 },
        ],
        thresholds: [
          { at: '2026-11-30T08:00:00.000Z', threshold: 0.6, runId: 'other' },
          { at: '2026-12-01T11:00:00.000Z', threshold: 0.55, runId: base.run.id },
        ],
      },
    });
    expect(charts).toEqual(['serving', 'calibration']);
    expect(report.serving!.routed.map((r) => r.routedFraction)).toEqual([0.25, 0.1]);
    expect(marks(html, 'serving_routed_points_marks')).toBe(2);
    expect(marks(html, 'serving_threshold_points_marks')).toBe(2);
    expect(report.notes.join(' ')).not.toMatch(/champion|alignment/);
    expect(html).toContain('data-key="metrics.threshold" data-value="0.55"');
  });
});
