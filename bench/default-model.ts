import { join, resolve } from 'node:path';
import { cachedModelFile } from '../cli/model-source.js';

/**
 * The LLM a benchmark runs without `--model`: the one `corella up` would take (CORELLA_LLM_MODEL, else the
 * cached model under $CORELLA_HOME/models, default .corella/models), so a benchmark measures the model the
 * pipeline runs. With nothing cached it names the file scripts/fetch-model writes, and the benchmark's
 * model loader says it is missing.
 */
export function defaultBenchModel(): string {
  const home = resolve(process.env.CORELLA_HOME ?? '.corella');
  return (
    process.env.CORELLA_LLM_MODEL ??
    cachedModelFile(home) ??
    join(home, 'models', 'SmolLM2-135M-Instruct.Q8_0.gguf')
  );
}
