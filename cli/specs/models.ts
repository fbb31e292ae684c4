import { defineCommand } from '../args.js';

export const modelsSpec = defineCommand({
  name: 'models',
  summary: 'the model registry: list versions, show one, promote one (audited)',
  usage: ['list', 'show VERSION', 'promote VERSION'],
  options: {
    limit: {
      type: 'string',
      placeholder: 'N',
      description: 'models list: how many, newest first',
      default: '50',
    },
    alias: {
      type: 'string',
      placeholder: 'ALIAS',
      description: 'models promote: the alias to move',
      default: 'champion',
    },
    actor: {
      type: 'string',
      placeholder: 'WHO',
      description: 'models promote: who, for the audit trail',
      defaultText: 'cli:$USER',
    },
    reason: {
      type: 'string',
      placeholder: 'TEXT',
      description: 'models promote: why, for the audit trail',
      default: 'promoted by hand',
    },
  },
  positionals: true,
  examples: ['corella models promote 7 --reason "better hybrid AUC on last week"'],
});
