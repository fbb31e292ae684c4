import { access, constants } from 'node:fs/promises';
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import pg from 'pg';
import { NAMESPACE_DEFAULT } from '../../workflows/search-attributes.js';
import { EXIT, type ArgsOf } from '../args.js';
import { resolveTemporalAddress } from '../client.js';
import { cachedModelFile, modelWeightTypes, slowModelAdvice } from '../model-source.js';
import { makeOutput, table } from '../output.js';
import { corellaHome } from '../services/paths.js';
import { findTemporalCli } from '../services/temporal-cli.js';
import type { doctorSpec } from '../specs/doctor.js';

/** `fail` makes doctor exit non-zero; `warn` is something to know (e.g. no native tfjs) that still works. */
type Status = 'ok' | 'warn' | 'fail';

interface Check {
  name: string;
  status: Status;
  /** `status !== 'fail'`, for scripts that only want a yes or no. */
  ok: boolean;
  detail: string;
  /** Structured facts for `--json` (GPU devices, VRAM, backend reasons). */
  data?: Record<string, unknown>;
}

function result(name: string, status: Status, detail: string, data?: Record<string, unknown>): Check {
  return { name, status, ok: status !== 'fail', detail, ...(data ? { data } : {}) };
}

/** pg and grpc report a refused dual-stack connect as an AggregateError with an empty message. */
function errorText(e: unknown): string {
  if (e instanceof AggregateError && e.errors.length > 0) {
    return [...new Set(e.errors.map((x: unknown) => errorText(x)))].join('; ');
  }
  if (e instanceof Error) return e.message.split('\n')[0] || e.name;
  return String(e);
}

/** Never print a password from DATABASE_URL. */
function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable URL)';
  }
}

async function pgVersion(url: string): Promise<string> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3_000 });
  try {
    await client.connect();
    const r = await client.query<{ v: string }>('select version() as v');
    return r.rows[0].v.split(' ').slice(0, 2).join(' ');
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Connects: a configured server that does not answer is a failure, not a line about binaries. */
async function postgresCheck(home: string): Promise<Check> {
  const external = process.env.DATABASE_URL?.trim();
  if (external) {
    try {
      return result('postgres', 'ok', `DATABASE_URL reachable: ${await pgVersion(external)}`);
    } catch (e) {
      return result('postgres', 'fail', `DATABASE_URL ${redact(external)} unreachable: ${errorText(e)}`);
    }
  }
  const { resolvePostgresBinaries, runningEmbeddedUrl } = await import('../services/embedded-postgres.js');
  const dataDir = join(home, 'pg');
  let source: string;
  try {
    source = (await resolvePostgresBinaries()).source;
  } catch (e) {
    return result('postgres', 'fail', errorText(e));
  }
  const url = await runningEmbeddedUrl(dataDir);
  if (url === undefined) {
    return result(
      'postgres',
      'ok',
      `embedded, not running (corella up starts it); binaries: ${source}; data ${dataDir}`,
    );
  }
  try {
    return result(
      'postgres',
      'ok',
      `embedded server reachable: ${await pgVersion(url)}; binaries: ${source}`,
    );
  } catch (e) {
    return result('postgres', 'fail', `embedded server in ${dataDir} unreachable: ${errorText(e)}`);
  }
}

/** Connects and asks for the namespace: workers need both, and a missing namespace fails them later. */
async function temporalCheck(home: string): Promise<Check> {
  const namespace = process.env.TEMPORAL_NAMESPACE ?? NAMESPACE_DEFAULT;
  let address: string;
  try {
    address = (await resolveTemporalAddress(home)).address;
  } catch {
    try {
      const cli = await findTemporalCli({ install: false });
      return result('temporal', 'ok', `no server running (corella up starts the dev server ${cli})`);
    } catch (e) {
      return result('temporal', 'fail', `no server running and no dev server binary: ${errorText(e)}`);
    }
  }
  let connection: Connection;
  try {
    connection = await Connection.connect({ address, connectTimeout: 3_000 });
  } catch (e) {
    return result('temporal', 'fail', `${address} unreachable: ${errorText(e)}`);
  }
  try {
    await connection.workflowService.describeNamespace({ namespace });
    return result('temporal', 'ok', `reachable at ${address}, namespace ${namespace}`);
  } catch (e) {
    return result('temporal', 'fail', `${address} reachable but namespace ${namespace}: ${errorText(e)}`);
  } finally {
    await connection.close();
  }
}

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

/** What the gpu workers' LLM will run on: the same getLlama choice as ml/llm/model.ts with gpu "auto". */
async function llamaCheck(): Promise<Check> {
  process.env.NODE_LLAMA_CPP_SKIP_DOWNLOAD ??= 'true';
  const { getLlama, getLlamaGpuTypes, LlamaLogLevel } = await import('node-llama-cpp');
  // allValid: GPU types llama.cpp builds exist for on this OS and CPU; supported: those whose drivers and
  // libraries this machine has. "cuda, vulkan / none" is the usual answer of a CPU-only Linux host.
  const platformGpus = (await getLlamaGpuTypes('allValid')).filter((t) => t !== false);
  const machineGpus = (await getLlamaGpuTypes('supported')).filter((t) => t !== false);
  let llama;
  try {
    llama = await getLlama({
      build: 'never',
      gpu: 'auto',
      logLevel: LlamaLogLevel.error,
      progressLogs: false,
    });
  } catch (e) {
    return result('llama.cpp', 'fail', `no usable llama.cpp binary: ${errorText(e)}`);
  }
  try {
    const gpu = llama.gpu;
    const devices = gpu === false ? [] : await llama.getGpuDeviceNames();
    const vram = gpu === false ? undefined : await llama.getVramState();
    const data = {
      gpu,
      devices,
      vramTotal: vram?.total,
      vramFree: vram?.free,
      cpuMathCores: llama.cpuMathCores,
      gpuTypesForPlatform: platformGpus,
      gpuTypesWithDrivers: machineGpus,
      llamaCpp: llama.llamaCppRelease.release,
    };
    if (gpu === false) {
      return result(
        'llama.cpp',
        'ok',
        `no GPU: the LLM runs on the CPU (${llama.cpuMathCores} math cores); GPU types for this platform: ` +
          `${platformGpus.join(', ') || 'none'}, with drivers on this machine: ${machineGpus.join(', ') || 'none'}`,
        data,
      );
    }
    return result(
      'llama.cpp',
      'ok',
      `${gpu}: ${devices.join(', ') || 'no device name'}; VRAM ${gib(vram?.total ?? 0)} total, ${gib(vram?.free ?? 0)} free`,
      data,
    );
  } finally {
    await llama.dispose();
  }
}

const NATIVE_PACKAGES = {
  'tensorflow-gpu': '@tensorflow/tfjs-node-gpu',
  tensorflow: '@tensorflow/tfjs-node',
} as const;

/** A backend's failure in words an operator can act on. */
function nativeReason(backend: keyof typeof NATIVE_PACKAGES, raw: string): string {
  const pkg = NATIVE_PACKAGES[backend];
  const cuda = backend === 'tensorflow-gpu' ? ', which needs CUDA 11.2 and cuDNN 8.1' : '';
  if (/Cannot find (package|module)/.test(raw)) {
    return `${pkg} is not installed (optional: its install downloads libtensorflow 2.9.1${cuda})`;
  }
  if (/libcud|cuda/i.test(raw)) return `${raw} (libtensorflow 2.9.1 needs CUDA 11.2 and cuDNN 8.1)`;
  return raw;
}

async function importOptional(name: string): Promise<unknown> {
  return import(name);
}

/** The CRM's backend, and why the native tfjs ones are not used (the usual case, see the README). */
async function tfChecks(): Promise<Check[]> {
  const { initTf, parseBackendChoice } = await import('../../ml/tf/backend.js');
  let r;
  try {
    r = await initTf(undefined, () => {});
  } catch (e) {
    return [result('tfjs backend', 'fail', errorText(e))];
  }
  const accel = r.accelerator
    ? `, matmul: ${r.accelerator}${r.nativeReason ? ` (${r.nativeReason})` : ''}`
    : '';
  const backendCheck = result('tfjs backend', 'ok', `${r.backend}${accel}`, { ...r });
  if (r.backend === 'tensorflow' || r.backend === 'tensorflow-gpu') {
    return [backendCheck, result('tfjs native', 'ok', `in use: ${r.backend}`)];
  }
  const reasons: string[] = [];
  for (const backend of Object.keys(NATIVE_PACKAGES) as (keyof typeof NATIVE_PACKAGES)[]) {
    const skipped = r.reasons.find((x) => x.startsWith(`${backend}: `));
    if (skipped !== undefined) {
      reasons.push(`${backend}: ${nativeReason(backend, skipped.slice(backend.length + 2))}`);
      continue;
    }
    // CORELLA_TF_BACKEND chose another backend, so initTf did not try this one: try loading it here.
    try {
      await importOptional(NATIVE_PACKAGES[backend]);
      reasons.push(
        `${backend}: installed, not selected (CORELLA_TF_BACKEND=${parseBackendChoice(process.env.CORELLA_TF_BACKEND)})`,
      );
    } catch (e) {
      reasons.push(`${backend}: ${nativeReason(backend, errorText(e))}`);
    }
  }
  return [
    backendCheck,
    result('tfjs native', 'warn', `not usable, the CRM runs on ${r.backend}: ${reasons.join('; ')}`, {
      reasons,
    }),
  ];
}

/**
 * The model `corella up` would run (CORELLA_LLM_MODEL, else the cached one) and its tensor types. A 4-bit
 * Q4_0/Q4_1 file is a warning, not a failure: it works, but llama.cpp's CPU matmul has a fast path for
 * Q8_0 and none for those, so every LLM pass runs about 1.6× slower than it needs to (a cache fetched
 * before scripts/fetch-model re-quantized holds the PyPI wheel's Q4_1 file).
 */
async function modelCheck(home: string): Promise<Check> {
  const given = process.env.CORELLA_LLM_MODEL;
  if (given?.startsWith('hf:')) return result('llm model', 'ok', `CORELLA_LLM_MODEL=${given} (from the hub)`);
  const path = given ?? cachedModelFile(home);
  const source = given ? 'CORELLA_LLM_MODEL=' : 'cached: ';
  if (path === undefined) {
    return result(
      'llm model',
      'ok',
      'none cached: `corella up` fetches SmolLM2-135M-Instruct (scripts/fetch-model)',
    );
  }
  let weights: Awaited<ReturnType<typeof modelWeightTypes>>;
  try {
    await access(path, constants.R_OK);
    weights = await modelWeightTypes(path);
  } catch (e) {
    return result('llm model', 'fail', `${source}${path}: ${errorText(e)}`);
  }
  const types = Object.entries(weights.types)
    .map(([type, n]) => `${n} ${type}`)
    .join(', ');
  const data = { path, types: weights.types };
  if (weights.slowOnCpu.length === 0) return result('llm model', 'ok', `${source}${path} (${types})`, data);
  return result('llm model', 'warn', `${source}${slowModelAdvice(path, weights.slowOnCpu)}`, data);
}

/** `corella doctor`: what is configured, what is reachable, which backends load and on which devices. */
export async function doctor({ values }: ArgsOf<typeof doctorSpec>): Promise<number> {
  const out = makeOutput(Boolean(values.json));
  const home = corellaHome();
  const checks: Check[] = [result('home', 'ok', home)];
  checks.push(await postgresCheck(home));
  checks.push(await temporalCheck(home));
  checks.push(...(await tfChecks()));
  checks.push(await llamaCheck());
  checks.push(await modelCheck(home));
  checks.push(
    result('data dir', 'ok', process.env.CORELLA_DATA_DIR ?? 'not set (synthetic dataset is the fallback)'),
  );
  out.result(checks, () =>
    table(
      checks.map((c) => [c.status === 'fail' ? 'FAIL' : c.status, c.name, c.detail]),
      ['', 'check', 'detail'],
    ),
  );
  return checks.some((c) => c.status === 'fail') ? EXIT.unavailable : EXIT.ok;
}
