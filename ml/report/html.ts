/**
 * The self-contained report page: inline CSS and inline SVG, no script and no network, so the file can be
 * mailed, archived as an artifact and opened anywhere. Numbers in tables carry `data-key` attributes (the
 * report model's path) so a test can read them back and compare them with the database.
 */
import type { Chart } from './charts.js';
import type { Interval } from './stats.js';
import { MODELS, type RunReport, type Scores, type SummaryRow, type WideHybrid } from './model.js';

const CSS = `
body{font:14px/1.45 Helvetica,Arial,sans-serif;color:#222;margin:24px auto;max-width:1180px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.muted{color:#666}.tiles{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.tile{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:130px}
.tile b{display:block;font-size:20px}.tile span{color:#666;font-size:12px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 6px;text-align:right;white-space:nowrap}
th{white-space:normal;font-size:12px;vertical-align:bottom}#summary-table td{font-size:13px}
th{background:#f5f5f5}td.l,th.l{text-align:left}tr.section td{background:#fafafa;text-align:left;font-style:italic}
code,pre{font:12px/1.4 Menlo,Consolas,monospace}pre{background:#f7f7f7;padding:10px;overflow:auto;max-height:420px}
figure{margin:12px 0}figcaption{color:#555;font-size:13px;margin-top:4px}.pos{color:#2a7a2a}.neg{color:#b22}
.status-completed{color:#2a7a2a}.status-failed,.status-cancelled{color:#b22}
`;

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function fmt(v: number | null | undefined, digits = 4): string {
  return v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(digits);
}

function signed(v: number, digits = 4): string {
  return `${v >= 0 ? '+' : '−'}${Math.abs(v).toFixed(digits)}`;
}

function pct(v: number | null | undefined): string {
  return v === null || v === undefined || !Number.isFinite(v) ? '–' : `${(v * 100).toFixed(1)}%`;
}

function cell(key: string, v: number | null | undefined, digits = 4): string {
  return `<td data-key="${escapeHtml(key)}"${v !== null && v !== undefined && Number.isFinite(v) ? ` data-value="${v}"` : ''}>${fmt(v, digits)}</td>`;
}

function intervalCell(key: string, i: Interval | undefined): string {
  if (!i) return `<td data-key="${key}">–</td>`;
  const cls = i.lo95 > 0 ? 'pos' : i.hi95 < 0 ? 'neg' : '';
  return (
    `<td data-key="${key}" data-value="${i.point}" class="${cls}" title="${i.rounds} ${i.unit} resamples">` +
    `${signed(i.point)} [${signed(i.lo95)}, ${signed(i.hi95)}]</td>`
  );
}

function range(lo: number | null, hi: number | null): string {
  if (lo === null && hi === null) return '';
  return `[${lo === null ? '−∞' : lo.toFixed(3)}, ${hi === null ? '∞' : hi.toFixed(3)})`;
}

function summaryRow(r: SummaryRow): string {
  const k = (m: string, f: keyof Scores) => `${r.key}.${m}.${f}`;
  return [
    `<tr data-row="${escapeHtml(r.key)}">`,
    `<td class="l">${escapeHtml(r.label)} <span class="muted">${range(r.lo, r.hi)}</span></td>`,
    `<td data-key="${r.key}.n" data-value="${r.n}">${r.n}</td>`,
    `<td data-key="${r.key}.routedFraction" data-value="${r.routedFraction}">${pct(r.routedFraction)}</td>`,
    ...MODELS.map((m) => cell(k(m.key, 'auc'), r[m.key].auc)),
    intervalCell(`${r.key}.hybridMinusCrm.auc`, r.hybridMinusCrm),
    intervalCell(`${r.key}.llmMinusCrm.auc`, r.llmMinusCrm),
    ...MODELS.map((m) => cell(k(m.key, 'logLoss'), r[m.key].logLoss)),
    '</tr>',
  ].join('');
}

function summaryTable(s: NonNullable<RunReport['summary']>): string {
  const head =
    '<tr><th class="l">rows</th><th>n</th><th>routed</th>' +
    MODELS.map((m) => `<th>AUC ${m.label}</th>`).join('') +
    '<th>hybrid − CRM AUC [95%]</th><th>LLM − CRM AUC [95%]</th>' +
    MODELS.map((m) => `<th>LogLoss ${m.label}</th>`).join('') +
    '</tr>';
  const body = s.sections
    .map(
      (sec) =>
        `<tr class="section"><td colspan="11">${escapeHtml(sec.title)}</td></tr>` +
        sec.rows.map(summaryRow).join(''),
    )
    .join('');
  return (
    `<p>${escapeHtml(s.split)} split, ${s.n} rows, threshold <b>${fmt(s.threshold)}</b> nats, ` +
    `${pct(s.routedFraction)} routed to the LLM branch. Intervals: percentile bootstrap ` +
    `(overall: whole users resampled when known; buckets: their own rows or users).</p>` +
    `<table id="summary-table">${head}${body}</table>` +
    (s.wide ? wideParagraph(s.wide) : '')
  );
}

/** The hybrid's gain on the wider pool: the CRM on every row, the LLM on the routed ones only. */
function wideParagraph(w: WideHybrid): string {
  if (w.routed === 0) {
    return (
      `<p id="wide-hybrid">On a wider pool of <b>${w.n}</b> test rows the threshold routes nothing, so the ` +
      `hybrid is the CRM there (AUC ${fmt(w.crm.auc)}).</p>`
    );
  }
  const g = w.gain;
  const gain = g
    ? `<b data-key="wide.gain" data-value="${g.auc}">${signed(g.auc)}</b> [${signed(g.lo95)}, ${signed(g.hi95)}] ` +
      `(95%, ${g.rounds} ${g.unit} resamples)`
    : `${signed(w.hybrid.auc - w.crm.auc)}`;
  return (
    `<p id="wide-hybrid">On a wider pool of <b>${w.n}</b> test rows, scored as the server scores them (the CRM on ` +
    `every row, the LLM branch only on the ${w.routed} routed, ${pct(w.routedFraction)}): AUC CRM ` +
    `${fmt(w.crm.auc)}, hybrid ${fmt(w.hybrid.auc)}, hybrid − CRM ${gain}.</p>`
  );
}

function kv(rows: [string, string][]): string {
  return `<table class="kv">${rows.map(([k, v]) => `<tr><th class="l">${escapeHtml(k)}</th><td class="l">${v}</td></tr>`).join('')}</table>`;
}

function figure(c: Chart, svg: string): string {
  return (
    `<h2>${escapeHtml(c.title)}</h2><figure data-chart="${c.name}">${svg}` +
    `<figcaption>${escapeHtml(c.caption)}</figcaption></figure>`
  );
}

function championTable(c: NonNullable<RunReport['champion']>): string {
  const rows = c.rows
    .map(
      (r) =>
        `<tr><td class="l">${escapeHtml(r.metric)}</td>${cell(`champion.${r.metric}.run`, r.run)}` +
        `${cell(`champion.${r.metric}.champion`, r.champion)}` +
        `<td class="${r.diff === null ? '' : r.diff > 0 ? 'pos' : r.diff < 0 ? 'neg' : ''}">${r.diff === null ? '–' : signed(r.diff)}</td></tr>`,
    )
    .join('');
  return (
    `<p>Champion when this run started: model version <b>${c.id}</b> (from run <code>${escapeHtml(c.sourceRunId)}</code>, ` +
    `champion since ${escapeHtml(c.since)}). For loss metrics lower is better.</p>` +
    `<table id="champion-table"><tr><th class="l">metric</th><th>this run</th><th>champion</th><th>difference</th></tr>${rows}</table>`
  );
}

export function reportHtml(r: RunReport, charts: { chart: Chart; svg: string }[]): string {
  const run = r.run;
  const p = r.provenance;
  const code = (s: string | null) => (s ? `<code>${escapeHtml(s)}</code>` : '–');
  const tiles = Object.entries(r.headline)
    .map(
      ([k, v]) =>
        `<div class="tile"><b data-key="headline.${k}" data-value="${v}">${k.endsWith('routedFraction') ? pct(v) : fmt(v)}</b><span>${escapeHtml(k)}</span></div>`,
    )
    .join('');
  const byName = new Map(charts.map((c) => [c.chart.name, c]));
  const fig = (name: Chart['name']) => {
    const c = byName.get(name);
    return c ? figure(c.chart, c.svg) : '';
  };
  const model = r.model
    ? `version <b>${r.model.id}</b> (${escapeHtml(r.model.aliases.join(', ') || 'no alias')}), threshold ${fmt(r.model.calibratedThreshold)}`
    : '–';
  const shiftRows = r.boundaryShift
    ? `<table id="shift-table"><tr><th class="l">measure</th><th>before stage 2</th><th>after stage 2</th></tr>${[
        ...new Set(r.boundaryShift.map((s) => s.measure)),
      ]
        .map((m) => {
          const v = (w: string) => r.boundaryShift!.find((s) => s.measure === m && s.when === w)?.value;
          return `<tr><td class="l">${escapeHtml(m)}</td><td>${fmt(v('before stage 2'))}</td><td>${fmt(v('after stage 2'))}</td></tr>`;
        })
        .join('')}</table>`
    : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(r.title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>${CSS}</style></head>
<body>
<h1>${escapeHtml(r.title)}</h1>
<div class="muted">workflow <code>${escapeHtml(run.workflowId)}</code> · status <b class="status-${escapeHtml(run.status)}" id="run-status">${escapeHtml(run.status)}</b> · attempt ${run.attempt} · started ${escapeHtml(run.startedAt)}${run.endedAt ? ` · ended ${escapeHtml(run.endedAt)}` : ''}</div>
<div class="tiles">${tiles}</div>
<h2>Run</h2>
${kv([
  ['dataset', escapeHtml(p.dataset)],
  ['dataset version', code(p.datasetVersionId)],
  ['source', escapeHtml(p.source ?? '–')],
  ['config hash', code(p.configHash)],
  ['code version', code(p.codeVersion)],
  ['LLM model sha256', code(p.llmModelSha256)],
  ['trigger', escapeHtml(p.trigger ?? '–')],
  ['model version', model],
])}
${fig('serving')}
${r.summary ? `<h2>Summary: CRM, LLM branch and hybrid (test)</h2>${summaryTable(r.summary)}` : ''}
${fig('calibration')}
${fig('buckets')}
${fig('boundary-shift')}${shiftRows}
${fig('training')}
${fig('reliability')}
${
  r.run.kind === 'recalibrate'
    ? ''
    : `<h2>Comparison with the champion</h2>${r.champion ? championTable(r.champion) : '<p>No champion was in place when this run started.</p>'}`
}
<h2>All metrics</h2>
<details><summary>${Object.keys(r.metrics).length} summary metrics of this run</summary>
<table id="metrics-table">${Object.entries(r.metrics)
    .map(([k, v]) => `<tr><td class="l">${escapeHtml(k)}</td>${cell(`metrics.${k}`, v, 6)}</tr>`)
    .join('')}</table></details>
<h2>Config</h2>
<pre id="config">${escapeHtml(JSON.stringify(p.config, null, 2))}</pre>
${r.notes.length ? `<h2>Notes</h2><ul id="notes">${r.notes.map((n) => `<li>${escapeHtml(n)}</li>`).join('')}</ul>` : ''}
</body></html>
`;
}
