import { stat } from 'node:fs/promises';
import { ModelRepository } from '../db/repositories/models.js';
import type { ArtifactInput } from '../db/repositories/artifacts.js';
import { DEFAULT_PROMOTION } from '../ml/corella/promotion-config.js';
import { CorellaError } from '../ml/errors.js';
import type { ActivityContext } from './context.js';
import type { CorellaActivities, Metrics, RegisterResult } from './types.js';

const SHA256_RE = /^[0-9a-f]{64}$/;

/** The promotion gate: a candidate becomes champion only when it beats the champion by `margin`. */
export function promotionDecision(
  candidate: Metrics,
  champion: Record<string, unknown> | undefined,
  rule: { metric?: string; margin?: number } = {},
): { alias: 'champion' | 'challenger'; reason: string } {
  const metric = rule.metric ?? DEFAULT_PROMOTION.metric;
  const margin = rule.margin ?? DEFAULT_PROMOTION.margin;
  const mine = candidate[metric];
  if (!champion) return { alias: 'champion', reason: 'no champion yet' };
  const theirs = champion[metric];
  if (typeof mine !== 'number' || !Number.isFinite(mine)) {
    return { alias: 'challenger', reason: `candidate has no ${metric}` };
  }
  if (typeof theirs !== 'number' || !Number.isFinite(theirs)) {
    return { alias: 'champion', reason: `champion has no ${metric}` };
  }
  return mine > theirs + margin
    ? {
        alias: 'champion',
        reason: `${metric} ${mine.toFixed(5)} > champion ${theirs.toFixed(5)} + margin ${margin}`,
      }
    : {
        alias: 'challenger',
        reason: `${metric} ${mine.toFixed(5)} does not beat champion ${theirs.toFixed(5)} + margin ${margin}`,
      };
}

export function registryActivities(ctx: ActivityContext): Pick<CorellaActivities, 'registerModelVersion'> {
  return {
    async registerModelVersion(input): Promise<RegisterResult> {
      const models = new ModelRepository(ctx.db);
      const existing = await models.getBySourceRun(input.runId);
      if (existing) {
        const aliases = (await models.list({ limit: 1000 })).find((v) => v.id === existing.id)?.aliases ?? [];
        return {
          modelVersionId: String(existing.id),
          alias: aliases.includes('champion') ? 'champion' : 'challenger',
          reason: 'already registered',
        };
      }
      // Blobs of the store are recorded with their store URI; the LLM file with its own path.
      const record: ArtifactInput[] = [];
      const roles: Record<string, string> = {};
      for (const [role, sha] of Object.entries(input.artifacts)) {
        if (!SHA256_RE.test(sha)) continue;
        // The size only (a HEAD on S3): reading a multi-GB model into memory to count it would not fit.
        const bytes = await ctx.store.sizeOf(sha);
        if (bytes !== undefined) {
          record.push({ sha256: sha, uri: ctx.store.uriFor(sha), bytes, producingRunId: input.runId });
          roles[role === 'crm' ? 'crmModel' : role] = sha;
        } else if (role === 'llmModel' && input.llmModelPath && !input.llmModelPath.startsWith('hf:')) {
          const st = await stat(input.llmModelPath).catch(() => undefined);
          if (!st) throw new CorellaError('BAD_MODEL_FILE', `LLM model file ${input.llmModelPath} is gone`);
          record.push({
            sha256: sha,
            uri: `file://${input.llmModelPath}`,
            bytes: st.size,
            mediaType: 'application/x-gguf',
          });
          roles.llmModel = sha;
        }
      }
      const champion = await models.champion();
      const decision = promotionDecision(input.metrics, champion?.metrics, input.promotion);
      const { version } = await models.register({
        sourceRunId: input.runId,
        datasetVersionId: input.datasetVersionId,
        artifacts: roles,
        recordArtifacts: record,
        metrics: { ...input.metrics, promotion: decision.reason },
        calibratedThreshold: input.threshold,
        alias: { name: decision.alias, actor: 'retrainWorkflow', reason: decision.reason },
      });
      return { modelVersionId: String(version.id), alias: decision.alias, reason: decision.reason };
    },
  };
}
