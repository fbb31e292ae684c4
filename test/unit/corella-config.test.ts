import { describe, expect, it } from 'vitest';
import { calibrationConfigOf, jointConfigOf, llmConfigOf } from '../../activities/corella-config.js';
import { loadPipelineConfig } from '../../cli/config.js';
import { resolveJointConfig } from '../../ml/corella/joint.js';
import { resolveLlmConfig } from '../../ml/llm/config.js';

describe('shipped pipeline configs reach the ML layer intact', () => {
  it('default (synthetic up): item affinity over 50 history items, adapter on the trailing 4 inputs, cold items routed', async () => {
    const config = await loadPipelineConfig('default');
    const withModel = { ...config, llm: { ...config.llm, model: 'm.gguf' } };
    const llm = resolveLlmConfig(llmConfigOf(withModel, '/tmp/home'));
    expect(llm.itemAffinity).toEqual({
      prompt: 'Movie: {title}. Genre:',
      referenceItems: 256,
      historyItems: 50,
    });
    const joint = resolveJointConfig(jointConfigOf(config, 'run-1'));
    expect(joint.adapter).toEqual({ layers: [64, 32], inputTail: 4 });
    expect(calibrationConfigOf(config).coldItems).toBe(true);
  });

  it('ml-1m-cpu fine-tunes the LLM with LoRA on the paper prompt (no affinity features)', async () => {
    const config = await loadPipelineConfig('ml-1m-cpu');
    const withModel = { ...config, llm: { ...config.llm, model: 'm.gguf' } };
    const llm = resolveLlmConfig(llmConfigOf(withModel, '/tmp/home'));
    expect(llm.itemAffinity).toBeUndefined();
    expect(llm.template).toBe('paper');
    expect(config.llm?.finetune).toMatchObject({ method: 'lora', layers: 2, rank: 8, targets: ['q', 'v'] });
    // The 4,000 stage-3 rows that fit 45 minutes with the Q8_0 model (docs/llm-branch.md).
    expect(config.joint?.stage3?.samples).toBe(4000);
  });

  it('ml-1m-adapter keeps the frozen LLM and the paper inputs (full adapter input)', async () => {
    const config = await loadPipelineConfig('ml-1m-adapter');
    const withModel = { ...config, llm: { ...config.llm, model: 'm.gguf' } };
    const llm = resolveLlmConfig(llmConfigOf(withModel, '/tmp/home'));
    expect(llm.itemAffinity).toBeUndefined();
    expect(config.llm?.finetune?.method ?? 'none').toBe('none');
    expect(resolveJointConfig(jointConfigOf(config, 'run-1')).adapter.inputTail).toBeUndefined();
  });
});
