import { access, mkdir, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { DatasetRepository, datasetVersionFromManifest } from '../db/repositories/datasets.js';
import { RunRepository } from '../db/repositories/runs.js';
import {
  generateSyntheticMovielens,
  ingestDataset,
  type IngestOptions,
  type SyntheticOptions,
} from '../ml/data/index.js';
import { CorellaError } from '../ml/errors.js';
import type { ActivityContext } from './context.js';
import { activityRunOptions } from './heartbeat.js';
import { METRIC_PREFIX, prefixMetrics } from './metric-keys.js';
import type { CorellaActivities, IngestResult } from './types.js';

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

/** The synthetic dataset is generated where it is ingested, so any worker can produce the same bytes. */
async function ensureSyntheticFiles(dir: string, params: Record<string, unknown>): Promise<void> {
  if (await exists(join(dir, 'ratings.dat'))) return;
  // Generated beside the target and renamed into place, so a crash or a concurrent attempt never leaves
  // a half-written dataset that a later ingestion would take for complete.
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  await generateSyntheticMovielens(tmp, (params.synthetic ?? {}) as SyntheticOptions);
  await mkdir(dirname(dir), { recursive: true });
  try {
    await rename(tmp, dir);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    if (!(await exists(join(dir, 'ratings.dat')))) throw e;
  }
}

export function ingestActivities(ctx: ActivityContext): Pick<CorellaActivities, 'ingestDataset'> {
  return {
    async ingestDataset({ runId, dataset }): Promise<IngestResult> {
      if (!dataset.dir) throw new CorellaError('BAD_CONFIG', 'dataset.dir is required');
      const params = dataset.params ?? {};
      if (dataset.source === 'synthetic-movielens') await ensureSyntheticFiles(dataset.dir, params);
      const opts = {
        ...params,
        source: dataset.source,
        dir: dataset.dir,
        name: dataset.name,
      } as IngestOptions;
      delete (opts as unknown as Record<string, unknown>).synthetic;
      // Everything is validated and written to the content-addressed store before any row is written; the
      // row insert is one transaction, so a failure leaves no version row behind.
      const manifest = await ingestDataset(opts, ctx.store, activityRunOptions('ingest'));
      const manifestRef = await ctx.store.put(JSON.stringify(manifest));
      const featureMapBytes = (await ctx.store.get(manifest.featureMapArtifact)).byteLength;
      const datasetName = dataset.name ?? dataset.source;
      const input = datasetVersionFromManifest(datasetName, manifest, {
        sha256: manifest.featureMapArtifact,
        uri: ctx.store.uriFor(manifest.featureMapArtifact),
        bytes: featureMapBytes,
        mediaType: 'application/json',
        producingRunId: runId,
      });
      await new DatasetRepository(ctx.db).upsertVersion(input);
      const runs = new RunRepository(ctx.db);
      await runs.setDatasetVersion(runId, manifest.versionId);
      const counts: Record<string, number> = {
        users: manifest.userCount,
        items: manifest.itemCount,
      };
      for (const [split, st] of Object.entries(manifest.stats)) {
        counts[`${split}.size`] = st.size;
        counts[`${split}.positiveRate`] = st.positiveRate;
      }
      await runs.logMetrics(runId, prefixMetrics(METRIC_PREFIX.dataset, counts));
      return {
        datasetVersionId: manifest.versionId,
        manifestSha256: manifestRef.sha256,
        counts,
        source: dataset.source,
      };
    },
  };
}
