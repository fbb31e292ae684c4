import { resolve } from 'node:path';
import { writeRunReport } from '../../activities/report.js';
import { openArtifactStore } from '../../ml/artifacts/open-store.js';
import { EXIT, UsageError, type ArgsOf } from '../args.js';
import { withDatabase } from '../database.js';
import { makeOutput } from '../output.js';
import { corellaHome } from '../services/paths.js';
import type { reportSpec } from '../specs/report.js';

/** `corella report RUN [--out FILE.html] [--bootstrap N]`: renders a run's report again (or for an older run). */
export async function report({ values, positionals }: ArgsOf<typeof reportSpec>): Promise<number> {
  const out = makeOutput(Boolean(values.json));
  const [id] = positionals;
  if (!id || positionals.length > 1) throw new UsageError('report RUN_ID|WORKFLOW_ID [--out FILE.html]');
  const rounds = values.bootstrap === undefined ? undefined : Number(values.bootstrap);
  if (rounds !== undefined && (!Number.isInteger(rounds) || rounds < 1)) {
    throw new UsageError('--bootstrap must be a positive integer');
  }
  const home = corellaHome();
  const result = await withDatabase((db) =>
    writeRunReport({ db, store: openArtifactStore(home), home }, id, {
      out: values.out ? resolve(values.out) : undefined,
      bootstrapRounds: rounds,
    }),
  );
  out.result(
    result,
    () =>
      `report: ${result.path}\nartifact ${result.reportArtifact} (${result.bytes} bytes; charts: ${result.charts.join(', ') || 'none'})`,
  );
  return EXIT.ok;
}
