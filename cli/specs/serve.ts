import { defineCommand, type OptionDefs } from '../args.js';

/** The scoring service's options (`corella serve`). */
export const SERVE_OPTIONS = {
  model: {
    type: 'string',
    placeholder: 'ALIAS|VERSION',
    description: 'the model to serve: an alias it follows live, or a fixed version id',
    defaultText: 'champion',
  },
  host: {
    type: 'string',
    placeholder: 'HOST',
    description: 'the address to bind; beyond loopback it needs CORELLA_SERVE_TOKEN (a bearer token)',
    defaultText: '127.0.0.1',
  },
  port: {
    type: 'string',
    placeholder: 'N',
    description: 'the port (0 picks a free one)',
    defaultText: '8080',
  },
  'llm-concurrency': { type: 'string', placeholder: 'N', description: 'LLM requests scored at once' },
  'llm-queue': {
    type: 'string',
    placeholder: 'N',
    description: 'LLM requests waiting at most (more fall back to the CRM)',
  },
  'budget-ms': { type: 'string', placeholder: 'MS', description: "a request's default latency budget" },
  'max-candidates': { type: 'string', placeholder: 'N', description: 'candidates one request may carry' },
  threshold: {
    type: 'string',
    placeholder: 'calibrated|inf|-inf|T',
    description:
      'the routing threshold: inf serves CRM only, -inf sends everything to the LLM (write --threshold=-inf), ' +
      'a number overrides the calibrated one',
    defaultText: 'calibrated',
  },
  'semi-space-mb': {
    type: 'string',
    placeholder: 'MB',
    description:
      "V8's young generation (--max-semi-space-size); serve restarts node with it unless NODE_OPTIONS " +
      "sets one; 0 keeps Node's default",
    defaultText: '16',
  },
} as const satisfies OptionDefs;

export const serveSpec = defineCommand({
  name: 'serve',
  summary: 'the online hybrid predictor over HTTP; follows the alias and swaps versions live',
  usage: [''],
  description:
    'POST /v1/score and /v1/feedback; GET /healthz, /readyz and /metrics. Needs only Postgres (DATABASE_URL ' +
    'or the embedded one) and the artifact store; runs until SIGINT/SIGTERM.',
  options: SERVE_OPTIONS,
  positionals: false,
  examples: [
    'corella serve --port 8080 --threshold=inf',
    'CORELLA_SERVE_TOKEN=… corella serve --host 0.0.0.0',
  ],
});
