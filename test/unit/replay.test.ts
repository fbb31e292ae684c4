import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleWorkflowCode, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { beforeAll, describe, expect, it } from 'vitest';
import { workflowsPath } from '../../workers/cpu.js';
import { installWorkerRuntime } from '../../workers/runtime.js';
import { historyFromJson } from '../helpers/history-json.js';

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

/** The runs every change must stay compatible with; removing one needs a reason, so it is named here. */
const REQUIRED = [
  'retrain-completed',
  'retrain-cancelled',
  'retrain-failed-bad-dataset',
  'recalibrate-dataset',
  'recalibrate-served',
  'recalibrate-served-no-feedback',
  'score-continued-as-new',
  'score-completed',
];

function load(file: string) {
  return historyFromJson(JSON.parse(readFileSync(join(FIXTURES, file), 'utf8')));
}

describe('workflow replay against recorded histories', () => {
  let bundle: WorkflowBundleWithSourceMap;
  beforeAll(async () => {
    installWorkerRuntime(); // WARN and up: each replay worker's state changes are noise
    // One bundle for every fixture: bundling workflows/ is the slow part, a replay worker is cheap.
    bundle = await bundleWorkflowCode({ workflowsPath, logger: quietLogger });
  }, 120_000);

  it('has a fixture for every required kind of run', () => {
    const current = fixtures.filter((f) => !f.includes('/')).map((f) => f.replace(/\.json$/, ''));
    expect(current).toEqual(expect.arrayContaining(REQUIRED));
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
