import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { describe, expect, inject, it } from 'vitest';
import { createActivities } from '../../activities/index.js';
import type {
  RecalibrateResult,
  RetrainInput,
  RetrainProgress,
  RetrainResult,
} from '../../activities/types.js';
import { resolveServingBundle } from '../../activities/serving-bundle.js';
import { llmConfigFor } from '../../activities/llm-model-file.js';
import { withLora } from '../../activities/llm-lora-file.js';
import { CalibrationRepository } from '../../db/repositories/calibrations.js';
import { EvaluationRepository } from '../../db/repositories/evaluations.js';
import { ModelRepository } from '../../db/repositories/models.js';
import { RunRepository } from '../../db/repositories/runs.js';
import { sha256File } from '../../ml/artifacts/store.js';
import type { JointCheckpoint } from '../../ml/corella/joint-checkpoint.js';
import { LoraHead, loadLlmBranchModel } from '../../ml/corella/llm-branch-model.js';
import { calibrationPlan } from '../../ml/corella/calibration.js';
import { loadCrm } from '../../ml/crm/index.js';
import { loadDataset, loadManifest } from '../../ml/data/load.js';
import { LlmFeatureExtractor } from '../../ml/llm/index.js';
import { LlamaTf } from '../../ml/llm/tf/llama-forward.js';
import { LoraBranch } from '../../ml/llm/tf/lora-branch.js';
import { ServingEngine } from '../../ml/serving/engine.js';
import { initTf } from '../../ml/tf/index.js';
import { calibrationConfigOf } from '../../activities/corella-config.js';
import { createCpuWorker } from '../../workers/cpu.js';
import { createGpuWorker } from '../../workers/gpu.js';
import { writeTinyGguf } from '../helpers/tiny-gguf.js';
import { tinyPipelineConfig } from '../helpers/pipeline-config.js';
import { useE2eHome } from '../helpers/activity-context.js';

/**
 * A retrain with llm.finetune.method lora through the real workflow, Temporal dev server and Postgres: the
 * joint activity trains the LoRA in tfjs and exports it, the workflow extracts the validation and test
 * features again with llama.cpp and that LoRA, calibration and evaluation read them, and the model version
 * carries the GGUF LoRA (llmLora), which serving and recalibration load with the base model.
 */
describe('retrainWorkflow with llm.finetune lora', () => {
  const home = useE2eHome('corella-e2e-lora-');

  it('registers a version with its GGUF LoRA; calibration, evaluation, serving and recalibration use it', async () => {
    const { testDb, dir, ctx } = home;
    const modelPath = join(dir, 'tiny.gguf');
    writeTinyGguf(modelPath, { seed: 5, nLayer: 3 });
    const base = tinyPipelineConfig(modelPath);
    const config = {
      ...base,
      llm: {
        ...base.llm,
        // hybridTest: the hybrid's gain on a wider test pool, the LLM on its routed rows only.
        pools: { valid: 64, test: 64, hybridTest: 96, seed: 3 },
        // Two threads: stage 2's exact split and stage 3's parallel steps run in the real pipeline too.
        finetune: { method: 'lora' as const, layers: 2, rank: 4, alpha: 8, threads: 2 },
      },
      joint: {
        ...base.joint,
        stage2: { samples: 64, epochs: 2, batchSize: 32, learningRate: 0.01 },
        stage3: { samples: 32, epochs: 1, batchSize: 32, learningRate: 0.01 },
        validationSamples: 32,
      },
      // A pool larger than the LLM's share: the LoRA pass extracts only the rows calibration routes-tests.
      calibration: { ...base.calibration, maxRows: 80, curveMaxFraction: 0.3 },
    };
    const suffix = randomUUID().slice(0, 8);
    const queues = { cpu: `lora-cpu-${suffix}`, gpu: `lora-gpu-${suffix}` };
    const input: RetrainInput = {
      dataset: {
        source: 'synthetic-movielens',
        dir: join(dir, 'datasets', 'synthetic'),
        params: { synthetic: { seed: 9, users: 60, items: 90, ratingsPerUser: 25 } },
      },
      config,
      configHash: 'e2e-lora',
      trigger: 'test',
      queues,
    };
    const workflowId = `retrain-e2e-lora-${suffix}`;
    const activities = createActivities(ctx);
    const nc = await NativeConnection.connect({ address: inject('temporalAddress') });
    const namespace = inject('temporalNamespace');
    const cpu = await createCpuWorker({ connection: nc, namespace, activities, taskQueue: queues.cpu });
    const gpu = await createGpuWorker({ connection: nc, namespace, activities, taskQueue: queues.gpu });
    const conn = await Connection.connect({ address: inject('temporalAddress') });
    const client = new Client({ connection: conn, namespace });
    let result: RetrainResult;
    let progress: RetrainProgress;
    let recal: RecalibrateResult;
    try {
      [result, progress, recal] = await cpu.runUntil(
        gpu.runUntil(async () => {
          const h = await client.workflow.start('retrainWorkflow', {
            taskQueue: queues.cpu,
            workflowId,
            args: [input],
          });
          const r = (await h.result()) as RetrainResult;
          const p = await h.query<RetrainProgress>('progress');
          // Recalibration of the LoRA version: its threshold again, on the same data, with its LoRA.
          const rc = (await client.workflow.execute('recalibrateWorkflow', {
            taskQueue: queues.cpu,
            workflowId: `recal-lora-${suffix}`,
            args: [{ modelVersionId: r.modelVersionId, queues }],
          })) as RecalibrateResult;
          return [r, p, rc] as const;
        }),
      );
    } finally {
      await conn.close();
      await nc.close();
    }

    expect(progress.stage).toBe('done');
    expect(progress.completed).toEqual([
      'ingest',
      'train-crm',
      'joint-training',
      'lora-llm-features',
      'calibration',
      'alignment-evaluation',
      'registration',
      'report',
    ]);
    for (const k of [
      'eval.test.crm.auc',
      'eval.test.llm.auc',
      'eval.test.hybrid.auc',
      'calibration.hybrid.auc',
      'calibration.crm.auc',
    ]) {
      expect(result.metrics[k], k).toBeGreaterThan(0);
      expect(result.metrics[k], k).toBeLessThanOrEqual(1);
    }
    // The second feature pass: the validation and test pools, computed (not cached) with the LoRA.
    // No frozen-LLM pass beside stage 1: a LoRA run never reads those features.
    expect(result.metrics['llm.valid.rows']).toBeUndefined();
    expect(result.metrics['llm.lora.valid.rows']).toBeGreaterThan(0);
    expect(result.metrics['llm.lora.test.rows']).toBeGreaterThan(0);
    expect(result.metrics['llm.lora.train.rows']).toBeUndefined();
    expect(result.metrics['llm.lora.computed']).toBeGreaterThan(0);
    expect(result.metrics['llm.lora.valid.fromCache']).toBe(0);
    // The frozen pass ran on its own two threads, although llama.cpp's llm.threads is 1 here.
    expect(base.llm?.threads).toBe(1);
    expect(result.metrics['joint.frozenPass.threads']).toBe(2);
    expect(result.metrics['joint.frozenPass.computed']).toBeGreaterThan(0);

    const mv = await new ModelRepository(testDb.db).get(Number(result.modelVersionId));
    expect(Object.keys(mv?.artifacts ?? {}).sort()).toEqual([
      'adapter',
      'calibrationCurve',
      'crmModel',
      'llmLora',
      'llmModel',
    ]);
    const loraSha = mv!.artifacts.llmLora!;
    const head = loadLlmBranchModel(await ctx.store.get(mv!.artifacts.adapter!));
    expect(head).toBeInstanceOf(LoraHead);
    expect((head as LoraHead).file).toMatchObject({
      loraSha256: loraSha,
      baseModelSha256: mv!.artifacts.llmModel,
    });
    const runRow = (await new RunRepository(testDb.db).show(workflowId))!.run;
    expect(await new CalibrationRepository(testDb.db).listForModelVersion(mv!.id)).toHaveLength(1);
    const evals = await new EvaluationRepository(testDb.db).listForRun(runRow.id);
    expect(evals.map((e) => e.kind)).toContain('alignment');

    // Recalibration opened the version's LoRA (its calibration is stored either way).
    expect(recal.modelVersionId).toBe(result.modelVersionId);
    expect(recal.metrics.windowRows).toBeGreaterThan(0);

    // The serving bundle names the LoRA as a local file of exactly that sha256, and the engine loads it.
    const { bundle } = await resolveServingBundle(testDb.db, dir, result.modelVersionId, ctx.store);
    expect(bundle.llm?.lora?.path).toBeDefined();
    expect(await sha256File(bundle.llm!.lora!.path)).toBe(loraSha);
    const logs: string[] = [];
    const engine = await ServingEngine.load(ctx.store, bundle, { log: (m) => logs.push(m) });
    try {
      expect(engine.llmUnavailable, logs.join('\n')).toBeUndefined();
    } finally {
      await engine.dispose();
    }

    // llama.cpp's features with the version's LoRA (as calibration read them) against the tfjs branch of
    // the run's last joint checkpoint, on the validation pool's pipeline prompts.
    await initTf();
    const manifest = await loadManifest(ctx.store, result.datasetVersionId);
    const dataset = await loadDataset(ctx.store, manifest!);
    const valid = dataset.splits.valid;
    // The wide test pool: every row scored by the CRM, the LLM only on the routed ones; the report says so.
    const wideRows = Math.min(96, dataset.splits.test.size);
    expect(wideRows).toBeGreaterThan(64);
    expect(result.metrics['eval.wide.rows']).toBe(wideRows);
    expect(result.metrics['eval.wide.llmRows']).toBe(
      Math.round(result.metrics['eval.wide.routedFraction'] * wideRows),
    );
    expect(result.metrics['eval.wide.gainLo']).toBeLessThanOrEqual(result.metrics['eval.wide.gain']);
    expect(result.metrics['eval.wide.gain']).toBeCloseTo(
      result.metrics['eval.wide.hybrid.auc'] - result.metrics['eval.wide.crm.auc'],
      9,
    );
    expect(result.reportPath).toBeDefined();
    const html = await readFile(result.reportPath!, 'utf8');
    expect(html).toContain(`On a wider pool of <b>${wideRows}</b> test rows`);
    // The LoRA pass extracted exactly the rows calibration asked the LLM for: the 80-row pool's 24 most
    // uncertain under the joint CRM.
    const crm = await loadCrm(ctx.store, mv!.artifacts.crmModel!, dataset.featureMap);
    const plan = await calibrationPlan(crm, valid, calibrationConfigOf(config)).finally(() => crm.dispose());
    expect(plan.rows).toHaveLength(80);
    expect(plan.llmRows).toHaveLength(24);
    expect(result.metrics['llm.lora.valid.rows']).toBe(24);
    expect(result.metrics['calibration.rows']).toBe(80);
    expect(result.metrics['calibration.llmRows']).toBe(24);
    const rows = Int32Array.from(plan.llmRows).sort();
    const llmCfg = await withLora(await llmConfigFor(config, ctx), ctx.store, loraSha);
    const extractor = await LlmFeatureExtractor.open(llmCfg, ctx.store);
    const model = await LlamaTf.load(modelPath);
    try {
      const f = await extractor.extract(valid, dataset.items, rows);
      // From the cache the LoRA pass wrote: nothing computed again.
      expect(extractor.lastReport?.computed).toBe(0);
      const { promptOf, answerTokens } = await extractor.promptTokens();
      const ckpt = JSON.parse(
        (await ctx.store.getNamed(`runs/${runRow.id}/joint/latest`))!.toString('utf8'),
      ) as JointCheckpoint;
      const branch = LoraBranch.deserialize((await ctx.store.get(ckpt.adapter)).toString('utf8'), {
        model,
        answerTokens,
        prompts: { valid: Array.from(rows, (r) => promptOf(valid, dataset.items, r)) },
      });
      try {
        // z before the head: the checkpoint precedes the output calibration that the head carries.
        const zTf = branch.logOdds('valid');
        const { a, b } = (head as LoraHead).file.head;
        const pTf = Array.from(zTf, (z) => 1 / (1 + Math.exp(-(a * z + b))));
        const pCpp = head.predict(f);
        const dz = Math.max(...Array.from(zTf, (z, i) => Math.abs(z - f.logOdds[i])));
        // The frozen model's features of the same rows: the LoRA moved z by more than the two engines
        // disagree, so the agreement below is that of the trained LoRA.
        const frozen = await LlmFeatureExtractor.open(await llmConfigFor(config, ctx), ctx.store);
        const f0 = await frozen.extract(valid, dataset.items, rows).finally(() => frozen.dispose());
        const moved = Math.max(...Array.from(f0.logOdds, (z, i) => Math.abs(z - f.logOdds[i])));
        const zMax = Math.max(...Array.from(zTf, Math.abs));
        const dp = Math.max(...pTf.map((p, i) => Math.abs(p - pCpp[i])));
        console.log(
          `pipeline LoRA: llama.cpp vs tfjs on ${rows.length} prompts (|z| ≤ ${zMax.toFixed(2)}): max |Δz| ${dz.toExponential(2)}, max |Δp| ${dp.toExponential(2)}; the LoRA moved z by up to ${moved.toFixed(3)}`,
        );
        // llama.cpp keeps K and V in F16 (2^-11 relative) over ~200-token prompts; tfjs is f32 throughout.
        expect(dz).toBeLessThan(3e-2);
        expect(moved).toBeGreaterThan(2 * dz);
        expect(dp).toBeLessThan(5e-3);
      } finally {
        branch.dispose();
      }
    } finally {
      model.dispose();
      await extractor.dispose();
    }
  }, 600_000);
});
