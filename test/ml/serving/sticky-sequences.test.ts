/**
 * The per-user sequence LRU: a user gets their own sequence back while it is free (its KV cache still holds
 * their prefix), a new user takes the least recently used free one, and a busy sequence is never shared.
 */
import { describe, expect, it } from 'vitest';
import { StickySequences } from '../../../ml/serving/online-llm.js';

describe('StickySequences', () => {
  it('keeps recent users on their sequence and evicts the least recently used', async () => {
    const s = new StickySequences(2);
    const a = await s.acquire('a');
    s.release(a.index);
    const b = await s.acquire('b');
    s.release(b.index);
    expect(b.index).not.toBe(a.index);
    expect(await s.acquire('a')).toEqual({ index: a.index, warm: true });
    s.release(a.index);
    // c evicts b (used before a's second request), not a.
    const c = await s.acquire('c');
    expect(c).toEqual({ index: b.index, warm: false });
    s.release(c.index);
    expect((await s.acquire('a')).warm).toBe(true);
    s.release(a.index);
    // b comes back after c took its sequence: cold, on the LRU one (c's), and a keeps its own.
    expect(await s.acquire('b')).toEqual({ index: c.index, warm: false });
  });

  it('never hands out a busy sequence: a second job waits for a release', async () => {
    const s = new StickySequences(1);
    const first = await s.acquire('a');
    let second: { index: number; warm: boolean } | undefined;
    const waiting = s.acquire('a').then((x) => (second = x));
    await new Promise((r) => setTimeout(r, 5));
    expect(second).toBeUndefined();
    s.release(first.index);
    await waiting;
    expect(second).toEqual({ index: 0, warm: true });
  });

  it('a sequence whose cache was overwritten is no longer warm for its owner', async () => {
    const s = new StickySequences(1);
    const a = await s.acquire('a');
    s.disown(a.index);
    s.release(a.index);
    expect((await s.acquire('a')).warm).toBe(false);
  });
});
