import type { PipelineConfig } from '../activities/types.js';
import { configSummary, loadPipelineConfig, retrainWorkflowId } from './config.js';
import { resolveDataSource, type ResolvedData } from './data-source.js';
import { resolveModel, slowModelHint } from './model-source.js';
import { isRemoteStore, openArtifactStore } from '../ml/artifacts/open-store.js';

export interface PreparedRun {
  data: ResolvedData;
  config: PipelineConfig;
}

/** Resolves data, config and model (whose path and sha256 become part of the config, hence the run id). */
export async function prepareRun(
  values: {
    'data-dir'?: string;
    source?: string;
    name?: string;
    config?: string;
    model?: string;
    'no-download'?: boolean;
  },
  home: string,
  log: (line: string) => void,
): Promise<PreparedRun> {
  // The config first: a bad one must fail before data is downloaded or generated.
  const config = await loadPipelineConfig(values.config ?? 'default');
  const data = await resolveDataSource({
    dataDir: values['data-dir'],
    source: values.source,
    name: values.name,
    home,
    allowSynthetic: true,
    download: !values['no-download'],
    log,
  });
  const model = await resolveModel({ model: values.model, home, log });
  // "auto" may well be the CPU (it is on these machines), so only a named GPU backend silences the hint.
  const gpu = config.llm?.gpu === 'cuda' || config.llm?.gpu === 'vulkan';
  const hint = await slowModelHint(model, gpu);
  if (hint) log(hint);
  config.llm = { ...(config.llm ?? {}), model: model.path, modelSha256: model.sha256 };
  // Workers on other machines read the model from the object store by its sha256 (activities/llm-model-file.ts).
  const store = openArtifactStore(home);
  if (isRemoteStore(store) && model.sha256 && !(await store.has(model.sha256))) {
    log(`uploading the LLM ${model.path} to ${store.uriFor(model.sha256)}`);
    await store.putFile(model.path);
  }
  return { data, config };
}

/**
 * The Temporal UI's summary and details of a retrain, fixed at start (Temporal markdown): what it trains on,
 * with which config, who started it. The live part is the workflow's current details.
 */
export function workflowMetadata(
  data: ResolvedData,
  config: PipelineConfig,
  trigger: string,
): { staticSummary: string; staticDetails: string } {
  const { hash } = retrainWorkflowId(data.spec, config);
  const dataset = data.spec.name ?? data.spec.source;
  const llm = (config.llm ?? {}) as Record<string, unknown>;
  const c = configSummary(config);
  const model = typeof llm.model === 'string' ? llm.model.split('/').pop() : undefined;
  return {
    staticSummary: `retrain ${dataset}${data.origin === 'synthetic' ? ' (synthetic data)' : ''} · config ${hash.slice(0, 12)} · ${trigger}`,
    staticDetails: [
      `**Dataset:** ${dataset} (source ${data.spec.source}, found by ${data.origin})${data.spec.dir ? `, \`${data.spec.dir}\`` : ''}`,
      `**Config hash:** \`${hash}\``,
      `**Trigger:** ${trigger}`,
      `**CRM:** ${String(c.crm)}`,
      `**LLM:** ${model ?? '-'}${typeof llm.modelSha256 === 'string' ? ` (sha256 \`${llm.modelSha256.slice(0, 16)}…\`)` : ''}`,
      `**Joint:** ${String(c.joint)}`,
      `**Routing:** ${JSON.stringify(config.calibration ?? {})}`,
    ].join('  \n'),
  };
}
