import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleWorkflowCode, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { beforeAll, describe, expect, it } from 'vitest';
import { workflowsPath } from '../../workers/cpu.js';
import { installWorkerRuntime } from '../../workers/runtime.js';
import { historyFromJson, historyToJson } from '../helpers/history-json.js';

/**
 * Replays histories recorded from real runs (scripts/record-histories.ts) against the current workflows/
 * code. Runs are open for hours: a change that makes the code issue different commands for an old history
 * would fail those runs on their next workflow task, so it must fail here first (docs/workflow-versioning.md).
 * Replay needs no server: the SDK feeds the history to a bundle of workflows/ in a local replay worker.
 */
const FIXTURES = fileURLToPath(new URL('../fixtures/histories/', import.meta.url));
// Sub-folders hold histories recorded before a patch (docs/workflow-versioning.md): replayed too, so the old
// branch of a `patched()` keeps working until the patch is deprecated.
const fixtures = (readdirSync(FIXTURES, { recursive: true }) as string[])
  .filter((f) => f.endsWith('.json'))
  .sort();

/**
 * The runs every change must stay compatible with, and how each ended (the recorder's own check: a
 * "cancelled" fixture that completed would protect nothing). Removing one needs a reason, so they are named.
 */
const REQUIRED: Record<string, string> = {
  'retrain-completed': 'workflowExecutionCompletedEventAttributes',
  'retrain-cancelled': 'workflowExecutionCanceledEventAttributes',
  'retrain-failed-bad-dataset': 'workflowExecutionFailedEventAttributes',
  'recalibrate-dataset': 'workflowExecutionCompletedEventAttributes',
  'recalibrate-served': 'workflowExecutionCompletedEventAttributes',
  'recalibrate-served-no-feedback': 'workflowExecutionFailedEventAttributes',
  'score-continued-as-new': 'workflowExecutionContinuedAsNewEventAttributes',
  'score-completed': 'workflowExecutionCompletedEventAttributes',
};

function raw(file: string): unknown {
  return JSON.parse(readFileSync(join(FIXTURES, file), 'utf8'));
}

function load(file: string) {
  return historyFromJson(raw(file));
}

describe('workflow replay against recorded histories', () => {
  let bundle: WorkflowBundleWithSourceMap;
  beforeAll(async () => {
    installWorkerRuntime(); // WARN and up: each replay worker's state changes are noise
    // One bundle for every fixture: bundling workflows/ is the slow part, a replay worker is cheap.
    bundle = await bundleWorkflowCode({ workflowsPath, logger: quietLogger });
  }, 120_000);

  it('has a fixture for every required kind of run, ended the way its name says', () => {
    const current = fixtures.filter((f) => !f.includes('/')).map((f) => f.replace(/\.json$/, ''));
    expect(current).toEqual(expect.arrayContaining(Object.keys(REQUIRED)));
    for (const [name, end] of Object.entries(REQUIRED)) {
      const events = load(`${name}.json`).events ?? [];
      expect(Object.keys(events[events.length - 1] ?? {}), name).toContain(end);
    }
  });

  it('reads every fixture losslessly (written back, it is the same JSON)', () => {
    for (const file of fixtures) expect(JSON.parse(historyToJson(load(file))), file).toEqual(raw(file));
  });

  it.each(fixtures)('%s replays without non-determinism', async (file) => {
    const history = load(file);
    const events = history.events ?? [];
    // A real run's history: it started, scheduled activities, and closed (a replay of an open history
    // would check only a prefix).
    expect(events.length).toBeGreaterThan(5);
    expect(events.some((e) => e.activityTaskScheduledEventAttributes)).toBe(true);
    const last = events[events.length - 1];
    expect(
      Boolean(
        last.workflowExecutionCompletedEventAttributes ??
        last.workflowExecutionFailedEventAttributes ??
        last.workflowExecutionCanceledEventAttributes ??
        last.workflowExecutionContinuedAsNewEventAttributes,
      ),
      `${file} must end with the run closing`,
    ).toBe(true);
    const workflowId = events[0].workflowExecutionStartedEventAttributes?.workflowId ?? file;
    // Throws DeterminismViolationError (or the workflow's own error) on any mismatch.
    await Worker.runReplayHistory({ workflowBundle: bundle, replayName: file }, history, workflowId);
  });
});

const quietLogger = {
  log: () => undefined,
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: (m: string) => console.warn(m),
  error: (m: string) => console.error(m),
};
