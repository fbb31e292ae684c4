import * as tf from '@tensorflow/tfjs-core';
import type { Tensor1D, Tensor2D } from '@tensorflow/tfjs-core';
import { CorellaError } from '../errors.js';
import type { EncodedSplit } from '../data/types.js';
import type { CrmBatch } from './types.js';
import type { TableLayout } from './layout.js';

/**
 * A CrmBatch plus what makeBatch can precompute cheaply in JS: flat embedding-table row ids (field
 * offsets applied, out-of-range ids mapped to the field's OOV row 0) and the masked-mean weights of every
 * sequence (1/count on real positions, 0 on padding). Hand-built CrmBatches without these still work:
 * the model derives them with tensor ops.
 */
export interface PreparedCrmBatch extends CrmBatch {
  prepared: {
    /** int32 [B * nCategorical] */
    categoricalRows: Tensor1D;
    /** float32 [B * nCategorical] of ones: the embedding-bag weights of single-row lookups */
    categoricalWeights: Tensor1D;
    /** int32 [B * maxLen] per sequence field */
    sequenceRows: Tensor1D[];
    /** float32 [B * maxLen] per sequence field */
    sequenceWeights: Tensor1D[];
    /** The same row ids and weights in JS memory, for sparse embedding updates. */
    host: HostRows;
  };
}

export function isPrepared(b: CrmBatch): b is PreparedCrmBatch {
  return (b as Partial<PreparedCrmBatch>).prepared !== undefined;
}

export function disposeCrmBatch(b: CrmBatch): void {
  b.categorical.dispose();
  b.sequences.forEach((t) => t.dispose());
  b.dense?.dispose();
  b.labels.dispose();
  if (isPrepared(b)) {
    b.prepared.categoricalRows.dispose();
    b.prepared.categoricalWeights.dispose();
    b.prepared.sequenceRows.forEach((t) => t.dispose());
    b.prepared.sequenceWeights.forEach((t) => t.dispose());
  }
}

export function checkSplitShape(split: EncodedSplit, layout: TableLayout): void {
  const nCat = layout.categoricalOffsets.length;
  const where = `split ${split.name}`;
  if (split.categorical.length !== split.size * nCat) {
    throw new CorellaError(
      'BAD_DATASET',
      `${where}: categorical has ${split.categorical.length} ids, expected ${split.size}×${nCat}`,
      {
        details: { split: split.name, field: 'categorical' },
      },
    );
  }
  if (split.sequences.length !== layout.sequenceOffsets.length) {
    throw new CorellaError(
      'BAD_DATASET',
      `${where}: ${split.sequences.length} sequence columns, feature map has ${layout.sequenceOffsets.length}`,
      {
        details: { split: split.name, field: 'sequences' },
      },
    );
  }
  split.sequences.forEach((s, i) => {
    if (s.length !== split.size * layout.sequenceMaxLen[i]) {
      throw new CorellaError(
        'BAD_DATASET',
        `${where}: sequence ${i} has ${s.length} ids, expected ${split.size}×${layout.sequenceMaxLen[i]}`,
        {
          details: { split: split.name, field: `sequences[${i}]` },
        },
      );
    }
  });
  if (split.dense.length !== split.size * layout.nDense) {
    throw new CorellaError(
      'BAD_DATASET',
      `${where}: dense has ${split.dense.length} values, expected ${split.size}×${layout.nDense}`,
      {
        details: { split: split.name, field: 'dense' },
      },
    );
  }
  if (split.labels.length !== split.size) {
    throw new CorellaError('BAD_DATASET', `${where}: ${split.labels.length} labels for ${split.size} rows`, {
      details: { split: split.name, field: 'labels' },
    });
  }
}

/** Row ids and pooling weights of a batch in JS memory (what sparse embedding updates scatter onto). */
export interface HostRows {
  categoricalRows: Int32Array;
  sequenceRows: Int32Array[];
  sequenceWeights: Float32Array[];
}

/**
 * Field offsets applied, out-of-range ids mapped to the field's OOV row, 1/count weights on real positions.
 * With `into` (a HostRows of the same batch size, e.g. the previous step's) its arrays are overwritten and
 * returned: a training step otherwise allocates ~40 KB of typed arrays that only the GC gets back.
 */
export function hostRows(
  split: EncodedSplit,
  rows: ArrayLike<number>,
  layout: TableLayout,
  into?: HostRows,
): HostRows {
  const B = rows.length;
  const nCat = layout.categoricalOffsets.length;
  const reuse = into !== undefined && into.categoricalRows.length === B * nCat;
  const catRows = reuse ? into.categoricalRows : new Int32Array(B * nCat);
  const { categoricalOffsets: offsets, categoricalVocab: vocabs } = layout;
  const cat = split.categorical;
  const size = split.size;
  for (let i = 0; i < B; i++) {
    const r = rows[i];
    if (!(r >= 0 && r < size)) {
      throw new CorellaError('BAD_CONFIG', `row ${r} is outside split ${split.name} (size ${size})`);
    }
    const src = r * nCat;
    const dst = i * nCat;
    for (let f = 0; f < nCat; f++) {
      const id = cat[src + f];
      catRows[dst + f] = offsets[f] + (id >= 0 && id < vocabs[f] ? id : 0);
    }
  }
  const sequenceRows: Int32Array[] = [];
  const sequenceWeights: Float32Array[] = [];
  split.sequences.forEach((col, s) => {
    const L = layout.sequenceMaxLen[s];
    const vocab = layout.sequenceVocab[s];
    const off = layout.sequenceOffsets[s];
    const seqRows =
      reuse && into.sequenceRows[s]?.length === B * L ? into.sequenceRows[s] : new Int32Array(B * L);
    const w =
      reuse && into.sequenceWeights[s]?.length === B * L
        ? into.sequenceWeights[s].fill(0)
        : new Float32Array(B * L);
    for (let i = 0; i < B; i++) {
      const base = rows[i] * L;
      const o = i * L;
      let count = 0;
      for (let p = 0; p < L; p++) {
        const id = col[base + p];
        if (id !== 0) {
          count++;
          // Marks the real positions; replaced by 1/count below.
          w[o + p] = 1;
        }
        seqRows[o + p] = off + (id > 0 && id < vocab ? id : 0);
      }
      if (count > 1) {
        const inv = 1 / count;
        for (let p = 0; p < L; p++) if (w[o + p] !== 0) w[o + p] = inv;
      }
    }
    sequenceRows.push(seqRows);
    sequenceWeights.push(w);
  });
  return { categoricalRows: catRows, sequenceRows, sequenceWeights };
}

export function makePreparedBatch(
  split: EncodedSplit,
  rows: ArrayLike<number>,
  layout: TableLayout,
): PreparedCrmBatch {
  const B = rows.length;
  const nCat = layout.categoricalOffsets.length;
  const host = hostRows(split, rows, layout);
  const cat = new Int32Array(B * nCat);
  const labels = new Float32Array(B);
  // Index loops rather than set(subarray(...)) per row: a subarray is an allocation, three per sample.
  const srcCat = split.categorical;
  for (let i = 0; i < B; i++) {
    const r = rows[i];
    labels[i] = split.labels[r];
    for (let f = 0; f < nCat; f++) cat[i * nCat + f] = srcCat[r * nCat + f];
  }
  const sequences = split.sequences.map((col, s) => {
    const L = layout.sequenceMaxLen[s];
    const ids = new Int32Array(B * L);
    for (let i = 0; i < B; i++) {
      const src = rows[i] * L;
      for (let p = 0; p < L; p++) ids[i * L + p] = col[src + p];
    }
    return tf.tensor2d(ids, [B, L], 'int32');
  });
  let dense: Tensor2D | undefined;
  if (layout.nDense > 0) {
    const d = new Float32Array(B * layout.nDense);
    for (let i = 0; i < B; i++)
      d.set(split.dense.subarray(rows[i] * layout.nDense, (rows[i] + 1) * layout.nDense), i * layout.nDense);
    dense = tf.tensor2d(d, [B, layout.nDense], 'float32');
  }
  const batch: PreparedCrmBatch = {
    categorical: tf.tensor2d(cat, [B, nCat], 'int32'),
    sequences,
    labels: tf.tensor1d(labels, 'float32'),
    prepared: {
      categoricalRows: tf.tensor1d(host.categoricalRows, 'int32'),
      categoricalWeights: tf.ones([B * nCat], 'float32'),
      sequenceRows: host.sequenceRows.map((r) => tf.tensor1d(r, 'int32')),
      sequenceWeights: host.sequenceWeights.map((w) => tf.tensor1d(w, 'float32')),
      host,
    },
  };
  if (dense) batch.dense = dense;
  return batch;
}
