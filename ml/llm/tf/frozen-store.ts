import type { ArtifactStore } from '../../artifacts/store.js';
import { FileArtifactStore, sha256Hex } from '../../artifacts/store.js';
import { CorellaError } from '../../errors.js';
import type { FrozenEntry } from './frozen-prefix.js';

/**
 * What makes two frozen passes interchangeable: the model file, the first adapted block (the frozen blocks
 * are 0..firstLayer−1) and the kept last-token layers. Prompts are keyed by their tokens, so template and
 * prompt shaping need no field of their own: a different prompt is a different key.
 */
export interface FrozenStoreKey {
  /** E.g. the dataset version id, so a cleanup can drop one dataset's entries (tokens alone identify a row). */
  namespace?: string;
  modelSha256: string;
  firstLayer: number;
  keepLayers: readonly number[];
}

const MAGIC = 0x5a464c43; // "CLFZ"
const VERSION = 1;
const HEADER_WORDS = 6;

/** magic, version, T, E, firstLayer, nKeep | keep layer ids | tokens | input [T·E] | kept rows [nKeep·E] */
export function encodeFrozenEntry(
  tokens: readonly number[],
  e: FrozenEntry,
  nEmbd: number,
  firstLayer: number,
): Buffer {
  const keep = [...e.lastHidden.keys()].sort((a, b) => a - b);
  const T = tokens.length;
  const words = HEADER_WORDS + keep.length + T + T * nEmbd + keep.length * nEmbd;
  const buf = Buffer.alloc(4 * words);
  [MAGIC, VERSION, T, nEmbd, firstLayer, keep.length].forEach((v, i) => buf.writeUInt32LE(v, 4 * i));
  let o = 4 * HEADER_WORDS;
  for (const l of keep) o = buf.writeUInt32LE(l, o);
  for (const t of tokens) o = buf.writeUInt32LE(t, o);
  const put = (a: Float32Array) => {
    Buffer.from(a.buffer, a.byteOffset, a.byteLength).copy(buf, o);
    o += a.byteLength;
  };
  put(e.input);
  for (const l of keep) put(e.lastHidden.get(l)!);
  return buf;
}

/**
 * The entry's bytes as u32 words without a copy when that is safe: the buffer sits at a 4-byte offset (a
 * store's binary envelope keeps the body aligned in a freshly read file) and is not a small view into a much
 * larger one (Node's shared pool for small reads), which the entry would otherwise keep alive. Else one copy.
 * Why it matters: a bounded frozen cache decodes a ~450 KB entry per training sample, and the two copies
 * this used to make (aligned copy, then a slice per row block) were a measurable part of that read.
 */
function alignedWords(buf: Buffer): Uint32Array {
  const pins = buf.buffer.byteLength - buf.byteLength;
  if (buf.byteOffset % 4 === 0 && pins <= 4096)
    return new Uint32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  const copy = new Uint32Array(buf.byteLength / 4);
  new Uint8Array(copy.buffer).set(buf);
  return copy;
}

export function decodeFrozenEntry(
  buf: Buffer,
  tokens: readonly number[],
  nEmbd: number,
  firstLayer: number,
  where: string,
): FrozenEntry {
  const corrupt = (why: string) => new CorellaError('ARTIFACT_CORRUPT', `${where}: ${why}`);
  if (buf.length < 4 * HEADER_WORDS || buf.readUInt32LE(0) !== MAGIC || buf.readUInt32LE(4) !== VERSION)
    throw corrupt('not a frozen-prefix entry');
  const T = buf.readUInt32LE(8);
  const E = buf.readUInt32LE(12);
  const nKeep = buf.readUInt32LE(20);
  if (T !== tokens.length || E !== nEmbd || buf.readUInt32LE(16) !== firstLayer)
    throw corrupt(`holds ${T} tokens × ${E} at layer ${buf.readUInt32LE(16)}, not the key's shape`);
  if (buf.length !== 4 * (HEADER_WORDS + nKeep + T + T * E + nKeep * E))
    throw corrupt(`length ${buf.length} does not match its header`);
  const words = alignedWords(buf);
  const keep = Array.from(words.subarray(HEADER_WORDS, HEADER_WORDS + nKeep));
  const tok = words.subarray(HEADER_WORDS + nKeep, HEADER_WORDS + nKeep + T);
  // The name is a hash of the tokens; comparing them makes a collision or a misplaced file an error.
  for (let i = 0; i < T; i++) if (tok[i] !== tokens[i]) throw corrupt(`token ${i} differs from the key's`);
  // Views, not copies: the entry's rows share the one buffer (consumers copy before transferring it).
  const f = new Float32Array(words.buffer, words.byteOffset, words.length);
  let o = HEADER_WORDS + nKeep + T;
  const input = f.subarray(o, o + T * E);
  o += T * E;
  const lastHidden = new Map<number, Float32Array>();
  for (const l of keep) {
    lastHidden.set(l, f.subarray(o, o + E));
    o += E;
  }
  return { input, lastHidden };
}

function canonicalKey(k: FrozenStoreKey): string {
  return JSON.stringify({
    firstLayer: k.firstLayer,
    keepLayers: [...k.keepLayers].sort((a, b) => a - b),
    modelSha256: k.modelSha256,
    namespace: k.namespace ?? null,
  });
}

/**
 * The frozen-prefix outputs on disk (an ArtifactStore's named entries), so a rerun, a resumed activity or
 * another configuration with the same frozen blocks skips the frozen pass, which costs several times an
 * epoch of the adapted blocks. Entries are immutable and written atomically by the store, so a crash leaves
 * whole entries only. Named `lora-frozen/<model>/<key>/<sha256 of the tokens>`, like the LLM feature cache.
 */
export class FrozenOutputStore {
  readonly keyId: string;
  readonly prefix: string;

  constructor(
    private readonly store: ArtifactStore,
    readonly key: FrozenStoreKey,
    readonly nEmbd: number,
  ) {
    this.keyId = sha256Hex(canonicalKey(key));
    this.prefix = `lora-frozen/${key.modelSha256.slice(0, 16)}/${this.keyId.slice(0, 32)}`;
  }

  name(tokens: readonly number[]): string {
    return `${this.prefix}/${sha256Hex(Uint32Array.from(tokens).join(',')).slice(0, 40)}.bin`;
  }

  async get(tokens: readonly number[]): Promise<FrozenEntry | undefined> {
    const name = this.name(tokens);
    const buf = await this.store.getNamed(name);
    return buf && decodeFrozenEntry(buf, tokens, this.nEmbd, this.key.firstLayer, name);
  }

  /**
   * Whether `getSync` can answer: only a local folder store. Why a synchronous read at all: the joint
   * trainer's stage loops call the branch's forward() synchronously inside a tfjs scope, so an entry that a
   * bounded cache evicted must come back without an await. A remote (S3) store has no such read, so a cache
   * over it keeps every entry in memory.
   */
  get canReadSync(): boolean {
    return this.store instanceof FileArtifactStore;
  }

  /**
   * `get` without an await, for a local folder store (a 197-token SmolLM2 entry is about 450 KB, read in
   * well under a millisecond from the page cache). The file is the store's own named entry, checked against
   * the checksum its envelope carries (`FileArtifactStore.getNamedSync`).
   */
  getSync(tokens: readonly number[]): FrozenEntry | undefined {
    if (!(this.store instanceof FileArtifactStore))
      throw new CorellaError(
        'BAD_CONFIG',
        'the frozen-output store is not a local folder, so it cannot be read synchronously (field store)',
        { details: { field: 'store' } },
      );
    const name = this.name(tokens);
    const buf = this.store.getNamedSync(name);
    return buf && decodeFrozenEntry(buf, tokens, this.nEmbd, this.key.firstLayer, name);
  }

  async put(tokens: readonly number[], e: FrozenEntry): Promise<void> {
    await this.store.putNamed(
      this.name(tokens),
      encodeFrozenEntry(tokens, e, this.nEmbd, this.key.firstLayer),
    );
  }
}
