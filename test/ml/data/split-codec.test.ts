import { describe, expect, it } from 'vitest';
import {
  decodeSplit,
  encodeSplit,
  featureMapId,
  type EncodedSplit,
  type FeatureMap,
} from '../../../ml/data/index.js';
import { rng } from '../../helpers/datasets.js';

function randomSplit(size: number, K: number, seed: number): EncodedSplit {
  const r = rng(seed);
  const ints = (n: number, max: number) => Int32Array.from({ length: n }, () => Math.floor(r() * max) - 1);
  return {
    name: 'valid',
    size,
    labels: Float32Array.from({ length: size }, () => (r() < 0.5 ? 0 : 1)),
    sampleIds: Uint32Array.from({ length: size }, (_, i) => i * 3),
    timestamps: Float64Array.from({ length: size }, () => 9.7e8 + r() * 1e7),
    userRows: ints(size, 50),
    categorical: ints(size * 5, 100_000),
    sequences: [ints(size * K, 30), ints(size * 3, 1000)],
    dense: Float32Array.from({ length: size * 2 }, () => r()),
    targetItemRows: ints(size, 30),
    historyItemRows: ints(size * K, 30),
    historyRatings: Float32Array.from({ length: size * K }, (_, i) =>
      i % 4 === 0 ? NaN : 1 + Math.floor(r() * 5),
    ),
    historyLen: K,
  };
}

describe('split binary format', () => {
  it('round-trips every column exactly, also from an unaligned buffer', () => {
    const s = randomSplit(37, 6, 3);
    const bytes = encodeSplit(s, 'a'.repeat(64));
    const back = decodeSplit(bytes);
    expect(back.featureMapId).toBe('a'.repeat(64));
    expect(back.split).toEqual(s);
    const shifted = new Uint8Array(bytes.length + 1);
    shifted.set(bytes, 1);
    expect(decodeSplit(shifted.subarray(1)).split).toEqual(s);
    expect(encodeSplit(s, 'a'.repeat(64)).equals(bytes)).toBe(true);
  });

  it('stores small integer columns narrowly and widens them back exactly', () => {
    const s = randomSplit(200, 10, 4);
    const bytes = encodeSplit(s, 'd'.repeat(64));
    const header = JSON.parse(bytes.toString('utf8', 12, 12 + bytes.readUInt32LE(8))) as {
      columns: { name: string; stored: string }[];
    };
    const stored = Object.fromEntries(header.columns.map((c) => [c.name, c.stored]));
    expect(stored).toMatchObject({
      labels: 'i8nan',
      historyRatings: 'i8nan',
      'sequence.0': 'i8',
      'sequence.1': 'i16',
      categorical: 'i32',
      dense: 'f32',
      timestamps: 'f64',
    });
    const back = decodeSplit(bytes).split;
    expect(back).toEqual(s);
    expect(back.historyRatings).toBeInstanceOf(Float32Array);
    expect(back.sequences[1]).toBeInstanceOf(Int32Array);
  });

  it('round-trips an empty split', () => {
    const s = randomSplit(0, 4, 1);
    expect(decodeSplit(encodeSplit(s, 'b'.repeat(64))).split).toEqual(s);
  });

  it('rejects corrupt bytes with ARTIFACT_CORRUPT', () => {
    const bytes = encodeSplit(randomSplit(10, 4, 2), 'c'.repeat(64));
    expect(() => decodeSplit(bytes.subarray(0, bytes.length - 64))).toThrow(/runs past the end/);
    const bad = Buffer.from(bytes);
    bad.write('XXXX', 0, 'latin1');
    expect(() => decodeSplit(bad)).toThrowError(
      expect.objectContaining({ code: 'ARTIFACT_CORRUPT' }) as Error,
    );
  });

  it('feature map id covers content and ignores key order', () => {
    const fm: Omit<FeatureMap, 'id'> = {
      categorical: [{ name: 'user_id', kind: 'categorical', vocabSize: 3 }],
      sequences: [],
      dense: [],
      vocabularies: { user_id: ['<oov>', 'a', 'b'] },
    };
    const reordered = {
      vocabularies: fm.vocabularies,
      dense: [],
      sequences: [],
      categorical: fm.categorical,
    };
    expect(featureMapId(reordered)).toBe(featureMapId(fm));
    expect(featureMapId({ ...fm, vocabularies: { user_id: ['<oov>', 'a', 'c'] } })).not.toBe(
      featureMapId(fm),
    );
  });
});
