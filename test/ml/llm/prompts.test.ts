import type { Token } from 'node-llama-cpp';
import { describe, expect, it } from 'vitest';
import { PromptBuilder, templateByName, type PromptTokenizer } from '../../../ml/llm/prompts.js';
import { CorellaError } from '../../../ml/errors.js';
import { ITEMS, makeSplit } from './fixtures.js';

// One token per whitespace-separated word (a leading space belongs to the word): easy to count by hand.
const vocab = new Map<string, number>();
const wordTokenizer: PromptTokenizer = {
  bos: 0 as Token,
  tokenize(text: string): Token[] {
    return (text.match(/\s*\S+/g) ?? []).map((w): Token => {
      let id = vocab.get(w);
      if (id === undefined) {
        id = vocab.size + 1;
        vocab.set(w, id);
      }
      return id as Token;
    });
  },
};
const detok = (ids: readonly number[]): string => {
  const inv = new Map([...vocab].map(([w, i]) => [i, w]));
  return ids.map((i) => (i === 0 ? '<s>' : inv.get(i))).join('');
};

const hist = [
  { title: 'Toy Story (1995)', rating: 5, genres: '' },
  { title: 'Heat (1995)', rating: 3, genres: '' },
  { title: 'Alien (1979)', rating: 4.5, genres: '' },
];

describe('PromptBuilder', () => {
  it('renders the paper template with history oldest first and the target after it', () => {
    const b = new PromptBuilder(wordTokenizer, templateByName('paper'), {
      contextSize: 1000,
      targetReserveTokens: 0,
    });
    const p = b.build(hist, 'Fargo (1996)');
    expect(detok(p.tokens)).toBe(
      '<s>Below is the rating history of a user: Toy Story (1995) (5 stars), Heat (1995) (3 stars), Alien (1979) (4.5 stars). ' +
        'Please predict whether the user will like Fargo (1996) based on his/her rating history and the quality of the ' +
        'target item. You should ONLY answer no or yes. Answer:',
    );
    expect(p.historyItemsUsed).toBe(3);
    expect(detok(p.tokens.slice(0, p.prefixLength)).endsWith('will like')).toBe(true);
  });

  it('shares the prefix token-for-token between targets with the same history', () => {
    const b = new PromptBuilder(wordTokenizer, templateByName('paper'), {
      contextSize: 1000,
      targetReserveTokens: 8,
    });
    const a = b.build(hist, 'Fargo (1996)');
    const c = b.build(hist, 'The Story of a Very Long Movie Title (2000)');
    expect(a.prefixLength).toBe(c.prefixLength);
    expect(a.tokens.slice(0, a.prefixLength)).toEqual(c.tokens.slice(0, c.prefixLength));
  });

  it('truncates the oldest history entries by token count, deterministically', () => {
    const full = new PromptBuilder(wordTokenizer, templateByName('paper'), {
      contextSize: 1000,
      targetReserveTokens: 0,
    });
    const fullLen = full.build(hist, 'Fargo (1996)').tokens.length;
    // Entries after the first carry a leading separator: ", Heat (1995) (3 stars)" is 5 word tokens, as is
    // "Toy Story (1995) (5 stars)". A context 3 tokens short drops exactly the oldest entry.
    const b = new PromptBuilder(wordTokenizer, templateByName('paper'), {
      contextSize: fullLen + 1 - 3,
      targetReserveTokens: 0,
    });
    const p = b.build(hist, 'Fargo (1996)');
    expect(p.historyItemsUsed).toBe(2);
    expect(detok(p.tokens)).toContain('user: Heat (1995) (3 stars), Alien');
    expect(p.tokens.length).toBeLessThan(fullLen + 1 - 3);
    expect(b.build(hist, 'Fargo (1996)').tokens).toEqual(p.tokens);
    // Dropping Heat as well leaves only the most recent entry, which then loses its separator: 11 tokens fewer.
    const tight = new PromptBuilder(wordTokenizer, templateByName('paper'), {
      contextSize: fullLen + 1 - 9,
      targetReserveTokens: 0,
    });
    const q = tight.build(hist, 'Fargo (1996)');
    expect(q.historyItemsUsed).toBe(1);
    expect(q.tokens.length).toBe(fullLen - 11);
    const oneShort = new PromptBuilder(wordTokenizer, templateByName('paper'), {
      contextSize: fullLen,
      targetReserveTokens: 0,
    });
    expect(oneShort.build(hist, 'Fargo (1996)').historyItemsUsed).toBe(2);
  });

  it('uses "none" when no history entry fits, and maxHistoryItems caps the entries', () => {
    const b = new PromptBuilder(wordTokenizer, templateByName('paper'), {
      contextSize: 1000,
      targetReserveTokens: 0,
      maxHistoryItems: 1,
    });
    expect(detok(b.build(hist, 'Fargo').tokens)).toContain('user: Alien (1979) (4.5 stars). Please');
    expect(detok(b.build([], 'Fargo').tokens)).toContain('user: none. Please');
  });

  it('a window that grows by one item extends the previous prompt token for token', () => {
    const b = new PromptBuilder(wordTokenizer, templateByName('paper'), {
      contextSize: 1000,
      targetReserveTokens: 0,
    });
    const longer = [...hist, { title: 'Fargo (1996)', rating: 2, genres: '' }];
    const p = b.build(hist, 'Fargo (1996)', undefined, 2);
    const q = b.build(longer, 'Casino (1995)', undefined, 3);
    const historyEnd = p.prefixLength - 8; // the text between history and target: ". Please predict … like"
    expect(detok(p.tokens.slice(historyEnd, p.prefixLength))).toBe(
      '. Please predict whether the user will like',
    );
    expect(q.tokens.slice(0, historyEnd)).toEqual(p.tokens.slice(0, historyEnd));
    expect(detok(q.tokens.slice(historyEnd, historyEnd + 5))).toBe(', Fargo (1996) (2 stars)');
  });

  it('throws PROMPT_TOO_LONG when even an empty history does not fit', () => {
    const b = new PromptBuilder(wordTokenizer, templateByName('paper'), {
      contextSize: 40,
      targetReserveTokens: 0,
    });
    const e = (() => {
      try {
        b.build(hist, 'A B C D E F G H I J K L M N O P Q', 77);
      } catch (err) {
        return err;
      }
    })();
    expect(e).toBeInstanceOf(CorellaError);
    expect((e as CorellaError).code).toBe('PROMPT_TOO_LONG');
    expect((e as CorellaError).message).toContain('sample 77');
  });

  it('builds prompts from EncodedSplit rows, skipping padded history', () => {
    const split = makeSplit(2, 2, 6, 3);
    const b = new PromptBuilder(wordTokenizer, templateByName('compact'), {
      contextSize: 1000,
      targetReserveTokens: 0,
    });
    const p = b.buildForRow(split, ITEMS, 1);
    const text = detok(p.tokens);
    expect(p.historyItemsUsed).toBe(3);
    expect(text).toContain(`like ${ITEMS.titles[split.targetItemRows[1]]}?`);
    expect(
      text.startsWith(
        `<s>Ratings of a user, oldest first: ${ITEMS.titles[split.historyItemRows[1 * 6 + 3]]}: `,
      ),
    ).toBe(true);
  });

  it('rejects unknown template names with BAD_CONFIG', () => {
    expect(() => templateByName('nope')).toThrow(/unknown prompt template/);
  });
});
