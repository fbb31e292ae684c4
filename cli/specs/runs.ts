import { defineCommand } from '../args.js';

export const runsSpec = defineCommand({
  name: 'runs',
  summary: 'list runs, show one (live progress, metrics, report), compare two, cancel one',
  usage: ['list', 'show RUN_ID|WORKFLOW_ID', 'compare RUN_A RUN_B', 'cancel RUN_ID|WORKFLOW_ID'],
  options: {
    limit: {
      type: 'string',
      placeholder: 'N',
      description: 'runs list: how many, newest first',
      default: '20',
    },
    kind: {
      type: 'string',
      placeholder: 'KIND',
      description: 'runs list: only this kind (retrain, recalibrate, …)',
    },
    status: {
      type: 'string',
      placeholder: 'STATUS',
      description: 'runs list: only this status (running, completed, failed, …)',
    },
  },
  positionals: true,
  examples: [
    'corella runs list --kind retrain --status failed',
    'corella runs compare 1a2b3c4d 5e6f7a8b',
    'corella runs cancel retrain-movielens-1m-7d0ba3225b82',
  ],
});
