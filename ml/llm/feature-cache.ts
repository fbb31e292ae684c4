import type { ArtifactStore } from '../artifacts/store.js';
import { sha256Hex } from '../artifacts/store.js';
import { CorellaError } from '../errors.js';

/** What makes two feature sets interchangeable: same model file, adapter, template and prompt shaping. */
export interface FeatureCacheKey {
  /** E.g. the dataset version id, so equal sample ids of different datasets never share features. */
  namespace?: string;
  modelSha256: string;
  loraSha256?: string;
  loraScale?: number;
  template: string;
  templateText: string;
  answers: { yes: string; no: string };
  contextSize: number;
  maxHistoryItems?: number;
  /** Absent for sliding windows (1), so those keys stay what they were before blocks existed. */
  historyBlock?: number;
  targetReserveTokens: number;
  hidden: boolean;
  flashAttention: boolean;
}

export interface FeatureChunk {
  sampleIds: Uint32Array;
  pYes: Float32Array;
  logOdds: Float32Array;
  hidden: Float32Array;
  hiddenDim: number;
}

interface CacheIndex {
  format: 1;
  key: FeatureCacheKey;
  hiddenDim: number;
  chunks: { sha256: string; count: number }[];
}

const MAGIC = 0x464c4c43; // "CLLF"
const HEADER_BYTES = 16;

export function encodeChunk(c: FeatureChunk): Buffer {
  const n = c.sampleIds.length;
  const buf = Buffer.alloc(HEADER_BYTES + 4 * (3 * n + n * c.hiddenDim));
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt32LE(1, 4);
  buf.writeUInt32LE(n, 8);
  buf.writeUInt32LE(c.hiddenDim, 12);
  let o = HEADER_BYTES;
  for (const arr of [c.sampleIds, c.pYes, c.logOdds, c.hidden]) {
    Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength).copy(buf, o);
    o += arr.byteLength;
  }
  return buf;
}

export function decodeChunk(buf: Buffer, where: string): FeatureChunk {
  if (buf.length < HEADER_BYTES || buf.readUInt32LE(0) !== MAGIC || buf.readUInt32LE(4) !== 1) {
    throw new CorellaError('ARTIFACT_CORRUPT', `${where}: not an LLM feature chunk`);
  }
  const n = buf.readUInt32LE(8);
  const d = buf.readUInt32LE(12);
  if (buf.length !== HEADER_BYTES + 4 * (3 * n + n * d)) {
    throw new CorellaError(
      'ARTIFACT_CORRUPT',
      `${where}: length ${buf.length} does not match ${n} rows × ${d} dims`,
    );
  }
  // Copy into fresh aligned memory (Buffer slices may not be 4-byte aligned).
  const body = new Uint8Array(buf.subarray(HEADER_BYTES)).buffer;
  return {
    sampleIds: new Uint32Array(body, 0, n),
    pYes: new Float32Array(body, 4 * n, n),
    logOdds: new Float32Array(body, 8 * n, n),
    hidden: new Float32Array(body, 12 * n, n * d),
    hiddenDim: d,
  };
}

/** Stable JSON (sorted keys) so equal keys hash equally. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

export function cacheKeyId(key: FeatureCacheKey): string {
  return sha256Hex(canonical(key));
}

/**
 * Chunked feature cache in an ArtifactStore. Each chunk is an immutable content-addressed blob; a small named
 * index (`llm-features/<model>/<key>/index.json`) lists the complete chunks. A chunk blob is written before the
 * index names it, and both writes are atomic, so a crash leaves at worst an unreferenced blob: the cache only
 * ever contains whole chunks and a rerun resumes after the last one.
 */
export class LlmFeatureCache {
  readonly keyId: string;
  readonly indexName: string;
  private index: CacheIndex | undefined;
  private readonly rows = new Map<number, { chunk: FeatureChunk; row: number }>();

  constructor(
    private readonly store: ArtifactStore,
    readonly key: FeatureCacheKey,
  ) {
    this.keyId = cacheKeyId(key);
    this.indexName = `llm-features/${key.modelSha256.slice(0, 16)}/${this.keyId.slice(0, 32)}/index.json`;
  }

  /** Loads the index and every chunk it names. */
  async load(): Promise<void> {
    const raw = await this.store.getNamed(this.indexName);
    this.rows.clear();
    if (!raw) {
      this.index = undefined;
      return;
    }
    let idx: CacheIndex;
    try {
      idx = JSON.parse(raw.toString('utf8')) as CacheIndex;
    } catch (e) {
      throw new CorellaError('ARTIFACT_CORRUPT', `LLM feature index ${this.indexName} is not valid JSON`, {
        cause: e,
      });
    }
    if (idx.format !== 1 || cacheKeyId(idx.key) !== this.keyId || !Array.isArray(idx.chunks)) {
      throw new CorellaError(
        'ARTIFACT_CORRUPT',
        `LLM feature index ${this.indexName} does not match its key`,
      );
    }
    this.index = idx;
    for (const c of idx.chunks)
      this.addRows(
        decodeChunk(await this.store.get(c.sha256, 'LLM feature cache chunk'), `chunk ${c.sha256}`),
      );
  }

  private addRows(chunk: FeatureChunk): void {
    for (let r = 0; r < chunk.sampleIds.length; r++) this.rows.set(chunk.sampleIds[r], { chunk, row: r });
  }

  get size(): number {
    return this.rows.size;
  }

  /** Hidden size of the cached features, when anything is cached. */
  get hiddenDim(): number | undefined {
    return this.index?.hiddenDim;
  }

  get chunkCount(): number {
    return this.index?.chunks.length ?? 0;
  }

  has(sampleId: number): boolean {
    return this.rows.has(sampleId);
  }

  /** Copies sample `sampleId`'s features into row `i` of the output arrays; false when not cached. */
  copyInto(
    sampleId: number,
    i: number,
    out: { pYes: Float32Array; logOdds: Float32Array; hidden: Float32Array },
    hiddenDim: number,
  ): boolean {
    const hit = this.rows.get(sampleId);
    if (!hit) return false;
    const { chunk, row } = hit;
    out.pYes[i] = chunk.pYes[row];
    out.logOdds[i] = chunk.logOdds[row];
    if (hiddenDim > 0)
      out.hidden.set(chunk.hidden.subarray(row * hiddenDim, (row + 1) * hiddenDim), i * hiddenDim);
    return true;
  }

  /** Writes one complete chunk, then the index that names it. Returns the chunk's sha256. */
  async append(chunk: FeatureChunk): Promise<string> {
    if (this.index && this.index.hiddenDim !== chunk.hiddenDim) {
      throw new CorellaError(
        'ARTIFACT_CORRUPT',
        `hidden size ${chunk.hiddenDim} differs from the cached ${this.index.hiddenDim}`,
      );
    }
    const ref = await this.store.put(encodeChunk(chunk));
    const mine = { sha256: ref.sha256, count: chunk.sampleIds.length };
    // Two workers can extend one index at once (a retried activity whose first attempt still runs, two
    // runs sharing a model and template): a read-modify-write that re-reads on conflict keeps both sides'
    // chunks, where a plain overwrite would drop the other writer's. Chunks this process has not loaded
    // only cost their rows being absent from `rows` until the next load().
    let next: CacheIndex | undefined;
    await this.store.updateNamed(this.indexName, (cur) => {
      let stored: CacheIndex | undefined;
      try {
        stored = cur ? (JSON.parse(cur.toString('utf8')) as CacheIndex) : undefined;
      } catch {
        stored = undefined; // an unreadable index is replaced, as load() would refuse it anyway
      }
      const usable =
        stored?.format === 1 && stored.hiddenDim === chunk.hiddenDim && cacheKeyId(stored.key) === this.keyId;
      const chunks = [...(usable ? stored!.chunks : []), ...(this.index?.chunks ?? [])];
      const seen = new Set<string>();
      next = {
        format: 1,
        key: this.key,
        hiddenDim: chunk.hiddenDim,
        chunks: [...chunks, mine].filter((c) => !seen.has(c.sha256) && seen.add(c.sha256)),
      };
      return JSON.stringify(next);
    });
    this.index = next;
    this.addRows(chunk);
    return ref.sha256;
  }
}
