import { reportCharts, type Chart } from './charts.js';
import { reportHtml } from './html.js';
import { buildReport, type ReportSource, type RunReport } from './model.js';
import { renderSvg } from './render.js';

export { buildReport, COMPARED_METRICS, MODELS } from './model.js';
export type { ReportSource, RunReport, SummaryRow, StoredModel, StoredAlignment } from './model.js';
export { reportCharts } from './charts.js';
export type { Chart, ChartName } from './charts.js';
export { renderSvg } from './render.js';
export { compareRuns, type RunComparison } from './compare.js';

export interface RenderedReport {
  html: string;
  report: RunReport;
  charts: Chart['name'][];
}

/** The report model, its charts rendered to SVG and the page that holds them. */
export async function renderRunReport(src: ReportSource): Promise<RenderedReport> {
  const report = buildReport(src);
  const charts = reportCharts(report);
  const svgs = [];
  for (const chart of charts) svgs.push({ chart, svg: await renderSvg(chart.spec, chart.name) });
  return { html: reportHtml(report, svgs), report, charts: charts.map((c) => c.name) };
}
