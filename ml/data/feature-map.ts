import { CorellaError } from '../errors.js';
import { canonicalHash } from '../canonical.js';
import type { FeatureMap } from './types.js';

/** sha256 of the canonical JSON of everything in the feature map except its id. */
export function featureMapId(fm: Omit<FeatureMap, 'id'> & { id?: string }): string {
  const { categorical, sequences, dense, vocabularies } = fm;
  return canonicalHash({ categorical, sequences, dense, vocabularies });
}

/** Throws FEATURE_MAP_MISMATCH when the stored id does not match the content (or the expected id). */
export function verifyFeatureMap(fm: FeatureMap, expectedId?: string): void {
  const actual = featureMapId(fm);
  if (actual !== fm.id) {
    throw new CorellaError(
      'FEATURE_MAP_MISMATCH',
      `feature map content hashes to ${actual}, but it claims id ${fm.id}`,
      {
        details: { claimed: fm.id, actual },
      },
    );
  }
  if (expectedId !== undefined && expectedId !== fm.id) {
    throw new CorellaError('FEATURE_MAP_MISMATCH', `feature map ${fm.id} is not the expected ${expectedId}`, {
      details: { expected: expectedId, actual: fm.id },
    });
  }
}
