/**
 * The contract between ingestion (ml/data), the CRM (ml/crm) and the LLM branch (ml/llm).
 * Samples are stored column-wise in typed arrays so that a split of a few million rows stays compact
 * and can be handed to tfjs without copying row objects.
 */

export type SplitName = 'train' | 'valid' | 'test';
export const SPLITS: readonly SplitName[] = ['train', 'valid', 'test'];

export type DatasetSource = 'movielens-1m' | 'amazon-books' | 'recbole' | 'synthetic-movielens';

/** One CRM input field. Index 0 of every categorical vocabulary is the out-of-vocabulary / padding row. */
export interface CategoricalField {
  name: string;
  kind: 'categorical';
  /** Number of rows of the embedding table, OOV row included. */
  vocabSize: number;
}

/** A variable-length list of categorical ids, stored padded with 0 to `maxLen`, pooled by masked mean. */
export interface SequenceField {
  name: string;
  kind: 'sequence';
  vocabSize: number;
  maxLen: number;
  /** Name of a categorical field whose vocabulary (and embedding table) this sequence shares, e.g. item_id. */
  sharesVocabWith?: string;
}

export interface DenseField {
  name: string;
  kind: 'dense';
}

export type FeatureField = CategoricalField | SequenceField | DenseField;

export interface FeatureMap {
  /** sha256 of the canonical JSON of everything below: checked whenever a model or split is loaded. */
  id: string;
  categorical: CategoricalField[];
  sequences: SequenceField[];
  dense: DenseField[];
  /** Raw value -> index per categorical/sequence vocabulary (built on the training split only). */
  vocabularies: Record<string, string[]>;
}

/** Items known to the dataset, for prompts. `title` is human-readable text (year included where known). */
export interface ItemTable {
  /** Raw item ids in table order; index into this array is the "item row". */
  ids: string[];
  titles: string[];
  /** Optional extra text per item (genres/categories), '' when unknown. */
  genres: string[];
}

/**
 * One split, column-wise. Row r of a 2-D column occupies [r*width, (r+1)*width).
 */
export interface EncodedSplit {
  name: SplitName;
  size: number;
  /** 0 or 1. */
  labels: Float32Array;
  /** Stable sample id within the dataset version (also the cache key for LLM features). */
  sampleIds: Uint32Array;
  /** Seconds since epoch, for ordering and time windows. */
  timestamps: Float64Array;
  /** Dense user index (row in `users` of the dataset) for per-user AUC and prompt prefix reuse. */
  userRows: Int32Array;
  /** size × featureMap.categorical.length encoded ids. */
  categorical: Int32Array;
  /** For each sequence field, size × maxLen encoded ids, 0 = padding; left-aligned, most recent last. */
  sequences: Int32Array[];
  /** size × featureMap.dense.length. */
  dense: Float32Array;
  /** Text side for the LLM: target item row in ItemTable. */
  targetItemRows: Int32Array;
  /** size × historyLen item rows (−1 = padding), oldest first, most recent last. */
  historyItemRows: Int32Array;
  /** size × historyLen ratings (or labels for label-only data), NaN where padded. */
  historyRatings: Float32Array;
  historyLen: number;
}

export interface SplitStats {
  size: number;
  positives: number;
  positiveRate: number;
}

export interface DatasetManifest {
  /** sha256 over source, params and input sha256s: equal inputs + params give the same version id. */
  versionId: string;
  source: DatasetSource;
  params: Record<string, unknown>;
  inputs: { name: string; sha256: string; bytes: number }[];
  featureMapArtifact: string;
  itemTableArtifact: string;
  splitArtifacts: Record<SplitName, string>;
  stats: Record<SplitName, SplitStats>;
  /** Rows dropped or skipped, by reason. */
  dropped: Record<string, number>;
  userCount: number;
  itemCount: number;
}

export interface CtrDataset {
  manifest: DatasetManifest;
  featureMap: FeatureMap;
  items: ItemTable;
  splits: Record<SplitName, EncodedSplit>;
}
