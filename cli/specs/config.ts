import { defineCommand } from '../args.js';

export const configSpec = defineCommand({
  name: 'config',
  summary: 'the pipeline config validated with every default resolved, or its JSON Schema',
  usage: ['show', 'schema'],
  description:
    'show prints the config as the activities will read it (llm.model and modelSha256 are set by up/retrain ' +
    'from --model); schema prints the JSON Schema that config files reference with $schema.',
  options: {
    config: {
      type: 'string',
      placeholder: 'NAME|FILE',
      description: 'config show: a name in config/ or a JSON file',
      defaultText: 'default',
    },
  },
  positionals: true,
  examples: ['corella config show --config ml-1m-cpu', 'corella config schema > config/schema.json'],
});
