/**
 * Typed errors shared by every layer. `retryable: false` errors describe bad input (a dataset, a config,
 * a model file): retrying cannot fix them, so activities turn them into non-retryable Temporal failures.
 */
export type ErrorCode =
  | 'BAD_DATASET'
  | 'BAD_CONFIG'
  | 'BAD_MODEL_FILE'
  | 'ARTIFACT_CORRUPT'
  | 'ARTIFACT_NOT_FOUND'
  | 'BAD_ARTIFACT_NAME'
  /** A conditional write of a named pointer lost its race (another writer changed it first) too often. */
  | 'ARTIFACT_CONFLICT'
  | 'FEATURE_MAP_MISMATCH'
  | 'PROMPT_TOO_LONG'
  | 'GPU_UNAVAILABLE'
  | 'STAGE_NOT_IMPLEMENTED'
  | 'DATA_NOT_AVAILABLE'
  | 'SERVICE_UNAVAILABLE'
  /** Postgres could not be reached (refused, restarting, out of connection slots): a wait, then a failure. */
  | 'DB_UNAVAILABLE'
  /** Postgres refused a statement (SQL state and constraint in the message, never its values). */
  | 'DB_ERROR'
  /** A scoring request the engine cannot serve as asked (too many candidates, unknown field, ...). */
  | 'BAD_REQUEST';

export class CorellaError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly details: Record<string, unknown>;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { retryable?: boolean; details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'CorellaError';
    this.code = code;
    this.retryable = opts.retryable ?? false;
    this.details = opts.details ?? {};
  }
}

/** A malformed input file: always names the file, the 1-based line (when known) and the field. */
export class DatasetError extends CorellaError {
  readonly file: string;
  readonly line: number | undefined;
  readonly field: string | undefined;
  readonly excerpt: string | undefined;

  constructor(
    message: string,
    where: { file: string; line?: number; field?: string; excerpt?: string; reason?: string },
  ) {
    const loc = `${where.file}${where.line !== undefined ? `:${where.line}` : ''}${where.field ? ` (field ${where.field})` : ''}`;
    const excerpt = where.excerpt !== undefined ? ` near "${where.excerpt.slice(0, 80)}"` : '';
    super('BAD_DATASET', `${loc}: ${message}${excerpt}`, { details: { ...where } });
    this.name = 'DatasetError';
    this.file = where.file;
    this.line = where.line;
    this.field = where.field;
    this.excerpt = where.excerpt;
  }
}

export function isCorellaError(e: unknown): e is CorellaError {
  return e instanceof CorellaError;
}
