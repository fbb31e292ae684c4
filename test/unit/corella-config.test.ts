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

  it('ml-1m-cpu keeps the paper inputs (no affinity features, full adapter input)', async () => {
    const config = await loadPipelineConfig('ml-1m-cpu');
    const withModel = { ...config, llm: { ...config.llm, model: 'm.gguf' } };
    const llm = resolveLlmConfig(llmConfigOf(withModel, '/tmp/home'));
    expect(llm.itemAffinity).toBeUndefined();
    expect(resolveJointConfig(jointConfigOf(config, 'run-1')).adapter.inputTail).toBeUndefined();
  });
});
