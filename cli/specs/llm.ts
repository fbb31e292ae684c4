import { defineCommand } from '../args.js';

export const llmSpec = defineCommand({
  name: 'llm',
  summary: 'the LLM file: rewrite a 4-bit GGUF as Q8_0, which llama.cpp runs 1.6× faster here',
  usage: ['requantize MODEL.gguf'],
  description:
    "requantize rewrites the Q4_0/Q4_1 matrices of a GGUF model as Q8_0 (llama.cpp's reference rounding) and " +
    'copies everything else, metadata included, byte for byte. The new file is a new model to corella (its ' +
    'sha256 keys the feature caches): pass it with --model or CORELLA_LLM_MODEL.',
  options: {
    out: {
      type: 'string',
      placeholder: 'PATH',
      description: 'where to write it',
      defaultText: 'MODEL with Q4_0/Q4_1 in its name replaced by Q8_0, else MODEL.Q8_0.gguf',
    },
  },
  positionals: true,
  examples: [
    'corella llm requantize .corella/models/SmolLM2-135M-Instruct.Q4_1.gguf',
    'corella up --model .corella/models/SmolLM2-135M-Instruct.Q8_0.gguf',
  ],
});
