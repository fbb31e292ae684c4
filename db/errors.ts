import { CorellaError } from '../ml/errors.js';

/** A row the caller named does not exist (e.g. `corella models promote 999`). */
export class NotFoundError extends CorellaError {
  readonly entity: string;
  readonly key: string;

  constructor(entity: string, key: string | number) {
    super('BAD_CONFIG', `${entity} ${JSON.stringify(String(key))} not found`, {
      details: { entity, key: String(key) },
    });
    this.name = 'NotFoundError';
    this.entity = entity;
    this.key = String(key);
  }
}

/** Bad input to a repository: names the field; nothing was written. */
export function badInput(field: string, message: string, value?: unknown): CorellaError {
  const shown = value === undefined ? '' : ` (got ${JSON.stringify(value)?.slice(0, 80)})`;
  return new CorellaError('BAD_CONFIG', `${field}: ${message}${shown}`, { details: { field } });
}
