/** Two runs side by side: the metrics they differ in and the config keys that differ. */

export interface RunComparison {
  metrics: { key: string; a: number | null; b: number | null; diff: number | null }[];
  config: { key: string; a: unknown; b: unknown }[];
}

/** Leaf values by dotted path; arrays are leaves (a changed MLP width list is one difference). */
export function flatten(
  value: unknown,
  prefix = '',
  out: Map<string, unknown> = new Map(),
): Map<string, unknown> {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.length === 0 && prefix) out.set(prefix, {});
    for (const [k, v] of entries) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else if (prefix) out.set(prefix, value);
  return out;
}

const same = (x: unknown, y: unknown) => JSON.stringify(x) === JSON.stringify(y);

/**
 * `metrics` are each run's summary values (step 0); keys present in only one run are listed with null on the
 * other side. `config` compares the run rows' configs (dataset spec, pipeline config, hash, trigger).
 */
export function compareRuns(
  a: { metrics: Record<string, number>; config: unknown },
  b: { metrics: Record<string, number>; config: unknown },
): RunComparison {
  const keys = [...new Set([...Object.keys(a.metrics), ...Object.keys(b.metrics)])].sort();
  const metrics = keys.map((key) => {
    const x = a.metrics[key] ?? null;
    const y = b.metrics[key] ?? null;
    return { key, a: x, b: y, diff: x !== null && y !== null ? y - x : null };
  });
  const fa = flatten(a.config);
  const fb = flatten(b.config);
  const config = [...new Set([...fa.keys(), ...fb.keys()])]
    .sort()
    .filter((k) => !same(fa.get(k), fb.get(k)))
    .map((key) => ({ key, a: fa.get(key) ?? null, b: fb.get(key) ?? null }));
  return { metrics, config };
}
