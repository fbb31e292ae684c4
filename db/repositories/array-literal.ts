/**
 * Postgres array literals (`{a,"b c",NULL}`) written once as one string per column, for INSERT … SELECT FROM
 * unnest($1::uuid[], …) with a text parameter.
 *
 * Why not hand pg a JS array: pg 8's `arrayString` builds the literal by `+=` over every element, quoting
 * each through two regex replaces and a concatenation, so every element leaves several short-lived strings
 * behind; measured in the prediction log's flusher (bench/prediction-log.ts --alloc), storing a batch cost
 * about 3.7 KB of V8 heap per prediction on top of decoding it, most of it this, and those collections made
 * the flusher's mark-compacts. Here an element is one string in a parts array joined once: numbers, uuids
 * and ISO times go unquoted (they hold no character the array syntax treats specially), and text is
 * quoted only when it must be.
 */

/** Text that needs quotes inside an array literal: syntax characters, whitespace, or empty / NULL. */
const NEEDS_QUOTES = /[",\\{}\s]|^$|^null$/i;
const ESCAPE = /["\\]/g;

/** One array element of text, quoted and escaped only when the array syntax requires it. */
export function textElement(value: string): string {
  if (!NEEDS_QUOTES.test(value)) return value;
  return '"' + value.replace(ESCAPE, '\\$&') + '"';
}

/**
 * One column's literal, element by element. `raw` is for values whose text needs no quoting (numbers,
 * uuids checked by the validator, ISO timestamps, fixed words like a route or `t`/`f`); `text` for
 * anything a client supplied.
 */
export class ArrayLiteral {
  private readonly parts: string[];
  private n = 0;

  constructor(size: number) {
    this.parts = new Array<string>(size);
  }

  raw(value: string): void {
    this.parts[this.n++] = value;
  }

  /** A number as pg itself would send it (String(n): Infinity, -Infinity and NaN are float8 words too). */
  number(value: number): void {
    this.parts[this.n++] = String(value);
  }

  text(value: string): void {
    this.parts[this.n++] = textElement(value);
  }

  nullableNumber(value: number | null | undefined): void {
    this.parts[this.n++] = value === null || value === undefined ? 'NULL' : String(value);
  }

  nullableText(value: string | null): void {
    this.parts[this.n++] = value === null ? 'NULL' : textElement(value);
  }

  toString(): string {
    if (this.n !== this.parts.length) this.parts.length = this.n;
    return '{' + this.parts.join(',') + '}';
  }
}
