import * as tf from '@tensorflow/tfjs-core';
import { CorellaError } from '../../errors.js';
import { mixSeed, mulberry32, uniformArray } from '../../random.js';
import type { LayerLora } from './llama-block.js';
import type { LlamaHparams } from './llama-config.js';
import { blockTensorDims, PROJECTIONS, type Projection } from './llama-weights.js';

export interface LoraConfig {
  /** Adapt the top `layers` blocks (default 2); 'all' or the block count adapts every block. */
  layers?: number | 'all';
  rank?: number;
  /** ΔW = (alpha / rank)·B·A, as llama.cpp applies a GGUF adapter at scale 1 (default alpha = rank). */
  alpha?: number;
  /** Projections to adapt (default q and v, as in the LoRA paper and CoReLLa). */
  targets?: Projection[];
  seed?: number;
}

export interface ResolvedLoraConfig {
  firstLayer: number;
  nLayer: number;
  rank: number;
  alpha: number;
  targets: Projection[];
  seed: number;
}

function bad(field: string, message: string): CorellaError {
  return new CorellaError('BAD_CONFIG', `lora config field ${field}: ${message}`, { details: { field } });
}

export function resolveLoraConfig(cfg: LoraConfig, hp: LlamaHparams): ResolvedLoraConfig {
  const layers = cfg.layers === 'all' ? hp.nLayer : (cfg.layers ?? 2);
  if (!Number.isInteger(layers) || layers < 1 || layers > hp.nLayer)
    throw bad('layers', `${String(cfg.layers)} is not 'all' or an integer in 1..${hp.nLayer}`);
  const rank = cfg.rank ?? 8;
  if (!Number.isInteger(rank) || rank < 1 || rank > Math.min(hp.nEmbd, 1024))
    throw bad('rank', `${String(cfg.rank)} is not an integer in 1..${Math.min(hp.nEmbd, 1024)}`);
  const alpha = cfg.alpha ?? rank;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha <= 0)
    throw bad('alpha', `${String(cfg.alpha)} is not a positive number`);
  const targets = cfg.targets ?? ['q', 'v'];
  if (!Array.isArray(targets) || targets.length === 0)
    throw bad('targets', 'must be a non-empty list of projections');
  for (const t of targets) {
    if (!(t in PROJECTIONS))
      throw bad('targets', `${JSON.stringify(t)} is not one of ${Object.keys(PROJECTIONS).join(', ')}`);
  }
  if (new Set(targets).size !== targets.length) throw bad('targets', 'lists a projection twice');
  const seed = cfg.seed ?? 42;
  if (!Number.isInteger(seed) || seed < 0)
    throw bad('seed', `${String(cfg.seed)} is not a non-negative integer`);
  return { firstLayer: hp.nLayer - layers, nLayer: hp.nLayer, rank, alpha, targets: [...targets], seed };
}

/** A, B of one adapted projection, as trainable variables. */
export interface LoraPair {
  layer: number;
  target: Projection;
  /** [rank, in] */
  a: tf.Variable<tf.Rank.R2>;
  /** [out, rank] */
  b: tf.Variable<tf.Rank.R2>;
}

/** Host copy of the weights, e.g. for checkpoints and export; keys `blk.N.<stem>`. */
export type LoraHostWeights = Record<string, { a: Float32Array; b: Float32Array }>;

/**
 * LoRA adapters on the chosen projections of blocks firstLayer..nLayer−1. A is drawn uniform in ±1/√in
 * (PEFT's default bound) from the seed, B starts at zero: the adapted model equals the base model until the
 * first update, so training starts from the zero-shot LLM.
 */
export class LoraAdapter {
  readonly scale: number;

  private constructor(
    readonly config: ResolvedLoraConfig,
    readonly hp: LlamaHparams,
    readonly pairs: LoraPair[],
  ) {
    this.scale = config.alpha / config.rank;
  }

  static create(hp: LlamaHparams, cfg: LoraConfig = {}): LoraAdapter {
    const c = resolveLoraConfig(cfg, hp);
    const dims = blockTensorDims(hp);
    const pairs: LoraPair[] = [];
    for (let l = c.firstLayer; l < c.nLayer; l++) {
      for (const t of c.targets) {
        const [inDim, outDim] = dims[PROJECTIONS[t]];
        const rand = mulberry32(mixSeed(c.seed, l, Object.keys(PROJECTIONS).indexOf(t)));
        const bound = 1 / Math.sqrt(inDim);
        pairs.push({
          layer: l,
          target: t,
          a: tf.variable(
            tf.tensor2d(uniformArray(c.rank * inDim, -bound, bound, rand), [c.rank, inDim]),
            true,
          ),
          b: tf.variable(tf.zeros([outDim, c.rank]), true),
        });
      }
    }
    return new LoraAdapter(c, hp, pairs);
  }

  get firstLayer(): number {
    return this.config.firstLayer;
  }

  variables(): tf.Variable[] {
    return this.pairs.flatMap((p) => [p.a, p.b]);
  }

  /** Per-layer factors for the forward pass (index = layer; undefined below firstLayer). */
  layerLora(): (LayerLora | undefined)[] {
    const out: (LayerLora | undefined)[] = new Array<LayerLora | undefined>(this.hp.nLayer);
    for (const p of this.pairs) {
      out[p.layer] ??= {};
      out[p.layer]![p.target] = { a: p.a, b: p.b, scale: this.scale };
    }
    return out;
  }

  static key(layer: number, target: Projection): string {
    return `blk.${layer}.${PROJECTIONS[target]}`;
  }

  async toHost(): Promise<LoraHostWeights> {
    const out: LoraHostWeights = {};
    for (const p of this.pairs) {
      out[LoraAdapter.key(p.layer, p.target)] = {
        a: (await p.a.data()) as Float32Array,
        b: (await p.b.data()) as Float32Array,
      };
    }
    return out;
  }

  /** `toHost` without awaiting: for callers that must stay synchronous (a joint branch's clone). */
  toHostSync(): LoraHostWeights {
    const out: LoraHostWeights = {};
    for (const p of this.pairs) {
      out[LoraAdapter.key(p.layer, p.target)] = {
        a: p.a.dataSync() as Float32Array,
        b: p.b.dataSync() as Float32Array,
      };
    }
    return out;
  }

  /** An independent adapter with the same config and weights. */
  clone(): LoraAdapter {
    const c = LoraAdapter.create(this.hp, this.userConfig());
    c.load(this.toHostSync());
    return c;
  }

  /** The config that `create` resolves to this adapter's (what a serialized adapter stores). */
  userConfig(): LoraConfig {
    const c = this.config;
    return {
      layers: c.nLayer - c.firstLayer,
      rank: c.rank,
      alpha: c.alpha,
      targets: [...c.targets],
      seed: c.seed,
    };
  }

  /**
   * Config and weights as JSON (weights as base64 float32), for checkpoints and model artifacts. The
   * model's shape is not stored: `deserialize` takes the base's hparams and `load` refuses weights of
   * another shape, so an adapter cannot be restored onto the wrong base silently.
   */
  serialize(): string {
    const w = this.toHostSync();
    const b64 = (x: Float32Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength).toString('base64');
    return JSON.stringify({
      format: 'corella-lora/1',
      config: this.userConfig(),
      weights: Object.fromEntries(Object.entries(w).map(([k, v]) => [k, { a: b64(v.a), b: b64(v.b) }])),
    });
  }

  static deserialize(hp: LlamaHparams, text: string): LoraAdapter {
    let raw: { format?: unknown; config?: LoraConfig; weights?: Record<string, { a: string; b: string }> };
    try {
      raw = JSON.parse(text) as typeof raw;
    } catch (e) {
      throw new CorellaError('ARTIFACT_CORRUPT', 'serialized LoRA adapter is not valid JSON', { cause: e });
    }
    if (raw.format !== 'corella-lora/1' || !raw.config || !raw.weights)
      throw new CorellaError('ARTIFACT_CORRUPT', `serialized LoRA adapter has format ${String(raw.format)}`);
    const f32 = (s: string) => {
      const b = Buffer.from(s, 'base64');
      if (b.length % 4 !== 0)
        throw new CorellaError(
          'ARTIFACT_CORRUPT',
          `serialized LoRA weights of ${b.length} bytes are of the wrong size`,
        );
      return new Float32Array(new Uint8Array(b).buffer);
    };
    const w: LoraHostWeights = {};
    for (const [k, v] of Object.entries(raw.weights)) w[k] = { a: f32(v.a), b: f32(v.b) };
    const adapter = LoraAdapter.create(hp, raw.config);
    try {
      adapter.load(w);
    } catch (e) {
      adapter.dispose();
      throw e;
    }
    return adapter;
  }

  /** Overwrites the variables (a checkpoint); every pair must be present with the right sizes. */
  load(w: LoraHostWeights): void {
    for (const p of this.pairs) {
      const k = LoraAdapter.key(p.layer, p.target);
      const v = w[k];
      if (!v || v.a.length !== p.a.size || v.b.length !== p.b.size) {
        throw new CorellaError('ARTIFACT_CORRUPT', `LoRA weights for ${k} are missing or of the wrong size`, {
          details: { tensor: k },
        });
      }
    }
    for (const p of this.pairs) {
      const v = w[LoraAdapter.key(p.layer, p.target)];
      tf.tidy(() => {
        p.a.assign(tf.tensor2d(v.a, p.a.shape));
        p.b.assign(tf.tensor2d(v.b, p.b.shape));
      });
    }
  }

  dispose(): void {
    for (const p of this.pairs) tf.dispose([p.a, p.b]);
  }
}
