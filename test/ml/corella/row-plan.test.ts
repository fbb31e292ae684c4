import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { calibrationConfigOf, jointConfigOf } from '../../../activities/corella-config.js';
import { rowPlanConfigOf } from '../../../activities/row-plan.js';
import type { PipelineConfig } from '../../../activities/types.js';
import { FileArtifactStore } from '../../../ml/artifacts/store.js';
import { calibrateThreshold } from '../../../ml/corella/calibration.js';
import { evaluateAlignment } from '../../../ml/corella/evaluation.js';
import { trainJoint } from '../../../ml/corella/joint.js';
import { calibrationRows, llmFeatureRows, testPoolRows } from '../../../ml/corella/row-plan.js';
import type { SplitName } from '../../../ml/data/types.js';
import { acceptanceWorld, TinyCrm, trainTinyCrm, useCpu } from './fixtures.js';

let dir: string;
beforeAll(async () => {
  await useCpu();
  dir = await mkdtemp(join(tmpdir(), 'corella-row-plan-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A pipeline config as the activities read it; historyBlock 3 makes every pool draw user blocks. */
const pipeline = (joint: Record<string, unknown> = {}): PipelineConfig => ({
  llm: { model: 'unused.gguf', historyBlock: 3, pools: { valid: 150, test: 120, seed: 11 } },
  joint: {
    stage2: { samples: 240, epochs: 1, batchSize: 64, learningRate: 0.01, crmLearningRate: 0.01 },
    stage3: { samples: 160, epochs: 1, batchSize: 64, learningRate: 0.01 },
    adapter: { layers: [8, 4] },
    alignment: { sharedDim: 4 },
    validationSamples: 100,
    ...joint,
  },
  calibration: { bootstrapRounds: 20 },
});

const asked = (calls: { split: SplitName; rows: number[] }[], split: SplitName) =>
  new Set(calls.filter((c) => c.split === split).flatMap((c) => c.rows));
const sorted = (s: Iterable<number>) => Array.from(s).sort((a, b) => a - b);

describe('row plan', () => {
  it('is exactly what the joint trainer, the calibration and the evaluation ask the LLM for', async () => {
    const world = acceptanceWorld(4, { train: 700, valid: 300, test: 250 });
    const { dataset, llm } = world;
    const crm = new TinyCrm([3, 6], { seed: 3 });
    await trainTinyCrm(crm, dataset.splits.train, 1);
    const config = pipeline();
    const plan = llmFeatureRows(dataset.splits, rowPlanConfigOf(config, 'run-1'));
    expect(plan.train).toHaveLength(400);
    expect(plan.test).toHaveLength(120);

    // Each stage is given its config as the activities give it (activities/corella.ts).
    const r = await trainJoint({
      crm,
      dataset,
      llm,
      store: new FileArtifactStore(join(dir, 'a')),
      config: jointConfigOf(config, 'run-1'),
    });
    expect(sorted(asked(llm.calls, 'train'))).toEqual(Array.from(plan.train!));
    const jointValid = asked(llm.calls, 'valid');
    expect(jointValid.size).toBe(100);
    for (const row of jointValid) expect(plan.valid).toContain(row);

    llm.calls.length = 0;
    await calibrateThreshold({
      crm,
      adapter: r.adapter,
      llm,
      split: dataset.splits.valid,
      items: dataset.items,
      config: calibrationConfigOf(config),
    });
    const calibrated = asked(llm.calls, 'valid');
    expect(calibrated.size).toBe(150);
    for (const row of calibrated) expect(plan.valid).toContain(row);

    llm.calls.length = 0;
    await evaluateAlignment({
      crm,
      adapter: r.adapter,
      llm,
      split: dataset.splits.test,
      items: dataset.items,
      threshold: -1,
      rows: testPoolRows(dataset.splits.test, rowPlanConfigOf(config, 'run-1').test),
    });
    expect(sorted(asked(llm.calls, 'test'))).toEqual(Array.from(plan.test));
    r.adapter.dispose();
    r.projections.dispose();
  });

  it('holds the joint validation sample too when it is not inside the calibration pool', () => {
    const { dataset } = acceptanceWorld(5, { train: 400, valid: 300, test: 50 });
    const same = rowPlanConfigOf(pipeline(), 'r');
    const calib = calibrationRows(dataset.splits.valid, same.calibration);
    // Same seed and block: the 100 validation rows are a prefix of the calibration pool's permutation.
    expect(Array.from(llmFeatureRows(dataset.splits, same).valid)).toEqual(Array.from(calib));
    const other = rowPlanConfigOf(pipeline({ validationSeed: 99 }), 'r');
    const valid = llmFeatureRows(dataset.splits, other).valid;
    expect(valid.length).toBeGreaterThan(calib.length);
    for (const row of calib) expect(valid).toContain(row);
  });

  it("leaves the training rows to trainJoint with 'hard' subsets (they depend on the stage-1 CRM)", () => {
    const { dataset } = acceptanceWorld(6, { train: 500, valid: 200, test: 50 });
    const plan = llmFeatureRows(dataset.splits, rowPlanConfigOf(pipeline({ subset: 'hard' }), 'r'));
    expect(plan.train).toBeUndefined();
    expect(plan.valid.length).toBeGreaterThan(0);
  });
});
