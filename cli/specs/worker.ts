import { defineCommand } from '../args.js';

export const workerSpec = defineCommand({
  name: 'worker',
  summary: 'run one worker process against TEMPORAL_ADDRESS / DATABASE_URL (or the embedded stack)',
  usage: ['--queue cpu|gpu|cpu,gpu'],
  options: {
    queue: {
      type: 'string',
      placeholder: 'cpu|gpu',
      description: 'the queue(s) to poll: cpu, gpu or cpu,gpu',
    },
    concurrency: {
      type: 'string',
      placeholder: 'N',
      description: 'activities the gpu queue runs at once',
      defaultText: "the worker's default",
    },
    'task-queue': {
      type: 'string',
      placeholder: 'NAME',
      description: 'poll this task queue instead of the standard one (one --queue; for isolated pools)',
    },
  },
  positionals: false,
  examples: ['corella worker --queue gpu --concurrency 2'],
});
