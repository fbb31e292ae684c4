import { ArtifactRepository } from '../../db/repositories/artifacts.js';
import { FileArtifactStore } from '../../ml/artifacts/store.js';
import { planGc, sweep } from '../../ml/artifacts/gc.js';
import { EXIT, parse, parseDuration, UsageError } from '../args.js';
import { makeOutput, table } from '../output.js';
import { artifactsDir, corellaHome } from '../services/paths.js';
import { withDatabase } from './runs.js';

const DEFAULT_OLDER_THAN = '7d';

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/**
 * `corella gc [--dry-run] [--older-than 7d]`: removes blobs of the artifact store that no row of the
 * database and no named pointer references. Young blobs (and anything written since the oldest running run
 * started) are kept, because a running workflow holds ids of blobs it wrote in its history only.
 */
export async function gc(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {
    'dry-run': { type: 'boolean' },
    'older-than': { type: 'string' },
  });
  if (positionals.length > 0) throw new UsageError(`gc takes no arguments (got ${positionals.join(' ')})`);
  const out = makeOutput(Boolean(values.json));
  const olderThanMs = parseDuration(values['older-than'] ?? DEFAULT_OLDER_THAN);
  const dryRun = Boolean(values['dry-run']);
  const store = new FileArtifactStore(artifactsDir(corellaHome()));

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
