import { filterInteractions, type Interactions } from './raw.js';
import type { BadLineSink } from './bad-lines.js';

export interface TimeWindow {
  /** Inclusive lower bound, seconds since epoch. */
  from?: number;
  /** Exclusive upper bound, seconds since epoch. */
  to?: number;
}

export function inWindow(ts: number, w: TimeWindow | undefined): boolean {
  if (!w) return true;
  if (w.from !== undefined && ts < w.from) return false;
  if (w.to !== undefined && ts >= w.to) return false;
  return true;
}

export function applyTimeWindow(
  inter: Interactions,
  w: TimeWindow | undefined,
  sink: BadLineSink,
): Interactions {
  if (!w || (w.from === undefined && w.to === undefined)) return inter;
  const keep = new Uint8Array(inter.n);
  let dropped = 0;
  for (let i = 0; i < inter.n; i++) {
    if (inWindow(inter.timestamp[i], w)) keep[i] = 1;
    else dropped++;
  }
  sink.drop('time_window', dropped);
  return dropped ? filterInteractions(inter, keep) : inter;
}

/**
 * Iterative k-core: removes interactions of users or items with fewer than k interactions until every
 * remaining user and item has at least k (removing an item can push a user below k, hence the loop).
 */
export function kCoreMask(user: Int32Array, item: Int32Array, n: number, k: number): Uint8Array {
  const keep = new Uint8Array(n).fill(1);
  if (k <= 1) return keep;
  let nUsers = 0;
  let nItems = 0;
  for (let i = 0; i < n; i++) {
    if (user[i] >= nUsers) nUsers = user[i] + 1;
    if (item[i] >= nItems) nItems = item[i] + 1;
  }
  const uc = new Int32Array(nUsers);
  const ic = new Int32Array(nItems);
  for (;;) {
    uc.fill(0);
    ic.fill(0);
    for (let i = 0; i < n; i++) {
      if (!keep[i]) continue;
      uc[user[i]]++;
      ic[item[i]]++;
    }
    let changed = false;
    for (let i = 0; i < n; i++) {
      if (keep[i] && (uc[user[i]] < k || ic[item[i]] < k)) {
        keep[i] = 0;
        changed = true;
      }
    }
    if (!changed) return keep;
  }
}

export function applyKCore(inter: Interactions, k: number | undefined, sink: BadLineSink): Interactions {
  if (!k || k <= 1) return inter;
  const keep = kCoreMask(inter.user, inter.item, inter.n, k);
  let kept = 0;
  for (let i = 0; i < inter.n; i++) kept += keep[i];
  sink.drop('k_core', inter.n - kept);
  return kept === inter.n ? inter : filterInteractions(inter, keep);
}
