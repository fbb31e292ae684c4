import { eq } from 'drizzle-orm';
import { CorellaError } from '../../ml/errors.js';
import type { Executor } from '../connection.js';
import { artifacts, type ArtifactRow } from '../schema/index.js';
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
}
