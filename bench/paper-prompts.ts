import { resolveLlmConfig, type ResolvedLlmConfig } from '../ml/llm/config.js';
import { loadLlm } from '../ml/llm/model.js';
import { PromptBuilder, templateByName } from '../ml/llm/prompts.js';

/**
 * The LLM and the prompt builder the pipeline uses (paper template, hidden states on), opened the way the
 * LoRA benchmarks need them: both bench/lora.ts and bench/lora-forward.ts build exactly the pipeline's
 * prompts, so a figure measured on one is comparable with the other.
 */
export async function openPaperPrompts(o: {
  model: string;
  threads: number;
  contextSize: number;
  maxHistory: number;
  block: number;
}): Promise<{ cfg: ResolvedLlmConfig; llm: Awaited<ReturnType<typeof loadLlm>>; builder: PromptBuilder }> {
  const cfg = resolveLlmConfig({
    model: o.model,
    threads: o.threads,
    contextSize: o.contextSize,
    template: 'paper',
    hidden: true,
    maxHistoryItems: o.maxHistory,
    historyBlock: o.block,
  });
  const llm = await loadLlm(cfg);
  const bos = llm.model.tokens.shouldPrependBosToken ? llm.model.tokens.bos : null;
  const builder = new PromptBuilder(
    { tokenize: (t, s, opts) => llm.model.tokenize(t, s, opts), bos },
    templateByName('paper'),
    {
      contextSize: o.contextSize,
      maxHistoryItems: o.maxHistory,
      historyBlock: o.block,
      targetReserveTokens: cfg.targetReserveTokens,
    },
  );
  return { cfg, llm, builder };
}
