/** Edit distance (insertions, deletions, substitutions), for did-you-mean hints on a mistyped name. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
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
