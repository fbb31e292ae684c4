import * as tf from '@tensorflow/tfjs-core';
import { CorellaError } from '../../errors.js';
import { throwIfAborted } from '../../progress.js';
import {
  causalMask,
  disposeRope,
  llamaBlock,
  ropeTables,
  type AttentionSegment,
  type PastKv,
} from './llama-block.js';
import type { LlamaTf } from './llama-forward.js';
import type { FrozenOutputStore } from './frozen-store.js';
import { hostFrozenAvailable, hostFrozenPass } from './host-frozen.js';
import { buildPromptTrie, groupPrompts, trieSegment, type PromptTrie } from './prompt-trie.js';

/**
 * Trie nodes per batched frozen pass (computeBatch): enough rows for sgemm to run at speed (a history block
 * of 8 pipeline prompts is about 500 nodes), few enough that the masked attention, quadratic in the nodes,
 * costs little (attention runs per prompt; the nodes only bound the memory of one pass).
 */
export const DEFAULT_BATCH_NODES = 768;

/** One prompt's frozen outputs: [T, nEmbd] input of the first adapted block, and kept last-token rows. */
export interface FrozenEntry {
  input: Float32Array;
  lastHidden: Map<number, Float32Array>;
}

function entryBytes(e: FrozenEntry): number {
  let n = e.input.byteLength;
  for (const v of e.lastHidden.values()) n += v.byteLength;
  return n;
}

export interface FrozenStats {
  /** Prompts asked for. */
  prompts: number;
  /** Answered from the cache without running any layer. */
  hits: number;
  /** Tokens run through the frozen layers (prefix sharing makes this smaller than the prompts' tokens). */
  evaluatedTokens: number;
  promptTokens: number;
  /** Entries read back from the store after they left memory (or never entered it). */
  storeReads: number;
  /** Wall seconds spent in those reads (file read, checksum, decode). */
  storeReadSeconds: number;
}

/**
 * The per-token outputs of the frozen blocks 0..firstLayer−1 of each prompt: the input of the first adapted
 * block. LoRA training never changes them, so each prompt's frozen pass runs once and an epoch costs only
 * the adapted blocks. Keyed by the prompt's tokens (the model and firstLayer are fixed per instance).
 *
 * Consecutive prompts of a history block share a prefix token for token (ml/llm/prompts.ts), and causal
 * attention makes the prefix's outputs independent of what follows. So, like llama.cpp's KV-cache reuse in
 * the scorer, the frozen keys and values of the previous prompt are kept and only the new tokens are run.
 *
 * Memory: `maxBytes` bounds the decoded entries held (least recently used first out). An SmolLM2 entry is
 * ~197 tokens × 576 floats ≈ 450 KB, so keeping a whole run's entries cost ~5 GB at 6,600 prompts and
 * would not fit 20,000 on a 24 GB machine. With a store attached (`attachStore`, after or before the
 * frozen pass that writes every entry to it), an evicted or never-loaded entry is read back from the store,
 * bit for bit what was computed. Without a store an eviction would lose an entry that can only be
 * recomputed (and not bit-identically: the batched pass sums in another order), so exceeding the budget is
 * a typed error instead.
 */
export class FrozenPrefixCache {
  readonly stats: FrozenStats = {
    prompts: 0,
    hits: 0,
    evaluatedTokens: 0,
    promptTokens: 0,
    storeReads: 0,
    storeReadSeconds: 0,
  };
  private readonly entries = new Map<string, FrozenEntry>();
  private bytes = 0;
  private peakBytes = 0;
  private backing?: FrozenOutputStore;
  private last?: { tokens: number[]; kv: PastKv[]; out: Float32Array };
  private readonly keep: Set<number>;

  /**
   * `keepLayers`: frozen blocks (< firstLayer) whose last-token output is also kept per prompt, for the
   * alignment loss's LLM layers.
   */
  constructor(
    readonly model: LlamaTf,
    readonly firstLayer: number,
    readonly maxBytes = 2 ** 30,
    keepLayers: readonly number[] = [],
  ) {
    // 0 is a cache that holds nothing: a frozen-pass worker only computes and sends its entries away.
    if (!(maxBytes >= 0))
      throw new CorellaError(
        'BAD_CONFIG',
        `frozen-output memory budget ${String(maxBytes)} is not a number of bytes ≥ 0 (field maxBytes)`,
        { details: { field: 'maxBytes' } },
      );
    for (const l of keepLayers) {
      if (!Number.isInteger(l) || l < 0 || l >= firstLayer)
        throw new CorellaError(
          'BAD_CONFIG',
          `frozen layer ${l} is not in 0..${firstLayer - 1} (field keepLayers)`,
          {
            details: { field: 'keepLayers' },
          },
        );
    }
    this.keep = new Set(keepLayers);
  }

  /** Bytes of decoded entries held now (never above maxBytes). */
  get residentBytes(): number {
    return this.bytes;
  }

  /** The most bytes of decoded entries held at once since construction. */
  get peakResidentBytes(): number {
    return this.peakBytes;
  }

  /** Entries held in memory now. */
  get residentEntries(): number {
    return this.entries.size;
  }

  /**
   * Reads entries that are not in memory back from `store`, so the budget can be below the working set.
   * The store must be readable synchronously (a local folder store, FrozenOutputStore.canReadSync) and be
   * of this cache's frozen blocks. From then on, an entry in neither memory nor the store is an error
   * (ARTIFACT_NOT_FOUND), not a fresh frozen pass: after the frozen pass the store holds every entry, so a
   * miss means a prompt that was never warmed or a store that lost files.
   */
  attachStore(store: FrozenOutputStore): void {
    if (!store.canReadSync)
      throw new CorellaError(
        'BAD_CONFIG',
        'a bounded frozen-output cache needs a local folder store to read evicted entries back from (field store)',
        { details: { field: 'store' } },
      );
    if (
      store.key.firstLayer !== this.firstLayer ||
      store.nEmbd !== this.model.hp.nEmbd ||
      [...store.key.keepLayers].sort((a, b) => a - b).join(',') !== this.keepLayers.join(',')
    )
      throw new CorellaError(
        'BAD_CONFIG',
        `the frozen-output store holds block ${store.key.firstLayer} keeping [${store.key.keepLayers.join(', ')}]; this cache is block ${this.firstLayer} keeping [${this.keepLayers.join(', ')}] (field store)`,
        { details: { field: 'store' } },
      );
    this.backing = store;
  }

  get keepLayers(): number[] {
    return [...this.keep].sort((a, b) => a - b);
  }

  static key(tokens: readonly number[]): string {
    return tokens.join(',');
  }

  /** [T, nEmbd] input of block firstLayer for `tokens` (a new tensor; the caller disposes it). */
  input(tokens: readonly number[]): tf.Tensor2D {
    return tf.tensor2d(this.inputData(tokens), [tokens.length, this.model.hp.nEmbd]);
  }

  /** The same as input(), as host floats [tokens × nEmbd] (for worker threads); not to be written to. */
  inputData(tokens: readonly number[]): Float32Array {
    return this.entry(tokens).input;
  }

  /** Last-token outputs of the kept frozen layers for `tokens`. */
  lastHidden(tokens: readonly number[]): ReadonlyMap<number, Float32Array> {
    return this.entry(tokens).lastHidden;
  }

  private entry(tokens: readonly number[]): FrozenEntry {
    this.stats.prompts++;
    this.stats.promptTokens += tokens.length;
    const key = FrozenPrefixCache.key(tokens);
    let e = this.entries.get(key);
    if (e) {
      this.stats.hits++;
      // Refresh its age.
      this.entries.delete(key);
      this.entries.set(key, e);
    } else if (this.backing) {
      const t0 = performance.now();
      e = this.backing.getSync(tokens);
      this.stats.storeReadSeconds += (performance.now() - t0) / 1000;
      if (!e)
        throw new CorellaError(
          'ARTIFACT_NOT_FOUND',
          `the frozen outputs of a ${tokens.length}-token prompt are neither in memory nor in the store (${this.backing.name(tokens)}): it was not in the frozen pass`,
          { details: { name: this.backing.name(tokens), tokens: tokens.length } },
        );
      this.stats.storeReads++;
      this.remember(key, e);
    } else {
      e = this.compute(tokens);
      this.remember(key, e);
    }
    return e;
  }

  has(tokens: readonly number[]): boolean {
    return this.entries.has(FrozenPrefixCache.key(tokens));
  }

  /** Adds an entry computed elsewhere (a worker thread, the disk store). */
  insert(tokens: readonly number[], e: FrozenEntry): void {
    const key = FrozenPrefixCache.key(tokens);
    if (this.entries.has(key)) return;
    if (e.input.length !== tokens.length * this.model.hp.nEmbd)
      throw new CorellaError(
        'ARTIFACT_CORRUPT',
        `frozen entry of ${e.input.length} values for ${tokens.length} tokens`,
      );
    this.remember(key, e);
  }

  /**
   * Fills the cache for `prompts` before training: entries already in memory stay, then the disk store
   * answers, and only the rest run the frozen blocks here (in the given order, so history blocks reuse
   * their prefix) and are written to the store. Training steps then never wait on disk or on the frozen
   * blocks. `onProgress(done, total)` after each prompt.
   */
  async warm(
    prompts: readonly (readonly number[])[],
    opts: {
      store?: FrozenOutputStore;
      signal?: AbortSignal;
      onProgress?: (done: number, total: number) => void;
      /** Trie nodes per batched pass (default DEFAULT_BATCH_NODES; 0 runs the prompts one by one). */
      batchNodes?: number;
    } = {},
  ): Promise<{ fromStore: number; computed: number }> {
    let fromStore = 0;
    const todo: (readonly number[])[] = [];
    const seen = new Set<string>();
    let done = 0;
    for (const tokens of prompts) {
      throwIfAborted(opts.signal);
      const key = FrozenPrefixCache.key(tokens);
      if (this.has(tokens) || seen.has(key)) {
        // A repeat of a prompt still to compute counts as done when that one is.
        if (!seen.has(key)) opts.onProgress?.(++done, prompts.length);
        continue;
      }
      const stored = await opts.store?.get(tokens);
      if (stored) {
        this.insert(tokens, stored);
        fromStore++;
        opts.onProgress?.(++done, prompts.length);
      } else {
        todo.push(tokens);
        seen.add(key);
      }
    }
    const repeats = prompts.length - done - todo.length;
    const batch = opts.batchNodes ?? DEFAULT_BATCH_NODES;
    const groups = batch > 0 ? groupPrompts(todo, batch) : todo.map((_, i) => [i]);
    for (const g of groups) {
      throwIfAborted(opts.signal);
      const ps = g.map((i) => todo[i]);
      const es = batch > 0 ? this.computeBatch(ps) : [this.compute(ps[0])];
      for (let j = 0; j < ps.length; j++) {
        // Written before it is remembered: remembering may evict it, and the store must have it by then.
        await opts.store?.put(ps[j], es[j]);
        this.remember(FrozenPrefixCache.key(ps[j]), es[j]);
        opts.onProgress?.(++done, prompts.length);
      }
    }
    if (repeats > 0) opts.onProgress?.(prompts.length, prompts.length);
    return { fromStore, computed: todo.length };
  }

  /**
   * The frozen outputs of several prompts in one pass over their prefix tree (prompt-trie.ts): every
   * distinct prefix is run once, and the projections see all the prompts' new tokens as one batch of rows.
   * Equal to `compute` prompt by prompt up to float32 summation order (tested), without touching the cache
   * or the prefix state of `compute`.
   */
  computeBatch(
    prompts: readonly (readonly number[])[],
    opts: {
      /**
       * Run the blocks on host arrays with the native sgemm (host-frozen.ts) rather than as tfjs ops. Off by
       * default: on SmolLM2 it measured no cheaper (0.28–0.29 against 0.26 CPU s per prompt at k = 2, its
       * Math.exp loops for softmax and SiLU cost what the wasm kernels they replace did), while the tfjs
       * batch is bit-identical to the prompt-by-prompt pass.
       */
      host?: boolean;
    } = {},
  ): FrozenEntry[] {
    if (prompts.length === 0) return [];
    for (const p of prompts)
      if (p.length === 0) throw new CorellaError('BAD_CONFIG', 'empty token list (field tokens)');
    const E = this.model.hp.nEmbd;
    const { nHead, nHeadKv } = this.model.hp;
    const trie = buildPromptTrie(prompts);
    const N = trie.tokens.length;
    this.stats.evaluatedTokens += N;
    const lastNodes = trie.paths.map((path) => path[path.length - 1]);
    let kept = new Map<number, Float32Array>();
    const host = (opts.host ?? false) && this.firstLayer > 0;
    if (opts.host && !hostFrozenAvailable())
      throw new CorellaError(
        'BAD_CONFIG',
        'the host frozen pass needs the native kernels on wasm (field host)',
        {
          details: { field: 'host' },
        },
      );
    const out = host
      ? (() => {
          const r = hostFrozenPass(
            this.model.weights,
            trie,
            this.firstLayer,
            this.keep,
            Int32Array.from(lastNodes),
          );
          kept = r.kept;
          return r.out;
        })()
      : this.tfjsBatch(trie, lastNodes, kept, nHead / nHeadKv);
    return prompts.map((p, i) => {
      const input = new Float32Array(p.length * E);
      const path = trie.paths[i];
      for (let t = 0; t < p.length; t++) input.set(out.subarray(path[t] * E, (path[t] + 1) * E), t * E);
      const lastHidden = new Map<number, Float32Array>();
      for (const [l, rows] of kept) lastHidden.set(l, rows.slice(i * E, (i + 1) * E));
      return { input, lastHidden };
    });
  }

  /** computeBatch as tfjs ops (llamaBlock with per-prompt attention segments). */
  private tfjsBatch(
    trie: PromptTrie,
    lastNodes: number[],
    kept: Map<number, Float32Array>,
    group: number,
  ): Float32Array {
    const prompts = trie.paths;
    return tf.tidy(() => {
      let h = this.model.embed(trie.tokens);
      if (this.firstLayer === 0) return h.dataSync() as Float32Array;
      const rope = ropeTables(this.model.hp, trie.positions);
      // Per prompt that adds nodes: its new nodes' queries against its whole path (tensors shared by all blocks).
      const segments: AttentionSegment[] = [];
      prompts.forEach((p, i) => {
        const sg = trieSegment(trie, i);
        if (!sg) return;
        segments.push({
          start: sg.start,
          rows: p.length - sg.from,
          keys: tf.tensor1d(trie.paths[i], 'int32'),
          mask: causalMask(
            Array.from({ length: p.length - sg.from }, (_, j) => sg.from + j),
            p.length,
            group,
          ),
        });
      });
      try {
        for (let l = 0; l < this.firstLayer; l++) {
          h = llamaBlock(this.model.hp, this.model.weights.layers[l], h, rope, { segments });
          if (this.keep.has(l))
            kept.set(l, tf.gather(h, Int32Array.from(lastNodes)).dataSync() as Float32Array);
        }
        return h.dataSync() as Float32Array;
      } finally {
        disposeRope(rope);
      }
    });
  }

  /** Frozen outputs without the cache or prefix reuse (tests compare against it). */
  computeFromScratch(tokens: readonly number[]): Float32Array {
    return tf.tidy(
      () => this.model.runLayers(this.model.embed(tokens), 0, this.firstLayer).dataSync() as Float32Array,
    );
  }

  /**
   * Runs the frozen blocks for `tokens`, reusing the previous prompt's shared prefix, without touching the
   * cache (a worker thread sends each entry away instead of keeping it).
   */
  compute(tokens: readonly number[]): FrozenEntry {
    const T = tokens.length;
    const E = this.model.hp.nEmbd;
    const lastHidden = new Map<number, Float32Array>();
    if (this.firstLayer === 0) {
      this.stats.evaluatedTokens += T;
      return { input: tf.tidy(() => this.model.embed(tokens).dataSync() as Float32Array), lastHidden };
    }
    let common = 0;
    if (this.last) {
      const prev = this.last.tokens;
      while (common < prev.length && common < T && prev[common] === tokens[common]) common++;
      // At least one token runs, so the new prompt's keys and values come out of the pass below.
      common = Math.min(common, T - 1);
    }
    this.stats.evaluatedTokens += T - common;
    const kv: PastKv[] = [];
    const fresh = tf.tidy(() => {
      const rope = ropeTables(
        this.model.hp,
        Array.from({ length: T - common }, (_, i) => common + i),
      );
      try {
        let h = this.model.embed(tokens.slice(common));
        for (let l = 0; l < this.firstLayer; l++) {
          const past =
            common > 0 && this.last
              ? {
                  k: tf.slice(this.last.kv[l].k, [0, 0, 0], [-1, common, -1]),
                  v: tf.slice(this.last.kv[l].v, [0, 0, 0], [-1, common, -1]),
                }
              : undefined;
          h = llamaBlock(this.model.hp, this.model.weights.layers[l], h, rope, {
            past,
            onKv: (x) => kv.push(x),
          });
          // The last token is always among the fresh ones (common ≤ T − 1).
          if (this.keep.has(l))
            lastHidden.set(l, tf.slice(h, [T - common - 1, 0], [1, -1]).dataSync() as Float32Array);
        }
        return h.dataSync() as Float32Array;
      } finally {
        disposeRope(rope);
      }
    });
    const out = new Float32Array(T * E);
    if (common > 0 && this.last) out.set(this.last.out.subarray(0, common * E));
    out.set(fresh, common * E);
    if (this.last) for (const x of this.last.kv) tf.dispose([x.k, x.v]);
    this.last = { tokens: [...tokens], kv, out };
    return { input: out, lastHidden };
  }

  /**
   * Holds `e`, first evicting the least recently used entries so that the resident bytes stay within
   * maxBytes. The caller keeps its own reference, so evicting does not invalidate what it is computing with.
   */
  private remember(key: string, e: FrozenEntry): void {
    const size = entryBytes(e);
    if (size > this.maxBytes)
      throw new CorellaError(
        'BAD_CONFIG',
        `frozen-output memory budget of ${this.maxBytes} bytes is below one entry (${size} bytes for ${e.input.length / this.model.hp.nEmbd} tokens) (field maxBytes)`,
        { details: { field: 'maxBytes', entryBytes: size } },
      );
    if (this.bytes + size > this.maxBytes && !this.backing)
      throw new CorellaError(
        'BAD_CONFIG',
        `frozen outputs need more than the memory budget of ${this.maxBytes} bytes, and no store is attached to read evicted entries back from: raise the budget or attach a local store (field maxBytes)`,
        { details: { field: 'maxBytes', residentBytes: this.bytes, entryBytes: size } },
      );
    for (const [k, v] of this.entries) {
      if (this.bytes + size <= this.maxBytes) break;
      this.entries.delete(k);
      this.bytes -= entryBytes(v);
    }
    this.entries.set(key, e);
    this.bytes += size;
    if (this.bytes > this.peakBytes) this.peakBytes = this.bytes;
  }

  dispose(): void {
    if (this.last) for (const x of this.last.kv) tf.dispose([x.k, x.v]);
    this.last = undefined;
    this.entries.clear();
    this.bytes = 0;
  }
}
