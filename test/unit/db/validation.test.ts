import { describe, expect, it } from 'vitest';
import { NotFoundError, badInput } from '../../../db/errors.js';
import { requireFinite, requireId, requireSha256, requireUuid } from '../../../db/repositories/validate.js';
import { datasetVersionFromManifest } from '../../../db/repositories/datasets.js';
import { CorellaError } from '../../../ml/errors.js';
import type { DatasetManifest } from '../../../ml/data/types.js';

describe('repository input validation', () => {
  it('names the field and the offending value in a typed error', () => {
    const e = badInput('metrics[2].value', 'must be a number', 'x');
    expect(e).toBeInstanceOf(CorellaError);
    expect(e.code).toBe('BAD_CONFIG');
    expect(e.message).toBe('metrics[2].value: must be a number (got "x")');
    expect(e.details).toEqual({ field: 'metrics[2].value' });
    expect(() => requireSha256('artifacts.crmModel', 'A'.repeat(64))).toThrow(/artifacts\.crmModel/);
    expect(requireSha256('s', 'a'.repeat(64))).toBe('a'.repeat(64));
    expect(() => requireUuid('runId', '1234')).toThrow(/runId: must be a run id/);
    expect(() => requireFinite('threshold', Number.POSITIVE_INFINITY)).toThrow(/threshold/);
    expect(() => requireId('modelVersionId', 1.5)).toThrow(/modelVersionId/);
    expect(requireId('modelVersionId', 3)).toBe(3);
  });

  it('NotFoundError says what was missing', () => {
    const e = new NotFoundError('model version', 12);
    expect(e).toBeInstanceOf(CorellaError);
    expect(e.message).toBe('model version "12" not found');
    expect([e.entity, e.key]).toEqual(['model version', '12']);
  });
});

describe('datasetVersionFromManifest', () => {
  it('maps the ingestion manifest onto the version row', () => {
    const manifest: DatasetManifest = {
      versionId: 'v1',
      source: 'movielens-1m',
      params: { minRating: 4 },
      inputs: [{ name: 'ratings.dat', sha256: 'b'.repeat(64), bytes: 10 }],
      featureMapArtifact: 'c'.repeat(64),
      itemTableArtifact: 'd'.repeat(64),
      splitArtifacts: { train: 'a', valid: 'b', test: 'c' },
      stats: {
        train: { size: 8, positives: 4, positiveRate: 0.5 },
        valid: { size: 1, positives: 1, positiveRate: 1 },
        test: { size: 1, positives: 0, positiveRate: 0 },
      },
      dropped: { duplicate: 2 },
      userCount: 3,
      itemCount: 5,
    };
    const fm = { sha256: 'c'.repeat(64), uri: 'file:///x', bytes: 7 };
    const v = datasetVersionFromManifest('ml-1m', manifest, fm);
    expect(v).toMatchObject({
      datasetName: 'ml-1m',
      versionId: 'v1',
      source: 'movielens-1m',
      params: { minRating: 4 },
      inputSha256s: manifest.inputs,
      counts: { users: 3, items: 5, dropped: { duplicate: 2 } },
      splitSizes: manifest.stats,
      featureMap: fm,
    });
    expect(v.manifest).toBe(manifest);
  });
});
