import type { PipelineConfig } from '../../activities/types.js';

/** A config small enough for a test: every stage runs for real, on a few hundred samples. */
export function tinyPipelineConfig(modelPath: string): PipelineConfig {
  return {
    crm: { embeddingDim: 8, crossLayers: 2, mlp: [32, 16], epochs: 2, batchSize: 256, patience: 1 },
    llm: { model: modelPath, threads: 1, contextSize: 512, pools: { valid: 80, test: 100, seed: 3 } },
    joint: {
      subset: 'random',
      stage2: { samples: 150, epochs: 1, batchSize: 64 },
      stage3: { samples: 60, epochs: 1, batchSize: 64 },
      adapter: { layers: [16, 8] },
      alignment: { sharedDim: 8 },
      validationSamples: 40,
    },
    calibration: { metric: 'auc', maxRoutedFraction: 0.3 },
    promotion: { metric: 'calibration.hybrid.auc', margin: 0 },
  };
}
