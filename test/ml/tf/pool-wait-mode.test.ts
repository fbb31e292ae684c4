import { describe, expect, it } from 'vitest';
import { CorellaError } from '../../../ml/errors.js';
import { poolWaitMode } from '../../../ml/tf/native.js';

describe('CORELLA_POOL_WAIT is checked before the native addon reads it', () => {
  it('accepts region (also unset or empty) and chunk', () => {
    expect(poolWaitMode(undefined)).toBe('region');
    expect(poolWaitMode('')).toBe('region');
    expect(poolWaitMode('region')).toBe('region');
    expect(poolWaitMode('chunk')).toBe('chunk');
  });

  it('refuses anything else with a BAD_CONFIG naming the variable and the value', () => {
    for (const bad of ['spin', 'Region', 'chunks', ' chunk']) {
      let err: unknown;
      try {
        poolWaitMode(bad);
      } catch (e) {
        err = e;
      }
      expect(err, bad).toBeInstanceOf(CorellaError);
      expect((err as CorellaError).code).toBe('BAD_CONFIG');
      expect((err as CorellaError).message).toContain(`CORELLA_POOL_WAIT=${JSON.stringify(bad)}`);
    }
  });
});
