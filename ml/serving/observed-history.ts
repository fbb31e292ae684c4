/**
 * Feedback events received while serving, per user, kept beyond the dataset's history window.
 *
 * Why flat: the server keeps these for hours, in old space, where every mark-compact traces them. An event
 * object per feedback (the earlier layout) made up to 256 objects per user to trace; here a user's events
 * are a ring of three typed arrays (item row, encoded item id, rating) plus, only once an event names an
 * item outside the item table, an array of the raw ids to show as its title.
 */

/** Events kept per user (a few history windows are plenty). */
export const OBSERVED_PER_USER = 256;

/** The item of one event as the encoder resolved it. */
export interface ObservedItem {
  /** Row in the item table, −1 when the item is not there. */
  row: number;
  /** Encoded item id, 0 = out of the CRM's vocabulary. */
  id: number;
}

class Ring {
  rows: Int32Array;
  ids: Int32Array;
  ratings: Float32Array;
  /** Raw item ids of events whose item is outside the item table (their prompt title), by ring slot. */
  titles: (string | undefined)[] | undefined;
  /** Slot of the oldest event. */
  start = 0;
  length = 0;

  constructor(capacity: number) {
    this.rows = new Int32Array(capacity);
    this.ids = new Int32Array(capacity);
    this.ratings = new Float32Array(capacity);
  }

  get capacity(): number {
    return this.rows.length;
  }

  push(item: ObservedItem, rating: number, raw: string): void {
    if (this.length === this.capacity && this.capacity < OBSERVED_PER_USER) this.grow();
    const cap = this.capacity;
    let slot: number;
    if (this.length < cap) slot = (this.start + this.length++) % cap;
    else {
      // Full at the limit: the oldest event goes, as a list trimmed to its last OBSERVED_PER_USER would.
      slot = this.start;
      this.start = (this.start + 1) % cap;
    }
    this.rows[slot] = item.row;
    this.ids[slot] = item.id;
    this.ratings[slot] = rating;
    if (item.row < 0) (this.titles ??= [])[slot] = raw;
    else if (this.titles) this.titles[slot] = undefined;
  }

  /** Unrolls the ring into capacity × 2, oldest first at slot 0. */
  private grow(): void {
    const cap = Math.min(OBSERVED_PER_USER, this.capacity * 2);
    const rows = new Int32Array(cap);
    const ids = new Int32Array(cap);
    const ratings = new Float32Array(cap);
    const titles = this.titles ? new Array<string | undefined>(cap) : undefined;
    for (let k = 0; k < this.length; k++) {
      const s = (this.start + k) % this.capacity;
      rows[k] = this.rows[s];
      ids[k] = this.ids[s];
      ratings[k] = this.ratings[s];
      if (titles) titles[k] = this.titles![s];
    }
    this.rows = rows;
    this.ids = ids;
    this.ratings = ratings;
    this.titles = titles;
    this.start = 0;
  }
}

export class ObservedHistories {
  private readonly users = new Map<string, Ring>();

  /** Users with at least one observed event. */
  get size(): number {
    return this.users.size;
  }

  add(user: string, item: ObservedItem, rating: number, rawItem: string): void {
    let ring = this.users.get(user);
    if (!ring) this.users.set(user, (ring = new Ring(8)));
    ring.push(item, rating, rawItem);
  }

  /** Events of `user`, oldest first; length 0 when there are none. */
  count(user: string): number {
    return this.users.get(user)?.length ?? 0;
  }

  /**
   * Copies event `k` (0 = oldest) of `user` into the output positions; returns its raw title or undefined.
   * No object per event, so the encoder reads a history window without allocating.
   */
  read(
    user: string,
    k: number,
    out: { rows: Int32Array; ids: Int32Array; ratings: Float32Array },
    at: number,
  ): string | undefined {
    const ring = this.users.get(user)!;
    const s = (ring.start + k) % ring.capacity;
    out.rows[at] = ring.rows[s];
    out.ids[at] = ring.ids[s];
    out.ratings[at] = ring.ratings[s];
    return ring.titles?.[s];
  }
}
