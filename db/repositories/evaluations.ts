import { eq, sql } from 'drizzle-orm';
import { badInput } from '../errors.js';
import { evaluations, type EvaluationRow } from '../schema/index.js';
import { Repository } from './base.js';
import { requireId, requireText, requireUuid } from './validate.js';

export interface EvaluationInput {
  runId: string;
  kind: string;
  payload: Record<string, unknown>;
  modelVersionId?: number | null;
}

export class EvaluationRepository extends Repository {
  /** Upsert by (run, kind, model version): a retried evaluation activity overwrites its own row. */
  async record(input: EvaluationInput): Promise<EvaluationRow> {
    requireUuid('runId', input.runId);
    requireText('kind', input.kind);
    if (input.payload === null || typeof input.payload !== 'object' || Array.isArray(input.payload)) {
      throw badInput('payload', 'must be a JSON object', input.payload);
    }
    if (input.modelVersionId != null) requireId('modelVersionId', input.modelVersionId);
    return this.retry(async () => {
      const [row] = await this.db
        .insert(evaluations)
        .values({
          runId: input.runId,
          kind: input.kind,
          payload: input.payload,
          modelVersionId: input.modelVersionId ?? null,
        })
        .onConflictDoUpdate({
          target: [evaluations.runId, evaluations.kind, evaluations.modelVersionId],
          set: { payload: sql`excluded.payload`, createdAt: new Date() },
        })
        .returning();
      return row;
    });
  }

  async listForRun(runId: string): Promise<EvaluationRow[]> {
    requireUuid('runId', runId);
    return this.retry(() =>
      this.db.select().from(evaluations).where(eq(evaluations.runId, runId)).orderBy(evaluations.id),
    );
  }

  async listForModelVersion(modelVersionId: number): Promise<EvaluationRow[]> {
    requireId('modelVersionId', modelVersionId);
    return this.retry(() =>
      this.db
        .select()
        .from(evaluations)
        .where(eq(evaluations.modelVersionId, modelVersionId))
        .orderBy(evaluations.id),
    );
  }
}
