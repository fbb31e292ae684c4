import { and, desc, eq, inArray, isNull, sql } from 'drizzle-orm';
import { CorellaError } from '../../ml/errors.js';
import type { Executor } from '../connection.js';
import { NotFoundError, badInput } from '../errors.js';
import {
  artifacts,
  calibrations,
  DEFAULT_MODEL_NAME,
  evaluations,
  modelAliases,
  modelAliasEvents,
  modelVersions,
  type CalibrationRow,
  type EvaluationRow,
  type ModelAliasEventRow,
  type ModelArtifacts,
  type ModelVersionRow,
} from '../schema/index.js';
import { recordArtifactIn, type ArtifactInput } from './artifacts.js';
import { Repository } from './base.js';
import { requireFinite, requireId, requireSha256, requireText, requireUuid } from './validate.js';

const ALIAS_RE = /^[a-z][a-z0-9_-]{0,62}$/;

export interface AliasChange {
  actor: string;
  reason?: string;
}

export interface RegisterModelInput {
  sourceRunId: string;
  datasetVersionId?: string | null;
  modelName?: string;
  /** sha256 per role (crmModel, adapter, llmModel, featureMap, …); each must be a recorded artifact. */
  artifacts: ModelArtifacts;
  /** Artifacts to record in the same transaction (e.g. blobs just written by this run). */
  recordArtifacts?: ArtifactInput[];
  metrics?: Record<string, unknown>;
  /** Default: the threshold of the source run's latest calibration, if any. */
  calibratedThreshold?: number | null;
  /** Point an alias (e.g. 'challenger') at the new version in the same transaction. */
  alias?: { name: string } & AliasChange;
}

export interface RegisterModelResult {
  version: ModelVersionRow;
  /** False when this run was already registered (a retried activity): the existing version is returned. */
  created: boolean;
}

export interface AliasMove {
  modelName: string;
  alias: string;
  fromVersionId: number | null;
  toVersionId: number | null;
  /** False when the alias already pointed there: no event is written. */
  changed: boolean;
}

export type ModelVersionWithAliases = ModelVersionRow & { aliases: string[] };

export interface ModelDetails {
  version: ModelVersionRow;
  aliases: string[];
  calibrations: CalibrationRow[];
  evaluations: EvaluationRow[];
  aliasEvents: ModelAliasEventRow[];
}

function requireAlias(alias: string): string {
  if (!ALIAS_RE.test(alias))
    throw badInput('alias', 'must be a lowercase word like champion or challenger', alias);
  return alias;
}

/**
 * Move (or remove, with toVersionId null) an alias and write its audit event, inside `tx`. A transaction-scoped
 * advisory lock serialises concurrent moves of the same alias, so the audit trail's `from` is always right.
 */
async function moveAliasIn(
  tx: Executor,
  modelName: string,
  alias: string,
  toVersionId: number | null,
  change: AliasChange,
): Promise<AliasMove> {
  await tx.execute(sql`SELECT pg_advisory_xact_lock(hashtext(${`corella-alias/${modelName}/${alias}`}))`);
  const [current] = await tx
    .select()
    .from(modelAliases)
    .where(and(eq(modelAliases.modelName, modelName), eq(modelAliases.alias, alias)));
  const fromVersionId = current?.modelVersionId ?? null;
  if (fromVersionId === toVersionId) return { modelName, alias, fromVersionId, toVersionId, changed: false };
  if (toVersionId === null) {
    await tx
      .delete(modelAliases)
      .where(and(eq(modelAliases.modelName, modelName), eq(modelAliases.alias, alias)));
  } else {
    await tx
      .insert(modelAliases)
      .values({ modelName, alias, modelVersionId: toVersionId, updatedAt: new Date() })
      .onConflictDoUpdate({
        target: [modelAliases.modelName, modelAliases.alias],
        set: { modelVersionId: toVersionId, updatedAt: new Date() },
      });
  }
  await tx.insert(modelAliasEvents).values({
    modelName,
    alias,
    fromVersionId,
    toVersionId,
    reason: change.reason ?? '',
    actor: change.actor,
  });
  return { modelName, alias, fromVersionId, toVersionId, changed: true };
}

export class ModelRepository extends Repository {
  /**
   * Idempotent by source run: registering the same run twice yields one version. Artifacts, the version,
   * the link of the run's calibrations and the optional alias are written in one transaction.
   */
  async register(input: RegisterModelInput): Promise<RegisterModelResult> {
    requireUuid('sourceRunId', input.sourceRunId);
    const modelName = input.modelName ?? DEFAULT_MODEL_NAME;
    requireText('modelName', modelName);
    for (const [role, sha] of Object.entries(input.artifacts)) {
      if (sha !== undefined) requireSha256(`artifacts.${role}`, sha);
    }
    if (input.calibratedThreshold != null) requireFinite('calibratedThreshold', input.calibratedThreshold);
    if (input.alias) {
      requireAlias(input.alias.name);
      requireText('alias.actor', input.alias.actor);
    }
    return this.retry(() =>
      this.db.transaction(async (tx) => {
        for (const [i, a] of (input.recordArtifacts ?? []).entries()) {
          await recordArtifactIn(tx, a, `recordArtifacts[${i}]`);
        }
        const [existing] = await tx
          .select()
          .from(modelVersions)
          .where(eq(modelVersions.sourceRunId, input.sourceRunId));
        if (existing) return { version: existing, created: false };

        const wanted = [
          ...new Set(Object.values(input.artifacts).filter((s): s is string => s !== undefined)),
        ];
        if (wanted.length > 0) {
          const found = await tx
            .select({ sha256: artifacts.sha256 })
            .from(artifacts)
            .where(inArray(artifacts.sha256, wanted));
          const missing = wanted.filter((s) => !found.some((f) => f.sha256 === s));
          if (missing.length > 0) {
            throw new CorellaError(
              'ARTIFACT_NOT_FOUND',
              `model artifacts not recorded: ${missing.join(', ')}`,
              {
                details: { missing },
              },
            );
          }
        }
        let threshold = input.calibratedThreshold ?? null;
        if (input.calibratedThreshold === undefined) {
          const [cal] = await tx
            .select()
            .from(calibrations)
            .where(eq(calibrations.runId, input.sourceRunId))
            .orderBy(desc(calibrations.createdAt), desc(calibrations.id))
            .limit(1);
          threshold = cal?.threshold ?? null;
        }
        const inserted = await tx
          .insert(modelVersions)
          .values({
            modelName,
            sourceRunId: input.sourceRunId,
            datasetVersionId: input.datasetVersionId ?? null,
            artifacts: input.artifacts,
            metrics: input.metrics ?? {},
            calibratedThreshold: threshold,
          })
          .onConflictDoNothing({ target: modelVersions.sourceRunId })
          .returning();
        const version = inserted[0];
        if (!version) {
          // A concurrent register of the same run won between our check and insert.
          const [winner] = await tx
            .select()
            .from(modelVersions)
            .where(eq(modelVersions.sourceRunId, input.sourceRunId));
          if (!winner) throw new NotFoundError('model version of run', input.sourceRunId);
          return { version: winner, created: false };
        }
        await tx
          .update(calibrations)
          .set({ modelVersionId: version.id })
          .where(and(eq(calibrations.runId, input.sourceRunId), isNull(calibrations.modelVersionId)));
        if (input.alias) await moveAliasIn(tx, modelName, input.alias.name, version.id, input.alias);
        return { version, created: true };
      }),
    );
  }

  async get(id: number): Promise<ModelVersionRow | undefined> {
    requireId('modelVersionId', id);
    return this.retry(
      async () => (await this.db.select().from(modelVersions).where(eq(modelVersions.id, id)))[0],
    );
  }

  async getBySourceRun(runId: string): Promise<ModelVersionRow | undefined> {
    requireUuid('runId', runId);
    return this.retry(
      async () => (await this.db.select().from(modelVersions).where(eq(modelVersions.sourceRunId, runId)))[0],
    );
  }

  /** Newest first, each with the aliases pointing at it. */
  async list(filter: { modelName?: string; limit?: number } = {}): Promise<ModelVersionWithAliases[]> {
    return this.retry(async () => {
      const versions = await this.db
        .select()
        .from(modelVersions)
        .where(filter.modelName !== undefined ? eq(modelVersions.modelName, filter.modelName) : undefined)
        .orderBy(desc(modelVersions.id))
        .limit(filter.limit ?? 50);
      if (versions.length === 0) return [];
      const aliases = await this.db
        .select()
        .from(modelAliases)
        .where(
          inArray(
            modelAliases.modelVersionId,
            versions.map((v) => v.id),
          ),
        );
      return versions.map((v) => ({
        ...v,
        aliases: aliases
          .filter((a) => a.modelVersionId === v.id)
          .map((a) => a.alias)
          .sort(),
      }));
    });
  }

  async show(id: number): Promise<ModelDetails | undefined> {
    requireId('modelVersionId', id);
    return this.retry(async () => {
      const [version] = await this.db.select().from(modelVersions).where(eq(modelVersions.id, id));
      if (!version) return undefined;
      const [aliases, cals, evals, events] = await Promise.all([
        this.db.select().from(modelAliases).where(eq(modelAliases.modelVersionId, id)),
        this.db
          .select()
          .from(calibrations)
          .where(eq(calibrations.modelVersionId, id))
          .orderBy(calibrations.id),
        this.db.select().from(evaluations).where(eq(evaluations.modelVersionId, id)).orderBy(evaluations.id),
        this.db
          .select()
          .from(modelAliasEvents)
          .where(sql`${modelAliasEvents.fromVersionId} = ${id} OR ${modelAliasEvents.toVersionId} = ${id}`)
          .orderBy(modelAliasEvents.id),
      ]);
      return {
        version,
        aliases: aliases.map((a) => a.alias).sort(),
        calibrations: cals,
        evaluations: evals,
        aliasEvents: events,
      };
    });
  }

  /** Point `alias` of the version's model at the version; one transaction with its audit event. */
  async setAlias(modelVersionId: number, alias: string, change: AliasChange): Promise<AliasMove> {
    requireId('modelVersionId', modelVersionId);
    requireAlias(alias);
    requireText('actor', change.actor);
    return this.retry(() =>
      this.db.transaction(async (tx) => {
        const [version] = await tx.select().from(modelVersions).where(eq(modelVersions.id, modelVersionId));
        if (!version) throw new NotFoundError('model version', modelVersionId);
        return moveAliasIn(tx, version.modelName, alias, version.id, change);
      }),
    );
  }

  /** Make the version the champion of its model (an alias move with audit). */
  async promote(modelVersionId: number, change: AliasChange & { alias?: string }): Promise<AliasMove> {
    return this.setAlias(modelVersionId, change.alias ?? 'champion', change);
  }

  async removeAlias(modelName: string, alias: string, change: AliasChange): Promise<AliasMove> {
    requireAlias(alias);
    requireText('actor', change.actor);
    return this.retry(() => this.db.transaction((tx) => moveAliasIn(tx, modelName, alias, null, change)));
  }

  async byAlias(alias: string, modelName = DEFAULT_MODEL_NAME): Promise<ModelVersionRow | undefined> {
    return this.retry(async () => {
      const rows = await this.db
        .select({ version: modelVersions })
        .from(modelAliases)
        .innerJoin(modelVersions, eq(modelVersions.id, modelAliases.modelVersionId))
        .where(and(eq(modelAliases.modelName, modelName), eq(modelAliases.alias, alias)));
      return rows[0]?.version;
    });
  }

  async champion(modelName = DEFAULT_MODEL_NAME): Promise<ModelVersionRow | undefined> {
    return this.byAlias('champion', modelName);
  }

  /** Audit trail, oldest first. */
  async aliasHistory(filter: { modelName?: string; alias?: string } = {}): Promise<ModelAliasEventRow[]> {
    const conditions = [
      filter.modelName !== undefined ? eq(modelAliasEvents.modelName, filter.modelName) : undefined,
      filter.alias !== undefined ? eq(modelAliasEvents.alias, filter.alias) : undefined,
    ].filter((c) => c !== undefined);
    return this.retry(() =>
      this.db
        .select()
        .from(modelAliasEvents)
        .where(conditions.length ? and(...conditions) : undefined)
        .orderBy(modelAliasEvents.id),
    );
  }

  /** Set the routing threshold; with a calibration id, that calibration is linked in the same transaction. */
  async setThreshold(
    modelVersionId: number,
    threshold: number,
    opts: { calibrationId?: number } = {},
  ): Promise<ModelVersionRow> {
    requireId('modelVersionId', modelVersionId);
    requireFinite('threshold', threshold);
    if (threshold < 0) throw badInput('threshold', 'must be >= 0 (it is an entropy)', threshold);
    return this.retry(() =>
      this.db.transaction(async (tx) => {
        const [row] = await tx
          .update(modelVersions)
          .set({ calibratedThreshold: threshold })
          .where(eq(modelVersions.id, modelVersionId))
          .returning();
        if (!row) throw new NotFoundError('model version', modelVersionId);
        if (opts.calibrationId !== undefined) {
          const linked = await tx
            .update(calibrations)
            .set({ modelVersionId })
            .where(eq(calibrations.id, opts.calibrationId))
            .returning({ id: calibrations.id });
          if (linked.length === 0) throw new NotFoundError('calibration', opts.calibrationId);
        }
        return row;
      }),
    );
  }
}
