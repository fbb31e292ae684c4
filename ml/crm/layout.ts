import { CorellaError } from '../errors.js';
import type { FeatureMap } from '../data/types.js';

/**
 * All categorical vocabularies live in one embedding table, each field at its own row offset, so one
 * gather serves every field. A sequence field that shares a vocabulary (history of item ids) reads the
 * rows of that field; otherwise it gets its own range.
 */
export interface TableLayout {
  rows: number;
  categoricalOffsets: Int32Array;
  categoricalVocab: Int32Array;
  sequenceOffsets: Int32Array;
  sequenceVocab: Int32Array;
  sequenceMaxLen: Int32Array;
  nDense: number;
}

export function tableLayout(fm: FeatureMap): TableLayout {
  let rows = 0;
  const catOff = new Int32Array(fm.categorical.length);
  const catVocab = new Int32Array(fm.categorical.length);
  fm.categorical.forEach((f, i) => {
    if (!Number.isInteger(f.vocabSize) || f.vocabSize < 1) {
      throw new CorellaError(
        'BAD_CONFIG',
        `feature map ${fm.id}: field ${f.name} has vocabSize ${f.vocabSize}`,
        { details: { field: f.name } },
      );
    }
    catOff[i] = rows;
    catVocab[i] = f.vocabSize;
    rows += f.vocabSize;
  });
  const seqOff = new Int32Array(fm.sequences.length);
  const seqVocab = new Int32Array(fm.sequences.length);
  const seqLen = new Int32Array(fm.sequences.length);
  fm.sequences.forEach((s, i) => {
    seqLen[i] = s.maxLen;
    if (s.sharesVocabWith !== undefined) {
      const j = fm.categorical.findIndex((c) => c.name === s.sharesVocabWith);
      if (j < 0) {
        throw new CorellaError(
          'BAD_CONFIG',
          `feature map ${fm.id}: sequence ${s.name} shares the vocabulary of unknown field ${s.sharesVocabWith}`,
          {
            details: { field: s.name },
          },
        );
      }
      seqOff[i] = catOff[j];
      seqVocab[i] = catVocab[j];
    } else {
      seqOff[i] = rows;
      seqVocab[i] = s.vocabSize;
      rows += s.vocabSize;
    }
  });
  return {
    rows,
    categoricalOffsets: catOff,
    categoricalVocab: catVocab,
    sequenceOffsets: seqOff,
    sequenceVocab: seqVocab,
    sequenceMaxLen: seqLen,
    nDense: fm.dense.length,
  };
}

/** Width of x0, the concatenated input of the cross network and MLP. */
export function inputWidth(layout: TableLayout, embeddingDim: number): number {
  return (layout.categoricalOffsets.length + layout.sequenceOffsets.length) * embeddingDim + layout.nDense;
}
