import { defineCommand } from '../args.js';

export const reportSpec = defineCommand({
  name: 'report',
  summary: "render a run's HTML report (charts, summary table, comparison with the champion)",
  usage: ['RUN_ID|WORKFLOW_ID'],
  options: {
    out: {
      type: 'string',
      placeholder: 'FILE.html',
      description: 'where to write the report',
      defaultText: '$CORELLA_HOME/reports/run-<id>.html',
    },
    bootstrap: {
      type: 'string',
      placeholder: 'N',
      description: 'bootstrap rounds for the confidence intervals',
      defaultText: '1000',
    },
  },
  positionals: true,
  examples: ['corella report 1a2b3c4d --out /tmp/run.html'],
});
