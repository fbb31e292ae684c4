import { beforeAll, describe, expect, it } from 'vitest';
import { LlmAdapter } from '../../../ml/corella/adapter.js';
import { CorellaError } from '../../../ml/errors.js';
import type { LlmFeatures } from '../../../ml/llm/types.js';
import { useCpu } from './fixtures.js';

beforeAll(useCpu);

const n = 5;
const d = 4;
/** Features with the affinity columns in their own field (as the extractor and the online LLM give them). */
const named: LlmFeatures = {
  modelSha256: 'x',
  template: 'paper',
  hiddenDim: d,
  sampleIds: Uint32Array.from({ length: n }, (_, i) => i),
  pYes: new Float32Array(n).fill(0.5),
  logOdds: Float32Array.from({ length: n }, (_, i) => i - 2),
  hidden: Float32Array.from({ length: n * d }, (_, i) => Math.sin(i)),
  affinity: Float32Array.from({ length: n * 3 }, (_, i) => 10 + i),
};

/** The same numbers as version-1 artifacts saw them: affinity appended to `hidden`. */
function concatenated(f: LlmFeatures): LlmFeatures {
  const w = f.hiddenDim + 3;
  const hidden = new Float32Array(n * w);
  for (let r = 0; r < n; r++) {
    hidden.set(f.hidden.subarray(r * d, (r + 1) * d), r * w);
    hidden.set(f.affinity!.subarray(r * 3, (r + 1) * 3), r * w + d);
  }
  const { affinity: _drop, ...rest } = f;
  return { ...rest, hiddenDim: w, hidden };
}

describe('LlmAdapter affinity columns', () => {
  it('reads the named affinity columns where the tail of the input says, without the hidden state', () => {
    const a = LlmAdapter.create({ hiddenDim: d, affinityDim: 3, inputTail: 4, layers: [3], seed: 1 });
    const x = a.inputTensor(named);
    // Unstandardised (no fit yet): each row is [affinity ×3, log-odds].
    const rows = x.arraySync();
    for (let r = 0; r < n; r++) {
      expect(rows[r]).toEqual([10 + 3 * r, 11 + 3 * r, 12 + 3 * r, r - 2]);
    }
    x.dispose();
    a.dispose();
  });

  it('a version-1 adapter (affinity counted in hiddenDim) scores named features as it scored the old layout', () => {
    const v1 = LlmAdapter.create({ hiddenDim: d + 3, skipInputs: 2, layers: [3], seed: 2 });
    v1.fitNormalization(concatenated(named));
    const saved = JSON.parse(v1.serialize()) as { version: number };
    expect(saved.version).toBe(1);
    const before = Array.from(v1.predict(concatenated(named)));
    const reloaded = LlmAdapter.deserialize(v1.serialize());
    expect(Array.from(reloaded.predict(named))).toEqual(before);
    v1.dispose();
    reloaded.dispose();
  });

  it('version 2 stores affinityDim and rejects features without the affinity it was trained on, naming it', () => {
    const a = LlmAdapter.create({ hiddenDim: d, affinityDim: 3, layers: [3], seed: 3 });
    const file = JSON.parse(a.serialize()) as { version: number; config: { affinityDim: number } };
    expect(file.version).toBe(2);
    expect(file.config.affinityDim).toBe(3);
    const { affinity: _drop, ...without } = named;
    expect(() => a.predict(without)).toThrow(CorellaError);
    expect(() => a.predict(without)).toThrow(/0 affinity columns.*3 affinity columns.*itemAffinity/);
    // The old layout (affinity hidden in `hidden`) is not silently read as a wider hidden state either.
    expect(() => a.predict(concatenated(named))).toThrow(/hiddenDim 7/);
    a.dispose();
  });
});
