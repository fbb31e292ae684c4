import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { AlignmentProjections, alignmentLoss, defaultPairs } from '../../../ml/corella/alignment.js';
import { CorellaError } from '../../../ml/errors.js';
import { useCpu } from './fixtures.js';

beforeAll(useCpu);

/** One pair, crm width 2, adapter width 1, shared width 1, with hand-set projections. */
function handCase(): AlignmentProjections {
  const proj = AlignmentProjections.create(
    { pairs: [{ crm: 'mlp_0', llm: 'adapter_0' }], sharedDim: 1, seed: 1 },
    [{ name: 'mlp_0', width: 2 }],
    [{ name: 'adapter_0', width: 1 }],
  );
  const [wc, bc, wl, bl] = proj.trainableVariables();
  wc.assign(tf.tensor2d([[1], [2]]));
  bc.assign(tf.tensor1d([0]));
  wl.assign(tf.tensor2d([[3]]));
  bl.assign(tf.tensor1d([1]));
  return proj;
}

describe('alignment loss', () => {
  // g_crm(h_c) = [1, 2], g_llm(h_l) = [4, 1]: differences 3 and −1, squared 9 and 1, batch mean 5.
  const hc = () =>
    tf.tensor2d([
      [1, 0],
      [0, 1],
    ]);
  const hl = () => tf.tensor2d([[1], [0]]);

  it('is the batch mean of squared L2 distances after projection', () => {
    const proj = handCase();
    const v = proj.loss([{ name: 'mlp_0', value: hc() }], [{ name: 'adapter_0', value: hl() }]).dataSync()[0];
    expect(v).toBeCloseTo(5, 5);
  });

  it('averages over pairs', () => {
    const a = tf.tensor2d([[0, 0]]);
    const b = tf.tensor2d([[3, 4]]); // squared distance 25
    const c = tf.tensor2d([[1], [1]]);
    const d = tf.tensor2d([[2], [4]]); // squared distances 1 and 9 → mean 5
    expect(
      alignmentLoss([
        { crm: a, llm: b },
        { crm: c, llm: d },
      ]).dataSync()[0],
    ).toBeCloseTo(15, 5);
  });

  it('has the analytic gradient with respect to activations and projections', () => {
    const proj = handCase();
    const hcT = hc();
    const hlT = hl();
    const [gHc, gHl] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
      proj.loss(
        [{ name: 'mlp_0', value: a as tf.Tensor2D }],
        [{ name: 'adapter_0', value: b as tf.Tensor2D }],
      ),
    )([hcT, hlT]);
    // dL/dh_l = (2/B)·diff·W_l = [3·3, −1·3]; dL/dh_c = −(2/B)·diff·W_cᵀ = [−3·[1,2], 1·[1,2]].
    expect(Array.from(gHl.dataSync())).toEqual([9, -3].map((x) => expect.closeTo(x, 5)));
    expect(Array.from(gHc.dataSync())).toEqual([-3, -6, 1, 2].map((x) => expect.closeTo(x, 5)));

    const { grads } = tf.variableGrads(
      () => proj.loss([{ name: 'mlp_0', value: hcT }], [{ name: 'adapter_0', value: hlT }]),
      proj.trainableVariables(),
    );
    const [wc, bc, wl, bl] = proj.trainableVariables();
    // dL/dW_l = (2/B)Σ diff·h_l = 3; dL/db_l = (2/B)Σ diff = 2; dL/dW_c = −(2/B)Σ h_cᵀ·diff = [−3, 1]; dL/db_c = −2.
    expect(grads[wl.name].dataSync()[0]).toBeCloseTo(3, 5);
    expect(grads[bl.name].dataSync()[0]).toBeCloseTo(2, 5);
    expect(Array.from(grads[wc.name].dataSync())).toEqual([-3, 1].map((x) => expect.closeTo(x, 5)));
    expect(grads[bc.name].dataSync()[0]).toBeCloseTo(-2, 5);
  });

  it('rejects a pair naming a layer the network does not have', () => {
    const make = () =>
      AlignmentProjections.create(
        { pairs: [{ crm: 'cross_9', llm: 'adapter_0' }], sharedDim: 4, seed: 1 },
        [{ name: 'mlp_0', width: 2 }],
        [{ name: 'adapter_0', width: 1 }],
      );
    expect(make).toThrow(CorellaError);
    expect(make).toThrow(/pairs\[0\]\.crm.*cross_9/);
  });

  it('round-trips through serialisation', () => {
    const proj = handCase();
    const back = AlignmentProjections.deserialize(proj.serialize());
    const v = back.loss([{ name: 'mlp_0', value: hc() }], [{ name: 'adapter_0', value: hl() }]).dataSync()[0];
    expect(v).toBeCloseTo(5, 5);
  });

  it('pairs adapter layers with CRM layers at the same relative depth', () => {
    const crm = ['cross_0', 'cross_1', 'cross_2', 'mlp_0', 'mlp_1'].map((name) => ({ name, width: 8 }));
    const llm = ['adapter_0', 'adapter_1'].map((name) => ({ name, width: 8 }));
    expect(defaultPairs(crm, llm)).toEqual([
      { crm: 'cross_1', llm: 'adapter_0' },
      { crm: 'mlp_1', llm: 'adapter_1' },
    ]);
  });
});
