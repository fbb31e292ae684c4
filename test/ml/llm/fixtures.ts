import type { EncodedSplit, ItemTable } from '../../../ml/data/types.js';

export const ITEMS: ItemTable = {
  ids: ['1', '2', '3', '4', '5', '6', '7', '8'],
  titles: [
    'Toy Story (1995)',
    'Heat (1995)',
    'The Matrix (1999)',
    'Alien (1979)',
    'Fargo (1996)',
    'Casino (1995)',
    'The Story of a Movie (2000)',
    'Below the Alien Heat (1990)',
  ],
  genres: ['Animation', 'Action', 'Sci-Fi', 'Horror', 'Crime', 'Drama', '', ''],
};

/**
 * A small split: `users` users, each with a fixed history of `historyItems` items and `targetsPerUser` targets
 * (so a user's prompts share the history prefix). Deterministic.
 */
export function makeSplit(users = 3, targetsPerUser = 4, historyLen = 5, historyItems = 4): EncodedSplit {
  const n = users * targetsPerUser;
  const s: EncodedSplit = {
    name: 'test',
    size: n,
    labels: new Float32Array(n),
    sampleIds: new Uint32Array(n),
    timestamps: new Float64Array(n),
    userRows: new Int32Array(n),
    categorical: new Int32Array(0),
    sequences: [],
    dense: new Float32Array(0),
    targetItemRows: new Int32Array(n),
    historyItemRows: new Int32Array(n * historyLen).fill(-1),
    historyRatings: new Float32Array(n * historyLen).fill(NaN),
    historyLen,
  };
  // Rows interleave users so grouping by user is the extractor's job, not the fixture's.
  let r = 0;
  for (let t = 0; t < targetsPerUser; t++) {
    for (let u = 0; u < users; u++) {
      s.sampleIds[r] = 1000 + u * 100 + t;
      s.userRows[r] = u;
      s.timestamps[r] = 1e9 + t * 60 + u;
      s.labels[r] = (u + t) % 2;
      s.targetItemRows[r] = (u * 3 + t) % ITEMS.ids.length;
      for (let j = 0; j < historyItems; j++) {
        const slot = historyLen - historyItems + j;
        s.historyItemRows[r * historyLen + slot] = (u + j * 2) % ITEMS.ids.length;
        s.historyRatings[r * historyLen + slot] = 1 + ((u + j) % 5);
      }
      r++;
    }
  }
  return s;
}
