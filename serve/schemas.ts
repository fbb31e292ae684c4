/**
 * JSON schemas of the HTTP API. Fastify compiles them with ajv for requests and fast-json-stringify for
 * responses; objects are closed (`additionalProperties: false`) so that a misspelt field is a 400 naming it,
 * never a silently ignored option.
 */

const id = { type: 'string', minLength: 1, maxLength: 256 } as const;

const historyEvent = {
  type: 'object',
  additionalProperties: false,
  required: ['item'],
  properties: {
    item: id,
    rating: { type: 'number' },
    ts: { type: 'number' },
  },
} as const;

export function scoreRequestSchema(limits: { maxCandidates: number; maxHistory: number }) {
  return {
    type: 'object',
    additionalProperties: false,
    required: ['user', 'candidates'],
    properties: {
      user: {
        type: 'object',
        additionalProperties: false,
        required: ['id'],
        properties: {
          id,
          features: {
            type: 'object',
            maxProperties: 64,
            additionalProperties: { type: 'string', maxLength: 256 },
          },
        },
      },
      candidates: {
        type: 'array',
        minItems: 1,
        maxItems: limits.maxCandidates,
        items: {
          type: 'object',
          additionalProperties: false,
          required: ['item'],
          properties: { item: id },
        },
      },
      history: { type: 'array', maxItems: limits.maxHistory, items: historyEvent },
      budgetMs: { type: 'number', minimum: 0, maximum: 60_000 },
    },
  } as const;
}

export const scoreResponseSchema = {
  type: 'object',
  required: ['requestId', 'modelVersion', 'candidates', 'timings'],
  properties: {
    requestId: { type: 'string' },
    modelVersion: { type: 'string' },
    threshold: { type: 'number' },
    candidates: {
      type: 'array',
      items: {
        type: 'object',
        required: ['item', 'p', 'route', 'entropy'],
        properties: {
          item: { type: 'string' },
          p: { type: 'number' },
          route: { type: 'string', enum: ['crm', 'llm', 'crm-fallback'] },
          entropy: { type: 'number' },
          cold: { type: 'boolean' },
        },
      },
    },
    timings: {
      type: 'object',
      properties: { totalMs: { type: 'number' }, crmMs: { type: 'number' }, llmMs: { type: 'number' } },
    },
    llm: {
      type: 'object',
      properties: {
        routed: { type: 'integer' },
        answered: { type: 'integer' },
        fallbacks: { type: 'integer' },
        fallbackReason: { type: 'string' },
        promptTokens: { type: 'integer' },
        evaluatedTokens: { type: 'integer' },
      },
    },
  },
} as const;

export const feedbackRequestSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['user', 'item', 'ts'],
  properties: {
    requestId: { type: 'string', format: 'uuid' },
    user: id,
    item: id,
    label: { type: 'integer', enum: [0, 1] },
    rating: { type: 'number' },
    /** Seconds since epoch. */
    ts: { type: 'number', minimum: 0 },
  },
  oneOf: [{ required: ['label'] }, { required: ['rating'] }],
} as const;

export const errorSchema = {
  type: 'object',
  properties: {
    error: {
      type: 'object',
      properties: {
        code: { type: 'string' },
        message: { type: 'string' },
        field: { type: 'string' },
        requestId: { type: 'string' },
      },
    },
  },
} as const;
