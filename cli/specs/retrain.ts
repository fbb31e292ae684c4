import { defineCommand } from '../args.js';
import { RUN_OPTIONS } from './run-options.js';

export const retrainSpec = defineCommand({
  name: 'retrain',
  summary: 'start retrainWorkflow on a running stack (one run per dataset + config)',
  usage: [''],
  description:
    'Talks to TEMPORAL_ADDRESS (or the stack `corella up` started). Starting the same dataset and config ' +
    'again joins the running workflow or shows the completed one; a failed or cancelled run may start again.',
  options: {
    ...RUN_OPTIONS,
    wait: { type: 'boolean', description: 'wait for the run and print its summary' },
  },
  positionals: false,
  examples: ['corella retrain --data-dir ~/data/ml-1m --config ml-1m-cpu --wait'],
});
