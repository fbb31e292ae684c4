/**
 * Vega-Lite specs of the report's charts, built from the report model only. Every mark that a reader (or the
 * report test) counts has a `name`, which Vega writes into the SVG as a class of the mark's group.
 */
import type { TopLevelSpec } from 'vega-lite';
import type { RunReport } from './model.js';

export type ChartName = 'serving' | 'calibration' | 'buckets' | 'boundary-shift' | 'training' | 'reliability';

export interface Chart {
  name: ChartName;
  title: string;
  /** One sentence under the chart: what to read off it. */
  caption: string;
  spec: TopLevelSpec;
}

const SCHEMA = 'https://vega.github.io/schema/vega-lite/v5.json';
const MODEL_COLORS = { domain: ['CRM', 'LLM branch', 'hybrid'], range: ['#4c78a8', '#f58518', '#54a24b'] };
const WHEN_COLORS = { domain: ['before stage 2', 'after stage 2'], range: ['#9ecae9', '#3366aa'] };

const base = {
  $schema: SCHEMA,
  background: 'white',
  config: {
    font: 'Helvetica, Arial, sans-serif',
    view: { stroke: '#ddd' },
    axis: { labelFontSize: 11, titleFontSize: 12 },
    legend: { labelFontSize: 11, titleFontSize: 12 },
  },
} as const;

/**
 * The specs are plain JSON objects built from the report model; vega-lite's generic spec types do not follow
 * them through spreads and layers, so they are typed at this one point and checked by compile() at render
 * time (the unit test renders every chart).
 */
function topLevel(spec: Record<string, unknown>): TopLevelSpec {
  return spec as unknown as TopLevelSpec;
}

function calibrationPanel(
  c: NonNullable<RunReport['calibration']>,
  field: 'auc' | 'logLoss',
  title: string,
): Record<string, unknown> {
  const x = {
    field: 'routedFraction',
    type: 'quantitative',
    title: 'fraction routed to the LLM branch',
    axis: { format: '.0%' },
    scale: { domain: [0, Math.max(1e-9, ...c.points.map((p) => p.routedFraction), c.budget)] },
  };
  const y = { field, type: 'quantitative', title, scale: { zero: false } };
  return {
    width: 340,
    height: 240,
    title: `${title} against the routed fraction`,
    layer: [
      {
        name: `curve_${field}_line`,
        data: { values: c.points },
        mark: { type: 'line', color: '#4c78a8' },
        encoding: { x, y },
      },
      {
        name: `curve_${field}_points`,
        data: { values: c.points },
        mark: { type: 'point', filled: true, color: '#4c78a8', size: 30 },
        encoding: {
          x,
          y,
          tooltip: [
            { field: 'threshold', type: 'quantitative', format: '.4f', title: 'entropy threshold (nats)' },
            { field: 'routedFraction', type: 'quantitative', format: '.1%' },
            { field, type: 'quantitative', format: '.4f' },
          ],
        },
      },
      {
        name: `curve_${field}_budget`,
        data: { values: [{ routedFraction: c.budget, label: `budget ${(c.budget * 100).toFixed(0)}%` }] },
        layer: [
          { mark: { type: 'rule', color: '#d62728', strokeDash: [6, 4] }, encoding: { x } },
          {
            mark: { type: 'text', color: '#d62728', align: 'left', dx: 4, baseline: 'top', y: 4 },
            encoding: { x, text: { field: 'label' } },
          },
        ],
      },
      {
        name: `curve_${field}_chosen`,
        data: { values: c.points.filter((p) => p.chosen) },
        layer: [
          {
            mark: { type: 'point', shape: 'diamond', filled: true, size: 160, color: '#d62728' },
            encoding: { x, y },
          },
          {
            mark: { type: 'text', align: 'left', dx: 8, dy: -10, color: '#d62728' },
            encoding: { x, y, text: { value: `threshold ${c.threshold.toFixed(3)} nats` } },
          },
        ],
      },
    ],
  };
}

function calibrationChart(c: NonNullable<RunReport['calibration']>): Chart {
  return {
    name: 'calibration',
    title: 'Calibration curve (validation)',
    // The chart shows what each threshold would give, not why one was taken: a chosen point at 0% beside
    // higher points reads as a mistake unless the gain check's verdict is next to it.
    caption:
      'Each point is one candidate entropy threshold; the red diamond is the chosen one, the dashed line the routing budget.' +
      (c.reason ? ` Why this threshold: ${c.reason}.` : ''),
    spec: topLevel({
      ...base,
      hconcat: [calibrationPanel(c, 'auc', 'hybrid AUC'), calibrationPanel(c, 'logLoss', 'hybrid LogLoss')],
    }),
  };
}

function bucketPanel(
  b: NonNullable<RunReport['buckets']>,
  field: 'auc' | 'logLoss',
  title: string,
): Record<string, unknown> {
  return {
    name: `buckets_${field}`,
    width: 360,
    height: 240,
    title: `${title} per CRM-confidence bucket`,
    mark: { type: 'bar' },
    encoding: {
      x: {
        field: 'bucket',
        type: 'ordinal',
        sort: { field: 'order' },
        title: 'bucket (CRM entropy, least uncertain first)',
        axis: { labelAngle: 0 },
      },
      xOffset: { field: 'model', sort: MODEL_COLORS.domain },
      y: { field, type: 'quantitative', title, scale: { zero: field === 'logLoss' } },
      color: { field: 'model', type: 'nominal', scale: MODEL_COLORS, title: 'model' },
      tooltip: [{ field: 'bucket' }, { field: 'model' }, { field, type: 'quantitative', format: '.4f' }],
    },
  };
}

function bucketChart(b: NonNullable<RunReport['buckets']>): Chart {
  return {
    name: 'buckets',
    title: 'CRM vs LLM branch vs hybrid per bucket (test)',
    caption:
      'One bar per bucket and model; the hybrid should follow the CRM on confident buckets and gain on uncertain ones.',
    spec: topLevel({
      ...base,
      data: { values: b.bars },
      hconcat: [bucketPanel(b, 'auc', 'AUC'), bucketPanel(b, 'logLoss', 'LogLoss')],
    }),
  };
}

function shiftChart(rows: NonNullable<RunReport['boundaryShift']>): Chart {
  return {
    name: 'boundary-shift',
    title: 'Decision-boundary shift, before and after stage 2 (validation)',
    caption:
      'How similarly the CRM and the LLM branch decide on the same samples, before and after joint training with alignment.',
    spec: topLevel({
      ...base,
      data: { values: rows },
      facet: { column: { field: 'measure', type: 'nominal', title: null } },
      spec: {
        name: 'shift_bars',
        width: 150,
        height: 200,
        mark: { type: 'bar' },
        encoding: {
          x: {
            field: 'when',
            type: 'nominal',
            sort: WHEN_COLORS.domain,
            title: null,
            axis: { labelAngle: 0 },
          },
          y: { field: 'value', type: 'quantitative', title: null },
          color: { field: 'when', type: 'nominal', scale: WHEN_COLORS, title: null },
          tooltip: [
            { field: 'measure' },
            { field: 'when' },
            { field: 'value', type: 'quantitative', format: '.4f' },
          ],
        },
      },
      resolve: { scale: { y: 'independent' } },
    }),
  };
}

function trainingChart(series: RunReport['training']): Chart {
  const values = series.flatMap((s) => s.points.map((p) => ({ ...p, phase: s.phase, kind: s.kind })));
  const encoding = (kind: string) => ({
    x: { field: 'epoch', type: 'quantitative', title: 'epoch', axis: { tickMinStep: 1, format: 'd' } },
    y: { field: 'value', type: 'quantitative', title: kind, scale: { zero: false } },
    color: { field: 'phase', type: 'nominal', title: 'phase' },
    tooltip: [
      { field: 'phase' },
      { field: 'epoch' },
      { field: 'value', type: 'quantitative', format: '.4f' },
    ],
  });
  // Losses of different phases are on different scales (the joint loss adds α·L_llm and γ·L_align): one
  // panel per phase, each with its own y axis.
  const loss = {
    title: 'training loss per epoch',
    transform: [{ filter: { field: 'kind', equal: 'loss' } }],
    facet: { column: { field: 'phase', type: 'nominal', title: null } },
    spec: {
      name: 'training_loss',
      width: 200,
      height: 200,
      mark: { type: 'line', point: true },
      encoding: encoding('loss'),
    },
    resolve: { scale: { y: 'independent', x: 'independent' } },
  };
  const auc = {
    name: 'training_auc',
    width: 260,
    height: 200,
    title: 'validation AUC per epoch',
    transform: [{ filter: { field: 'kind', equal: 'validation AUC' } }],
    mark: { type: 'line', point: true },
    encoding: encoding('validation AUC'),
  };
  return {
    name: 'training',
    title: 'Training curves',
    caption:
      'Stage 1 (CRM) and joint stages 2–3: loss per epoch, and validation AUC (joint stages report it after their last epoch).',
    spec: topLevel({ ...base, data: { values }, vconcat: [loss, auc] }),
  };
}

function reliabilityChart(rel: NonNullable<RunReport['reliability']>): Chart {
  const values = rel.flatMap((r) => r.bins.map((b) => ({ ...b, model: r.model })));
  return {
    name: 'reliability',
    title: 'Reliability diagram (test)',
    caption:
      'Mean predicted click probability against the observed click rate, in ten equal-width bins; the diagonal is perfect calibration.',
    spec: topLevel({
      ...base,
      width: 320,
      height: 320,
      layer: [
        {
          name: 'reliability_diagonal',
          data: {
            values: [
              { x: 0, y: 0 },
              { x: 1, y: 1 },
            ],
          },
          mark: { type: 'line', color: '#999', strokeDash: [4, 4] },
          encoding: { x: { field: 'x', type: 'quantitative' }, y: { field: 'y', type: 'quantitative' } },
        },
        {
          name: 'reliability_lines',
          data: { values },
          mark: { type: 'line' },
          encoding: {
            x: {
              field: 'predicted',
              type: 'quantitative',
              title: 'mean predicted probability',
              scale: { domain: [0, 1] },
            },
            y: {
              field: 'observed',
              type: 'quantitative',
              title: 'observed click rate',
              scale: { domain: [0, 1] },
            },
            color: { field: 'model', type: 'nominal', scale: MODEL_COLORS, title: 'model' },
          },
        },
        {
          name: 'reliability_points',
          data: { values },
          // Transparent with an outline: CRM and hybrid often share a bin (most rows are not routed).
          mark: { type: 'point', filled: true, opacity: 0.6, stroke: 'white', strokeWidth: 1 },
          encoding: {
            x: { field: 'predicted', type: 'quantitative' },
            y: { field: 'observed', type: 'quantitative' },
            color: { field: 'model', type: 'nominal', scale: MODEL_COLORS },
            size: { field: 'n', type: 'quantitative', title: 'rows' },
            tooltip: [
              { field: 'model' },
              { field: 'n', title: 'rows' },
              { field: 'predicted', type: 'quantitative', format: '.3f' },
              { field: 'observed', type: 'quantitative', format: '.3f' },
            ],
          },
        },
      ],
    }),
  };
}

function servingChart(sv: NonNullable<RunReport['serving']>): Chart {
  const x = { field: 'at', type: 'temporal', title: 'time (UTC)', timeUnit: 'utcyearmonthdatehoursminutes' };
  const routed = {
    width: 380,
    height: 220,
    title: 'served routed fraction',
    data: { values: sv.routed },
    layer: [
      {
        name: 'serving_routed_line',
        mark: { type: 'line', color: '#f58518' },
        encoding: {
          x,
          y: {
            field: 'routedFraction',
            type: 'quantitative',
            title: 'routed to the LLM branch',
            axis: { format: '.0%' },
          },
        },
      },
      {
        name: 'serving_routed_points',
        mark: { type: 'point', filled: true, color: '#f58518' },
        encoding: {
          x,
          y: { field: 'routedFraction', type: 'quantitative' },
          size: { field: 'rows', type: 'quantitative', title: 'logged rows' },
          tooltip: [
            { field: 'at', type: 'temporal', format: '%Y-%m-%d %H:%M' },
            { field: 'rows' },
            { field: 'routedFraction', type: 'quantitative', format: '.1%' },
          ],
        },
      },
    ],
  };
  const thresholds = {
    width: 380,
    height: 220,
    title: 'threshold history (calibrations of this version)',
    data: { values: sv.thresholds },
    layer: [
      {
        name: 'serving_threshold_line',
        mark: { type: 'line', interpolate: 'step-after', color: '#4c78a8' },
        encoding: {
          x,
          y: {
            field: 'threshold',
            type: 'quantitative',
            title: 'entropy threshold (nats)',
            scale: { zero: false },
          },
        },
      },
      {
        name: 'serving_threshold_points',
        mark: { type: 'point', filled: true, size: 60 },
        encoding: {
          x,
          y: { field: 'threshold', type: 'quantitative' },
          color: {
            field: 'thisRun',
            type: 'nominal',
            title: 'this run',
            scale: { domain: [false, true], range: ['#4c78a8', '#d62728'] },
          },
          tooltip: [
            { field: 'at', type: 'temporal', format: '%Y-%m-%d %H:%M' },
            { field: 'threshold', type: 'quantitative', format: '.4f' },
            { field: 'runId' },
          ],
        },
      },
    ],
  };
  return {
    name: 'serving',
    title: `Model version ${sv.modelVersionId} as served`,
    caption:
      'Share of logged candidates the server routed to the LLM branch per time bucket, and every calibrated threshold of the version (red: this run).',
    spec: topLevel({
      ...base,
      hconcat: [routed, thresholds],
      resolve: { scale: { color: 'independent', size: 'independent' } },
    }),
  };
}

/** The charts this report has data for, in page order. */
export function reportCharts(r: RunReport): Chart[] {
  const out: Chart[] = [];
  if (r.serving && (r.serving.routed.length > 0 || r.serving.thresholds.length > 0))
    out.push(servingChart(r.serving));
  if (r.calibration && r.calibration.points.length > 0) out.push(calibrationChart(r.calibration));
  if (r.buckets && r.buckets.bars.length > 0) out.push(bucketChart(r.buckets));
  if (r.boundaryShift && r.boundaryShift.length > 0) out.push(shiftChart(r.boundaryShift));
  if (r.training.length > 0) out.push(trainingChart(r.training));
  if (r.reliability && r.reliability.some((x) => x.bins.length > 0))
    out.push(reliabilityChart(r.reliability));
  return out;
}
