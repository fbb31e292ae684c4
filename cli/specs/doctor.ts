import { defineCommand } from '../args.js';

export const doctorSpec = defineCommand({
  name: 'doctor',
  summary: 'what is configured and what is reachable (Postgres, Temporal, tfjs backends, llama.cpp, GPUs)',
  usage: [''],
  options: {},
  positionals: false,
  examples: ['corella doctor --json'],
});
