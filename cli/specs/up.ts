import { defineCommand } from '../args.js';
import { RUN_OPTIONS } from './run-options.js';

export const upSpec = defineCommand({
  name: 'up',
  summary: 'start Postgres, Temporal and workers, run the retrain pipeline, print a summary',
  usage: [''],
  description:
    'The embedded default: a private PostgreSQL and Temporal dev server under CORELLA_HOME, one worker ' +
    'process per queue, then one retrain of the data and config (a completed one is shown, not run again). ' +
    'Prints one `corella-ready {...}` line on stderr when the stack is up.',
  options: {
    ...RUN_OPTIONS,
    'keep-alive': { type: 'boolean', description: 'keep everything running after the run, until Ctrl-C' },
    'no-run': {
      type: 'boolean',
      description: 'start the stack only, run no retrain (stays up until Ctrl-C)',
    },
    serve: {
      type: 'boolean',
      description: 'also start the scoring service (needs --keep-alive or --no-run)',
    },
    'serve-port': {
      type: 'string',
      placeholder: 'N',
      description: "the scoring service's port with --serve",
      default: '8080',
    },
  },
  positionals: false,
  examples: ['corella up --data-dir ~/data/ml-1m --config ml-1m-cpu', 'corella up --no-run --serve'],
});
