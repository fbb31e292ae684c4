import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CorellaError } from '../../../../ml/errors.js';
import { dequantize, f16ToF32, GGML_TYPE } from '../../../../ml/llm/tf/ggml-types.js';
import { GgufFile } from '../../../../ml/llm/tf/gguf-file.js';
import { llamaHparams } from '../../../../ml/llm/tf/llama-config.js';
import { LlamaTf } from '../../../../ml/llm/tf/llama-forward.js';
import { initTf } from '../../../../ml/tf/backend.js';
import { encodeTensor, writeTinyGguf } from '../../../helpers/tiny-gguf.js';

const dir = mkdtempSync(join(tmpdir(), 'corella-gguf-dq-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** f16 bits of a few exactly representable values. */
const H = { half: 0x3800, one: 0x3c00, minusOne: 0xbc00, two: 0x4000, quarter: 0x3400 };

describe('ggml block dequantization', () => {
  it('decodes IEEE halves, including subnormals and signs', () => {
    expect(f16ToF32(H.one)).toBe(1);
    expect(f16ToF32(H.minusOne)).toBe(-1);
    expect(f16ToF32(0x7bff)).toBe(65504);
    expect(f16ToF32(0x0001)).toBe(2 ** -24);
    expect(f16ToF32(0x7c00)).toBe(Infinity);
    expect(f16ToF32(0x3555)).toBeCloseTo(1 / 3, 3);
  });

  it('Q4_1: value j from the low nibble of byte j, value j+16 from its high nibble, x = d·q + m', () => {
    const b = Buffer.alloc(20);
    b.writeUInt16LE(H.half, 0); // d = 0.5
    b.writeUInt16LE(H.minusOne, 2); // m = −1
    for (let j = 0; j < 16; j++) b[4 + j] = j | ((15 - j) << 4);
    const x = dequantize(GGML_TYPE.Q4_1, b, 32);
    for (let j = 0; j < 16; j++) {
      expect(x[j]).toBe(0.5 * j - 1);
      expect(x[j + 16]).toBe(0.5 * (15 - j) - 1);
    }
  });

  it('Q8_0: x = d·q with signed int8 quants, block after block', () => {
    const b = Buffer.alloc(68);
    b.writeUInt16LE(H.quarter, 0);
    b.writeUInt16LE(H.two, 34);
    for (let j = 0; j < 32; j++) {
      b.writeInt8(j - 16, 2 + j);
      b.writeInt8(j % 2 ? -127 : 127, 36 + j);
    }
    const x = dequantize(GGML_TYPE.Q8_0, b, 64);
    for (let j = 0; j < 32; j++) {
      expect(x[j]).toBe(0.25 * (j - 16));
      expect(x[32 + j]).toBe(j % 2 ? -254 : 254);
    }
  });

  it('Q4_0: x = d·(q − 8)', () => {
    const b = Buffer.alloc(18);
    b.writeUInt16LE(H.two, 0);
    for (let j = 0; j < 16; j++) b[2 + j] = j | (8 << 4);
    const x = dequantize(GGML_TYPE.Q4_0, b, 32);
    for (let j = 0; j < 16; j++) {
      expect(x[j]).toBe(2 * (j - 8));
      expect(x[j + 16]).toBe(0);
    }
  });

  it('F16 and F32 round-trip, and an encoder written from the block layouts agrees on random data', () => {
    const data = Float32Array.from({ length: 96 }, (_, i) => Math.sin(i * 1.7) * (1 + (i % 5)));
    for (const [name, id] of [
      ['F32', GGML_TYPE.F32],
      ['F16', GGML_TYPE.F16],
      ['Q8_0', GGML_TYPE.Q8_0],
      ['Q4_1', GGML_TYPE.Q4_1],
    ] as const) {
      const expected = new Float32Array(data.length);
      const bytes = encodeTensor(name, data, expected);
      const x = dequantize(id, bytes, data.length);
      expect(Array.from(x)).toEqual(Array.from(expected));
      // Quantization error stays within half a step of each format.
      const tol = { F32: 0, F16: 4e-3, Q8_0: 0.03, Q4_1: 0.4 }[name];
      for (let i = 0; i < data.length; i++) expect(Math.abs(x[i] - data[i])).toBeLessThanOrEqual(tol);
    }
  });

  it('refuses types it cannot decode, and short buffers, by name', () => {
    const e1 = (() => {
      try {
        dequantize(14, new Uint8Array(210), 256, 'blk.0.ffn_down.weight');
      } catch (e) {
        return e;
      }
    })();
    expect(e1).toBeInstanceOf(CorellaError);
    expect((e1 as CorellaError).code).toBe('BAD_MODEL_FILE');
    expect((e1 as Error).message).toMatch(/blk\.0\.ffn_down\.weight.*Q6_K/);
    expect(() => dequantize(GGML_TYPE.Q8_0, new Uint8Array(33), 32, 't')).toThrow(/33 bytes/);
    expect(() => dequantize(GGML_TYPE.Q4_1, new Uint8Array(40), 31, 't')).toThrow(/whole Q4_1 blocks/);
  });
});

describe('GgufFile', () => {
  it('reads quantized tensors of a real GGUF file at their aligned offsets', async () => {
    const path = join(dir, 'q.gguf');
    writeTinyGguf(path, { seed: 3, matrixType: 'Q4_1', embeddingType: 'Q8_0', tiedOutput: true });
    const f32Path = join(dir, 'f.gguf');
    writeTinyGguf(f32Path, { seed: 3, tiedOutput: true });
    const [q, f] = await Promise.all([GgufFile.open(path), GgufFile.open(f32Path)]);
    expect(q.tensor('blk.0.attn_q.weight').ggmlType).toBe(GGML_TYPE.Q4_1);
    expect(q.tensor('token_embd.weight').ggmlType).toBe(GGML_TYPE.Q8_0);
    expect(q.tensors.has('output.weight')).toBe(false);
    for (const name of ['blk.1.ffn_down.weight', 'token_embd.weight', 'blk.0.attn_norm.weight']) {
      const t = q.tensor(name);
      expect(t.fileOffset % 32).toBe(0);
      const type = t.ggmlType === GGML_TYPE.Q4_1 ? 'Q4_1' : t.ggmlType === GGML_TYPE.Q8_0 ? 'Q8_0' : 'F32';
      const exact = await f.readF32(name);
      const expected = new Float32Array(exact.length);
      encodeTensor(type, exact, expected);
      expect(Array.from(await q.readF32(name))).toEqual(Array.from(expected));
    }
    expect(llamaHparams(q).tiedOutput).toBe(true);
  });

  it('a base model of another architecture gets BAD_MODEL_FILE naming the architecture', async () => {
    await initTf(undefined, () => undefined);
    const path = join(dir, 'gpt2.gguf');
    writeTinyGguf(path, { architecture: 'gpt2' });
    const err = await LlamaTf.load(path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorellaError);
    expect((err as CorellaError).code).toBe('BAD_MODEL_FILE');
    expect((err as Error).message).toMatch(/architecture "gpt2" is not supported/);
  });

  it('reads the hyperparameters llama.cpp uses (heads, kv heads, rope base, tied output)', async () => {
    const path = join(dir, 'gqa.gguf');
    writeTinyGguf(path, { nHeadKv: 2, ropeFreqBase: 5000 });
    const hp = llamaHparams(await GgufFile.open(path));
    expect(hp).toMatchObject({ nHead: 4, nHeadKv: 2, headDim: 8, nRot: 8, ropeFreqBase: 5000 });
    expect(hp.ropeOrdering).toBe('normal');
    expect(hp.tiedOutput).toBe(false);
  });

  it('a missing file is BAD_MODEL_FILE', async () => {
    const err = await GgufFile.open(join(dir, 'nope.gguf')).catch((e: unknown) => e);
    expect((err as CorellaError).code).toBe('BAD_MODEL_FILE');
  });
});
