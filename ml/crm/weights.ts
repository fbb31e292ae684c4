import * as tf from '@tensorflow/tfjs-core';
import { CorellaError } from '../errors.js';
import type { CrmNet } from './model.js';
import type { TensorEntry } from './tensor-file.js';

/** A copy of every model variable (trainable or not) by stable name. */
export function readWeights(model: CrmNet): TensorEntry[] {
  return model.namedVariables().map(({ name, variable }) => ({
    name,
    shape: variable.shape.slice(),
    data: (variable.dataSync() as Float32Array).slice(),
  }));
}

/** Overwrites the model's variables; every variable must be present with its exact shape. */
export function writeWeights(
  model: CrmNet,
  tensors: Map<string, TensorEntry>,
  what: string,
  prefix = '',
): void {
  const vars = model.namedVariables();
  for (const { name, variable } of vars) {
    const t = tensors.get(prefix + name);
    if (!t) throw new CorellaError('BAD_MODEL_FILE', `${what}: variable ${name} is missing`);
    if (t.shape.length !== variable.shape.length || t.shape.some((d, i) => d !== variable.shape[i])) {
      throw new CorellaError(
        'BAD_MODEL_FILE',
        `${what}: variable ${name} has shape [${t.shape}], the model expects [${variable.shape}]`,
      );
    }
  }
  tf.tidy(() => {
    for (const { name, variable } of vars) {
      const t = tensors.get(prefix + name)!;
      // A copy: on cpu a tensor may alias the array it was made from, and embedding rows are updated in place.
      variable.assign(tf.tensor(t.data.slice(), t.shape, 'float32'));
    }
  });
}
