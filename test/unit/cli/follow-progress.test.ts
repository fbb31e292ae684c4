import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { followProgress, type FollowedWorkflow } from '../../../cli/follow-progress.js';

/** A workflow handle whose `progress` query answers only when the test says so. */
function fakeHandle(pendingActivities: unknown[] = []) {
  const pending: ((stage: string) => void)[] = [];
  let queries = 0;
  let describes = 0;
  const handle = {
    query: () => {
      queries++;
      return new Promise((resolve) => pending.push((stage) => resolve({ stage })));
    },
    describe: () => {
      describes++;
      return Promise.resolve({ raw: { pendingActivities } });
    },
  } as unknown as FollowedWorkflow;
  return {
    handle,
    answer: (stage: string) => pending.shift()!(stage),
    calls: () => ({ queries, describes }),
  };
}

describe('followProgress', () => {
  it('stop waits for the poll in flight, so no call outlives the connection that up closes next', async () => {
    const f = fakeHandle();
    const lines: string[] = [];
    const stop = followProgress(f.handle, (l) => lines.push(l), { intervalMs: 5 });
    await sleep(20);
    expect(f.calls().queries).toBe(1);

    let stopped = false;
    const done = stop().then(() => (stopped = true));
    await sleep(30);
    expect(stopped).toBe(false);

    f.answer('calibration');
    await done;
    expect(f.calls()).toEqual({ queries: 1, describes: 1 });
    expect(lines).toEqual(['  stage: calibration']);
    await sleep(20);
    expect(f.calls().queries).toBe(1);
  });

  it('a stop during the wait between polls returns at once', async () => {
    const f = fakeHandle();
    const lines: string[] = [];
    const stop = followProgress(f.handle, (l) => lines.push(l), { intervalMs: 60_000 });
    await answerNextPoll(f, 'ingest');
    await sleep(5);
    const t0 = Date.now();
    await stop();
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect(lines).toEqual(['  stage: ingest']);
  });

  it('prints each stage once', async () => {
    const f = fakeHandle();
    const lines: string[] = [];
    const stop = followProgress(f.handle, (l) => lines.push(l), { intervalMs: 1 });
    for (const stage of ['ingest', 'ingest', 'train-crm']) await answerNextPoll(f, stage);
    await until(() => f.calls().queries > f.calls().describes);
    const done = stop();
    f.answer('train-crm');
    await done;
    expect(lines).toEqual(['  stage: ingest', '  stage: train-crm']);
  });

  it('names an activity that no worker has taken for a while, once per attempt; a retry in backoff is not waiting', async () => {
    const ago = (ms: number) => ({ seconds: Math.floor((Date.now() - ms) / 1000), nanos: 0 });
    const f = fakeHandle([
      { activityType: { name: 'trainCrm' }, attempt: 1, state: 1, scheduledTime: ago(90_000) },
      // Attempt 3 scheduled a minute from now: backing off after a failure, not stuck behind a busy worker.
      { activityType: { name: 'trainJoint' }, attempt: 3, state: 1, scheduledTime: ago(-60_000) },
      // Started long ago: running, not waiting.
      { activityType: { name: 'extractLlmFeatures' }, attempt: 1, state: 2, scheduledTime: ago(90_000) },
    ]);
    const lines: string[] = [];
    const stop = followProgress(f.handle, (l) => lines.push(l), { intervalMs: 1, waitingNoteMs: 30_000 });
    for (const stage of ['train-crm', 'train-crm', 'train-crm']) await answerNextPoll(f, stage);
    await until(() => f.calls().queries > f.calls().describes);
    const done = stop();
    f.answer('train-crm');
    await done;
    expect(lines).toHaveLength(2);
    expect(lines[0]).toBe('  stage: train-crm');
    expect(lines[1]).toMatch(/^ {4}trainCrm: waiting (89|90|91) s for a worker; those of its queue are busy/);
  });
});

async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await sleep(1);
}

/** Waits for the follower's next query, answers it, and waits until that poll has read the heartbeats too. */
async function answerNextPoll(f: ReturnType<typeof fakeHandle>, stage: string): Promise<void> {
  await until(() => f.calls().queries > f.calls().describes);
  f.answer(stage);
  await until(() => f.calls().describes === f.calls().queries);
}
