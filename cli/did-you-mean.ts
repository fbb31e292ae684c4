/**
 * Edit distance counting insertions, deletions, substitutions and swaps of two neighbours (optimal string
 * alignment), for did-you-mean hints: `--limti` is one slip from `--limit`, not two.
 */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/**
 * The known name closest to `typed`, when it is close enough to be the likely intent: a third of its
 * length in edits (at least one), or a prefix of it (`--dry` for `--dry-run`). Undefined otherwise, so an
 * unrelated word gets no misleading hint.
 */
export function closest(typed: string, known: readonly string[]): string | undefined {
  const t = typed.toLowerCase();
  let best: { name: string; d: number } | undefined;
  for (const name of known) {
    const d = name.startsWith(t) && t.length >= 2 ? 0.5 : distance(t, name.toLowerCase());
    if (best === undefined || d < best.d) best = { name, d };
  }
  if (best === undefined) return undefined;
  return best.d <= Math.max(1, Math.floor(typed.length / 3)) ? best.name : undefined;
}
