import { defineCommand } from '../args.js';

export const gcSpec = defineCommand({
  name: 'gc',
  summary: 'remove artifact blobs nothing references (young ones are kept)',
  usage: [''],
  description:
    'A blob is removed when no database row and no named pointer references it and it is older than ' +
    '--older-than and than the oldest running run (a running workflow holds blob ids only in its history).',
  options: {
    'dry-run': { type: 'boolean', description: 'list what would be removed, remove nothing' },
    'older-than': {
      type: 'string',
      placeholder: 'DURATION',
      description: 'keep blobs modified more recently than this',
      default: '7d',
    },
  },
  positionals: false,
  examples: ['corella gc --dry-run --older-than 30d'],
});
