/**
 * Stage-2 / stage-3 subset selection. Both subsets come from one ordering of the training rows, so they
 * are disjoint by construction: stage 2 takes the first n2 rows of the ordering, stage 3 the next n3.
 */
import { CorellaError } from '../errors.js';
import { mulberry32, permutation } from '../random.js';
import { flattenUnits } from './sampling.js';

export type SubsetSelection = 'random' | 'hard';

export interface SubsetPlan {
  stage2: Int32Array;
  stage3: Int32Array;
}

/**
 * 'random': a uniform permutation. 'hard': weighted sampling without replacement (Efraimidis–Spirakis keys
 * ln(u)/w) with weight w = entropy^power + floor, so high-entropy samples are likely but not certain to be
 * drawn — a pure top-k would hand stage 3 only the leftovers of stage 2 and see no easy samples at all.
 */
export function selectSubsets(opts: {
  size: number;
  n2: number;
  n3: number;
  selection: SubsetSelection;
  seed: number;
  /** CRM entropy per training row; required for 'hard'. */
  entropy?: ArrayLike<number>;
  hardPower?: number;
  /**
   * Draw whole units (user blocks, ml/data/user-blocks.ts) instead of single rows, so the LLM branch reuses
   * each block's prompt prefix. A unit's 'hard' weight is its rows' mean entropy.
   */
  units?: Int32Array[];
}): SubsetPlan {
  const { size, n2, n3 } = opts;
  if (n2 + n3 > size) {
    throw new CorellaError(
      'BAD_CONFIG',
      `stage2.samples (${n2}) + stage3.samples (${n3}) exceed the ${size} training samples; the subsets must be disjoint`,
    );
  }
  const rng = mulberry32(opts.seed);
  const units = opts.units;
  const m = units ? units.length : size;
  let order: Int32Array;
  if (opts.selection === 'random') {
    order = permutation(rng, m);
  } else {
    const h = opts.entropy;
    if (!h || h.length !== size) {
      throw new CorellaError('BAD_CONFIG', `hard subset selection needs one CRM entropy per training row`);
    }
    const power = opts.hardPower ?? 2;
    const keys = new Float64Array(m);
    for (let i = 0; i < m; i++) {
      let e = 0;
      if (units) {
        for (const r of units[i]) e += h[r];
        e /= Math.max(1, units[i].length);
      } else e = h[i];
      const w = Math.pow(Math.max(0, e), power) + 1e-6;
      keys[i] = Math.log(Math.max(rng(), 1e-300)) / w;
    }
    order = Int32Array.from({ length: m }, (_, i) => i).sort((a, b) => keys[b] - keys[a]);
  }
  const rows = units ? flattenUnits(units, order, n2 + n3) : order;
  return { stage2: rows.slice(0, n2), stage3: rows.slice(n2, n2 + n3) };
}
