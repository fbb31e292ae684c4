import { desc, eq, sql } from 'drizzle-orm';
import { NotFoundError, badInput } from '../errors.js';
import { calibrations, modelVersions, type CalibrationPoint, type CalibrationRow } from '../schema/index.js';
import { Repository } from './base.js';
import { requireFinite, requireId, requireText, requireUuid } from './validate.js';

export interface CalibrationInput {
  runId: string;
  threshold: number;
  metric: string;
  curve?: CalibrationPoint[];
  /** When set, the model version's calibrated threshold is updated in the same transaction. */
  modelVersionId?: number | null;
}

export class CalibrationRepository extends Repository {
  /** Upsert by (run, metric): a retried calibration activity overwrites its own row. */
  async record(input: CalibrationInput): Promise<CalibrationRow> {
    requireUuid('runId', input.runId);
    requireText('metric', input.metric);
    requireFinite('threshold', input.threshold);
    if (input.threshold < 0) throw badInput('threshold', 'must be >= 0 (it is an entropy)', input.threshold);
    (input.curve ?? []).forEach((p, i) => requireFinite(`curve[${i}].threshold`, p.threshold));
    if (input.modelVersionId != null) requireId('modelVersionId', input.modelVersionId);
    return this.retry(() =>
      this.db.transaction(async (tx) => {
        const values = {
          runId: input.runId,
          threshold: input.threshold,
          metric: input.metric,
          curve: input.curve ?? [],
          modelVersionId: input.modelVersionId ?? null,
        };
        const [row] = await tx
          .insert(calibrations)
          .values(values)
          .onConflictDoUpdate({
            target: [calibrations.runId, calibrations.metric],
            set: {
              threshold: values.threshold,
              curve: sql`excluded.curve`,
              modelVersionId: sql`coalesce(excluded.model_version_id, ${calibrations.modelVersionId})`,
              createdAt: new Date(),
            },
          })
          .returning();
        if (input.modelVersionId != null) {
          const updated = await tx
            .update(modelVersions)
            .set({ calibratedThreshold: input.threshold })
            .where(eq(modelVersions.id, input.modelVersionId))
            .returning({ id: modelVersions.id });
          if (updated.length === 0) throw new NotFoundError('model version', input.modelVersionId);
        }
        return row;
      }),
    );
  }

  async get(id: number): Promise<CalibrationRow | undefined> {
    requireId('calibrationId', id);
    return this.retry(
      async () => (await this.db.select().from(calibrations).where(eq(calibrations.id, id)))[0],
    );
  }

  async listForRun(runId: string): Promise<CalibrationRow[]> {
    requireUuid('runId', runId);
    return this.retry(() =>
      this.db.select().from(calibrations).where(eq(calibrations.runId, runId)).orderBy(calibrations.id),
    );
  }

  async listForModelVersion(modelVersionId: number): Promise<CalibrationRow[]> {
    requireId('modelVersionId', modelVersionId);
    return this.retry(() =>
      this.db
        .select()
        .from(calibrations)
        .where(eq(calibrations.modelVersionId, modelVersionId))
        .orderBy(calibrations.id),
    );
  }

  async latestForModelVersion(modelVersionId: number): Promise<CalibrationRow | undefined> {
    requireId('modelVersionId', modelVersionId);
    return this.retry(
      async () =>
        (
          await this.db
            .select()
            .from(calibrations)
            .where(eq(calibrations.modelVersionId, modelVersionId))
            .orderBy(desc(calibrations.createdAt), desc(calibrations.id))
            .limit(1)
        )[0],
    );
  }
}
