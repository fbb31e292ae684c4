import { defineCommand } from '../args.js';

export const scoreSpec = defineCommand({
  name: 'score',
  summary: 'batch-score candidate lines as scoreWorkflow (resumable chunks; same scores as serving)',
  usage: ['--input FILE.jsonl --output FILE.jsonl'],
  description:
    'Every line is checked before anything starts (a bad line is exit 4 naming the line and field). The same ' +
    'file with the same model joins the same workflow; without --wait a later --wait run writes the output.',
  options: {
    input: {
      type: 'string',
      placeholder: 'FILE.jsonl',
      description: 'the candidate lines to score (required)',
    },
    output: { type: 'string', placeholder: 'FILE.jsonl', description: 'where the scores go (required)' },
    model: {
      type: 'string',
      placeholder: 'ALIAS|VERSION',
      description: 'champion, challenger, another alias or a model version id',
      default: 'champion',
    },
    'chunk-rows': {
      type: 'string',
      placeholder: 'N',
      description: 'rows per chunk activity',
      defaultText: '1000',
    },
    'parallel-chunks': {
      type: 'string',
      placeholder: 'N',
      description: 'chunk activities in flight at once',
      defaultText: '1',
    },
    wait: { type: 'boolean', description: 'wait for the workflow and write --output' },
    // For separate worker pools and isolated tests, like `worker --task-queue`.
    'cpu-queue': { type: 'string', placeholder: 'NAME', description: 'the cpu task queue (isolated pools)' },
    'gpu-queue': { type: 'string', placeholder: 'NAME', description: 'the gpu task queue (isolated pools)' },
    'heartbeat-timeout': {
      type: 'string',
      placeholder: 'DURATION',
      description: 'how long a chunk activity may go without a heartbeat before it is retried',
      defaultText: '2m',
    },
  },
  positionals: false,
  examples: ['corella score --input candidates.jsonl --output scores.jsonl --wait'],
});
