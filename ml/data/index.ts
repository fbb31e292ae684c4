export * from './types.js';
export {
  ingestDataset,
  defaultLabelRule,
  manifestName,
  DEFAULT_HISTORY_LEN,
  DEFAULT_MIN_HISTORY,
} from './ingest.js';
export type { IngestOptions } from './ingest.js';
export type { LabelRule } from './build.js';
export { OOV_TOKEN, HISTORY_FIELD } from './build.js';
export type { OnBadLine } from './bad-lines.js';
export type { TimeWindow } from './filters.js';
export { loadDataset, loadSplit, loadFeatureMap, loadItemTable, loadManifest } from './load.js';
export { encodeSplit, decodeSplit } from './split-codec.js';
export { featureMapId, verifyFeatureMap } from './feature-map.js';
export { generateSyntheticMovielens } from './synthetic.js';
export type { SyntheticOptions, SyntheticMovielens } from './synthetic.js';
export { GENRE_WORDS } from './synthetic-words.js';
export { fetchMovielens1m, resolveMovielens1m, MOVIELENS_1M_ZIP } from './download.js';
export type { DownloadOptions } from './download.js';
export { sampleText } from './sample-text.js';
export type { SampleText, ItemText } from './sample-text.js';
export { sliceSplit, recentRows } from './slice.js';
