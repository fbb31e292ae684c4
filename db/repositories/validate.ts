import { badInput } from '../errors.js';

const SHA256_RE = /^[0-9a-f]{64}$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(value: string): boolean {
  return UUID_RE.test(value);
}

export function requireSha256(field: string, value: unknown): string {
  if (typeof value !== 'string' || !SHA256_RE.test(value))
    throw badInput(field, 'must be a lowercase hex sha256', value);
  return value;
}

export function requireText(field: string, value: unknown): string {
  if (typeof value !== 'string' || value.trim() === '')
    throw badInput(field, 'must be a non-empty string', value);
  return value;
}

export function requireUuid(field: string, value: unknown): string {
  if (typeof value !== 'string' || !UUID_RE.test(value))
    throw badInput(field, 'must be a run id (uuid)', value);
  return value;
}

export function requireFinite(field: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value))
    throw badInput(field, 'must be a finite number', value);
  return value;
}

/** Metrics may legitimately be NaN (AUC of a one-class bucket); they must still be numbers. */
export function requireNumber(field: string, value: unknown): number {
  if (typeof value !== 'number') throw badInput(field, 'must be a number', value);
  return value;
}

export function requireId(field: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw badInput(field, 'must be a positive integer id', value);
  }
  return value;
}
