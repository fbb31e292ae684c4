import { ArtifactRepository } from '../../db/repositories/artifacts.js';
import { FileArtifactStore } from '../../ml/artifacts/store.js';
import { openArtifactStore } from '../../ml/artifacts/open-store.js';
import { CorellaError } from '../../ml/errors.js';
import { planGc, sweep } from '../../ml/artifacts/gc.js';
import { EXIT, parseDuration, type ArgsOf } from '../args.js';
import { withDatabase } from '../database.js';
import { makeOutput, table } from '../output.js';
import { corellaHome } from '../services/paths.js';
import type { gcSpec } from '../specs/gc.js';

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/**
 * `corella gc [--dry-run] [--older-than 7d]`: removes blobs of the artifact store that no row of the
 * database and no named pointer references. Young blobs (and anything written since the oldest running run
 * started) are kept, because a running workflow holds ids of blobs it wrote in its history only.
 */
export async function gc({ values }: ArgsOf<typeof gcSpec>): Promise<number> {
  const out = makeOutput(Boolean(values.json));
  const olderThanMs = parseDuration(values['older-than']);
  const dryRun = Boolean(values['dry-run']);
  const opened = openArtifactStore(corellaHome());
  if (!(opened instanceof FileArtifactStore)) {
    // Listing and deleting a bucket's blobs safely is a lifecycle rule's job (docs/distributed.md).
    throw new CorellaError(
      'BAD_CONFIG',
      `corella gc cleans a local store; CORELLA_ARTIFACTS names ${opened.uriFor('0'.repeat(64)).replace(/blobs\/0+$/, '')}: use a bucket lifecycle rule for its blobs/`,
      { details: { field: 'CORELLA_ARTIFACTS' } },
    );
  }
  const store = opened;

  // References are read first and the store listed after: a blob written in between is young, so kept.
  const { referenced, oldestRunningStart } = await withDatabase(async (db) => {
    const repo = new ArtifactRepository(db);
    return {
      referenced: await repo.referencedSha256s(),
      oldestRunningStart: await repo.oldestRunningStart(),
    };
  });
  const plan = await planGc(store, { referenced, olderThanMs, oldestRunningStart });
  const swept = dryRun ? undefined : await sweep(plan);
  const removed = swept ? swept.removed : plan.remove;
  const bytes = removed.reduce((s, b) => s + b.bytes, 0);
  const result = {
    dryRun,
    store: store.root,
    cutoff: plan.cutoff.toISOString(),
    oldestRunningStart: oldestRunningStart?.toISOString() ?? null,
    [dryRun ? 'wouldRemove' : 'removed']: removed.map((b) => ({
      sha256: b.sha256,
      bytes: b.bytes,
      modified: new Date(b.mtimeMs).toISOString(),
    })),
    bytes,
    kept: { ...plan.kept, spared: swept?.spared.length ?? 0 },
    staleTmpFiles: swept ? swept.tmpRemoved : plan.staleTmp.length,
  };
  out.result(result, () => {
    const verb = dryRun ? 'would remove' : 'removed';
    const lines = [
      `${verb} ${removed.length} unreferenced blob${removed.length === 1 ? '' : 's'} (${mb(bytes)}) from ${store.root}`,
      `kept ${plan.kept.referenced} referenced, ${plan.kept.young} modified since ${plan.cutoff.toISOString()}` +
        (oldestRunningStart ? ` (a run has been running since ${oldestRunningStart.toISOString()})` : ''),
    ];
    if (removed.length > 0)
      lines.push(
        '',
        table(
          removed.map((b) => [b.sha256, b.bytes, new Date(b.mtimeMs).toISOString()]),
          ['sha256', 'bytes', 'modified'],
        ),
      );
    return lines.join('\n');
  });
  return EXIT.ok;
}
