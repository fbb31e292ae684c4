import { describe, expect, it } from 'vitest';
import { CorellaError } from '../../../ml/errors.js';
import { resolveLlmConfig } from '../../../ml/llm/config.js';
import {
  DEFAULT_ITEM_PROMPT,
  affinityFeatures,
  affinityWindow,
  centreOf,
  centredUnit,
  itemPromptText,
  referenceItemRows,
  resolveItemAffinity,
} from '../../../ml/llm/item-affinity.js';
import { makeSplit } from './fixtures.js';

const v = (...xs: number[]) => Float64Array.from(xs);

describe('item-affinity features', () => {
  it('liked/disliked cosines follow which side of the mean rating each history item is on', () => {
    const target = v(1, 0);
    const history = [v(1, 0), v(0, 1), v(0, 1)];
    // Item 0 rated above the mean (the user liked the target's direction).
    const [liked, disliked, weighted] = affinityFeatures(target, history, [5, 2, 2]);
    expect(liked).toBeCloseTo(1, 12);
    expect(disliked).toBeCloseTo(0, 12);
    expect(weighted).toBeCloseTo((5 - 3) / 3, 12);
    // Flip the ratings: the target now resembles what the user disliked.
    const flipped = affinityFeatures(target, history, [1, 4, 4]);
    expect(flipped[0]).toBeCloseTo(0, 12);
    expect(flipped[1]).toBeCloseTo(1, 12);
    expect(flipped[2]).toBeLessThan(0);
  });

  it('no history, or all ratings equal, gives no evidence', () => {
    expect(affinityFeatures(v(1, 0), [], [])).toEqual([0, 0, 0]);
    const same = affinityFeatures(v(1, 0), [v(1, 0), v(0, 1)], [3, 3]);
    expect(same).toEqual([0, 0, 0]);
  });

  it('centring removes a direction shared by every vector', () => {
    const shared = [10, 10, 10];
    const raw = [
      [1, 0, 0],
      [0, 1, 0],
      [0, 0, 1],
    ].map((x) => Float32Array.from(x, (y, k) => y + shared[k]));
    const c = centreOf(raw, 3);
    const a = centredUnit(raw[0], c);
    const b = centredUnit(raw[1], c);
    // Raw vectors are almost parallel; centred ones are not.
    const cosRaw =
      raw[0].reduce((s, x, k) => s + x * raw[1][k], 0) / (Math.hypot(...raw[0]) * Math.hypot(...raw[1]));
    expect(cosRaw).toBeGreaterThan(0.99);
    expect(a.reduce((s, x, k) => s + x * b[k], 0)).toBeCloseTo(-0.5, 6);
    expect(Math.hypot(...a)).toBeCloseTo(1, 12);
    expect(Array.from(centredUnit(Float32Array.of(2, 4, 6), v(2, 4, 6)))).toEqual([0, 0, 0]);
  });

  it('the window is the prompt window: the most recent maxHistoryItems (+ block offset) rated items', () => {
    const split = makeSplit(2, 3, 5, 4);
    const all = affinityWindow(split, 0, undefined, 1);
    expect(all.items.length).toBe(4);
    const last2 = affinityWindow(split, 0, 2, 1);
    expect(last2.items).toEqual(all.items.slice(2));
    expect(last2.ratings).toEqual(all.ratings.slice(2));
    // With blocks of 3, the user's second sample (time order) sees one more item than the first.
    const userRows = [0, 2, 4].filter((r) => split.userRows[r] === 0);
    const sizes = userRows.map((r) => affinityWindow(split, r, 1, 3).items.length);
    expect(sizes).toEqual([1, 2, 3]);
  });

  it('reference rows are spread over the table, deterministic, and capped by its size', () => {
    expect(referenceItemRows(10, 4)).toEqual([0, 2, 5, 7]);
    expect(referenceItemRows(3, 256)).toEqual([0, 1, 2]);
    expect(itemPromptText('Movie: {title}. Genre:', 'Heat (1995)')).toBe('Movie: Heat (1995). Genre:');
  });

  it('config: true takes the defaults; bad prompts and counts are typed errors naming the field', () => {
    expect(resolveItemAffinity(undefined)).toBeUndefined();
    expect(resolveItemAffinity(false)).toBeUndefined();
    expect(resolveItemAffinity(true)).toEqual({
      prompt: DEFAULT_ITEM_PROMPT,
      referenceItems: 256,
      historyItems: undefined,
    });
    const bad = (c: unknown, field: string) => {
      let err: unknown;
      try {
        resolveItemAffinity(c as never);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(CorellaError);
      expect((err as CorellaError).code).toBe('BAD_CONFIG');
      expect((err as Error).message).toContain(field);
    };
    bad({ prompt: 'no placeholder' }, 'itemAffinity.prompt');
    bad({ referenceItems: 0 }, 'itemAffinity.referenceItems');
    bad({ historyItems: 2.5 }, 'itemAffinity.historyItems');
    expect(() => resolveLlmConfig({ model: 'm.gguf', hidden: false, itemAffinity: true })).toThrow(
      /itemAffinity/,
    );
    expect(resolveLlmConfig({ model: 'm.gguf', itemAffinity: { referenceItems: 8 } }).itemAffinity).toEqual({
      prompt: DEFAULT_ITEM_PROMPT,
      referenceItems: 8,
      historyItems: undefined,
    });
  });
});
