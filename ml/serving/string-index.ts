/**
 * Raw id → dense index for the serving engine's lookup tables (users, items, attribute vocabularies).
 *
 * Why not a `Map<string, number>`: the served model lives for hours in the server's old space, and every
 * mark-compact traces it. A Map of n string keys is a hash table of ~3n tagged slots pointing at n string
 * objects, so each collection visits them all again. Here the keys' UTF-16 code units sit in one
 * Uint16Array and the table is open addressing (linear probing) over an Int32Array: four typed arrays
 * whatever n is, which a marker visits as four objects and does not scan.
 *
 * A lookup hashes the query (FNV-1a over its code units) and compares code units in place, so it allocates
 * nothing either. Duplicate keys behave as repeated `Map.set`: the last index wins.
 */
export class StringIndex {
  /** Number of distinct keys. */
  readonly size: number;
  private readonly chars: Uint16Array;
  /** Key k's code units are chars[offsets[k] .. offsets[k + 1]). */
  private readonly offsets: Int32Array;
  /** Per key, the index it maps to. */
  private readonly values: Int32Array;
  /** Open-addressing slots: key number + 1, 0 = empty. Power-of-two length, at most half full. */
  private readonly slots: Int32Array;
  private readonly mask: number;

  constructor(keys: readonly string[], values?: ArrayLike<number>) {
    let total = 0;
    for (const k of keys) total += k.length;
    this.chars = new Uint16Array(total);
    this.offsets = new Int32Array(keys.length + 1);
    this.values = new Int32Array(keys.length);
    let cap = 2;
    while (cap < keys.length * 2) cap *= 2;
    this.slots = new Int32Array(cap);
    this.mask = cap - 1;
    let at = 0;
    let n = 0;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i];
      const value = values ? values[i] : i;
      const found = this.find(key);
      if (found >= 0) {
        this.values[found] = value;
        continue;
      }
      this.offsets[n] = at;
      for (let c = 0; c < key.length; c++) this.chars[at++] = key.charCodeAt(c);
      this.offsets[n + 1] = at;
      this.values[n] = value;
      let s = hash(key) & this.mask;
      while (this.slots[s] !== 0) s = (s + 1) & this.mask;
      this.slots[s] = n + 1;
      n++;
    }
    this.size = n;
  }

  /** The index of `key`, or −1 when it is not a key. */
  get(key: string): number {
    const k = this.find(key);
    return k < 0 ? -1 : this.values[k];
  }

  has(key: string): boolean {
    return this.find(key) >= 0;
  }

  /** The key number (insertion order of distinct keys) of `key`, or −1. */
  private find(key: string): number {
    const len = key.length;
    let s = hash(key) & this.mask;
    for (;;) {
      const slot = this.slots[s];
      if (slot === 0) return -1;
      const k = slot - 1;
      const from = this.offsets[k];
      if (this.offsets[k + 1] - from === len) {
        let c = 0;
        while (c < len && this.chars[from + c] === key.charCodeAt(c)) c++;
        if (c === len) return k;
      }
      s = (s + 1) & this.mask;
    }
  }
}

/** FNV-1a over UTF-16 code units. */
function hash(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h >>> 0;
}
