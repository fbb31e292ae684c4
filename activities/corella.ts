import { Context } from '@temporalio/activity';
import { CalibrationRepository } from '../db/repositories/calibrations.js';
import { EvaluationRepository } from '../db/repositories/evaluations.js';
import { RunRepository } from '../db/repositories/runs.js';
import type { ArtifactStore } from '../ml/artifacts/store.js';
import type { LlmAdapter } from '../ml/corella/adapter.js';
import type { LoraHead } from '../ml/corella/llm-branch-model.js';
import { calibrateThreshold } from '../ml/corella/calibration.js';
import { evaluateAlignment } from '../ml/corella/evaluation.js';
import { evaluateHybrid, type HybridEvaluation } from '../ml/corella/hybrid-evaluation.js';
import { samplePool } from '../ml/corella/sampling.js';
import { testPoolRows } from '../ml/corella/row-plan.js';
import { trainJoint, type LoraBranchSource } from '../ml/corella/joint.js';
import { loadCrm, saveCrm, type CrmNet } from '../ml/crm/index.js';
import type { CtrDataset } from '../ml/data/index.js';
import type { LlmFeatureExtractor } from '../ml/llm/index.js';
import { LlamaTf } from '../ml/llm/tf/llama-forward.js';
import { initTf } from '../ml/tf/index.js';
import { resolvePipelineConfig } from '../schema/pipeline.js';
import type { ActivityContext } from './context.js';
import {
  calibrationConfigOf,
  calibrationRow,
  jointConfigOf,
  llmPoolsOf,
  storableThreshold,
} from './corella-config.js';
import { loadBranchModel, openBranchExtractor } from './llm-branch.js';
import { datasetForVersion } from './datasets.js';
import { activityRunOptions } from './heartbeat.js';
import { METRIC_PREFIX, prefixMetrics, scoreMetrics } from './metric-keys.js';
import { rowPlanConfigOf } from './row-plan.js';
import type { CorellaActivities, Metrics, PipelineConfig } from './types.js';

/** Finite numbers only: Postgres metrics and workflow summaries have no use for NaN. */
function finite(m: Metrics): Metrics {
  return Object.fromEntries(Object.entries(m).filter(([, v]) => Number.isFinite(v)));
}

interface Loaded {
  dataset: CtrDataset;
  crm: CrmNet;
  llm: LlmFeatureExtractor;
  /** The LLM branch: an adapter, or a LoRA head whose features `llm` computes with its LoRA. */
  adapter?: LlmAdapter | LoraHead;
  dispose(): Promise<void>;
}

/** Dataset, CRM, LLM source and (optionally) LLM branch of one run, released together. */
async function loadRunModels(
  ctx: ActivityContext,
  a: { config: PipelineConfig; datasetVersionId: string; crmArtifact: string; adapterArtifact?: string },
): Promise<Loaded> {
  await initTf();
  const dataset = await datasetForVersion(ctx.store, a.datasetVersionId);
  const crm = await loadCrm(ctx.store, a.crmArtifact, dataset.featureMap);
  let adapter: LlmAdapter | LoraHead | undefined;
  let llm: LlmFeatureExtractor;
  try {
    adapter = a.adapterArtifact ? await loadBranchModel(ctx.store, a.adapterArtifact) : undefined;
    llm = await openBranchExtractor(a.config, ctx, adapter);
  } catch (e) {
    crm.dispose();
    adapter?.dispose();
    throw e;
  }
  return {
    dataset,
    crm,
    llm,
    adapter,
    async dispose() {
      crm.dispose();
      adapter?.dispose();
      await llm.dispose();
    },
  };
}

async function logRunMetrics(ctx: ActivityContext, runId: string, metrics: Metrics): Promise<void> {
  await new RunRepository(ctx.db).logMetrics(runId, finite(metrics));
}

async function putJson(store: ArtifactStore, value: unknown): Promise<string> {
  return (await store.put(JSON.stringify(value))).sha256;
}

/**
 * With llm.finetune.method lora, the tfjs twin of the run's GGUF and the pipeline's prompts for the joint
 * trainer's LoRA branch (the tokenizer is llama.cpp's, through the frozen extractor). The caller disposes
 * the model.
 */
async function loraSourceFor(m: Loaded, config: PipelineConfig): Promise<LoraBranchSource | undefined> {
  if (resolvePipelineConfig(config).llm.finetune.method !== 'lora') return undefined;
  const { promptOf, answerTokens } = await m.llm.promptTokens();
  const model = await LlamaTf.load(m.llm.modelPath);
  return {
    model,
    modelPath: m.llm.modelPath,
    modelSha256: m.llm.modelSha256,
    template: m.llm.template.name,
    answerTokens,
    promptOf: (split, row) => promptOf(split, m.dataset.items, row),
  };
}

/** Stages 2 and 3, calibration on validation, and the alignment evaluation on test. */
export function corellaActivities(
  ctx: ActivityContext,
): Pick<CorellaActivities, 'trainJoint' | 'calibrateThreshold' | 'evaluateAlignment'> {
  return {
    async trainJoint({ runId, config, datasetVersionId, crmArtifact }) {
      const m = await loadRunModels(ctx, { config, datasetVersionId, crmArtifact });
      const run = activityRunOptions('joint');
      let lora: LoraBranchSource | undefined;
      try {
        lora = await loraSourceFor(m, config);
        // Stage 2 updates the CRM in place; a retry resumes from the named joint checkpoint of this run.
        const r = await trainJoint({
          crm: m.crm,
          dataset: m.dataset,
          llm: m.llm,
          config: jointConfigOf(config, runId),
          store: ctx.store,
          finetune: resolvePipelineConfig(config).llm.finetune,
          lora,
          signal: run.signal,
          onProgress: run.onProgress,
        });
        try {
          const crmRef = await saveCrm(m.crm, ctx.store, { runId, datasetVersionId, stage: 'joint' });
          const metrics: Metrics = {
            'stage2.samples': r.stage2.samples,
            'stage2.meanCrmEntropy': r.stage2.meanCrmEntropy,
            'stage2.samplesPerSec': r.stage2.samplesPerSec,
            'stage3.samples': r.stage3.samples,
            'stage3.meanCrmEntropy': r.stage3.meanCrmEntropy,
          };
          const last2 = r.stage2.epochs.at(-1);
          if (last2) Object.assign(metrics, { 'stage2.loss': last2.total, 'stage2.lossAlign': last2.align });
          const last3 = r.stage3.epochs.at(-1);
          if (last3) metrics['stage3.loss'] = last3.total;
          for (const [name, st] of [
            ['stage2', r.stage2],
            ['stage3', r.stage3],
          ] as const) {
            if (st.validation)
              Object.assign(
                metrics,
                scoreMetrics(`${name}.valid.crm`, st.validation.crm),
                scoreMetrics(`${name}.valid.llm`, st.validation.llm),
              );
          }
          // A retried attempt says where it resumed (e.g. resumedFrom.stage2 = 1: after stage 2's first epoch).
          metrics.attempt = Context.current().info.attempt;
          if (r.resumedFrom) {
            const [phase, done] = r.resumedFrom.split(':');
            metrics[`resumedFrom.${phase}`] = Number(done);
          }
          if (r.frozenPass) {
            const fp = r.frozenPass;
            Object.assign(metrics, {
              'frozenPass.computed': fp.computed,
              'frozenPass.fromStore': fp.fromStore,
              'frozenPass.seconds': fp.seconds,
              'frozenPass.threads': fp.threads,
            });
          }
          if (r.outputCalibration) {
            const oc = r.outputCalibration;
            Object.assign(
              metrics,
              { 'outputCalibration.a': oc.a, 'outputCalibration.b': oc.b, 'outputCalibration.rows': oc.rows },
              scoreMetrics('outputCalibration.before', oc.before),
              scoreMetrics('outputCalibration.after', oc.after),
            );
          }
          if (r.boundaryShift) {
            for (const [when, b] of Object.entries(r.boundaryShift)) {
              Object.assign(metrics, {
                [`shift.${when}.agreement`]: b.agreement,
                [`shift.${when}.logitCorrelation`]: b.logitCorrelation,
                [`shift.${when}.meanAbsDiff`]: b.meanAbsDiff,
                [`shift.${when}.alignLoss`]: b.alignLoss,
              });
            }
            await new EvaluationRepository(ctx.db).record({
              runId,
              kind: 'boundary-shift',
              payload: { ...r.boundaryShift, pairs: r.pairs },
            });
          }
          const clean = finite(metrics);
          // Loss curves per 1-based epoch for the report (step 0 keeps the last epoch's value as the summary).
          const runs = new RunRepository(ctx.db);
          for (const [name, st] of [
            ['stage2', r.stage2],
            ['stage3', r.stage3],
          ] as const) {
            for (const e of st.epochs) {
              const curve = finite(
                prefixMetrics(METRIC_PREFIX.joint, {
                  [`${name}.loss`]: e.total,
                  [`${name}.lossLlm`]: e.llm,
                  [`${name}.lossCrm`]: e.crm,
                  [`${name}.lossAlign`]: e.align,
                }),
              );
              await runs.logMetrics(runId, curve, e.epoch + 1);
            }
          }
          await logRunMetrics(ctx, runId, prefixMetrics(METRIC_PREFIX.joint, clean));
          return {
            crmArtifact: crmRef.sha256,
            adapterArtifact: r.artifacts.adapter.sha256,
            ...(r.artifacts.lora ? { loraArtifact: r.artifacts.lora.sha256 } : {}),
            metrics: clean,
          };
        } finally {
          r.adapter.dispose();
          r.lora?.dispose();
          r.projections.dispose();
        }
      } finally {
        lora?.model.dispose();
        await m.dispose();
      }
    },

    async calibrateThreshold({ runId, config, datasetVersionId, crmArtifact, adapterArtifact }) {
      const m = await loadRunModels(ctx, { config, datasetVersionId, crmArtifact, adapterArtifact });
      const run = activityRunOptions('calibration');
      try {
        const cal = await calibrateThreshold({
          crm: m.crm,
          adapter: m.adapter!,
          llm: m.llm,
          split: m.dataset.splits.valid,
          items: m.dataset.items,
          config: calibrationConfigOf(config),
          signal: run.signal,
          onProgress: run.onProgress,
        });
        const curveArtifact = await putJson(ctx.store, cal);
        await new CalibrationRepository(ctx.db).record(calibrationRow(runId, cal));
        const metrics = finite({
          threshold: storableThreshold(cal.threshold),
          routedFraction: cal.chosen.routedFraction,
          ...scoreMetrics('hybrid', cal.chosen),
          ...scoreMetrics('crm', cal.crmOnly),
          rows: cal.n,
          llmRows: cal.llmRows,
          // The gain check that decided (the admissible one, else the best rejected one): see the reason
          // stored with the calibration row.
          gain: (cal.gainChecks.find((g) => g.admissible) ?? cal.gainChecks[0])?.gain,
          gainLo: (cal.gainChecks.find((g) => g.admissible) ?? cal.gainChecks[0])?.lo,
        });
        await logRunMetrics(ctx, runId, prefixMetrics(METRIC_PREFIX.calibration, metrics));
        return {
          threshold: storableThreshold(cal.threshold),
          routedFraction: cal.chosen.routedFraction,
          curveArtifact,
          metrics,
        };
      } finally {
        await m.dispose();
      }
    },

    async evaluateAlignment({ runId, config, datasetVersionId, crmArtifact, adapterArtifact, threshold }) {
      const m = await loadRunModels(ctx, { config, datasetVersionId, crmArtifact, adapterArtifact });
      const run = activityRunOptions('evaluation');
      try {
        const test = m.dataset.splits.test;
        const ev = await evaluateAlignment({
          crm: m.crm,
          adapter: m.adapter!,
          llm: m.llm,
          split: test,
          items: m.dataset.items,
          threshold,
          rows: testPoolRows(test, rowPlanConfigOf(config, runId).test),
          coldItems: calibrationConfigOf(config).coldItems,
          signal: run.signal,
          onProgress: run.onProgress,
        });
        // The hybrid's gain on a pool where the LLM runs only on routed rows (llm.pools.hybridTest).
        const pools = llmPoolsOf(config);
        let wide: HybridEvaluation | undefined;
        if (pools.hybridTest > 0) {
          wide = await evaluateHybrid({
            crm: m.crm,
            adapter: m.adapter!,
            llm: m.llm,
            items: m.dataset.items,
            threshold,
            coldItems: calibrationConfigOf(config).coldItems,
            split: test,
            rows: samplePool(test, pools.hybridTest, pools.seed, pools.block),
            seed: pools.seed,
            signal: run.signal,
            onProgress: run.onProgress,
          });
        }
        const predictions = await putJson(ctx.store, {
          rows: Array.from(ev.predictions.rows),
          labels: Array.from(ev.predictions.labels),
          pCrm: Array.from(ev.predictions.pCrm),
          pLlm: Array.from(ev.predictions.pLlm),
          pHybrid: Array.from(ev.predictions.pHybrid),
        });
        const row = await new EvaluationRepository(ctx.db).record({
          runId,
          kind: 'alignment',
          payload: {
            split: ev.split,
            n: ev.n,
            threshold: ev.threshold,
            routedFraction: ev.routedFraction,
            overall: ev.overall,
            buckets: ev.buckets,
            predictionsArtifact: predictions,
            ...(wide ? { wide } : {}),
          },
        });
        const metrics = finite({
          ...scoreMetrics('test.crm', ev.overall.crm),
          ...scoreMetrics('test.llm', ev.overall.llm),
          ...scoreMetrics('test.hybrid', ev.overall.hybrid),
          'test.routedFraction': ev.routedFraction,
          'test.rows': ev.n,
          ...(wide
            ? {
                'wide.rows': wide.n,
                'wide.llmRows': wide.routed,
                'wide.routedFraction': wide.routedFraction,
                ...scoreMetrics('wide.crm', wide.crm),
                ...scoreMetrics('wide.hybrid', wide.hybrid),
                ...(wide.gain
                  ? {
                      'wide.gain': wide.gain.auc,
                      'wide.gainLo': wide.gain.lo95,
                      'wide.gainHi': wide.gain.hi95,
                    }
                  : {}),
              }
            : {}),
        });
        await logRunMetrics(ctx, runId, prefixMetrics(METRIC_PREFIX.eval, metrics));
        return { evaluationId: String(row.id), metrics };
      } finally {
        await m.dispose();
      }
    },
  };
}
