import type { EncodedSplit, ItemTable } from './types.js';

export interface ItemText {
  itemRow: number;
  id: string;
  title: string;
  genres: string;
}

export interface SampleText {
  target: ItemText;
  /** Oldest first, most recent last; `rating` is the rating (or 0/1 label for label-only data). */
  history: (ItemText & { rating: number })[];
}

function itemText(items: ItemTable, row: number): ItemText {
  return { itemRow: row, id: items.ids[row], title: items.titles[row], genres: items.genres[row] };
}

/** The text side of one sample (target item and history with ratings), for building LLM prompts. */
export function sampleText(split: EncodedSplit, items: ItemTable, row: number): SampleText {
  const K = split.historyLen;
  const history: SampleText['history'] = [];
  for (let j = 0; j < K; j++) {
    const r = split.historyItemRows[row * K + j];
    if (r < 0) continue;
    history.push({ ...itemText(items, r), rating: split.historyRatings[row * K + j] });
  }
  return { target: itemText(items, split.targetItemRows[row]), history };
}
