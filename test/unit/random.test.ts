import { describe, expect, it } from 'vitest';
import { mixSeed, mulberry32, permutation, Prng } from '../../ml/random.js';

// Pinned to the streams of the three generators this module replaced (ml/crm/random.ts, ml/data/prng.ts,
// ml/corella/random.ts): a change here changes every seeded number the project has published.
describe('ml/random', () => {
  it('mulberry32 keeps its stream', () => {
    const r = mulberry32(42);
    expect([r(), r(), r()]).toEqual([0.6011037519201636, 0.44829055899754167, 0.8524657934904099]);
  });

  it('permutation keeps its draws', () => {
    expect(Array.from(permutation(mulberry32(7), 10))).toEqual([6, 5, 8, 1, 2, 3, 4, 7, 9, 0]);
  });

  it('mixSeed keeps its mixing', () => {
    expect(mixSeed(1, 2, 3)).toBe(2901138804);
  });

  it('Prng draws from the same mulberry32 stream', () => {
    const p = new Prng(42);
    expect([p.next(), p.int(100), p.normal()]).toEqual([0.6011037519201636, 44, -0.2730261048826104]);
  });
});
