import { desc, eq } from 'drizzle-orm';
import { CorellaError } from '../../ml/errors.js';
import type { DatasetManifest } from '../../ml/data/types.js';
import {
  datasets,
  datasetVersions,
  type DatasetInputFile,
  type DatasetRow,
  type DatasetVersionRow,
} from '../schema/index.js';
import { recordArtifactIn, type ArtifactInput } from './artifacts.js';
import { Repository } from './base.js';
import { requireSha256, requireText } from './validate.js';

export interface DatasetVersionInput {
  datasetName: string;
  /** The manifest's versionId: equal inputs + params give the same id, hence the same row. */
  versionId: string;
  source: string;
  params?: Record<string, unknown>;
  inputSha256s?: DatasetInputFile[];
  counts?: Record<string, unknown>;
  splitSizes?: Record<string, unknown>;
  /** The feature map blob; recorded in `artifacts` in the same transaction. */
  featureMap?: ArtifactInput;
  manifest?: Record<string, unknown>;
  /** Used when the dataset row does not exist yet. */
  description?: string;
}

export interface UpsertVersionResult {
  version: DatasetVersionRow;
  /** False when the version already existed (a re-run of ingestion, an activity retry). */
  created: boolean;
}

/** Map an ingestion manifest to a version row; `featureMap` is the stored feature map blob. */
export function datasetVersionFromManifest(
  datasetName: string,
  manifest: DatasetManifest,
  featureMap?: ArtifactInput,
): DatasetVersionInput {
  return {
    datasetName,
    versionId: manifest.versionId,
    source: manifest.source,
    params: manifest.params,
    inputSha256s: manifest.inputs,
    counts: { users: manifest.userCount, items: manifest.itemCount, dropped: manifest.dropped },
    splitSizes: manifest.stats,
    featureMap,
    manifest: manifest as unknown as Record<string, unknown>,
  };
}

export class DatasetRepository extends Repository {
  /**
   * Idempotent by versionId. Dataset row, feature map artifact and version are written in one transaction:
   * if any part fails, none of it is stored.
   */
  async upsertVersion(input: DatasetVersionInput): Promise<UpsertVersionResult> {
    requireText('datasetName', input.datasetName);
    requireText('versionId', input.versionId);
    requireText('source', input.source);
    if (input.featureMap) requireSha256('featureMap.sha256', input.featureMap.sha256);
    return this.retry(() =>
      this.db.transaction(async (tx) => {
        await tx
          .insert(datasets)
          .values({ name: input.datasetName, source: input.source, description: input.description ?? null })
          .onConflictDoNothing({ target: datasets.name });
        if (input.featureMap) await recordArtifactIn(tx, input.featureMap, 'featureMap');
        const inserted = await tx
          .insert(datasetVersions)
          .values({
            versionId: input.versionId,
            datasetName: input.datasetName,
            source: input.source,
            params: input.params ?? {},
            inputSha256s: input.inputSha256s ?? [],
            counts: input.counts ?? {},
            splitSizes: input.splitSizes ?? {},
            featureMapSha256: input.featureMap?.sha256 ?? null,
            manifest: input.manifest ?? {},
          })
          .onConflictDoNothing({ target: datasetVersions.versionId })
          .returning();
        if (inserted[0]) return { version: inserted[0], created: true };
        const [existing] = await tx
          .select()
          .from(datasetVersions)
          .where(eq(datasetVersions.versionId, input.versionId));
        if (!existing) throw new CorellaError('BAD_DATASET', `dataset version ${input.versionId} vanished`);
        if (existing.datasetName !== input.datasetName) {
          throw new CorellaError(
            'BAD_CONFIG',
            `dataset version ${input.versionId} already belongs to dataset ${existing.datasetName}, not ${input.datasetName}`,
          );
        }
        return { version: existing, created: false };
      }),
    );
  }

  async getVersion(versionId: string): Promise<DatasetVersionRow | undefined> {
    return this.retry(
      async () =>
        (await this.db.select().from(datasetVersions).where(eq(datasetVersions.versionId, versionId)))[0],
    );
  }

  /** Newest first. */
  async listVersions(datasetName?: string): Promise<DatasetVersionRow[]> {
    return this.retry(() => {
      const q = this.db.select().from(datasetVersions);
      return (datasetName === undefined ? q : q.where(eq(datasetVersions.datasetName, datasetName))).orderBy(
        desc(datasetVersions.createdAt),
      );
    });
  }

  async getDataset(name: string): Promise<DatasetRow | undefined> {
    return this.retry(async () => (await this.db.select().from(datasets).where(eq(datasets.name, name)))[0]);
  }

  async listDatasets(): Promise<DatasetRow[]> {
    return this.retry(() => this.db.select().from(datasets).orderBy(datasets.name));
  }
}
