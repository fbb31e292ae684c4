import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileArtifactStore, sha256File } from '../../../ml/artifacts/store.js';
import { LlmAdapter } from '../../../ml/corella/adapter.js';
import {
  resolveJointConfig,
  trainJoint,
  type JointConfigInput,
  type LoraBranchSource,
} from '../../../ml/corella/joint.js';
import { jointConfigHash } from '../../../ml/corella/joint-checkpoint.js';
import { LoraHead, loadLlmBranchModel } from '../../../ml/corella/llm-branch-model.js';
import type { EncodedSplit } from '../../../ml/data/types.js';
import { CorellaError } from '../../../ml/errors.js';
import { resolveLlmConfig } from '../../../ml/llm/config.js';
import { loadLlm, type LoadedLlm } from '../../../ml/llm/model.js';
import { LlmScorer } from '../../../ml/llm/scorer.js';
import { checkLoraForBase } from '../../../ml/llm/tf/lora-check.js';
import { LlamaTf } from '../../../ml/llm/tf/llama-forward.js';
import type { LlmFeatures, LlmFeatureSource } from '../../../ml/llm/types.js';
import type { FinetuneConfig } from '../../../ml/llm/tf/finetune-config.js';
import { restoreVariables, snapshotVariables } from '../../../ml/corella/weights.js';
import { initTf } from '../../../ml/tf/backend.js';
import { writeTinyGguf } from '../../helpers/tiny-gguf.js';
import { acceptanceWorld, TinyCrm, trainTinyCrm } from './fixtures.js';

/**
 * The LoRA branch through the real trainJoint, exported as the model version stores it (GGUF LoRA + the
 * LoRA head artifact), and reloaded through node-llama-cpp: llama.cpp's log-odds with the exported LoRA
 * must be the tfjs branch's, so what calibration and serving score is what joint training trained.
 */
const dir = mkdtempSync(join(tmpdir(), 'corella-joint-lora-export-'));
const modelPath = join(dir, 'tiny.gguf');
let model: LlamaTf;
let llm: LoadedLlm;
let modelSha256: string;

/** Prompts that carry the label's causes after a shared head (tokens of the tiny vocabulary). */
function promptOf(split: EncodedSplit, row: number): number[] {
  const [seg, level] = [split.categorical[2 * row], split.categorical[2 * row + 1]];
  return [1, 40, 41, 42, 50 + seg, 60 + level, 70 + (split.labels[row] > 0.5 ? 1 : 0), 43];
}

/** The LoRA branch never reads the frozen LLM's features: any call is a bug. */
const noFeatures: LlmFeatureSource = {
  features: () => Promise.reject(new Error('the LoRA branch must not ask for frozen LLM features')),
};

const config: JointConfigInput = {
  subset: 'random',
  stage2: { samples: 96, epochs: 2, batchSize: 16, learningRate: 0.02, crmLearningRate: 0.001 },
  stage3: { samples: 64, epochs: 1, batchSize: 16, learningRate: 0.02 },
  alignment: { sharedDim: 4 },
  validationSamples: 60,
  // The Platt fold: the head's a·z + b is then not the identity, and the export must carry it.
  calibrateOutput: 0.5,
  checkpointName: 'runs/lora-export/joint',
};

beforeAll(async () => {
  await initTf(undefined, () => undefined);
  writeTinyGguf(modelPath, { seed: 5, nLayer: 3, nHeadKv: 2 });
  model = await LlamaTf.load(modelPath);
  llm = await loadLlm(resolveLlmConfig({ model: modelPath, threads: 1, contextSize: 512 }));
  modelSha256 = await sha256File(modelPath);
});

afterAll(async () => {
  model?.dispose();
  await llm?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

function source(): LoraBranchSource {
  return {
    model,
    modelPath,
    modelSha256,
    template: 'test',
    answerTokens: [llm.yesToken, llm.noToken],
    promptOf,
  };
}

describe('trainJoint with llm.finetune lora, exported and reloaded', () => {
  it('exports the trained LoRA as GGUF + head; llama.cpp with it reproduces the tfjs branch', async () => {
    const { dataset } = acceptanceWorld(3, { train: 300, valid: 60, test: 10 });
    const crm = new TinyCrm([3, 6], { seed: 3 });
    await trainTinyCrm(crm, dataset.splits.train, 1);
    const store = new FileArtifactStore(join(dir, 'store'));
    // The frozen pass on two worker threads, as the pipeline runs it whatever llama.cpp's llm.threads is.
    const finetune: FinetuneConfig = {
      method: 'lora',
      layers: 2,
      rank: 4,
      alpha: 8,
      targets: ['q', 'v'],
      frozenThreads: 2,
    };
    // Stage 2 moves the CRM in place; a retried activity starts again from the stored stage-1 CRM.
    const stage1 = snapshotVariables(crm.trainableVariables());
    const r = await trainJoint({ crm, dataset, llm: noFeatures, store, config, finetune, lora: source() });
    try {
      expect(r.adapter).toBeInstanceOf(LoraHead);
      const head = r.adapter as LoraHead;
      expect(r.lora?.kind).toBe('lora');
      expect(r.stage2.epochs).toHaveLength(2);
      expect(r.stage3.epochs).toHaveLength(1);
      // Every stage-2, stage-3 and validation prompt went through the frozen pass, on the two threads asked for.
      expect(r.frozenPass).toMatchObject({ threads: 2, fromStore: 0 });
      expect(r.frozenPass!.computed).toBeGreaterThan(0);
      expect(r.outputCalibration).toBeDefined();
      expect(head.file.head).toEqual(r.lora!.output);
      expect(head.a).not.toBe(1);

      // (b) the branch artifact round-trips through the one loader; (a) the GGUF is its own blob.
      const loaded = loadLlmBranchModel(await store.get(r.artifacts.adapter.sha256));
      expect(loaded).toBeInstanceOf(LoraHead);
      expect((loaded as LoraHead).file).toEqual(head.file);
      expect(head.file).toMatchObject({
        branch: 'lora',
        loraSha256: r.artifacts.lora!.sha256,
        baseModelSha256: modelSha256,
        lora: { firstLayer: 1, rank: 4, alpha: 8, targets: ['q', 'v'] },
      });
      const loraPath = await store.localPath(r.artifacts.lora!.sha256);
      expect(await sha256File(loraPath)).toBe(r.artifacts.lora!.sha256);
      expect((await checkLoraForBase(modelPath, loraPath)).targets).toHaveLength(4);

      // llama.cpp (as the scorer runs it in the pipeline: F16 KV cache) with the exported LoRA.
      const validPrompts = Array.from(
        { length: 60 },
        (_, i) => promptOf(dataset.splits.valid, i) as LoadedLlm['yesToken'][],
      );
      const cfg = resolveLlmConfig({
        model: modelPath,
        threads: 1,
        contextSize: 512,
        hidden: false,
        lora: { path: loraPath },
      });
      const withLora = await loadLlm(cfg);
      const scorer = await LlmScorer.create(withLora, cfg);
      let scores: Awaited<ReturnType<LlmScorer['score']>>;
      try {
        scores = await scorer.score(validPrompts);
      } finally {
        await scorer.dispose();
        await withLora.dispose();
      }
      const zTf = r.lora!.logOdds('valid');
      const pTf = r.lora!.predict('valid');
      const features: LlmFeatures = {
        modelSha256,
        template: 'test',
        hiddenDim: 0,
        sampleIds: new Uint32Array(60),
        pYes: Float32Array.from(scores, (s) => s.pYes),
        logOdds: Float32Array.from(scores, (s) => s.logOdds),
        hidden: new Float32Array(0),
      };
      const pCpp = head.predict(features);
      const dz = Math.max(...scores.map((s, i) => Math.abs(s.logOdds - zTf[i])));
      const dp = Math.max(...Array.from(pCpp, (p, i) => Math.abs(p - pTf[i])));
      const dpYes = Math.max(...scores.map((s, i) => Math.abs(s.pYes - 1 / (1 + Math.exp(-zTf[i])))));
      console.log(
        `head ${head.a.toFixed(3)}·z + ${head.b.toFixed(3)}; llama.cpp + exported LoRA vs tfjs on 60 prompts: z in [${Math.min(...zTf).toFixed(2)}, ${Math.max(...zTf).toFixed(2)}], max |Δz| ${dz.toExponential(2)}, max |ΔpYes| ${dpYes.toExponential(2)}, max |Δp(click)| ${dp.toExponential(2)}`,
      );
      // Training moved the answers: the agreement is that of the trained LoRA, not of two base models.
      const zBase = await (async () => {
        const s = await LlmScorer.create(
          llm,
          resolveLlmConfig({ model: modelPath, threads: 1, hidden: false }),
        );
        try {
          return (await s.score(validPrompts)).map((x) => x.logOdds);
        } finally {
          await s.dispose();
        }
      })();
      expect(Math.max(...zBase.map((z, i) => Math.abs(z - zTf[i])))).toBeGreaterThan(0.1);
      // llama.cpp keeps K/V in F16 here (the served default); tfjs is f32 throughout.
      expect(dz).toBeLessThan(1e-2);
      expect(dpYes).toBeLessThan(2e-3);
      expect(dp).toBeLessThan(5e-3);

      // A head given features of another base model refuses them by name.
      expect(() => head.predict({ ...features, modelSha256: 'e'.repeat(64) })).toThrow(/base/);
      expect(() => head.checkBase('e'.repeat(64))).toThrow(CorellaError);
    } finally {
      r.lora?.dispose();
      r.projections.dispose();
    }

    // A retry of the finished run resumes from its last checkpoint and exports the same two blobs.
    restoreVariables(crm.trainableVariables(), stage1, 'stage-1 CRM');
    const again = await trainJoint({
      crm,
      dataset,
      llm: noFeatures,
      store,
      config,
      finetune,
      lora: source(),
    });
    try {
      expect(again.resumedFrom).toBe('stage3:1');
      expect(again.artifacts.lora!.sha256).toBe(r.artifacts.lora!.sha256);
      expect(again.artifacts.adapter.sha256).toBe(r.artifacts.adapter.sha256);
    } finally {
      again.lora?.dispose();
      again.projections.dispose();
      crm.dispose();
    }
  }, 300_000);

  // threads 2: stage 3's steps on the LoRA branch's worker threads (llm.finetune.threads).
  it.each([1, 2])(
    'a run stopped after a stage-2 epoch resumes with its Adam state and equals an uninterrupted run (threads %i)',
    async (threads) => {
      const { dataset } = acceptanceWorld(6, { train: 200, valid: 40, test: 5 });
      const finetune: FinetuneConfig = {
        method: 'lora',
        layers: 1,
        rank: 2,
        alpha: 4,
        threads,
        frozenThreads: 1,
      };
      const cfg: JointConfigInput = {
        ...config,
        stage2: { samples: 64, epochs: 3, batchSize: 16, learningRate: 0.02, crmLearningRate: 0.001 },
        stage3: { samples: 32, epochs: 2, batchSize: 16, learningRate: 0.02 },
        validationSamples: 40,
        calibrateOutput: 0,
        boundaryShift: false,
      };
      const crm = new TinyCrm([3, 6], { seed: 3 });
      await trainTinyCrm(crm, dataset.splits.train, 1);
      const stage1 = snapshotVariables(crm.trainableVariables());
      const run = async (store: FileArtifactStore, stopAt?: { stage: string; done: number }) => {
        restoreVariables(crm.trainableVariables(), stage1, 'stage-1 CRM');
        const ac = new AbortController();
        const r = await trainJoint({
          crm,
          dataset,
          llm: noFeatures,
          store,
          config: cfg,
          finetune,
          lora: source(),
          signal: ac.signal,
          onProgress: (p) => {
            if (stopAt && p.stage === stopAt.stage && p.done === stopAt.done) ac.abort(new Error('killed'));
          },
        });
        const out = {
          lora: r.artifacts.lora!.sha256,
          crm: JSON.stringify(snapshotVariables(crm.trainableVariables())),
          resumedFrom: r.resumedFrom,
        };
        r.lora?.dispose();
        r.projections.dispose();
        return out;
      };
      const whole = await run(new FileArtifactStore(join(dir, 'whole')));
      for (const stopAt of [
        { stage: 'stage2', done: 1 },
        { stage: 'stage3', done: 1 },
      ]) {
        const store = new FileArtifactStore(join(dir, `killed-${stopAt.stage}`));
        await expect(run(store, stopAt)).rejects.toThrow();
        const ckpt = JSON.parse((await store.getNamed(`${cfg.checkpointName}/latest`))!.toString('utf8')) as {
          phase: string;
          epochsDone: number;
          optimizers?: string;
        };
        expect(ckpt).toMatchObject({ phase: stopAt.stage, epochsDone: 1 });
        expect(ckpt.optimizers).toMatch(/^[0-9a-f]{64}$/);
        const resumed = await run(store);
        expect(resumed.resumedFrom).toBe(`${stopAt.stage}:1`);
        // The same GGUF LoRA, byte for byte, and the same CRM: nothing of the interruption is left.
        expect(resumed.lora, stopAt.stage).toBe(whole.lora);
        expect(resumed.crm === whole.crm, stopAt.stage).toBe(true);
      }
      crm.dispose();
    },
    300_000,
  );

  it("a checkpoint's key ignores tf variable names, which differ between worker processes", () => {
    // Two CRMs with the same weights and other variable names: a retry in a fresh process loads the stage-1
    // CRM as the second, and must find the killed attempt's checkpoint.
    const a = new TinyCrm([3, 6], { seed: 3 });
    const b = new TinyCrm([3, 6], { seed: 3 });
    expect(a.trainableVariables()[0].name).not.toBe(b.trainableVariables()[0].name);
    const cfg = resolveJointConfig(config);
    const lora = { finetune: { method: 'lora' }, model: modelSha256 };
    expect(jointConfigHash(cfg, 'ds-1', b, lora)).toBe(jointConfigHash(cfg, 'ds-1', a, lora));
    // The branch kind is part of it: a LoRA run never resumes an adapter run's checkpoint.
    expect(jointConfigHash(cfg, 'ds-1', a)).not.toBe(jointConfigHash(cfg, 'ds-1', a, lora));
    a.dispose();
    b.dispose();
  });

  it('refuses a LoRA finetune without a LoRA model, and a damaged branch artifact, naming the field', async () => {
    const { dataset } = acceptanceWorld(4, { train: 200, valid: 40, test: 5 });
    const crm = new TinyCrm([3, 6], { seed: 3 });
    const store = new FileArtifactStore(join(dir, 'store-bad'));
    const err = await trainJoint({
      crm,
      dataset,
      llm: noFeatures,
      store,
      config,
      finetune: { method: 'lora' },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorellaError);
    expect(err).toMatchObject({ code: 'BAD_CONFIG', details: { field: 'llm.finetune.method' } });
    crm.dispose();

    const good = {
      kind: 'corella-llm-branch',
      version: 1,
      branch: 'lora',
      loraSha256: 'a'.repeat(64),
      baseModelSha256: 'b'.repeat(64),
      template: 'paper',
      head: { a: 1.5, b: -0.25 },
      lora: { firstLayer: 1, rank: 4, alpha: 8, targets: ['q', 'v'] },
    };
    const head = loadLlmBranchModel(JSON.stringify(good)) as LoraHead;
    // sigmoid(1.5·z − 0.25), row by row.
    const p = head.predict({
      modelSha256: 'b'.repeat(64),
      template: 'paper',
      hiddenDim: 0,
      sampleIds: new Uint32Array(2),
      pYes: new Float32Array(2),
      logOdds: Float32Array.from([0, 2]),
      hidden: new Float32Array(0),
    });
    expect(p[0]).toBeCloseTo(1 / (1 + Math.exp(0.25)), 6);
    expect(p[1]).toBeCloseTo(1 / (1 + Math.exp(-2.75)), 6);
    for (const [field, bad] of [
      ['loraSha256', { ...good, loraSha256: 'nope' }],
      ['head', { ...good, head: { a: 'x', b: 0 } }],
      ['kind', { ...good, version: 2 }],
    ] as const) {
      const e = (() => {
        try {
          loadLlmBranchModel(JSON.stringify(bad));
        } catch (x) {
          return x;
        }
      })();
      expect(e, field).toMatchObject({ code: 'ARTIFACT_CORRUPT', details: { field } });
    }
    expect(() => loadLlmBranchModel('{not json')).toThrow(/not valid JSON/);
    // An adapter artifact still loads as the adapter.
    const adapter = LlmAdapter.create({ hiddenDim: 4, layers: [3], seed: 1 });
    const back = loadLlmBranchModel(adapter.serialize());
    expect(back).toBeInstanceOf(LlmAdapter);
    adapter.dispose();
    back.dispose();
  });
});
