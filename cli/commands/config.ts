import { UsageError, EXIT, type ArgsOf } from '../args.js';
import type { configSpec } from '../specs/config.js';
import { configPath, loadPipelineConfig } from '../config.js';
import { resolvePipelineConfig } from '../../schema/pipeline.js';
import { pipelineJsonSchema } from '../../schema/json-schema.js';

/**
 * `corella config show [--config NAME|FILE]`: the config validated and fully resolved, every default filled
 * in, as the activities will read it (llm.model and modelSha256 are set by `up`/`retrain` from --model).
 * `corella config schema`: the JSON Schema of config files (config/schema.json is a copy of it).
 */
export async function config({ values, positionals }: ArgsOf<typeof configSpec>): Promise<number> {
  const [sub, ...extra] = positionals;
  if (extra.length) throw new UsageError(`config ${sub}: unexpected argument ${JSON.stringify(extra[0])}`);
  if (sub === 'show') {
    const name = values.config ?? 'default';
    const resolved = resolvePipelineConfig(await loadPipelineConfig(name), configPath(name));
    // The resolved config is JSON either way: it is what a config file would hold.
    process.stdout.write(`${JSON.stringify(resolved, null, 2)}\n`);
    return EXIT.ok;
  }
  if (sub === 'schema') {
    if (values.config !== undefined) throw new UsageError('config schema takes no --config');
    process.stdout.write(`${JSON.stringify(pipelineJsonSchema(), null, 2)}\n`);
    return EXIT.ok;
  }
  throw new UsageError(
    sub === undefined
      ? 'config: show or schema?'
      : `config: unknown subcommand ${JSON.stringify(sub)} (show or schema)`,
  );
}
