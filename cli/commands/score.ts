import { randomBytes } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure, WorkflowIdReusePolicy } from '@temporalio/common';
import type { BatchScoreInput, BatchScoreResult } from '../../activities/types.js';
import { sha256Hex } from '../../ml/artifacts/store.js';
import { openArtifactStore } from '../../ml/artifacts/open-store.js';
import { scanBatch } from '../../ml/serving/jsonl-batch.js';
import { TASK_QUEUE_CPU } from '../../workflows/search-attributes.js';
import { scoreProgressQuery, type scoreWorkflow } from '../../workflows/score.js';
import { EXIT, parseDuration, UsageError, type ArgsOf } from '../args.js';
import { connectClient, workflowUiUrl } from '../client.js';
import { failureMessage } from '../failure.js';
import { makeOutput, progressLine, table } from '../output.js';
import { ProgressLog } from '../progress-log.js';
import { corellaHome } from '../services/paths.js';
import type { scoreSpec } from '../specs/score.js';

const REF_RE = /^(?:[1-9][0-9]*|[a-z][a-z0-9_-]{0,62})$/;

function positiveInt(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n <= 0) throw new UsageError(`${name} must be a positive integer`);
  return n;
}

/** The business key of a batch: the same file scored with the same model ref joins the same workflow. */
export function scoreWorkflowId(inputSha256: string, model: string): string {
  return `score-${sha256Hex(`${inputSha256}\n${model}`)}`;
}

/** The `type` of every ApplicationFailure in the cause chain of a failed workflow. */
function failureTypes(e: unknown): string[] {
  const out: string[] = [];
  for (let cur: unknown = e; cur instanceof Error; cur = cur.cause) {
    if (cur instanceof ApplicationFailure && cur.type) out.push(cur.type);
  }
  return out;
}

/** Written beside the target and renamed over it: a reader never sees half an output file. */
async function writeAtomic(path: string, data: Buffer): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } finally {
    await rm(tmp, { force: true });
  }
}

/**
 * `corella score --input FILE.jsonl --output FILE.jsonl`: validates the whole file (a bad line is exit 4
 * before any workflow starts), stores it in the artifact store, and starts scoreWorkflow on it. With
 * `--wait` it writes the output once the workflow is done; without, a later `--wait` run joins it (or, once
 * it has finished, runs it again reusing every finished chunk) and writes the file.
 */
export async function score({ values }: ArgsOf<typeof scoreSpec>): Promise<number> {
  const out = makeOutput(Boolean(values.json));
  if (!values.input) throw new UsageError('--input FILE.jsonl is required');
  if (!values.output) throw new UsageError('--output FILE.jsonl is required');
  const model = values.model;
  if (!REF_RE.test(model)) {
    throw new UsageError('--model must be champion, challenger, another alias or a model version id');
  }
  const chunkRows = positiveInt('--chunk-rows', values['chunk-rows']);
  const parallelChunks = positiveInt('--parallel-chunks', values['parallel-chunks']);
  if (values['heartbeat-timeout']) parseDuration(values['heartbeat-timeout']);
  const inputPath = resolve(values.input);
  const outputPath = resolve(values.output);
  if (inputPath === outputPath) throw new UsageError('--output must not be the --input file');

  let data: Buffer;
  try {
    data = await readFile(inputPath);
  } catch (e) {
    throw new UsageError(`cannot read --input ${values.input}: ${(e as Error).message}`);
  }
  // Every line is checked before anything starts (DatasetError names the file, the line and the field);
  // nothing is kept but the count.
  const rows = scanBatch(data, values.input, 1, () => undefined);
  const home = corellaHome();
  const stored = await openArtifactStore(home).put(data);
  const workflowId = scoreWorkflowId(stored.sha256, model);
  const input: BatchScoreInput = {
    inputSha256: stored.sha256,
    inputName: values.input,
    model,
    chunkRows,
    parallelChunks,
    heartbeatTimeout: values['heartbeat-timeout'],
    queues:
      values['cpu-queue'] || values['gpu-queue']
        ? { cpu: values['cpu-queue'], gpu: values['gpu-queue'] }
        : undefined,
  };

  const tc = await connectClient();
  try {
    let started = true;
    try {
      await tc.client.workflow.start<typeof scoreWorkflow>('scoreWorkflow', {
        taskQueue: values['cpu-queue'] ?? TASK_QUEUE_CPU,
        workflowId,
        // A running batch is joined; a finished one may run again (its finished chunks are reused, and a
        // moved alias is honoured).
        workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
        args: [input],
        memo: { input: values.input, rows, model },
      });
    } catch (e) {
      if (!(e instanceof WorkflowExecutionAlreadyStartedError)) throw e;
      started = false;
    }
    const ui = workflowUiUrl(tc.uiBase, tc.namespace, workflowId);
    if (!values.wait) {
      out.result(
        { workflowId, started, rows, ui },
        () =>
          `${started ? 'started' : 'already running (joined)'}: ${workflowId}, ${rows} rows` +
          `\nrun the same command with --wait to write ${values.output}${ui ? `\n${ui}` : ''}`,
      );
      return EXIT.ok;
    }
    let result: BatchScoreResult;
    const handle = tc.client.workflow.getHandle<typeof scoreWorkflow>(workflowId);
    // Progress from the workflow's query: a bar on a terminal, throttled lines in a log.
    const lines = new ProgressLog();
    const ticker = setInterval(() => {
      handle.query(scoreProgressQuery).then(
        (p) => {
          if (process.stderr.isTTY) return progressLine(`scoring ${p.stage}`, p.chunksDone, p.chunks);
          const line = lines.line(`scoring ${p.stage}`, p.chunksDone, p.chunks);
          if (line) out.info(line);
        },
        () => undefined,
      );
    }, 1_000);
    try {
      result = await handle.result();
    } catch (e) {
      if (e instanceof WorkflowFailedError) {
        const cause = failureMessage(e);
        out.result({ workflowId, failed: cause }, () => `scoring ${workflowId} failed: ${cause}`);
        // Exit codes as for errors before the start: a line only the model could reject (a user attribute
        // it lacks) is bad input; a model ref that names no version yet is unavailable data.
        const types = failureTypes(e);
        if (types.some((t) => t === 'BAD_DATASET' || t === 'BAD_REQUEST')) return EXIT.badInput;
        if (types.includes('DATA_NOT_AVAILABLE')) return EXIT.unavailable;
        return EXIT.runFailed;
      }
      throw e;
    } finally {
      clearInterval(ticker);
      if (process.stderr.isTTY) process.stderr.write('\n'); // end the bar's line
    }
    const output = await openArtifactStore(home).get(result.outputSha256);
    await writeAtomic(outputPath, output);
    out.result({ workflowId, started, output: outputPath, ...result }, () =>
      table(
        [
          ['rows', result.rows],
          ['model version', result.modelVersion],
          ['threshold', result.threshold],
          [
            'routes crm / llm / crm-fallback',
            `${result.routes.crm} / ${result.routes.llm} / ${result.routes['crm-fallback']}`,
          ],
          [
            'chunks scored / reused / retried',
            `${result.scoredChunks} / ${result.reusedChunks} / ${result.retriedChunks}`,
          ],
          ['output', outputPath],
        ],
        ['batch score', workflowId],
      ),
    );
    return EXIT.ok;
  } finally {
    await tc.close();
  }
}
