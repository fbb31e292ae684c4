import { eq, sql } from 'drizzle-orm';
import { CorellaError } from '../../ml/errors.js';
import type { Executor } from '../connection.js';
import { artifacts, runs, type ArtifactRow } from '../schema/index.js';
import { Repository } from './base.js';
import { requireSha256, requireText, requireUuid } from './validate.js';

/** What the ArtifactStore returns (ArtifactRef) plus what the registry wants to know about it. */
export interface ArtifactInput {
  sha256: string;
  uri: string;
  bytes: number;
  mediaType?: string;
  producingRunId?: string | null;
}

function validateArtifact(input: ArtifactInput, field = 'artifact'): void {
  requireSha256(`${field}.sha256`, input.sha256);
  requireText(`${field}.uri`, input.uri);
  if (!Number.isSafeInteger(input.bytes) || input.bytes < 0) {
    throw new CorellaError(
      'BAD_CONFIG',
      `${field}.bytes: must be a non-negative integer (got ${input.bytes})`,
    );
  }
  if (input.producingRunId != null) requireUuid(`${field}.producingRunId`, input.producingRunId);
}

/**
 * Insert-if-absent inside the caller's transaction. The sha256 is the identity, so a second record of the
 * same content is a no-op; a different size for the same hash means a corrupt or lying writer.
 */
export async function recordArtifactIn(
  tx: Executor,
  input: ArtifactInput,
  field = 'artifact',
): Promise<ArtifactRow> {
  validateArtifact(input, field);
  const inserted = await tx
    .insert(artifacts)
    .values({
      sha256: input.sha256,
      uri: input.uri,
      bytes: input.bytes,
      mediaType: input.mediaType ?? 'application/octet-stream',
      producingRunId: input.producingRunId ?? null,
    })
    .onConflictDoNothing({ target: artifacts.sha256 })
    .returning();
  if (inserted[0]) return inserted[0];
  const [existing] = await tx.select().from(artifacts).where(eq(artifacts.sha256, input.sha256));
  if (!existing)
    throw new CorellaError('ARTIFACT_NOT_FOUND', `artifact ${input.sha256} vanished while recording it`);
  if (existing.bytes !== input.bytes) {
    throw new CorellaError(
      'ARTIFACT_CORRUPT',
      `artifact ${input.sha256} is recorded with ${existing.bytes} bytes but was offered with ${input.bytes}`,
      { details: { sha256: input.sha256, recorded: existing.bytes, offered: input.bytes } },
    );
  }
  return existing;
}

export class ArtifactRepository extends Repository {
  /** Idempotent by sha256. */
  async record(input: ArtifactInput): Promise<ArtifactRow> {
    return this.retry(() => recordArtifactIn(this.db, input));
  }

  async get(sha256: string): Promise<ArtifactRow | undefined> {
    requireSha256('sha256', sha256);
    return this.retry(
      async () => (await this.db.select().from(artifacts).where(eq(artifacts.sha256, sha256)))[0],
    );
  }

  async listByRun(runId: string): Promise<ArtifactRow[]> {
    requireUuid('runId', runId);
    return this.retry(() =>
      this.db
        .select()
        .from(artifacts)
        .where(eq(artifacts.producingRunId, runId))
        .orderBy(artifacts.createdAt),
    );
  }

  /**
   * Every sha256 the database mentions anywhere: each text, varchar and json(b) column of every table in
   * the schema is scanned for 64-hex-digit strings. Deliberately generic rather than a list of known
   * columns (model_versions.artifacts, dataset_versions.*, runs.summary.reportArtifact, calibrations,
   * evaluations, served requests, the artifacts registry itself, ...): a table or a jsonb field added later
   * that holds a blob id is then protected from gc without anyone remembering to tell it. A false positive
   * (a 64-hex string that is no blob) only keeps a blob alive.
   */
  async referencedSha256s(): Promise<Set<string>> {
    const columns = await this.retry(async () => {
      const r = await this.db.execute<{ table_name: string; column_name: string }>(sql`
        select c.table_name, c.column_name
        from information_schema.columns c
        join information_schema.tables t
          on t.table_schema = c.table_schema and t.table_name = c.table_name and t.table_type = 'BASE TABLE'
        where c.table_schema = current_schema()
          and c.data_type in ('text', 'character varying', 'json', 'jsonb')
        order by c.table_name, c.column_name`);
      return r.rows;
    });
    const found = new Set<string>();
    for (const { table_name: table, column_name: column } of columns) {
      const col = sql.identifier(column);
      const rows = await this.retry(async () => {
        const r = await this.db.execute<{ sha: string }>(sql`
          select distinct m[1] as sha
          from ${sql.identifier(table)} t, regexp_matches(t.${col}::text, '([0-9a-f]{64})', 'g') as m
          where t.${col} is not null and length(t.${col}::text) >= 64`);
        return r.rows;
      });
      for (const { sha } of rows) found.add(sha);
    }
    return found;
  }

  /**
   * When the oldest run still `running` started, or undefined when none is. Such a run may write blobs
   * (checkpoints, intermediate results) that nothing references yet, so gc keeps every blob written since.
   */
  async oldestRunningStart(): Promise<Date | undefined> {
    return this.retry(async () => {
      const [row] = await this.db
        .select({ at: sql<string | null>`min(${runs.startedAt})` })
        .from(runs)
        .where(eq(runs.status, 'running'));
      return row?.at ? new Date(row.at) : undefined;
    });
  }
}
