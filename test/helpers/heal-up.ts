import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Client, WorkflowHandle } from '@temporalio/client';
import type { PipelineConfig } from '../../activities/types.js';
import { generateSyntheticMovielens } from '../../ml/data/index.js';
import type { CliProcess } from './cli-process.js';
import { tinyPipelineConfig } from './pipeline-config.js';
import { writeTinyGguf } from './tiny-gguf.js';

/** A synthetic dataset, a tiny GGUF and a config file under `dir`: the arguments of a small `corella up` run. */
export async function smallRun(
  dir: string,
  opts: { seed?: number; users?: number; tweak?: (c: PipelineConfig) => void } = {},
): Promise<string[]> {
  const data = join(dir, 'data');
  await generateSyntheticMovielens(data, {
    seed: opts.seed ?? 9,
    users: opts.users ?? 80,
    items: 120,
    ratingsPerUser: 30,
  });
  const model = join(dir, 'tiny.gguf');
  writeTinyGguf(model, { seed: 5 });
  const config = tinyPipelineConfig(model);
  opts.tweak?.(config);
  const configPath = join(dir, 'tiny.json');
  await writeFile(configPath, JSON.stringify(config));
  return ['--data-dir', data, '--model', model, '--config', configPath];
}

/** Polls `cond` until it holds; fails early with `proc`'s output when it exits first. */
export async function waitFor<T>(
  cond: () => Promise<T | undefined> | T | undefined,
  what: string,
  proc: CliProcess,
  timeoutMs: number,
  intervalMs = 250,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v !== undefined && v !== false) return v;
    if (proc.child.exitCode !== null)
      throw new Error(`exited ${proc.child.exitCode} before ${what}:\n${proc.stderr().slice(-6000)}`);
    if (Date.now() > deadline)
      throw new Error(`no ${what} after ${timeoutMs} ms:\n${proc.stderr().slice(-6000)}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** The workflow id `up` printed ("started <id>"). */
export function startedWorkflowId(up: CliProcess): string | undefined {
  return /started (retrain-\S+)/.exec(up.stderr())?.[1];
}

export interface PendingActivity {
  attempt: number;
  /** 1 scheduled, 2 started, 3 cancel requested. */
  state: number;
  heartbeats: boolean;
  lastStartedMs: number;
}

/** A pending activity of the workflow by type, as Temporal describes it. */
export async function pendingActivity(
  client: Client,
  workflowId: string,
  activity: string,
): Promise<PendingActivity | undefined> {
  const handle: WorkflowHandle = client.workflow.getHandle(workflowId);
  const d = await handle.describe().catch(() => undefined);
  const a = (d?.raw.pendingActivities ?? []).find((p) => p.activityType?.name === activity);
  if (!a) return undefined;
  const started = a.lastStartedTime;
  return {
    attempt: a.attempt ?? 1,
    state: Number(a.state ?? 0),
    heartbeats: Boolean(a.lastHeartbeatTime),
    lastStartedMs: started ? Number(started.seconds ?? 0) * 1000 + Math.floor((started.nanos ?? 0) / 1e6) : 0,
  };
}

/** The pid of the current worker of `queue`: the ready line's, or the one `up` last said it restarted. */
export function workerPid(up: CliProcess, ready: Record<string, unknown>, queue: 'cpu' | 'gpu'): number {
  const restarts = [...up.stderr().matchAll(new RegExp(`worker ${queue} restarted \\(pid (\\d+)\\)`, 'g'))];
  if (restarts.length > 0) return Number(restarts[restarts.length - 1][1]);
  return (ready.workerPids as number[])[queue === 'cpu' ? 0 : 1];
}

/** The first line of postmaster.pid under the home's embedded Postgres. */
export async function postmasterPid(home: string): Promise<number> {
  return Number((await readFile(join(home, 'pg', 'postmaster.pid'), 'utf8')).split('\n')[0]);
}

export async function temporalPid(home: string): Promise<number> {
  return (JSON.parse(await readFile(join(home, 'temporal', 'server.json'), 'utf8')) as { pid: number }).pid;
}
