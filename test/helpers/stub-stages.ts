import type { CorellaActivities } from '../../activities/types.js';
import { DatasetError } from '../../ml/errors.js';

/** Stage stubs registered by the test; bookkeeping (run rows) is the real thing against Postgres. */
export function stubStages(calls: string[], fail?: 'ingest'): Partial<CorellaActivities> {
  return {
    async ingestDataset() {
      calls.push('ingestDataset');
      if (fail === 'ingest') {
        throw new DatasetError('rating must be 1..5', {
          file: 'ratings.dat',
          line: 7,
          field: 'Rating',
          excerpt: '1::2::9::3',
        });
      }
      return {
        datasetVersionId: 'v-test',
        manifestSha256: 'a'.repeat(64),
        counts: { users: 3 },
        source: 'movielens-1m',
      };
    },
    async trainCrm() {
      calls.push('trainCrm');
      return { crmArtifact: 'c'.repeat(64), backend: 'stub', metrics: { 'crm.valid.auc': 0.7 } };
    },
    async extractLlmFeatures() {
      calls.push('extractLlmFeatures');
      return { featuresIndex: 'features/x', modelSha256: 'd'.repeat(64), metrics: { samples: 10 } };
    },
    async trainJoint() {
      calls.push('trainJoint');
      return {
        crmArtifact: 'c'.repeat(64),
        adapterArtifact: 'e'.repeat(64),
        metrics: { 'stage2.loss': 0.5 },
      };
    },
    async evaluateAlignment() {
      calls.push('evaluateAlignment');
      return { evaluationId: 'ev1', metrics: { 'test.hybrid.auc': 0.75 } };
    },
    async calibrateThreshold() {
      calls.push('calibrateThreshold');
      return {
        threshold: 0.6,
        routedFraction: 0.15,
        curveArtifact: 'f'.repeat(64),
        metrics: { routedFraction: 0.15 },
      };
    },
    async registerModelVersion() {
      calls.push('registerModelVersion');
      return { modelVersionId: 'mv-1', alias: 'champion', reason: 'first version' };
    },
    async renderReport() {
      calls.push('renderReport');
      return { reportArtifact: 'b'.repeat(64), path: '/tmp/stub-report.html', bytes: 1, charts: [] };
    },
  };
}
