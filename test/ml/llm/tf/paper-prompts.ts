import type { Token } from 'node-llama-cpp';
import type { LoadedLlm } from '../../../../ml/llm/model.js';
import { PromptBuilder, templateByName } from '../../../../ml/llm/prompts.js';

/** The pipeline's paper-template prompts for one history and several targets, tokenized by `llm`. */
export function paperPrompts(
  llm: LoadedLlm,
  history: { title: string; rating: number }[],
  targets: string[],
): Token[][] {
  const b = new PromptBuilder(
    { tokenize: (t, s, o) => llm.model.tokenize(t, s, o), bos: llm.model.tokens.bos },
    templateByName('paper'),
    { contextSize: 512, targetReserveTokens: 16 },
  );
  const h = history.map((e) => ({ ...e, genres: '' }));
  return targets.map((t) => b.build(h, t).tokens);
}
