/**
 * Zod issues as config errors a person can act on: the path of the field (`crm.mlp[1]`), what was expected
 * and what was found, and for an unknown key the known key it most likely misspells. Zod's own messages
 * ("Invalid input") name neither the field nor the value, and its strict objects report an unknown key
 * against the object that holds it.
 */
import type { z } from 'zod';
import { CorellaError } from '../errors.js';
import { didYouMean } from './did-you-mean.js';

export interface ConfigIssue {
  /** Dotted path of the field, array indices in brackets: `joint.adapter.layers[0]`. */
  path: string;
  message: string;
}

type Path = readonly PropertyKey[];

export function formatPath(path: Path): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out === '' ? String(seg) : `.${String(seg)}`;
  }
  return out;
}

function shown(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

interface Def {
  type: string;
  shape?: Record<string, z.ZodType>;
  innerType?: z.ZodType;
  in?: z.ZodType;
  options?: z.ZodType[];
  element?: z.ZodType;
}

function defOf(s: z.ZodType): Def {
  return (s as unknown as { _zod: { def: Def } })._zod.def;
}

/** The object schemas a value at `path` may be checked against (several under a union). */
function objectsAt(schema: z.ZodType, path: Path): Def[] {
  let current: z.ZodType[] = [schema];
  const unwrapAll = (list: z.ZodType[]): Def[] => {
    const out: Def[] = [];
    const visit = (s: z.ZodType): void => {
      const d = defOf(s);
      if (d.innerType) visit(d.innerType);
      else if (d.type === 'pipe' && d.in) visit(d.in);
      else if (d.type === 'union' && d.options) d.options.forEach(visit);
      else out.push(d);
    };
    list.forEach(visit);
    return out;
  };
  for (const seg of path) {
    const next: z.ZodType[] = [];
    for (const d of unwrapAll(current)) {
      if (d.type === 'object' && typeof seg === 'string' && d.shape?.[seg]) next.push(d.shape[seg]);
      if (d.type === 'array' && typeof seg === 'number' && d.element) next.push(d.element);
    }
    current = next;
  }
  return unwrapAll(current).filter((d) => d.type === 'object');
}

function expectedOf(issue: z.core.$ZodIssue): string | undefined {
  if (issue.code === 'invalid_type') {
    const name = issue.expected === 'int' ? 'integer' : issue.expected;
    return `${/^[aeiou]/.test(name) ? 'an' : 'a'} ${name}`;
  }
  if (issue.code === 'invalid_value') return issue.values.map((v) => shown(v)).join(' or ');
  return undefined;
}

/** `at` is the path inside `schema` (for finding known keys), `base` what is shown before it. */
function describe(
  schema: z.ZodType,
  issue: z.core.$ZodIssue,
  base: Path,
  at: Path,
  out: ConfigIssue[],
): void {
  const rel = [...at, ...issue.path];
  const path = [...base, ...rel];
  let got = (issue as { input?: unknown }).input;
  const discriminator = (issue as { discriminator?: string }).discriminator;
  if (discriminator && got && typeof got === 'object') got = (got as Record<string, unknown>)[discriminator];
  switch (issue.code) {
    case 'unrecognized_keys': {
      // Under a union, the option that reported the key is one that does not know it.
      const objects = objectsAt(schema, rel).filter((d) => !issue.keys.some((k) => d.shape && k in d.shape));
      const known = [...new Set(objects.flatMap((d) => Object.keys(d.shape ?? {})))];
      for (const key of issue.keys) {
        const guess = didYouMean(key, known);
        out.push({
          path: formatPath([...path, key]),
          message: guess
            ? `unknown key; did you mean ${guess}?`
            : `unknown key (expected one of ${known.join(', ')})`,
        });
      }
      return;
    }
    case 'invalid_type':
      out.push({
        path: formatPath(path),
        message:
          got === undefined
            ? `required (${expectedOf(issue)})`
            : `expected ${expectedOf(issue)}, got ${shown(got)}`,
      });
      return;
    case 'invalid_value': {
      // A schema's own message (e.g. the promotion metric's) says more than the list of values.
      if (!/^Invalid (option|input)/.test(issue.message)) {
        out.push({ path: formatPath(path), message: issue.message });
        return;
      }
      const guess = typeof got === 'string' ? didYouMean(got, issue.values.map(String)) : undefined;
      out.push({
        path: formatPath(path),
        message: `expected ${expectedOf(issue)}, got ${shown(got)}${guess ? `; did you mean ${guess}?` : ''}`,
      });
      return;
    }
    case 'too_small':
    case 'too_big': {
      const bound = issue.code === 'too_small' ? issue.minimum : issue.maximum;
      const op = issue.code === 'too_small' ? (issue.inclusive ? '≥' : '>') : issue.inclusive ? '≤' : '<';
      const what =
        issue.origin === 'array' || issue.origin === 'set'
          ? `${issue.code === 'too_small' ? 'at least' : 'at most'} ${String(bound)} items`
          : issue.origin === 'string'
            ? `${issue.code === 'too_small' ? 'at least' : 'at most'} ${String(bound)} characters`
            : `a number ${op} ${String(bound)}`;
      out.push({ path: formatPath(path), message: `expected ${what}, got ${shown(got)}` });
      return;
    }
    case 'invalid_union': {
      // A branch that got past the type check (its issues lie deeper) is the one the user meant.
      const deeper = issue.errors.find((branch) =>
        branch.some((i) => i.path.length > 0 || i.code === 'unrecognized_keys' || i.code === 'custom'),
      );
      if (deeper) {
        for (const i of deeper) describe(schema, i, base, rel, out);
        return;
      }
      const expected = issue.errors
        .flatMap((branch) => branch.map(expectedOf))
        .filter((e) => e !== undefined);
      out.push({
        path: formatPath(path),
        message: expected.length
          ? `expected ${[...new Set(expected)].join(' or ')}, got ${shown(got)}`
          : `${issue.message}, got ${shown(got)}`,
      });
      return;
    }
    default:
      out.push({ path: formatPath(path), message: issue.message });
  }
}

/** Every issue of a failed parse, in the order zod found them, with paths under `base`. */
export function configIssues(schema: z.ZodType, error: z.ZodError, base: Path = []): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  for (const issue of error.issues) describe(schema, issue, base, [], out);
  return out;
}

export function issueLine(i: ConfigIssue): string {
  return i.path ? `${i.path}: ${i.message}` : i.message;
}

/**
 * Parses one section the way its ML module resolves it: the schema's defaults fill what is unset, and the
 * first bad field becomes a BAD_CONFIG error naming it (`llm config field gpu: expected ...`).
 */
export function parseSection<S extends z.ZodType>(
  schema: S,
  input: unknown,
  label: string,
  base: Path = [],
): z.output<S> {
  const r = schema.safeParse(input, { reportInput: true });
  if (r.success) return r.data;
  const issues = configIssues(schema, r.error, base);
  const first = issues[0] ?? { path: formatPath(base), message: 'invalid' };
  throw new CorellaError('BAD_CONFIG', `${label} field ${first.path}: ${first.message}`, {
    details: { field: first.path, issues },
  });
}
