import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BINARY_HEADER_BYTES, sealNamedJson } from '../../../../ml/artifacts/named-envelope.js';
import { FileArtifactStore } from '../../../../ml/artifacts/store.js';
import { CorellaError } from '../../../../ml/errors.js';
import type { FrozenEntry } from '../../../../ml/llm/tf/frozen-prefix.js';
import {
  decodeFrozenEntry,
  encodeFrozenEntry,
  FrozenOutputStore,
} from '../../../../ml/llm/tf/frozen-store.js';

/**
 * A real-sized frozen entry (197 tokens × 576 f32, SmolLM2-135M) through the store's named entries: what
 * `get` and `getSync` return is exactly what was put, in the binary envelope the store now writes and in the
 * JSON envelope that older entries have, and the decode makes no copy when the bytes are aligned.
 */
const dir = mkdtempSync(join(tmpdir(), 'corella-frozen-readback-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const T = 197;
const E = 576;
const tokens = Array.from({ length: T }, (_, i) => (i * 7919) % 49152);
const key = { namespace: 'ds', modelSha256: 'c'.repeat(64), firstLayer: 28, keepLayers: [27, 29] };

/** Any bit pattern, NaN payloads included: a read that went through numbers would change some. */
function randomEntry(): FrozenEntry {
  const f = (n: number) => new Float32Array(randomBytes(4 * n).buffer);
  return {
    input: f(T * E),
    lastHidden: new Map([
      [27, f(E)],
      [29, f(E)],
    ]),
  };
}

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
function expectSameBits(got: FrozenEntry | undefined, want: FrozenEntry) {
  expect(got).toBeDefined();
  expect(bits(got!.input).equals(bits(want.input))).toBe(true);
  expect([...got!.lastHidden.keys()]).toEqual([...want.lastHidden.keys()]);
  for (const [l, v] of want.lastHidden) expect(bits(got!.lastHidden.get(l)!).equals(bits(v))).toBe(true);
}

describe('frozen entries read back from the store', () => {
  it('get and getSync return exactly the bits that were put, from the binary envelope', async () => {
    const store = new FileArtifactStore(join(dir, 'a'));
    const fs = new FrozenOutputStore(store, key, E);
    const e = randomEntry();
    await fs.put(tokens, e);
    const raw = await readFile(join(store.namedDir, fs.name(tokens)));
    expect(raw.byteLength).toBe(BINARY_HEADER_BYTES + encodeFrozenEntry(tokens, e, E, 28).byteLength);
    expectSameBits(await fs.get(tokens), e);
    expectSameBits(fs.getSync(tokens), e);
  });

  it('an entry in the old JSON envelope (base64) reads the same bits, in both reads', async () => {
    const store = new FileArtifactStore(join(dir, 'b'));
    const fs = new FrozenOutputStore(store, key, E);
    const e = randomEntry();
    const path = join(store.namedDir, fs.name(tokens));
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, sealNamedJson(encodeFrozenEntry(tokens, e, E, 28)));
    expectSameBits(await fs.get(tokens), e);
    expectSameBits(fs.getSync(tokens), e);
  });

  it('a flipped byte in a stored entry is ARTIFACT_CORRUPT naming it, in get and getSync', async () => {
    const store = new FileArtifactStore(join(dir, 'c'));
    const fs = new FrozenOutputStore(store, key, E);
    await fs.put(tokens, randomEntry());
    const path = join(store.namedDir, fs.name(tokens));
    const raw = await readFile(path);
    raw[raw.length - 3] ^= 0x10;
    await writeFile(path, raw);
    let sync: unknown;
    try {
      fs.getSync(tokens);
    } catch (e) {
      sync = e;
    }
    const async = await fs.get(tokens).then(
      () => undefined,
      (e: unknown) => e,
    );
    for (const err of [sync, async]) {
      expect(err).toBeInstanceOf(CorellaError);
      expect((err as CorellaError).code).toBe('ARTIFACT_CORRUPT');
      expect((err as CorellaError).message).toContain(fs.name(tokens));
    }
  });

  it('decodes aligned bytes as views of one buffer, and unaligned bytes through one copy, alike', () => {
    const e = randomEntry();
    const buf = encodeFrozenEntry(tokens, e, E, 28);
    const aligned = decodeFrozenEntry(buf, tokens, E, 28, 'test');
    expectSameBits(aligned, e);
    // No copy: the rows are views of the buffer that was read.
    expect(aligned.input.buffer).toBe(buf.buffer);
    expect(aligned.lastHidden.get(29)!.buffer).toBe(buf.buffer);
    // At an odd offset a Float32Array view is impossible: one aligned copy, the same bits.
    const odd = Buffer.alloc(buf.byteLength + 1);
    buf.copy(odd, 1);
    const unaligned = decodeFrozenEntry(odd.subarray(1), tokens, E, 28, 'test');
    expectSameBits(unaligned, e);
    expect(unaligned.input.buffer).not.toBe(odd.buffer);
  });
});
