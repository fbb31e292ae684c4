import { open, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import {
  getLlama,
  LlamaLogLevel,
  resolveModelFile,
  type Llama,
  type LlamaModel,
  type Token,
} from 'node-llama-cpp';
import { sha256File } from '../artifacts/store.js';
import { CorellaError } from '../errors.js';
import type { LlmGpu, ResolvedLlmConfig } from './config.js';
import { checkLoraForBase } from './tf/lora-check.js';

/** A loaded GGUF model plus what identifies it and the two answer tokens. */
export interface LoadedLlm {
  llama: Llama;
  model: LlamaModel;
  modelPath: string;
  /** sha256 of the model file: its identity in runs, caches and model versions. */
  modelSha256: string;
  loraSha256?: string;
  yesToken: Token;
  noToken: Token;
  hiddenDim: number;
  /** True when llama.cpp pools embeddings (mean/cls/...): the hidden state then needs the whole prompt. */
  pooledEmbeddings: boolean;
  dispose(): Promise<void>;
}

// node-llama-cpp's backend detection and library load take seconds; one instance per GPU choice is reused.
const llamaInstances = new Map<string, Promise<Llama>>();

export async function llamaFor(gpu: LlmGpu): Promise<Llama> {
  // Never compile or download llama.cpp at run time: only the prebuilt binaries from npm are used.
  process.env.NODE_LLAMA_CPP_SKIP_DOWNLOAD ??= 'true';
  const key = String(gpu);
  let p = llamaInstances.get(key);
  if (!p) {
    p = getLlama({ build: 'never', gpu, logLevel: LlamaLogLevel.error, progressLogs: false }).catch(
      (e: unknown) => {
        llamaInstances.delete(key);
        if (gpu !== false) {
          throw new CorellaError(
            'GPU_UNAVAILABLE',
            `GPU backend ${JSON.stringify(gpu)} was requested but is not available on this machine ` +
              `(${e instanceof Error ? e.message : String(e)}); set gpu: false to run on the CPU`,
            { details: { gpu }, cause: e },
          );
        }
        throw e;
      },
    );
    llamaInstances.set(key, p);
  }
  const llama = await p;
  if (gpu === 'cuda' || gpu === 'vulkan') {
    const devices = await llama.getGpuDeviceNames().catch(() => [] as string[]);
    if (llama.gpu !== gpu || devices.length === 0) {
      throw new CorellaError(
        'GPU_UNAVAILABLE',
        `GPU backend ${gpu} was requested but no ${gpu} device was found`,
        {
          details: { gpu, loaded: llama.gpu },
        },
      );
    }
  }
  return llama;
}

/** Resolves an `hf:` URI (or a plain path) to a local file. */
export async function resolveModelPath(model: string, cacheDir?: string): Promise<string> {
  if (!/^(hf:|https?:)/.test(model)) return resolve(model);
  try {
    return await resolveModelFile(model, { directory: cacheDir ?? resolve('.corella/models'), cli: false });
  } catch (e) {
    throw new CorellaError(
      'SERVICE_UNAVAILABLE',
      `cannot resolve model ${model}: ${e instanceof Error ? e.message : String(e)}`,
      {
        retryable: true,
        cause: e,
        details: { model },
      },
    );
  }
}

/** Checks that `path` exists and starts with the GGUF magic; `what` names it in errors. */
export async function assertGgufFile(path: string, what: string): Promise<void> {
  let isFile = false;
  try {
    isFile = (await stat(path)).isFile();
  } catch {
    throw new CorellaError('BAD_MODEL_FILE', `${what} ${path} does not exist`, { details: { path } });
  }
  if (!isFile)
    throw new CorellaError('BAD_MODEL_FILE', `${what} ${path} is not a file`, { details: { path } });
  const fh = await open(path, 'r');
  try {
    const { bytesRead, buffer } = await fh.read(Buffer.alloc(4), 0, 4, 0);
    if (bytesRead < 4 || buffer.toString('latin1') !== 'GGUF') {
      throw new CorellaError('BAD_MODEL_FILE', `${what} ${path} is not a GGUF file (bad magic)`, {
        details: { path },
      });
    }
  } finally {
    await fh.close();
  }
}

function singleToken(model: LlamaModel, word: string, path: string): Token {
  const toks = model.tokenize(word, false, 'trimLeadingSpace');
  if (toks.length !== 1 || model.detokenize(toks) !== word) {
    throw new CorellaError(
      'BAD_MODEL_FILE',
      `model ${path}: its vocabulary has no single token for the answer word ${JSON.stringify(word)} ` +
        `(tokenizes to ${toks.length} tokens)`,
      { details: { path, word, tokens: toks.length } },
    );
  }
  return toks[0];
}

export async function loadLlm(cfg: ResolvedLlmConfig): Promise<LoadedLlm> {
  const modelPath = await resolveModelPath(cfg.model, cfg.modelCacheDir);
  await assertGgufFile(modelPath, 'model file');
  if (cfg.lora) {
    await assertGgufFile(resolve(cfg.lora.path), 'LoRA adapter');
    // Shapes against the base's tensor infos first: llama.cpp reports a mismatch only as a log line.
    await checkLoraForBase(modelPath, resolve(cfg.lora.path));
  }
  const llama = await llamaFor(cfg.gpu);
  let model: LlamaModel;
  try {
    model = await llama.loadModel({
      modelPath,
      gpuLayers: cfg.gpu === false ? 0 : cfg.gpuLayers,
      // Inherited by every context, including the embedding context (which takes no such option).
      defaultContextFlashAttention: cfg.flashAttention,
    });
  } catch (e) {
    throw new CorellaError(
      'BAD_MODEL_FILE',
      `model file ${modelPath} could not be loaded: ${e instanceof Error ? e.message : String(e)}`,
      { details: { path: modelPath }, cause: e },
    );
  }
  try {
    const yesToken = singleToken(model, cfg.answers.yes, modelPath);
    const noToken = singleToken(model, cfg.answers.no, modelPath);
    if (yesToken === noToken) {
      throw new CorellaError(
        'BAD_MODEL_FILE',
        `model ${modelPath}: both answer words map to token ${yesToken}`,
      );
    }
    const pooling = model.fileInfo.architectureMetadata?.pooling_type as unknown;
    const [modelSha256, loraSha256] = await Promise.all([
      sha256File(modelPath),
      cfg.lora ? sha256File(resolve(cfg.lora.path)) : Promise.resolve(undefined),
    ]);
    return {
      llama,
      model,
      modelPath,
      modelSha256,
      loraSha256,
      yesToken,
      noToken,
      hiddenDim: model.embeddingVectorSize,
      pooledEmbeddings: typeof pooling === 'number' && pooling > 0,
      dispose: () => model.dispose(),
    };
  } catch (e) {
    await model.dispose();
    throw e;
  }
}
