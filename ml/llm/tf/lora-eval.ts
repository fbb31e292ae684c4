import * as tf from '@tensorflow/tfjs-core';
import { throwIfAborted } from '../../progress.js';
import { disposeRope, llamaBlock, rmsNorm, ropeTables, type LayerLora, type PastKv } from './llama-block.js';
import type { AdaptedBlocks } from './lora-loss.js';

/**
 * Prompts per evaluation group. A group is one chain of prefix reuse (chainLogOdds) and starts fresh, so a
 * prompt's log-odds depends on its group alone, never on how many threads shared the groups out: one
 * thread and two give the same bits. The price is one full-length pass per group where a single chain
 * would reuse a prefix, about 1/32 more tokens on the pipeline's prompts.
 */
export const EVAL_GROUP = 32;

/** [start, end) of each evaluation group of n prompts, in order. */
export function evalGroups(n: number): [number, number][] {
  const out: [number, number][] = [];
  for (let s = 0; s < n; s += EVAL_GROUP) out.push([s, Math.min(n, s + EVAL_GROUP)]);
  return out;
}

/**
 * logit_yes − logit_no of each prompt of one chain, in order, under the LoRA `lora` (no gradients).
 * Consecutive prompts of a history block share a prefix token for token, and while the LoRA stays fixed,
 * causal attention makes the adapted blocks' outputs on that prefix the same in both prompts. So, as the
 * frozen pass does, the previous prompt's adapted keys and values are kept and only the new tokens run
 * through the adapted blocks: on the pipeline's ml-1m prompts that is about a third of the tokens.
 * `input(i)` is prompt i's first adapted block input [T, nEmbd]; it is called inside a tidy, which frees it.
 * The same function runs on the trainer's thread and in the workers (lora-worker.ts).
 */
export function chainLogOdds(
  m: AdaptedBlocks,
  lora: readonly (LayerLora | undefined)[],
  prompts: readonly (readonly number[])[],
  input: (i: number) => tf.Tensor2D,
  signal?: AbortSignal,
): Float32Array {
  const { hp, firstLayer: first } = m;
  const out = new Float32Array(prompts.length);
  let prev: { tokens: readonly number[]; kv: PastKv[] } | undefined;
  const release = (kv: PastKv[]) => {
    for (const x of kv) tf.dispose([x.k, x.v]);
  };
  try {
    for (let i = 0; i < prompts.length; i++) {
      throwIfAborted(signal);
      const tokens = prompts[i];
      const T = tokens.length;
      let common = 0;
      if (prev) {
        const p = prev.tokens;
        while (common < p.length && common < T && p[common] === tokens[common]) common++;
        // At least one token runs: the last position's output is the answer.
        common = Math.min(common, T - 1);
      }
      const kv: PastKv[] = [];
      const past = prev;
      try {
        out[i] = tf.tidy(() => {
          const x = input(i);
          const fresh = common > 0 ? (tf.slice(x, [common, 0], [-1, -1]) as tf.Tensor2D) : x;
          const rope = ropeTables(
            hp,
            Array.from({ length: T - common }, (_, j) => common + j),
          );
          try {
            let h = fresh;
            for (let l = first; l < hp.nLayer; l++) {
              const p = past?.kv[l - first];
              h = llamaBlock(hp, m.layers[l]!, h, rope, {
                lora: lora[l],
                lastOnly: l === hp.nLayer - 1,
                past:
                  common > 0 && p
                    ? {
                        k: tf.slice(p.k, [0, 0, 0], [-1, common, -1]),
                        v: tf.slice(p.v, [0, 0, 0], [-1, common, -1]),
                      }
                    : undefined,
                onKv: (y) => kv.push(y),
              });
            }
            const z = tf.matMul(rmsNorm(h, m.outputNorm, hp.rmsEps), m.answerRows, false, true).dataSync();
            return z[0] - z[1];
          } finally {
            disposeRope(rope);
          }
        });
      } catch (e) {
        release(kv);
        throw e;
      }
      if (prev) release(prev.kv);
      prev = { tokens, kv };
    }
  } finally {
    if (prev) release(prev.kv);
  }
  return out;
}
