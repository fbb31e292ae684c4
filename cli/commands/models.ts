import { ModelRepository } from '../../db/repositories/models.js';
import { CorellaError } from '../../ml/errors.js';
import { EXIT, UsageError, type ArgsOf } from '../args.js';
import { withDatabase } from '../database.js';
import { makeOutput, table } from '../output.js';
import type { modelsSpec } from '../specs/models.js';

function versionId(raw: string | undefined): number {
  const id = Number(raw);
  if (!raw || !Number.isSafeInteger(id) || id <= 0)
    throw new UsageError('give a model version id (a positive integer)');
  return id;
}

/** `corella models list|show|promote`: the registry; promotions by hand are audited like automatic ones. */
export async function models({ values, positionals }: ArgsOf<typeof modelsSpec>): Promise<number> {
  const out = makeOutput(Boolean(values.json));
  const [action, id] = positionals;
  switch (action) {
    case 'list': {
      const rows = await withDatabase((db) => new ModelRepository(db).list({ limit: Number(values.limit) }));
      out.result(rows, () =>
        rows.length === 0
          ? 'no model versions yet'
          : table(
              rows.map((v) => [
                v.id,
                v.aliases.join(',') || '-',
                v.calibratedThreshold,
                typeof v.metrics['calibration.hybrid.auc'] === 'number'
                  ? (v.metrics['calibration.hybrid.auc'] as number)
                  : undefined,
                v.datasetVersionId?.slice(0, 12),
                v.createdAt.toISOString(),
              ]),
              ['version', 'aliases', 'threshold', 'hybrid AUC (valid)', 'dataset', 'created'],
            ),
      );
      return EXIT.ok;
    }
    case 'show': {
      const details = await withDatabase((db) => new ModelRepository(db).show(versionId(id)));
      if (!details) throw new CorellaError('BAD_CONFIG', `no model version ${id}`);
      out.result(details, () =>
        [
          `model version ${details.version.id} (${details.version.modelName})  aliases: ${details.aliases.join(', ') || '-'}`,
          `source run ${details.version.sourceRunId}  dataset ${details.version.datasetVersionId ?? '-'}`,
          `threshold ${details.version.calibratedThreshold ?? '-'}  calibrations ${details.calibrations.length}  evaluations ${details.evaluations.length}`,
          `artifacts: ${JSON.stringify(details.version.artifacts)}`,
          '',
          table(
            Object.entries(details.version.metrics)
              .filter(([, v]) => typeof v === 'number')
              .sort()
              .map(([k, v]) => [k, v as number]),
            ['metric', 'value'],
          ),
          '',
          'alias history:',
          table(
            details.aliasEvents.map((e) => [
              e.at.toISOString(),
              e.alias,
              e.fromVersionId,
              e.toVersionId,
              e.actor,
              e.reason,
            ]),
            ['at', 'alias', 'from', 'to', 'actor', 'reason'],
          ),
        ].join('\n'),
      );
      return EXIT.ok;
    }
    case 'promote': {
      const move = await withDatabase((db) =>
        new ModelRepository(db).promote(versionId(id), {
          alias: values.alias,
          actor: values.actor ?? `cli:${process.env.USER ?? 'unknown'}`,
          reason: values.reason,
        }),
      );
      out.result(move, () =>
        move.changed
          ? `${move.alias}: version ${move.fromVersionId ?? '-'} → ${move.toVersionId}`
          : `${move.alias} already points at version ${move.toVersionId}`,
      );
      return EXIT.ok;
    }
    default:
      throw new UsageError('models list|show ID|promote ID [--alias champion] [--reason TEXT]');
  }
}
