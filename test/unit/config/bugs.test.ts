/**
 * The config bugs of issue 15, each through the entry point that had it (all of these passed a bad or
 * half-read config on the code before the schema).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { llmConfigOf } from '../../../activities/corella-config.js';
import { stageOnePlan } from '../../../activities/train-crm.js';
import { loadPipelineConfig, retrainWorkflowId } from '../../../cli/config.js';
import { CorellaError } from '../../../ml/errors.js';
import { resolveLlmConfig } from '../../../ml/llm/config.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'corella-config-bugs-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function loadError(config: unknown): Promise<CorellaError> {
  const path = join(dir, `c-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(path, JSON.stringify(config));
  const err = await loadPipelineConfig(path).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `${JSON.stringify(config)} was accepted`).toBeInstanceOf(CorellaError);
  expect((err as CorellaError).code).toBe('BAD_CONFIG');
  expect((err as CorellaError).message).toContain(path);
  return err as CorellaError;
}

describe('config bugs (issue 15)', () => {
  it('an unknown key is an error naming its path, with the key it most likely misspells', async () => {
    const e = await loadError({ crm: { epoch: 5 } });
    expect(e.message).toContain('crm.epoch: unknown key; did you mean epochs?');
    expect(e.details.field).toBe('crm.epoch');
    // The activities read the same schema: a workflow handed the typo fails as well.
    expect(() => stageOnePlan({ crm: { epoch: 5 } } as never)).toThrow(/crm\.epoch: unknown key/);
  });

  it('"epochs": "5" is a type error, not the default of 3', async () => {
    const e = await loadError({ crm: { epochs: '5' } });
    expect(e.message).toMatch(/crm\.epochs: expected a number, got "5"/);
    expect(() => stageOnePlan({ crm: { epochs: '5' } } as never)).toThrow(/crm\.epochs/);
    expect(stageOnePlan({ crm: { epochs: 5 } }).trainer.epochs).toBe(5);
    expect(stageOnePlan({}).trainer.epochs).toBe(3);
  });

  it('llm.flashAttention reaches the LLM', () => {
    const llm = llmConfigOf({ llm: { model: 'm.gguf', flashAttention: true } }, '/tmp/home');
    expect(llm.flashAttention).toBe(true);
    expect(resolveLlmConfig(llm).flashAttention).toBe(true);
    expect(resolveLlmConfig(llmConfigOf({ llm: { model: 'm.gguf' } }, '/tmp/home')).flashAttention).toBe(
      false,
    );
  });

  it('crm.kind chooses the stage-1 model; an unknown kind is a config error', async () => {
    const dcn = stageOnePlan({ crm: { kind: 'dcnv2' } });
    expect(dcn.models.map((m) => [m.prefix, m.config.kind])).toEqual([
      ['crm', 'dcnv2'],
      ['lr', 'lr'],
    ]);
    const lr = stageOnePlan({ crm: { kind: 'lr' } });
    // The model that goes on to joint training (prefix crm) is the LR; no second LR beside it.
    expect(lr.models.map((m) => [m.prefix, m.config.kind])).toEqual([['crm', 'lr']]);
    expect(lr.models[0].config.mlp).toEqual([]);
    expect(stageOnePlan({ crm: { baseline: false } }).models.map((m) => m.prefix)).toEqual(['crm']);
    const e = await loadError({ crm: { kind: 'xgboost' } });
    expect(e.message).toMatch(/crm\.kind: expected "dcnv2" or "lr", got "xgboost"/);
  });

  it("the CRM trainer's threads are reachable from a config", async () => {
    expect(stageOnePlan({ crm: { threads: 2 } }).trainer.threads).toBe(2);
    expect(stageOnePlan({}).trainer.threads).toBe('auto');
    expect(stageOnePlan({ crm: { threads: 2, dataParallel: true } }).trainer.dataParallel).toBe(true);
    expect((await loadError({ crm: { threads: 65 } })).message).toContain('crm.threads');
    expect((await loadError({ crm: { dataParallel: true, batchNorm: true } })).message).toMatch(
      /crm\.dataParallel: .*batchNorm/,
    );
  });

  it('the workflow id depends on the experiment, not on the machine or how defaults are spelt', () => {
    const data = { source: 'movielens-1m' as const, dir: '/d' };
    const sha = 'a'.repeat(64);
    const base = retrainWorkflowId(data, { llm: { model: '/home/a/m.gguf', modelSha256: sha } });
    // llm.threads follows the core count only when the model is opened: 'auto' is what is hashed.
    expect(
      retrainWorkflowId(data, { llm: { model: '/home/a/m.gguf', modelSha256: sha, threads: 'auto' } }).id,
    ).toBe(base.id);
    // The same model file at another path, and defaults written out, are the same experiment.
    expect(retrainWorkflowId(data, { llm: { model: '/srv/b/m.gguf', modelSha256: sha } }).id).toBe(base.id);
    expect(
      retrainWorkflowId(data, {
        crm: { epochs: 3, kind: 'dcnv2' },
        llm: { model: '/x.gguf', modelSha256: sha },
      }).id,
    ).toBe(base.id);
    // A real change is a different run.
    expect(
      retrainWorkflowId(data, { crm: { epochs: 4 }, llm: { model: '/x.gguf', modelSha256: sha } }).id,
    ).not.toBe(base.id);
    expect(
      retrainWorkflowId(data, { llm: { model: '/home/a/m.gguf', modelSha256: sha, threads: 2 } }).id,
    ).not.toBe(base.id);
  });
});
